"""Bridge drain rate: how fast an edge rocketlite empties a backlog into an upstream one.

    python benchmarks/bridge_bench.py [--messages 20000] [--size 100] [--batch 32] [--queues 4]

Starts an edge whose bridge points at a port where nothing listens yet, stores N messages in it
(remoting batches), then starts the upstream on that port and times the drain (upstream appended ==
N), with the edge's and upstream's CPU seconds per message. Figures from a busy machine are lower bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rocketlite.admin.client import RemotingClient  # noqa: E402
from rocketlite.bench import proc_cpu_s  # noqa: E402
from rocketlite.protocols.remoting.codec import BatchItem, RequestCode, encode_batch  # noqa: E402
from tests.support.server import RocketliteProcess  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


cpu_seconds = proc_cpu_s


def appended(srv: RocketliteProcess, topic: str) -> int:
    host, port = srv.addr("http")
    try:
        return int(json.loads(urllib.request.urlopen(f"http://{host}:{port}/api/topics/{topic}", timeout=5).read())
                   ["appended"])
    except Exception:
        return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--queues", type=int, default=4)
    ap.add_argument("--grpc", action="store_true", help="forward to the upstream's gRPC port instead of remoting")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        up_port = free_port()
        scheme = "grpc" if args.grpc else "remoting"
        (d / "edge.toml").write_text(
            f'[broker]\ndefault_queue_count = {args.queues}\n'
            f'[bridges.bench]\nupstream = "{scheme}://127.0.0.1:{up_port}"\ntopics = ["bench"]\n'
            f'batch_size = {args.batch}\n'
            'retry_min_ms = 50\nretry_max_ms = 200\n')
        off = ["--set", "mqtt.enabled=false"] + ([] if args.grpc else ["--set", "grpc.enabled=false"])
        edge = RocketliteProcess(d / "edge", extra_args=["--config", str(d / "edge.toml"), *off]).start()
        up = RocketliteProcess(d / "up", extra_args=["--set", f"broker.default_queue_count={args.queues}", *off])
        up.ports["grpc" if args.grpc else "remoting"] = up_port
        try:
            body = b"x" * args.size
            with RemotingClient(edge.endpoint("remoting"), timeout=30) as c:
                sent = 0
                while sent < args.messages:
                    n = min(256, args.messages - sent)
                    ext = {"a": "PG", "b": "bench", "c": "TBW102", "d": 4, "e": (sent // 256) % args.queues,
                           "f": 0, "g": 0, "h": 0, "i": "", "j": 0, "k": "false", "m": "true"}
                    c.invoke(edge.endpoint("remoting"), RequestCode.SEND_BATCH_MESSAGE, ext,
                             encode_batch(BatchItem(body, 0, {"UNIQ_KEY": f"B{sent + i:010d}"}) for i in range(n)))
                    sent += n
            up.start()
            e0, u0, t0 = cpu_seconds(edge.proc.pid), cpu_seconds(up.proc.pid), time.monotonic()  # type: ignore[union-attr]
            while appended(up, "bench") < args.messages:
                time.sleep(0.05)
            dt = time.monotonic() - t0
            e1, u1 = cpu_seconds(edge.proc.pid), cpu_seconds(up.proc.pid)  # type: ignore[union-attr]
            print(f"bridge drain over {scheme}: {args.messages} x {args.size} B, batch {args.batch}, {args.queues} queues, "
                  f"load average {os.getloadavg()[0]:.2f}")
            print(f"  {dt:.2f} s  {args.messages / dt:,.0f} msg/s  edge CPU {1e6 * (e1 - e0) / args.messages:.0f} us/msg"
                  f"  upstream CPU {1e6 * (u1 - u0) / args.messages:.0f} us/msg")
        finally:
            edge.stop()
            up.stop()


if __name__ == "__main__":
    main()
