"""The bridge's reverse direction over gRPC, in process.

* against a *strict* proxy: rocketlite's gRPC service wrapped with the rules the Apache proxy
  enforces (read in its source; GRPC.md): no Heartbeat or ReceiveMessage before the client's
  settings arrived on Telemetry, long polls of at least 5 s with the deadline to match, invisible
  time of at least 10 s, batches of at most 32, a known ``x-mq-language``; settings forgotten when
  the proxy restarts (the broker behind it keeps its state, so receipt handles stay valid);
* the receive loop with a scripted upstream under the mock clock: a crash (or a failed ack) after
  the local commit leads to a redelivery that is acknowledged without being published twice;
* the pure translation of a received message and the settings a SimpleConsumer announces.
"""

from __future__ import annotations

import gzip
import hashlib
from typing import Any

import pytest
import trio

from rocketlite.bridge.config import parse_bridges
from rocketlite.bridge.grpc_upstream import GrpcUpstream, grpc_timeout, received_message
from rocketlite.bridge.service import Bridge
from rocketlite.bridge.upstream import QueueRef, Route, UpstreamUnavailable
from rocketlite.core.broker import Broker
from rocketlite.core.message import Message
from rocketlite.metrics import METRICS
from rocketlite.protocols.grpc import messaging_pb2 as pb
from rocketlite.protocols.grpc.server import GrpcServer
from rocketlite.protocols.grpc.service import MessagingService, ms_of, status
from rocketlite.runtime import TrioRuntime
from rocketlite.storage.memory import MemoryStore

LANGUAGES = {"JAVA", "CPP", "DOTNET", "PYTHON", "GO", "RUST", "NODE_JS", "OTHER", "HTTP"}


class StrictProxy(MessagingService):
    """rocketlite's service, plus the Apache proxy's preconditions; breaches are recorded."""

    def __init__(self, broker: Broker) -> None:
        super().__init__(broker)
        self.violations: list[str] = []
        self.calls: list[str] = []
        self.settings_of: dict[str, pb.Settings] = {}
        self.answers: list[pb.TelemetryCommand] = []

    def _check_headers(self, call: Any, what: str) -> None:
        md = call.metadata
        if not md.get("x-mq-client-id"):
            self.violations.append(f"{what}: no x-mq-client-id")
        if md.get("x-mq-language") not in LANGUAGES:
            self.violations.append(f"{what}: x-mq-language {md.get('x-mq-language')!r} is no LanguageCode")

    async def telemetry(self, call: Any) -> None:
        """As rocketlite's, plus a record of the client's answers to server commands."""
        self._check_headers(call, "Telemetry")
        self.calls.append("Telemetry")
        c = self.client(call)
        c.telemetry = call
        try:
            while (payload := await call.recv()) is not None:
                cmd = pb.TelemetryCommand.FromString(payload)
                if cmd.WhichOneof("command") == "settings":
                    await c.push(self.apply_settings(c, cmd.settings))
                else:
                    self.answers.append(cmd)
        finally:
            if c.telemetry is call:
                c.telemetry = None

    def apply_settings(self, c: Any, s: pb.Settings) -> pb.TelemetryCommand:
        self.settings_of[c.client_id] = s
        return super().apply_settings(c, s)

    async def heartbeat(self, req: pb.HeartbeatRequest, call: Any) -> pb.HeartbeatResponse:
        self._check_headers(call, "Heartbeat")
        self.calls.append("Heartbeat")
        if call.client_id not in self.settings_of:
            self.violations.append("Heartbeat before settings")
            return pb.HeartbeatResponse(status=status(pb.UNRECOGNIZED_CLIENT_TYPE, "cannot find client settings"))
        return await super().heartbeat(req, call)

    async def receive_message(self, req: pb.ReceiveMessageRequest, call: Any) -> None:
        self._check_headers(call, "ReceiveMessage")
        self.calls.append("ReceiveMessage")
        problem = ""
        if call.client_id not in self.settings_of:
            problem = "ReceiveMessage before settings"  # the proxy fails with INTERNAL_ERROR (no settings)
            code = pb.INTERNAL_ERROR
        elif call.timeout is None or call.timeout < 5.0:
            problem, code = f"deadline {call.timeout} s < 5 s", pb.ILLEGAL_POLLING_TIME
        elif ms_of(req.invisible_duration) < 10_000:
            problem, code = f"invisible {ms_of(req.invisible_duration)} ms < 10 s", pb.ILLEGAL_INVISIBLE_TIME
        elif req.batch_size > 32 or req.batch_size < 1:
            problem, code = f"batch {req.batch_size}", pb.BAD_REQUEST
        elif req.auto_renew:
            problem, code = "auto_renew from a simple consumer", pb.BAD_REQUEST
        if problem:
            self.violations.append(problem)
            await call.send(pb.ReceiveMessageResponse(status=status(code, problem)).SerializeToString())
            return
        # the proxy long-polls at least 5 s whatever the client asked
        req.long_polling_timeout.FromMilliseconds(max(5000, min(20_000, ms_of(req.long_polling_timeout))))
        await super().receive_message(req, call)

    async def ack_message(self, req: pb.AckMessageRequest, call: Any) -> pb.AckMessageResponse:
        self._check_headers(call, "AckMessage")
        self.calls.append("AckMessage")
        return await super().ack_message(req, call)


async def start_proxy(nursery: trio.Nursery, broker: Broker, port: int = 0) -> tuple[StrictProxy, int, trio.CancelScope]:
    svc = StrictProxy(broker)
    server = GrpcServer(svc.handlers())
    scope = trio.CancelScope()

    async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
            task_status.started(listeners[0].socket.getsockname()[1])
            await trio.serve_listeners(server.handle, listeners)

    bound = await nursery.start(serve)
    return svc, bound, scope


async def new_broker(nursery: trio.Nursery) -> Broker:
    broker = Broker(MemoryStore(), TrioRuntime(nursery))
    await broker.start()
    for service in broker.services:
        nursery.start_soon(service)
    return broker


async def wait_until(pred: Any, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not await pred():
            await trio.sleep(0.02)  # polling interval of a bounded wait, not synchronisation


async def local_bodies(broker: Broker, topic: str) -> list[bytes]:
    out = []
    for q in broker.topic_queue_ids(topic) if topic in broker.topics else []:
        res = await broker.pull(topic, q, 0, 1000)
        out += [m.body for m in res.messages]
    return out


async def test_reverse_path_against_a_strict_proxy_and_its_restart(nursery: trio.Nursery) -> None:
    upstream = await new_broker(nursery)
    await upstream.create_topic("cmds", queues=4)
    await upstream.create_group("edge-cmds", consume_orderly=True)  # a FIFO group upstream
    await upstream.send([Message("cmds", f"c{i}".encode(), properties={"__SHARDINGKEY": f"g{i % 2}", "UNIQ_KEY": f"U{i:04d}"})
                         for i in range(10)])
    proxy, port, scope = await start_proxy(nursery, upstream)

    edge = await new_broker(nursery)
    (cfg,) = parse_bridges({"cloud": {"upstream": f"grpc://127.0.0.1:{port}", "pull_topics": ["cmds"],
                                      "consumer_group": "edge-cmds", "pull_suspend_ms": 1000,
                                      "retry_min_ms": 20, "retry_max_ms": 200, "request_timeout_ms": 2000}})
    bridge = Bridge(cfg, edge)
    async with trio.open_nursery() as n:
        n.start_soon(bridge.run)

        async def arrived(k: int) -> bool:
            return len(await local_bodies(edge, "cmds")) >= k

        await wait_until(lambda: arrived(10))
        assert bridge.puller is not None and bridge.puller.fifo, "the settings reply's fifo flag was not taken"
        assert proxy.calls.index("Telemetry") < proxy.calls.index("Heartbeat") < proxy.calls.index("ReceiveMessage")
        settings = next(iter(proxy.settings_of.values()))
        assert settings.client_type == pb.SIMPLE_CONSUMER and settings.subscription.group.name == "edge-cmds"
        assert [e.topic.name for e in settings.subscription.subscriptions] == ["cmds"]

        async def all_acked() -> bool:
            return upstream.pops.inflight("edge-cmds", "cmds") == []

        await wait_until(all_acked)
        assert bridge.up()

        # the proxy restarts (same port, same broker behind it): it knows no settings any more
        scope.cancel()
        proxy2, _, scope2 = await start_proxy(nursery, upstream, port)
        await upstream.send([Message("cmds", f"c{i}".encode(), properties={"__SHARDINGKEY": f"g{i % 2}", "UNIQ_KEY": f"U{i:04d}"})
                             for i in range(10, 20)])
        await wait_until(lambda: arrived(20))
        await wait_until(all_acked)
        assert "Telemetry" in proxy2.calls
        assert proxy.violations == [] and proxy2.violations == [], proxy.violations + proxy2.violations
        n.cancel_scope.cancel()
    scope2.cancel()
    bodies = await local_bodies(edge, "cmds")
    assert sorted(bodies) == sorted(f"c{i}".encode() for i in range(20))
    # per message group, local order = upstream order
    for g in ("g0", "g1"):
        mine = [b for b in bodies if int(b[1:]) % 2 == int(g[1])]
        assert mine == sorted(mine, key=lambda b: int(b[1:]))


async def test_server_commands_on_telemetry_are_answered(nursery: trio.Nursery) -> None:
    """The proxy's console asks a client for its thread stacks or to verify a message, and may ask
    it to reconnect: the bridge answers the first two and opens a new session for the third."""
    upstream = await new_broker(nursery)
    await upstream.create_topic("cmds", queues=1)
    proxy, port, scope = await start_proxy(nursery, upstream)
    edge = await new_broker(nursery)
    (cfg,) = parse_bridges({"cloud": {"upstream": f"grpc://127.0.0.1:{port}", "pull_topics": ["cmds"],
                                      "pull_suspend_ms": 1000, "retry_min_ms": 20, "retry_max_ms": 200}})
    bridge = Bridge(cfg, edge)
    async with trio.open_nursery() as n:
        n.start_soon(bridge.run)

        async def settled() -> bool:
            return bridge.puller is not None and bridge.puller._ready.is_set() and bool(proxy.settings_of)

        await wait_until(settled)
        client = proxy.clients[next(iter(proxy.settings_of))]
        ask = pb.TelemetryCommand()
        ask.print_thread_stack_trace_command.nonce = "n-stack"
        await client.push(ask)
        verify = pb.TelemetryCommand()
        verify.verify_message_command.nonce = "n-verify"
        await client.push(verify)

        async def answered() -> bool:
            return len(proxy.answers) >= 2

        await wait_until(answered)
        by_kind = {a.WhichOneof("command"): a for a in proxy.answers}
        assert by_kind["thread_stack_trace"].thread_stack_trace.nonce == "n-stack"
        assert by_kind["thread_stack_trace"].status.code == pb.OK
        assert by_kind["verify_message_result"].verify_message_result.nonce == "n-verify"
        assert by_kind["verify_message_result"].status.code != pb.OK  # not something a bridge does
        reconnect = pb.TelemetryCommand()
        reconnect.reconnect_endpoints_command.nonce = "n-reconnect"
        await client.push(reconnect)

        async def resubscribed() -> bool:
            return proxy.calls.count("Telemetry") >= 2 and bridge.puller._ready.is_set()

        await wait_until(resubscribed)
        await upstream.send([Message("cmds", b"after-reconnect", queue_id=0)])

        async def arrived() -> bool:
            return await local_bodies(edge, "cmds") == [b"after-reconnect"]

        await wait_until(arrived)
        assert proxy.violations == []
        n.cancel_scope.cancel()
    scope.cancel()


class ScriptedPuller:
    """Stands in for the gRPC consumer: hands out scripted receive results; acks fail while ``ack_down``."""

    def __init__(self, script: list[list[pb.Message]]) -> None:
        self.script = script
        self.acked: list[tuple[str, str]] = []
        self.ack_attempts = 0
        self.ack_down = False
        self.ack_block: trio.Event | None = None
        self.up = True
        self.last_error = ""
        self.fifo = False

    async def wait_ready(self) -> None:
        pass

    async def route(self, topic: str, *, refresh: bool = False) -> Route:
        return Route(topic, [], [QueueRef("b", "x:1", 0)], False, trio.current_time())

    async def receive(self, topic: str, q: QueueRef, batch: int, invisible_ms: int) -> list[pb.Message]:
        if self.script:
            return self.script.pop(0)
        await trio.sleep(5)  # an empty long poll
        return []

    async def ack(self, topic: str, entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
        self.ack_attempts += 1
        if self.ack_block is not None:
            await self.ack_block.wait()
        if self.ack_down:
            raise UpstreamUnavailable("down")
        self.acked += entries
        return []


def delivery(i: int, attempt: int, **sp: Any) -> pb.Message:
    m = pb.Message(body=f"cmd{i}".encode())
    m.topic.name = "cmds"
    m.user_properties["k"] = str(i)
    s = m.system_properties
    s.message_id = f"ID{i:04d}"
    s.receipt_handle = f"h{i}-{attempt}"
    s.delivery_attempt = attempt
    s.queue_id = 1
    for k, v in sp.items():
        setattr(s, k, v)
    return m


async def edge_bridge(puller: Any, broker: Broker | None = None, **table: Any) -> tuple[Broker, Bridge]:
    if broker is None:
        broker = Broker(MemoryStore(), TrioRuntime())
        await broker.start()
    (cfg,) = parse_bridges({"cloud": {"upstream": "grpc://proxy:8081", "pull_topics": ["cmds"], "retry_min_ms": 100,
                                      "retry_max_ms": 1000, "pull_invisible_ms": 10_000, **table}})
    bridge = Bridge(cfg, broker)
    bridge.puller = puller
    return broker, bridge


async def test_failed_ack_then_redelivery_is_acked_not_published_twice(autojump_clock: Any) -> None:
    puller = ScriptedPuller([[delivery(1, 1), delivery(2, 1)]])
    puller.ack_down = True
    broker, bridge = await edge_bridge(puller)
    async with trio.open_nursery() as n:
        n.start_soon(bridge._receive, "cmds", QueueRef("b", "x:1", 0))
        await trio.sleep(12)  # the acks are retried with back-off until the invisible time is over
        assert puller.ack_attempts >= 4 and puller.acked == []
        puller.ack_down = False
        puller.script.append([delivery(1, 2), delivery(2, 2)])  # the upstream redelivers them
        await trio.sleep(6)  # after the current (empty) long poll
        n.cancel_scope.cancel()
    assert await local_bodies(broker, "cmds") == [b"cmd1", b"cmd2"]
    assert puller.acked == [("ID0001", "h1-2"), ("ID0002", "h2-2")]


async def test_crash_between_local_commit_and_ack_publishes_once(autojump_clock: Any) -> None:
    puller = ScriptedPuller([[delivery(1, 1)]])
    puller.ack_block = trio.Event()  # the edge dies while acking
    broker, bridge = await edge_bridge(puller)
    async with trio.open_nursery() as n:
        n.start_soon(bridge._receive, "cmds", QueueRef("b", "x:1", 0))
        await trio.sleep(1)
        n.cancel_scope.cancel()
    assert await local_bodies(broker, "cmds") == [b"cmd1"] and puller.acked == []
    # "restart": a new bridge on the same (durable) store; the upstream redelivers after the invisible time
    before = dict(METRICS.counters.get("rocketlite_bridge_duplicates_total", {}))
    puller2 = ScriptedPuller([[delivery(1, 2), delivery(3, 1)]])
    _, bridge2 = await edge_bridge(puller2, broker)
    async with trio.open_nursery() as n:
        n.start_soon(bridge2._receive, "cmds", QueueRef("b", "x:1", 0))
        await trio.sleep(1)
        n.cancel_scope.cancel()
    assert await local_bodies(broker, "cmds") == [b"cmd1", b"cmd3"]
    assert puller2.acked == [("ID0001", "h1-2"), ("ID0003", "h3-1")]
    after = METRICS.counters["rocketlite_bridge_duplicates_total"]
    assert sum(after.values()) - sum(before.values()) == 1


def test_received_message_translation() -> None:
    body = b"open the valve"
    m = delivery(7, 1, tag="Cmd", message_group="valves")
    m.system_properties.keys.extend(["k1", "k2"])
    m.system_properties.born_timestamp.FromMilliseconds(1_700_000_000_123)
    m.body = body
    m.system_properties.body_digest.type = pb.MD5
    m.system_properties.body_digest.checksum = hashlib.md5(body).hexdigest().upper()
    m.user_properties["originMqttTopic"] = "commands/device-1"
    msg = received_message("cloud", "cloud_cmds", m, 4)
    assert msg is not None
    assert (msg.topic, msg.body, msg.tags, msg.keys) == ("cloud_cmds", body, "Cmd", "k1 k2")
    assert msg.unique_id == "ID0007" and msg.message_group == "valves" and msg.queue_id == -1  # hashed by group
    assert msg.properties["originMqttTopic"] == "commands/device-1" and msg.properties["rocketliteBridge"] == "cloud"
    assert msg.born_timestamp == 1_700_000_000_123
    plain = received_message("cloud", "cmds", delivery(8, 1, queue_id=6), 4)
    assert plain is not None and plain.queue_id == 2  # upstream queue 6 -> local queue 6 % 4
    # a GZIP body is published decompressed; a wrong digest is not taken
    z = delivery(9, 1, body_encoding=pb.GZIP)
    z.body = gzip.compress(b"payload")
    got = received_message("cloud", "cmds", z, 4)
    assert got is not None and got.body == b"payload" and not got.sys_flag & 1
    bad = delivery(10, 1)
    bad.system_properties.body_digest.type = pb.MD5
    bad.system_properties.body_digest.checksum = "00"
    assert received_message("cloud", "cmds", bad, 4) is None
    crc = delivery(11, 1)
    crc.system_properties.body_digest.type = pb.CRC32
    crc.system_properties.body_digest.checksum = "%X" % (__import__("zlib").crc32(crc.body) & 0xFFFFFFFF)
    assert received_message("cloud", "cmds", crc, 4) is not None


@pytest.mark.parametrize("suspend, expect", [(1000, 1000), (60_000, 20_000)])
async def test_settings_announce_a_simple_consumer(suspend: int, expect: int) -> None:
    (cfg,) = parse_bridges({"cloud": {"upstream": "grpcs://proxy.example:8081", "pull_topics": ["a", "b"],
                                      "consumer_group": "edge-17", "pull_suspend_ms": suspend}})
    async with trio.open_nursery() as n:
        up = GrpcUpstream(cfg, n, role="consumer")
        cmd = up.settings_command(cfg.pull_topics)
    s = cmd.settings
    assert s.client_type == pb.SIMPLE_CONSUMER and s.subscription.group.name == "edge-17"
    assert [(e.topic.name, e.expression.type, e.expression.expression) for e in s.subscription.subscriptions] == [
        ("a", pb.TAG, "*"), ("b", pb.TAG, "*")]
    assert ms_of(s.subscription.long_polling_timeout) == expect
    assert s.access_point.scheme == pb.DOMAIN_NAME and s.access_point.addresses[0].port == 8081
    assert s.user_agent.language == pb.PYTHON and up.client_id.endswith("@consumer")


def test_grpc_timeout_header_fits_eight_digits() -> None:
    assert grpc_timeout(15) == "15000m" and grpc_timeout(0.0001) == "1m"
    assert grpc_timeout(10**6) == "1000000S" and len(grpc_timeout(10**12)) <= 9
