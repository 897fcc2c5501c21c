"""The Trio implementation of the core's :class:`~rocketlite.core.runtime.Runtime`."""

from __future__ import annotations

import time
from typing import Awaitable, Callable

import trio


class TrioRuntime:
    """Clock and events on Trio.

    Wall time is derived from ``trio.current_time()`` plus a fixed offset taken at start, so a
    MockClock moves the broker's idea of "now" too (delays, invisibility and check-backs jump).
    """

    def __init__(self, nursery: trio.Nursery | None = None) -> None:
        self._offset_ms = time.time() * 1000.0 - trio.current_time() * 1000.0
        self._nursery = nursery

    def attach(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def now_ms(self) -> int:
        return int(self._offset_ms + trio.current_time() * 1000.0)

    def event(self) -> trio.Event:
        return trio.Event()

    async def sleep_ms(self, ms: float) -> None:
        await trio.sleep(max(0.0, ms) / 1000.0)

    async def wait(self, event: trio.Event, timeout_ms: float) -> bool:
        if event.is_set():
            return True
        with trio.move_on_after(max(0.0, timeout_ms) / 1000.0):
            await event.wait()
            return True
        return False

    async def checkpoint(self) -> None:
        await trio.lowlevel.checkpoint()

    def spawn(self, fn: Callable[[], Awaitable[object]]) -> None:
        if self._nursery is None:
            raise RuntimeError("runtime has no nursery attached")
        self._nursery.start_soon(fn)
