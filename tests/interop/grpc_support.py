"""Running the official gRPC clients' scenario scripts (tests/interop/grpc_clients/) as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.interop import INTEROP, require, venv_python
from tests.support.server import RocketliteProcess

CLIENTS = Path(__file__).parent / "grpc_clients"


def node_grpc_dir() -> Path:
    return require(INTEROP / "node-grpc" / "node_modules" / "rocketmq-client-nodejs", "npm rocketmq-client-nodejs").parents[1]


def scenario_command(lang: str, srv: RocketliteProcess, scenario: str, *args: str, home: Path) -> tuple[list[str], dict[str, str]]:
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HOME": str(home)}
    if lang == "python":
        cmd = [str(venv_python("grpc-python")), str(CLIENTS / "py_client.py")]
    else:
        env["NODE_PATH"] = str(node_grpc_dir() / "node_modules")
        cmd = ["node", str(CLIENTS / "node_client.js")]
    return cmd + [scenario, srv.endpoint("grpc"), *args], env


def interactive_scenario(
    lang: str, srv: RocketliteProcess, scenario: str, *args: str, home: Path, pause_event: str, between: Any,
    timeout: float = 40,
) -> list[dict[str, Any]]:
    """Run a scenario that stops at ``pause_event``; call ``between()``, then let it finish."""
    cmd, env = scenario_command(lang, srv, scenario, *args, home=home)
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            cwd=str(home))
    assert proc.stdout is not None and proc.stdin is not None
    lines = []
    try:
        while True:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if pause_event.encode() in line:
                between()
                proc.stdin.write(b"go\n")
                proc.stdin.flush()
                break
        rest, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rest, err = proc.communicate()
    text = b"".join(lines).decode() + rest.decode()
    events = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not events or events[-1].get("event") != "done":
        pytest.fail(f"{lang} {scenario} failed ({proc.returncode}):\n{text[-4000:]}\n{err.decode()[-6000:]}")
    return events


def run_scenario(
    lang: str, srv: RocketliteProcess, scenario: str, *args: str, home: Path, timeout: float = 40,
    env: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Run one scenario to completion; returns its JSON events. Fails with the client's output."""
    cmd, full_env = scenario_command(lang, srv, scenario, *args, home=home)
    full_env.update(env or {})
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, env=full_env, cwd=str(home))
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{lang} {scenario} timed out:\n{(exc.stdout or b'').decode()}\n{(exc.stderr or b'').decode()[-4000:]}")
    events = []
    for line in proc.stdout.decode().splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
    if proc.returncode != 0 or not events or events[-1].get("event") != "done":
        pytest.fail(
            f"{lang} {scenario} failed ({proc.returncode}):\n{proc.stdout.decode()[-4000:]}\n{proc.stderr.decode()[-6000:]}"
        )
    return events


def event(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for e in events:
        if e.get("event") == name:
            return e
    raise AssertionError(f"no {name} event in {events}")
