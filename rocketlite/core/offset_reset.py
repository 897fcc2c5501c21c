"""Admin offset resets that reach live consumers.

Public API (reached through :class:`~rocketlite.core.broker.Broker`)
------------------------------------------------------------------
* ``await broker.reset_offsets(group, topic, {queue_id: offset}) -> {queue_id: offset}``: move the
  group's position in those queues of ``topic``. Each target is clamped to the queue's
  ``[min, max]``; the clamped values are returned. One store write commits the consumer offsets
  and, when the group consumes ``topic`` by POP (gRPC simple/push consumers, remoting POP), its
  POP position. Then every listener is told.
* ``await broker.resets.targets_for_time(topic, timestamp_ms, queue_id=None) -> {queue_id: offset}``:
  the offset of the first message stored at or after ``timestamp_ms`` in each queue (``-1``: each
  queue's maximum, RocketMQ's "latest"); only ``queue_id`` when given.
* ``broker.resets.listeners``: ``fn(group, topic, {queue_id: offset})`` called after a reset (a
  front-end tells its clients: remoting pushes RESET_CONSUMER_CLIENT_OFFSET).
* ``broker.resets.pending(group, topic, queue_id)`` / ``take(...)``: the target of a reset that the
  group's readers of that queue have not caught up with yet (see below), and taking it (once).

Theory of operation
-------------------
Committed offsets are only half of a consumer's position: a running push consumer (remoting)
reads from its own in-memory offsets and commits them periodically, so a reset that only
rewrote the committed offsets would be overwritten a few seconds later. Two mechanisms reach
clients that are running, as in Apache RocketMQ:

* notification (RocketMQ 4.x): listeners push the new offsets to each online client, which
  drops what it has buffered and continues from them;
* the *pending reset* (RocketMQ 5.x "server side reset offset"): until a reader of that queue
  shows up at the target, front-ends answer its next read at any other offset with "offset
  moved, continue at <target>" and ignore the group's offset commits for that queue, which
  would otherwise restore the old position. The first read takes the pending reset, so this
  happens once. Only made when the group has consumers online (a consumer that starts later
  reads the committed offset), dropped after ``PENDING_TTL_MS`` if nobody took it, and kept in
  memory only (a restart also restarts the clients' reads from the committed offsets).

Long-polled pulls of those queues are woken so that a reader parked at the old position
comes back at once instead of after its hold time.

POP keeps the position on the broker, so the reset moves it directly: the POP offset of each
queue becomes the target and the queue's tracked entries (in flight, waiting to be redelivered,
FIFO-parked) are forgotten, so everything from the target is delivered again, once, as new
messages (delivery attempt 1). Receipt handles handed out before the reset become invalid:
acknowledging one fails with ``InvalidReceipt``. The group's retry queue is not touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from rocketlite.storage.base import WriteBatch

if TYPE_CHECKING:  # pragma: no cover
    from rocketlite.core.broker import Broker

log = logging.getLogger("rocketlite.reset")

# A pending reset is dropped after this long even if no reader took it (a running consumer pulls
# every queue it owns within its long-poll hold, ~15-20 s; Java clients pause 10 s after a 220).
PENDING_TTL_MS = 120_000

ResetListener = Callable[[str, str, dict[int, int]], None]  # (group, topic, {queue id: offset})


class OffsetResets:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.listeners: list[ResetListener] = []
        self._pending: dict[tuple[str, str, int], tuple[int, int]] = {}  # -> (offset, expires at ms)

    def clear(self) -> None:
        self._pending.clear()

    # -- targets -------------------------------------------------------------------------------
    async def targets_for_time(self, topic: str, timestamp_ms: int, queue_id: int | None = None) -> dict[int, int]:
        b = self.broker
        qids = b.topic_queue_ids(topic)
        if queue_id is not None and queue_id >= 0:
            qids = [q for q in qids if q == queue_id]
        out: dict[int, int] = {}
        for q in qids:
            if timestamp_ms == -1:
                out[q] = b.max_offset(topic, q)
            else:
                out[q] = await b.search_offset(topic, q, timestamp_ms)
        return out

    # -- the reset -----------------------------------------------------------------------------
    async def reset(self, group: str, topic: str, targets: dict[int, int]) -> dict[int, int]:
        from rocketlite.core.broker import T_OFFSET, offset_key

        b = self.broker
        applied: dict[int, int] = {}
        for q, off in targets.items():
            lo, hi = b.min_offset(topic, q), b.max_offset(topic, q)
            applied[int(q)] = min(max(int(off), lo), hi)
        if not applied:
            return applied
        batch = WriteBatch()
        st = b.pops._states.get((group, topic))
        if st is not None:
            await st.mutex.acquire()
        try:
            if st is not None:
                b.pops.reset_queues(st, applied, batch)
            for q, off in applied.items():
                key = offset_key(group, topic, q)
                b._offsets[key] = off
                batch.puts.append((T_OFFSET, key, off))
            await b.write(batch)
        finally:
            if st is not None:
                st.mutex.release()
        if st is not None:
            b.pops._wake_state(st)
        online = bool(b.consumers_of(group))  # nobody running: nothing to hold against
        until = b.now_ms() + PENDING_TTL_MS
        for q, off in applied.items():
            if online:
                self._pending[(group, topic, q)] = (off, until)
            else:
                self._pending.pop((group, topic, q), None)
            b.interrupt_pulls(topic, q)
        log.info("offsets of %s on %s reset to %s", group, topic, applied)
        for fn in list(self.listeners):
            try:
                fn(group, topic, dict(applied))
            except Exception:  # pragma: no cover - a front-end's bug must not fail the reset
                log.exception("offset reset listener failed")
        return applied

    # -- pending resets ------------------------------------------------------------------------
    def pending(self, group: str, topic: str, queue_id: int) -> int | None:
        if not self._pending:
            return None
        found = self._pending.get((group, topic, queue_id))
        if found is None:
            return None
        if found[1] < self.broker.now_ms():
            del self._pending[(group, topic, queue_id)]
            return None
        return found[0]

    def take(self, group: str, topic: str, queue_id: int) -> int | None:
        off = self.pending(group, topic, queue_id)
        if off is not None:
            del self._pending[(group, topic, queue_id)]
        return off

    def drop_group(self, group: str) -> None:
        for k in [k for k in self._pending if k[0] == group]:
            del self._pending[k]
