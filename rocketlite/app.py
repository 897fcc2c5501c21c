"""Builds the broker from settings and runs every enabled front-end in one Trio nursery."""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import trio

from rocketlite.config import Settings
from rocketlite.core.broker import Broker, BrokerSettings
from rocketlite.core.timers import parse_delay_levels
from rocketlite.frontends import FRONTENDS, FrontEndContext, load_frontend
from rocketlite.metrics import METRICS
from rocketlite.runtime import TrioRuntime
from rocketlite.storage import open_store

log = logging.getLogger("rocketlite")


def broker_settings(settings: Settings) -> BrokerSettings:
    """Every key of the [broker] section that names a BrokerSettings field, plus retention from [storage].

    Integer ``*_ms`` limits that are optional in the core (``None`` = no limit) take 0 for "none".
    """
    b = settings.section("broker")
    st = settings.section("storage")
    hours = float(st.get("retention_hours", 72) or 0)
    max_mb = float(st.get("retention_max_mb", 0) or 0)
    fields = BrokerSettings.__dataclass_fields__
    kwargs: dict[str, Any] = {}
    for key, value in b.items():
        if key not in fields:
            continue
        if key == "timer_max_delay_ms":
            value = int(value) or None
        kwargs[key] = value
    kwargs["retention_age_ms"] = int(hours * 3600_000) if hours > 0 else None
    kwargs["retention_bytes"] = int(max_mb * 1024 * 1024) if max_mb > 0 else None
    out = BrokerSettings(**kwargs)
    parse_delay_levels(out.message_delay_level)  # a ValueError names the bad level (the CLI reports it)
    return out


def report_commit(batches: int, seconds: float) -> None:
    """The store's commit hook (LMDB): group-commit size and latency histograms on /metrics."""
    METRICS.observe("rocketlite_store_commit_batch_size", None, batches)
    METRICS.observe("rocketlite_store_commit_seconds", None, seconds)


def display_host(bound: str, settings: Settings) -> str:
    return settings.advertised_host if bound in ("", "0.0.0.0", "::") else bound


class App:
    """One rocketlite process: store, broker, front-ends.

    ``await nursery.start(app.run)`` returns once every enabled listener accepts; ``app.stop()``
    (or SIGINT/SIGTERM when ``handle_signals``) shuts down gracefully: listeners close, in-flight
    store writes finish, the store closes.
    """

    def __init__(self, settings: Settings, *, handle_signals: bool = False) -> None:
        self.settings = settings
        self.handle_signals = handle_signals
        self.broker: Broker | None = None
        self.ctx: FrontEndContext | None = None
        self.addresses: dict[str, tuple[str, int]] = {}
        self._cancel: trio.CancelScope | None = None
        self.started_at = time.monotonic()

    def ready_line(self) -> str:
        parts = [f"{name}={host}:{port}" for name, (host, port) in self.addresses.items()]
        return "READY " + " ".join(parts)

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        s = self.settings
        data_dir = s.data_dir
        if data_dir is not None:
            os.makedirs(data_dir, exist_ok=True)
        st = s.section("storage")
        store = open_store(
            data_dir,
            flush=str(st.get("flush", "async")),
            flush_interval_ms=int(st.get("flush_interval_ms", 500)),
            map_size_mb=int(st.get("map_size_mb", 4096)),
            min_free_disk_mb=int(st.get("min_free_disk_mb", 64)),
        ) if data_dir is not None else open_store(None)
        if hasattr(store, "commit_hook"):
            store.commit_hook = report_commit  # type: ignore[attr-defined]
        await store.open()
        try:
            with trio.CancelScope() as cancel:
                self._cancel = cancel
                async with trio.open_nursery() as nursery:
                    runtime = TrioRuntime(nursery)
                    broker = Broker(store, runtime, broker_settings(s))
                    self.broker = broker
                    await broker.start()
                    for service in broker.services:
                        nursery.start_soon(service)
                    ctx = FrontEndContext(broker=broker, settings=s)
                    self.ctx = ctx
                    for name, _ in FRONTENDS:
                        if not s.enabled(name):
                            continue
                        fe = load_frontend(name)
                        if fe is None:
                            continue
                        started = await nursery.start(fe.serve, ctx)
                        # (host, port), or {listener name: (host, port)} for a front-end with several
                        # listeners (remoting: NameServer and Broker roles).
                        for lname, (host, port) in (started.items() if isinstance(started, dict)
                                                    else [(name, started)]):
                            ctx.addresses[lname] = (host, port)
                            self.addresses[lname] = (display_host(host, s), port)
                    if s.data.get("bridges"):  # edge-to-cloud bridges (docs/bridge.md)
                        from rocketlite.bridge.service import run_bridges

                        await nursery.start(run_bridges, broker, s, ctx.services)
                    ctx.ready = True
                    if self.handle_signals:
                        # receiver installed before READY: a signal right after READY is handled
                        await nursery.start(self._signals, cancel)
                    task_status.started(self)
        finally:
            with trio.CancelScope(shield=True):
                await store.close()

    async def _signals(self, cancel: trio.CancelScope, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                cancel.cancel()
                return
