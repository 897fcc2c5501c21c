"""An in-process broker for tests: in the caller's Trio run, or in a background thread.

``open_broker`` is the Trio flavour (the broker's tasks live in the caller's run, so Trio's
MockClock drives every delay, backoff and timeout); ``RocketliteServer`` runs the same thing in a
thread with its own ``trio.run`` for ordinary synchronous tests.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Iterable, Mapping, NoReturn, TypeVar

import trio

from rocketlite.app import App
from rocketlite.config import Settings, build_settings
from rocketlite.core.broker import Broker
from rocketlite.core.message import Message, SendResult
from rocketlite.frontends import FRONTENDS, FrontEndContext
from rocketlite.testing import _ops
from rocketlite.testing._endpoints import Endpoints

T = TypeVar("T")

ALL_PROTOCOLS = tuple(name for name, _ in FRONTENDS)


def make_settings(
    *,
    protocols: Iterable[str] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | Settings | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> Settings:
    """Settings for a test broker: memory store, 127.0.0.1, every port 0, chosen front-ends.

    The environment (``ROCKETLITE_*``) is deliberately ignored so a developer's shell cannot
    change what a test sees; pass ``settings`` or ``config_file`` instead.
    """
    if isinstance(settings, Settings):
        s = settings.copy()
    else:
        s = build_settings(config_file=str(config_file) if config_file else None, environ={})
        if settings:
            s.merge(settings)
    s.set("storage", "ephemeral", True)
    s.set("server", "host", "127.0.0.1")
    for section in s.data.values():
        for key in list(section):
            if key == "port" or key.endswith("_port"):
                section[key] = 0
    if protocols is not None:
        wanted = set(protocols)
        unknown = wanted - set(ALL_PROTOCOLS)
        if unknown:
            raise ValueError(f"unknown protocol(s) {sorted(unknown)}; choose from {list(ALL_PROTOCOLS)}")
        for name in ALL_PROTOCOLS:
            s.set(name, "enabled", name in wanted)
    return s


async def receive(
    broker: Broker,
    topic: str,
    *,
    group: str = _ops.DEFAULT_GROUP,
    max_count: int = 1,
    timeout: float = 5.0,
) -> list[Message]:
    """Consume up to ``max_count`` messages as consumer group ``group`` (committing its offsets).

    Waits (long poll on every queue, the broker's clock) until at least one message arrives or
    ``timeout`` seconds pass; returns what it got, possibly nothing. A new group starts at the
    oldest message, which is what a test usually wants ("did my code send X?").
    """
    await broker.get_or_create_topic(topic)
    await broker.get_or_create_group(group)
    deadline = trio.current_time() + timeout
    out: list[Message] = []
    while True:
        qids = _ops.queue_ids(broker, topic)
        positions: dict[int, int] = {}
        for q in qids:
            off = broker.query_offset(group, topic, q)
            if off is None:
                off = broker.min_offset(topic, q)
            if len(out) < max_count:
                res = await broker.pull(topic, q, off, max_count - len(out), wait_ms=0)
                if res.messages:
                    out.extend(res.messages)
                if res.next_offset != off:
                    await broker.commit_offset(group, topic, q, res.next_offset)
                    off = res.next_offset
            positions[q] = off
        if out:
            return out
        remaining = deadline - trio.current_time()
        if remaining <= 0:
            return out
        events = [broker.queue_event(topic, q) for q in qids]
        if any(broker.max_offset(topic, q) > positions[q] for q in qids):
            continue
        with trio.move_on_after(remaining):
            async with trio.open_nursery() as nursery:
                for ev in events:
                    nursery.start_soon(_wait_then_cancel, ev, nursery.cancel_scope)


async def _wait_then_cancel(ev: Any, scope: trio.CancelScope) -> None:
    await ev.wait()
    scope.cancel()


class Rocketlite(Endpoints):
    """A running in-process broker, used from inside its own Trio run (see :func:`open_broker`)."""

    external = False

    def __init__(self, app: App) -> None:
        assert app.broker is not None and app.ctx is not None
        self.app = app
        self.broker: Broker = app.broker
        self.ctx: FrontEndContext = app.ctx
        self.settings = app.settings
        super().__init__(dict(app.addresses), str(app.settings.get("mqtt", "websocket_path", "/mqtt")))

    @property
    def reset_hooks(self) -> list[Callable[[], Awaitable[None]]]:
        """``async def hook()`` callables run by :meth:`reset` after the core is emptied."""
        return _ops.reset_hooks(self.ctx.services)

    async def reset(self) -> None:
        """Empty everything: messages, offsets, topics, groups, clients, and registered extras."""
        await _ops.reset(self.broker, self.ctx.services)

    async def seed(self, spec: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, int]:
        """Create topics/groups and send messages from a dict or a TOML file (see docs/testing.md)."""
        return await _ops.seed(self.broker, spec)

    async def send(self, topic: str, body: bytes | str = b"", **options: Any) -> SendResult:
        """Send one message (``tags``, ``keys``, ``properties``, ``delay_ms``, ``deliver_at_ms``, ...)."""
        return await _ops.send(self.broker, topic, body, **options)

    async def peek(self, topic: str, queue_id: int | None = None, max_count: int = 1000) -> list[Message]:
        """The messages stored in ``topic`` (oldest first) without consuming them."""
        return await _ops.peek(self.broker, topic, queue_id, max_count)

    async def receive(
        self, topic: str, *, group: str = _ops.DEFAULT_GROUP, max_count: int = 1, timeout: float = 5.0
    ) -> list[Message]:
        """Consume as ``group``, waiting up to ``timeout`` seconds of the broker's clock."""
        return await receive(self.broker, topic, group=group, max_count=max_count, timeout=timeout)

    async def snapshot(self, recent: int = 20) -> _ops.Snapshot:
        return await _ops.snapshot(self.broker, recent=recent)

    async def describe(self, recent: int = 20) -> str:
        """A human-readable account of topics, groups and recent messages."""
        return (await self.snapshot(recent)).format()


@asynccontextmanager
async def open_broker(
    *,
    protocols: Iterable[str] | None = None,
    settings: Mapping[str, Mapping[str, Any]] | Settings | None = None,
    config_file: str | os.PathLike[str] | None = None,
    seed: Mapping[str, Any] | str | os.PathLike[str] | None = None,
) -> AsyncIterator[Rocketlite]:
    """Run a broker in the caller's Trio run for the duration of the ``async with`` block.

    ``protocols`` chooses front-ends (default: every one this version has); every port is free
    and random, the store is memory. The block's own exceptions propagate unchanged.
    """
    s = make_settings(protocols=protocols, settings=settings, config_file=config_file)
    failure: BaseException | None = None
    async with trio.open_nursery() as nursery:
        app: App = await nursery.start(App(s).run)
        try:
            rl = Rocketlite(app)
            if seed is not None:
                await rl.seed(seed)
            yield rl
        except BaseException as exc:  # re-raised below, outside the nursery: no ExceptionGroup wrapping
            failure = exc
        finally:
            app.stop()
    if failure is not None:
        raise failure


class RocketliteServer(Endpoints):
    """An in-process broker on a background thread, for synchronous tests.

    ``with RocketliteServer() as rl:`` (or ``start_server()`` ... ``stop()``). Methods mirror
    :class:`Rocketlite` but block; they may be called from any thread, including from inside
    another Trio run (they block it briefly).
    """

    external = False

    def __init__(
        self,
        *,
        protocols: Iterable[str] | None = None,
        settings: Mapping[str, Mapping[str, Any]] | Settings | None = None,
        config_file: str | os.PathLike[str] | None = None,
        seed: Mapping[str, Any] | str | os.PathLike[str] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self._settings = make_settings(protocols=protocols, settings=settings, config_file=config_file)
        self._seed = seed
        self.start_timeout = start_timeout
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._calls: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._rl: Rocketlite | None = None
        super().__init__({}, str(self._settings.get("mqtt", "websocket_path", "/mqtt")))

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "RocketliteServer":
        if self._thread is not None:
            raise RuntimeError("this RocketliteServer was already started")
        self._thread = threading.Thread(target=self._thread_main, name="rocketlite-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.start_timeout):
            raise TimeoutError(f"in-process rocketlite did not start within {self.start_timeout}s")
        if self._error is not None:
            self._thread.join()
            cause = _unwrap(self._error)
            raise RuntimeError(f"in-process rocketlite failed to start: {cause!r}") from cause
        return self

    def stop(self) -> None:
        """Stop the broker and join its thread (idempotent)."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        if self._token is not None and self._stop is not None:
            try:
                self._token.run_sync_soon(self._stop.set)
            except trio.RunFinishedError:
                pass
        thread.join(self.start_timeout)
        if thread.is_alive():
            raise RuntimeError("in-process rocketlite did not stop")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._rl is not None

    def __enter__(self) -> "RocketliteServer":
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to start() or kept for stop()
            self._error = exc
        finally:
            self._rl = None
            self._ready.set()

    async def _main(self) -> None:
        async with open_broker(settings=self._settings, seed=self._seed) as rl:
            self._rl = rl
            self.addresses = dict(rl.addresses)
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as calls:
                self._calls = calls
                self._ready.set()
                await self._stop.wait()
                calls.cancel_scope.cancel()

    def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        if self._token is None or self._calls is None or not self.running:
            self._not_running()
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        calls = self._calls

        async def runner() -> None:
            try:
                fut.set_result(await fn(*args, **kwargs))
            except BaseException as exc:
                fut.set_exception(exc)

        def schedule() -> None:
            try:
                calls.start_soon(runner)
            except RuntimeError as exc:  # the broker is shutting down
                fut.set_exception(RuntimeError(f"the in-process rocketlite is stopping: {exc}"))

        if threading.current_thread() is self._thread:
            raise RuntimeError("blocking RocketliteServer methods cannot be called from the broker's own thread")
        try:
            self._token.run_sync_soon(schedule)
        except trio.RunFinishedError:
            raise RuntimeError("the in-process rocketlite has stopped") from None
        return fut.result()

    # -- the handle, blocking ---------------------------------------------------------------
    @property
    def broker(self) -> Broker:
        """The core Broker (touch it only from the broker thread, e.g. via :meth:`call`)."""
        assert self._rl is not None
        return self._rl.broker

    @property
    def app(self) -> App:
        assert self._rl is not None
        return self._rl.app

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run ``await fn(*args, **kwargs)`` in the broker's Trio thread and return its result."""
        return self._call(fn, *args, **kwargs)

    @property
    def reset_hooks(self) -> list[Callable[[], Awaitable[None]]]:
        assert self._rl is not None
        return self._rl.reset_hooks

    def reset(self) -> None:
        self._call(self._handle().reset)

    def seed(self, spec: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, int]:
        return self._call(self._handle().seed, spec)

    def send(self, topic: str, body: bytes | str = b"", **options: Any) -> SendResult:
        return self._call(self._handle().send, topic, body, **options)

    def peek(self, topic: str, queue_id: int | None = None, max_count: int = 1000) -> list[Message]:
        return self._call(self._handle().peek, topic, queue_id, max_count)

    def receive(
        self, topic: str, *, group: str = _ops.DEFAULT_GROUP, max_count: int = 1, timeout: float = 5.0
    ) -> list[Message]:
        return self._call(self._handle().receive, topic, group=group, max_count=max_count, timeout=timeout)

    def snapshot(self, recent: int = 20) -> _ops.Snapshot:
        return self._call(self._handle().snapshot, recent)

    def describe(self, recent: int = 20) -> str:
        return self._call(self._handle().describe, recent)

    def _handle(self) -> Rocketlite:
        if self._rl is None:
            self._not_running()
        assert self._rl is not None
        return self._rl

    def _not_running(self) -> NoReturn:
        if self._error is not None:
            raise RuntimeError(f"the in-process rocketlite crashed: {_unwrap(self._error)!r}") from self._error
        raise RuntimeError("the in-process rocketlite is not running (start() it first)")


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def start_server(**options: Any) -> RocketliteServer:
    """Start a :class:`RocketliteServer` (same options) and return it; call ``.stop()`` when done."""
    return RocketliteServer(**options).start()
