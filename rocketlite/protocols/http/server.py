"""The HTTP front-end: HTTP/1.1 (h11) and WebSocket on Trio, serving an ASGI-style app.

Serves /health, /ready and the WebSocket routes other front-ends register in
``ctx.http_routes`` (MQTT over WebSocket at /mqtt). The admin API, /metrics and the console
mount here too (see rocketlite/protocols/http/app.py).

The app interface is the ASGI subset those handlers use (``http`` and ``websocket`` scopes,
``receive``/``send`` dicts), served by a small adapter over h11 and our sans-IO WebSocket codec
(rocketlite/protocols/http/websocket.py) instead of an ASGI server: importing Hypercorn (with h2,
wsproto, multiprocessing) was about a quarter of the CPU time from spawn to READY (issue #2).
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

import h11
import trio

from rocketlite.frontends import FrontEndContext
from rocketlite.protocols.http import websocket as ws
from rocketlite.security.limits import get_limiter, limited

log = logging.getLogger(__name__)

KEEP_ALIVE_S = 75.0  # idle keep-alive connections close after this
MAX_WS_MESSAGE = 16 * 1024 * 1024
READ_SIZE = 65536

ASGIApp = Callable[[dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Awaitable[None]]


async def send_json(send: Callable[..., Awaitable[Any]], status: int, body: Any) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def build_asgi(ctx: FrontEndContext) -> ASGIApp:
    extra: ASGIApp | None = None
    try:  # the admin API / metrics / console app, when it exists
        from rocketlite.protocols.http.app import build_app  # type: ignore[import-not-found]

        extra = build_app(ctx)
    except ModuleNotFoundError:
        extra = None

    async def app(scope: dict[str, Any], receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[Any]]) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope.get("path", "/")
        if kind == "websocket":
            handler = ctx.http_routes.get(path)
            if handler is None:
                await send({"type": "websocket.close", "code": 1008})
                return
            await handler(scope, receive, send)
            return
        if path == "/health":
            await send_json(send, 200, {"status": "UP"})
            return
        if path == "/ready":
            await send_json(send, 200 if ctx.ready else 503, {"ready": ctx.ready, "listeners": {
                k: f"{h}:{p}" for k, (h, p) in ctx.addresses.items()}})
            return
        if extra is not None:
            await extra(scope, receive, send)
            return
        await send_json(send, 404, {"error": "not found", "path": path})

    return app


class _Closed(Exception):
    """The peer went away (or broke the protocol): the connection is done."""


class HttpConnection:
    """One accepted connection: HTTP/1.1 requests (keep-alive) until one upgrades to WebSocket."""

    def __init__(self, stream: trio.abc.Stream, app: ASGIApp, client: tuple[str, int] | None,
                 server: tuple[str, int], scheme: str) -> None:
        self.stream = stream
        self.app = app
        self.client = client
        self.server = server
        self.scheme = scheme
        self.h11 = h11.Connection(h11.SERVER)

    async def _send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send_all(data)

    async def _next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            # a request that stops arriving half-way (slowloris) ends the connection like an idle one
            with trio.fail_after(KEEP_ALIVE_S):
                data = await self.stream.receive_some(READ_SIZE)
            self.h11.receive_data(data)  # b"" = the peer closed its side

    async def run(self) -> None:
        try:
            await self._run()
        except _Closed:
            pass

    async def _run(self) -> None:
        while True:
            try:
                if self.h11.their_state is h11.IDLE:  # between requests: keep-alive idle limit
                    event: Any = None
                    with trio.move_on_after(KEEP_ALIVE_S):
                        event = await self._next_event()
                    if event is None:
                        return
                else:
                    event = await self._next_event()
            except h11.RemoteProtocolError as exc:
                await self._bad_request(exc)
                return
            if not isinstance(event, h11.Request):  # ConnectionClosed, PAUSED
                return
            if _is_websocket(event):
                await self._websocket(event)
                return
            await self._http(event)
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return
            self.h11.start_next_cycle()

    async def _bad_request(self, exc: Exception) -> None:
        log.debug("http: bad request from %s: %s", self.client, exc)
        if self.h11.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = json.dumps({"error": f"bad request: {exc}"}).encode()
            try:
                await self._send(h11.Response(status_code=400, headers=[
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")]))
                await self._send(h11.Data(data=body))
                await self._send(h11.EndOfMessage())
            except (h11.LocalProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    def _scope(self, kind: str, req: Any) -> dict[str, Any]:
        raw_path, _, query = bytes(req.target).partition(b"?")
        return {
            "type": kind,
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": req.http_version.decode(),
            "method": req.method.decode("ascii"),
            "scheme": self.scheme if kind == "http" else ("wss" if self.scheme == "https" else "ws"),
            "path": unquote(raw_path.decode("ascii", "replace")),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": [(bytes(k), bytes(v)) for k, v in req.headers],
            "client": self.client,
            "server": self.server,
        }

    async def _http(self, req: Any) -> None:
        scope = self._scope("http", req)
        state: dict[str, Any] = {"started": False, "done": False, "response": None}
        body_done = False
        broken: list[Exception] = []  # the request body was malformed, cut off or stalled

        async def receive() -> dict[str, Any]:
            nonlocal body_done
            if body_done:
                return {"type": "http.disconnect"}
            if self.h11.they_are_waiting_for_100_continue:  # curl sends large bodies after this
                await self._send(h11.InformationalResponse(status_code=100, headers=[]))
            try:
                event = await self._next_event()
            except (h11.RemoteProtocolError, trio.TooSlowError) as exc:
                # as an ASGI server does: the app sees a disconnect (no traceback in its log);
                # the client gets a 400 if it still listens, and the connection ends
                body_done = True
                broken.append(exc)
                return {"type": "http.disconnect"}
            if isinstance(event, h11.Data):
                return {"type": "http.request", "body": bytes(event.data), "more_body": True}
            body_done = True
            if isinstance(event, h11.EndOfMessage):
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.disconnect"}

        async def send(msg: dict[str, Any]) -> None:
            kind = msg["type"]
            if kind == "http.response.start":
                state["response"] = h11.Response(status_code=int(msg["status"]),
                                                 headers=list(msg.get("headers") or []))
            elif kind == "http.response.body":
                if state["done"]:
                    return
                if not state["started"]:
                    if state["response"] is None:
                        raise RuntimeError("http.response.body before http.response.start")
                    state["started"] = True
                    await self._send(state["response"])
                data = msg.get("body", b"")
                if data:
                    await self._send(h11.Data(data=data))
                if not msg.get("more_body"):
                    state["done"] = True
                    await self._send(h11.EndOfMessage())

        try:
            await self.app(scope, receive, send)
        except h11.RemoteProtocolError as exc:
            if not state["started"]:
                await self._bad_request(exc)
            raise _Closed from exc
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.LocalProtocolError, trio.TooSlowError):
            raise
        except Exception:  # noqa: BLE001 - one request's failure answers 500, the server goes on
            log.exception("http: %s %s failed", scope["method"], scope["path"])
            if not state["started"]:
                body = b'{"error": "internal error"}'
                state["response"] = h11.Response(status_code=500, headers=[
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())])
                await send({"type": "http.response.body", "body": body})
            raise _Closed from None
        if broken:
            if not state["started"]:
                await self._bad_request(broken[0])
            raise _Closed from broken[0]
        if not state["started"]:  # the app answered nothing
            state["response"] = h11.Response(status_code=500, headers=[(b"content-length", b"0")])
            await send({"type": "http.response.body", "body": b""})
        elif not state["done"]:
            await send({"type": "http.response.body", "body": b""})
        # Skip an unread request body so the next request on this connection parses.
        while self.h11.their_state is h11.SEND_BODY:
            event = await self._next_event()
            if isinstance(event, h11.ConnectionClosed):
                break

    async def _websocket(self, req: Any) -> None:
        # The GET has no body: its EndOfMessage follows, then h11 pauses (MIGHT_SWITCH_PROTOCOL).
        event = await self._next_event()
        if not isinstance(event, h11.EndOfMessage):
            raise _Closed
        scope = self._scope("websocket", req)
        headers = {k: v for k, v in scope["headers"]}
        scope["subprotocols"] = [p.strip() for p in headers.get(b"sec-websocket-protocol", b"").decode(
            "latin-1").split(",") if p.strip()]
        key = headers.get(b"sec-websocket-key", b"").decode("latin-1")
        leftover, _ = self.h11.trailing_data
        session = WebSocketSession(self, key, bytes(leftover))
        await session.run(scope)


def _is_websocket(req: Any) -> bool:
    if req.method != b"GET":
        return False
    upgrade = connection = version = key = False
    for name, value in req.headers:
        v = bytes(value).lower()
        if name == b"upgrade":
            upgrade = upgrade or b"websocket" in [t.strip() for t in v.split(b",")]
        elif name == b"connection":
            connection = connection or b"upgrade" in [t.strip() for t in v.split(b",")]
        elif name == b"sec-websocket-version":
            version = v.strip() == b"13"
        elif name == b"sec-websocket-key":
            key = bool(v.strip())
    return upgrade and connection and version and key


class WebSocketSession:
    """The ASGI websocket events of one upgraded connection.

    A reader task decodes frames into a bounded channel (so a slow app stops reading the socket),
    answers pings, and turns the peer's close frame (or EOF, or a protocol error) into
    ``websocket.disconnect``.
    """

    def __init__(self, conn: HttpConnection, key: str, leftover: bytes) -> None:
        self.conn = conn
        self.stream = conn.stream
        self.key = key
        self.leftover = leftover
        self.accepted = False
        self.closed = False
        self.connected_sent = False
        self.send_lock = trio.Lock()
        self.tx, self.rx = trio.open_memory_channel[dict[str, Any]](16)

    async def _write(self, data: bytes) -> None:
        async with self.send_lock:
            await self.stream.send_all(data)

    async def run(self, scope: dict[str, Any]) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            try:
                await self.conn.app(scope, self.receive, self.send)
            finally:
                nursery.cancel_scope.cancel()
        if not self.accepted and not self.closed:
            await self._reject(500)
        elif self.accepted and not self.closed:
            await self._close(1000)

    async def receive(self) -> dict[str, Any]:
        if not self.connected_sent:
            self.connected_sent = True
            return {"type": "websocket.connect"}
        if not self.accepted:
            raise RuntimeError("websocket.receive before websocket.accept")
        try:
            return await self.rx.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return {"type": "websocket.disconnect", "code": 1006}

    async def send(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if kind == "websocket.accept":
            if self.accepted or self.closed:
                return
            lines = [b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket", b"Connection: Upgrade",
                     b"Sec-WebSocket-Accept: " + ws.accept_key(self.key).encode()]
            if msg.get("subprotocol"):
                lines.append(b"Sec-WebSocket-Protocol: " + str(msg["subprotocol"]).encode("latin-1"))
            for name, value in msg.get("headers") or []:
                lines.append(bytes(name) + b": " + bytes(value))
            await self._write(b"\r\n".join(lines) + b"\r\n\r\n")
            self.accepted = True
            self.nursery.start_soon(self._reader)
        elif kind == "websocket.send":
            if not self.accepted or self.closed:
                raise trio.ClosedResourceError("websocket is not open")
            if msg.get("bytes") is not None:
                await self._write(ws.encode_frame(ws.BINARY, bytes(msg["bytes"])))
            else:
                await self._write(ws.encode_frame(ws.TEXT, str(msg.get("text") or "").encode()))
        elif kind == "websocket.close":
            if not self.accepted:
                await self._reject(403)
            else:
                await self._close(int(msg.get("code", 1000)), str(msg.get("reason") or ""))

    async def _reject(self, status: int) -> None:
        self.closed = True
        try:
            await self._write(b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                              % (status, b"Forbidden" if status == 403 else b"Internal Server Error"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _close(self, code: int, reason: str = "") -> None:
        if self.closed:
            return
        self.closed = True
        try:
            await self._write(ws.close_frame(code, reason))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def _reader(self) -> None:
        decoder = ws.WsDecoder(MAX_WS_MESSAGE)
        code = 1006
        data = self.leftover
        try:
            while True:
                for ev in decoder.feed(data) if data else ():
                    if isinstance(ev, ws.Message):
                        if isinstance(ev.data, str):
                            await self.tx.send({"type": "websocket.receive", "text": ev.data})
                        else:
                            await self.tx.send({"type": "websocket.receive", "bytes": ev.data})
                    elif isinstance(ev, ws.Ping):
                        if not self.closed:
                            await self._write(ws.encode_frame(ws.PONG, ev.payload))
                    elif isinstance(ev, ws.Close):
                        code = ev.code
                        await self._close(1000 if ev.code == 1005 else ev.code)
                        return
                data = await self.stream.receive_some(READ_SIZE)
                if not data:
                    return
        except ws.WsError as exc:
            code = exc.code
            log.debug("http: websocket protocol error from %s: %s", self.conn.client, exc.reason)
            await self._close(exc.code, exc.reason)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self.closed = True
            with trio.CancelScope(shield=True):
                try:
                    await self.tx.send({"type": "websocket.disconnect", "code": code})
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                self.tx.close()


class HttpFrontEnd:
    name = "http"

    async def serve(self, ctx: FrontEndContext, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        s = ctx.settings
        host = s.host
        port = int(s.get("http", "port", 8080))
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(1024)
        except BaseException:
            sock.close()
            raise
        bound = sock.getsockname()[1]
        listener: trio.abc.Listener[Any] = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        scheme = "http"
        if s.get("http", "tls", False):  # [http] tls: HTTPS and WSS on this port (rocketlite/security/tls.py)
            listener = trio.SSLListener(listener, _server_ssl_context(s), https_compatible=True)
            scheme = "https"
        app = build_asgi(ctx)

        async def handle(stream: trio.abc.Stream) -> None:
            client = _peer(stream)
            conn = HttpConnection(stream, app, client, (host, bound), scheme)
            try:
                await conn.run()
            except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError, trio.TooSlowError):
                pass
            except Exception as exc:  # noqa: BLE001 - one connection's failure never stops the listener
                log.debug("http: connection %s failed: %r", client, exc)
            finally:
                with trio.CancelScope(shield=True):
                    with trio.move_on_after(1):
                        try:
                            await stream.aclose()
                        except Exception:  # noqa: BLE001
                            pass

        async with listener:
            async with trio.open_nursery() as nursery:
                task_status.started((host, bound))
                await trio.serve_listeners(limited(handle, get_limiter(ctx)), [listener],  # max_connections
                                           handler_nursery=nursery)


def _peer(stream: trio.abc.Stream) -> tuple[str, int] | None:
    inner = getattr(stream, "transport_stream", stream)
    try:
        name = inner.socket.getpeername()  # type: ignore[attr-defined]
        return (str(name[0]), int(name[1]))
    except Exception:  # noqa: BLE001
        return None


def _server_ssl_context(s: Any) -> Any:
    """The HTTPS context: [security] tls_cert_file/tls_key_file, or a self-signed pair."""
    from rocketlite.security.tls import ssl_context

    return ssl_context(str(s.get("security", "tls_cert_file", "") or ""),
                       str(s.get("security", "tls_key_file", "") or ""), alpn=["http/1.1"])
