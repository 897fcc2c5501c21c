"""The durable store: one LMDB environment (one data file) under the data directory.

Sub-databases of the environment
--------------------------------
``log``     commit offset (8-byte big-endian) -> record (:mod:`rocketlite.storage.records`)
``cq``      topic id (4) | queue id (4, signed) | queue offset (8), big-endian
            -> commit offset (8) | tag hash (8, signed) | body size (4) | store time (8)
``qmax``    topic id | queue id -> next queue offset (8): survives retention emptying a queue
``topics``  topic name (UTF-8) -> topic id (4)
``keys``    len (2) | key (UTF-8, hashed when long) | commit offset (8) -> empty
``tables``  len(table name) (1) | table name | key -> version byte + cbor2 value
``meta``    ``next`` (commit log max), ``bytes`` (body bytes stored), ``format``

Every counter the synchronous accessors answer (``min_offset``, ``max_offset``,
``commit_log_max``, ``queues``, ``stats``) lives in memory, recovered on :meth:`LmdbStore.open`
(queue maximums from ``qmax``, minimums from the first ``cq`` key of each queue).

Group commit
------------
:meth:`LmdbStore.write` queues its batch. When no commit is in flight the caller becomes the
*leader*: it takes everything queued (its own batch and whatever arrived meanwhile), runs one LMDB
write transaction for all of it, publishes the new counters and wakes every caller of the group.
With ``flush="sync"`` the transaction runs in a worker thread (``trio.lowlevel.start_thread_soon``:
the event loop never waits for the fsync) and new callers queue up meanwhile; when the leader is
done it promotes the first of them to lead the next group. With ``flush="async"`` (no fsync in
the commit) it runs on the Trio thread, about a microsecond per message: a worker thread was
slower there, see :meth:`LmdbStore._commit_group`. So there is no background writer task, concurrent writers share one
transaction (and with ``flush="sync"`` one fsync), and a lone writer commits at once.

Offsets are assigned inside the transaction, in queue order, so they are dense and in commit order.
Offsets are assigned and records encoded when a batch is queued (on the Trio thread: pure CPU),
so the commit only talks to LMDB. Counters are published only after the commit returned, so
a reader never sees an offset whose data is not committed. The commit runs in a shielded scope: a
caller cancelled after the writer took its batch waits for the outcome and gets its result (the
cancellation surfaces at its next checkpoint), so a committed batch is never reported as lost; a
caller cancelled while still queued withdraws its batch (nothing of it is written) and the batches
queued behind it are renumbered, as they are after a failed group: offsets never have holes. A
batch that cannot be encoded fails alone, before it is queued.

Flush modes: ``sync`` opens LMDB with ``sync=True`` (each commit is fdatasync'ed before it returns,
so one fsync per group); ``async`` opens it with ``sync=False`` and a system task syncs
``flush_interval_ms`` after the first unsynced commit, and on close. LMDB stays consistent either
way (a crash in async mode loses at most the last interval).

Reads are answered from memory when they can be: the counters (a pull at the queue's end, the
common long-poll case) or the bounded tail of recently committed records and index entries (a
consumer that keeps up), see :meth:`LmdbStore._remember`. Other reads are bounded LMDB lookups
on the Trio thread (see :meth:`LmdbStore._read`).
One process per data directory (an exclusive ``flock`` on ``rocketlite.lock``).
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import logging
import os
import struct
import time
from typing import Any, Callable, Iterable, Sequence

import lmdb
import trio

from rocketlite.core.errors import StorageFull
from rocketlite.core.message import PROP_UNIQ_KEY, Message, tag_hash
from rocketlite.storage.base import AppendResult, IndexEntry, WriteBatch
from rocketlite.storage.records import decode_entry, decode_message, encode_message, encode_messages, encode_value

log = logging.getLogger("rocketlite.storage")

STORE_FORMAT = 1

_Q = struct.Struct(">Q")
_pack_q = _Q.pack
_unpack_q = _Q.unpack
_CQK = struct.Struct(">IiQ")
_pack_cqk = _CQK.pack
_unpack_cqk = _CQK.unpack
_QK = struct.Struct(">Ii")
_pack_qk = _QK.pack
_CQV = struct.Struct(">QqIq")
_pack_cqv = _CQV.pack
_unpack_cqv = _CQV.unpack
_I = struct.Struct(">I")
_H = struct.Struct(">H")
_LEN32 = _H.pack(32)

_MAX_KEY = 511  # LMDB's default maximum key size
_KEY_HASH_OVER = 256  # key-index keys longer than this are stored as a digest

# the in-memory tail of the log (see LmdbStore._remember): recent records and index entries
_TAIL_BYTES = 16 * 1024 * 1024
_QTAIL = 1024  # index entries kept per queue (between _QTAIL and 2 * _QTAIL)

_current_task = trio.lowlevel.current_task
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_reschedule = trio.lowlevel.reschedule

# op kinds and states of the group-commit queue
_BATCH, _RETAIN, _CLEAR = 0, 1, 2
_QUEUED, _PROMOTED, _TAKEN, _DONE = 0, 1, 2, 3


class _Op:
    __slots__ = ("kind", "batch", "args", "result", "error", "state", "task", "prepared")

    def __init__(self, kind: int, batch: WriteBatch | None = None, args: tuple[Any, ...] = ()) -> None:
        self.kind = kind
        self.batch = batch
        self.args = args
        self.result: Any = None
        self.error: BaseException | None = None
        self.state = _QUEUED
        self.task: Any = None  # the caller's task while it is parked, else None
        self.prepared: _Prepared | None = None


_NO_TABLES: list[tuple[bytes, bytes | None]] = []  # shared empty values of _Prepared (never mutated)
_NO_TOPICS: dict[str, int] = {}


class _Results(Sequence[AppendResult]):
    """What :meth:`LmdbStore.write` returns: each message's offsets, read from the messages when
    asked (the broker has them on the messages already and never asks)."""

    __slots__ = ("_msgs",)

    def __init__(self, msgs: list[Message]) -> None:
        self._msgs = msgs

    def __len__(self) -> int:
        return len(self._msgs)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [AppendResult(m.commit_offset, m.queue_offset) for m in self._msgs[i]]
        m = self._msgs[i]
        return AppendResult(m.commit_offset, m.queue_offset)

    def __eq__(self, other: object) -> bool:
        return list(self) == other

    def __repr__(self) -> str:
        return repr(list(self))


class _Prepared:
    """A batch turned into LMDB items, with the offsets it was given (Trio thread, at enqueue)."""

    __slots__ = ("log", "cq", "keys", "tables", "queues", "topics", "added_bytes", "next", "tails")

    def __init__(self, log: list[tuple[bytes, bytes]], cq: list[tuple[bytes, bytes]], keys: list[tuple[bytes, bytes]],
                 tables: list[tuple[bytes, bytes | None]], queues: dict[tuple[str, int], tuple[bytes, int]],
                 topics: dict[str, int], added_bytes: int, next_offset: int,
                 tails: list[tuple[bytes, int, list[bytes]]]) -> None:
        self.log = log
        self.cq = cq
        self.keys = keys
        self.tables = tables
        self.queues = queues  # (topic, qid) -> (qmax key, next queue offset after this batch)
        self.topics = topics  # topics first seen in this batch -> id
        self.added_bytes = added_bytes
        self.next = next_offset  # commit log max after this batch
        self.tails = tails  # per queue: (qmax key, first queue offset, index values), for the tail cache


def _index_key(key: str) -> bytes:
    raw = key.encode()
    if len(raw) == 32:  # a unique id, the usual key
        return _LEN32 + raw
    if len(raw) > _KEY_HASH_OVER:
        # 0xFFFF can never be a real length here: marks a digest of a long key
        return b"\xff\xff" + hashlib.blake2b(raw, digest_size=32).digest()
    return _H.pack(len(raw)) + raw


def _index_keys(m: Message) -> list[bytes]:
    """The key-index keys of ``m`` before its commit offset: one per key, and one for its unique id."""
    out = [_index_key(k) for k in m.key_list] if m.keys else []
    uniq = m.properties.get(PROP_UNIQ_KEY)
    if uniq:
        out.append(_index_key(uniq))
    return out


def _table_key(prefix: bytes, key: bytes) -> tuple[bytes, bytes | None]:
    """The LMDB key of a table entry, and the full key when it had to be shortened.

    LMDB keys are at most 511 bytes; a longer key (an MQTT topic can be 64 KiB) is stored as its
    first bytes plus a 16-byte digest, with the full key kept in the value. Order is kept except
    among long keys that share those first bytes (a few hundred)."""
    k = prefix + key
    if len(k) <= _MAX_KEY:
        return k, None
    cut = _MAX_KEY - 16 - len(prefix)
    return prefix + key[:cut] + hashlib.blake2b(key, digest_size=16).digest(), key


def _table_prefix(table: str) -> bytes:
    raw = table.encode()
    if len(raw) > 200:
        raise ValueError(f"table name too long: {table[:40]!r}...")
    return bytes((len(raw),)) + raw


class LmdbStore:
    """The LMDB implementation of :class:`~rocketlite.storage.base.Store`."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        flush: str = "async",
        flush_interval_ms: int = 500,
        map_size_mb: int = 4096,
        min_free_disk_mb: int = 64,
    ) -> None:
        if flush not in ("sync", "async"):
            raise ValueError(f"flush must be 'sync' or 'async', not {flush!r}")
        self.data_dir = os.fspath(data_dir)
        self.flush = flush
        self.flush_interval = max(0, flush_interval_ms) / 1000.0
        self.map_size = int(map_size_mb) * 1024 * 1024
        self.min_free_bytes = int(min_free_disk_mb) * 1024 * 1024
        self._env: Any = None
        self._lock_file: Any = None
        self._queue: list[_Op] = []
        self._leading = False
        self._idle: trio.Event | None = None
        self._closed = True
        self._dirty: trio.Event | None = None
        self._flusher_scope: trio.CancelScope | None = None
        self._disk_checked = 0.0
        self._disk_ok = True
        self._tag_hashes: dict[str, int] = {}
        self._in_flight = False
        self._replan_needed = False
        self._last_group = 0  # ops in the last group (a lone writer skips the gathering rounds)
        self._epoch = 0  # bumped by clear (in the writer thread): invalidates the tail
        self._env_users = 0  # reads and syncs running in threads
        self._env_closing = False
        self._env_released: trio.Event | None = None
        # set by the app: called on the Trio thread after each transaction of write batches with
        # (batches merged into it, seconds the commit took, fsync included in sync mode)
        self.commit_hook: Callable[[int, float], None] | None = None
        self._commit_samples: list[tuple[int, float]] = []  # appended by the writer thread
        self._reset_state()
        self._reset_pending()
        self._drop_tail()

    def _reset_state(self) -> None:
        self._next = 0  # commit log max
        self._head = 0  # smallest commit offset still stored
        self._bytes = 0
        self._count = 0
        self._queues: dict[tuple[str, int], list[int]] = {}  # (topic, qid) -> [min, max]
        self._topic_ids: dict[str, int] = {}
        self._commits = 0
        self._fsyncs = 0

    def _reset_pending(self) -> None:
        """Assignment counters (Trio thread only): the committed state plus every queued batch."""
        self._p_next = self._next
        self._p_queues: dict[tuple[str, int], int] = {qk: q[1] for qk, q in self._queues.items()}
        self._p_topics: dict[str, int] = dict(self._topic_ids)
        self._p_topic_seq = max(self._topic_ids.values(), default=-1) + 1
        self._qkeys: dict[tuple[str, int], bytes] = {}

    # -- lifecycle -----------------------------------------------------------------------------
    async def open(self) -> None:
        if not self._closed:
            return
        os.makedirs(self.data_dir, exist_ok=True)
        await trio.to_thread.run_sync(self._open_sync)
        self._closed = False
        self._env_closing = False
        if self.flush == "async":
            self._dirty = trio.Event()
            trio.lowlevel.spawn_system_task(self._flusher, name="rocketlite.storage.flusher")

    def _open_sync(self) -> None:
        # one process per data directory: LMDB itself would let a second one in, and the two
        # would hand out the same offsets from their in-memory counters
        lock = open(os.path.join(self.data_dir, "rocketlite.lock"), "a+b")  # noqa: SIM115
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            lock.close()
            raise RuntimeError(f"{self.data_dir} is in use by another rocketlite process") from exc
        try:
            self._open_env()
        except BaseException:
            if self._env is not None:
                self._env.close()
                self._env = None
            lock.close()
            raise
        self._lock_file = lock

    def _open_env(self) -> None:
        env = lmdb.open(
            self.data_dir,
            map_size=self.map_size,
            subdir=True,
            max_dbs=16,
            sync=self.flush == "sync",
            metasync=True,
            readahead=False,
            meminit=False,
            max_readers=256,
        )
        self._env = env
        self._db_log = env.open_db(b"log", integerkey=False)
        self._db_cq = env.open_db(b"cq")
        self._db_qmax = env.open_db(b"qmax")
        self._db_topics = env.open_db(b"topics")
        self._db_keys = env.open_db(b"keys")
        self._db_tables = env.open_db(b"tables")
        self._db_meta = env.open_db(b"meta")
        self._reset_state()
        with env.begin(write=True) as txn:
            fmt = txn.get(b"format", db=self._db_meta)
            if fmt is None:
                txn.put(b"format", _I.pack(STORE_FORMAT), db=self._db_meta)
            elif _I.unpack(fmt)[0] != STORE_FORMAT:
                raise RuntimeError(f"{self.data_dir}: store format {_I.unpack(fmt)[0]} is not {STORE_FORMAT}")
            raw = txn.get(b"next", db=self._db_meta)
            self._next = _unpack_q(raw)[0] if raw else 0
            raw = txn.get(b"bytes", db=self._db_meta)
            self._bytes = _unpack_q(raw)[0] if raw else 0
            names: dict[int, str] = {}
            for name, tid in txn.cursor(db=self._db_topics):
                self._topic_ids[name.decode()] = _I.unpack(tid)[0]
                names[_I.unpack(tid)[0]] = name.decode()
            cq = txn.cursor(db=self._db_cq)
            for k, v in txn.cursor(db=self._db_qmax):
                tid, qid = _QK.unpack(k)
                qmax = _unpack_q(v)[0]
                qmin = qmax
                if cq.set_range(k) and cq.key()[:8] == k:
                    qmin = _unpack_cqk(cq.key())[2]
                self._queues[(names[tid], qid)] = [qmin, qmax]
            c = txn.cursor(db=self._db_log)
            self._head = _unpack_q(c.key())[0] if c.first() else self._next
            self._count = txn.stat(self._db_log)["entries"]
        self._reset_pending()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # let queued and in-flight groups finish (they were accepted before close)
        while self._leading or self._queue:
            self._idle = trio.Event()
            if not self._leading and self._queue:
                self._promote()
            await self._idle.wait()
        if self._flusher_scope is not None:
            self._flusher_scope.cancel()
        # no new reads; wait for the threads still inside LMDB (closing the environment under
        # them would unmap memory they are reading)
        self._env_closing = True
        while self._env_users:
            self._env_released = trio.Event()
            await self._env_released.wait()
        env = self._env
        self._env = None
        if env is not None:
            lock = self._lock_file

            def finish() -> None:
                try:
                    env.sync(True)
                    env.close()
                finally:
                    if lock is not None:
                        lock.close()  # releases the flock

            await trio.to_thread.run_sync(finish)

    async def _in_thread(self, fn: Callable[..., Any], *args: Any, limiter: Any = None) -> Any:
        """Run ``fn`` in a worker thread, counted so that close() waits for it."""
        if self._env is None or self._env_closing:
            raise RuntimeError("store is closed")
        self._env_users += 1
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=limiter)
        finally:
            self._env_users -= 1
            if not self._env_users and self._env_released is not None:
                self._env_released.set()

    async def _flusher(self) -> None:
        with trio.CancelScope() as scope:
            self._flusher_scope = scope
            while not self._closed:
                assert self._dirty is not None
                await self._dirty.wait()
                await trio.sleep(self.flush_interval)
                self._dirty = trio.Event()
                env = self._env
                if env is None or self._closed:
                    return
                try:
                    await self._in_thread(env.sync, True)
                    self._fsyncs += 1
                except (lmdb.Error, RuntimeError):
                    if self._closed:
                        return
                    log.exception("LMDB sync failed")

    # -- group commit --------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self._closed:
            raise RuntimeError("store is closed")
        if self.min_free_bytes > 0:
            now = time.monotonic()
            if now - self._disk_checked >= 1.0:
                self._disk_checked = now
                try:
                    st = os.statvfs(self.data_dir)
                    self._disk_ok = st.f_bavail * st.f_frsize >= self.min_free_bytes
                except OSError:
                    self._disk_ok = True
            if not self._disk_ok:
                raise StorageFull(
                    f"less than {self.min_free_bytes // (1024 * 1024)} MB free on the disk of {self.data_dir}"
                )

    async def write(self, batch: WriteBatch) -> list[AppendResult]:
        self._check_writable()
        op = _Op(_BATCH, batch)
        self._prepare(op)  # raises for a batch that cannot be stored; nothing queued then
        await self._submit(op)
        return op.result  # type: ignore[no-any-return]

    async def _submit(self, op: _Op) -> None:
        self._queue.append(op)
        while op.state != _DONE:
            if not self._leading and op.state != _TAKEN:
                self._leading = True
                try:
                    # two scheduling rounds first: the writers woken by the previous group run
                    # (in the same, shuffled, batch as this task's first round), queue their next
                    # batch and ride along in this group (groups about 1.5-2x as large under load,
                    # for one extra hop through the run queue)
                    # (a lone writer takes one: a write is always a checkpoint, and with flush=async
                    # the commit itself runs here without yielding)
                    if self._last_group > 1 or len(self._queue) > 1:
                        await trio.lowlevel.checkpoint()
                        await trio.lowlevel.checkpoint()
                    elif self.flush != "sync":
                        await trio.lowlevel.checkpoint()
                except BaseException:
                    self._leading = False
                    self._withdraw(op)
                    raise
                await self._lead()  # takes the whole queue, this op included
                continue
            # park until promoted to lead, or done (inline rather than a helper coroutine: this
            # runs once per write)
            op.task = _current_task()
            await _wait_task_rescheduled(lambda _: self._abort_park(op))
        if op.error is not None:
            raise op.error

    def _abort_park(self, op: _Op) -> Any:
        """A parked caller is cancelled. Sleeping is a bare park/reschedule (see :meth:`_wake`),
        cheaper than an Event per write.

        Cancelled while still queued, the op is withdrawn (nothing of it is written). Once the
        writer took it, cancellation waits for the outcome: the caller is woken with its result
        and sees the cancellation at its next checkpoint, so a committed batch is never reported
        as lost."""
        if op.state in (_QUEUED, _PROMOTED):
            op.task = None
            self._withdraw(op)
            return trio.lowlevel.Abort.SUCCEEDED
        return trio.lowlevel.Abort.FAILED

    @staticmethod
    def _wake(op: _Op) -> None:
        task = op.task
        if task is not None:
            op.task = None
            _reschedule(task)

    def _withdraw(self, op: _Op) -> None:
        """Take a cancelled caller's op out of the queue before LMDB saw it: nothing of it is
        written, and the batches queued after it get their offsets again (no holes)."""
        self._queue.remove(op)
        if op.batch is not None:
            for m in op.batch.messages:
                m.commit_offset = m.queue_offset = -1
        if self._in_flight:
            self._replan_needed = True  # after the group in flight, whose outcome counts
        else:
            self._replan()
        # whoever was to lead next (this op, promoted or about to lead) is gone: hand on
        self._promote()

    def _replan(self) -> None:
        """Assign offsets again to everything queued, from the committed state (after a failed
        group or a withdrawn batch)."""
        self._reset_pending()
        for op in list(self._queue):
            if op.kind == _CLEAR:
                self._reset_pending_to_empty()
            elif op.kind == _BATCH:
                try:
                    self._prepare(op)
                except Exception as exc:  # noqa: BLE001 - cannot happen twice, but never hang
                    self._queue.remove(op)
                    op.error = exc
                    op.state = _DONE
                    self._wake(op)

    def _reset_pending_to_empty(self) -> None:
        self._p_next = 0
        self._p_queues = {}
        self._p_topics = {}
        self._p_topic_seq = 0
        self._qkeys = {}

    def _prepare(self, op: _Op) -> None:
        """Give ``op``'s messages their offsets and encode everything it writes. Runs on the Trio
        thread at enqueue (pure CPU, no I/O), so the commit only talks to LMDB."""
        batch = op.batch
        assert batch is not None
        msgs = batch.messages
        if msgs and not batch.puts and not batch.deletes:
            m = msgs[0]
            qk = (m.topic, m.queue_id)
            prefix = self._qkeys.get(qk)
            if prefix is not None:
                if len(msgs) == 1:
                    self._prepare_one(op, m, qk, prefix)
                    return
                topic, qid = qk
                if all(x.queue_id == qid and x.topic == topic for x in msgs):
                    self._prepare_run(op, msgs, qk, prefix)
                    return
        nxt = self._p_next
        pq = self._p_queues
        topics = self._p_topics
        qkeys = self._qkeys
        touched: dict[tuple[str, int], list[Any]] = {}  # -> [qmax key, next queue offset]
        new_topics: dict[str, int] = {}
        log_items: list[tuple[bytes, bytes]] = []
        cq_items: list[tuple[bytes, bytes]] = []
        key_items: list[tuple[bytes, bytes]] = []
        table_ops: list[tuple[bytes, bytes | None]] = []
        added = 0
        first = nxt
        cq_keys: list[bytes] = []
        cq_append = cq_keys.append
        cq_values: list[bytes] = []
        ts: list[list[Any]] = []  # each message's entry of touched
        ts_append = ts.append
        try:
            # offsets first (the record holds the queue offset), then the records of the whole
            # batch (records.encode_messages encodes the strings a batch repeats once), then the
            # index entries
            for m in msgs:
                qk = (m.topic, m.queue_id)
                t = touched.get(qk)
                if t is None:
                    prefix = qkeys.get(qk)
                    if prefix is None:
                        tid = topics.get(m.topic)
                        if tid is None:
                            tid = new_topics.get(m.topic)
                            if tid is None:
                                if len(m.topic.encode()) > _MAX_KEY:
                                    raise ValueError(f"topic name too long: {m.topic[:40]!r}...")
                                tid = new_topics[m.topic] = self._p_topic_seq + len(new_topics)
                        prefix = _pack_qk(tid, m.queue_id)
                    q0 = pq.get(qk, 0)
                    t = touched[qk] = [prefix, q0, q0, []]  # key, next offset, first offset, values
                m.commit_offset = nxt
                m.queue_offset = qoff = t[1]
                t[1] = qoff + 1
                cq_append(t[0] + _pack_q(qoff))
                ts_append(t)
                nxt += 1
            recs = encode_messages(msgs)
            last_tags: str | None = None
            th = 0
            okeys = [_pack_q(off) for off in range(first, nxt)]
            log_items = list(zip(okeys, recs))
            for m, okey, t in zip(msgs, okeys, ts):
                if m.tags is not last_tags:
                    last_tags = m.tags
                    th = self._tag_code(last_tags)
                size = len(m.body)
                added += size
                key_items += [(k + okey, b"") for k in _index_keys(m)]
                cqv = _pack_cqv(m.commit_offset, th, size, m.store_timestamp)
                cq_values.append(cqv)
                t[3].append(cqv)
            cq_items = list(zip(cq_keys, cq_values))
            for table, key, value in batch.puts:
                k, long_key = _table_key(_table_prefix(table), key)
                table_ops.append((k, encode_value(value, long_key)))
            for table, key in batch.deletes:
                table_ops.append((_table_key(_table_prefix(table), key)[0], None))
        except Exception:
            for m in batch.messages:
                m.commit_offset = m.queue_offset = -1
            raise
        results = _Results(msgs)
        # accepted: advance the assignment counters
        queues: dict[tuple[str, int], tuple[bytes, int]] = {}
        tails: list[tuple[bytes, int, list[bytes]]] = []
        for qk, (prefix, nq, q0, values) in touched.items():
            pq[qk] = nq
            qkeys[qk] = prefix
            queues[qk] = (prefix, nq)
            tails.append((prefix, q0, values))
        if new_topics:
            topics.update(new_topics)
            self._p_topic_seq += len(new_topics)
        self._p_next = nxt
        op.prepared = _Prepared(log_items, cq_items, key_items, table_ops, queues, new_topics, added, nxt, tails)
        op.result = results

    def _tag_code(self, tags: str) -> int:
        """``tag_hash(tags)``, remembered for up to 4096 distinct tag strings."""
        th = self._tag_hashes.get(tags)
        if th is None:
            th = tag_hash(tags)
            if len(self._tag_hashes) < 4096:
                self._tag_hashes[tags] = th
        return th

    def _prepare_run(self, op: _Op, msgs: list[Message], qk: tuple[str, int], prefix: bytes) -> None:
        """:meth:`_prepare` of a batch whose messages all go to one queue seen before, without table
        changes (an MQTT publisher's batch, a RocketMQ batch): offsets are two ranges, so the keys
        and index values are built a column at a time (the same result as the general loop)."""
        n = len(msgs)
        first = self._p_next
        nxt = first + n
        q0 = self._p_queues[qk]
        q1 = q0 + n
        try:
            for m, c, q in zip(msgs, range(first, nxt), range(q0, q1)):
                m.commit_offset = c
                m.queue_offset = q
            recs = encode_messages(msgs)
            okeys = list(map(_pack_q, range(first, nxt)))
            tags = msgs[0].tags
            if all(m.tags == tags for m in msgs):
                ths: Iterable[int] = itertools.repeat(self._tag_code(tags), n)
            else:
                ths = [tag_hash(m.tags) for m in msgs]
            sizes = [len(m.body) for m in msgs]
            values = list(map(_pack_cqv, range(first, nxt), ths, sizes, [m.store_timestamp for m in msgs]))
            cq = list(zip([prefix + k for k in map(_pack_q, range(q0, q1))], values))
            uniqs = [m.properties.get(PROP_UNIQ_KEY) for m in msgs]
            keys: list[tuple[bytes, bytes]]
            if all(uniqs) and not any(m.keys for m in msgs):  # the usual: a unique id each, no keys
                keys = [(_index_key(u) + okey, b"") for u, okey in zip(uniqs, okeys)]  # type: ignore[arg-type]
            else:
                keys = [(k + okey, b"") for m, okey in zip(msgs, okeys) for k in _index_keys(m)]
        except Exception:
            for m in msgs:
                m.commit_offset = m.queue_offset = -1
            raise
        self._p_queues[qk] = q1
        self._p_next = nxt
        op.prepared = _Prepared(list(zip(okeys, recs)), cq, keys, _NO_TABLES, {qk: (prefix, q1)}, _NO_TOPICS,
                                sum(sizes), nxt, [(prefix, q0, values)])
        op.result = _Results(msgs)

    def _prepare_one(self, op: _Op, m: Message, qk: tuple[str, int], prefix: bytes) -> None:
        """:meth:`_prepare` of the common batch: one message to a queue seen before, no table
        changes (the same result, without the per-batch dicts and loops: about half the cost)."""
        nxt = self._p_next
        qoff = self._p_queues[qk]
        m.commit_offset = nxt
        m.queue_offset = qoff
        try:
            rec = encode_message(m)
            th = self._tag_code(m.tags)
            okey = _pack_q(nxt)
            size = len(m.body)
            cq = [(prefix + _pack_q(qoff), _pack_cqv(nxt, th, size, m.store_timestamp))]
            keys = [(k + okey, b"") for k in _index_keys(m)]
        except Exception:
            m.commit_offset = m.queue_offset = -1
            raise
        qoff += 1
        self._p_queues[qk] = qoff
        nxt += 1
        self._p_next = nxt
        op.prepared = _Prepared([(okey, rec)], cq, keys, _NO_TABLES, {qk: (prefix, qoff)}, _NO_TOPICS, size, nxt,
                                [(prefix, qoff - 1, [cq[0][1]])])
        op.result = [AppendResult(nxt - 1, qoff - 1)]

    def _promote(self) -> None:
        """Wake the first queued caller to lead the next group (when nobody leads); tell a
        waiting close() when there is nothing left."""
        if self._leading:
            return
        if self._queue:
            first = self._queue[0]
            if first.state == _QUEUED:
                first.state = _PROMOTED
                self._wake(first)
        elif self._idle is not None:
            self._idle.set()

    async def _lead(self) -> None:
        self._leading = True
        group = self._queue
        self._queue = []
        self._last_group = len(group)
        failed = False
        try:
            for op in group:
                op.state = _TAKEN
            self._in_flight = True
            with trio.CancelScope(shield=True):
                try:
                    if self.flush == "sync":
                        failed = await self._in_writer_thread(group)
                    else:
                        # flush=async: commit here, on the Trio thread (see _commit_group)
                        failed = self._commit_group(group)
                except BaseException as exc:  # noqa: BLE001 - handed to each caller
                    failed = True
                    for op in group:
                        if op.error is None:
                            op.error = exc if isinstance(exc, Exception) else RuntimeError(repr(exc))
            if self._commit_samples:
                self._report_commits()
            if self._dirty is not None:
                self._dirty.set()
            self._remember(group, failed)
        finally:
            self._in_flight = False
            if failed or self._replan_needed:
                self._replan_needed = False
                self._replan()
            for op in group:  # _wake, inline
                op.state = _DONE
                task = op.task
                if task is not None:
                    op.task = None
                    _reschedule(task)
            self._leading = False
            self._promote()

    async def _in_writer_thread(self, group: list[_Op]) -> bool:
        """``_commit_group(group)`` in a worker thread (Trio's thread cache), the leader parked
        until it returns. ``trio.lowlevel.start_thread_soon`` directly rather than
        ``trio.to_thread.run_sync``: one group commits at a time anyway (no limiter needed), the
        caller is shielded (no cancellation to handle) and no context variables are used, and
        skipping that machinery saves a few tens of us per group on the Trio thread."""
        task = _current_task()
        token = trio.lowlevel.current_trio_token()

        def deliver(result: Any) -> None:  # in the worker thread
            try:
                token.run_sync_soon(_reschedule, task, result)
            except trio.RunFinishedError:  # pragma: no cover - the run ended under us
                pass

        trio.lowlevel.start_thread_soon(lambda: self._commit_group(group), deliver,
                                        name="rocketlite.storage.writer")
        return await _wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)  # type: ignore[no-any-return]

    def _report_commits(self) -> None:
        samples, self._commit_samples = self._commit_samples, []
        hook = self.commit_hook
        if hook is None:
            return
        try:
            for n, seconds in samples:
                hook(n, seconds)
        except Exception:  # noqa: BLE001 - metrics must never fail a write
            log.exception("store commit hook failed")

    # -- the writer (one group at a time) -------------------------------------------------------
    def _commit_group(self, group: list[_Op]) -> bool:
        """Commit ``group`` in order: runs of batches share one transaction; retention and clear
        run in their own. Publishes counters after each commit. True when something failed.

        With ``flush="sync"`` this runs in a worker thread (the commit's fdatasync must not stop
        the event loop). With ``flush="async"`` it runs on the Trio thread: a commit without
        fsync is memory work of about 1 us per message, and in a worker thread it is far slower
        whenever the Trio thread is busy, because py-lmdb releases the GIL around every put and
        must win it back each time (CPython lets a waiting thread in only every switch interval,
        5 ms): measured here, a 5000-item putmulti took 2.5 ms alone and 645 ms beside a busy
        Trio thread. The periodic ``env.sync`` stays in a thread (one call, GIL released)."""
        failed = False
        poison: BaseException | None = None  # batches after a failed one were numbered after it
        i = 0
        n = len(group)
        while i < n:
            op = group[i]
            if op.kind == _BATCH:
                j = i
                while j < n and group[j].kind == _BATCH:
                    j += 1
                if poison is not None:
                    self._fail(group[i:j], RuntimeError(f"not written: an earlier batch failed ({poison!r})"))
                elif not self._commit_batches(group[i:j]):
                    failed = True
                    poison = group[i].error
                i = j
            else:
                try:
                    if op.kind == _RETAIN:
                        op.result = self._retain_sync(*op.args)
                    else:
                        self._clear_sync()
                        op.result = True
                        poison = None  # what follows a clear was numbered from zero
                except Exception as exc:  # noqa: BLE001
                    op.error = exc
                    failed = True
                    if op.kind == _CLEAR:
                        poison = exc
                i += 1
        return failed

    def _commit_batches(self, ops: list[_Op]) -> bool:
        preps = [op.prepared for op in ops]
        assert all(p is not None for p in preps)
        last = preps[-1]
        assert last is not None
        queues: dict[tuple[str, int], tuple[bytes, int]] = {}
        topics: dict[str, int] = {}
        added = 0
        env = self._env
        t0 = time.perf_counter()
        try:
            with env.begin(write=True) as txn:
                # the items of all batches go in with one putmulti per sub-database (fewer calls
                # than one per batch: most batches hold one message); table changes are applied
                # in batch order (the log, index and table sub-databases do not interact)
                log_items: list[tuple[bytes, bytes]] = []
                cq_items: list[tuple[bytes, bytes]] = []
                key_items: list[tuple[bytes, bytes]] = []
                for p in preps:
                    assert p is not None
                    if p.log:
                        log_items += p.log
                        cq_items += p.cq
                        if p.keys:
                            key_items += p.keys
                        queues.update(p.queues)
                        if p.topics:
                            topics.update(p.topics)
                        added += p.added_bytes
                    if p.tables:
                        db = self._db_tables
                        for k, v in p.tables:
                            if v is None:
                                txn.delete(k, db=db)
                            else:
                                txn.put(k, v, db=db)
                if log_items:
                    txn.cursor(db=self._db_log).putmulti(log_items, append=True)
                    txn.cursor(db=self._db_cq).putmulti(cq_items)
                    if key_items:
                        txn.cursor(db=self._db_keys).putmulti(key_items)
                    for name, tid in topics.items():
                        txn.put(name.encode(), _I.pack(tid), db=self._db_topics)
                    for prefix, off in queues.values():
                        txn.put(prefix, _pack_q(off), db=self._db_qmax)
                    txn.put(b"next", _pack_q(last.next), db=self._db_meta)
                    txn.put(b"bytes", _pack_q(self._bytes + added), db=self._db_meta)
        except lmdb.MapFullError as exc:
            err: Exception = StorageFull(
                f"the LMDB map ({self.map_size // (1024 * 1024)} MB) is full; raise storage.map_size_mb"
            )
            err.__cause__ = exc
            self._fail(ops, err)
            return False
        except Exception as exc:  # noqa: BLE001
            self._fail(ops, exc)
            return False
        # committed (and with flush=sync durable): publish
        for name, tid in topics.items():
            self._topic_ids[name] = tid
        for qk, (_, off) in queues.items():
            q = self._queues.get(qk)
            if q is None:
                self._queues[qk] = [0, off]
            else:
                q[1] = off
        self._bytes += added
        self._count += len(log_items)
        self._next = last.next
        self._commits += 1
        if self.flush == "sync":
            self._fsyncs += 1
        if self.commit_hook is not None:
            self._commit_samples.append((len(ops), time.perf_counter() - t0))
        return True

    def _fail(self, ops: list[_Op], exc: Exception) -> None:
        for op in ops:
            op.result = None
            op.error = exc
            assert op.batch is not None
            for m in op.batch.messages:
                m.commit_offset = m.queue_offset = -1

    def _retain_sync(self, max_age_ms: int | None, max_bytes: int | None, now_ms: int, limit: int) -> int:
        removed = 0
        total = self._bytes
        qmin: dict[tuple[str, int], int] = {}
        head = self._head
        with self._env.begin(write=True) as txn:
            cur = txn.cursor(db=self._db_log)
            if not cur.first():
                return 0
            while removed < limit:
                key = cur.key()
                if not key:
                    break
                off = _unpack_q(key)[0]
                m = decode_message(cur.value(), off)
                size = len(m.body)
                too_old = max_age_ms is not None and now_ms - m.store_timestamp > max_age_ms
                too_big = max_bytes is not None and total > max_bytes
                if not (too_old or too_big):
                    break
                tid = self._topic_ids.get(m.topic)
                if tid is not None:
                    txn.delete(_pack_cqk(tid, m.queue_id, m.queue_offset), db=self._db_cq)
                for k in _index_keys(m):
                    txn.delete(k + key, db=self._db_keys)
                qmin[(m.topic, m.queue_id)] = m.queue_offset + 1
                total -= size
                removed += 1
                head = off + 1
                if not cur.delete():  # moved past the last record
                    break
            if removed:
                txn.put(b"bytes", _pack_q(total), db=self._db_meta)
        if removed:
            for qk, low in qmin.items():
                q = self._queues.get(qk)
                if q is not None and low > q[0]:
                    q[0] = min(low, q[1])
            self._bytes = total
            self._count -= removed
            self._head = head
            self._commits += 1
        return removed

    def _clear_sync(self) -> None:
        with self._env.begin(write=True) as txn:
            for db in (self._db_log, self._db_cq, self._db_qmax, self._db_topics, self._db_keys,
                       self._db_tables):
                txn.drop(db, delete=False)
            txn.put(b"next", _pack_q(0), db=self._db_meta)
            txn.put(b"bytes", _pack_q(0), db=self._db_meta)
        commits, fsyncs = self._commits, self._fsyncs
        self._epoch += 1
        self._reset_state()
        self._commits, self._fsyncs = commits + 1, fsyncs

    # -- the tail cache ------------------------------------------------------------------------
    # Consumers that keep up read what was just written. The records and index entries of the
    # last groups are already in memory (encoded at enqueue), so they are kept here, bounded,
    # and such reads are answered on the Trio thread: no LMDB call, no thread hop (a hop costs
    # more than decoding a whole pull batch). Everything else is read from LMDB in a thread.
    # Only the Trio thread touches the tail; it is filled after a group committed, and a read
    # uses it only when it covers the whole request, in the current clear-epoch, at or above
    # the retention head, so it never answers differently than LMDB would.

    def _drop_tail(self, base: int | None = None) -> None:
        self._tail: list[bytes] = []
        self._tail_base = self._next if base is None else base
        self._tail_bytes = 0
        self._tail_epoch = self._epoch
        self._qtail: dict[bytes, list[Any]] = {}  # qmax key -> [first queue offset, [cq values]]

    def _remember(self, group: list[_Op], failed: bool) -> None:
        if failed or self._tail_epoch != self._epoch or any(op.kind == _CLEAR for op in group):
            self._drop_tail()
            return
        tail = self._tail
        qtail = self._qtail
        added = 0
        for op in group:
            p = op.prepared
            if op.kind != _BATCH or op.error is not None or p is None or not p.log:
                continue
            log = p.log
            if p.next - len(log) != self._tail_base + len(tail):
                added = 0  # _drop_tail starts the count again
                self._drop_tail(p.next - len(log))
                tail = self._tail
                qtail = self._qtail
            recs = [rec for _, rec in log]
            tail += recs
            added += sum(map(len, recs))
            for prefix, start, values in p.tails:
                t = qtail.get(prefix)
                if t is None or t[0] + len(t[1]) != start:
                    t = qtail[prefix] = [start, []]
                t[1].extend(values)
                if len(t[1]) > 2 * _QTAIL:
                    cut = len(t[1]) - _QTAIL
                    del t[1][:cut]
                    t[0] += cut
        self._tail_bytes += added
        if self._tail_bytes > _TAIL_BYTES:
            keep = _TAIL_BYTES // 2
            cut = 0
            dropped = 0
            total = self._tail_bytes
            while total - dropped > keep and cut < len(tail):
                dropped += len(tail[cut])
                cut += 1
            del tail[:cut]
            self._tail_base += cut
            self._tail_bytes -= dropped

    def _tail_index(self, prefix: bytes, start: int, end: int) -> list[IndexEntry] | None:
        t = self._qtail.get(prefix)
        if t is None or self._tail_epoch != self._epoch:
            return None
        base, values = t
        if start < base or end > base + len(values):
            return None
        return [IndexEntry(start + i, *_unpack_cqv(v)) for i, v in enumerate(values[start - base : end - base])]

    def _tail_messages(self, offsets: Sequence[int]) -> list[Message | None] | None:
        if self._tail_epoch != self._epoch or not offsets:
            return None
        lo = max(self._tail_base, self._head)
        hi = self._tail_base + len(self._tail)
        if min(offsets) < lo or max(offsets) >= hi:
            return None
        tail = self._tail
        base = self._tail_base
        return [decode_message(tail[off - base], off) for off in offsets]

    # -- reads ---------------------------------------------------------------------------------
    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a bounded read on the Trio thread. LMDB reads are memory-mapped lookups (tens of
        microseconds for a pull's worth); in a worker thread they were both slower (the hop) and
        stalled whenever the event loop was busy: py-lmdb hands the GIL back around its calls and
        a waiting thread gets it back only every switch interval (32 gets: 0.09 ms alone, 10.6 ms
        beside a busy Trio thread, measured here). The cost is that a read of cold pages (not in
        the page cache) blocks the loop for its page faults."""
        if self._env is None or self._env_closing:
            raise RuntimeError("store is closed")
        await trio.lowlevel.checkpoint()
        if self._env is None or self._env_closing:
            raise RuntimeError("store is closed")
        return fn(*args)

    def _index_range(self, topic: str, queue_id: int, offset: int, max_count: int) -> tuple[bytes, int, int] | None:
        q = self._queues.get((topic, queue_id))
        tid = self._topic_ids.get(topic)
        if q is None or tid is None or max_count <= 0:
            return None
        start = max(offset, q[0])
        end = min(q[1], start + max_count)
        if start >= end:
            return None
        return _pack_qk(tid, queue_id), start, end

    def _read_index_sync(self, prefix: bytes, start: int, end: int, txn: Any = None) -> list[IndexEntry]:
        out: list[IndexEntry] = []
        own = txn is None
        if own:
            txn = self._env.begin()
        try:
            cur = txn.cursor(db=self._db_cq)
            if not cur.set_range(prefix + _pack_q(start)):
                return out
            for k, v in cur:
                if k[:8] != prefix:
                    break
                qoff = _unpack_q(k[8:])[0]
                if qoff >= end:
                    break
                c, th, size, ts = _unpack_cqv(v)
                out.append(IndexEntry(qoff, c, th, size, ts))
        finally:
            if own:
                txn.abort()
        return out

    async def read_index(self, topic: str, queue_id: int, offset: int, max_count: int) -> list[IndexEntry]:
        r = self._index_range(topic, queue_id, offset, max_count)
        if r is None:
            return []
        hot = self._tail_index(*r)
        if hot is not None:
            return hot
        return await self._read(self._read_index_sync, *r)  # type: ignore[no-any-return]

    def _read_messages_sync(self, offsets: Sequence[int], txn: Any = None) -> list[Message | None]:
        out: list[Message | None] = []
        own = txn is None
        if own:
            txn = self._env.begin()
        try:
            db = self._db_log
            get = txn.get
            for off in offsets:
                raw = get(_pack_q(off), db=db) if off >= 0 else None
                out.append(decode_message(raw, off) if raw is not None else None)
        finally:
            if own:
                txn.abort()
        return out

    async def read_messages(self, commit_offsets: Sequence[int]) -> list[Message | None]:
        offsets = list(commit_offsets)
        if not offsets:
            return []
        hot = self._tail_messages(offsets)
        if hot is not None:
            return hot
        return await self._read(self._read_messages_sync, offsets)  # type: ignore[no-any-return]

    def _read_queue_sync(self, prefix: bytes, start: int, end: int) -> list[Message]:
        with self._env.begin() as txn:
            entries = self._read_index_sync(prefix, start, end, txn)
            msgs = self._read_messages_sync([e.commit_offset for e in entries], txn)
        return [m for m in msgs if m is not None]

    async def read_queue(self, topic: str, queue_id: int, offset: int, max_count: int) -> list[Message]:
        r = self._index_range(topic, queue_id, offset, max_count)
        if r is None:
            return []
        entries = self._tail_index(*r)
        if entries is not None:
            msgs = self._tail_messages([e.commit_offset for e in entries])
            if msgs is not None:
                return [m for m in msgs if m is not None]
        return await self._read(self._read_queue_sync, *r)  # type: ignore[no-any-return]

    def min_offset(self, topic: str, queue_id: int) -> int:
        q = self._queues.get((topic, queue_id))
        return q[0] if q is not None else 0

    def max_offset(self, topic: str, queue_id: int) -> int:
        q = self._queues.get((topic, queue_id))
        return q[1] if q is not None else 0

    def queues(self) -> Iterable[tuple[str, int]]:
        return list(self._queues)

    def commit_log_max(self) -> int:
        return self._next

    def _offset_for_timestamp_sync(self, prefix: bytes, lo: int, hi: int, timestamp_ms: int) -> int:
        # store times grow with queue offsets (they are assigned by one clock at append time):
        # binary search for the first entry at or after timestamp_ms
        with self._env.begin() as txn:
            get = txn.get
            db = self._db_cq
            while lo < hi:
                mid = (lo + hi) // 2
                raw = get(prefix + _pack_q(mid), db=db)
                if raw is None:  # removed by retention meanwhile
                    lo = mid + 1
                    continue
                if _unpack_cqv(raw)[3] >= timestamp_ms:
                    hi = mid
                else:
                    lo = mid + 1
        return lo

    async def offset_for_timestamp(self, topic: str, queue_id: int, timestamp_ms: int) -> int:
        q = self._queues.get((topic, queue_id))
        tid = self._topic_ids.get(topic)
        if q is None or tid is None:
            return 0
        if q[0] >= q[1]:
            return q[1]
        return await self._read(  # type: ignore[no-any-return]
            self._offset_for_timestamp_sync, _pack_qk(tid, queue_id), q[0], q[1], timestamp_ms
        )

    def _lookup_key_sync(self, prefix: bytes, max_count: int) -> list[int]:
        out: list[int] = []
        with self._env.begin() as txn:
            cur = txn.cursor(db=self._db_keys)
            if cur.set_range(prefix + b"\xff" * 8):
                ok = cur.prev()
            else:
                ok = cur.last()
            while ok and len(out) < max_count:
                k = cur.key()
                if len(k) != len(prefix) + 8 or not k.startswith(prefix):
                    break
                out.append(_unpack_q(k[-8:])[0])
                ok = cur.prev()
        out.reverse()
        return out

    async def lookup_key(self, key: str, max_count: int = 64) -> list[int]:
        if not key or max_count <= 0:
            return []
        return await self._read(self._lookup_key_sync, _index_key(key), max_count)  # type: ignore[no-any-return]

    # -- tables --------------------------------------------------------------------------------
    def _get_sync(self, prefix: bytes, key: bytes) -> Any | None:
        k, long_key = _table_key(prefix, key)
        with self._env.begin() as txn:
            raw = txn.get(k, db=self._db_tables)
        if raw is None:
            return None
        full, value = decode_entry(raw)
        if long_key is not None and full != long_key:
            return None
        return value

    async def get(self, table: str, key: bytes) -> Any | None:
        return await self._read(self._get_sync, _table_prefix(table), key)

    def _scan_sync(self, prefix: bytes, start: bytes, end: bytes | None, limit: int | None) -> list[tuple[bytes, Any]]:
        out: list[tuple[bytes, Any]] = []
        n = len(prefix)
        cut = _MAX_KEY - 16 - n  # LMDB keys of long table keys start with this many key bytes
        end_cut = end[:cut] if end is not None else None
        with self._env.begin() as txn:
            cur = txn.cursor(db=self._db_tables)
            if not cur.set_range(prefix + start[:cut]):
                return out
            for k, v in cur:
                if k[:n] != prefix:
                    break
                rel = k[n:]
                if end_cut is not None and rel[:cut] > end_cut:
                    break  # every later entry is beyond ``end`` too
                full, value = decode_entry(v)
                key = rel if full is None else full
                if key < start or (end is not None and key >= end):
                    continue
                out.append((key, value))
                if limit is not None and len(out) >= limit:
                    break
        return out

    async def scan(
        self, table: str, start: bytes = b"", end: bytes | None = None, limit: int | None = None
    ) -> list[tuple[bytes, Any]]:
        if limit is not None and limit <= 0:
            return []
        return await self._read(self._scan_sync, _table_prefix(table), start, end, limit)  # type: ignore[no-any-return]

    # -- housekeeping --------------------------------------------------------------------------
    async def retain(self, *, max_age_ms: int | None, max_bytes: int | None, now_ms: int) -> int:
        """Delete from the head in chunks, each its own short transaction in the writer's queue,
        so appends keep flowing between chunks."""
        if self._closed or (max_age_ms is None and max_bytes is None):
            return 0
        total = 0
        # (flush=async commits on the Trio thread: smaller chunks keep each pause to a few ms)
        chunk = 2000 if self.flush == "sync" else 500
        while True:
            op = _Op(_RETAIN, args=(max_age_ms, max_bytes, now_ms, chunk))
            await self._submit(op)
            total += op.result
            if op.result < chunk:
                return total

    async def clear(self) -> None:
        if self._closed:
            raise RuntimeError("store is closed")
        self._reset_pending_to_empty()
        await self._submit(_Op(_CLEAR))

    def stats(self) -> dict[str, int]:
        return {
            "messages": self._count,
            "bytes": self._bytes,
            "commits": self._commits,
            "fsyncs": self._fsyncs,
            "commit_log_min": self._head,
            "commit_log_max": self._next,
        }
