"""The memory store: the same contract as LMDB, nothing on disk (``--ephemeral``, test fixtures)."""

from __future__ import annotations

import bisect
import copy
from typing import Any, Iterable, Sequence

from rocketlite.core.message import PROP_UNIQ_KEY, Message, tag_hash
from rocketlite.storage.base import AppendResult, IndexEntry, WriteBatch


class _Queue:
    __slots__ = ("base", "entries")

    def __init__(self) -> None:
        self.base = 0  # queue offset of entries[0]
        self.entries: list[IndexEntry] = []

    @property
    def max(self) -> int:
        return self.base + len(self.entries)


class MemoryStore:
    def __init__(self) -> None:
        self.clear_sync()

    def clear_sync(self) -> None:
        self._log: dict[int, Message] = {}
        self._log_head = 0
        self._next = 0
        self._queues: dict[tuple[str, int], _Queue] = {}
        self._keys: dict[str, list[int]] = {}
        self._tables: dict[str, dict[bytes, Any]] = {}
        self._sorted: dict[str, list[bytes]] = {}
        self._bytes = 0
        self._commits = 0

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def clear(self) -> None:
        self.clear_sync()

    async def write(self, batch: WriteBatch) -> list[AppendResult]:
        results = []
        for msg in batch.messages:
            q = self._queues.get((msg.topic, msg.queue_id))
            if q is None:
                q = self._queues[(msg.topic, msg.queue_id)] = _Queue()
            msg.commit_offset = self._next
            msg.queue_offset = q.max
            self._next += 1
            stored = msg.copy()
            self._log[msg.commit_offset] = stored
            size = len(msg.body)
            self._bytes += size
            q.entries.append(IndexEntry(msg.queue_offset, msg.commit_offset, tag_hash(msg.tags), size, msg.store_timestamp))
            for key in msg.key_list:
                self._keys.setdefault(key, []).append(msg.commit_offset)
            uniq = msg.properties.get(PROP_UNIQ_KEY)
            if uniq:
                self._keys.setdefault(uniq, []).append(msg.commit_offset)
            results.append(AppendResult(msg.commit_offset, msg.queue_offset))
        for table, key, value in batch.puts:
            t = self._tables.setdefault(table, {})
            if key not in t:
                bisect.insort(self._sorted.setdefault(table, []), key)
            t[key] = copy.deepcopy(value)
        for table, key in batch.deletes:
            t = self._tables.get(table)
            if t is not None and key in t:
                del t[key]
                keys = self._sorted[table]
                del keys[bisect.bisect_left(keys, key)]
        self._commits += 1
        return results

    async def read_index(self, topic: str, queue_id: int, offset: int, max_count: int) -> list[IndexEntry]:
        q = self._queues.get((topic, queue_id))
        if q is None:
            return []
        start = max(offset, q.base) - q.base
        return q.entries[start : start + max(0, max_count)]

    async def read_messages(self, commit_offsets: Sequence[int]) -> list[Message | None]:
        out: list[Message | None] = []
        for off in commit_offsets:
            m = self._log.get(off)
            out.append(m.copy() if m is not None else None)
        return out

    async def read_queue(self, topic: str, queue_id: int, offset: int, max_count: int) -> list[Message]:
        entries = await self.read_index(topic, queue_id, offset, max_count)
        msgs = await self.read_messages([e.commit_offset for e in entries])
        return [m for m in msgs if m is not None]

    def min_offset(self, topic: str, queue_id: int) -> int:
        q = self._queues.get((topic, queue_id))
        return q.base if q else 0

    def max_offset(self, topic: str, queue_id: int) -> int:
        q = self._queues.get((topic, queue_id))
        return q.max if q else 0

    def queues(self) -> Iterable[tuple[str, int]]:
        return list(self._queues)

    def commit_log_max(self) -> int:
        return self._next

    async def offset_for_timestamp(self, topic: str, queue_id: int, timestamp_ms: int) -> int:
        q = self._queues.get((topic, queue_id))
        if q is None:
            return 0
        for e in q.entries:
            if e.store_timestamp >= timestamp_ms:
                return e.queue_offset
        return q.max

    async def lookup_key(self, key: str, max_count: int = 64) -> list[int]:
        return [o for o in self._keys.get(key, []) if o in self._log][-max_count:]

    async def get(self, table: str, key: bytes) -> Any | None:
        v = self._tables.get(table, {}).get(key)
        return copy.deepcopy(v)

    async def scan(
        self, table: str, start: bytes = b"", end: bytes | None = None, limit: int | None = None
    ) -> list[tuple[bytes, Any]]:
        keys = self._sorted.get(table, [])
        t = self._tables.get(table, {})
        i = bisect.bisect_left(keys, start)
        out = []
        while i < len(keys) and (end is None or keys[i] < end):
            out.append((keys[i], copy.deepcopy(t[keys[i]])))
            if limit is not None and len(out) >= limit:
                break
            i += 1
        return out

    async def retain(self, *, max_age_ms: int | None, max_bytes: int | None, now_ms: int) -> int:
        removed = 0
        while self._log_head < self._next:
            m = self._log.get(self._log_head)
            if m is None:
                self._log_head += 1
                continue
            too_old = max_age_ms is not None and now_ms - m.store_timestamp > max_age_ms
            too_big = max_bytes is not None and self._bytes > max_bytes
            if not (too_old or too_big):
                break
            del self._log[self._log_head]
            self._bytes -= len(m.body)
            q = self._queues[(m.topic, m.queue_id)]
            if q.entries and q.entries[0].commit_offset == m.commit_offset:
                q.entries.pop(0)
                q.base += 1
            self._log_head += 1
            removed += 1
        return removed

    def stats(self) -> dict[str, int]:
        return {"messages": len(self._log), "bytes": self._bytes, "commits": self._commits, "fsyncs": 0}
