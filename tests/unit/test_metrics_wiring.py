"""Front-ends and the store report to /metrics: a real process, remoting and gRPC traffic, one scrape.

Remoting is driven by our own Trio client (SEND_MESSAGE_V2 / V1, PULL, POP), gRPC by grpcio
(SendMessage, ReceiveMessage); the scrape is parsed by prometheus_client's text parser.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio

from rocketlite.core.message import Message
from rocketlite.protocols.grpc import messaging_pb2 as pb
from rocketlite.protocols.remoting.client import RemotingClient
from rocketlite.protocols.remoting.codec import decode_records
from rocketlite.storage.base import WriteBatch
from rocketlite.storage.lmdb_store import LmdbStore
from tests.support.server import RocketliteProcess

SVC = "/apache.rocketmq.v2.MessagingService/"
META = (("x-mq-client-id", "metrics-test@1@0@abc"), ("x-mq-language", "PYTHON"))


def scrape(srv: RocketliteProcess) -> dict[str, Any]:
    parser = pytest.importorskip("prometheus_client.parser")
    host, port = srv.addr("http")
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    for s in families[family].samples:
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
            return float(s.value)
    raise AssertionError(f"no {sample}{labels} in {families[family].samples}")


async def remoting_traffic(srv: RocketliteProcess) -> dict[str, Any]:
    """Send 3 to mw-r and pull them, send 2 to mw-p and pop them; scrape while still connected."""
    host, port = srv.addr("remoting")
    async with RemotingClient.connect(host, port) as c:
        assert (await c.send_message("mw-r", b"one", queue_id=0)).code == 0
        assert (await c.send_message("mw-r", b"two!", queue_id=0)).code == 0
        assert (await c.send_message("mw-r", b"three", queue_id=0, v2=False)).code == 0
        pull = dict(consumerGroup="mw-g", topic="mw-r", queueId=0, queueOffset=0, maxMsgNums=32, sysFlag=4,
                    commitOffset=0, suspendTimeoutMillis=0, subVersion=0)
        r = await c.request(11, pull, subscription="*")
        assert r.code == 0 and [x.body for x in decode_records(r.body)] == [b"one", b"two!", b"three"]
        for body in (b"p0", b"p11"):
            assert (await c.send_message("mw-p", body, queue_id=0)).code == 0
        pop = dict(consumerGroup="mw-pg", topic="mw-p", queueId=-1, maxMsgNums=8, invisibleTime=60_000,
                   pollTime=0, bornTime=0, initMode=0)
        r = await c.request(200050, pop)
        assert r.code == 0 and sorted(x.body for x in decode_records(r.body)) == [b"p0", b"p11"]
        return await trio.to_thread.run_sync(scrape, srv)


def grpc_traffic(srv: RocketliteProcess) -> dict[str, Any]:
    """Send 2 to mw-grpc with SendMessage, receive them; scrape while the channel is open."""
    grpc = pytest.importorskip("grpc")
    host, port = srv.addr("grpc")
    with grpc.insecure_channel(f"{host}:{port}") as ch:
        send = ch.unary_unary(SVC + "SendMessage", request_serializer=lambda m: m.SerializeToString(),
                              response_deserializer=pb.SendMessageResponse.FromString)
        for i, body in enumerate((b"g-one", b"g-second")):
            req = pb.SendMessageRequest()
            m = req.messages.add(body=body)
            m.topic.name = "mw-grpc"
            m.system_properties.message_id = f"01METRICS{i}"
            resp = send(req, timeout=10, metadata=META)
            assert resp.status.code == pb.OK
        receive = ch.unary_stream(SVC + "ReceiveMessage", request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=pb.ReceiveMessageResponse.FromString)
        req = pb.ReceiveMessageRequest(batch_size=32)
        req.group.name = "mw-grpc-g"
        req.message_queue.topic.name = "mw-grpc"
        req.filter_expression.type = pb.TAG
        req.filter_expression.expression = "*"
        req.invisible_duration.seconds = 30
        req.long_polling_timeout.seconds = 1
        got = [x.message.body for x in receive(req, timeout=10, metadata=META) if x.HasField("message")]
        assert sorted(got) == [b"g-one", b"g-second"]
        return scrape(srv)


def test_protocol_counters_connections_and_commit_histograms(tmp_path: Path) -> None:
    with RocketliteProcess(tmp_path / "data", extra_args=["--disable", "mqtt"]) as srv:
        during_grpc = grpc_traffic(srv)
        during_remoting = trio.run(remoting_traffic, srv)

    assert value(during_grpc, "rocketlite_connections", "rocketlite_connections", protocol="grpc") >= 1
    assert value(during_remoting, "rocketlite_connections", "rocketlite_connections", protocol="remoting") >= 1
    f = during_remoting  # the later scrape holds everything
    for proto in ("grpc", "remoting"):
        assert value(f, "rocketlite_connections_opened", "rocketlite_connections_opened_total", protocol=proto) >= 1

    def counter(name: str, proto: str, topic: str) -> float:
        return value(f, name, name + "_total", protocol=proto, topic=topic)

    assert counter("rocketlite_messages_in", "remoting", "mw-r") == 3
    assert counter("rocketlite_bytes_in", "remoting", "mw-r") == len(b"one" b"two!" b"three")
    assert counter("rocketlite_messages_out", "remoting", "mw-r") == 3
    assert counter("rocketlite_bytes_out", "remoting", "mw-r") == len(b"one" b"two!" b"three")
    assert counter("rocketlite_messages_in", "remoting", "mw-p") == 2
    assert counter("rocketlite_messages_out", "remoting", "mw-p") == 2
    assert counter("rocketlite_bytes_out", "remoting", "mw-p") == len(b"p0" b"p11")
    assert counter("rocketlite_messages_in", "grpc", "mw-grpc") == 2
    assert counter("rocketlite_bytes_in", "grpc", "mw-grpc") == len(b"g-one" b"g-second")
    assert counter("rocketlite_messages_out", "grpc", "mw-grpc") == 2
    assert counter("rocketlite_bytes_out", "grpc", "mw-grpc") == len(b"g-one" b"g-second")

    # every send above is at least one write batch, merged into LMDB transactions
    commits = value(f, "rocketlite_store_commit_seconds", "rocketlite_store_commit_seconds_count")
    assert commits >= 1
    assert value(f, "rocketlite_store_commit_seconds", "rocketlite_store_commit_seconds_sum") > 0
    assert value(f, "rocketlite_store_commit_batch_size", "rocketlite_store_commit_batch_size_count") == commits
    assert value(f, "rocketlite_store_commit_batch_size", "rocketlite_store_commit_batch_size_sum") >= 7
    assert value(f, "rocketlite_store_commit_batch_size", "rocketlite_store_commit_batch_size_bucket",
                 le="+Inf") == commits
    assert "rocketlite_store_fsyncs" in f


async def test_lmdb_commit_hook_reports_batches_and_seconds(tmp_path: Path) -> None:
    store = LmdbStore(tmp_path, flush="sync")
    seen: list[tuple[int, float]] = []
    store.commit_hook = lambda n, s: seen.append((n, s))
    await store.open()
    try:
        async with trio.open_nursery() as nursery:  # four writers at once: group commit merges them
            for i in range(4):
                nursery.start_soon(store.write, WriteBatch([Message(topic="H", body=b"x" * i, queue_id=0)]))
        await store.write(WriteBatch([Message(topic="H", body=b"y", queue_id=0)]))
    finally:
        await store.close()
    assert sum(n for n, _ in seen) == 5 and all(s > 0 for _, s in seen)
    assert len(seen) == store.stats()["commits"]

    broken = LmdbStore(tmp_path / "b")

    def boom(n: int, s: float) -> None:
        raise RuntimeError("a broken hook must not fail writes")

    broken.commit_hook = boom
    await broken.open()
    try:
        res = await broken.write(WriteBatch([Message(topic="H", body=b"z", queue_id=0)]))
        assert res[0].queue_offset == 0
    finally:
        await broken.close()


def test_mqtt_reports_connections_and_messages(tmp_path: Path) -> None:
    """paho publishes to mw/a/b (RocketMQ topic mw) and receives it back; the scrape shows it."""
    mqtt = pytest.importorskip("paho.mqtt.client")
    import queue

    with RocketliteProcess(tmp_path / "d") as srv:
        host, port = srv.addr("mqtt")
        got: "queue.Queue[bytes]" = queue.Queue()
        subscribed: "queue.Queue[int]" = queue.Queue()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="metrics-mqtt")
        c.on_message = lambda _c, _u, msg: got.put(msg.payload)
        c.on_subscribe = lambda *_a: subscribed.put(1)
        c.connect(host, port)
        c.loop_start()
        try:
            c.subscribe("mw/#", qos=1)
            subscribed.get(timeout=10)
            c.publish("mw/a/b", b"hello", qos=1).wait_for_publish(10)
            assert got.get(timeout=10) == b"hello"
            fams = scrape(srv)
        finally:
            c.loop_stop()
            c.disconnect()
    assert value(fams, "rocketlite_connections", "rocketlite_connections", protocol="mqtt") >= 1
    assert value(fams, "rocketlite_messages_in", "rocketlite_messages_in_total", protocol="mqtt", topic="mw") == 1
    assert value(fams, "rocketlite_messages_out", "rocketlite_messages_out_total", protocol="mqtt", topic="mw") == 1
    assert value(fams, "rocketlite_bytes_in", "rocketlite_bytes_in_total", protocol="mqtt", topic="mw") == 5
