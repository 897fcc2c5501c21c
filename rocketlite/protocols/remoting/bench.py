"""Remoting throughput: produce and consume messages/s against a real rocketlite process.

    python benchmarks/remoting_bench.py [--messages 20000] [--size 100] [--concurrency 1 16]

Starts ``rocketlite serve`` (LMDB store in a temp dir, remoting only) as a subprocess, drives it
with our own pipelined Trio remoting client (SEND_MESSAGE_V2 one request at a time per producer
connection; PULL_MESSAGE 32 at a time per queue), and prints messages/s beside the storage
figure measured in the same run: the core's ``broker.send`` straight onto an LMDB store in this
process, same sizes and concurrency, no network. The ratio says what the protocol layer costs.
Interop with real clients is proven by tests/interop, not here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import trio

from rocketlite.bench import proc_cpu_s, spawn_serve, stop_serve
from rocketlite.protocols.remoting.client import RemotingClient


@dataclass
class Figure:
    what: str
    concurrency: int
    messages: int
    seconds: float
    server_cpu_s: float = 0.0  # CPU seconds the rocketlite process used (load-independent cost)
    client_cpu_s: float = 0.0  # CPU seconds this process (the load generator) used meanwhile

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds > 0 else 0.0


def start_server(data_dir: str | None, flush: str) -> tuple[subprocess.Popen[bytes], str, int]:
    store = ["--data-dir", data_dir, "--flush", flush] if data_dir else ["--ephemeral"]
    proc, addresses, _ = spawn_serve(["--remoting-port", "0", "--broker-port", "0", *store,
                                      "--disable", "grpc", "--disable", "mqtt", "--disable", "http"])
    host, _, port = addresses["remoting"].rpartition(":")
    return proc, host, int(port)


async def broker_address(host: str, port: int, topic: str) -> tuple[str, int, int]:
    async with RemotingClient.connect(host, port) as c:
        r = await c.request(105, topic=topic)
        route = json.loads(r.body)
    addr = route["brokerDatas"][0]["brokerAddrs"]["0"]
    h, _, p = addr.rpartition(":")
    return h, int(p), int(route["queueDatas"][0]["writeQueueNums"])


async def produce(host: str, port: int, topic: str, total: int, concurrency: int, size: int,
                  shared: bool = False) -> Figure:
    """``concurrency`` producers, each one synchronous send at a time; each on its own connection
    (like separate client processes) or, with ``shared``, all on one (like the threads of one Java
    client, which share a connection per broker)."""
    body = b"x" * size
    per = [total // concurrency + (1 if i < total % concurrency else 0) for i in range(concurrency)]
    errors: list[str] = []

    async def producer(c: RemotingClient, n: int, i: int) -> None:
        for k in range(n):
            r = await c.send_message(topic, body, group="bench", queue_id=(i + k) % 4, tags="bench")
            if r.code != 0:
                errors.append(f"{r.code} {r.remark}")
                return

    async def own_connection(n: int, i: int) -> None:
        async with RemotingClient.connect(host, port) as c:
            await producer(c, n, i)

    t0 = time.perf_counter()
    if shared:
        async with RemotingClient.connect(host, port) as c, trio.open_nursery() as nursery:
            for i, n in enumerate(per):
                nursery.start_soon(producer, c, n, i)
    else:
        async with trio.open_nursery() as nursery:
            for i, n in enumerate(per):
                nursery.start_soon(own_connection, n, i)
    dt = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"send failed: {errors[0]}")
    return Figure("produce (one connection)" if shared and concurrency > 1 else "produce", concurrency, total, dt)


async def consume(host: str, port: int, topic: str, queues: int, total: int) -> Figure:
    got = [0]

    async def puller(c: RemotingClient, qid: int) -> None:
        # stop at the end of what was produced: a long-polled PULL past it would park for the
        # suspend timeout and count that wait as consume time
        end = int((await c.request(30, topic=topic, queueId=qid)).ext.get("offset", 0))
        offset = 0
        while got[0] < total and offset < end:
            r = await c.request(11, consumerGroup="bench-consumer", topic=topic, queueId=qid, queueOffset=offset,
                                maxMsgNums=32, sysFlag=6, commitOffset=0, suspendTimeoutMillis=1000,
                                subscription="*", subVersion=0)
            if r.code == 0:
                n = _count_records(r.body)
                got[0] += n
                offset = int(r.ext["nextBeginOffset"])
            elif r.code in (19, 20, 21):
                offset = int(r.ext.get("nextBeginOffset", offset))
                if r.code == 19 and offset >= int(r.ext.get("maxOffset", 0)):
                    return

    t0 = time.perf_counter()
    async with RemotingClient.connect(host, port) as c:
        async with trio.open_nursery() as nursery:
            for q in range(queues):
                nursery.start_soon(puller, c, q)
    return Figure("consume", queues, got[0], time.perf_counter() - t0)


def _count_records(body: bytes) -> int:
    n = pos = 0
    while pos + 4 <= len(body):
        pos += int.from_bytes(body[pos : pos + 4], "big")
        n += 1
    return n


async def storage_figure(total: int, concurrency: int, size: int, flush: str) -> Figure:
    """The storage benchmark's figure for the same size and concurrency, in this run.

    Uses ``rocketlite bench storage``'s own case (``rocketlite.bench._append_case``: one message per
    ``Store.write`` from N tasks on a fresh LMDB store) when it is there, else ``broker.send``.
    """
    from rocketlite.storage import open_store

    body = b"x" * size
    with tempfile.TemporaryDirectory(prefix="rl-bench-store-") as d:
        store = open_store(d, flush=flush)
        await store.open()
        try:
            try:
                from rocketlite.bench import _append_case
            except ImportError:
                _append_case = None
            if _append_case is not None:
                await _append_case(store, size, min(concurrency, 16), 0.2, False)  # warm-up, as it does
                r = await _append_case(store, size, concurrency, 2.0, False)
                return Figure("storage (rocketlite bench storage case)", concurrency, int(r["count"]),
                              r["count"] / r["rate"] if r["rate"] else 0.0)
            from rocketlite.core.broker import Broker
            from rocketlite.core.message import Message
            from rocketlite.runtime import TrioRuntime

            async with trio.open_nursery() as nursery:
                broker = Broker(store, TrioRuntime(nursery))
                await broker.start()
                per = [total // concurrency + (1 if i < total % concurrency else 0) for i in range(concurrency)]

                async def writer(n: int, i: int) -> None:
                    for k in range(n):
                        await broker.send([Message("bench", body, queue_id=(i + k) % 4, tags="bench")])

                t0 = time.perf_counter()
                async with trio.open_nursery() as inner:
                    for i, n in enumerate(per):
                        inner.start_soon(writer, n, i)
                dt = time.perf_counter() - t0
                nursery.cancel_scope.cancel()
            return Figure("storage (broker.send, LMDB)", concurrency, total, dt)
        finally:
            await store.close()


async def run(args: argparse.Namespace) -> list[Figure]:
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="rl-bench-remoting-") as data_dir:
        proc, host, ns_port = start_server(None if args.ephemeral else data_dir, args.flush)
        try:
            bhost, bport, queues = await broker_address(host, ns_port, "bench")
            async def measured(coro: Any) -> None:
                cpu0, own0 = proc_cpu_s(proc.pid), time.process_time()
                f = await coro
                f.server_cpu_s = proc_cpu_s(proc.pid) - cpu0
                f.client_cpu_s = time.process_time() - own0
                figures.append(f)

            for conc in args.concurrency:
                topic = f"bench_{conc}"
                await measured(produce(bhost, bport, topic, args.messages, conc, args.size))
                await measured(consume(bhost, bport, topic, queues, args.messages))
                if conc > 1 and args.shared:
                    await measured(produce(bhost, bport, topic + "_shared", args.messages, conc, args.size,
                                           shared=True))
        finally:
            stop_serve(proc)
    if not args.ephemeral:
        for conc in args.concurrency:
            figures.append(await storage_figure(args.messages, conc, args.size, args.flush))
    return figures


def report(figures: list[Figure], size: int, flush: str) -> str:
    lines = [f"remoting benchmark: {size} B messages, store: {flush}, {os.cpu_count()} CPUs, "
             f"load average {os.getloadavg()[0]:.2f}",
             f"{'what':<40} {'conc':>4} {'messages':>9} {'seconds':>8} {'msg/s':>8} {'server CPU us/msg':>18}"
             f" {'client CPU us/msg':>18}"]
    for f in figures:
        cpu = f"{f.server_cpu_s / f.messages * 1e6:>18.0f}" if f.server_cpu_s and f.messages else f"{'':>18}"
        own = f"{f.client_cpu_s / f.messages * 1e6:>18.0f}" if f.client_cpu_s and f.messages else f"{'':>18}"
        lines.append(f"{f.what:<40} {f.concurrency:>4} {f.messages:>9} {f.seconds:>8.2f} {f.rate:>8.0f} {cpu} {own}")
    stor = {f.concurrency: f.rate for f in figures if f.what.startswith("storage")}
    for f in figures:
        if f.what == "produce" and stor.get(f.concurrency):
            lines.append(f"produce over remoting / storage at concurrency {f.concurrency}: "
                         f"{f.rate / stor[f.concurrency]:.2f}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    p.add_argument("--flush", choices=["async", "sync"], default="async")
    p.add_argument("--ephemeral", action="store_true",
                   help="serve from the memory store (protocol cost alone; no storage figure)")
    p.add_argument("--no-shared", dest="shared", action="store_false",
                   help="skip the variant with all producers on one connection")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    figures = trio.run(run, args)
    if args.json:
        print(json.dumps([{**f.__dict__, "rate": f.rate} for f in figures]))
    else:
        print(report(figures, args.size, "memory (--ephemeral)" if args.ephemeral else f"LMDB flush={args.flush}"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
