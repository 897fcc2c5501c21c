"""How a protocol front-end plugs into the process.

A front-end is an object with a ``name`` and ``async def serve(ctx, *, task_status)``: it binds its
listener(s) from ``ctx.settings.section(name)``, calls ``task_status.started((host, port))`` with the
address it actually bound once it accepts connections, and then serves until cancelled. It talks
to the domain only through ``ctx.broker``.

Front-ends are found by name in :data:`FRONTENDS` and imported lazily; one whose module does not
exist yet is skipped, so adding a protocol touches no other front-end. Order matters only for
HTTP, which starts last so that others can register WebSocket routes in ``ctx.http_routes``.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from rocketlite.config import Settings
from rocketlite.core.broker import Broker

log = logging.getLogger(__name__)

FRONTENDS: list[tuple[str, str]] = [
    ("remoting", "rocketlite.protocols.remoting.server:RemotingFrontEnd"),
    ("grpc", "rocketlite.protocols.grpc.frontend:GrpcFrontEnd"),
    ("mqtt", "rocketlite.protocols.mqtt.server:MqttFrontEnd"),
    ("testing", "rocketlite.testing.control:ControlFrontEnd"),
    ("http", "rocketlite.protocols.http.server:HttpFrontEnd"),
]


@dataclass
class FrontEndContext:
    broker: Broker
    settings: Settings
    # Every started front-end's reported address, by name (filled as they start).
    addresses: dict[str, tuple[str, int]] = field(default_factory=dict)
    # ASGI-style websocket handlers by path, served on the HTTP port: path -> async fn(scope, receive, send).
    http_routes: dict[str, Callable[..., Awaitable[None]]] = field(default_factory=dict)
    # Shared objects between front-ends (e.g. "mqtt" -> the MQTT session manager, "metrics" -> registry).
    services: dict[str, Any] = field(default_factory=dict)
    ready: bool = False


class FrontEnd(Protocol):
    name: str

    async def serve(self, ctx: FrontEndContext, *, task_status: Any) -> None: ...


def bind_host(host: str) -> str | bytes:
    """``host`` for ``trio.open_tcp_listeners``: ASCII as bytes, so that ``socket.getaddrinfo`` does
    not load the ``idna`` codec and ``stringprep`` (a small start-up saving, ~2 M instructions,
    once no front-end binds with a str host)."""
    return host.encode("ascii") if host.isascii() else host


def load_frontend(name: str) -> FrontEnd | None:
    for fe_name, target in FRONTENDS:
        if fe_name != name:
            continue
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                log.debug("front-end %s not available: %s", name, exc)
                return None
            raise
        return getattr(module, attr)()  # type: ignore[no-any-return]
    raise KeyError(f"unknown front-end {name}")
