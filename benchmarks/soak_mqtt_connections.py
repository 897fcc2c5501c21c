"""Connection soak: N concurrent MQTT connections with keep-alive held for a while.

    python benchmarks/soak_mqtt_connections.py [--connections 10000] [--seconds 600] [--keepalive 30]

Starts its own rocketlite process (raising this process's and therefore the broker's open-file limit),
opens N MQTT 3.1.1 connections (CONNECT, then PINGREQ every keepalive/2 seconds, as a device would),
holds them, and every 10 s prints how many are alive, PINGRESP round trips, the broker's RSS and CPU.
At the end one more client publishes and a subscribed connection must receive it (the broker still
works). Exit 1 if any connection was lost or refused.
"""

from __future__ import annotations

import argparse
import random
import resource
import struct
import sys
import tempfile
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rocketlite.bench import proc_cpu_s, proc_rss_kb  # noqa: E402
from tests.support.server import RocketliteProcess  # noqa: E402


def _str(s: str) -> bytes:
    return struct.pack(">H", len(s)) + s.encode()


def _frame(first: int, body: bytes) -> bytes:
    n, out = len(body), bytearray()
    while True:
        d, n = n % 128, n // 128
        out.append(d | (0x80 if n else 0))
        if not n:
            break
    return bytes((first,)) + bytes(out) + body


def connect_packet(cid: str, keepalive: int) -> bytes:
    return _frame(0x10, _str("MQTT") + bytes((4, 0x02)) + struct.pack(">H", keepalive) + _str(cid))


def proc_stats(pid: int) -> tuple[float, float]:
    """(RSS MB, CPU seconds user+system) of a process."""
    return proc_rss_kb(pid) / 1024, proc_cpu_s(pid)


class Stats:
    def __init__(self) -> None:
        self.connected = 0
        self.alive = 0
        self.refused = 0
        self.lost = 0
        self.pings = 0
        self.ping_max = 0.0


async def hold(addr: tuple[str, int], cid: str, keepalive: int, until: float, st: Stats, ready: trio.Semaphore) -> None:
    try:
        stream = await trio.open_tcp_stream(*addr)
        await stream.send_all(connect_packet(cid, keepalive))
        with trio.fail_after(60):
            ack = await stream.receive_some(4)
        if ack[:1] != b"\x20" or ack[3:4] != b"\x00":
            raise OSError(f"CONNACK {ack!r}")
    except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
        st.refused += 1
        if st.refused <= 3:
            print(f"  connect failed: {exc!r}", flush=True)
        ready.release()
        return
    st.connected += 1
    st.alive += 1
    ready.release()
    try:
        await trio.sleep(random.uniform(0, keepalive / 2))  # spread the pings
        while trio.current_time() < until:
            t0 = trio.current_time()
            await stream.send_all(b"\xc0\x00")
            with trio.fail_after(keepalive):
                resp = await stream.receive_some(2)
            if resp != b"\xd0\x00":
                raise OSError(f"expected PINGRESP, got {resp!r}")
            st.pings += 1
            st.ping_max = max(st.ping_max, trio.current_time() - t0)
            await trio.sleep(keepalive / 2)
        await stream.send_all(b"\xe0\x00")
    except (OSError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        st.lost += 1
        if st.lost <= 3:
            print(f"  connection {cid} lost: {exc!r}", flush=True)
    finally:
        st.alive -= 1
        await stream.aclose()


async def final_check(addr: tuple[str, int]) -> bool:
    sub = await trio.open_tcp_stream(*addr)
    pub = await trio.open_tcp_stream(*addr)
    await sub.send_all(connect_packet("soak-sub", 60))
    await sub.receive_some(4)
    await sub.send_all(_frame(0x82, struct.pack(">H", 1) + _str("soak/check") + b"\x00"))
    await sub.receive_some(5)
    await pub.send_all(connect_packet("soak-pub", 60))
    await pub.receive_some(4)
    await pub.send_all(_frame(0x30, _str("soak/check") + b"still-here"))
    with trio.move_on_after(20):
        buf = b""
        while b"still-here" not in buf:
            buf += await sub.receive_some(4096)
        return True
    return False


async def run(srv: RocketliteProcess, n: int, seconds: float, keepalive: int, rate: int) -> int:
    assert srv.proc is not None
    pid = srv.proc.pid
    addr = srv.addr("mqtt")
    st = Stats()
    rss0, cpu0 = proc_stats(pid)
    print(f"broker pid {pid}: RSS {rss0:.0f} MB before connections", flush=True)
    t_start = trio.current_time()
    ready = trio.Semaphore(0)
    async with trio.open_nursery() as nursery:
        # ramp up at `rate` connections per second
        for i in range(n):
            nursery.start_soon(hold, addr, f"soak-{i}", keepalive, float("inf"), st, ready)
            if rate and i % rate == rate - 1:
                await trio.sleep(1)
        for _ in range(n):
            await ready.acquire()
        ramp = trio.current_time() - t_start
        rss1, cpu1 = proc_stats(pid)
        print(f"{st.connected} connected ({st.refused} refused) in {ramp:.1f}s; RSS {rss1:.0f} MB "
              f"({(rss1 - rss0) * 1024 / max(1, st.connected):.1f} KB/connection), CPU {cpu1 - cpu0:.1f}s", flush=True)
        t_hold = trio.current_time()
        last_cpu, last_t = cpu1, t_hold
        peak = rss1
        while trio.current_time() - t_hold < seconds:
            await trio.sleep(min(10, seconds))
            rss, cpu = proc_stats(pid)
            peak = max(peak, rss)
            now = trio.current_time()
            print(f"  t={now - t_hold:5.0f}s alive={st.alive} lost={st.lost} pings={st.pings} "
                  f"ping_max={st.ping_max * 1000:.0f}ms RSS={rss:.0f}MB CPU={(cpu - last_cpu) / (now - last_t) * 100:.1f}%",
                  flush=True)
            last_cpu, last_t = cpu, now
        rss2, cpu2 = proc_stats(pid)
        ok = await final_check(addr)
        print(f"RESULT connections={st.connected} held_s={seconds:.0f} lost={st.lost} refused={st.refused} "
              f"pings={st.pings} ping_max_ms={st.ping_max * 1000:.0f} RSS_before={rss0:.0f}MB RSS_peak={peak:.0f}MB "
              f"CPU_avg_hold={(cpu2 - cpu1) / max(1e-9, trio.current_time() - t_hold) * 100:.1f}% "
              f"broker_still_delivers={ok}", flush=True)
        nursery.cancel_scope.cancel()
    return 0 if (st.lost == 0 and st.refused == 0 and st.connected == n and ok) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--keepalive", type=int, default=30)
    ap.add_argument("--rate", type=int, default=250, help="new connections per second while ramping up")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, a.connections * 2 + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # inherited by the broker process
    if want < a.connections + 512:
        print(f"open-file limit {want} is too low for {a.connections} connections", file=sys.stderr)
        return 2
    data = Path(tempfile.mkdtemp(prefix="rocketlite-soak-")) / "data"
    with RocketliteProcess(data, timeout=60) as srv:
        return trio.run(run, srv, a.connections, a.seconds, a.keepalive, a.rate)


if __name__ == "__main__":
    raise SystemExit(main())
