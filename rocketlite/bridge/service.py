"""Running bridges: forward workers per local (topic, queue), pull workers per upstream queue.

Forwarding, per local queue, in a loop: long-poll the local queue from the bridge's position,
send the wanted messages upstream in order (one request per run of messages bound to the same
upstream queue, waiting for each answer), then commit the position (the offset of consumer group
``rocketlite-bridge-<name>``, written to the store). A crash between the upstream's answer and
the commit sends a batch twice: delivery is at least once. While the upstream is unreachable a
worker retries the same run with exponential back-off (``retry_min_ms`` doubling up to
``retry_max_ms``); messages keep piling up locally and the backlog is exported as
``rocketlite_bridge_backlog`` (and shows as that group's lag in the console).

Reverse, per upstream queue of each ``pull_topics`` topic: pull with the upstream consumer group
from its offset kept upstream, publish the batch locally, then commit the upstream offset.
Over gRPC, per (topic, upstream broker): a SimpleConsumer session (Telemetry + Heartbeat) for the
consumer group, long-polled ``ReceiveMessage``, publish locally, then ``AckMessage``; a message
redelivered after a crash between the two is recognised by its id and not published twice.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import trio

from rocketlite.bridge.config import (
    PROP_BRIDGE,
    BridgeConfig,
    backoff_ms,
    incoming_message,
    outgoing_properties,
    outgoing_sys_flag,
    parse_bridges,
    runs,
)
from rocketlite.bridge.upstream import QueueRef, Upstream, UpstreamRejected, UpstreamUnavailable
from rocketlite.core.broker import Broker, PullStatus
from rocketlite.core.message import Message
from rocketlite.metrics import METRICS

log = logging.getLogger("rocketlite.bridge")

METRICS.describe("rocketlite_bridge_forwarded_total", "counter", "Messages a bridge delivered upstream.")
METRICS.describe("rocketlite_bridge_received_total", "counter", "Messages a bridge pulled from upstream and published locally.")
METRICS.describe("rocketlite_bridge_retries_total", "counter", "Upstream requests a bridge will retry after a back-off.")
METRICS.describe("rocketlite_bridge_rejected_total", "counter",
                 "Messages the upstream refused for good (MESSAGE_ILLEGAL), kept locally in %DLQ%rocketlite-bridge-<name>.")
METRICS.describe("rocketlite_bridge_duplicates_total", "counter",
                 "Redeliveries from a gRPC upstream recognised as already published locally (acknowledged, not published again).")
METRICS.describe("rocketlite_bridge_backlog", "gauge", "Messages stored locally and not yet forwarded, per bridge and topic.")
METRICS.describe("rocketlite_bridge_upstream_up", "gauge", "1 when the bridge's last upstream request succeeded.")


class Bridge:
    def __init__(self, cfg: BridgeConfig, broker: Broker) -> None:
        self.cfg = cfg
        self.broker = broker
        self.positions: dict[tuple[str, int], int] = {}
        self.upstream: Upstream | None = None
        self.puller: Any = None  # gRPC reverse direction: a GrpcUpstream in the consumer role
        self._workers: set[tuple[str, int]] = set()
        self._pullers: set[tuple[str, str, int]] = set()
        self._new_topic = trio.Event()
        self._forwards: dict[str, bool] = {}
        self._rnd = random.Random()

    # -- status ----------------------------------------------------------------------------------
    def backlog(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (topic, q), pos in list(self.positions.items()):
            hi = self.broker.max_offset(topic, q)
            out[topic] = out.get(topic, 0) + max(0, hi - max(pos, self.broker.min_offset(topic, q)))
        return out

    def _links(self) -> list[Any]:
        """The upstream connections in use: forwarding (and remoting pulls), gRPC pulls."""
        out = []
        if self.cfg.topics or self.cfg.mqtt_filters or (self.cfg.pull_topics and self.puller is None):
            out.append(self.upstream)
        if self.puller is not None:
            out.append(self.puller)
        return out

    def up(self) -> bool:
        links = self._links()
        return bool(links) and all(link is not None and link.up for link in links)

    def last_error(self) -> str:
        return next((link.last_error for link in self._links() if link is not None and not link.up), "")

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        out: list[tuple[str, dict[str, str], float]] = [
            ("rocketlite_bridge_upstream_up", {"bridge": self.cfg.name}, 1.0 if self.up() else 0.0)]
        for topic, n in sorted(self.backlog().items()):
            out.append(("rocketlite_bridge_backlog", {"bridge": self.cfg.name, "topic": topic}, n))
        return out

    def status(self) -> dict[str, Any]:
        return {
            "name": self.cfg.name, "upstream": ";".join(self.cfg.namesrv), "group": self.cfg.group,
            "up": self.up(), "last_error": self.last_error(),
            "backlog": self.backlog(), "pull_topics": self.cfg.pull_topics,
        }

    # -- lifecycle -------------------------------------------------------------------------------
    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            if self.cfg.protocol == "grpc":
                from rocketlite.bridge.grpc_upstream import GrpcUpstream

                self.upstream = GrpcUpstream(self.cfg, nursery)  # type: ignore[assignment]
                if self.cfg.pull_topics:
                    self.puller = GrpcUpstream(self.cfg, nursery, role="consumer")
                    nursery.start_soon(self._guarded, self.puller.consumer_session, list(self.cfg.pull_topics))
            else:
                self.upstream = Upstream(self.cfg, nursery)
            self.broker.write_listeners.append(self._on_write)
            try:
                if self.cfg.topics or self.cfg.mqtt_filters:
                    nursery.start_soon(self._guarded, self._discover, nursery)
                for topic in self.cfg.pull_topics:
                    nursery.start_soon(self._guarded, self._discover_upstream, nursery, topic)
                await trio.sleep_forever()
            finally:
                try:
                    self.broker.write_listeners.remove(self._on_write)
                except ValueError:
                    pass
                if self.puller is not None:
                    await self.puller.terminate()
                    await self.puller.aclose()
                await self.upstream.aclose()

    def forwards(self, topic: str) -> bool:
        hit = self._forwards.get(topic)
        if hit is None:
            if len(self._forwards) > 10_000:
                self._forwards.clear()
            hit = self._forwards[topic] = self.cfg.forwards(topic)
        return hit

    def _on_write(self, msgs: list[Message]) -> None:
        for m in msgs:
            if (m.topic, m.queue_id) not in self._workers and self.forwards(m.topic):
                self._new_topic.set()
                return

    async def _guarded(self, fn: Any, *args: Any) -> None:
        """Run a worker; a bug in it is logged and the worker restarted after a pause, never fatal
        to the broker (the position is durable, so a restart loses nothing)."""
        attempt = 0
        while True:
            try:
                await fn(*args)
                return
            except Exception:
                log.exception("bridge %s: %s%s failed; restarting it", self.cfg.name, fn.__name__, args[-2:])
                METRICS.inc("rocketlite_bridge_retries_total", {"bridge": self.cfg.name})
                await trio.sleep(backoff_ms(attempt, 1000, max(1000, self.cfg.retry_max_ms), self._rnd) / 1000)
                attempt += 1

    async def _discover(self, nursery: trio.Nursery) -> None:
        while True:
            self._new_topic = trio.Event()  # before the scan: a topic created during it wakes the next one
            for topic in list(self.broker.topic_names()):
                if not self.forwards(topic):
                    continue
                for q in self.broker.topic_queue_ids(topic):
                    if (topic, q) not in self._workers:
                        self._workers.add((topic, q))
                        await self._init_position(topic, q)
                        nursery.start_soon(self._guarded, self._forward, topic, q)
            with trio.move_on_after(5):
                await self._new_topic.wait()

    async def _init_position(self, topic: str, q: int) -> None:
        pos = self.broker.query_offset(self.cfg.group, topic, q)
        if pos is None:
            if self.cfg.forward_from == "last":
                pos = self.broker.max_offset(topic, q)
            else:
                pos = self.broker.min_offset(topic, q)
            await self.broker.commit_offset(self.cfg.group, topic, q, pos)
        self.positions[(topic, q)] = pos

    # -- forward ---------------------------------------------------------------------------------
    async def _forward(self, topic: str, q: int) -> None:
        cfg = self.cfg
        all_of_topic = cfg.forwards_all(topic)
        up_topic = cfg.upstream_topic_prefix + topic
        while True:
            pos = self.positions[(topic, q)]
            res = await self.broker.pull(topic, q, pos, cfg.batch_size, wait_ms=30_000)
            if res.status == PullStatus.OFFSET_ILLEGAL:
                # the local queue is shorter than our position (store cleared): follow it
                await self._commit(topic, q, res.next_offset)
                continue
            wanted = [m for m in res.messages if cfg.wants(m, all_of_topic=all_of_topic)]
            if wanted:
                await self._deliver(topic, q, up_topic, wanted)
            if res.next_offset != pos:
                await self._commit(topic, q, res.next_offset)

    async def _commit(self, topic: str, q: int, offset: int) -> None:
        self.positions[(topic, q)] = offset
        await self.broker.commit_offset(self.cfg.group, topic, q, offset)

    async def _deliver(self, topic: str, q: int, up_topic: str, msgs: list[Message]) -> None:
        """Send ``msgs`` upstream in order; returns only when every one was accepted (or rejected for good)."""
        assert self.upstream is not None
        attempt = 0
        pending = list(msgs)
        while pending:
            try:
                route = await self.upstream.route(up_topic)
                if not route.write:
                    raise UpstreamUnavailable(f"no writable queue for {up_topic}")
                for qi, run in runs(pending, len(route.write), self.cfg.batch_max_bytes):
                    await self._send_run(topic, up_topic, route, qi, run)
                    # progress is durable per run: a retry never resends what the upstream took
                    pending = pending[len(run):]
                    await self._commit(topic, q, run[-1].queue_offset + 1)
                    attempt = 0
                if route.via_default:
                    self.upstream.forget_route(up_topic)  # the topic exists now; use its own route
            except UpstreamUnavailable:
                METRICS.inc("rocketlite_bridge_retries_total", {"bridge": self.cfg.name})
                self.upstream.forget_route(up_topic)
                await trio.sleep(backoff_ms(attempt, self.cfg.retry_min_ms, self.cfg.retry_max_ms, self._rnd) / 1000)
                attempt += 1

    async def _send_run(self, topic: str, up_topic: str, route: Any, qi: int, run: list[Message]) -> None:
        assert self.upstream is not None
        items = [(m.body, outgoing_properties(m), m.flag, outgoing_sys_flag(m), m.born_timestamp) for m in run]
        try:
            await self.upstream.send(up_topic, route.write[qi], items, via_default=route.via_default)
            METRICS.inc("rocketlite_bridge_forwarded_total", {"bridge": self.cfg.name, "topic": topic}, len(run))
        except UpstreamRejected as exc:
            if len(run) == 1:
                await self._reject(run, str(exc))
                return
            # a batch is refused as a whole: find the culprits one by one, in order
            for m in run:
                await self._send_run(topic, up_topic, route, qi, [m])

    async def _reject(self, run: list[Message], why: str) -> None:
        """Keep what the upstream refuses for good in a local DLQ instead of blocking the queue."""
        log.error("bridge %s: upstream refused %d message(s) (%s); kept in %%DLQ%%%s", self.cfg.name, len(run), why,
                  self.cfg.group)
        METRICS.inc("rocketlite_bridge_rejected_total", {"bridge": self.cfg.name}, len(run))
        dlq = "%DLQ%" + self.cfg.group
        if dlq not in self.broker.topics:
            await self.broker.create_topic(dlq, queues=1)
        await self.broker.send([m.copy(topic=dlq, queue_id=0, queue_offset=-1, commit_offset=-1) for m in run])

    # -- reverse ---------------------------------------------------------------------------------
    async def _discover_upstream(self, nursery: trio.Nursery, topic: str) -> None:
        up = self.puller or self.upstream
        assert up is not None
        attempt = 0
        while True:
            try:
                route = await up.route(topic, refresh=True)
                attempt = 0
                for ref in route.read:
                    if self.puller is not None:
                        # a proxy pops across every queue of a broker: one receiver per broker
                        key = (topic, ref.broker, -1)
                        worker: Any = self._receive
                    else:
                        key = (topic, ref.broker, ref.queue_id)
                        worker = self._pull
                    if key not in self._pullers and not route.via_default:
                        self._pullers.add(key)
                        nursery.start_soon(self._guarded, worker, topic, ref)
                delay = self.cfg.route_refresh_ms / 1000 if route.read and not route.via_default else 1.0
            except UpstreamUnavailable:
                delay = backoff_ms(attempt, self.cfg.retry_min_ms, self.cfg.retry_max_ms, self._rnd) / 1000
                attempt += 1
            await trio.sleep(delay)

    async def _pull(self, topic: str, ref: QueueRef) -> None:
        assert self.upstream is not None
        cfg = self.cfg
        group = cfg.consumer_group
        local_topic = cfg.local_topic_prefix + topic
        offset: int | None = None
        attempt = 0
        while True:
            try:
                # the broker's address may change across an upstream restart: take it from the route
                route = await self.upstream.route(topic)
                ref = next((r for r in route.read if (r.broker, r.queue_id) == (ref.broker, ref.queue_id)), ref)
                if offset is None:
                    offset = await self.upstream.consumer_offset(ref, group, topic)
                    if offset is None:
                        offset = await self.upstream.max_offset(ref, topic) if cfg.pull_from == "last" else 0
                code, records, nxt = await self.upstream.pull(ref, group, topic, offset, cfg.batch_size,
                                                              cfg.pull_suspend_ms)
                attempt = 0
                if records:
                    tc = await self.broker.get_or_create_topic(local_topic)
                    n = max(1, tc.write_queues)
                    msgs = [incoming_message(cfg.name, local_topic, r.body, r.properties, flag=r.flag,
                                             sys_flag=r.sys_flag, born_timestamp=r.born_timestamp,
                                             queue_id=ref.queue_id % n) for r in records]
                    await self.broker.send(msgs)
                    METRICS.inc("rocketlite_bridge_received_total", {"bridge": cfg.name, "topic": local_topic},
                                len(msgs))
                    nxt = max(nxt, records[-1].queue_offset + 1)
                if nxt != offset:
                    offset = nxt
                    await self.upstream.commit_offset(ref, group, topic, offset)
            except UpstreamUnavailable:
                METRICS.inc("rocketlite_bridge_retries_total", {"bridge": cfg.name})
                self.upstream.forget_route(topic)
                await trio.sleep(backoff_ms(attempt, cfg.retry_min_ms, cfg.retry_max_ms, self._rnd) / 1000)
                attempt += 1

    async def _receive(self, topic: str, ref: QueueRef) -> None:
        """gRPC reverse, one upstream broker: receive, publish locally, then acknowledge.

        One receive in flight, and the next one only after the previous batch is stored locally:
        messages of one upstream queue stay in order. The ack of batch N overlaps receive N+1 (at
        most one ack in flight); a FIFO group upstream (the settings reply says ``fifo``) hands
        out the next message of a message group only after the ack, so group order holds too."""
        p = self.puller
        cfg = self.cfg
        local_topic = cfg.local_topic_prefix + topic
        attempt = 0
        acked = trio.Event()
        acked.set()
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    await p.wait_ready()
                    got = await p.receive(topic, ref, cfg.batch_size, cfg.pull_invisible_ms)
                    attempt = 0
                except UpstreamUnavailable:
                    METRICS.inc("rocketlite_bridge_retries_total", {"bridge": cfg.name})
                    await trio.sleep(backoff_ms(attempt, cfg.retry_min_ms, cfg.retry_max_ms, self._rnd) / 1000)
                    attempt += 1
                    continue
                if got:
                    expires = trio.current_time() + cfg.pull_invisible_ms / 1000
                    done = await self._publish_received(local_topic, got)
                    await acked.wait()
                    acked = trio.Event()
                    nursery.start_soon(self._ack_received, topic, done, expires, acked)

    async def _publish_received(self, local_topic: str, got: list[Any]) -> list[tuple[str, str]]:
        """Store what was received (one atomic local write); returns the (message id, receipt
        handle) pairs to acknowledge. A redelivery (attempt > 1) already stored here before a
        crash or a failed ack is acknowledged without publishing it again."""
        from rocketlite.bridge.grpc_upstream import received_message

        cfg = self.cfg
        tc = await self.broker.get_or_create_topic(local_topic)
        n = max(1, tc.write_queues)
        msgs: list[Message] = []
        done: list[tuple[str, str]] = []
        for m in got:
            sp = m.system_properties
            msg = received_message(cfg.name, local_topic, m, n)
            if msg is None:
                log.error("bridge %s: message %s from %s has a wrong body digest; left upstream for redelivery",
                          cfg.name, sp.message_id, m.topic.name)
                continue
            if sp.delivery_attempt > 1 and sp.message_id and await self._stored_here(local_topic, sp.message_id):
                log.info("bridge %s: %s redelivered (attempt %d) was already published; acknowledging it",
                         cfg.name, sp.message_id, sp.delivery_attempt)
                METRICS.inc("rocketlite_bridge_duplicates_total", {"bridge": cfg.name})
            else:
                msgs.append(msg)
            done.append((sp.message_id, sp.receipt_handle))
        if msgs:
            await self.broker.send(msgs)
            METRICS.inc("rocketlite_bridge_received_total", {"bridge": cfg.name, "topic": local_topic}, len(msgs))
        return done

    async def _stored_here(self, local_topic: str, message_id: str) -> bool:
        found = await self.broker.query_by_key(local_topic, message_id, 8)
        return any(m.unique_id == message_id and m.properties.get(PROP_BRIDGE) == self.cfg.name for m in found)

    async def _ack_received(self, topic: str, entries: list[tuple[str, str]], expires: float,
                            finished: trio.Event | None = None) -> None:
        """Acknowledge upstream, retrying with back-off while the receipt handles can still work
        (until the invisible time is over: then the upstream redelivers and we recognise it)."""
        try:
            await self._ack_until(topic, entries, expires)
        finally:
            if finished is not None:
                finished.set()

    async def _ack_until(self, topic: str, entries: list[tuple[str, str]], expires: float) -> None:
        p = self.puller
        cfg = self.cfg
        attempt = 0
        while entries:
            try:
                entries = await p.ack(topic, entries)
            except UpstreamUnavailable:
                pass
            if not entries:
                return
            if trio.current_time() >= expires:
                log.warning("bridge %s: %d ack(s) on %s not accepted before the invisible time ran out; the upstream "
                            "redelivers them and they are recognised as already published", cfg.name, len(entries), topic)
                return
            METRICS.inc("rocketlite_bridge_retries_total", {"bridge": cfg.name})
            await trio.sleep(backoff_ms(attempt, cfg.retry_min_ms, cfg.retry_max_ms, self._rnd) / 1000)
            attempt += 1


class Bridges:
    """Every configured bridge; ``ctx.services["bridges"]`` holds this for the HTTP front-end."""

    def __init__(self, broker: Broker, configs: list[BridgeConfig]) -> None:
        self.bridges = [Bridge(c, broker) for c in configs]

    def samples(self) -> list[tuple[str, dict[str, str], float]]:
        out = []
        for b in self.bridges:
            out.extend(b.samples())
        return out

    def status(self) -> list[dict[str, Any]]:
        return [b.status() for b in self.bridges]


async def run_bridges(broker: Broker, settings: Any, services: dict[str, Any] | None = None, *,
                      task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Parse ``[bridges]`` (a bad table fails startup) and run every bridge until cancelled."""
    configs = parse_bridges(settings.section("bridges"))
    bridges = Bridges(broker, configs)
    if services is not None:
        services["bridges"] = bridges
    remove = METRICS.add_collector(bridges.samples)
    try:
        async with trio.open_nursery() as nursery:
            for b in bridges.bridges:
                nursery.start_soon(b.run)
            task_status.started(bridges)
    finally:
        remove()
