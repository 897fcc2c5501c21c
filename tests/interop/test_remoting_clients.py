"""Real RocketMQ remoting clients against a real rocketlite process, each in its own subprocess.

Clients (installed by .ci/install-remoting.sh, see REMOTING.md section 12):
* ``alions``: npm ali-ons 3.12.0 (pure JS, claims JAVA v121);
* ``cpp044``: PyPI rocketmq 0.4.4 (bundled early rocketmq-client-cpp, CPP v63);
* ``cpp21``: PyPI rocketmq-client-python 2.0.0 with librocketmq 2.1.0 (CPP v333).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.interop import INTEROP, require
from tests.support.server import RocketliteProcess

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent / "remoting_clients"
# the broker's clock and a client's are read in different processes (ms resolution, some jitter)
CLOCK_SLACK_MS = 20
CLIENTS = {
    "alions": "node",
    "cpp044": "venv-rocketmq044",
    "cpp21": "venv-rocketmq-cpp21",
}


def client_command(kind: str) -> tuple[list[str], dict[str, str]]:
    if kind == "alions":
        modules = require(INTEROP / "node" / "remoting" / "node_modules" / "ali-ons", "npm ali-ons 3.12.0").parent
        node = require("node", "node")
        return [str(node), str(HERE / "alions.js")], {"ALIONS_MODULES": str(modules)}
    py = require(INTEROP / CLIENTS[kind] / "bin" / "python", f"client venv {CLIENTS[kind]}")
    return [str(py), str(HERE / "cpp_client.py")], {}


def run_client(kind: str, cfg: dict[str, Any], tmp_path: Path, timeout: float = 25.0) -> list[dict[str, Any]]:
    """Run one scenario; returns the JSON events it printed (asserting it finished cleanly)."""
    proc = start_client(kind, cfg, tmp_path)
    return finish_client(proc, timeout)


def start_client(kind: str, cfg: dict[str, Any], tmp_path: Path) -> subprocess.Popen[bytes]:
    cmd, extra_env = client_command(kind)
    home = tmp_path / f"home-{kind}"
    home.mkdir(exist_ok=True)
    env = {**os.environ, **extra_env, "HOME": str(home)}  # librocketmq logs under $HOME/logs
    return subprocess.Popen(cmd + [json.dumps(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, env=env)


def finish_client(proc: subprocess.Popen[bytes], timeout: float = 25.0) -> list[dict[str, Any]]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    events = []
    for line in out.decode(errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
    kinds = [e.get("event") for e in events]
    assert "done" in kinds, f"client did not finish: rc={proc.returncode} events={events} stderr={err.decode(errors='replace')[-2000:]}"
    return events


def event(events: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(e for e in events if e.get("event") == name)


@pytest.fixture(scope="module")
def shared_srv(tmp_path_factory: pytest.TempPathFactory):
    """One rocketlite process for the scenarios of this module (each uses its own topic and
    groups), which keeps the suite fast; the restart scenario gets its own (own_srv)."""
    with RocketliteProcess(tmp_path_factory.mktemp("remoting") / "data") as p:
        yield p


@pytest.fixture
def srv(shared_srv: RocketliteProcess) -> RocketliteProcess:
    assert shared_srv.proc is not None and shared_srv.proc.poll() is None, "the shared rocketlite died"
    return shared_srv


@pytest.fixture
def own_srv(tmp_path: Path):
    with RocketliteProcess(tmp_path / "data") as p:
        yield p


def cfg_for(srv: RocketliteProcess, scenario: str, name: str, **kw: Any) -> dict[str, Any]:
    return {"scenario": scenario, "nameSrv": srv.endpoint("remoting"), "topic": f"T_{name}",
            "group": f"G_{name}", **kw}


@pytest.mark.parametrize("kind", ["alions", "cpp044", "cpp21"])
def test_produce_then_push_consume_all(kind: str, srv: RocketliteProcess, tmp_path: Path) -> None:
    n = 20
    produced = event(run_client(kind, cfg_for(srv, "produce", f"pc_{kind}", n=n), tmp_path), "produced")
    assert len(produced["sent"]) == n
    assert all(s["status"] in ("SEND_OK", 0) for s in produced["sent"])
    got = event(run_client(kind, cfg_for(srv, "consume", f"pc_{kind}", n=n), tmp_path), "consumed")["got"]
    assert sorted(g["body"] for g in got) == sorted(s["body"] for s in produced["sent"])
    assert all(g["reconsumeTimes"] == 0 for g in got)


def test_tag_filter_across_clients(srv: RocketliteProcess, tmp_path: Path) -> None:
    """ali-ons and librocketmq 2.1 produce, the 0.4.4 client filters by tag (its heartbeat's codeSet
    is bogus, so the broker must hash the tag itself) and decodes records the others stored."""
    run_client("alions", cfg_for(srv, "produce", "tags", n=3, tag="TagB", prefix="b"), tmp_path)
    run_client("cpp21", cfg_for(srv, "produce", "tags", n=3, tag="TagA", prefix="a"), tmp_path)
    got = event(run_client("cpp044", cfg_for(srv, "consume", "tags", n=3, tag="TagA"), tmp_path), "consumed")["got"]
    assert sorted(g["body"] for g in got) == ["a-0", "a-1", "a-2"]


def test_sql92_filter_alions(srv: RocketliteProcess, tmp_path: Path) -> None:
    run_client("alions", cfg_for(srv, "produce", "sql", n=6, sqlProp="n"), tmp_path)
    got = event(run_client("alions", cfg_for(srv, "consume", "sql", n=2, sql="n >= 4"), tmp_path), "consumed")["got"]
    assert sorted(g["body"] for g in got) == ["m-4", "m-5"]


@pytest.mark.parametrize("kind", ["alions", "cpp21"])
def test_failing_consumer_gets_redelivery_through_retry_topic(kind: str, srv: RocketliteProcess, tmp_path: Path) -> None:
    # rocketmq 0.4.4 cannot say "reconsume later" (REMOTING.md section 12), so it is not here.
    run_client(kind, cfg_for(srv, "produce", f"retry_{kind}", n=2), tmp_path)
    events = run_client(kind, cfg_for(srv, "retry", f"retry_{kind}", n=2, timeoutMs=22000, timeoutS=22), tmp_path,
                        timeout=30)
    fails = [e for e in events if e.get("event") == "fail"]
    got = event(events, "consumed")["got"]
    assert sorted(f["body"] for f in fails) == ["m-0", "m-1"]
    assert sorted(g["body"] for g in got) == ["m-0", "m-1"]
    # redelivered copies come from %RETRY%<group>, restored to the original topic by the client
    assert all(g["reconsumeTimes"] == 1 for g in got)
    assert all(g["topic"] == f"T_retry_{kind}" for g in got)


def test_max_reconsume_times_sends_to_dlq_alions(srv: RocketliteProcess, tmp_path: Path) -> None:
    """ali-ons with maxReconsumeTimes 0: the first failure's send-back goes straight to %DLQ%<group>."""
    from tests.interop.remoting_support import total_messages  # noqa: PLC0415

    run_client("alions", cfg_for(srv, "produce", "dlq", n=3), tmp_path)
    events = run_client("alions", cfg_for(srv, "dlq", "dlq", n=3, maxReconsumeTimes=0), tmp_path)
    assert sorted(e["body"] for e in events if e.get("event") == "fail") == ["m-0", "m-1", "m-2"]
    deadline = time.monotonic() + 10
    while total_messages(srv, "%DLQ%G_dlq") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)  # the client's last send-back may still be on its way
    assert total_messages(srv, "%DLQ%G_dlq") == 3
    assert total_messages(srv, "%RETRY%G_dlq") == 0


@pytest.mark.parametrize("kind", ["cpp044", "cpp21"])
def test_orderly_consumption_keeps_queue_order(kind: str, srv: RocketliteProcess, tmp_path: Path) -> None:
    n = 30
    run_client(kind, cfg_for(srv, "produce_orderly", f"order_{kind}", n=n, keys=3), tmp_path)
    got = event(run_client(kind, cfg_for(srv, "consume_orderly", f"order_{kind}", n=n), tmp_path), "consumed")["got"]
    assert len(got) == n
    per_queue: dict[int, list[int]] = {}
    per_key: dict[str, list[int]] = {}
    for g in got:
        per_queue.setdefault(g["queue"], []).append(g["offset"])
        key, _, seq = g["body"].partition(":")
        per_key.setdefault(key, []).append(int(seq))
    for offsets in per_queue.values():
        assert offsets == sorted(offsets) == list(range(len(offsets)))
    assert set(per_key) == {"k0", "k1", "k2"}
    for seqs in per_key.values():
        assert seqs == sorted(seqs)


def test_two_consumers_of_a_group_share_the_queues(srv: RocketliteProcess, tmp_path: Path) -> None:
    """Two librocketmq 2.1 push consumers in one group: the consumer list, NOTIFY_CONSUMER_IDS_CHANGED
    and their rebalance split the queues; together they receive every message."""
    import queue as queue_mod  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from tests.interop.remoting_support import request  # noqa: PLC0415

    cfg = cfg_for(srv, "stream", "share", timeoutS=25)
    lines: queue_mod.Queue[tuple[int, dict[str, Any]]] = queue_mod.Queue()
    procs = [start_client("cpp21", cfg, tmp_path) for _ in range(2)]

    def pump(i: int, p: subprocess.Popen[bytes]) -> None:
        assert p.stdout is not None
        for raw in p.stdout:
            try:
                lines.put((i, json.loads(raw)))
            except ValueError:
                pass

    for i, p in enumerate(procs):
        threading.Thread(target=pump, args=(i, p), daemon=True).start()
    try:
        deadline = time.monotonic() + 15
        while True:  # both registered (heartbeats) before anything is produced
            r = request(srv.addr("remoting"), 38, {"consumerGroup": "G_share"})
            if r.code == 0 and len(json.loads(r.body)["consumerIdList"]) == 2:
                break
            assert time.monotonic() < deadline, "consumers did not both register"
            time.sleep(0.1)
        n = 40
        run_client("cpp21", cfg_for(srv, "produce", "share", n=n), tmp_path)
        got: dict[int, set[str]] = {0: set(), 1: set()}
        deadline = time.monotonic() + 15
        while len(got[0] | got[1]) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"only {len(got[0] | got[1])} of {n} arrived"
            try:
                i, ev = lines.get(timeout=left)
            except queue_mod.Empty:
                continue
            if ev.get("event") == "msg":
                got[i].add(ev["body"])
        assert got[0] | got[1] == {f"m-{i}" for i in range(n)}
        assert got[0] and got[1], "one consumer got everything: the queues were not shared"
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_transactions_commit_rollback_and_check_back(srv: RocketliteProcess, tmp_path: Path) -> None:
    events = run_client("cpp21", cfg_for(srv, "transaction", "tx"), tmp_path)
    sent = event(events, "sent")["results"]
    assert [s["status"] for s in sent] == [0, 0, 0]
    assert event(events, "check")["body"] == "unknown-1"  # the broker asked about the unknown one
    got = event(run_client("cpp21", cfg_for(srv, "consume", "tx", n=2), tmp_path), "consumed")["got"]
    assert sorted(g["body"] for g in got) == ["commit-1", "unknown-1"]
    # nothing else became visible: the rolled-back half never reaches the topic
    from tests.interop.remoting_support import total_messages  # noqa: PLC0415

    assert total_messages(srv, "T_tx") == 2


def test_delayed_messages_arrive_no_earlier_than_asked_alions(srv: RocketliteProcess, tmp_path: Path) -> None:
    # message 0: delay level 2 (5 s); message 1: Aliyun __STARTDELIVERTIME 3 s ahead (TIMER_DELIVER_MS)
    produced = event(run_client("alions", cfg_for(srv, "delay", "delay_ali", n=2, delayLevel=2, deliverAfterMs=3000),
                                tmp_path), "produced")["sent"]
    got = event(run_client("alions", cfg_for(srv, "consume", "delay_ali", n=2), tmp_path), "consumed")["got"]
    sent_at = {s["body"]: (s["t"], s["delayMs"]) for s in produced}
    for g in got:
        t, delay = sent_at[g["body"]]
        assert g["t"] >= t + delay - CLOCK_SLACK_MS, (g, t, delay)


def test_delayed_message_arrives_no_earlier_than_asked_cpp(srv: RocketliteProcess, tmp_path: Path) -> None:
    events = run_client("cpp21", cfg_for(srv, "consume", "delay_cpp", n=1, produceAfterStart=1, delayLevel=1),
                        tmp_path)
    sent = event(events, "produced")["sent"][0]
    got = event(events, "consumed")["got"][0]
    assert got["t"] >= sent["t"] + 1000 - CLOCK_SLACK_MS


@pytest.mark.parametrize("kind", ["alions", "cpp21"])
def test_consumption_resumes_from_committed_offset_after_restart(kind: str, own_srv: RocketliteProcess,
                                                                 tmp_path: Path) -> None:
    srv = own_srv
    # ali-ons persists offsets on close; the C++ client every 5 s (it is ended with os._exit)
    settle = {"settleS": 7} if kind != "alions" else {}
    run_client(kind, cfg_for(srv, "produce", f"restart_{kind}", n=10), tmp_path)
    first = event(run_client(kind, cfg_for(srv, "consume", f"restart_{kind}", n=10, **settle), tmp_path),
                  "consumed")["got"]
    assert len(first) == 10
    srv.restart()
    run_client(kind, cfg_for(srv, "produce", f"restart_{kind}", n=5, prefix="after"), tmp_path)
    again = event(run_client(kind, cfg_for(srv, "consume", f"restart_{kind}", n=5), tmp_path), "consumed")["got"]
    assert sorted(g["body"] for g in again) == [f"after-{i}" for i in range(5)]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
