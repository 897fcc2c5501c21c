"""Timers, half messages and POP state survive a broker restart (memory store reused, LMDB reopened).

These run on the real clock: the LMDB store works in threads, and an autojumping MockClock
would jump while a thread works. Time passing while the broker is down is simulated by moving
the runtime's wall-clock offset between lives; waiting for a delivery is a long poll.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest
import trio

from rocketlite.core.errors import InvalidReceipt
from rocketlite.core.message import PROP_DELAY_LEVEL, PROP_MESSAGE_GROUP, PROP_PRODUCER_GROUP, SYSFLAG_TRANSACTION_PREPARED, Message
from rocketlite.runtime import TrioRuntime
from rocketlite.storage.lmdb_store import LmdbStore
from rocketlite.storage.memory import MemoryStore
from tests.unit.test_core_features import drain, running


@pytest.fixture(params=["memory", "lmdb"])
async def reopen(request: Any, tmp_path: Path) -> AsyncIterator[Callable[[], Any]]:
    """Returns an async function giving the store for the next broker life."""
    mem = MemoryStore()
    current: list[Any] = []

    async def next_store() -> Any:
        if request.param == "memory":
            return mem
        if current:
            await current[-1].close()
        s = LmdbStore(tmp_path / "data", flush="async", flush_interval_ms=50)
        await s.open()
        current.append(s)
        return s

    yield next_store
    if current:
        await current[-1].close()


def later(rt: TrioRuntime, seconds: float) -> None:
    rt._offset_ms += seconds * 1000  # the broker was down for that long


async def test_timer_restart(reopen: Any) -> None:
    rt = TrioRuntime()
    async with running(await reopen(), rt) as b:
        (r,) = await b.send([Message("T", b"x", keys="k1", properties={PROP_DELAY_LEVEL: "5"})])  # 1 min
    later(rt, 30)
    async with running(await reopen(), rt) as b:
        assert len(b.timers) == 1
        assert await drain(b, "T") == []
    later(rt, 31)
    async with running(await reopen(), rt) as b:
        with trio.fail_after(10):
            res = await b.pull("T", r.queue_id, 0, wait_ms=10_000)
        (m,) = res.messages
        assert m.body == b"x" and m.keys == "k1" and m.unique_id == r.unique_id
        assert PROP_DELAY_LEVEL not in m.properties
        assert (await b.query_by_id(r.unique_id)).topic == "T"
    later(rt, 3600)
    async with running(await reopen(), rt) as b:
        assert len(b.timers) == 0
        assert len(await drain(b, "T")) == 1


async def test_half_message_restart(reopen: Any) -> None:
    rt = TrioRuntime()
    msg = Message("T", b"tx", sys_flag=SYSFLAG_TRANSACTION_PREPARED, properties={PROP_PRODUCER_GROUP: "PG"})
    async with running(await reopen(), rt) as b:
        (r,) = await b.send([msg])
        (r2,) = await b.send([msg.copy(body=b"tx2", properties={PROP_PRODUCER_GROUP: "PG"})])
    async with running(await reopen(), rt) as b:
        assert len(b.transactions) == 2
        await b.end_transaction("PG", transaction_id=r.transaction_id, action="commit")
        await b.end_transaction("PG", unique_id=r2.unique_id, commit_offset=r2.commit_offset, action="rollback")
        assert [m.body for m in await drain(b, "T")] == [b"tx"]
    async with running(await reopen(), rt) as b:
        assert len(b.transactions) == 0


async def test_pop_restart(reopen: Any) -> None:
    rt = TrioRuntime()
    async with running(await reopen(), rt) as b:
        await b.create_topic("F", queues=1)
        await b.send([Message("F", f"{g}{i}".encode(), properties={PROP_MESSAGE_GROUP: g}) for i in range(2) for g in "AB"])
        first = await b.pop("G", "F", 10, 60_000, fifo=True)
        assert sorted(m.body for m, _ in first) == [b"A0", b"B0"]
    async with running(await reopen(), rt) as b:
        handles = {m.body: h for m, h in first}
        await b.ack("G", "F", handles[b"A0"])
        with pytest.raises(InvalidReceipt):
            await b.ack("G", "F", handles[b"A0"])
        nxt = await b.pop("G", "F", 10, 60_000, fifo=True)
        assert [m.body for m, _ in nxt] == [b"A1"]
        await b.ack("G", "F", nxt[0][1])
    later(rt, 61)
    async with running(await reopen(), rt) as b:
        again = await b.pop("G", "F", 10, 60_000, fifo=True)
        assert [(m.body, m.reconsume_times) for m, _ in again] == [(b"B0", 1)]
        await b.ack("G", "F", again[0][1])
        assert [m.body for m, _ in await b.pop("G", "F", 10, 60_000, fifo=True)] == [b"B1"]
