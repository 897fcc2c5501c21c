"""The MQTT front-end in process: a sans-IO client (our codec) over Trio memory streams."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
import trio
import trio.testing

from rocketlite.core.broker import Broker
from rocketlite.core.message import PROP_MQTT_TOPIC, Message
from rocketlite.protocols.mqtt import codec as C
from rocketlite.protocols.mqtt.manager import MqttManager, MqttSettings
from rocketlite.protocols.mqtt.server import MqttConnection
from rocketlite.runtime import TrioRuntime
from rocketlite.storage.memory import MemoryStore


class Client:
    def __init__(self, stream: Any, version: int) -> None:
        self.stream = stream
        self.version = version
        self.dec = C.Decoder(version=version, server=False)
        self.pending: list[Any] = []

    async def send(self, *pkts: Any) -> None:
        await self.stream.send_all(b"".join(C.encode(p, self.version) for p in pkts))

    async def recv(self, timeout: float = 5, kind: int = 0) -> Any:
        """The next packet (of type ``kind`` if given, leaving others queued); None on close."""
        with trio.fail_after(timeout):
            while True:
                for i, p in enumerate(self.pending):
                    if not kind or p.type == kind:
                        return self.pending.pop(i)
                data = await self.stream.receive_some(65536)
                if not data:
                    return None
                self.pending += self.dec.feed(data)

    async def connect(self, client_id: str, *, clean: bool = True, keep_alive: int = 60, will: C.Will | None = None,
                      props: dict[int, Any] | None = None) -> C.Connack:
        await self.send(C.Connect(client_id, self.version, clean, keep_alive, None, None, will, props or {}))
        ack = await self.recv()
        assert isinstance(ack, C.Connack)
        return ack

    async def subscribe(self, *filters: tuple[str, int], pid: int = 1, props: dict[int, Any] | None = None,
                        **opts: Any) -> C.Suback:
        await self.send(C.Subscribe(pid, [C.Subscription(f, q, **opts) for f, q in filters], props or {}))
        ack = await self.recv()
        assert isinstance(ack, C.Suback), ack
        return ack

    async def publish(self, topic: str, payload: bytes, qos: int = 0, pid: int = 1, retain: bool = False,
                      props: dict[int, Any] | None = None) -> None:
        await self.send(C.Publish(topic, payload, qos, retain, False, pid if qos else 0, props or {}))
        if qos == 1:
            ack = await self.recv(kind=C.PUBACK)
            assert ack.type == C.PUBACK and ack.packet_id == pid
        elif qos == 2:
            ack = await self.recv(kind=C.PUBREC)
            assert ack.type == C.PUBREC
            await self.send(C.Ack(C.PUBREL, pid))
            ack = await self.recv(kind=C.PUBCOMP)
            assert ack.type == C.PUBCOMP

    async def expect_publish(self) -> C.Publish:
        p = await self.recv()
        assert isinstance(p, C.Publish), p
        if p.qos == 1:
            await self.send(C.Ack(C.PUBACK, p.packet_id))
        elif p.qos == 2:
            await self.send(C.Ack(C.PUBREC, p.packet_id))
            rel = await self.recv(kind=C.PUBREL)
            assert rel.type == C.PUBREL
            await self.send(C.Ack(C.PUBCOMP, p.packet_id))
        return p

    async def close(self) -> None:
        await self.stream.aclose()


class Env:
    def __init__(self, nursery: trio.Nursery, broker: Broker, manager: MqttManager) -> None:
        self.nursery = nursery
        self.broker = broker
        self.manager = manager

    def client(self, version: int = 4) -> Client:
        a, b = trio.testing.memory_stream_pair()
        conn = MqttConnection(self.manager, "mem", b.send_all)

        async def serve() -> None:
            try:
                await conn.run(b.receive_some)
            finally:
                await b.aclose()

        self.nursery.start_soon(serve)
        return Client(a, version)


@asynccontextmanager
async def env(store: MemoryStore | None = None, **settings: Any) -> AsyncIterator[Env]:
    async with trio.open_nursery() as nursery:
        broker = Broker(store or MemoryStore(), TrioRuntime(nursery))
        await broker.start()
        manager = MqttManager(broker, MqttSettings(**settings))
        await manager.start()
        yield Env(nursery, broker, manager)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("version", [4, 5])
async def test_qos_round_trips(version):
    async with env() as e:
        sub, pub = e.client(version), e.client(version)
        assert not (await sub.connect("sub")).session_present
        assert (await sub.subscribe(("a/#", 2))).reasons == [2]
        await pub.connect("pub")
        for qos in (0, 1, 2):
            await pub.publish("a/b/c", b"m%d" % qos, qos, pid=qos + 1)
            p = await sub.expect_publish()
            assert (p.topic, p.payload, p.qos) == ("a/b/c", b"m%d" % qos, qos)


async def test_cross_protocol_both_ways():
    async with env() as e:
        sub, pub = e.client(5), e.client()
        await sub.connect("sub")
        await sub.subscribe(("a/#", 1))
        await e.broker.send([Message(topic="a", body=b"from-core", properties={"color": "red"})])
        p = await sub.expect_publish()
        assert (p.topic, p.payload, p.qos) == ("a", b"from-core", 1)
        assert ("color", "red") in p.properties[C.P_USER_PROPERTY]
        await pub.connect("pub")
        await pub.publish("a/b/c", b"to-core", 1)
        got = []
        for q in e.broker.topic_queue_ids("a"):
            got += (await e.broker.pull("a", q, 0, 32)).messages
        mine = [m for m in got if m.body == b"to-core"]
        assert len(mine) == 1 and mine[0].properties[PROP_MQTT_TOPIC] == "a/b/c"
        assert (await sub.expect_publish()).payload == b"to-core"


async def test_retained_set_clear_and_handling():
    async with env() as e:
        pub = e.client(5)
        await pub.connect("pub")
        await pub.publish("r/1", b"keep", 1, retain=True)
        await pub.publish("r/2", b"keep2", 0, retain=True)
        s = e.client(5)
        await s.connect("s")
        await s.subscribe(("r/+", 1))
        got = {(p.topic, p.payload, p.retain) for p in [await s.expect_publish(), await s.expect_publish()]}
        assert got == {("r/1", b"keep", True), ("r/2", b"keep2", True)}
        await s.subscribe(("r/1", 1), pid=2, retain_handling=2)  # 2: never send retained
        await pub.publish("r/1", b"", 1, retain=True)  # clear (still forwarded live)
        p = await s.expect_publish()
        assert p.payload == b"" and not p.retain
        s2 = e.client(5)
        await s2.connect("s2")
        await s2.subscribe(("r/#", 1))
        p = await s2.expect_publish()
        assert p.topic == "r/2"
        await s2.send(C.PingReq())
        assert (await s2.recv()).type == C.PINGRESP  # nothing else retained


async def test_will_on_abrupt_close_and_not_on_disconnect():
    async with env() as e:
        w = e.client()
        s = e.client()
        await s.connect("s")
        await s.subscribe(("will/#", 1))
        await w.connect("w", will=C.Will("will/w", b"gone", 1))
        await w.close()
        p = await s.expect_publish()
        assert (p.topic, p.payload) == ("will/w", b"gone")
        w2 = e.client()
        await w2.connect("w2", will=C.Will("will/w2", b"gone", 1))
        await w2.send(C.Disconnect())
        await s.send(C.PingReq())
        assert (await s.recv()).type == C.PINGRESP


async def test_persistent_session_offline_queue_and_restart():
    store = MemoryStore()
    async with env(store) as e:
        s = e.client()
        assert not (await s.connect("p", clean=False)).session_present
        await s.subscribe(("q/#", 2), ("x/+", 1), pid=3)
        await s.send(C.Disconnect())
        pub = e.client()
        await pub.connect("pub")
        for i in range(5):
            await pub.publish(f"q/{i}", b"%d" % i, qos=1 + i % 2, pid=i + 1)
        await pub.publish("q/zero", b"0", 0)
        s = e.client()
        assert (await s.connect("p", clean=False)).session_present
        got = [(await s.expect_publish()).payload for _ in range(5)]
        assert got == [b"0", b"1", b"2", b"3", b"4"]
        # leave one unacknowledged in flight, then "restart" (a new manager on the same store)
        await pub.publish("x/y", b"inflight", 1, pid=9)
        p = await s.recv()
        assert p.payload == b"inflight"
        await s.close()
        await pub.publish("q/after", b"after", 2, pid=10)
    async with env(store) as e:
        s = e.client()
        assert (await s.connect("p", clean=False)).session_present
        p1 = await s.expect_publish()
        assert p1.payload == b"inflight" and p1.dup
        p2 = await s.expect_publish()
        assert p2.payload == b"after"
        pub = e.client()
        await pub.connect("pub2")
        await pub.publish("q/live", b"live", 1)
        assert (await s.expect_publish()).payload == b"live"
        # clean session discards it
        await s.send(C.Disconnect())
        s = e.client()
        assert not (await s.connect("p", clean=True)).session_present


async def test_shared_subscription_round_robin():
    async with env() as e:
        a, b = e.client(5), e.client(5)
        await a.connect("a")
        await b.connect("b")
        await a.subscribe(("$share/g/s/#", 1))
        await b.subscribe(("$share/g/s/#", 1))
        pub = e.client()
        await pub.connect("pub")
        for i in range(4):
            await pub.publish("s/t", b"%d" % i, 1, pid=i + 1)
        ga = [await a.expect_publish() for _ in range(2)]
        gb = [await b.expect_publish() for _ in range(2)]
        assert sorted(p.payload for p in ga + gb) == [b"0", b"1", b"2", b"3"]


async def test_overlapping_no_local_sub_ids_and_aliases():
    async with env() as e:
        c = e.client(5)
        await c.connect("c", props={C.P_TOPIC_ALIAS_MAXIMUM: 5})
        await c.subscribe(("o/#", 2), pid=1, props={C.P_SUBSCRIPTION_ID: [7]})
        await c.subscribe(("o/+", 1), pid=2, props={C.P_SUBSCRIPTION_ID: [8]})
        await c.subscribe(("nl/#", 1), pid=3, no_local=True)
        other = e.client(5)
        await other.connect("other")
        await other.publish("o/1", b"x", 2, pid=5)
        p = await c.expect_publish()
        assert p.qos == 2 and sorted(p.properties[C.P_SUBSCRIPTION_ID]) == [7, 8]
        assert p.properties[C.P_TOPIC_ALIAS] == 1 and p.topic == "o/1"
        await other.publish("o/1", b"y", 1, pid=6)
        p = await c.expect_publish()
        assert p.topic == "" and p.properties[C.P_TOPIC_ALIAS] == 1
        await c.publish("nl/a", b"self", 1, pid=9)  # no local: not echoed
        # incoming alias: set, then use
        await c.publish("o/2", b"alias", 0, props={C.P_TOPIC_ALIAS: 3})
        await c.publish("", b"alias2", 0, props={C.P_TOPIC_ALIAS: 3})
        assert (await c.expect_publish()).payload == b"alias"
        p = await c.expect_publish()
        assert p.payload == b"alias2"


async def test_malformed_packet_closes_only_that_connection():
    async with env() as e:
        good, bad = e.client(5), e.client(5)
        await good.connect("good")
        await bad.connect("bad")
        await bad.stream.send_all(b"\x36\x04\x00\x01t\x00")  # QoS 3
        d = await bad.recv()
        assert isinstance(d, C.Disconnect) and d.reason == C.RC_MALFORMED
        assert await bad.recv() is None
        await good.send(C.PingReq())
        assert (await good.recv()).type == C.PINGRESP


async def test_keep_alive_expiry_publishes_will(autojump_clock):
    async with env() as e:
        s = e.client()
        await s.connect("s", keep_alive=0)
        await s.subscribe(("w", 0))
        w = e.client(5)
        await w.connect("w", keep_alive=2, will=C.Will("w", b"timeout"))
        with trio.fail_after(10):
            p = await s.recv(timeout=10)
        assert p.payload == b"timeout"
        d = await w.recv()
        assert isinstance(d, C.Disconnect) and d.reason == C.RC_KEEP_ALIVE_TIMEOUT


async def test_will_delay_and_session_expiry(autojump_clock):
    async with env() as e:
        s = e.client()
        await s.connect("s", keep_alive=0)
        await s.subscribe(("w", 0))
        e.nursery.start_soon(_housekeeping, e.manager)
        w = e.client(5)
        await w.connect("w", will=C.Will("w", b"late", 0, False, {C.P_WILL_DELAY: 5}),
                        props={C.P_SESSION_EXPIRY: 100})
        await w.close()
        t0 = trio.current_time()
        p = await s.recv(timeout=20)
        assert p.payload == b"late" and trio.current_time() - t0 >= 4.9
        w = e.client(5)
        assert (await w.connect("w", clean=False, props={C.P_SESSION_EXPIRY: 2})).session_present
        await w.close()
        await trio.sleep(3)
        assert "w" not in e.manager.sessions


async def _housekeeping(manager: MqttManager) -> None:
    while True:
        await trio.sleep(0.1)
        await manager.housekeeping_tick()


async def test_zero_length_client_id_assigned_v5_and_refused_v3():
    async with env() as e:
        c = e.client(5)
        ack = await c.connect("")
        assert ack.properties[C.P_ASSIGNED_CLIENT_ID]
        c3 = e.client(4)
        await c3.send(C.Connect("", 4, False))
        ack = await c3.recv()
        assert ack.reason == 2  # identifier rejected


async def test_reset_clears_state():
    async with env() as e:
        c = e.client()
        await c.connect("c", clean=False)
        await c.subscribe(("a", 1))
        await c.publish("a", b"r", 1, retain=True)
        await e.manager.reset()
        assert not e.manager.sessions and not e.manager.retained and e.manager.trie.count == 0


async def test_receive_maximum_exceeded_disconnects_v5():
    async with env(receive_maximum=3) as e:
        c = e.client(5)
        ack = await c.connect("c")
        assert ack.properties[C.P_RECEIVE_MAXIMUM] == 3
        await c.send(*[C.Publish("rm/x", b"%d" % i, 2, False, False, i + 1) for i in range(4)])
        d = await c.recv(kind=C.DISCONNECT)
        assert d.reason == C.RC_RECEIVE_MAX_EXCEEDED


async def test_garbage_after_connect_closes_only_that_connection():
    import random

    rnd = random.Random(5)
    async with env() as e:
        good = e.client(5)
        await good.connect("good")
        for i in range(60):
            version = 5 if i % 2 else 4
            bad = e.client(version)
            await bad.connect(f"bad{i}")
            junk = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 200)))
            await bad.stream.send_all(junk)
            await bad.close()
        await good.send(C.PingReq())
        assert (await good.recv()).type == C.PINGRESP
        assert list(e.manager.online) == ["good"]


async def test_sys_topics_retained_and_not_matched_by_hash():
    async with env() as e:
        c = e.client()
        await c.connect("c")
        await c.subscribe(("#", 0))
        e.manager.publish_sys()
        await c.subscribe(("$SYS/broker/clients/connected", 0), pid=2)
        p = await c.recv(kind=C.PUBLISH)
        assert p.topic == "$SYS/broker/clients/connected" and p.payload == b"1" and p.retain
        await c.send(C.PingReq())
        assert (await c.recv()).type == C.PINGRESP  # "#" got no $SYS message


async def test_batched_fan_out_mixed_subscribers_metrics_and_plan_invalidation(monkeypatch):
    """One read of several publishes is one store batch: each subscriber gets its copy in order at
    its own QoS and encoding (QoS 0 bytes shared by 3.1.1 clients), metrics count every copy, and
    the per-topic fan-out plan follows subscribe/unsubscribe."""
    from rocketlite.metrics import METRICS

    async with env() as e:
        v4a, v4b, v4q1, v5 = e.client(4), e.client(4), e.client(4), e.client(5)
        await v4a.connect("v4a")
        await v4b.connect("v4b")
        await v4q1.connect("v4q1")
        await v5.connect("v5", props={C.P_TOPIC_ALIAS_MAXIMUM: 2})
        await v4a.subscribe(("f/#", 0))
        await v4b.subscribe(("f/+", 0), ("f/#", 0))  # overlapping: one copy
        await v4q1.subscribe(("f/x", 1))
        await v5.subscribe(("f/x", 0), props={C.P_SUBSCRIPTION_ID: [3]}, retain_as_published=True)
        key = (("protocol", "mqtt"), ("topic", "f"))
        before = METRICS.counters.get("rocketlite_messages_out_total", {}).get(key, 0)
        bytes_before = METRICS.counters.get("rocketlite_bytes_out_total", {}).get(key, 0)
        sent_before = e.manager.stats["sent"]
        pub = e.client(4)
        await pub.connect("pub")
        batch = [C.Publish("f/x", b"m%d" % i, 1, i == 2, False, i + 1) for i in range(5)]
        await pub.send(*batch)  # one read, one batch
        for i in range(5):
            assert (await pub.recv(kind=C.PUBACK)).packet_id == i + 1
        for c in (v4a, v4b):
            got = [await c.expect_publish() for _ in range(5)]
            assert [(p.topic, p.payload, p.qos, p.retain) for p in got] == [("f/x", b"m%d" % i, 0, False) for i in range(5)]
        got = [await v4q1.expect_publish() for _ in range(5)]
        assert [(p.payload, p.qos) for p in got] == [(b"m%d" % i, 1) for i in range(5)]
        got = [await v5.expect_publish() for _ in range(5)]
        assert [p.payload for p in got] == [b"m%d" % i for i in range(5)]
        assert [p.retain for p in got] == [False, False, True, False, False]  # retain as published
        assert got[0].topic == "f/x" and got[1].topic == "" and all(p.properties[C.P_TOPIC_ALIAS] == 1 for p in got)
        assert all(p.properties[C.P_SUBSCRIPTION_ID] == [3] for p in got)
        assert METRICS.counters["rocketlite_messages_out_total"][key] - before == 20
        assert METRICS.counters["rocketlite_bytes_out_total"][key] - bytes_before == 20 * 2
        assert e.manager.stats["sent"] - sent_before == 20
        # the plan changes with the subscriptions
        await v4a.send(C.Unsubscribe(2, ["f/#"]))
        assert (await v4a.recv()).type == C.UNSUBACK
        await v4q1.subscribe(("f/#", 0), pid=3)  # overlapping again: still QoS 1, one copy
        p = await v4q1.expect_publish()
        assert (p.payload, p.retain) == (b"m2", True)  # the retained message, for the new filter
        await pub.publish("f/x", b"after", 1, pid=9)
        p = await v4q1.expect_publish()
        assert (p.payload, p.qos) == (b"after", 1)
        assert (await v4b.expect_publish()).payload == b"after"
        await v4a.send(C.PingReq())
        assert (await v4a.recv()).type == C.PINGRESP  # nothing for the unsubscribed client
        # a congested connection drops QoS 0 (counted as dropped), never QoS 1
        monkeypatch.setattr("rocketlite.protocols.mqtt.server.MAX_OUT_BUFFER", -1)
        dropped = e.manager.stats["dropped"]
        await pub.publish("f/x", b"busy", 1, pid=10)
        assert (await v4q1.expect_publish()).payload == b"busy"
        assert e.manager.stats["dropped"] - dropped == 2  # v4b and v5
        await v4b.send(C.PingReq())
        assert (await v4b.recv()).type == C.PINGRESP
