"""Delayed delivery: RocketMQ delay levels and arbitrary deliver times.

Public API (reached through :class:`~rocketlite.core.broker.Broker`)
------------------------------------------------------------------
* ``broker.send([msg])`` honours, in this order of precedence:

  - ``TIMER_DELIVER_MS`` (``PROP_DELIVER_TIME_MS``): absolute epoch milliseconds;
  - ``TIMER_DELAY_MS`` / ``TIMER_DELAY_SEC``: relative delay;
  - ``DELAY`` (``PROP_DELAY_LEVEL``): RocketMQ level 1..18 (clamped to 18), see :data:`DELAY_LEVELS_MS`.

  A due time in the past (or level <= 0) stores the message normally. The :class:`SendResult`
  of a delayed message carries ``recall_handle`` (the timer id).
* ``await broker.recall(handle)`` cancels a pending delayed message; ``handle`` is the
  ``recall_handle`` or the message's unique id (cancels every pending timer of that id).
  Returns True when something was cancelled.
* ``broker.timers.pending()`` lists pending timers (for admin/tests).

Theory of operation
-------------------
A delayed message is appended to the system topic :data:`TIMER_TOPIC` (queue 0) with its real
topic and queue in ``REAL_TOPIC``/``REAL_QID`` and, in the same atomic batch, a row in the
``timer`` table keyed ``deliver_at (8 bytes BE) + timer id``. The timer id is also appended to
the stored copy's keys, so the key index finds the copy again after a restart (the commit
offset is not known before the batch commits). The timer service sleeps until the earliest
due time (woken early when an earlier timer arrives), then re-appends due messages to their
real topic with the same unique id and, in the same batch, deletes the timer rows. So a timer
is delivered once, survives a restart, and a recall that wins the race removes it for good.
"""

from __future__ import annotations

import heapq
import logging
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rocketlite.core.message import (
    PROP_DELAY_LEVEL,
    PROP_DELIVER_TIME_MS,
    PROP_REAL_QUEUE_ID,
    PROP_REAL_TOPIC,
    Message,
    new_unique_id,
)
from rocketlite.storage.base import WriteBatch

if TYPE_CHECKING:  # pragma: no cover
    from rocketlite.core.broker import Broker

log = logging.getLogger("rocketlite.timers")

TIMER_TOPIC = "rmq_sys_wheel_timer"
T_TIMER = "timer"
PROP_DELAY_SEC = "TIMER_DELAY_SEC"
PROP_DELAY_MS = "TIMER_DELAY_MS"
PROP_TIMER_ID = "__RL_TIMER_ID"

# "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"
DELAY_LEVELS_MS: tuple[int, ...] = tuple(
    s * 1000
    for s in (1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200)
)
MAX_DELAY_LEVEL = len(DELAY_LEVELS_MS)
DEFAULT_DELAY_LEVELS = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h"
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_delay_levels(spec: str) -> tuple[int, ...]:
    """RocketMQ's ``messageDelayLevel`` ("1s 5s 10s ... 2h": numbers with ms/s/m/h/d) in milliseconds."""
    out = []
    for part in spec.split():
        num = part.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = part[len(num):]
        if unit not in _UNIT_MS or not num:
            raise ValueError(f"bad delay level {part!r} in {spec!r}: a number with ms, s, m, h or d")
        ms = int(float(num) * _UNIT_MS[unit])
        if ms <= 0:
            raise ValueError(f"delay level {part!r} must be positive")
        out.append(ms)
    if not out:
        raise ValueError("message_delay_level names no level")
    return tuple(out)

_DELAY_PROPS = (PROP_DELAY_LEVEL, PROP_DELAY_SEC, PROP_DELAY_MS)


def delay_level_ms(level: int, levels: tuple[int, ...] = DELAY_LEVELS_MS) -> int:
    """Milliseconds of a RocketMQ delay level (clamped to 1..len(levels), 18 by default)."""
    level = max(1, min(len(levels), int(level)))
    return levels[level - 1]


def _int(v: str | None) -> int | None:
    if v is None or v == "":
        return None
    try:
        return int(float(v))
    except ValueError:
        return None


def deliver_time(msg: Message, now_ms: int, levels: tuple[int, ...] = DELAY_LEVELS_MS) -> int | None:
    """When a message asks to be delivered (epoch ms), or None for "now"."""
    p = msg.properties
    at = _int(p.get(PROP_DELIVER_TIME_MS))
    if at is None:
        ms = _int(p.get(PROP_DELAY_MS))
        if ms is None:
            sec = _int(p.get(PROP_DELAY_SEC))
            ms = sec * 1000 if sec is not None else None
        if ms is not None:
            at = now_ms + ms
    if at is None:
        level = _int(p.get(PROP_DELAY_LEVEL))
        if level is not None and level > 0:
            at = now_ms + delay_level_ms(level, levels)
    if at is None or at <= now_ms:
        return None
    return at


def timer_key(deliver_at: int, tid: str) -> bytes:
    return struct.pack(">Q", max(0, deliver_at)) + tid.encode()


@dataclass(slots=True)
class TimerEntry:
    deliver_at: int
    tid: str
    uid: str
    topic: str
    queue_id: int
    commit_offset: int = -1
    delivering: bool = False

    @property
    def key(self) -> bytes:
        return timer_key(self.deliver_at, self.tid)

    def record(self) -> dict[str, Any]:
        return {"at": self.deliver_at, "tid": self.tid, "uid": self.uid, "topic": self.topic, "qid": self.queue_id}


_MSG_FIELDS = ("topic", "body", "queue_id", "tags", "keys", "properties", "flag", "sys_flag", "born_timestamp",
               "born_host", "store_timestamp", "reconsume_times")


def message_record(m: Message) -> dict[str, Any]:
    return {f: getattr(m, f) for f in _MSG_FIELDS}


def message_from_record(rec: dict[str, Any]) -> Message:
    return Message(**{f: rec[f] for f in _MSG_FIELDS if f in rec})


def strip_key(keys: str, token: str) -> str:
    return " ".join(k for k in keys.split(" ") if k and k != token)


class Timers:
    """The timer index in memory (a heap) in front of the durable ``timer`` table."""

    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self._entries: dict[str, TimerEntry] = {}
        self._by_uid: dict[str, set[str]] = {}
        self._heap: list[tuple[int, str]] = []
        self._wake = broker.runtime.event()
        self.delivered = 0

    # -- state ---------------------------------------------------------------------------------
    def clear(self) -> None:
        self._entries.clear()
        self._by_uid.clear()
        self._heap.clear()
        self._wake.set()

    async def load(self) -> None:
        self.clear()
        for _, rec in await self.broker.store.scan(T_TIMER):
            e = TimerEntry(int(rec["at"]), rec["tid"], rec.get("uid", ""), rec["topic"], int(rec.get("qid", 0)))
            self._add(e)

    def _add(self, e: TimerEntry) -> None:
        self._entries[e.tid] = e
        if e.uid:
            self._by_uid.setdefault(e.uid, set()).add(e.tid)
        heapq.heappush(self._heap, (e.deliver_at, e.tid))
        if self._heap[0][1] == e.tid:
            self._wake.set()

    def _remove(self, e: TimerEntry) -> None:
        self._entries.pop(e.tid, None)
        tids = self._by_uid.get(e.uid)
        if tids is not None:
            tids.discard(e.tid)
            if not tids:
                del self._by_uid[e.uid]

    def pending(self) -> list[TimerEntry]:
        return sorted(self._entries.values(), key=lambda e: (e.deliver_at, e.tid))

    def __len__(self) -> int:
        return len(self._entries)

    # -- scheduling ----------------------------------------------------------------------------
    def prepare(self, msg: Message, deliver_at: int) -> tuple[Message, list[tuple[str, bytes, Any]], TimerEntry]:
        """The timer-topic copy of ``msg`` (already routed to its real queue) and the table row.

        The caller appends the copy and the puts in one batch, then calls :meth:`committed`.
        """
        tid = new_unique_id(self.broker.now_ms())
        stored = msg.copy(topic=TIMER_TOPIC, queue_id=0)
        stored.properties[PROP_REAL_TOPIC] = msg.topic
        stored.properties[PROP_REAL_QUEUE_ID] = str(msg.queue_id)
        stored.properties[PROP_DELIVER_TIME_MS] = str(deliver_at)
        stored.properties[PROP_TIMER_ID] = tid
        stored.keys = (msg.keys + " " + tid).strip()
        e = TimerEntry(deliver_at, tid, msg.unique_id, msg.topic, msg.queue_id)
        rec = e.record()
        s = self.broker.settings
        now = self.broker.now_ms()
        if s.retention_bytes is not None or (s.retention_age_ms is not None and deliver_at - now > s.retention_age_ms // 2):
            rec["msg"] = message_record(stored)  # retention may remove the log copy before it is due
        return stored, [(T_TIMER, e.key, rec)], e

    def committed(self, e: TimerEntry, stored: Message) -> None:
        e.commit_offset = stored.commit_offset
        self._add(e)

    async def recall(self, handle: str) -> bool:
        tids = [handle] if handle in self._entries else list(self._by_uid.get(handle, ()))
        entries = [self._entries[t] for t in tids if t in self._entries and not self._entries[t].delivering]
        if not entries:
            return False
        for e in entries:
            self._remove(e)
        await self.broker.store.write(WriteBatch(deletes=[(T_TIMER, e.key) for e in entries]))
        return True

    # -- delivery ------------------------------------------------------------------------------
    def next_due(self) -> int | None:
        while self._heap:
            at, tid = self._heap[0]
            e = self._entries.get(tid)
            if e is None or e.deliver_at != at or e.delivering:
                heapq.heappop(self._heap)
                continue
            return at
        return None

    async def run(self) -> None:
        """The timer service (one of ``broker.services``)."""
        rt = self.broker.runtime
        while True:
            due = self.next_due()
            now = self.broker.now_ms()
            if due is None or due > now:
                if self._wake.is_set():
                    self._wake = rt.event()
                timeout = (due - now) if due is not None else 3_600_000
                await rt.wait(self._wake, timeout)
                continue
            try:
                await self.deliver_due(now)
            except Exception:  # pragma: no cover - keep the service alive
                log.exception("timer delivery failed")
                await rt.sleep_ms(1000)

    async def deliver_due(self, now: int, limit: int = 256) -> int:
        batch_entries: list[TimerEntry] = []
        while self._heap and len(batch_entries) < limit:
            at, tid = self._heap[0]
            e = self._entries.get(tid)
            if e is None or e.deliver_at != at or e.delivering:
                heapq.heappop(self._heap)
                continue
            if at > now:
                break
            heapq.heappop(self._heap)
            e.delivering = True
            batch_entries.append(e)
        if not batch_entries:
            return 0
        store = self.broker.store
        for e in batch_entries:
            if e.commit_offset < 0:
                offs = await store.lookup_key(e.tid, 4)
                e.commit_offset = offs[-1] if offs else -1
        msgs = await store.read_messages([max(0, e.commit_offset) for e in batch_entries])
        batch = WriteBatch()
        for e, m in zip(batch_entries, msgs):
            batch.deletes.append((T_TIMER, e.key))
            if e.commit_offset < 0 or m is None or m.properties.get(PROP_TIMER_ID) != e.tid:
                rec = await store.get(T_TIMER, e.key)
                m = message_from_record(rec["msg"]) if rec and rec.get("msg") else None
                if m is None:
                    log.warning("timer %s: message gone (retention?), dropped", e.tid)
                    continue
            batch.messages.append(await self.restore(m, e, now))
        try:
            await self.broker.write(batch)
        except BaseException:
            for e in batch_entries:
                e.delivering = False
                heapq.heappush(self._heap, (e.deliver_at, e.tid))
            raise
        for e in batch_entries:
            self._remove(e)
        self.delivered += len(batch.messages)
        return len(batch.messages)

    async def restore(self, m: Message, e: TimerEntry, now: int) -> Message:
        real = m.copy(topic=m.properties.get(PROP_REAL_TOPIC, e.topic))
        props = real.properties
        try:
            qid = int(props.get(PROP_REAL_QUEUE_ID, e.queue_id))
        except ValueError:
            qid = e.queue_id
        for k in (PROP_REAL_TOPIC, PROP_REAL_QUEUE_ID, PROP_TIMER_ID, *_DELAY_PROPS):
            props.pop(k, None)
        real.keys = strip_key(real.keys, e.tid)
        tc = self.broker.topics.get(real.topic)
        if tc is None:
            try:
                tc = await self.broker.get_or_create_topic(real.topic, queues=1 if real.topic.startswith("%") else None)
            except Exception:
                tc = None
        n = tc.write_queues if tc is not None else 1
        real.queue_id = qid if 0 <= qid < n else qid % max(1, n)
        real.store_timestamp = now
        real.queue_offset = -1
        real.commit_offset = -1
        return real
