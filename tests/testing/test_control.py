"""The opt-in test-control endpoint and the external-broker spec."""

from __future__ import annotations

import http.client
import json
from typing import Any, Iterator

import pytest

from rocketlite.testing import ControlUnavailable, ExternalRocketlite, RocketliteServer, parse_external


@pytest.fixture(scope="module")
def server() -> Iterator[RocketliteServer]:
    with RocketliteServer(protocols=("remoting", "testing")) as srv:
        yield srv


@pytest.fixture
def ext(server: RocketliteServer) -> ExternalRocketlite:
    e = ExternalRocketlite(dict(server.addresses)).start()
    e.reset()
    return e


def raw(server: RocketliteServer, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    host, port = server.address("testing")
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_send_peek_receive_reset_over_http(ext: ExternalRocketlite, server: RocketliteServer) -> None:
    r = ext.send("orders", b"\x00binary", tags="t", keys=["a", "b"], properties={"p": "1"})
    (m,) = ext.peek("orders")
    assert (m.body, m.tags, m.keys, m.properties["p"], m.unique_id) == (b"\x00binary", "t", "a b", "1", r.unique_id)
    assert server.peek("orders") == [m]  # the same broker, seen in-process
    assert [x.body for x in ext.receive("orders", group="g")] == [b"\x00binary"]
    assert ext.receive("orders", group="g", timeout=0.05) == []
    text = ext.describe()
    assert "orders: 4 queues, 1 messages" in text and "g: " in text
    ext.reset()
    assert ext.peek("orders") == [] and server.peek("orders") == []


def test_seed_over_http(ext: ExternalRocketlite, tmp_path: Any) -> None:
    f = tmp_path / "s.toml"
    f.write_text('[topics.a]\nqueues = 3\n[[messages]]\ntopic = "a"\nbody = "x"\n')
    assert ext.seed(f) == {"topics": 1, "groups": 0, "messages": 1}
    assert ext.snapshot().topics["a"]["queues"] == 3
    with pytest.raises(ValueError, match="unknown option"):
        ext.seed({"topics": {"b": {"nope": 1}}})


def test_advertise_updates_remoting_routes(ext: ExternalRocketlite, server: RocketliteServer) -> None:
    before = server.call(_adv, server)
    try:
        assert ext.advertise("10.1.2.3", 32768) == "10.1.2.3:32768"
        assert server.call(_adv, server) == "10.1.2.3:32768"
    finally:
        host, port = before.rsplit(":", 1)
        ext.advertise(host, int(port))


async def _adv(server: RocketliteServer) -> str:
    return str(server.app.ctx.services["remoting"].service.adv.addr)  # type: ignore[union-attr]


def test_bad_requests_get_clear_errors(server: RocketliteServer) -> None:
    assert raw(server, "GET", "/nope") == (404, {"error": "no such path /nope; try GET /"})
    assert raw(server, "GET", "/reset")[0] == 405
    status, body = raw(server, "POST", "/send", b"{not json")
    assert status == 400 and "not JSON" in body["error"]
    status, body = raw(server, "POST", "/send", json.dumps({"topic": "a", "colour": 1}).encode())
    assert status == 400 and "colour" in body["error"]
    status, body = raw(server, "POST", "/send", json.dumps({"topic": "bad topic!"}).encode())
    assert status == 400 and "invalid topic name" in body["error"]
    assert raw(server, "GET", "/peek")[0] == 400
    status, body = raw(server, "GET", "/")
    assert status == 200 and "testing" in body["listeners"]


def test_garbage_bytes_close_the_connection(server: RocketliteServer) -> None:
    import socket

    host, port = server.address("testing")
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"\x16\x03\x01garbage\r\n\r\n")
        data = s.recv(65536)
        assert data.startswith(b"HTTP/1.1 400")
    assert raw(server, "GET", "/")[0] == 200  # still serving


def test_external_without_control_says_how_to_enable_it() -> None:
    e = ExternalRocketlite("127.0.0.1:remoting=9876")
    with pytest.raises(ControlUnavailable, match="testing.enabled=true"):
        e.reset()


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("READY remoting=127.0.0.1:1 grpc=127.0.0.1:2 testing=127.0.0.1:3",
         {"remoting": ("127.0.0.1", 1), "grpc": ("127.0.0.1", 2), "testing": ("127.0.0.1", 3)}),
        ("remoting=h:1,mqtt=h:2", {"remoting": ("h", 1), "mqtt": ("h", 2)}),
        ("box:remoting=1,testing=5", {"remoting": ("box", 1), "testing": ("box", 5)}),
        ("box:1,2,3", {"remoting": ("box", 1), "grpc": ("box", 2), "mqtt": ("box", 3)}),
        ("box", {"remoting": ("box", 9876), "grpc": ("box", 8081), "mqtt": ("box", 1883), "http": ("box", 8080),
                 "testing": ("box", 9877)}),
    ],
)
def test_parse_external(spec: str, expected: dict[str, tuple[str, int]]) -> None:
    assert parse_external(spec) == expected


@pytest.mark.parametrize("spec", ["", "box:x", "box:1,2,3,4,5,6"])
def test_parse_external_rejects(spec: str) -> None:
    with pytest.raises(ValueError, match="rocketlite external spec"):
        parse_external(spec)
