"""Messages cross between gRPC (official Python 5.x client) and remoting (the remoting interop clients)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.grpc_support import event, run_scenario
from tests.interop.test_remoting_clients import cfg_for, run_client
from tests.interop.test_remoting_clients import event as remoting_event
from tests.support.server import RocketliteProcess

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("kind", ["alions"])
def test_remoting_producer_to_grpc_consumer(kind: str, rocketlite_process: RocketliteProcess, tmp_path: Path) -> None:
    cfg = cfg_for(rocketlite_process, "produce", f"r2g_{kind}", n=4)
    produced = remoting_event(run_client(kind, cfg, tmp_path), "produced")["sent"]
    ev = run_scenario("python", rocketlite_process, "consume", cfg["topic"], "G_r2g_grpc", "4", home=tmp_path / "py")
    got = event(ev, "consumed")["got"]
    assert sorted(g["body"] for g in got) == sorted(s["body"] for s in produced)
    assert all(g["tag"] == "TagA" and g["keys"] == [f"key-{g['body'].split('-')[1]}"] for g in got)


@pytest.mark.parametrize("kind", ["alions"])
def test_grpc_producer_to_remoting_consumer(kind: str, rocketlite_process: RocketliteProcess, tmp_path: Path) -> None:
    cfg = cfg_for(rocketlite_process, "consume", f"g2r_{kind}", n=4)
    ev = run_scenario("python", rocketlite_process, "produce", cfg["topic"], "4", "m", home=tmp_path / "py")
    sent = event(ev, "produced")["sent"]
    got = remoting_event(run_client(kind, cfg, tmp_path), "consumed")["got"]
    assert sorted(g["body"] for g in got) == sorted(s["body"] for s in sent)
