"""SIGKILL rocketlite under load and restart it: nothing acknowledged is lost or duplicated (flush=sync).

The harness is tests/reliability/crash.py; benchmarks/crash_rounds.py runs it for 20 rounds.
"""

from __future__ import annotations

import pytest

from tests.reliability.crash import grpc_available, run_crash_rounds
from tests.support.interop import INTEROP, require


def check(rep) -> None:
    assert rep.ok, rep.summary() + f"\nlost={ {k: v[:5] for k, v in rep.lost.items()} }" \
        f"\ndup={ {k: v[:5] for k, v in rep.duplicated.items()} }\nregress={rep.offset_regressions[:3]}" \
        f"\nsession_missing={rep.session_missing[:5]}"
    assert all(n > 0 for n in rep.acked.values()), rep.summary()


def test_sigkill_rounds_remoting_and_mqtt_qos1(tmp_path):
    rep = run_crash_rounds(tmp_path / "data", rounds=3, protocols=("remoting", "mqtt1"), producers=2, min_acks=10)
    check(rep)
    assert rep.rounds == 3 and rep.session_expected == rep.session_received > 0


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 20 kill/restart rounds under load: minutes, not the default 120 s
@pytest.mark.parametrize("flush", ["sync", "async"])
def test_sigkill_20_rounds_all_protocols(tmp_path, flush):
    if not grpc_available():
        require(INTEROP / "venv-grpc-python" / "bin" / "python", "rocketmq-python-client venv")
    rep = run_crash_rounds(tmp_path / "data", rounds=20, protocols=("remoting", "grpc", "mqtt1", "mqtt2"),
                           producers=3, flush=flush, log=print)
    print(rep.summary())
    check(rep)
