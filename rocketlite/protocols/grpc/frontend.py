"""The ``grpc`` front-end: binds the port at startup, builds the gRPC server on first use.

Serve binds the listener and reports READY without importing the HTTP/2 connection, the messaging
service or protobuf (together ~10% of the CPU from spawn to READY, issue #2). The first connection
imports and starts them (it waits a few tens of milliseconds, once); a process that no gRPC client
talks to never pays. Before that first connection there are no gRPC clients, so the service's
background work (transaction checks, invisible-time renewals) has nothing to do yet.
"""

from __future__ import annotations

from typing import Any

import trio

from rocketlite.frontends import bind_host
from rocketlite.security.limits import get_limiter, limited


class GrpcFrontEnd:
    """The ``grpc`` front-end (settings section ``grpc``: ``port``, TLS files, limits)."""

    name = "grpc"

    async def serve(self, ctx: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        from rocketlite.protocols.grpc.tls import server_ssl_context

        settings = ctx.settings
        sec = settings.section("grpc")
        host = settings.host
        port = int(sec.get("port", 8081))
        ssl_ctx = None
        if bool(sec.get("tls", True)):
            cert_file = str(sec.get("tls_cert_file", "") or "")
            if cert_file:  # load now: a bad path should fail at startup
                ssl_ctx = server_ssl_context(cert_file, str(sec.get("tls_key_file", "") or ""))
        listeners = await trio.open_tcp_listeners(port, host=bind_host(host))
        bound = listeners[0].socket.getsockname()
        server: Any = None
        starting = trio.Lock()
        async with trio.open_nursery() as nursery:

            async def handle(stream: trio.abc.Stream) -> None:
                nonlocal server
                if server is None:
                    async with starting:
                        if server is None:
                            server = await self._start(ctx, ssl_ctx, nursery)
                await server.handle(stream)

            task_status.started((host, bound[1]))
            await trio.serve_listeners(limited(handle, get_limiter(ctx)), listeners)  # max_connections

    @staticmethod
    async def _start(ctx: Any, ssl_ctx: Any, nursery: trio.Nursery) -> Any:
        from rocketlite.protocols.grpc import messaging_pb2
        from rocketlite.protocols.grpc.codec import GrpcConnectionConfig
        from rocketlite.protocols.grpc.server import GrpcServer
        from rocketlite.protocols.grpc.service import MessagingService
        from rocketlite.protocols.grpc.tls import server_ssl_context
        from rocketlite.security.acl import get_acl
        from rocketlite.security.grpc_acl import guard_handlers

        sec = ctx.settings.section("grpc")
        # TLS without a configured certificate: a self-signed one, made on the first TLS handshake
        ssl_factory = server_ssl_context if bool(sec.get("tls", True)) and ssl_ctx is None else None
        config = GrpcConnectionConfig(
            max_concurrent_streams=int(sec.get("max_concurrent_streams", 1000)),
            max_message=int(sec.get("max_message_size", 130 * 1024 * 1024)),
        )
        service = MessagingService(ctx.broker, ctx.settings)
        ctx.services["grpc"] = service
        await nursery.start(service.run)
        handlers = guard_handlers(service.handlers(), get_acl(ctx), messaging_pb2)  # [security]
        return GrpcServer(handlers, ssl_context=ssl_ctx, config=config, ssl_context_factory=ssl_factory)
