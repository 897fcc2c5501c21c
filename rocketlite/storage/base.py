"""The storage interface (no implementation, no I/O framework).

Concepts
--------
* **Commit log**: every message, from every protocol, appended once; a global, increasing
  ``commit_offset`` (a record number, not a byte position) addresses it.
* **Consume queue** per ``(topic, queue_id)``: logical ``queue_offset`` 0, 1, 2, ... mapping to
  the commit offset plus tag hash, size and store time, so pulls and tag filters never scan the log.
  Queue offsets of a queue are dense and survive retention (the minimum moves up).
* **Key/id index**: each key in ``Message.keys`` and the ``UNIQ_KEY`` property map to commit offsets.
* **Tables**: named ordered maps ``bytes -> value`` (value: anything cbor2 encodes) written in the
  same atomic batch as appends. The core keeps consumer offsets, topic/group metadata, timers,
  half messages, POP state, MQTT sessions and retained messages in them.

All mutating calls go through :meth:`Store.write`; one call is one atomic unit. Concurrent
callers may be merged into one transaction (group commit); ``write`` returns once the batch is
committed, and, with ``flush="sync"``, durable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple, Protocol, Sequence

from rocketlite.core.message import Message


@dataclass(slots=True)
class WriteBatch:
    """One atomic unit of change: messages to append, table puts and deletes."""

    messages: list[Message] = field(default_factory=list)
    puts: list[tuple[str, bytes, Any]] = field(default_factory=list)
    deletes: list[tuple[str, bytes]] = field(default_factory=list)


# Named tuples rather than frozen dataclasses: one is built per appended or read message, and a
# frozen slotted dataclass costs about 2.5x as much to construct (measured in the storage bench).
class AppendResult(NamedTuple):
    commit_offset: int
    queue_offset: int


class IndexEntry(NamedTuple):
    """One consume-queue entry."""

    queue_offset: int
    commit_offset: int
    tag_hash: int
    size: int
    store_timestamp: int


class Store(Protocol):
    """The narrow storage interface every front-end reaches only through the core."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    async def write(self, batch: WriteBatch) -> list[AppendResult]:
        """Append ``batch.messages`` (assigning queue and commit offsets, filling the objects'
        ``queue_offset``/``commit_offset``) and apply puts/deletes, atomically."""

    # -- commit log and consume queues -------------------------------------------------------
    async def read_index(self, topic: str, queue_id: int, offset: int, max_count: int) -> list[IndexEntry]:
        """Consume-queue entries from ``offset`` (clamped to the minimum), at most ``max_count``."""

    async def read_messages(self, commit_offsets: Sequence[int]) -> list[Message | None]:
        """The messages at these commit offsets (None where retention removed one)."""

    async def read_queue(self, topic: str, queue_id: int, offset: int, max_count: int) -> list[Message]:
        """Messages of one queue from ``offset``, at most ``max_count`` (index + log in one go)."""

    def min_offset(self, topic: str, queue_id: int) -> int:
        """Smallest queue offset still stored (== max when empty)."""

    def max_offset(self, topic: str, queue_id: int) -> int:
        """Next queue offset to be assigned (count of messages ever appended)."""

    def queues(self) -> Iterable[tuple[str, int]]:
        """Every (topic, queue id) with at least one message ever appended."""

    async def offset_for_timestamp(self, topic: str, queue_id: int, timestamp_ms: int) -> int:
        """First queue offset whose store time is >= ``timestamp_ms`` (max offset if none)."""

    async def lookup_key(self, key: str, max_count: int = 64) -> list[int]:
        """Commit offsets of messages carrying ``key`` in their keys or as their unique id."""

    def commit_log_max(self) -> int:
        """Next commit offset to be assigned."""

    # -- tables ------------------------------------------------------------------------------
    async def get(self, table: str, key: bytes) -> Any | None: ...

    async def scan(
        self, table: str, start: bytes = b"", end: bytes | None = None, limit: int | None = None
    ) -> list[tuple[bytes, Any]]:
        """Entries with ``start <= key < end`` in key order."""

    # -- housekeeping ------------------------------------------------------------------------
    async def retain(self, *, max_age_ms: int | None, max_bytes: int | None, now_ms: int) -> int:
        """Delete from the head of the log what is older or beyond the size budget; returns count."""

    async def clear(self) -> None:
        """Remove everything (tests' reset)."""

    def stats(self) -> dict[str, int]:
        """Counters for metrics: messages, bytes, commits, fsyncs, ..."""
