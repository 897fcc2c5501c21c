"""Crash-safety harness, long form: SIGKILL rocketlite N times under load and verify the log.

    python benchmarks/crash_rounds.py [--rounds 20] [--flush sync|async] [--protocols remoting,grpc,mqtt1,mqtt2]

Producers: our remoting client (several connections), the official rocketmq-python-client over gRPC
(.interop/venv-grpc-python, from .ci/install-grpc*.sh), paho-mqtt at QoS 1 and 2; an offset committer;
a persistent MQTT session. Prints one line per round and a summary; exit 1 when anything acknowledged
was lost or duplicated, an offset went backwards or the MQTT session lost messages.
See docs/reliability.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.reliability.crash import grpc_available, run_crash_rounds  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--flush", choices=["sync", "async"], default="sync")
    ap.add_argument("--protocols", default="remoting,grpc,mqtt1,mqtt2")
    ap.add_argument("--producers", type=int, default=3, help="producers per protocol")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--data-dir", default=None, help="default: a fresh temporary directory")
    a = ap.parse_args()
    protocols = tuple(p for p in a.protocols.split(",") if p)
    if "grpc" in protocols and not grpc_available():
        print("gRPC client venv missing (.interop/venv-grpc-python): skipping gRPC", file=sys.stderr)
        protocols = tuple(p for p in protocols if p != "grpc")
    data = Path(a.data_dir) if a.data_dir else Path(tempfile.mkdtemp(prefix="rocketlite-crash-")) / "data"
    t0 = time.monotonic()
    rep = run_crash_rounds(data, rounds=a.rounds, protocols=protocols, producers=a.producers, flush=a.flush,
                           seed=a.seed, log=print)
    print(f"RESULT flush={a.flush} {'OK' if rep.ok else 'FAILED'} {rep.summary()} seconds={time.monotonic() - t0:.0f}")
    if not rep.ok:
        for k, v in rep.lost.items():
            if v:
                print(f"lost {k}: {v[:10]}")
        for k, v in rep.duplicated.items():
            if v:
                print(f"duplicated {k}: {v[:10]}")
        print("offset regressions:", rep.offset_regressions[:5], "session missing:", rep.session_missing[:10])
    return 0 if rep.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
