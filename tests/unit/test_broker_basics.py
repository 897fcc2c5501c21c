"""The core Broker on the memory store: send, pull, long poll, offsets, registry."""

from __future__ import annotations

import pytest
import trio

from rocketlite.core.broker import Broker, BrokerSettings, ClientInfo, PullStatus
from rocketlite.core.errors import BadRequest, TopicNotFound
from rocketlite.core.filters import Subscription, TagFilter
from rocketlite.core.message import Message
from rocketlite.runtime import TrioRuntime
from rocketlite.storage.memory import MemoryStore


async def make_broker(**settings: object) -> Broker:
    broker = Broker(MemoryStore(), TrioRuntime(), BrokerSettings(**settings))  # type: ignore[arg-type]
    await broker.start()
    return broker


async def test_send_auto_creates_topic_and_spreads_round_robin() -> None:
    b = await make_broker()
    results = await b.send([Message("orders", b"x%d" % i) for i in range(8)])
    assert b.topics["orders"].write_queues == 4
    assert [r.queue_id for r in results] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert [r.queue_offset for r in results] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert len({r.unique_id for r in results}) == 8


async def test_one_queue_sends_each_run_to_the_next_queue() -> None:
    b = await make_broker()
    first = await b.send([Message("batched", b"a%d" % i) for i in range(5)], one_queue=True)
    second = await b.send([Message("batched", b"b%d" % i) for i in range(3)], one_queue=True)
    assert {r.queue_id for r in first} == {0} and {r.queue_id for r in second} == {1}
    assert [r.queue_offset for r in first] == [0, 1, 2, 3, 4]
    # an explicit queue or a message group still decides
    mixed = await b.send([Message("batched", b"q", queue_id=3), Message("batched", b"r")], one_queue=True)
    assert [r.queue_id for r in mixed] == [3, 2]
    # without it, the next send goes on round robin from where the runs left off
    assert [r.queue_id for r in await b.send([Message("batched", b"c"), Message("batched", b"d")])] == [3, 0]


async def test_on_stored_runs_after_the_write_and_before_listeners() -> None:
    b = await make_broker()
    seen: list[str] = []

    def listener(msgs: list[Message]) -> None:
        seen.append("listener")

    b.write_listeners.append(listener)

    def stored() -> None:
        # the messages are readable (stored) and nobody has been told yet
        assert b.max_offset("acked", 0) == 2 and seen == []
        seen.append("stored")

    await b.send([Message("acked", b"x", queue_id=0), Message("acked", b"y", queue_id=0)], on_stored=stored)
    assert seen == ["stored", "listener"]
    # a refused batch is never reported as stored
    with pytest.raises(BadRequest):
        await b.send([Message("acked", b"z" * (b.settings.max_message_size + 1))], on_stored=stored)
    assert seen == ["stored", "listener"]


async def test_message_group_always_lands_in_one_queue() -> None:
    b = await make_broker()
    msgs = [Message("fifo", b"%d" % i, properties={"__SHARDINGKEY": "g1"}) for i in range(10)]
    assert len({r.queue_id for r in await b.send(msgs)}) == 1


async def test_auto_create_off_refuses_unknown_topic() -> None:
    b = await make_broker(auto_create_topics=False)
    with pytest.raises(TopicNotFound):
        await b.send([Message("nope", b"x")])
    await b.create_topic("yes", queues=2)
    assert (await b.send([Message("yes", b"x")]))[0].queue_id in (0, 1)


async def test_invalid_topic_name_is_a_bad_request() -> None:
    b = await make_broker()
    with pytest.raises(BadRequest):
        await b.send([Message("bad topic!", b"x")])


async def test_pull_reads_by_offset_and_filters_by_tag() -> None:
    b = await make_broker()
    await b.create_topic("t", queues=1)
    await b.send([Message("t", b"%d" % i, tags="A" if i % 2 else "B") for i in range(10)])
    r = await b.pull("t", 0, 0, 4)
    assert r.status is PullStatus.FOUND and [m.body for m in r.messages] == [b"0", b"1", b"2", b"3"]
    assert r.next_offset == 4 and r.max_offset == 10
    r = await b.pull("t", 0, 0, 32, filter=TagFilter.parse("A"))
    assert [m.body for m in r.messages] == [b"1", b"3", b"5", b"7", b"9"]
    assert r.next_offset == 10
    r = await b.pull("t", 0, 10, 32)
    assert r.status is PullStatus.NO_NEW_MSG
    r = await b.pull("t", 0, 11, 32)
    assert r.status is PullStatus.OFFSET_ILLEGAL and r.next_offset == 10


async def test_long_poll_wakes_the_moment_a_message_lands(autojump_clock: trio.abc.Clock) -> None:
    b = await make_broker()
    await b.create_topic("lp", queues=1)
    got = []

    async def consumer() -> None:
        t0 = trio.current_time()
        r = await b.pull("lp", 0, 0, 32, wait_ms=30_000)
        got.append((r.status, [m.body for m in r.messages], trio.current_time() - t0))

    async with trio.open_nursery() as n:
        n.start_soon(consumer)
        await trio.sleep(5)  # mock clock: the consumer is parked
        assert not got
        await b.send([Message("lp", b"hello", queue_id=0)])
    status, bodies, waited = got[0]
    assert status is PullStatus.FOUND and bodies == [b"hello"]
    assert 5 <= waited < 5.01


async def test_long_poll_times_out_with_no_new_message(autojump_clock: trio.abc.Clock) -> None:
    b = await make_broker()
    t0 = trio.current_time()
    r = await b.pull("empty", 0, 0, 32, wait_ms=15_000)
    assert r.status is PullStatus.NO_NEW_MSG
    assert trio.current_time() - t0 == pytest.approx(15, abs=0.01)


async def test_consumer_offsets_survive_a_new_broker_on_the_same_store() -> None:
    store = MemoryStore()
    b = Broker(store, TrioRuntime())
    await b.start()
    await b.commit_offset("g", "t", 1, 42)
    assert b.query_offset("g", "t", 1) == 42
    b2 = Broker(store, TrioRuntime())
    await b2.start()
    assert b2.query_offset("g", "t", 1) == 42
    assert b2.group_offsets("g") == {("t", 1): 42}
    assert b2.query_offset("g", "t", 2) is None


async def test_registry_notifies_on_membership_change_and_expires(autojump_clock: trio.abc.Clock) -> None:
    b = await make_broker(client_expiry_ms=1000)
    events = []
    b.add_group_listener(lambda g, e: events.append(g))
    subs = {"t": Subscription.make("t", "*")}
    assert b.register_consumer(ClientInfo("c1", "g", subscriptions=subs))
    assert not b.register_consumer(ClientInfo("c1", "g", subscriptions=dict(subs)))
    assert b.register_consumer(ClientInfo("c2", "g", subscriptions=dict(subs)))
    assert [c.client_id for c in b.consumers_of("g")] == ["c1", "c2"]
    await trio.sleep(2)
    b.register_consumer(ClientInfo("c2", "g", subscriptions=dict(subs)))
    b.expire_clients()
    assert [c.client_id for c in b.consumers_of("g")] == ["c2"]
    assert events == ["g", "g", "g"]


async def test_query_by_key_and_unique_id() -> None:
    b = await make_broker()
    r = await b.send([Message("k", b"a", keys="order-1 order-2"), Message("k", b"b", keys="order-2")])
    assert [m.body for m in await b.query_by_key("k", "order-2")] == [b"a", b"b"]
    m = await b.query_by_id(r[1].unique_id)
    assert m is not None and m.body == b"b"


@pytest.mark.parametrize("kind", ["memory", "lmdb"])
async def test_purge_hides_what_was_stored_and_keeps_what_comes_after(kind: str, tmp_path: object) -> None:
    from pathlib import Path

    from rocketlite.storage.lmdb_store import LmdbStore

    def store() -> object:
        return MemoryStore() if kind == "memory" else LmdbStore(Path(str(tmp_path)) / "data")

    s = store()
    await s.open()  # type: ignore[attr-defined]
    b = Broker(s, TrioRuntime(), BrokerSettings(default_queue_count=2))  # type: ignore[arg-type]
    await b.start()
    await b.send([Message("orders", b"old%d" % i) for i in range(6)])
    await b.send([Message("other", b"keep")])
    await b.commit_offset("g", "orders", 0, 1)
    assert await b.purge_topic("orders") == {"queues": 2, "messages": 6}
    for q in (0, 1):
        assert b.min_offset("orders", q) == b.max_offset("orders", q) == 3
        r = await b.pull("orders", q, 0)  # a consumer behind the purge starts after it
        assert r.status == PullStatus.NO_NEW_MSG and r.messages == [] and r.next_offset == 3
    assert (await b.pull("other", 0, 0)).messages[0].body == b"keep"
    await b.send([Message("orders", b"new", queue_id=0)])
    r = await b.pull("orders", 0, 1)
    assert [m.body for m in r.messages] == [b"new"]
    assert await b.purge_topic("orders") == {"queues": 2, "messages": 1}
    with pytest.raises(TopicNotFound):
        await b.purge_topic("nope")
    if kind == "lmdb":  # the purge mark is stored with the topic's data
        await s.close()  # type: ignore[attr-defined]
        s = store()
        await s.open()  # type: ignore[attr-defined]
        b = Broker(s, TrioRuntime())  # type: ignore[arg-type]
        await b.start()
        assert b.min_offset("orders", 0) == 4 and (await b.pull("orders", 0, 0)).messages == []
    await b.reset()
    assert b.min_offset("orders", 0) == 0
    await s.close()  # type: ignore[attr-defined]
