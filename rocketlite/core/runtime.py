"""What the core needs from the outside world: a clock, events, sleeping.

The core never imports trio; the app hands it a :class:`Runtime` (``rocketlite.runtime.TrioRuntime``
in production and tests). Because every delay, timeout and deadline in the core goes through
``now_ms``/``sleep_until_ms``/``wait``, a test under ``trio.testing.MockClock(autojump_threshold=0)``
runs a one-hour delay in milliseconds of wall time.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Protocol


class Event(Protocol):
    def set(self) -> None: ...
    def is_set(self) -> bool: ...
    async def wait(self) -> None: ...


class Runtime(Protocol):
    def now_ms(self) -> int:
        """Milliseconds since the Unix epoch, as the injected clock sees it."""

    def event(self) -> Event:
        """A new one-shot event."""

    async def sleep_ms(self, ms: float) -> None:
        """Sleep for ``ms`` milliseconds of the injected clock."""

    async def wait(self, event: Event, timeout_ms: float) -> bool:
        """Wait for ``event`` at most ``timeout_ms``; True if it was set."""

    async def checkpoint(self) -> None:
        """Yield to the scheduler."""

    def spawn(self, fn: Callable[[], Awaitable[object]]) -> None:
        """Run ``fn`` as a background task owned by the broker's lifetime."""
