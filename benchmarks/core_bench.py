"""Core feature throughput: POP pop+ack (normal and FIFO), timer delivery, transactions, send-back.

Run: ``python benchmarks/core_bench.py [--n 20000] [--store memory|lmdb|both]``. Prints one row per
case: messages handled per second of wall time, in-process (no protocol), on the real clock.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any, Awaitable, Callable

import trio

from rocketlite.core.broker import Broker, BrokerSettings
from rocketlite.core.message import PROP_DELIVER_TIME_MS, PROP_MESSAGE_GROUP, SYSFLAG_TRANSACTION_PREPARED, Message
from rocketlite.runtime import TrioRuntime
from rocketlite.storage.memory import MemoryStore


async def with_broker(kind: str, fn: Callable[[Broker], Awaitable[int]]) -> tuple[int, float]:
    tmp = tempfile.TemporaryDirectory()
    if kind == "lmdb":
        from rocketlite.storage.lmdb_store import LmdbStore

        store: Any = LmdbStore(tmp.name, flush="async")
    else:
        store = MemoryStore()
    await store.open()
    try:
        async with trio.open_nursery() as nursery:
            b = Broker(store, TrioRuntime(nursery), BrokerSettings(retention_age_ms=None))
            await b.start()
            for svc in b.services:
                nursery.start_soon(svc)
            t = time.perf_counter()
            n = await fn(b)
            dt = time.perf_counter() - t
            nursery.cancel_scope.cancel()
    finally:
        await store.close()
        tmp.cleanup()
    return n, dt


async def fill(b: Broker, n: int, groups: int = 0) -> None:
    await b.create_topic("T", queues=4)
    for i in range(0, n, 100):
        await b.send([
            Message("T", b"x" * 100, properties={PROP_MESSAGE_GROUP: f"g{j % groups}"} if groups else {})
            for j in range(100)
        ])


def pop_case(n: int, fifo: bool, batch: int, concurrent_acks: bool = False) -> Callable[[Broker], Awaitable[int]]:
    async def run(b: Broker) -> int:
        await fill(b, n, groups=64 if fifo else 0)
        t = time.perf_counter()
        got = 0
        while got < n:
            r = await b.pop("G", "T", batch, 60_000, fifo=fifo)
            if not r:
                break
            got += len(r)
            if concurrent_acks:  # like clients acking each message in its own call
                async with trio.open_nursery() as acks:
                    for _, h in r:
                        acks.start_soon(b.ack, "G", "T", h)
                continue
            for _, h in r:
                await b.ack("G", "T", h)
        run.elapsed = time.perf_counter() - t  # type: ignore[attr-defined]
        return got

    return run


def timer_case(n: int) -> Callable[[Broker], Awaitable[int]]:
    async def run(b: Broker) -> int:
        due = b.now_ms() + 1000
        for i in range(0, n, 100):
            await b.send([Message("T", b"x" * 100, properties={PROP_DELIVER_TIME_MS: str(due)}) for _ in range(100)])
        while len(b.timers):
            await trio.sleep(0.01)
        return n

    return run


def txn_case(n: int) -> Callable[[Broker], Awaitable[int]]:
    async def run(b: Broker) -> int:
        for _ in range(n):
            (r,) = await b.send([Message("T", b"x" * 100, sys_flag=SYSFLAG_TRANSACTION_PREPARED)])
            await b.end_transaction("T", transaction_id=r.transaction_id, action="commit")
        return n

    return run


def send_back_case(n: int) -> Callable[[Broker], Awaitable[int]]:
    async def run(b: Broker) -> int:
        await fill(b, n)
        for q in range(4):
            for m in (await b.pull("T", q, 0, n)).messages:
                await b.send_back("G", m.commit_offset)
        return n

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--store", choices=["memory", "lmdb", "both"], default="both")
    args = ap.parse_args(argv)
    kinds = ["memory", "lmdb"] if args.store == "both" else [args.store]
    n = args.n
    cases: list[tuple[str, Callable[[], Callable[[Broker], Awaitable[int]]]]] = [
        ("pop+ack, batch 32", lambda: pop_case(n, False, 32)),
        ("pop+ack, batch 32, concurrent acks", lambda: pop_case(n, False, 32, True)),
        ("pop+ack, batch 1", lambda: pop_case(n // 4, False, 1)),
        ("FIFO pop+ack, 64 groups, batch 32", lambda: pop_case(n, True, 32)),
        ("timer: park + deliver", lambda: timer_case(n)),
        ("transaction: half + commit", lambda: txn_case(n // 4)),
        ("send_back to retry (timer)", lambda: send_back_case(n // 4)),
    ]
    print(f"{'case':40} {'store':7} {'msgs':>7} {'msg/s':>9}")
    for kind in kinds:
        for name, make in cases:
            fn = make()
            count, dt = trio.run(with_broker, kind, fn)
            dt = getattr(fn, "elapsed", dt)
            print(f"{name:40} {kind:7} {count:7d} {count / dt:9.0f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
