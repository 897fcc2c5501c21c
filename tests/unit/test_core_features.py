"""Timers, transactions, retry/DLQ, POP, FIFO, locks on the MemoryStore under MockClock."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import pytest
import trio

from rocketlite.core.broker import Broker, BrokerSettings, ClientInfo
from rocketlite.core.errors import InvalidReceipt, NotFound
from rocketlite.core.message import (
    PROP_DELAY_LEVEL,
    PROP_DELIVER_TIME_MS,
    PROP_MESSAGE_GROUP,
    PROP_PRODUCER_GROUP,
    SYSFLAG_TRANSACTION_PREPARED,
    Message,
)
from rocketlite.core.timers import DELAY_LEVELS_MS, delay_level_ms
from rocketlite.runtime import TrioRuntime
from rocketlite.storage.memory import MemoryStore


@asynccontextmanager
async def running(
    store: MemoryStore | None = None, runtime: TrioRuntime | None = None, **settings: object
) -> AsyncIterator[Broker]:
    """A broker with its services; pass the same store and runtime to "restart" it (the
    runtime keeps the wall-clock offset, which a MockClock jump would otherwise skew)."""
    store = store or MemoryStore()
    async with trio.open_nursery() as nursery:
        rt = runtime or TrioRuntime()
        rt.attach(nursery)
        broker = Broker(store, rt, BrokerSettings(**settings))  # type: ignore[arg-type]
        await broker.start()
        for service in broker.services:
            nursery.start_soon(service)
        yield broker
        nursery.cancel_scope.cancel()


async def drain(broker: Broker, topic: str) -> list[Message]:
    out = []
    for q in broker.topic_queue_ids(topic):
        r = await broker.pull(topic, q, 0, 100)
        out += r.messages
    return out


# -- timers --------------------------------------------------------------------------------------
def test_delay_levels() -> None:
    assert len(DELAY_LEVELS_MS) == 18
    assert delay_level_ms(1) == 1000
    assert delay_level_ms(3) == 10_000
    assert delay_level_ms(17) == 3_600_000
    assert delay_level_ms(18) == 7_200_000
    assert delay_level_ms(99) == 7_200_000


async def test_one_hour_delay(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        t0 = b.now_ms()
        (r,) = await b.send([Message("T", b"x", properties={PROP_DELIVER_TIME_MS: str(t0 + 3_600_000)})])
        assert r.recall_handle
        await b.send([Message("T", b"now")])
        assert [m.body for m in await drain(b, "T")] == [b"now"]
        await trio.sleep(3599)
        assert len(await drain(b, "T")) == 1
        await trio.sleep(2)
        msgs = await drain(b, "T")
        assert sorted(m.body for m in msgs) == [b"now", b"x"]
        late = [m for m in msgs if m.body == b"x"][0]
        assert late.store_timestamp >= t0 + 3_600_000
        assert late.unique_id == r.unique_id
        assert (await b.query_by_id(r.unique_id)).topic == "T"


async def test_delay_level_wakes_earlier_timer(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        await b.send([Message("T", b"late", properties={PROP_DELAY_LEVEL: "18"})])
        await trio.sleep(1)
        t = b.now_ms()
        await b.send([Message("T", b"soon", properties={PROP_DELAY_LEVEL: "1"})])
        await trio.sleep(1.5)
        msgs = await drain(b, "T")
        assert [m.body for m in msgs] == [b"soon"]
        assert msgs[0].store_timestamp - t >= 1000
        assert msgs[0].store_timestamp - t < 1100


async def test_timer_survives_restart(autojump_clock: trio.testing.MockClock) -> None:
    store, rt = MemoryStore(), TrioRuntime()
    async with running(store, rt) as b:
        await b.send([Message("T", b"x", keys="k1", properties={PROP_DELAY_LEVEL: "4"})])  # 30 s
        await trio.sleep(10)
    async with running(store, rt) as b2:
        assert len(b2.timers) == 1
        await trio.sleep(25)
        msgs = await drain(b2, "T")
        assert [m.body for m in msgs] == [b"x"]
        assert msgs[0].keys == "k1"
        assert len(b2.timers) == 0


async def test_recall(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        (r,) = await b.send([Message("T", b"x", properties={PROP_DELAY_LEVEL: "2"})])
        (r2,) = await b.send([Message("T", b"y", properties={PROP_DELAY_LEVEL: "2"})])
        assert await b.recall(r.recall_handle)
        assert not await b.recall(r.recall_handle)
        assert await b.recall(r2.unique_id)
        await trio.sleep(10)
        assert await drain(b, "T") == []


# -- transactions --------------------------------------------------------------------------------
def half(topic: str = "T", body: bytes = b"tx", group: str = "PG") -> Message:
    return Message(topic, body, sys_flag=SYSFLAG_TRANSACTION_PREPARED, properties={PROP_PRODUCER_GROUP: group})


async def test_transaction_commit_and_rollback(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        (r1,) = await b.send([half(body=b"a")])
        (r2,) = await b.send([half(body=b"b")])
        assert r1.transaction_id and r1.topic == "T"
        assert await drain(b, "T") == []
        res = await b.end_transaction("PG", transaction_id=r1.transaction_id, action="commit")
        assert res is not None and res.topic == "T"
        await b.end_transaction("PG", unique_id=r2.unique_id, commit_offset=r2.commit_offset, action="rollback")
        msgs = await drain(b, "T")
        assert [m.body for m in msgs] == [b"a"]
        assert msgs[0].unique_id == r1.unique_id
        with pytest.raises(NotFound):
            await b.end_transaction("PG", transaction_id=r1.transaction_id, action="commit")
        assert len(b.transactions) == 0


async def test_transaction_check_back_then_commit(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        calls: list[tuple[str, str, int]] = []

        async def checker(client: ClientInfo, msg: Message, txn: str) -> None:
            calls.append((client.client_id, msg.topic, b.now_ms()))
            await b.end_transaction(msg.properties[PROP_PRODUCER_GROUP], transaction_id=txn, action="commit",
                                    from_check=True)

        b.add_transaction_checker("test", checker)
        b.register_producer(ClientInfo("p1", "PG", protocol="test"))
        t0 = b.now_ms()
        (r,) = await b.send([half()])
        assert await b.end_transaction("PG", transaction_id=r.transaction_id, action="unknown") is None
        await trio.sleep(5)
        assert calls == []
        await trio.sleep(2)
        assert len(calls) == 1 and calls[0][:2] == ("p1", "T")
        assert 6000 <= calls[0][2] - t0 < 6100
        assert [m.body for m in await drain(b, "T")] == [b"tx"]


async def test_transaction_gives_up_after_max_checks(autojump_clock: trio.testing.MockClock) -> None:
    async with running(transaction_check_interval_ms=1000, transaction_check_max=3) as b:
        calls = []

        async def checker(client: ClientInfo, msg: Message, txn: str) -> None:
            calls.append(txn)

        b.add_transaction_checker("test", checker)
        b.register_producer(ClientInfo("p1", "PG", protocol="test"))
        await b.send([half()])
        await trio.sleep(60)
        assert len(calls) == 3
        assert len(b.transactions) == 0
        assert await drain(b, "T") == []
        (kept,) = await drain(b, "TRANS_CHECK_MAX_TIME_TOPIC")
        assert kept.body == b"tx" and kept.properties["REAL_TOPIC"] == "T"


async def test_transaction_check_immunity(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        seen: list[int] = []

        async def checker(client: ClientInfo, msg: Message, txn: str) -> None:
            seen.append(b.now_ms())
            await b.end_transaction("PG", transaction_id=txn, action="rollback", from_check=True)

        b.add_transaction_checker("test", checker)
        b.register_producer(ClientInfo("p1", "PG", protocol="test"))
        t0 = b.now_ms()
        m = half()
        m.properties["CHECK_IMMUNITY_TIME_IN_SECONDS"] = "20"
        await b.send([m])
        await trio.sleep(30)
        assert len(seen) == 1 and 20_000 <= seen[0] - t0 < 20_100
        assert await drain(b, "T") == []


# -- retry / DLQ ---------------------------------------------------------------------------------
async def test_send_back_retry_then_dlq(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        await b.create_group("G", max_reconsume_times=2)
        (r,) = await b.send([Message("T", b"x")])
        off = r.commit_offset
        for attempt in range(2):
            t = b.now_ms()
            res = await b.send_back("G", off)
            assert res.topic == "%RETRY%G"
            await trio.sleep(3600)
            msgs = await drain(b, "%RETRY%G")
            m = msgs[-1]
            assert m.reconsume_times == attempt + 1
            assert m.properties["RETRY_TOPIC"] == "T"
            assert m.unique_id == r.unique_id
            assert m.store_timestamp - t == delay_level_ms(3 + attempt)
            off = m.commit_offset
        res = await b.send_back("G", off)
        assert res.topic == "%DLQ%G"
        (dead,) = await drain(b, "%DLQ%G")
        assert dead.reconsume_times == 3 and dead.body == b"x"
        with pytest.raises(NotFound):
            await b.send_back("G", 10_000)


# -- POP -----------------------------------------------------------------------------------------
async def test_pop_invisible_redeliver_ack(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        await b.send([Message("T", b"a"), Message("T", b"b")])
        got = await b.pop("G", "T", 10, 30_000)
        assert sorted(m.body for m, _ in got) == [b"a", b"b"]
        assert all(m.reconsume_times == 0 for m, _ in got)
        assert await b.pop("G", "T", 10, 30_000) == []
        (ma, ha), (mb, hb) = sorted(got, key=lambda p: p[0].body)
        await b.ack("G", "T", ha)
        with pytest.raises(InvalidReceipt):
            await b.ack("G", "T", ha)
        with pytest.raises(InvalidReceipt):
            await b.ack("G", "T", "garbage")
        await trio.sleep(31)
        again = await b.pop("G", "T", 10, 30_000)
        assert [(m.body, m.reconsume_times) for m, _ in again] == [(b"b", 1)]
        with pytest.raises(InvalidReceipt):
            await b.ack("G", "T", hb)
        h2 = await b.change_invisible("G", "T", again[0][1], 100_000)
        with pytest.raises(InvalidReceipt):
            await b.ack("G", "T", again[0][1])
        await trio.sleep(60)
        assert await b.pop("G", "T", 10, 30_000) == []
        await b.ack("G", "T", h2)
        await trio.sleep(200)
        assert await b.pop("G", "T", 10, 30_000) == []
        # another group sees everything
        assert len(await b.pop("G2", "T", 10, 30_000)) == 2


async def test_pop_long_poll(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        got: list = []

        async def consumer() -> None:
            got.extend(await b.pop("G", "T", 1, 10_000, wait_ms=20_000))

        async with trio.open_nursery() as n:
            n.start_soon(consumer)
            await trio.sleep(5)
            assert got == []
            t = trio.current_time()
            await b.send([Message("T", b"x")])
        assert [m.body for m, _ in got] == [b"x"]
        assert trio.current_time() - t < 0.01
        t = trio.current_time()
        assert await b.pop("G", "T", 1, 10_000, wait_ms=2_000) == []
        assert trio.current_time() - t == pytest.approx(2.0, abs=0.01)


async def test_pop_dlq_after_max_attempts(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        await b.create_group("G", max_reconsume_times=2)
        await b.send([Message("T", b"x")])
        attempts = []
        for _ in range(5):
            got = await b.pop("G", "T", 1, 10_000, wait_ms=20_000)
            if not got:
                break
            attempts.append(got[0][0].reconsume_times + 1)
        assert attempts == [1, 2, 3]
        await trio.sleep(11)
        (dead,) = await drain(b, "%DLQ%G")
        assert dead.body == b"x"
        assert b.pops.inflight("G", "T") == []


async def test_pop_survives_restart(autojump_clock: trio.testing.MockClock) -> None:
    store, rt = MemoryStore(), TrioRuntime()
    async with running(store, rt) as b:
        await b.send([Message("T", bytes([i])) for i in range(3)])
        got = await b.pop("G", "T", 2, 60_000)
        assert len(got) == 2
    async with running(store, rt) as b2:
        await b2.ack("G", "T", got[0][1])
        rest = await b2.pop("G", "T", 10, 60_000)
        assert len(rest) == 1
        await trio.sleep(61)
        again = await b2.pop("G", "T", 10, 60_000)
        assert sorted((m.body, m.reconsume_times) for m, _ in again) == sorted(
            [(got[1][0].body, 1), (rest[0][0].body, 1)]
        )


async def test_pop_to_dlq(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        await b.send([Message("T", b"x")])
        ((m, h),) = await b.pop("G", "T", 1, 10_000)
        res = await b.pop_to_dlq("G", "T", h)
        assert res.topic == "%DLQ%G"
        with pytest.raises(InvalidReceipt):
            await b.ack("G", "T", h)
        await trio.sleep(20)
        assert await b.pop("G", "T", 1, 10_000) == []


async def test_pop_reads_retry_topic(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        (r,) = await b.send([Message("T", b"x")])
        await b.send_back("G", r.commit_offset, delay_level=1)
        await b.send_back("G", r.commit_offset, delay_level=1, origin_topic="OTHER")  # not T's
        await trio.sleep(2)
        got = await b.pop("G", "T", 10, 10_000, init_mode="last")
        assert [(m.topic, m.reconsume_times) for m, _ in got] == [("T", 1)]
        await b.ack("G", "T", got[0][1])


async def test_fifo_groups(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        await b.create_topic("F", queues=1)
        msgs = []
        for i in range(3):
            for g in ("A", "B"):
                msgs.append(Message("F", f"{g}{i}".encode(), properties={PROP_MESSAGE_GROUP: g}))
        await b.send(msgs)
        first = await b.pop("G", "F", 10, 10_000, fifo=True)
        assert sorted(m.body for m, _ in first) == [b"A0", b"B0"]
        assert await b.pop("G", "F", 10, 10_000, fifo=True) == []
        hA = [h for m, h in first if m.body == b"A0"][0]
        hB = [h for m, h in first if m.body == b"B0"][0]
        await b.ack("G", "F", hA)
        nxt = await b.pop("G", "F", 10, 10_000, fifo=True)
        assert [m.body for m, _ in nxt] == [b"A1"]
        # B0 not acked: it comes back first, before B1, with attempt 2
        await trio.sleep(11)
        again = await b.pop("G", "F", 10, 10_000, fifo=True)
        assert sorted((m.body, m.reconsume_times) for m, _ in again) == [(b"A1", 1), (b"B0", 1)]
        order: dict[str, list[bytes]] = {"A": [b"A0"], "B": []}
        pending = again
        while pending:
            for m, h in pending:
                order[m.message_group].append(m.body)
                await b.ack("G", "F", h)
            pending = await b.pop("G", "F", 10, 10_000, fifo=True)
        assert order == {"A": [b"A0", b"A1", b"A2"], "B": [b"B0", b"B1", b"B2"]}


async def test_fifo_long_poll_wakes_on_ack(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        await b.create_topic("F", queues=1)
        await b.send([Message("F", f"{i}".encode(), properties={PROP_MESSAGE_GROUP: "A"}) for i in range(2)])
        ((m, h),) = await b.pop("G", "F", 10, 60_000, fifo=True)
        got: list = []

        async def consumer() -> None:
            got.extend(await b.pop("G", "F", 10, 60_000, fifo=True, wait_ms=30_000))

        async with trio.open_nursery() as n:
            n.start_soon(consumer)
            await trio.sleep(3)
            await b.ack("G", "F", h)
        assert [m.body for m, _ in got] == [b"1"]


# -- locks ---------------------------------------------------------------------------------------
async def test_locks_expire(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        q = [("T", 0), ("T", 1)]
        assert b.lock_queues("G", "c1", q) == set(q)
        assert b.lock_queues("G", "c2", q) == set()
        assert b.lock_queues("G2", "c2", q) == set(q)
        await trio.sleep(30)
        assert b.lock_queues("G", "c1", [("T", 0)]) == {("T", 0)}  # renew one
        await trio.sleep(40)
        assert b.lock_queues("G", "c2", q) == {("T", 1)}
        b.unlock_queues("G", "c1", q)
        assert b.lock_queues("G", "c2", q) == set(q)


async def test_reset_clears_everything(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        await b.send([Message("T", b"x", properties={PROP_DELAY_LEVEL: "3"}), half()])
        await b.send([Message("T", b"y")])
        await b.pop("G", "T", 1, 10_000)
        b.lock_queues("G", "c", [("T", 0)])
        await b.reset()
        assert len(b.timers) == 0 and len(b.transactions) == 0
        assert b.pops.inflight("G", "T") == []
        assert b.locks.holder("G", "T", 0) is None
        await trio.sleep(100)
        assert await drain(b, "T") == []


async def test_pop_mirrors_consumer_offsets(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        await b.create_topic("T", queues=1)
        await b.send([Message("T", bytes([i])) for i in range(4)])
        got = await b.pop("G", "T", 2, 10_000)
        assert b.query_offset("G", "T", 0) == 0
        await b.ack("G", "T", got[0][1])
        await b.ack("G", "T", got[1][1])
        more = await b.pop("G", "T", 1, 10_000)
        assert b.query_offset("G", "T", 0) == 2
        await b.ack("G", "T", more[0][1])
        assert await b.pop("G", "T", 5, 10_000) != []
        assert b.query_offset("G", "T", 0) == 3
        await b.delete_group("G")
        assert b.pops.inflight("G", "T") == []


async def test_long_timer_outlives_retention(autojump_clock: trio.testing.MockClock) -> None:
    async with running(retention_age_ms=60_000, retention_interval_ms=10_000) as b:
        t0 = b.now_ms()
        (r,) = await b.send([Message("T", b"x", keys="k", properties={PROP_DELIVER_TIME_MS: str(t0 + 600_000)})])
        await trio.sleep(300)
        assert b.store.stats()["messages"] == 0  # the parked copy is gone
        await trio.sleep(301)
        msgs = await drain(b, "T")
        assert [(m.body, m.keys, m.unique_id) for m in msgs] == [(b"x", "k", r.unique_id)]


async def test_check_back_reaches_grpc_style_producers(autojump_clock: trio.testing.MockClock) -> None:
    """gRPC producers register under the topic name, or list their topics as subscriptions."""
    from rocketlite.core.filters import Subscription

    async with running() as b:
        asked: list[str] = []

        async def checker(client: ClientInfo, msg: Message, txn: str) -> None:
            asked.append(client.client_id)

        b.add_transaction_checker("grpc", checker)
        b.register_producer(ClientInfo("other", "X", protocol="grpc", subscriptions={"T": Subscription("T")}))
        await b.send([Message("T", b"a", properties={"TRAN_MSG": "true"})])  # PGROUP defaults to the topic
        await trio.sleep(7)
        assert asked == ["other"]
        b.register_producer(ClientInfo("by-topic", "T", protocol="grpc"))
        await trio.sleep(30)
        assert asked == ["other", "by-topic"]


async def test_ack_batch(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        await b.send([Message("T", bytes([i])) for i in range(3)])
        got = await b.pop("G", "T", 3, 10_000)
        res = await b.ack_batch("G", "T", [got[0][1], "nonsense", got[1][1], got[0][1]])
        assert res[0] is None and res[2] is None
        assert isinstance(res[1], InvalidReceipt) and isinstance(res[3], InvalidReceipt)
        await trio.sleep(11)
        assert [m.body for m, _ in await b.pop("G", "T", 3, 10_000)] == [got[2][0].body]


async def test_handle_parts_round_trip(autojump_clock: trio.testing.MockClock) -> None:
    from rocketlite.core.pop import make_handle, parse_handle

    async with running() as b:
        await b.send([Message("T", b"x")])
        ((m, h),) = await b.pop("G", "T", 1, 10_000)
        parts = parse_handle(h)
        assert (parts.retry, parts.queue_id, parts.offset) == (False, m.queue_id, m.queue_offset)
        assert 0 <= parts.nonce_int < 2**60
        rebuilt = make_handle(parts.retry, parts.queue_id, parts.offset, parts.nonce_int)
        assert rebuilt == h
        await b.ack("G", "T", rebuilt)


async def test_pop_heap_stays_bounded(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        await b.send([Message("T", b"x") for _ in range(3000)])
        for _ in range(100):
            for m, h in await b.pop("G", "T", 32, 600_000):
                await b.ack("G", "T", h)
        assert len(b.pops._heap) < 2 * 32 + 1100


async def test_many_halves_checked_in_one_round(autojump_clock: trio.testing.MockClock) -> None:
    async with running(transaction_check_max=2, transaction_check_interval_ms=10_000) as b:
        seen: list[str] = []

        async def checker(client: ClientInfo, msg: Message, txn: str) -> None:
            seen.append(txn)
            if len(seen) % 2:  # resolve every other one from the check
                await b.end_transaction("PG", transaction_id=txn, action="commit", from_check=True)

        b.add_transaction_checker("test", checker)
        b.register_producer(ClientInfo("p1", "PG", protocol="test"))
        await b.send([half(body=bytes([i])) for i in range(50)])
        writes = b.store.stats()["commits"]
        await trio.sleep(6.5)
        assert len(seen) == 50
        assert b.store.stats()["commits"] - writes == 1 + 25  # one round write + 25 commits
        assert len(b.transactions) == 25
        await trio.sleep(60)
        assert len(b.transactions) == 0
        assert len(seen) == 75  # the second round asked the 25 left, and resolved 13 of them
        assert len(await drain(b, "T")) == 38
        assert len(await drain(b, "TRANS_CHECK_MAX_TIME_TOPIC")) == 12


async def test_committed_transaction_honours_delay(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        m = half()
        m.properties[PROP_DELAY_LEVEL] = "3"  # 10 s after the commit
        (r,) = await b.send([m])
        await trio.sleep(1)
        res = await b.end_transaction("PG", transaction_id=r.transaction_id, action="commit")
        assert res is not None and res.recall_handle
        await trio.sleep(9)
        assert await drain(b, "T") == []
        await trio.sleep(1.5)
        (got,) = await drain(b, "T")
        assert got.unique_id == r.unique_id and "TRAN_MSG" not in got.properties
        assert not await b.recall(res.recall_handle)  # already delivered


async def test_pop_with_sql92_filter(autojump_clock: trio.testing.MockClock) -> None:
    from rocketlite.core.filters import Subscription

    async with running() as b:
        await b.send([Message("T", bytes([i]), properties={"n": str(i)}) for i in range(6)])
        flt = Subscription.make("T", "n >= 3 AND n <> 4", "SQL92").filter
        got = await b.pop("G", "T", 10, 10_000, filter=flt)
        assert sorted(m.properties["n"] for m, _ in got) == ["3", "5"]
        assert await b.pop("G", "T", 10, 10_000, filter=flt) == []


async def test_release_client(autojump_clock: trio.testing.MockClock) -> None:
    async with running() as b:
        await b.send([Message("T", b"a"), Message("T", b"b")])
        got = await b.pop("G", "T", 1, 300_000, client_id="c1")
        await b.pop("G", "T", 1, 300_000, client_id="c2")
        assert await b.pops.release_client("c1", 1000) == 1
        assert await b.pop("G", "T", 5, 10_000) == []
        await trio.sleep(1.1)
        again = await b.pop("G", "T", 5, 10_000, client_id="c3")
        assert [(m.body, m.reconsume_times) for m, _ in again] == [(got[0][0].body, 1)]


def test_message_delay_level_is_configurable_like_rocketmqs() -> None:
    from rocketlite.core.timers import DEFAULT_DELAY_LEVELS, parse_delay_levels

    assert parse_delay_levels(DEFAULT_DELAY_LEVELS) == DELAY_LEVELS_MS
    assert parse_delay_levels("500ms 1s 2m 1h 1d") == (500, 1000, 120_000, 3_600_000, 86_400_000)
    for bad in ("", "5x", "s", "0s", "-1s"):
        with pytest.raises(ValueError):
            parse_delay_levels(bad)
    assert delay_level_ms(3, (100, 200)) == 200  # clamped to the last level


async def test_configured_delay_levels_drive_delay_and_retry(autojump_clock: object) -> None:
    from rocketlite.core.broker import Broker, BrokerSettings
    from rocketlite.core.message import PROP_DELAY_LEVEL, Message
    from rocketlite.core.retry import send_back
    from rocketlite.runtime import TrioRuntime
    from rocketlite.storage.memory import MemoryStore

    with pytest.raises(ValueError):
        Broker(MemoryStore(), TrioRuntime(), BrokerSettings(message_delay_level="1s nonsense"))
    async with trio.open_nursery() as nursery:
        b = Broker(MemoryStore(), TrioRuntime(nursery), BrokerSettings(message_delay_level="100ms 200ms 300ms"))
        await b.start()
        for svc in b.services:
            nursery.start_soon(svc)
        t0 = b.now_ms()
        await b.send([Message("T", b"d", queue_id=0, properties={PROP_DELAY_LEVEL: "2"})])
        while not (await b.pull("T", 0, 0)).messages:
            await trio.sleep(0.01)
        assert 200 <= b.now_ms() - t0 < 300
        msg = (await b.pull("T", 0, 0)).messages[0]
        t1 = b.now_ms()
        await send_back(b, "G", msg, delay_level=0)  # the first retry: level 3 (here the last, 300 ms)
        while not (await b.pull("%RETRY%G", 0, 0)).messages:
            await trio.sleep(0.01)
        assert 300 <= b.now_ms() - t1 < 400
        nursery.cancel_scope.cancel()
