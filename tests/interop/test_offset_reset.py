"""An admin offset reset reaches consumers that are running (issue #7), with real clients.

A push consumer (its own subprocess, never restarted) consumes N messages; then the group is
rewound, by ``rocketlite admin resetOffsetByTime`` (INVOKE_BROKER_TO_RESET_OFFSET, as a user
would) or the HTTP admin API, and the same consumer receives the N messages again.

How each client follows (see rocketlite/protocols/remoting/reset.py, docs/remoting.md):
* librocketmq 2.1 (rocketmq-client-python 2.0.0) and the 0.4.4 build: not sent
  RESET_CONSUMER_CLIENT_OFFSET (220 would stall the queue for 120 s in librocketmq); their next
  pull gets PULL_OFFSET_MOVED to the new offset;
* ali-ons: ignores 220, follows PULL_OFFSET_MOVED.
"""

from __future__ import annotations

import json
import os
import queue as queue_mod
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.interop.remoting_support import request
from tests.interop.test_remoting_clients import cfg_for, run_client, start_client
from tests.support.server import RocketliteProcess

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory):
    with RocketliteProcess(tmp_path_factory.mktemp("reset") / "data") as p:
        yield p


class Stream:
    """A running consumer subprocess whose JSON lines are read by a thread."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lines: queue_mod.Queue[dict[str, Any]] = queue_mod.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                pass

    def collect(self, counts: dict[str, int], want: int, timeout: float) -> None:
        """Count bodies until every one of ``counts`` was seen ``want`` times."""
        deadline = time.monotonic() + timeout
        while any(c < want for c in counts.values()):
            left = deadline - time.monotonic()
            if left <= 0:
                missing = sorted(b for b, c in counts.items() if c < want)
                raise AssertionError(f"after {timeout} s, not seen {want} times: {missing} (counts {counts})")
            try:
                ev = self.lines.get(timeout=min(left, 1.0))
            except queue_mod.Empty:
                assert self.proc.poll() is None, f"consumer exited: rc={self.proc.returncode}"
                continue
            if ev.get("event") == "msg" and ev["body"] in counts:
                counts[ev["body"]] += 1
            elif ev.get("event") in ("error", "timeout"):
                raise AssertionError(f"consumer reported {ev}")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def wait_registered(srv: RocketliteProcess, group: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        r = request(srv.addr("remoting"), 38, {"consumerGroup": group})
        if r.code == 0 and json.loads(r.body)["consumerIdList"]:
            return
        assert time.monotonic() < deadline, f"no consumer of {group} registered"
        time.sleep(0.1)


def admin_reset(srv: RocketliteProcess, group: str, topic: str, ts: int) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "rocketlite", "admin", "resetOffsetByTime", "-n", srv.endpoint("remoting"),
         "-g", group, "-t", topic, "-s", str(ts)],
        capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def http_reset(srv: RocketliteProcess, group: str, topic: str, ts: int) -> dict[str, Any]:
    host, port = srv.addr("http")
    req = urllib.request.Request(f"http://{host}:{port}/api/groups/{group}/offsets", method="POST",
                                 data=json.dumps({"topic": topic, "timestamp_ms": ts}).encode())
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


@pytest.mark.parametrize("kind,via", [("cpp21", "admin"), ("cpp21", "http"), ("cpp044", "admin"),
                                      ("alions", "admin")])
def test_running_push_consumer_follows_a_rewind(kind: str, via: str, srv: RocketliteProcess,
                                                tmp_path: Path) -> None:
    name = f"reset_{kind}_{via}"
    n = 8
    cfg = cfg_for(srv, "stream", name, timeoutS=60, timeoutMs=60_000)
    stream = Stream(start_client(kind, cfg, tmp_path))
    try:
        wait_registered(srv, cfg["group"])
        before = int(time.time() * 1000) - 1000  # the topic is new: everything in it is after this
        producer = "alions" if kind == "alions" else "cpp21"
        run_client(producer, cfg_for(srv, "produce", name, n=n), tmp_path)
        counts = {f"m-{i}": 0 for i in range(n)}
        stream.collect(counts, 1, timeout=20)
        # consumed and committed: let the client's offset commit reach the broker first, so the
        # reset is seen to win over the client's own later commits
        time.sleep(1.5)
        if via == "admin":
            out = admin_reset(srv, cfg["group"], cfg["topic"], before)
            assert "rocketlite" in out  # one row per queue: broker name, queue id, new offset
        else:
            res = http_reset(srv, cfg["group"], cfg["topic"], before)
            assert all(q["new_offset"] == 0 for q in res["queues"])
        stream.collect(counts, 2, timeout=25)
        # the consumer's commits after the replay do not pull the group back below the end
        deadline = time.monotonic() + 15
        while True:
            total = 0
            for q in range(4):
                r = request(srv.addr("remoting"), 14, {"consumerGroup": cfg["group"], "topic": cfg["topic"],
                                                         "queueId": q})
                total += int(r.ext.get("offset", 0)) if r.code == 0 else 0
            if total == n:
                break
            assert time.monotonic() < deadline, f"committed offsets sum to {total}, not {n}"
            time.sleep(0.5)
    finally:
        stream.stop()


@pytest.mark.parametrize("scenario", ["simple", "push"])
def test_grpc_consumers_follow_a_rewind(scenario: str, srv: RocketliteProcess, tmp_path: Path) -> None:
    """The official Python gRPC client 5.1.2: a running simple / push consumer (POP on the broker)
    gets every message again after an HTTP reset of its group to the earliest offset."""
    from tests.support.interop import venv_python

    script = Path(__file__).parent / "grpc_clients" / "py_reset.py"
    topic, group, n = f"T_reset_grpc_{scenario}", f"G_reset_grpc_{scenario}", 6
    cmd = [str(venv_python("grpc-python")), str(script), scenario, srv.endpoint("grpc"), topic, group, str(n)]
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "HOME": str(home)}, cwd=str(home))
    assert proc.stdout is not None and proc.stdin is not None
    lines: list[bytes] = []
    try:
        while True:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if b'"reset-now"' in line:
                res = http_reset(srv, group, topic, 0)
                assert res["queues"] and all(q["new_offset"] == 0 for q in res["queues"])
                proc.stdin.write(b"go\n")
                proc.stdin.flush()
                break
        rest, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        rest, err = proc.communicate()
    text = b"".join(lines).decode() + rest.decode()
    events = {e["event"]: e for e in (json.loads(x) for x in text.splitlines() if x.startswith("{"))}
    assert proc.returncode == 0 and "done" in events, f"{text[-3000:]}\n{err.decode()[-3000:]}"
    expected = sorted(f"r-{i}" for i in range(n))
    assert events["reset-now"]["first"] == expected
    assert events["after-reset"]["again"] == expected
