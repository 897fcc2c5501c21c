"""The official npm rocketmq-client-nodejs 1.0.8 against a real rocketlite process."""

from __future__ import annotations

from pathlib import Path

import pytest

from rocketlite.protocols.grpc.tls import self_signed_pem
from tests.interop.grpc_support import event, interactive_scenario, run_scenario
from tests.support.server import RocketliteProcess

pytestmark = pytest.mark.interop


def test_producer_and_simple_consumer(rocketlite_process: RocketliteProcess, tmp_path: Path) -> None:
    ev = run_scenario("node", rocketlite_process, "simple", "NodeSimple", "node-simple", "5", home=tmp_path)
    got = event(ev, "received")
    assert sorted(got["bodies"]) == [f"hello-{i}" for i in range(5)]
    assert got["corrupted"] == 0 and all(p.get("n") for p in got["props"])


def test_producer_and_simple_consumer_over_tls(tmp_path: Path) -> None:
    cert, key = self_signed_pem()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    args = ["--set", f"grpc.tls_cert_file={tmp_path / 'cert.pem'}", "--set", f"grpc.tls_key_file={tmp_path / 'key.pem'}"]
    with RocketliteProcess(tmp_path / "data", extra_args=args) as srv:
        ev = run_scenario(
            "node", srv, "simple", "NodeSimpleTls", "node-simple-tls", "2", home=tmp_path / "home",
            env={"RL_GRPC_TLS": "1", "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(tmp_path / "cert.pem")},
        )
    assert len(event(ev, "received")["ids"]) == 2


def test_producer_and_push_consumer(rocketlite_process: RocketliteProcess, tmp_path: Path) -> None:
    ev = run_scenario("node", rocketlite_process, "push", "NodePush", "node-push", "5", home=tmp_path)
    assert sorted(set(event(ev, "received")["bodies"])) == [f"push-{i}" for i in range(5)]


def test_fifo_order_per_message_group(rocketlite_process: RocketliteProcess, tmp_path: Path) -> None:
    ev = run_scenario("node", rocketlite_process, "fifo", "NodeFifo", "node-fifo", "5", home=tmp_path)
    got = event(ev, "received")
    assert got["held_back"] and all(v == list(range(5)) for v in got["order"].values())


def test_fifo_order_with_push_consumer(rocketlite_process: RocketliteProcess, tmp_path: Path) -> None:
    ev = run_scenario("node", rocketlite_process, "fifo_push", "NodeFifoPush", "node-fifo-push", "5", home=tmp_path)
    assert all(v == list(range(5)) for v in event(ev, "received")["order"].values())


def test_delayed_message_not_delivered_early_and_recall(rocketlite_process: RocketliteProcess, tmp_path: Path) -> None:
    ev = run_scenario("node", rocketlite_process, "delay", "NodeDelay", "node-delay", "2", home=tmp_path)
    got = event(ev, "received")
    assert got["arrivals"][1][1] * 1000 >= got["due"] * 1000 - 50
    assert got["recalled"] and got["late"] == []


def test_transaction_commit_and_rollback(rocketlite_process: RocketliteProcess, tmp_path: Path) -> None:
    ev = run_scenario("node", rocketlite_process, "tx", "NodeTx", "node-tx", home=tmp_path)
    assert event(ev, "received")["bodies"] == ["committed"]


def test_orphaned_transaction_recovery(tmp_path: Path) -> None:
    args = ["--set", "broker.transaction_timeout_ms=1000"]
    with RocketliteProcess(tmp_path / "data", extra_args=args) as srv:
        ev = run_scenario("node", srv, "orphan", "NodeOrphan", "node-orphan", home=tmp_path / "home")
    assert event(ev, "checked")["body"] == "orphan"


def test_failing_consumer_reaches_dlq(tmp_path: Path) -> None:
    args = ["--set", "broker.max_reconsume_times=1"]
    with RocketliteProcess(tmp_path / "data", extra_args=args) as srv:
        ev = run_scenario("node", srv, "dlq", "NodeDlq", "node-dlq", home=tmp_path / "home")
    got = event(ev, "received")
    assert got["dead"] == [got["id"]]


def test_acks_work_across_a_restart(tmp_path: Path) -> None:
    with RocketliteProcess(tmp_path / "data") as srv:
        ev = interactive_scenario(
            "node", srv, "restart", "NodeRestart", "node-restart", home=tmp_path / "home",
            pause_event="restart-now", between=srv.restart,
        )
    after = event(ev, "after-restart")
    assert after["acked"] == ["r-2", "r-3"] and after["again"] == []
