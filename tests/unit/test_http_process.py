"""The HTTP operations surface of a real rocketlite process: /metrics, OpenAPI, console, logging."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import urllib.request
from typing import Any

import pytest

from tests.support.server import REPO, RocketliteProcess


def http(srv: RocketliteProcess, method: str, path: str, body: Any = None,
         token: str | None = None) -> tuple[int, bytes, str]:
    host, port = srv.addr("http")
    req = urllib.request.Request(f"http://{host}:{port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read(), resp.headers.get("content-type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("content-type", "")


def test_metrics_openapi_and_console_on_a_real_process() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    with RocketliteProcess(ephemeral=True, extra_args=["--set", "http.admin_token=tok"]) as srv:
        assert http(srv, "GET", "/api/topics")[0] == 401
        code, _, _ = http(srv, "POST", "/api/topics", {"name": "metered", "queues": 2}, token="tok")
        assert code == 201
        for i in range(5):
            code, _, _ = http(srv, "POST", "/api/messages", {"topic": "metered", "body": f"m{i}", "keys": f"k{i}"},
                              token="tok")
            assert code == 201
        code, raw, _ = http(srv, "GET", "/api/messages?key=k3&topic=metered", token="tok")
        assert code == 200 and json.loads(raw)["messages"][0]["body_text"] == "m3"

        code, raw, ctype = http(srv, "GET", "/metrics")
        assert code == 200 and ctype.startswith("text/plain")
        families = {f.name: f for f in parser.text_string_to_metric_families(raw.decode())}
        topic_msgs = {s.labels["topic"]: s.value for s in families["rocketlite_topic_messages"].samples}
        assert topic_msgs["metered"] == 5
        http_in = [s for s in families["rocketlite_messages_in"].samples
                   if s.labels.get("protocol") == "http" and s.labels.get("topic") == "metered"
                   and s.name.endswith("_total")]
        assert http_in and http_in[0].value == 5
        assert families["rocketlite_store_commit_seconds"].type == "histogram"
        assert "rocketlite_store_messages" in families

        code, raw, _ = http(srv, "GET", "/api/openapi.json")
        from rocketlite.protocols.http.openapi import openapi_document

        assert code == 200 and json.loads(raw) == openapi_document()  # validated in test_http_api.py

        code, raw, ctype = http(srv, "GET", "/")
        assert code == 200 and ctype.startswith("text/html") and b"/static/console.js" in raw
        assert http(srv, "GET", "/ready")[0] == 200


def _start(log_format: str | None) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "rocketlite", "serve", "--ephemeral", "--host", "127.0.0.1", "--log-level", "info"]
    for name in ("remoting", "broker", "grpc", "mqtt", "http"):
        cmd += [f"--{name}-port", "0"]
    if log_format:
        cmd += ["--log-format", log_format]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _serve(proc: subprocess.Popen[bytes]) -> tuple[str, str]:
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        assert sel.select(20), "no READY line"
        ready = proc.stdout.readline().decode()
        assert ready.startswith("READY"), ready
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return ready, err.decode()


def test_log_format_json_and_text() -> None:
    json_proc, text_proc = _start("json"), _start(None)  # both start at once
    try:
        _, json_err = _serve(json_proc)
        _, text_err = _serve(text_proc)
    finally:
        for proc in (json_proc, text_proc):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = [ln for ln in json_err.splitlines() if ln.strip()]
    assert lines, "no log output"
    records = [json.loads(ln) for ln in lines]  # every line is one JSON object
    assert any("ready in" in r["msg"] and r["level"] == "info" and r["logger"] == "rocketlite" for r in records)
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    lines = text_err.splitlines()
    assert lines and not any(ln.startswith("{") for ln in lines)
    assert any(" INFO rocketlite: " in ln and "ready in" in ln for ln in lines)
