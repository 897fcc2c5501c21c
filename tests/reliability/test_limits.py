"""Limits and back-pressure against a real rocketlite process: free-disk floor, maximum message size per
protocol, a stalled MQTT subscriber under a QoS 0 flood (bounded memory, producers and other consumers
unaffected)."""

from __future__ import annotations

import os
import shutil
import socket
import struct
import threading
import time
from pathlib import Path

import grpc
import paho.mqtt.client as paho
import pytest
import trio

from rocketlite.core.errors import StorageFull
from rocketlite.protocols.grpc import messaging_pb2 as pb
from rocketlite.protocols.remoting.client import RemotingClient
from rocketlite.storage.base import WriteBatch
from rocketlite.core.message import Message
from rocketlite.storage.lmdb_store import LmdbStore
from tests.reliability.hostile import _mqtt_frame as _frame
from tests.reliability.hostile import _mqtt_str
from tests.support.server import RocketliteProcess

SVC = "/apache.rocketmq.v2.MessagingService/"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def remoting_send(srv: RocketliteProcess, topic: str, body: bytes):
    async def main():
        async with RemotingClient.connect(*srv.addr("remoting")) as c:
            return await c.send_message(topic, body, timeout=10)

    return trio.run(main)


def grpc_send(srv: RocketliteProcess, topic: str, body: bytes) -> pb.SendMessageResponse:
    req = pb.SendMessageRequest()
    m = req.messages.add()
    m.topic.name = topic
    m.body = body
    m.system_properties.message_id = "01LIMITS" + os.urandom(4).hex().upper()
    m.system_properties.body_encoding = pb.IDENTITY
    m.system_properties.message_type = pb.NORMAL
    with grpc.insecure_channel(srv.endpoint("grpc")) as ch:
        fn = ch.unary_unary(SVC + "SendMessage", request_serializer=lambda x: x.SerializeToString(),
                            response_deserializer=pb.SendMessageResponse.FromString)
        return fn(req, timeout=10, metadata=[("x-mq-client-id", "limits-test")])


def mqtt_client(srv: RocketliteProcess, cid: str, version: int = paho.MQTTv5) -> tuple[paho.Client, threading.Event]:
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=cid, protocol=version)
    gone = threading.Event()
    c.on_disconnect = lambda *a: gone.set()
    c.connect(*srv.addr("mqtt"), keepalive=30)
    c.loop_start()
    return c, gone


async def test_lmdb_store_refuses_writes_below_the_free_disk_floor(tmp_path):
    free_mb = shutil.disk_usage(tmp_path).free // (1024 * 1024)
    store = LmdbStore(tmp_path / "db", min_free_disk_mb=free_mb + 100_000)
    await store.open()
    try:
        with pytest.raises(StorageFull, match="MB free"):
            await store.write(WriteBatch(messages=[Message(topic="T", body=b"x")]))
        assert store.commit_log_max() == 0
    finally:
        await store.close()


def test_server_refuses_writes_below_the_free_disk_floor_on_every_protocol(tmp_path):
    free_mb = shutil.disk_usage(tmp_path).free // (1024 * 1024)
    with RocketliteProcess(tmp_path / "data", extra_args=["--set", f"storage.min_free_disk_mb={free_mb + 100_000}"]) as srv:
        r = remoting_send(srv, "DiskT", b"x")
        assert r.code != 0 and "MB free" in r.remark, (r.code, r.remark)
        g = grpc_send(srv, "DiskG", b"x")
        assert g.status.code != pb.OK and "MB free" in g.status.message, g.status
        # MQTT 5: PUBACK with a failure reason code; the connection may stay
        c, _ = mqtt_client(srv, "disk-pub")
        try:
            info = c.publish("disk/t", b"x", qos=1)
            info.wait_for_publish(10)
        except (RuntimeError, ValueError):
            pass
        finally:
            c.disconnect()
            c.loop_stop()
        # the broker is still up and answers reads
        assert srv.proc is not None and srv.proc.poll() is None
        with socket.create_connection(srv.addr("http"), timeout=5) as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")


def test_maximum_message_size_per_protocol(tmp_path):
    args = ["--set", "broker.max_message_size=2048", "--set", "mqtt.max_packet_size=4096"]
    with RocketliteProcess(tmp_path / "data", extra_args=args) as srv:
        assert remoting_send(srv, "SizeT", b"x" * 2048).code == 0
        r = remoting_send(srv, "SizeT", b"x" * 2049)
        assert r.code == 13, (r.code, r.remark)  # MESSAGE_ILLEGAL
        assert grpc_send(srv, "SizeG", b"x" * 100).status.code == pb.OK
        g = grpc_send(srv, "SizeG", b"x" * 3000)
        assert g.status.code == pb.MESSAGE_BODY_TOO_LARGE, g.status
        # MQTT: a packet over max_packet_size closes the connection (5: after DISCONNECT 0x95)
        c, gone = mqtt_client(srv, "size-pub")
        try:
            c.publish("size/t", b"x" * 8000, qos=0)
            assert gone.wait(10), "oversized MQTT packet did not end the connection"
        finally:
            c.loop_stop()
        # and a normal client is unaffected
        c2, gone2 = mqtt_client(srv, "size-ok")
        try:
            info = c2.publish("size/t", b"x" * 100, qos=1)
            info.wait_for_publish(10)
            assert info.is_published() and not gone2.is_set()
        finally:
            c2.disconnect()
            c2.loop_stop()


def raw_mqtt(srv: RocketliteProcess, cid: str) -> socket.socket:
    s = socket.create_connection(srv.addr("mqtt"), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(_frame(0x10, _mqtt_str("MQTT") + bytes((4, 0x02)) + struct.pack(">H", 600) + _mqtt_str(cid)))
    assert s.recv(4)[:1] == b"\x20"
    return s


def test_stalled_qos0_subscriber_bounds_memory_and_blocks_no_one(tmp_path):
    with RocketliteProcess(tmp_path / "data") as srv:
        assert srv.proc is not None
        stalled = raw_mqtt(srv, "stalled")
        stalled.sendall(_frame(0x82, struct.pack(">H", 1) + _mqtt_str("flood/#") + b"\x00"))
        time.sleep(0)  # the SUBACK stays unread: from now on this subscriber reads nothing
        healthy, _ = mqtt_client(srv, "healthy", paho.MQTTv311)
        got = []
        subscribed = threading.Event()
        healthy.on_subscribe = lambda *a: subscribed.set()
        healthy.on_message = lambda c, u, m: got.append(len(m.payload))
        healthy.subscribe("flood/#", qos=0)
        assert subscribed.wait(10)
        base = rss_mb(srv.proc.pid)
        payload = b"p" * 1024
        flood = raw_mqtt(srv, "flooder")
        pkt = _frame(0x30, _mqtt_str("flood/a") + payload)
        total = 40_000  # 40 MB of QoS 0 towards a subscriber that reads nothing
        latencies: list[float] = []

        async def producer() -> None:
            async with RemotingClient.connect(*srv.addr("remoting")) as c:
                for i in range(20):
                    t0 = time.monotonic()
                    r = await c.send_message("FloodSideT", b"side", timeout=20)
                    assert r.code == 0
                    latencies.append(time.monotonic() - t0)

        def flood_all() -> None:
            for _ in range(total // 500):
                flood.sendall(pkt * 500)

        t = threading.Thread(target=flood_all)
        t.start()
        trio.run(producer)
        t.join(120)
        assert not t.is_alive(), "the flooding publisher was blocked"
        # drain: the healthy subscriber keeps receiving; the broker's memory stays bounded
        deadline = time.monotonic() + 60
        while len(got) < total and time.monotonic() < deadline:
            time.sleep(0.2)
        peak = rss_mb(srv.proc.pid)
        healthy.disconnect()
        healthy.loop_stop()
        stalled.close()
        flood.close()
        assert srv.proc.poll() is None
        print(f"flood: RSS {base:.0f} -> {peak:.0f} MB, healthy got {len(got)}/{total}, "
              f"side producer max latency {max(latencies):.3f}s")
        assert len(got) > total // 2, f"healthy subscriber got only {len(got)} of {total}"
        assert max(latencies) < 10, latencies
        # 40 MB flowed through; the stalled subscriber's buffer is capped (16 MB) so RSS grows far less
        assert peak - base < 120, f"RSS grew from {base:.0f} to {peak:.0f} MB"


def test_max_connections_caps_every_protocol_together(tmp_path):
    with RocketliteProcess(tmp_path / "data", extra_args=["--set", "server.max_connections=3"]) as srv:
        held = [raw_mqtt(srv, f"cap-{i}") for i in range(2)]
        g = socket.create_connection(srv.addr("grpc"), timeout=10)  # the third, on another protocol
        g.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        assert g.recv(9)[3:4] == b"\x04"  # server SETTINGS: the connection is being served
        extra = socket.create_connection(srv.addr("mqtt"), timeout=10)
        extra.sendall(_frame(0x10, _mqtt_str("MQTT") + bytes((4, 2)) + struct.pack(">H", 30) + _mqtt_str("cap-x")))
        try:
            assert extra.recv(4) == b""  # closed without CONNACK
        except ConnectionResetError:
            pass
        extra.close()
        r = socket.create_connection(srv.addr("remoting"), timeout=10)
        try:
            assert r.recv(4) == b""
        except ConnectionResetError:
            pass
        r.close()
        h = socket.create_connection(srv.addr("http"), timeout=10)  # HTTP and WebSocket count too
        try:
            h.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert h.recv(64) == b""
        except (ConnectionResetError, BrokenPipeError):
            pass
        h.close()
        held.pop().close()
        g.close()
        deadline = time.monotonic() + 10
        while True:  # once the server noticed the closes, new connections are served again
            try:
                assert remoting_send(srv, "CapT", b"x").code == 0
                break
            except (ConnectionError, OSError, trio.TooSlowError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        for s in held:
            s.close()
