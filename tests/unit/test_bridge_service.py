"""The forwarding loop on an in-process broker with a scripted upstream, under the mock clock."""

from __future__ import annotations

from typing import Any

import trio

from rocketlite.bridge.config import parse_bridges
from rocketlite.bridge.service import Bridge
from rocketlite.bridge.upstream import QueueRef, Route, UpstreamRejected, UpstreamUnavailable
from rocketlite.core.broker import Broker
from rocketlite.core.message import Message
from rocketlite.runtime import TrioRuntime
from rocketlite.storage.memory import MemoryStore


class FakeUpstream:
    """Two upstream queues; fails while ``down``; records what it stored per queue."""

    def __init__(self) -> None:
        self.down = False
        self.reject_bodies: set[bytes] = set()
        self.stored: dict[int, list[bytes]] = {0: [], 1: []}
        self.attempts: list[float] = []
        self.up = True
        self.last_error = ""

    async def route(self, topic: str, *, refresh: bool = False) -> Route:
        if self.down:
            self.attempts.append(trio.current_time())
            raise UpstreamUnavailable("down")
        return Route(topic, [QueueRef("b", "x:1", 0), QueueRef("b", "x:1", 1)], [], False, trio.current_time())

    def forget_route(self, topic: str) -> None:
        pass

    async def send(self, topic: str, q: QueueRef, items: list[Any], *, via_default: bool) -> None:
        if any(b in self.reject_bodies for b, *_ in items):
            raise UpstreamRejected("13 too large")
        self.stored[q.queue_id] += [b for b, *_ in items]

    async def aclose(self) -> None:
        pass


async def setup(**table: Any) -> tuple[Broker, Bridge, FakeUpstream]:
    broker = Broker(MemoryStore(), TrioRuntime())
    await broker.start()
    (cfg,) = parse_bridges({"t": {"upstream": "ns:1", "topics": ["tel"], "retry_min_ms": 100,
                                  "retry_max_ms": 1600, **table}})
    bridge = Bridge(cfg, broker)
    bridge.upstream = FakeUpstream()  # type: ignore[assignment]
    return broker, bridge, bridge.upstream  # type: ignore[return-value]


async def test_backoff_doubles_up_to_the_cap_then_delivers_in_order(autojump_clock: Any) -> None:
    broker, bridge, up = await setup()
    await broker.create_topic("tel", queues=2)
    await broker.send([Message("tel", f"m{i}".encode(), queue_id=i % 2) for i in range(10)])
    up.down = True
    async with trio.open_nursery() as n:
        for q in (0, 1):
            await bridge._init_position("tel", q)
            n.start_soon(bridge._forward, "tel", q)
        await trio.sleep(10)
        assert bridge.backlog() == {"tel": 10}
        up.down = False
        await trio.sleep(2)
        n.cancel_scope.cancel()
    assert up.stored == {0: [f"m{i}".encode() for i in range(0, 10, 2)], 1: [f"m{i}".encode() for i in range(1, 10, 2)]}
    assert bridge.backlog() == {"tel": 0}
    assert broker.query_offset("rocketlite-bridge-t", "tel", 0) == 5  # the durable position
    # one worker's retry gaps: 100, 200, 400, 800, 1600, 1600 ... ms (minus up to 20 % jitter)
    times = sorted(up.attempts)[::2]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps and max(gaps) <= 1.6 + 0.05 and any(g > 1.2 for g in gaps)


async def test_position_resumes_and_rejected_messages_go_to_the_local_dlq(autojump_clock: Any) -> None:
    broker, bridge, up = await setup()
    await broker.create_topic("tel", queues=1)
    await broker.send([Message("tel", f"m{i}".encode(), queue_id=0) for i in range(4)])
    await broker.commit_offset("rocketlite-bridge-t", "tel", 0, 2)  # forwarded before a restart
    up.reject_bodies = {b"m3"}
    async with trio.open_nursery() as n:
        await bridge._init_position("tel", 0)
        n.start_soon(bridge._forward, "tel", 0)
        await trio.sleep(1)
        n.cancel_scope.cancel()
    assert up.stored[0] == [b"m2"]
    dlq = await broker.pull("%DLQ%rocketlite-bridge-t", 0, 0)
    assert [m.body for m in dlq.messages] == [b"m3"]
    assert broker.query_offset("rocketlite-bridge-t", "tel", 0) == 4


async def test_forward_from_last_skips_history(autojump_clock: Any) -> None:
    broker, bridge, up = await setup(forward_from="last")
    await broker.create_topic("tel", queues=1)
    await broker.send([Message("tel", b"old", queue_id=0)])
    async with trio.open_nursery() as n:
        await bridge._init_position("tel", 0)
        n.start_soon(bridge._forward, "tel", 0)
        await broker.send([Message("tel", b"new", queue_id=0)])
        await trio.sleep(1)
        n.cancel_scope.cancel()
    assert up.stored[0] == [b"new"]


async def test_a_failing_worker_is_restarted_not_fatal(autojump_clock: Any) -> None:
    broker, bridge, up = await setup()
    calls: list[int] = []

    async def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise KeyError("bug")

    await bridge._guarded(flaky)
    assert len(calls) == 3
