"""POP consumption: invisible time, receipt handles, redelivery, FIFO message groups.

Public API (reached through :class:`~rocketlite.core.broker.Broker`)
------------------------------------------------------------------
* ``await broker.pop(group, topic, max_count, invisible_ms, *, queue_id=None, filter=MATCH_ALL,
  wait_ms=0, fifo=False, client_id="", init_mode="first") -> list[tuple[Message, str]]``:
  hands out up to ``max_count`` messages of ``topic`` (every queue when ``queue_id`` is None or
  < 0, else that queue) and of ``%RETRY%<group>`` (messages whose ``RETRY_TOPIC`` is ``topic``),
  each with a receipt handle; each stays invisible to the group for ``invisible_ms``. With
  ``wait_ms`` > 0 and nothing to hand out it long-polls (woken by writes to the topic or its
  retry topic, by acks releasing a FIFO group, and by invisibility expiring). Returned messages
  are copies: ``topic`` is the subscribed topic (also for retry-topic messages),
  ``reconsume_times`` = delivery attempt - 1 (so gRPC ``delivery_attempt = reconsume_times + 1``),
  ``queue_id``/``queue_offset`` are those of the queue it was read from (see :func:`parse_handle`).
  A new group starts at the group's committed consumer offset if any, else at the first
  (``init_mode="first"``) or next (``"last"``) message.
* ``await broker.ack(group, topic, handle)``: done with it. Raises
  :class:`~rocketlite.core.errors.InvalidReceipt` for an unknown, superseded or already
  acked/dead-lettered handle. An expired handle still acks while the message has not been
  handed out again.
* ``await broker.ack_batch(group, topic, handles) -> list[InvalidReceipt | None]``: several in one
  store write (remoting BATCH_ACK_MESSAGE, gRPC AckMessage with several entries).
* ``await broker.change_invisible(group, topic, handle, invisible_ms) -> str``: invisible for
  ``invisible_ms`` from now; returns the new handle, the old one becomes invalid. Does not count
  a delivery attempt (the next redelivery does).
* ``await broker.pop_to_dlq(group, topic, handle) -> SendResult``: move the message to
  ``%DLQ%<group>`` and treat it as acked (gRPC ForwardMessageToDeadLetterQueue).
* ``await broker.pops.release_client(client_id, visible_in_ms=0) -> int``: what that client
  holds (popped with ``client_id=``) becomes visible again soon (client gone, NotifyClientTermination).
* ``parse_handle(handle) -> ReceiptHandle(retry, queue_id, offset, nonce)`` (ValueError if malformed);
  ``ReceiptHandle.nonce_int`` is the nonce as a number < 2**60 and
  ``make_handle(retry, queue_id, offset, nonce_or_int)`` rebuilds the handle, so a protocol whose
  receipt is a set of numbers (remoting POP_CK extraInfo) can carry it and give it back.
* ``broker.pops.inflight(group, topic)`` -> entries (admin/tests).

Theory of operation
-------------------
State per (group, topic): a *pop offset* per source queue (the topic's queues and the group's
retry queue; everything below it has been looked at) and *entries* for messages looked at but
not yet done: in flight (a current nonce and a deadline), expired (deadline passed: visible
again), or, in FIFO mode, waiting behind an earlier message of the same message group. Both
live in tables (``pop_offset``, ``pop``) and are changed in the same batch as the move they
describe, so the state survives a restart (handles too: the nonce is stored).

A pop first re-delivers visible entries in commit-log order (attempt + 1, new nonce), then reads
new messages from the queues. Messages that do not match the filter are skipped for good (like
RocketMQ). An entry whose deliveries reached ``max_reconsume_times + 1`` (group config, default
16 + 1 = 17 attempts) goes to ``%DLQ%<group>`` instead of being redelivered, either when a pop
finds it or when the revive service sees it expire.

FIFO (``fifo=True``): a message whose message group (``__SHARDINGKEY``) already has an entry
(in flight, expired or waiting) is not handed out; a new one becomes a *waiting* entry, so the
pop offset can move past it and other groups proceed. The earliest entry of a group is the
only one that can be handed out, so order per group is strict, redeliveries included.
Entries are bounded by ``BrokerSettings.pop_max_entries`` per (group, topic), and FIFO-waiting
ones by ``pop_fifo_lookahead``: beyond that a queue scan stops until entries drain (so a long
run of one blocked group finally blocks the queue, as RocketMQ's per-queue FIFO always does).

Every decision about a (group, topic) is made under one mutex (memory first, then the store
write), so concurrent pops never hand out the same message; ack/change only touch one entry
and check its nonce synchronously.
"""

from __future__ import annotations

import heapq
import logging
import os
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from rocketlite.core.errors import InvalidReceipt
from rocketlite.core.filters import MATCH_ALL, Filter
from rocketlite.core.message import PROP_RETRY_TOPIC, Message, SendResult
from rocketlite.core.retry import dlq_topic, dead_letter_copy, retry_topic
from rocketlite.core.runtime import Event
from rocketlite.storage.base import WriteBatch

if TYPE_CHECKING:  # pragma: no cover
    from rocketlite.core.broker import Broker

log = logging.getLogger("rocketlite.pop")

T_POP = "pop"
T_POP_OFFSET = "pop_offset"


class ReceiptHandle(NamedTuple):
    retry: bool
    queue_id: int
    offset: int
    nonce: str

    @property
    def nonce_int(self) -> int:
        """The nonce as a number < 2**60 (fits a Java long, e.g. POP_CK's ckQueueOffset)."""
        return int(self.nonce, 16)


def new_nonce() -> str:
    """15 hex digits: 60 random bits, so it also travels as a (Java long) number."""
    return f"{int.from_bytes(os.urandom(8), 'big') >> 4:015x}"


def nonce_from_int(n: int) -> str:
    return f"{n:015x}"


def make_handle(retry: bool, queue_id: int, offset: int, nonce: str | int) -> str:
    """Build a receipt handle from its parts (``nonce`` as returned by parse_handle or as an int)."""
    if isinstance(nonce, int):
        nonce = nonce_from_int(nonce)
    return f"{1 if retry else 0}{queue_id:x}.{offset:x}.{nonce}"


def parse_handle(handle: str) -> ReceiptHandle:
    """Split a receipt handle; ValueError when it is not one of ours."""
    if not isinstance(handle, str) or len(handle) > 128:
        raise ValueError("bad receipt handle")
    a, b, nonce = handle.split(".")
    if len(a) < 2 or a[0] not in "01" or not nonce:
        raise ValueError("bad receipt handle")
    return ReceiptHandle(a[0] == "1", int(a[1:], 16), int(b, 16), nonce)


def _prefix(group: str, topic: str) -> bytes:
    return f"{group}\x00{topic}\x00".encode()


def _split(key: bytes) -> tuple[str, str, bytes]:
    i = key.index(b"\x00")
    j = key.index(b"\x00", i + 1)
    return key[:i].decode(), key[i + 1 : j].decode(), key[j + 1 :]


@dataclass(slots=True)
class PopEntry:
    retry: bool
    queue_id: int
    offset: int
    commit_offset: int
    mgroup: str = ""
    attempts: int = 0  # deliveries so far
    deadline: int = 0  # invisible until (0: never delivered, waiting)
    nonce: str = ""
    client_id: str = ""  # who holds it now (memory only: for release_client)

    @property
    def pos(self) -> tuple[bool, int, int]:
        return (self.retry, self.queue_id, self.offset)

    def handle(self) -> str:
        return make_handle(self.retry, self.queue_id, self.offset, self.nonce)

    def visible(self, now: int) -> bool:
        return self.deadline <= now

    def record(self) -> dict[str, Any]:
        return {"c": self.commit_offset, "g": self.mgroup, "a": self.attempts, "d": self.deadline, "n": self.nonce}


class _Mutex:
    """A tiny async mutex on the injected runtime's events."""

    def __init__(self, broker: "Broker") -> None:
        self._rt = broker.runtime
        self._locked = False
        self._waiters: list[Event] = []

    async def acquire(self) -> None:
        while self._locked:
            ev = self._rt.event()
            self._waiters.append(ev)
            await ev.wait()
        self._locked = True

    def release(self) -> None:
        self._locked = False
        waiters, self._waiters = self._waiters, []
        for ev in waiters:
            ev.set()


@dataclass(slots=True)
class PopState:
    group: str
    topic: str
    mutex: _Mutex
    offsets: dict[tuple[bool, int], int] = field(default_factory=dict)
    entries: dict[tuple[bool, int, int], PopEntry] = field(default_factory=dict)
    rr: int = 0
    event: Event | None = None

    def key(self, e: PopEntry) -> bytes:
        return _prefix(self.group, self.topic) + struct.pack(">BIQ", e.retry, e.queue_id, e.offset)

    def offset_key(self, retry: bool, qid: int) -> bytes:
        return _prefix(self.group, self.topic) + struct.pack(">BI", retry, qid)


class Pops:
    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self._states: dict[tuple[str, str], PopState] = {}
        self._by_nonce: dict[str, tuple[PopState, PopEntry]] = {}
        self._heap: list[tuple[int, str]] = []
        self._wake = broker.runtime.event()
        self._interest: dict[str, set[tuple[str, str]]] = {}
        broker.write_listeners.append(self._on_write)
        self.dead_lettered = 0

    # -- state ---------------------------------------------------------------------------------
    def clear(self) -> None:
        self._states.clear()
        self._by_nonce.clear()
        self._heap.clear()
        self._wake.set()
        self._interest.clear()

    def state(self, group: str, topic: str) -> PopState:
        st = self._states.get((group, topic))
        if st is None:
            st = self._states[(group, topic)] = PopState(group, topic, _Mutex(self.broker))
        return st

    async def load(self) -> None:
        self.clear()
        store = self.broker.store
        for key, value in await store.scan(T_POP_OFFSET):
            g, t, rest = _split(key)
            r, q = struct.unpack(">BI", rest)
            self.state(g, t).offsets[(bool(r), q)] = int(value)
        for key, rec in await store.scan(T_POP):
            g, t, rest = _split(key)
            r, q, o = struct.unpack(">BIQ", rest)
            e = PopEntry(bool(r), q, o, int(rec["c"]), rec.get("g", ""), int(rec.get("a", 0)), int(rec.get("d", 0)),
                         rec.get("n", ""))
            st = self.state(g, t)
            st.entries[e.pos] = e
            self._track(st, e)

    def _track(self, st: PopState, e: PopEntry) -> None:
        if e.nonce:
            self._by_nonce[e.nonce] = (st, e)
            heap = self._heap
            if len(heap) > 2 * len(self._by_nonce) + 1024:  # acked entries linger: compact
                heap[:] = [(x.deadline, n) for n, (_, x) in self._by_nonce.items() if x.nonce == n]
                heapq.heapify(heap)
            else:
                heapq.heappush(heap, (e.deadline, e.nonce))
            if heap and heap[0][1] == e.nonce:
                self._wake.set()

    def _untrack(self, e: PopEntry) -> None:
        if e.nonce:
            self._by_nonce.pop(e.nonce, None)

    def inflight(self, group: str, topic: str) -> list[PopEntry]:
        st = self._states.get((group, topic))
        return sorted(st.entries.values(), key=lambda e: e.commit_offset) if st else []

    # -- wake-ups ------------------------------------------------------------------------------
    def _on_write(self, msgs: list[Message]) -> None:
        interest = self._interest
        if not interest:  # nobody is waiting in a POP long poll: the common case of a plain send
            return
        if len(msgs) == 1:
            if msgs[0].topic in interest:
                self._wake_topic(msgs[0].topic)
            return
        self._wake_topic(*{m.topic for m in msgs if m.topic in interest})

    def _wake_topic(self, *topics: str) -> None:
        for t in topics:
            for key in self._interest.pop(t, ()):
                st = self._states.get(key)
                if st is not None and st.event is not None:
                    st.event.set()

    def _wake_state(self, st: PopState) -> None:
        if st.event is not None:
            st.event.set()

    def _event_for(self, st: PopState, *topics: str) -> Event:
        if st.event is None or st.event.is_set():
            st.event = self.broker.runtime.event()
        for t in topics:
            self._interest.setdefault(t, set()).add((st.group, st.topic))
        return st.event

    # -- pop -----------------------------------------------------------------------------------
    async def pop(
        self,
        group: str,
        topic: str,
        max_count: int,
        invisible_ms: int,
        *,
        queue_id: int | None = None,
        filter: Filter = MATCH_ALL,
        wait_ms: float = 0,
        fifo: bool = False,
        client_id: str = "",
        init_mode: str = "first",
    ) -> list[tuple[Message, str]]:
        b = self.broker
        await b.get_or_create_topic(topic)
        gc = await b.get_or_create_group(group)
        max_count = max(1, int(max_count))
        invisible_ms = max(0, int(invisible_ms))
        deadline = b.now_ms() + max(0.0, wait_ms)
        st = self.state(group, topic)
        rtopic = retry_topic(group)
        while True:
            ev = self._event_for(st, topic, rtopic)
            await st.mutex.acquire()
            try:
                got = await self._pop_once(st, gc.max_reconsume_times + 1, max_count, invisible_ms, queue_id, filter,
                                           fifo, init_mode, client_id)
            finally:
                st.mutex.release()
            now = b.now_ms()
            if got or now >= deadline:
                return got
            timeout = deadline - now
            soonest = min((e.deadline for e in st.entries.values() if e.nonce and e.deadline > now), default=None)
            if soonest is not None:
                timeout = min(timeout, soonest - now)
            await b.runtime.wait(ev, timeout)

    async def _pop_once(
        self, st: PopState, max_attempts: int, max_count: int, invisible_ms: int, queue_id: int | None,
        filter: Filter, fifo: bool, init_mode: str, client_id: str = "",
    ) -> list[tuple[Message, str]]:
        b = self.broker
        store = b.store
        now = b.now_ms()
        limit = b.settings.pop_max_entries
        batch = WriteBatch()
        delivered: list[PopEntry] = []
        dead: list[PopEntry] = []
        msgs: dict[tuple[bool, int, int], Message] = {}
        only_q = queue_id if queue_id is not None and queue_id >= 0 else None

        # 1. entries that are visible again (expired or waiting), oldest first.
        groups_seen: set[str] = set()
        if fifo:
            groups_seen = {e.mgroup for e in st.entries.values() if e.mgroup and not e.visible(now)}
        visible = [e for e in st.entries.values() if e.deadline <= now]
        visible.sort(key=lambda e: e.commit_offset)
        for e in visible:
            if fifo and e.mgroup:
                if e.mgroup in groups_seen:
                    continue
                groups_seen.add(e.mgroup)
            if e.attempts >= max_attempts:
                dead.append(e)
                continue
            if len(delivered) >= max_count or (only_q is not None and not e.retry and e.queue_id != only_q):
                continue
            delivered.append(e)
        if dead:
            await b.get_or_create_topic(dlq_topic(st.group), queues=1)
            dmsgs = await store.read_messages([e.commit_offset for e in dead])
            for e, m in zip(dead, dmsgs):
                self._drop(st, e, batch)
                if m is not None:
                    batch.messages.append(self._dead_copy(st, e, m))
        if delivered:
            for e, m in zip(delivered, await store.read_messages([e.commit_offset for e in delivered])):
                if m is None:  # retention removed it
                    self._drop(st, e, batch)
                    continue
                msgs[e.pos] = m
            delivered = [e for e in delivered if e.pos in msgs]

        # 2. new messages, queue by queue.
        blocked = {e.mgroup for e in st.entries.values() if e.mgroup} if fifo else set()
        waiting = sum(1 for e in st.entries.values() if not e.nonce) if fifo else 0
        lookahead = b.settings.pop_fifo_lookahead
        sources: list[tuple[bool, int]] = []
        qids = b.topic_queue_ids(st.topic)
        if only_q is not None:
            qids = [only_q]
        sources += [(False, q) for q in qids]
        rtopic = retry_topic(st.group)
        sources += [(True, q) for q in b.topic_queue_ids(rtopic)]
        if sources:
            k = st.rr % len(sources)
            st.rr += 1
            sources = sources[k:] + sources[:k]
        for retry, qid in sources:
            if len(delivered) >= max_count:
                break
            src = rtopic if retry else st.topic
            hi = store.max_offset(src, qid)
            po = st.offsets.get((retry, qid))
            if po is None:
                po = self._init_offset(st, retry, src, qid, init_mode)
            po = max(po, self.broker.min_offset(src, qid))
            start = po
            while po < hi and len(delivered) < max_count and len(st.entries) < limit and waiting < lookahead:
                index = await store.read_index(src, qid, po, min(256, max(32, 2 * max_count)))
                if not index:
                    break
                want = [ie for ie in index if filter is MATCH_ALL or filter.match_index(ie.tag_hash)]
                loaded = dict(zip((ie.commit_offset for ie in want), await store.read_messages([ie.commit_offset for ie in want])))
                progressed = False
                for ie in index:
                    if len(delivered) >= max_count or len(st.entries) >= limit or waiting >= lookahead:
                        break
                    po = ie.queue_offset + 1
                    progressed = True
                    m = loaded.get(ie.commit_offset)
                    if m is None:
                        continue
                    if retry and m.properties.get(PROP_RETRY_TOPIC, st.topic) != st.topic:
                        continue
                    if filter is not MATCH_ALL and not filter.match(m if not retry else m.copy(topic=st.topic)):
                        continue
                    e = PopEntry(retry, qid, ie.queue_offset, ie.commit_offset, m.message_group if fifo else "")
                    st.entries[e.pos] = e
                    if fifo and e.mgroup and e.mgroup in blocked:
                        batch.puts.append((T_POP, st.key(e), e.record()))  # waits behind its group
                        waiting += 1
                        continue
                    if e.mgroup:
                        blocked.add(e.mgroup)
                    msgs[e.pos] = m
                    delivered.append(e)
                if not progressed:
                    break
            if po != start or (retry, qid) not in st.offsets:
                st.offsets[(retry, qid)] = po
                batch.puts.append((T_POP_OFFSET, st.offset_key(retry, qid), po))

        self._watermarks(st, [q for r, q in sources if not r], batch)
        out: list[tuple[Message, str]] = []
        for e in delivered:
            self._untrack(e)
            e.attempts += 1
            e.nonce = new_nonce()
            e.deadline = now + invisible_ms
            e.client_id = client_id
            batch.puts.append((T_POP, st.key(e), e.record()))
            self._track(st, e)
            m = msgs[e.pos]  # a fresh copy from the store: ours to change
            if e.retry:
                m.topic = st.topic
            m.reconsume_times += e.attempts - 1
            out.append((m, e.handle()))
        if batch.messages or batch.puts or batch.deletes:
            await b.write(batch)
        self.dead_lettered += len(dead)
        return out

    def _watermarks(self, st: PopState, qids: list[int], batch: WriteBatch) -> None:
        """Mirror "everything below is done" into the group's consumer offsets (admin, lag)."""
        from rocketlite.core.broker import T_OFFSET, offset_key

        lowest: dict[int, int] = {}
        for e in st.entries.values():
            if not e.retry and e.offset < lowest.get(e.queue_id, 1 << 62):
                lowest[e.queue_id] = e.offset
        offsets = self.broker._offsets
        for qid in qids:
            po = st.offsets.get((False, qid))
            if po is None:
                continue
            wm = min(po, lowest.get(qid, po))
            key = offset_key(st.group, st.topic, qid)
            if offsets.get(key) != wm:
                offsets[key] = wm
                batch.puts.append((T_OFFSET, key, wm))

    async def drop_group(self, group: str) -> None:
        """Forget a deleted group's POP state."""
        batch = WriteBatch()
        for (g, t), st in list(self._states.items()):
            if g != group:
                continue
            for e in list(st.entries.values()):
                self._drop(st, e, batch)
            for (r, q) in st.offsets:
                batch.deletes.append((T_POP_OFFSET, st.offset_key(r, q)))
            del self._states[(g, t)]
        if batch.deletes:
            await self.broker.store.write(batch)

    def reset_queues(self, st: PopState, targets: dict[int, int], batch: WriteBatch) -> None:
        """An admin offset reset (offset_reset.py; the caller holds ``st.mutex`` and writes
        ``batch``): each queue's POP offset becomes its target and the queue's entries are
        forgotten, so reading starts over there; their handles become invalid."""
        for e in list(st.entries.values()):
            if not e.retry and e.queue_id in targets:
                self._drop(st, e, batch)
        for qid, off in targets.items():
            st.offsets[(False, qid)] = off
            batch.puts.append((T_POP_OFFSET, st.offset_key(False, qid), off))

    def _init_offset(self, st: PopState, retry: bool, src: str, qid: int, init_mode: str) -> int:
        store = self.broker.store
        if retry:
            return self.broker.min_offset(src, qid)
        committed = self.broker.query_offset(st.group, st.topic, qid)
        if committed is not None and committed >= 0:
            return committed
        return store.max_offset(src, qid) if init_mode == "last" else self.broker.min_offset(src, qid)

    def _drop(self, st: PopState, e: PopEntry, batch: WriteBatch) -> None:
        st.entries.pop(e.pos, None)
        self._untrack(e)
        e.nonce = ""
        batch.deletes.append((T_POP, st.key(e)))

    def _dead_copy(self, st: PopState, e: PopEntry, m: Message) -> Message:
        src = m.copy(topic=st.topic if e.retry else m.topic)
        src.reconsume_times = m.reconsume_times + max(0, e.attempts - 1)
        return dead_letter_copy(st.group, src)

    # -- ack / change --------------------------------------------------------------------------
    def _lookup(self, group: str, topic: str, handle: str) -> tuple[PopState, PopEntry]:
        try:
            h = parse_handle(handle)
        except (ValueError, AttributeError):
            raise InvalidReceipt("malformed receipt handle") from None
        found = self._by_nonce.get(h.nonce)
        if found is None:
            raise InvalidReceipt("receipt handle expired, superseded or already acknowledged")
        st, e = found
        if st.group != group or e.nonce != h.nonce or e.pos != (h.retry, h.queue_id, h.offset):
            raise InvalidReceipt("receipt handle does not belong to this group")
        if st.entries.get(e.pos) is not e:
            raise InvalidReceipt("receipt handle is no longer valid")
        return st, e

    async def ack(self, group: str, topic: str, handle: str) -> None:
        st, e = self._lookup(group, topic, handle)
        batch = WriteBatch()
        self._drop(st, e, batch)
        await self.broker.write(batch)
        if e.mgroup:
            self._wake_state(st)

    async def ack_batch(self, group: str, topic: str, handles: list[str]) -> list[InvalidReceipt | None]:
        """Acknowledge several handles in one store write; per handle None or the error."""
        batch = WriteBatch()
        out: list[InvalidReceipt | None] = []
        wake: set[int] = set()
        states: dict[int, PopState] = {}
        for handle in handles:
            try:
                st, e = self._lookup(group, topic, handle)
            except InvalidReceipt as exc:
                out.append(exc)
                continue
            self._drop(st, e, batch)
            out.append(None)
            if e.mgroup:
                wake.add(id(st))
                states[id(st)] = st
        if batch.deletes:
            await self.broker.write(batch)
        for k in wake:
            self._wake_state(states[k])
        return out

    async def change_invisible(self, group: str, topic: str, handle: str, invisible_ms: int) -> str:
        st, e = self._lookup(group, topic, handle)
        self._untrack(e)
        e.nonce = new_nonce()
        e.deadline = self.broker.now_ms() + max(0, int(invisible_ms))
        self._track(st, e)
        await self.broker.write(WriteBatch(puts=[(T_POP, st.key(e), e.record())]))
        if invisible_ms <= 0:
            self._wake_state(st)
        return e.handle()

    async def release_client(self, client_id: str, visible_in_ms: int = 0) -> int:
        """Make what ``client_id`` holds visible again within ``visible_in_ms`` (a client went away);
        its handles stay valid until the message is handed out again. Returns how many."""
        if not client_id:
            return 0
        now = self.broker.now_ms()
        batch = WriteBatch()
        touched: list[PopState] = []
        for st, e in list(self._by_nonce.values()):
            if e.client_id != client_id or e.deadline <= now + visible_in_ms:
                continue
            e.deadline = now + max(0, visible_in_ms)
            e.client_id = ""
            heapq.heappush(self._heap, (e.deadline, e.nonce))
            batch.puts.append((T_POP, st.key(e), e.record()))
            touched.append(st)
        if batch.puts:
            self._wake.set()
            await self.broker.write(batch)
            for st in touched:
                self._wake_state(st)
        return len(batch.puts)

    async def to_dlq(self, group: str, topic: str, handle: str) -> SendResult:
        st, e = self._lookup(group, topic, handle)
        await self.broker.get_or_create_topic(dlq_topic(group), queues=1)
        if st.entries.get(e.pos) is not e:
            raise InvalidReceipt("receipt handle is no longer valid")
        batch = WriteBatch()
        self._drop(st, e, batch)
        (m,) = await self.broker.store.read_messages([e.commit_offset])
        if m is not None:
            batch.messages.append(self._dead_copy(st, e, m))
        await self.broker.write(batch)
        self.dead_lettered += 1
        if e.mgroup:
            self._wake_state(st)
        if not batch.messages:
            return SendResult(dlq_topic(group), 0, -1, -1, "")
        d = batch.messages[0]
        return SendResult(d.topic, d.queue_id, d.queue_offset, d.commit_offset, d.unique_id)

    # -- revive service ------------------------------------------------------------------------
    async def run(self) -> None:
        """Wake pollers when invisibility ends; dead-letter entries out of attempts."""
        rt = self.broker.runtime
        while True:
            now = self.broker.now_ms()
            due: list[tuple[PopState, PopEntry]] = []
            while self._heap:
                at, nonce = self._heap[0]
                found = self._by_nonce.get(nonce)
                if found is None or found[1].deadline != at:
                    heapq.heappop(self._heap)
                    continue
                if at > now:
                    break
                heapq.heappop(self._heap)
                due.append(found)
            for st, e in due:
                try:
                    await self._revive(st, e)
                except Exception:  # pragma: no cover
                    log.exception("pop revive failed")
            if due:
                continue
            nxt = self._heap[0][0] if self._heap else None
            if self._wake.is_set():
                self._wake = rt.event()
            await rt.wait(self._wake, (nxt - now) if nxt is not None else 3_600_000)

    async def _revive(self, st: PopState, e: PopEntry) -> None:
        gc = self.broker.groups.get(st.group)
        max_attempts = (gc.max_reconsume_times if gc else self.broker.settings.max_reconsume_times) + 1
        if e.attempts < max_attempts:
            self._wake_state(st)
            return
        await st.mutex.acquire()
        try:
            if st.entries.get(e.pos) is not e or not e.visible(self.broker.now_ms()):
                return
            await self.broker.get_or_create_topic(dlq_topic(st.group), queues=1)
            batch = WriteBatch()
            nonce = e.nonce
            self._drop(st, e, batch)
            (m,) = await self.broker.store.read_messages([e.commit_offset])
            if m is not None:
                batch.messages.append(self._dead_copy(st, e, m))
            log.info("pop: %s/%s message at %s moved to DLQ after %d attempts (%s)", st.group, st.topic,
                     e.commit_offset, e.attempts, nonce)
            await self.broker.write(batch)
            self.dead_lettered += 1
        finally:
            st.mutex.release()
        if e.mgroup:
            self._wake_state(st)
