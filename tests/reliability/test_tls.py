"""TLS on remoting, MQTT (sniffed on the plain port and on tls_port), HTTPS and WSS, gRPC (sniffed)."""

from __future__ import annotations

import socket
import ssl
import struct
import threading

import paho.mqtt.client as paho
import pytest
import trio

from rocketlite.protocols.remoting.client import RemotingClient
from rocketlite.security.tls import self_signed_files
from tests.support.server import RocketliteProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    cert, key, tmp = self_signed_files()
    (d / "cert.pem").write_bytes(open(cert, "rb").read())
    (d / "key.pem").write_bytes(open(key, "rb").read())
    tmp.cleanup()
    mqtts = free_port()
    srv = RocketliteProcess(d / "data", extra_args=[
        "--set", "remoting.tls=true", "--set", "mqtt.tls=true", "--set", f"mqtt.tls_port={mqtts}",
        "--set", "http.tls=true", "--set", f"security.tls_cert_file={d / 'cert.pem'}",
        "--set", f"security.tls_key_file={d / 'key.pem'}"])
    srv.start()
    srv.mqtts_port = mqtts  # type: ignore[attr-defined]
    srv.cafile = str(d / "cert.pem")  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        srv.stop()


def client_ctx(srv) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=srv.cafile)
    ctx.check_hostname = False  # the self-signed test certificate names "rocketlite"
    return ctx


def test_remoting_over_tls_and_plaintext_on_one_port(tls_server):
    async def send(tls: bool) -> int:
        stream = await trio.open_tcp_stream(*tls_server.addr("remoting"))
        if tls:
            stream = trio.SSLStream(stream, client_ctx(tls_server), server_hostname="rocketlite")
            await stream.do_handshake()
        c = RemotingClient(stream)
        async with trio.open_nursery() as n:
            n.start_soon(c._reader)
            r = await c.send_message("TlsT", b"over-tls" if tls else b"plain", timeout=10)
            n.cancel_scope.cancel()
        await stream.aclose()
        return r.code

    assert trio.run(send, True) == 0
    assert trio.run(send, False) == 0


def paho_tls_round_trip(c, tls_server, host, port, topic, payload):
    """Subscribe and publish at QoS 1 over TLS with paho client ``c``; the message comes back."""
    got, ev = [], threading.Event()
    c.tls_set_context(client_ctx(tls_server))
    c.tls_insecure_set(True)
    c.on_message = lambda cl, u, m: (got.append(m.payload), ev.set())
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect(host, port, keepalive=30)
    c.loop_start()
    try:
        c.subscribe(topic, qos=1)
        assert subscribed.wait(10)
        c.publish(topic, payload, qos=1).wait_for_publish(10)
        assert ev.wait(10) and got == [payload]
    finally:
        c.disconnect()
        c.loop_stop()


@pytest.mark.parametrize("port_kind", ["main", "tls_port"])
def test_mqtt_over_tls_with_paho(tls_server, port_kind):
    host, port = tls_server.addr("mqtt")
    if port_kind == "tls_port":
        port = tls_server.mqtts_port
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"tls-{port_kind}")
    paho_tls_round_trip(c, tls_server, host, port, "tls/t", b"secret")


def test_https_and_wss(tls_server):
    host, port = tls_server.addr("http")
    with socket.create_connection((host, port), timeout=10) as raw:
        with client_ctx(tls_server).wrap_socket(raw, server_hostname="rocketlite") as s:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.1 200")
    # MQTT over WSS with paho's websocket transport
    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="wss-1", transport="websockets")
    c.ws_set_options(path="/mqtt")
    paho_tls_round_trip(c, tls_server, host, port, "wss/t", b"via-wss")


def test_plain_http_is_refused_on_the_https_port(tls_server):
    with socket.create_connection(tls_server.addr("http"), timeout=10) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            data = s.recv(100)
        except OSError:
            data = b""
        assert not data.startswith(b"HTTP/1.1 200")


def test_mqtt_plain_connect_still_works_with_tls_enabled(tls_server):
    with socket.create_connection(tls_server.addr("mqtt"), timeout=10) as s:
        body = struct.pack(">H", 4) + b"MQTT" + bytes((4, 2)) + struct.pack(">H", 30) + struct.pack(">H", 5) + b"plain"
        s.sendall(bytes((0x10, len(body))) + body)
        assert s.recv(4) == b"\x20\x02\x00\x00"
