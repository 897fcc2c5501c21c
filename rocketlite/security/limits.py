"""A process-wide cap on client connections (``server.max_connections``, 0 = no cap).

Shared by the remoting, gRPC and MQTT listeners: a connection over the cap is closed at once
(the client sees a reset/EOF and retries elsewhere or later); the refusals are counted and logged
at most once a second.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable

log = logging.getLogger("rocketlite.limits")


class ConnectionLimiter:
    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.current = 0
        self.refused = 0
        self._logged = 0.0

    def try_acquire(self) -> bool:
        if self.maximum and self.current >= self.maximum:
            self.refused += 1
            now = time.monotonic()
            if now - self._logged >= 1.0:
                self._logged = now
                log.warning("connection refused: %d connections open (server.max_connections); %d refused so far",
                            self.current, self.refused)
            return False
        self.current += 1
        return True

    def release(self) -> None:
        self.current -= 1


def get_limiter(ctx: Any) -> ConnectionLimiter | None:
    """The process's limiter (None when ``server.max_connections`` is 0), shared via ``ctx.services``."""
    if "connection_limiter" not in ctx.services:
        n = int(ctx.settings.get("server", "max_connections", 0) or 0)
        ctx.services["connection_limiter"] = ConnectionLimiter(n) if n > 0 else None
    return ctx.services["connection_limiter"]  # type: ignore[no-any-return]


def limited(handler: Callable[..., Awaitable[None]], limiter: ConnectionLimiter | None) -> Callable[..., Awaitable[None]]:
    """Wrap a per-connection handler ``handler(stream, *args)`` with the cap."""
    if limiter is None:
        return handler

    async def run(stream: Any, *args: Any) -> None:
        if not limiter.try_acquire():
            await stream.aclose()
            return
        try:
            await handler(stream, *args)
        finally:
            limiter.release()

    return run
