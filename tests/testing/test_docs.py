"""The examples in docs/testing.md run, with the real clients they show."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from rocketlite.testing import RocketliteServer
from tests.support.interop import INTEROP, require
from tests.support.server import REPO

DOC = REPO / "docs" / "testing.md"
EXAMPLE = re.compile(r"<!-- example: (?P<name>\S+) runner=(?P<runner>\S+) -->\n```python\n(?P<code>.*?)\n```", re.S)


def examples() -> dict[str, tuple[str, str]]:
    return {m["name"]: (m["runner"], m["code"]) for m in EXAMPLE.finditer(DOC.read_text())}


def test_the_doc_has_its_examples() -> None:
    assert set(examples()) == {"quickstart", "autojump", "grpc-python", "paho", "remoting-python"}


@pytest.mark.parametrize("name", [n for n, (r, _) in examples().items() if r == "pytester"])
def test_pytester_examples(name: str, pytester: pytest.Pytester) -> None:
    _, code = examples()[name]
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(**{f"test_{name}": code})
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=code.count("\ndef test_") + code.count("\nasync def test_") + code.startswith("def test_"))


@pytest.fixture(scope="module")
def server() -> Iterator[RocketliteServer]:
    with RocketliteServer(protocols=("remoting", "grpc", "mqtt", "http", "testing")) as srv:
        yield srv


CLIENTS = {
    "grpc-python": ("venv-grpc-python", []),
    "remoting-cpp": ("venv-rocketmq-cpp21", ["--no-shutdown-crash"]),
}


@pytest.mark.interop
@pytest.mark.parametrize("name", [n for n, (r, _) in examples().items() if r in CLIENTS])
def test_client_examples(name: str, server: RocketliteServer, tmp_path: Path) -> None:
    runner, code = examples()[name]
    venv, flags = CLIENTS[runner]
    python = require(INTEROP / venv / "bin" / "python", f"client venv {venv}")
    example = tmp_path / f"example_{name.replace('-', '_')}.py"
    example.write_text(code)
    spec = " ".join(f"{k}={h}:{p}" for k, (h, p) in server.addresses.items())
    (tmp_path / "home").mkdir()
    proc = subprocess.run(
        [str(python), str(Path(__file__).with_name("doc_runner.py")), str(example), spec, *flags],
        capture_output=True, text=True, timeout=90, cwd=tmp_path,
        env={**os.environ, "HOME": str(tmp_path / "home")},  # librocketmq writes logs under $HOME
    )
    tests = re.findall(r"^def (test_\w+)", code, re.M)
    assert proc.returncode == 0 and all(f"PASS {t}" in proc.stdout for t in tests), proc.stdout + proc.stderr
