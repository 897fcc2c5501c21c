"""Test-double tooling: an in-process broker, fixtures and a pytest plugin (see docs/testing.md).

    from rocketlite.testing import RocketliteServer, open_broker

    with RocketliteServer() as rl:          # a background thread, for synchronous tests
        rl.send("orders", b"hello")
        assert rl.peek("orders")[0].body == b"hello"

    async with open_broker() as rl:         # in the caller's Trio run (MockClock friendly)
        await rl.send("orders", b"hello", delay_ms=3_600_000)
        (msg,) = await rl.receive("orders", timeout=7200)

Names are imported lazily, so ``import rocketlite.testing`` (done by the pytest plugin in every
test run) costs nothing until a broker is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "ControlUnavailable",
    "EndpointUnavailable",
    "ExternalRocketlite",
    "RESET_HOOKS",
    "Rocketlite",
    "RocketliteServer",
    "SeedError",
    "Snapshot",
    "open_broker",
    "parse_external",
    "start_server",
]

_WHERE = {
    "Rocketlite": "rocketlite.testing._inprocess",
    "RocketliteServer": "rocketlite.testing._inprocess",
    "open_broker": "rocketlite.testing._inprocess",
    "start_server": "rocketlite.testing._inprocess",
    "EndpointUnavailable": "rocketlite.testing._endpoints",
    "ExternalRocketlite": "rocketlite.testing._external",
    "ControlUnavailable": "rocketlite.testing._external",
    "parse_external": "rocketlite.testing._external",
    "RESET_HOOKS": "rocketlite.testing._ops",
    "SeedError": "rocketlite.testing._ops",
    "Snapshot": "rocketlite.testing._ops",
}

if TYPE_CHECKING:  # pragma: no cover
    from rocketlite.testing._endpoints import EndpointUnavailable
    from rocketlite.testing._external import ControlUnavailable, ExternalRocketlite, parse_external
    from rocketlite.testing._inprocess import Rocketlite, RocketliteServer, open_broker, start_server
    from rocketlite.testing._ops import RESET_HOOKS, SeedError, Snapshot


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'rocketlite.testing' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
