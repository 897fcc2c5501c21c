"""Retention: deletes from the head by age and size, in chunks, while writers keep appending."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from rocketlite.core.broker import Broker, BrokerSettings, PullStatus
from rocketlite.core.message import Message
from rocketlite.runtime import TrioRuntime
from rocketlite.storage.base import Store, WriteBatch
from rocketlite.storage.lmdb_store import LmdbStore
from rocketlite.storage.memory import MemoryStore


def make(kind: str, tmp_path: Path) -> Store:
    return MemoryStore() if kind == "memory" else LmdbStore(tmp_path / "d", flush="async")


# The broker's loop under MockClock with the memory store: LMDB work finishes in worker threads,
# during which an autojumping clock may race ahead, so LMDB retention is tested directly below.
async def test_broker_retention_loop_drops_old_messages(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    store = make("memory", tmp_path)
    await store.open()
    try:
        async with trio.open_nursery() as nursery:
            runtime = TrioRuntime(nursery)
            broker = Broker(store, runtime, BrokerSettings(retention_age_ms=60_000, retention_interval_ms=10_000))
            await broker.start()
            nursery.start_soon(broker._retention_loop)
            for i in range(5):
                await broker.send([Message(topic="R", body=b"old%d" % i, queue_id=0)])
            await trio.sleep(45)
            for i in range(3):
                await broker.send([Message(topic="R", body=b"new%d" % i, queue_id=0)])
            assert broker.min_offset("R", 0) == 0
            await trio.sleep(30)  # the old ones are now 75 s old, the new ones 30 s
            assert broker.min_offset("R", 0) == 5
            assert broker.max_offset("R", 0) == 8
            res = await broker.pull("R", 0, 0, 32)
            assert res.status == PullStatus.FOUND
            assert [m.body for m in res.messages] == [b"new0", b"new1", b"new2"]
            assert res.min_offset == 5
            await trio.sleep(60)
            assert broker.min_offset("R", 0) == broker.max_offset("R", 0) == 8
            (r,) = await broker.send([Message(topic="R", body=b"later", queue_id=0)])
            assert r.queue_offset == 8
            nursery.cancel_scope.cancel()
    finally:
        await store.close()


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
async def test_large_retention_runs_in_chunks_while_appending(kind: str, tmp_path: Path) -> None:
    store = make(kind, tmp_path)
    await store.open()
    try:
        for start in range(0, 6000, 1000):
            await store.write(WriteBatch([Message(topic="B", body=b"z" * 10, queue_id=i % 2, store_timestamp=1)
                                          for i in range(start, start + 1000)]))
        acked: list[int] = []
        removed: list[int] = []

        async def writer() -> None:
            for _ in range(200):
                (r,) = await store.write(WriteBatch([Message(topic="B", body=b"n" * 10, queue_id=0, store_timestamp=2)]))
                acked.append(r.commit_offset)

        async def cleaner() -> None:
            removed.append(await store.retain(max_age_ms=0, max_bytes=None, now_ms=2))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            nursery.start_soon(cleaner)
        assert removed == [6000]
        assert acked == list(range(6000, 6200))
        assert store.min_offset("B", 1) == store.max_offset("B", 1) == 3000
        assert (store.min_offset("B", 0), store.max_offset("B", 0)) == (3000, 3200)
        got = await store.read_queue("B", 0, 0, 1000)
        assert len(got) == 200 and all(m.body == b"n" * 10 for m in got)
        assert store.stats()["messages"] == 200
    finally:
        await store.close()


async def test_retention_state_survives_reopen(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path / "d", flush="sync")
    await store.open()
    await store.write(WriteBatch([Message(topic="S", body=b"abc", queue_id=q, store_timestamp=t)
                                  for t in range(10) for q in (0, 1)]))
    assert await store.retain(max_age_ms=None, max_bytes=3 * 5, now_ms=0) == 15
    await store.retain(max_age_ms=0, max_bytes=None, now_ms=100)  # empties the log
    await store.close()
    store = LmdbStore(tmp_path / "d", flush="sync")
    await store.open()
    try:
        assert [(store.min_offset("S", q), store.max_offset("S", q)) for q in (0, 1)] == [(10, 10), (10, 10)]
        assert store.commit_log_max() == 20
        assert store.stats()["messages"] == 0 and store.stats()["bytes"] == 0
        (r,) = await store.write(WriteBatch([Message(topic="S", body=b"x", queue_id=1)]))
        assert (r.commit_offset, r.queue_offset) == (20, 10)
    finally:
        await store.close()
