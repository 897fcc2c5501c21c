"""The HTTP front-end: Hypercorn (trio worker) serving an ASGI app on the HTTP port.

Serves /health, /ready and the WebSocket routes other front-ends register in
``ctx.http_routes`` (MQTT over WebSocket at /mqtt). The admin API, /metrics and the console
mount here too (see rocketlite/protocols/http/app.py when present).
"""

from __future__ import annotations

import json
import logging
import socket
from typing import Any, Awaitable, Callable

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from rocketlite.frontends import FrontEndContext

log = logging.getLogger(__name__)


def _guard_hypercorn_connections() -> None:
    """One connection's failure must not stop the listener (found by tests/reliability/hostile.py).

    Hypercorn 0.18 runs each connection in the listener's nursery, so an exception escaping a
    connection (e.g. h11 ``LocalProtocolError`` when a WebSocket frame arrives pipelined before the
    app accepted the upgrade) ends ``serve`` and the process. Contain it per connection.
    """
    from hypercorn.trio import tcp_server

    original = tcp_server.TCPServer.run
    if getattr(original, "_rocketlite_guarded", False):
        return

    async def run(self: Any) -> None:
        try:
            await original(self)
        except Exception as exc:  # noqa: BLE001 - contained per connection, logged
            log.debug("http: connection failed: %r", exc)
            try:
                await self.stream.aclose()
            except Exception:  # noqa: BLE001
                pass

    run._rocketlite_guarded = True  # type: ignore[attr-defined]
    tcp_server.TCPServer.run = run  # type: ignore[method-assign]


_guard_hypercorn_connections()

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


class HttpFrontEnd:
    name = "http"

    async def serve(self, ctx: FrontEndContext, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        s = ctx.settings
        host = s.host
        port = int(s.get("http", "port", 8080))
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
        bound = sock.getsockname()[1]
        config = Config()
        config.bind = [f"fd://{sock.fileno()}"]
        config.accesslog = None
        config.errorlog = None
        config.keep_alive_timeout = 75
        config.graceful_timeout = 1
        config.websocket_max_message_size = 16 * 1024 * 1024
        tls_tmp = None
        if s.get("http", "tls", False):  # [http] tls: HTTPS and WSS on this port (rocketlite/security/tls.py)
            from rocketlite.security.tls import self_signed_files

            cert = str(s.get("security", "tls_cert_file", "") or "")
            key = str(s.get("security", "tls_key_file", "") or "")
            if not cert:
                cert, key, tls_tmp = self_signed_files()
            config.certfile, config.keyfile = cert, key or None
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(serve, build_asgi(ctx), config)  # type: ignore[arg-type]
                task_status.started((host, bound))
        finally:
            # Hypercorn adopts the descriptor (socket(fileno=...)) and closes it itself.
            try:
                sock.close()
            except OSError:
                pass
            if tls_tmp is not None:
                tls_tmp.cleanup()
