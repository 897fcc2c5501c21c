"""Admin offset resets in the core: committed offsets, POP position, pending resets, listeners,
parked long polls (rocketlite/core/offset_reset.py)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from rocketlite.core.errors import InvalidReceipt
from rocketlite.core.broker import ClientInfo
from rocketlite.core.message import PROP_MESSAGE_GROUP, Message
from rocketlite.core.offset_reset import PENDING_TTL_MS
from tests.unit.test_core_features import running


async def fill(b, n: int, topic: str = "T", **props: str) -> None:
    for i in range(n):
        await b.send([Message(topic, f"m{i}".encode(), queue_id=0, properties=dict(props))])
        await trio.sleep(0.01)  # distinct store timestamps (MockClock)


async def test_reset_commits_clamps_and_tells_listeners(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        await b.create_topic("T", queues=2)
        await fill(b, 5)
        await b.commit_offset("G", "T", 0, 5)
        heard: list[tuple[str, str, dict[int, int]]] = []
        b.resets.listeners.append(lambda g, t, offs: heard.append((g, t, offs)))
        await b.reset_offsets("G", "T", {0: 4})
        assert b.query_offset("G", "T", 0) == 4
        assert b.resets.pending("G", "T", 0) is None  # nobody online: nothing to hold against
        b.register_consumer(ClientInfo("c1", "G", protocol="remoting"))
        heard.clear()
        applied = await b.reset_offsets("G", "T", {0: 2, 1: 99})
        assert applied == {0: 2, 1: 0}  # queue 1 is empty: clamped to [0, 0]
        assert b.query_offset("G", "T", 0) == 2 and b.query_offset("G", "T", 1) == 0
        assert heard == [("G", "T", {0: 2, 1: 0})]
        # a pending reset per queue until a reader takes it
        assert b.resets.pending("G", "T", 0) == 2
        assert b.resets.take("G", "T", 0) == 2
        assert b.resets.pending("G", "T", 0) is None
        await trio.sleep(PENDING_TTL_MS / 1000 + 1)  # nobody took queue 1's: it lapses
        assert b.resets.pending("G", "T", 1) is None
        b.register_consumer(ClientInfo("c1", "G", protocol="remoting"))  # (heartbeats lapsed too)
        await b.reset_offsets("G", "T", {1: 0})
        assert b.resets.pending("G", "T", 1) == 0
        await b.delete_group("G")
        assert b.resets.pending("G", "T", 1) is None


async def test_targets_for_time(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        await b.create_topic("T", queues=2)
        t0 = b.now_ms()
        await fill(b, 3)
        t1 = b.now_ms()
        await fill(b, 3)
        assert await b.resets.targets_for_time("T", t0) == {0: 0, 1: 0}
        assert (await b.resets.targets_for_time("T", t1))[0] == 3
        assert await b.resets.targets_for_time("T", -1) == {0: 6, 1: 0}
        assert await b.resets.targets_for_time("T", t0, queue_id=1) == {1: 0}


async def test_parked_pull_returns_when_its_queue_is_reset(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        await b.create_topic("T", queues=1)
        await fill(b, 3)
        done: list[float] = []

        async def parked() -> None:
            r = await b.pull("T", 0, 3, wait_ms=15_000)
            assert r.status.name == "NO_NEW_MSG"
            done.append(trio.current_time())

        async with trio.open_nursery() as n:
            start = trio.current_time()
            n.start_soon(parked)
            await trio.sleep(1)
            await b.reset_offsets("G", "T", {0: 0})
        assert done and done[0] - start < 2  # not the 15 s hold


async def test_pop_follows_a_rewind(autojump_clock: trio.testing.MockClock) -> None:
    """A simple (POP) consumer group that consumed everything gets it all again after a rewind;
    in-flight handles from before are invalid, nothing is delivered twice afterwards."""
    async with running() as b:
        await b.create_topic("T", queues=2)
        for i in range(6):
            await b.send([Message("T", f"m{i}".encode())])
        got = await b.pop("G", "T", 10, 30_000)
        assert len(got) == 6
        for _, h in got[:4]:
            await b.ack("G", "T", h)
        held = [h for _, h in got[4:]]  # two still in flight
        assert await b.pop("G", "T", 10, 30_000) == []
        ts = await b.resets.targets_for_time("T", 0)
        await b.reset_offsets("G", "T", ts)
        again = await b.pop("G", "T", 10, 30_000)
        assert sorted(m.body for m, _ in again) == [f"m{i}".encode() for i in range(6)]
        assert all(m.reconsume_times == 0 for m, _ in again)  # fresh deliveries
        for h in held:
            with pytest.raises(InvalidReceipt):
                await b.ack("G", "T", h)
        for _, h in again:
            await b.ack("G", "T", h)
        await trio.sleep(60)  # nothing comes back: all acknowledged
        assert await b.pop("G", "T", 10, 30_000) == []
        assert [b.query_offset("G", "T", q) for q in (0, 1)] == [3, 3]


async def test_pop_follows_a_skip_ahead_and_long_poll_wakes(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        await b.create_topic("T", queues=1)
        await fill(b, 5)
        first = await b.pop("G", "T", 2, 30_000)
        assert [m.body for m, _ in first] == [b"m0", b"m1"]
        await b.reset_offsets("G", "T", {0: 4})  # skip m2, m3
        got = await b.pop("G", "T", 10, 30_000)
        assert [m.body for m, _ in got] == [b"m4"]
        for _, h in got:
            await b.ack("G", "T", h)
        await trio.sleep(60)  # m0, m1 were dropped by the reset: never redelivered
        assert await b.pop("G", "T", 10, 1_000) == []
        results: list[list[bytes]] = []

        async def poller() -> None:
            r = await b.pop("G", "T", 10, 30_000, wait_ms=20_000)
            results.append([m.body for m, _ in r])

        async with trio.open_nursery() as n:
            n.start_soon(poller)
            await trio.sleep(1)
            await b.reset_offsets("G", "T", {0: 3})  # a parked POP long poll hands out m3, m4 at once
        assert results == [[b"m3", b"m4"]]


async def test_fifo_pop_state_starts_over(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        await b.create_topic("T", queues=1)
        await fill(b, 4, **{PROP_MESSAGE_GROUP: "g1"})
        got = await b.pop("G", "T", 10, 30_000, fifo=True)
        assert [m.body for m, _ in got] == [b"m0"]  # m1..m3 wait behind m0
        await b.reset_offsets("G", "T", {0: 2})
        got = await b.pop("G", "T", 10, 30_000, fifo=True)
        assert [m.body for m, _ in got] == [b"m2"]
        await b.ack("G", "T", got[0][1])
        got = await b.pop("G", "T", 10, 30_000, fifo=True)
        assert [m.body for m, _ in got] == [b"m3"]


async def test_reset_survives_restart(autojump_clock: trio.testing.MockClock) -> None:
    from rocketlite.runtime import TrioRuntime
    from rocketlite.storage.memory import MemoryStore

    store, rt = MemoryStore(), TrioRuntime()
    async with running(store, rt) as b:
        await b.create_topic("T", queues=1)
        await fill(b, 4)
        got = await b.pop("G", "T", 10, 30_000)
        for _, h in got:
            await b.ack("G", "T", h)
        await b.reset_offsets("G", "T", {0: 1})
    async with running(store, rt) as b:
        assert b.query_offset("G", "T", 0) == 1
        got = await b.pop("G", "T", 10, 30_000)
        assert [m.body for m, _ in got] == [b"m1", b"m2", b"m3"]


async def test_http_reset_goes_through_the_core() -> None:
    """POST /api/groups/{name}/offsets: a POP (gRPC simple) group follows, listeners hear it."""
    from tests.unit.test_http_api import make

    broker, _, c = await make()
    await broker.create_topic("t", queues=1)
    for i in range(4):
        await broker.send([Message("t", b"m%d" % i)])
    got = await broker.pop("g", "t", 10, 30_000)
    for _, h in got:
        await broker.ack("g", "t", h)
    heard: list[tuple[str, str, dict[int, int]]] = []
    broker.resets.listeners.append(lambda g, t, offs: heard.append((g, t, offs)))
    r = await c.json("POST", "/api/groups/g/offsets", {"topic": "t", "to": "earliest"})
    assert [(q["queue_id"], q["new_offset"]) for q in r["queues"]] == [(0, 0)]
    assert heard == [("g", "t", {0: 0})]
    again = await broker.pop("g", "t", 10, 30_000)
    assert [m.body for m, _ in again] == [b"m0", b"m1", b"m2", b"m3"]
