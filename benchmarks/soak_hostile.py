"""Hostile-input soak: N mutated frames per protocol against a real rocketlite process.

    python benchmarks/soak_hostile.py [--frames 100000] [--protocols remoting,grpc,mqtt,http] [--seed 1]

Each frame goes on its own connection (bytes, EOF, read until closed); a canary keeps sending over
remoting and polling /health. Prints per protocol: frames tried, outcomes, canary results, the
broker's RSS; exit 1 if the broker died, refused connections or the canary mostly failed.
See tests/reliability/hostile.py and docs/reliability.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rocketlite.bench import proc_rss_kb  # noqa: E402
from tests.reliability.hostile import run_hostile  # noqa: E402
from tests.support.server import RocketliteProcess  # noqa: E402


def rss_mb(pid: int) -> float:
    return proc_rss_kb(pid) / 1024


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100_000)
    ap.add_argument("--protocols", default="remoting,grpc,mqtt,http")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=32)
    a = ap.parse_args()
    failed = False
    with RocketliteProcess(Path(tempfile.mkdtemp(prefix="rocketlite-hostile-")) / "data", timeout=60) as srv:
        assert srv.proc is not None
        print(f"broker pid {srv.proc.pid} RSS {rss_mb(srv.proc.pid):.0f} MB", flush=True)
        for proto in [p for p in a.protocols.split(",") if p]:
            def progress(rep):  # type: ignore[no-untyped-def]
                print(f"  {rep.summary()} RSS {rss_mb(srv.proc.pid):.0f} MB", flush=True)  # type: ignore[union-attr]

            rep = trio.run(lambda: run_hostile(srv.addresses, proto, a.frames, seed=a.seed,
                                               concurrency=a.concurrency, progress=progress))
            alive = srv.proc.poll() is None
            rss = rss_mb(srv.proc.pid) if alive else 0.0
            bad = (not alive or rep.outcomes["refused"] > 0 or rep.canary_ok == 0
                   or rep.canary_failed > max(2, rep.canary_ok // 10))
            failed |= bad
            print(f"RESULT {'FAILED' if bad else 'OK'} {rep.summary()} alive={alive} RSS={rss:.0f}MB", flush=True)
            if not alive:
                break
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
