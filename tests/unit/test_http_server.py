"""The HTTP/1.1 + WebSocket adapter (rocketlite/protocols/http/server.py) and the sans-IO
WebSocket codec, in process over memory streams (real clients: tests/reliability/test_tls.py,
tests/interop/test_mqtt_amqtt.py, test_mqtt_mqttjs.py)."""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from rocketlite.protocols.http import websocket as ws
from rocketlite.protocols.http.server import HttpConnection


def client_frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = None) -> bytes:
    mask = b"\x37\xfa\x21\x3d" if mask is None else mask  # fixed: parametrize ids must match across xdist workers
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while data:
        b0, b1 = data[0], data[1]
        n, pos = b1 & 0x7F, 2
        if n == 126:
            n, pos = struct.unpack_from("!H", data, 2)[0], 4
        elif n == 127:
            n, pos = struct.unpack_from("!Q", data, 2)[0], 10
        assert not b1 & 0x80, "server frames are not masked"
        out.append((b0 & 0x0F, data[pos:pos + n]))
        data = data[pos + n:]
    return out


# -- the WebSocket codec ------------------------------------------------------------------------

def test_accept_key_of_rfc6455_example() -> None:
    assert ws.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.binary(max_size=300)), min_size=1, max_size=6),
       st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_decoder_reassembles_fragments_split_anywhere(parts: list[tuple[bool, bytes]], cuts: list[int]) -> None:
    wire = client_frame(ws.PING, b"p")
    for i, (_, chunk) in enumerate(parts):
        wire += client_frame(ws.BINARY if i == 0 else ws.CONT, chunk, fin=i == len(parts) - 1)
        if i == 0 and len(parts) > 1:
            wire += client_frame(ws.PING, b"q")  # control frames may sit between fragments
    dec = ws.WsDecoder()
    events: list[Any] = []
    pos = 0
    for cut in cuts * (len(wire) // max(1, sum(cuts)) + 1):
        events += dec.feed(wire[pos:pos + cut])
        pos += cut
        if pos >= len(wire):
            break
    events += dec.feed(wire[pos:])
    assert isinstance(events[0], ws.Ping) and events[0].payload == b"p"
    assert [type(e) for e in events[1:]] == [ws.Ping] * (len(parts) > 1) + [ws.Message]
    assert events[-1].data == b"".join(c for _, c in parts)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_decoder_fuzz_raises_only_ws_errors(data: bytes) -> None:
    dec = ws.WsDecoder(max_message=1000)
    try:
        for ev in dec.feed(data):
            assert isinstance(ev, (ws.Message, ws.Ping, ws.Pong, ws.Close))
    except ws.WsError as exc:
        assert exc.code in (ws.PROTOCOL_ERROR, ws.BAD_DATA, ws.TOO_BIG)


@pytest.mark.parametrize("wire, code", [
    (b"\x82\x05hello", ws.PROTOCOL_ERROR),  # not masked
    (client_frame(ws.BINARY, b"x")[:0] + bytes([0xC2]) + client_frame(ws.BINARY, b"x")[1:], ws.PROTOCOL_ERROR),
    (client_frame(ws.PING, b"x" * 126), ws.PROTOCOL_ERROR),
    (client_frame(ws.PING, b"x", fin=False), ws.PROTOCOL_ERROR),
    (client_frame(ws.CONT, b"x"), ws.PROTOCOL_ERROR),
    (client_frame(0x3, b"x"), ws.PROTOCOL_ERROR),
    (client_frame(ws.TEXT, b"\xff\xfe"), ws.BAD_DATA),
    (client_frame(ws.CLOSE, b"\x03"), ws.PROTOCOL_ERROR),
    (client_frame(ws.CLOSE, struct.pack("!H", 1005)), ws.PROTOCOL_ERROR),
    (bytes([0x82, 0xFF]) + struct.pack("!Q", 1 << 40) + b"mask", ws.TOO_BIG),
])
def test_decoder_rejects(wire: bytes, code: int) -> None:
    with pytest.raises(ws.WsError) as info:
        ws.WsDecoder(max_message=1 << 20).feed(wire)
    assert info.value.code == code


def test_decoder_text_close_and_large_frames() -> None:
    dec = ws.WsDecoder()
    big = os.urandom(70000)
    evs = dec.feed(client_frame(ws.TEXT, "héllo".encode()) + client_frame(ws.BINARY, big)
                   + client_frame(ws.CLOSE, struct.pack("!H", 1001) + b"bye"))
    assert evs[0].data == "héllo" and evs[1].data == big
    assert isinstance(evs[2], ws.Close) and (evs[2].code, evs[2].reason) == (1001, "bye")
    assert server_frames(ws.encode_frame(ws.BINARY, big)) == [(ws.BINARY, big)]
    assert server_frames(ws.close_frame(1000, "ok")) == [(ws.CLOSE, b"\x03\xe8ok")]


# -- the HTTP/1.1 and WebSocket adapter ---------------------------------------------------------

async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        if scope["path"] != "/ws":
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept", "subprotocol": scope["subprotocols"][0]})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") == "bye":
                await send({"type": "websocket.close", "code": 1000})
                return
            await send({"type": "websocket.send", "bytes": msg.get("bytes") or msg["text"].encode()})
    if scope["path"] == "/boom":
        raise RuntimeError("boom")
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    out = f"{scope['method']} {scope['path']} {scope['query_string'].decode()} ".encode() + body
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


async def exchange(request: bytes, until: bytes, *, more: bytes = b"") -> tuple[bytes, Any, Any]:
    client, server = trio.testing.memory_stream_pair()
    conn = HttpConnection(server, echo_app, ("127.0.0.1", 1), ("127.0.0.1", 2), "http")
    got = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await client.send_all(request)
        with trio.fail_after(5):
            while until not in got:
                data = await client.receive_some(65536)
                assert data, got
                got += data
            if more:
                await client.send_all(more)
        nursery.cancel_scope.cancel()
    return got, client, conn


async def test_keep_alive_pipelined_requests_and_bodies() -> None:
    req = (b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\n\r\n"
           b"POST /b%20c HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
           b"POST /d HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    got, _, _ = await exchange(req, b"POST /d  abc")
    assert got.count(b"HTTP/1.1 200") == 3
    assert b"GET /a x=1 " in got and b"POST /b c  hello" in got


async def test_expect_100_continue() -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = HttpConnection(server, echo_app, ("127.0.0.1", 1), ("127.0.0.1", 2), "http")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        await client.send_all(b"POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        got = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in got:
                got += await client.receive_some(65536)
            assert got.startswith(b"HTTP/1.1 100 ")
            await client.send_all(b"body")
            while b"POST /big  body" not in got:
                got += await client.receive_some(65536)
        nursery.cancel_scope.cancel()


async def test_bad_request_answers_400_and_app_error_500() -> None:
    got, _, _ = await exchange(b"NOT HTTP AT ALL\r\n\r\n", b"\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 400")
    got, _, _ = await exchange(b"GET /boom HTTP/1.1\r\nHost: h\r\n\r\n", b"internal error")
    assert got.startswith(b"HTTP/1.1 500")


@pytest.mark.parametrize("partial", [b"GET /slow HTTP/1.1\r\nHost: h\r\n",  # headers never end
                                     b"POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\nabc"])
async def test_a_request_that_stops_half_way_is_closed_after_the_keep_alive_time(
        partial: bytes, autojump_clock: trio.abc.Clock) -> None:
    from rocketlite.protocols.http.server import KEEP_ALIVE_S

    client, server = trio.testing.memory_stream_pair()
    conn = HttpConnection(server, echo_app, ("127.0.0.1", 1), ("127.0.0.1", 2), "http")
    t0 = trio.current_time()
    await client.send_all(partial)
    try:  # run() ends (headers) or raises TooSlowError (body): either way the handler closes the stream
        await conn.run()
    except trio.TooSlowError:
        pass
    assert KEEP_ALIVE_S <= trio.current_time() - t0 < 2 * KEEP_ALIVE_S


async def test_a_cut_off_body_is_a_disconnect_for_the_app_and_a_400() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            msg = await receive()
            seen.append(msg)
            if msg["type"] == "http.disconnect" or not msg.get("more_body"):
                return

    client, server = trio.testing.memory_stream_pair()
    conn = HttpConnection(server, app, ("127.0.0.1", 1), ("127.0.0.1", 2), "http")
    await client.send_all(b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY")
    with trio.fail_after(5):
        await conn.run()  # ends the connection quietly
    await server.aclose()  # as the front-end's handler does
    assert seen[-1] == {"type": "http.disconnect"}
    got = b""
    while True:
        data = await client.receive_some(65536)
        if not data:
            break
        got += data
    assert got.startswith(b"HTTP/1.1 400")


def upgrade(path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Protocol: mqtt, other\r\n\r\n").encode()


async def test_websocket_echo_ping_fragments_and_close() -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = HttpConnection(server, echo_app, ("127.0.0.1", 1), ("127.0.0.1", 2), "http")

    async def read_until(n_frames: int, buf: bytes) -> tuple[bytes, list[tuple[int, bytes]]]:
        with trio.fail_after(5):
            while True:
                head, sep, rest = buf.partition(b"\r\n\r\n")
                if sep:
                    try:
                        frames = server_frames(rest)
                    except (IndexError, struct.error):
                        frames = []
                    if len(frames) >= n_frames and sum(len(p) for _, p in frames) <= len(rest):
                        return head, frames
                buf += await client.receive_some(65536)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.run)
        # the first frame arrives in the same segment as the upgrade request
        await client.send_all(upgrade("/ws") + client_frame(ws.BINARY, b"one"))
        await client.send_all(client_frame(ws.TEXT, b"tw", fin=False) + client_frame(ws.PING, b"hi")
                              + client_frame(ws.CONT, b"o"))
        head, frames = await read_until(3, b"")
        assert head.startswith(b"HTTP/1.1 101")
        assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
        assert b"Sec-WebSocket-Protocol: mqtt" in head
        # the pong is the reader's, the echoes the app's: their order is not fixed
        assert sorted(frames[:3]) == [(ws.BINARY, b"one"), (ws.BINARY, b"two"), (ws.PONG, b"hi")]
        await client.send_all(client_frame(ws.TEXT, b"bye"))
        with trio.fail_after(5):
            rest = b""
            while b"\x88\x02\x03\xe8" not in rest:  # the close frame, code 1000
                rest += await client.receive_some(65536)
        assert server_frames(rest) == [(ws.CLOSE, b"\x03\xe8")]
        nursery.cancel_scope.cancel()


async def test_websocket_unknown_route_403_and_protocol_error_closes_1002() -> None:
    got, _, _ = await exchange(upgrade("/nope"), b"\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 403")
    got, _, _ = await exchange(upgrade("/ws") + b"\x82\x01x", b"\x03\xea")  # unmasked frame -> close 1002
    assert got.startswith(b"HTTP/1.1 101")
