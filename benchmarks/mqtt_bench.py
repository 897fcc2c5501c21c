"""MQTT end-to-end benchmark: rocketlite beside mosquitto (Debian) and amqtt's broker, in one run.

    python benchmarks/mqtt_bench.py [--qos 0 1 2] [--clients 1 8] [--messages 20000] [--runs 3]

For each broker, QoS and client count N: N subscriber processes each subscribe to their own
topic, then N publisher processes publish to those topics (100 B payload carrying the send time)
with raw sockets and our sans-IO codec. QoS 1/2 publishers keep a window of unacknowledged
messages (QoS 2: 20, because mosquitto 2.0 silently drops beyond its 20-message incoming quota).
Reported: end-to-end messages/s (received / time from first send to last receive), p50/p99
latency under that load, lost messages (QoS 1/2 must be 0), plus a paced 500 msg/s latency run.

Every broker listens on 127.0.0.1 only and is stopped by PID. rocketlite runs from this checkout
with its LMDB store (``--flush async``, the default) in a temporary directory.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rocketlite.protocols.mqtt import codec as C  # noqa: E402
from rocketlite.bench import proc_cpu_s  # noqa: E402
from tests.support.server import RocketliteProcess  # noqa: E402

PAYLOAD = 100
TS = struct.Struct(">Q")


def now_ns() -> int:
    return time.monotonic_ns()  # CLOCK_MONOTONIC: one clock for every process on the machine


# -- raw clients --------------------------------------------------------------------------------
def open_client(port: int, cid: str) -> tuple[socket.socket, C.Decoder]:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(C.encode(C.Connect(cid, 4, True, 600), 4))
    dec = C.Decoder(version=4, server=False)
    pkts: list[Any] = []
    while not pkts:
        data = s.recv(65536)
        if not data:
            raise ConnectionError("closed before CONNACK")
        pkts = dec.feed(data)
    assert isinstance(pkts[0], C.Connack) and pkts[0].reason == 0, pkts
    return s, dec


def subscriber(port: int, topic: str, qos: int, expected: int, ready: Any, out: Any, idle: float) -> None:
    s, dec = open_client(port, f"bsub-{os.getpid()}")
    s.sendall(C.encode(C.Subscribe(1, [C.Subscription(topic, qos)]), 4))
    got_suback = False
    lat: list[int] = []
    first = last = 0
    s.settimeout(idle)
    pending_acks = bytearray()
    try:
        while len(lat) < expected:
            data = s.recv(262144)
            if not data:
                break
            t = now_ns()
            for p in dec.feed(data):
                if p.type == C.PUBLISH:
                    lat.append(t - TS.unpack_from(p.payload)[0])
                    if not first:
                        first = t
                    last = t
                    if p.qos == 1:
                        pending_acks += C.encode(C.Ack(C.PUBACK, p.packet_id), 4)
                    elif p.qos == 2:
                        pending_acks += C.encode(C.Ack(C.PUBREC, p.packet_id), 4)
                elif p.type == C.PUBREL:
                    pending_acks += C.encode(C.Ack(C.PUBCOMP, p.packet_id), 4)
                elif p.type == C.SUBACK and not got_suback:
                    got_suback = True
                    ready.release()
            if pending_acks:
                s.sendall(pending_acks)
                pending_acks.clear()
        # finish QoS 2 handshakes still open
        s.settimeout(0.2)
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                for p in dec.feed(data):
                    if p.type == C.PUBREL:
                        s.sendall(C.encode(C.Ack(C.PUBCOMP, p.packet_id), 4))
        except OSError:
            pass
    except socket.timeout:
        pass
    finally:
        if not got_suback:
            ready.release()
        try:
            s.sendall(C.encode(C.Disconnect(), 4))
        except OSError:
            pass
        s.close()
    out.put((len(lat), first, last, lat))


def publisher(port: int, topic: str, qos: int, count: int, window: int, rate: float, start: Any, out: Any) -> None:
    s, dec = open_client(port, f"bpub-{os.getpid()}")
    pad = b"x" * (PAYLOAD - TS.size)
    start.wait()
    t0 = now_ns()
    sent = 0
    inflight = 0
    interval = 1e9 / rate if rate else 0
    buf = bytearray()
    while sent < count or inflight:
        if interval:
            due = t0 + int(sent * interval)
            while now_ns() < due:
                pass
        while sent < count and (qos == 0 or inflight < window):
            pid = sent % 65535 + 1 if qos else 0
            buf += C.encode_publish(C.Publish(topic, TS.pack(now_ns()) + pad, qos, False, False, pid), 4)
            sent += 1
            if qos:
                inflight += 1
            if interval or len(buf) > 16384:
                break
        if buf:
            s.sendall(buf)
            buf.clear()
        if qos and (inflight >= window or sent >= count or interval):
            s.settimeout(None if (inflight >= window or sent >= count) else 0)
            try:
                data = s.recv(65536)
            except BlockingIOError:
                data = b"?"
            if not data:
                break
            if data != b"?":
                for p in dec.feed(data):
                    if p.type == C.PUBACK or p.type == C.PUBCOMP:
                        inflight -= 1
                    elif p.type == C.PUBREC:
                        buf += C.encode(C.Ack(C.PUBREL, p.packet_id), 4)
        elif qos == 0 and sent >= count:
            break
    s.sendall(C.encode(C.Disconnect(), 4))
    s.close()
    out.put((t0, now_ns()))


def run_case(port: int, qos: int, n: int, total: int, window: int, rate: float = 0, idle: float = 5,
             pid: int = 0) -> dict[str, Any]:
    """One case; ``pid`` (the broker's process) adds its CPU microseconds per received message."""
    ctx = mp.get_context("fork")
    per = max(1, total // n)
    ready = ctx.Semaphore(0)
    start = ctx.Event()
    subs_out = ctx.Queue()
    pubs_out = ctx.Queue()
    tag = f"bench{os.getpid()}x{time.monotonic_ns() % 10**9}"
    subs = [ctx.Process(target=subscriber, args=(port, f"{tag}/{i}", qos, per, ready, subs_out, idle)) for i in range(n)]
    for p in subs:
        p.start()
    for _ in subs:
        ready.acquire(timeout=10)
    pubs = [ctx.Process(target=publisher, args=(port, f"{tag}/{i}", qos, per, window, rate / n if rate else 0, start, pubs_out))
            for i in range(n)]
    for p in pubs:
        p.start()
    time.sleep(0.2)
    cpu0 = proc_cpu_s(pid) if pid else 0.0
    start.set()
    pub_res = [pubs_out.get(timeout=600) for _ in pubs]
    sub_res = [subs_out.get(timeout=600) for _ in subs]
    cpu = proc_cpu_s(pid) - cpu0 if pid else 0.0
    for p in pubs + subs:
        p.join(10)
    received = sum(r[0] for r in sub_res)
    t_start = min(r[0] for r in pub_res)
    t_end = max((r[2] for r in sub_res if r[2]), default=t_start)
    lat = sorted(x for r in sub_res for x in r[3])
    secs = max(1e-9, (t_end - t_start) / 1e9)
    return {
        "sent": per * n,
        "received": received,
        "lost": per * n - received,
        "rate": received / secs,
        "cpu_us": cpu * 1e6 / received if received and pid else float("nan"),
        "p50_ms": lat[len(lat) // 2] / 1e6 if lat else float("nan"),
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1e6 if lat else float("nan"),
    }


# -- brokers ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


class Broker:
    name = ""
    pid = 0  # the broker's process, for its CPU time per message

    def __enter__(self) -> int:
        raise NotImplementedError

    def __exit__(self, *exc: Any) -> None:
        raise NotImplementedError


class Rocketlite(Broker):
    name = "rocketlite"

    def __init__(self, ephemeral: bool = False) -> None:
        self.tmp = tempfile.mkdtemp(prefix="rl-bench-")
        self.srv = RocketliteProcess(None if ephemeral else Path(self.tmp) / "data", ephemeral=ephemeral,
                                     extra_args=["--disable", "grpc", "--disable", "remoting"])
        if ephemeral:
            self.name = "rocketlite-mem"

    def __enter__(self) -> int:
        self.srv.start()
        assert self.srv.proc is not None
        self.pid = self.srv.proc.pid
        return self.srv.addr("mqtt")[1]

    def __exit__(self, *exc: Any) -> None:
        self.srv.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


class ConfiguredPeer(Broker):
    """A peer broker started as ``exe -c <config file>`` on a free port, stopped by its PID."""

    suffix = ""

    def __init__(self, exe: str) -> None:
        self.exe = exe

    def config(self, port: int) -> str:
        raise NotImplementedError

    def __enter__(self) -> int:
        port = free_port()
        self.conf = tempfile.NamedTemporaryFile("w", suffix=self.suffix, delete=False)
        self.conf.write(self.config(port))
        self.conf.close()
        self.proc = subprocess.Popen([self.exe, "-c", self.conf.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        wait_port(port)
        return port

    def __exit__(self, *exc: Any) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.unlink(self.conf.name)


class Mosquitto(ConfiguredPeer):
    name = "mosquitto"
    suffix = ".conf"

    def config(self, port: int) -> str:
        return f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n"


class Amqtt(ConfiguredPeer):
    name = "amqtt"
    suffix = ".yaml"

    def config(self, port: int) -> str:
        return ("---\nlisteners:\n  default:\n    type: tcp\n"
                f"    bind: 127.0.0.1:{port}\n"
                "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--qos", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--messages", type=int, default=20000, help="per case (split over the publishers)")
    ap.add_argument("--amqtt-messages", type=int, default=4000)
    ap.add_argument("--runs", type=int, default=1, help="take the median of this many runs")
    ap.add_argument("--window", type=int, default=100, help="QoS 1 publisher window (QoS 2 uses 20)")
    ap.add_argument("--brokers", nargs="+", default=["rocketlite", "mosquitto", "amqtt"])
    ap.add_argument("--paced", type=float, default=500, help="msg/s of the latency run (0 = skip)")
    args = ap.parse_args()

    brokers: list[Broker] = []
    for b in args.brokers:
        if b == "rocketlite":
            brokers.append(Rocketlite())
        elif b == "rocketlite-mem":
            brokers.append(Rocketlite(ephemeral=True))
        elif b == "mosquitto":
            exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
            if os.path.exists(exe):
                brokers.append(Mosquitto(exe))
            else:
                print("mosquitto not installed (.ci/install-mqtt.sh), skipped")
        elif b == "amqtt":
            exe = REPO / ".interop" / "venv-amqtt" / "bin" / "amqtt"
            if exe.exists():
                brokers.append(Amqtt(str(exe)))
            else:
                print("amqtt not installed (.ci/install-mqtt.sh), skipped")
    results: dict[tuple[str, int, int], dict[str, Any]] = {}
    print(f"{'broker':15s} {'qos':>3s} {'NxN':>4s} {'msgs/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} {'lost':>6s} "
          f"{'cpu us/msg':>10s}", flush=True)
    for broker in brokers:
        with broker as port:
            for qos in args.qos:
                for n in args.clients:
                    total = args.amqtt_messages if broker.name == "amqtt" else args.messages
                    window = 20 if qos == 2 else args.window
                    runs = [run_case(port, qos, n, total, window, pid=broker.pid) for _ in range(args.runs)]
                    runs.sort(key=lambda r: r["rate"])
                    r = runs[len(runs) // 2]
                    r["lost"] = max(x["lost"] for x in runs)
                    cpus = sorted(x["cpu_us"] for x in runs)
                    r["cpu_us"] = cpus[len(cpus) // 2]  # median on its own: it is what to judge changes by
                    results[(broker.name, qos, n)] = r
                    print(f"{broker.name:15s} {qos:3d} {n:>2d}x{n:<1d} {r['rate']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                          f"{r['lost']:6d} {r['cpu_us']:10.1f}", flush=True)
            if args.paced:
                for qos in args.qos:
                    r = run_case(port, qos, 1, int(args.paced * 4), 20, rate=args.paced)
                    print(f"{broker.name:15s} {qos:3d} paced {args.paced:.0f}/s: p50 {r['p50_ms']:.2f} ms, "
                          f"p99 {r['p99_ms']:.2f} ms, lost {r['lost']}", flush=True)
    names = {b.name for b in brokers}
    rl = "rocketlite" if "rocketlite" in names else "rocketlite-mem"
    for other, target in (("mosquitto", 0.5), ("amqtt", 10.0)):
        if other not in names or rl not in names:
            continue
        for qos in args.qos:
            for n in args.clients:
                a, b = results.get((rl, qos, n)), results.get((other, qos, n))
                if a and b and b["rate"]:
                    ratio = a["rate"] / b["rate"]
                    if qos == 2:
                        print(f"{rl} / {other} QoS 2 {n}x{n}: {ratio:.2f}x (no target)")
                        continue
                    mark = "ok" if ratio >= target else "below target"
                    print(f"{rl} / {other} QoS {qos} {n}x{n}: {ratio:.2f}x (target {target}x) {mark}")


if __name__ == "__main__":
    main()
