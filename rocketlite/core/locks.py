"""Queue locks for orderly remoting consumers (LOCK_BATCH_MQ / UNLOCK_BATCH_MQ).

Public API (reached through :class:`~rocketlite.core.broker.Broker`)
------------------------------------------------------------------
* ``broker.lock_queues(group, client_id, [(topic, queue_id), ...]) -> set[(topic, queue_id)]``:
  locks (or renews) each queue that is free, already held by ``client_id``, or whose holder's
  lock expired (``BrokerSettings.lock_max_live_ms``, 60 s); returns the queues this client holds now.
* ``broker.unlock_queues(group, client_id, [(topic, queue_id), ...])``: releases those held by it.
* ``broker.locks.holder(group, topic, queue_id) -> str | None`` (live holder),
  ``broker.locks.is_locked_by(group, topic, queue_id, client_id)``, ``broker.locks.held_by(group, client_id)``.

Locks live in memory only, as in RocketMQ: clients re-lock every 20 s and after a restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:  # pragma: no cover
    from rocketlite.core.broker import Broker

QueueRef = tuple[str, int]


class QueueLocks:
    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self._locks: dict[tuple[str, str, int], tuple[str, int]] = {}  # -> (client id, last renewal)

    def clear(self) -> None:
        self._locks.clear()

    def _live(self, key: tuple[str, str, int], now: int) -> tuple[str, int] | None:
        held = self._locks.get(key)
        if held is None:
            return None
        if now - held[1] > self.broker.settings.lock_max_live_ms:
            del self._locks[key]
            return None
        return held

    def lock(self, group: str, client_id: str, queues: Iterable[QueueRef]) -> set[QueueRef]:
        now = self.broker.now_ms()
        out: set[QueueRef] = set()
        for topic, qid in queues:
            key = (group, topic, int(qid))
            held = self._live(key, now)
            if held is None or held[0] == client_id:
                self._locks[key] = (client_id, now)
                out.add((topic, int(qid)))
        return out

    def unlock(self, group: str, client_id: str, queues: Iterable[QueueRef]) -> None:
        for topic, qid in queues:
            key = (group, topic, int(qid))
            held = self._locks.get(key)
            if held is not None and held[0] == client_id:
                del self._locks[key]

    def unlock_client(self, client_id: str) -> None:
        for key in [k for k, v in self._locks.items() if v[0] == client_id]:
            del self._locks[key]

    def holder(self, group: str, topic: str, queue_id: int) -> str | None:
        held = self._live((group, topic, int(queue_id)), self.broker.now_ms())
        return held[0] if held else None

    def is_locked_by(self, group: str, topic: str, queue_id: int, client_id: str) -> bool:
        return self.holder(group, topic, queue_id) == client_id

    def held_by(self, group: str, client_id: str) -> set[QueueRef]:
        now = self.broker.now_ms()
        return {(t, q) for (g, t, q) in list(self._locks) if g == group and (h := self._live((g, t, q), now)) and h[0] == client_id}
