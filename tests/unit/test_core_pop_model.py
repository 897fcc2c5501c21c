"""Randomised POP runs against a model: no double hand-out, FIFO order per group, nothing lost."""

from __future__ import annotations

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from rocketlite.core.broker import Broker, BrokerSettings
from rocketlite.core.errors import InvalidReceipt
from rocketlite.core.message import PROP_MESSAGE_GROUP, Message
from rocketlite.runtime import TrioRuntime
from rocketlite.storage.memory import MemoryStore

ops = st.lists(
    st.one_of(
        st.tuples(st.just("pop"), st.integers(1, 4), st.sampled_from([1_000, 5_000, 30_000])),
        st.tuples(st.just("ack"), st.integers(0, 50)),
        st.tuples(st.just("change"), st.integers(0, 50), st.sampled_from([0, 2_000, 20_000])),
        st.tuples(st.just("sleep"), st.sampled_from([500, 3_000, 31_000])),
        st.tuples(st.just("send"), st.sampled_from(["A", "B", "C", ""])),
    ),
    max_size=40,
)


async def scenario(fifo: bool, script: list[tuple], initial: list[str]) -> None:
    async with trio.open_nursery() as nursery:
        b = Broker(MemoryStore(), TrioRuntime(nursery), BrokerSettings())
        await b.start()
        for svc in b.services:
            nursery.start_soon(svc)
        await b.create_topic("T", queues=2)
        await b.create_group("G", max_reconsume_times=2)
        sent: list[tuple[bytes, str]] = []

        async def send(group: str) -> None:
            body = f"m{len(sent)}".encode()
            props = {PROP_MESSAGE_GROUP: group} if group else {}
            await b.send([Message("T", body, properties=props)])
            sent.append((body, group))

        for g in initial:
            await send(g)
        holding: dict[bytes, tuple[str, int]] = {}  # body -> (handle, invisible until)
        handles: list[tuple[bytes, str]] = []
        acked: set[bytes] = set()
        first_seen: list[bytes] = []
        group_of = dict(sent)

        def check_pop(got: list[tuple[Message, str]]) -> None:
            now = b.now_ms()
            for m, h in got:
                group_of.update(sent)
                assert m.body not in acked
                prev = holding.get(m.body)
                assert prev is None or prev[1] <= now, "handed out twice while invisible"
                if fifo and group_of.get(m.body):
                    g = group_of[m.body]
                    for other, (_, until) in holding.items():
                        if other != m.body and group_of.get(other) == g and until > now:
                            raise AssertionError("two messages of one group in flight")
                if m.body not in first_seen:
                    first_seen.append(m.body)
            for m, h in got:
                holding[m.body] = (h, b.now_ms() + inv)
                handles.append((m.body, h))

        for op in script:
            if op[0] == "pop":
                inv = op[2]
                check_pop(await b.pop("G", "T", op[1], inv, fifo=fifo))
            elif op[0] == "ack" and handles:
                body, h = handles[op[1] % len(handles)]
                try:
                    await b.ack("G", "T", h)
                except InvalidReceipt:
                    continue
                assert body not in acked
                acked.add(body)
                holding.pop(body, None)
            elif op[0] == "change" and handles:
                i = op[1] % len(handles)
                body, h = handles[i]
                try:
                    nh = await b.change_invisible("G", "T", h, op[2])
                except InvalidReceipt:
                    continue
                handles[i] = (body, nh)
                holding[body] = (nh, b.now_ms() + op[2])
            elif op[0] == "sleep":
                await trio.sleep(op[1] / 1000)
            elif op[0] == "send":
                await send(op[1])
        # drain: ack everything that still comes
        for _ in range(200):
            inv = 10_000
            got = await b.pop("G", "T", 8, inv, fifo=fifo, wait_ms=40_000)
            if not got:
                break
            check_pop(got)
            for m, h in got:
                await b.ack("G", "T", h)
                acked.add(m.body)
                holding.pop(m.body, None)
        dead = []
        for q in b.topic_queue_ids("%DLQ%G"):
            dead += [m.body for m in (await b.pull("%DLQ%G", q, 0, 1000)).messages]
        assert len(dead) == len(set(dead))
        assert not (set(dead) & acked)
        assert set(dead) | acked == {body for body, _ in sent}
        if fifo:
            for g in "ABC":
                order = [body for body in first_seen if group_of.get(body) == g]
                expected = [body for body, gg in sent if gg == g]
                assert order == [x for x in expected if x in order]
        nursery.cancel_scope.cancel()


def run(fifo: bool, script: list[tuple], initial: list[str]) -> None:
    trio.run(scenario, fifo, script, initial, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(max_examples=60, deadline=None)
@given(ops, st.lists(st.sampled_from(["A", "B", "C", ""]), max_size=12))
def test_pop_model(script: list[tuple], initial: list[str]) -> None:
    run(False, script, initial)


@settings(max_examples=60, deadline=None)
@given(ops, st.lists(st.sampled_from(["A", "B", "C", ""]), max_size=12))
def test_fifo_model(script: list[tuple], initial: list[str]) -> None:
    run(True, script, initial)
