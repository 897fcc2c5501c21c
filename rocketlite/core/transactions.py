"""Transactional messages: half messages, end-transaction, check-back.

Public API (reached through :class:`~rocketlite.core.broker.Broker`)
------------------------------------------------------------------
* ``broker.send([msg])`` with ``msg.sys_flag & SYSFLAG_TRANSACTION_MASK == SYSFLAG_TRANSACTION_PREPARED``
  or property ``TRAN_MSG`` = "true" stores a *half message*: invisible to consumers. Its
  :class:`SendResult` has ``transaction_id`` (fresh id), ``queue_offset``/``commit_offset`` of the
  half copy (remoting clients echo them as ``tranStateTableOffset``/``commitLogOffset``), and
  ``topic``/``queue_id`` of the real destination. The producer group is property ``PGROUP``
  (defaults to the topic name, as the gRPC proxy does). ``CHECK_IMMUNITY_TIME_IN_SECONDS``
  delays the first check-back.
* ``await broker.end_transaction(producer_group, *, transaction_id="", unique_id="",
  commit_offset=-1, action="commit"|"rollback"|"unknown", from_check=False) -> SendResult | None``:
  finds the half message by transaction id, then unique id, then half commit offset;
  ``commit`` appends the real message (same unique id, tx bits = COMMIT, honouring delay
  properties) and removes the half row in the same batch, returning the real SendResult;
  ``rollback`` removes it; ``unknown`` leaves it for the check-back. Raises
  :class:`~rocketlite.core.errors.NotFound` when no pending half message matches.
* ``broker.add_transaction_checker(protocol, fn)`` where
  ``async fn(client: ClientInfo, half: Message, transaction_id: str)`` asks a producer to resolve
  a half message (remoting: CHECK_TRANSACTION_STATE; gRPC: RecoverOrphanedTransactionCommand).
  ``half`` has ``topic``/``queue_id`` of the real destination, while ``commit_offset`` and
  ``queue_offset`` are the half copy's. Checkers should return quickly (send and forget); errors
  are logged and the next round retries.
* ``broker.transactions.pending()`` lists unresolved half messages.

Theory of operation
-------------------
The half copy goes to :data:`HALF_TOPIC` queue 0 (with ``REAL_TOPIC``/``REAL_QID``), and a row in
the ``txn`` table (key = transaction id) records producer group, unique id, check count and the
next check time, in the same batch. The transaction id is appended to the copy's keys so the
key index finds the copy after a restart. The check service wakes at the earliest next-check
time: first check at store time + ``transaction_timeout_ms`` (or the message's immunity when it
has one), then every ``transaction_check_interval_ms``; after ``transaction_check_max`` checks the
half is discarded (a copy goes to :data:`CHECK_MAX_TOPIC`, as in RocketMQ, for inspection).
Each check goes to the most recently seen live producer of the producer group whose protocol
registered a checker (falling back to producers registered under the topic name, or listing the
topic in their ``subscriptions``, which is how gRPC producers announce their topics).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from rocketlite.core.errors import BadRequest, NotFound
from rocketlite.core.message import (
    PROP_CHECK_IMMUNITY_SECONDS,
    PROP_PRODUCER_GROUP,
    PROP_REAL_QUEUE_ID,
    PROP_REAL_TOPIC,
    PROP_TRANSACTION_PREPARED,
    SYSFLAG_TRANSACTION_COMMIT,
    SYSFLAG_TRANSACTION_MASK,
    SYSFLAG_TRANSACTION_PREPARED,
    Message,
    new_unique_id,
)
from rocketlite.core.timers import strip_key
from rocketlite.storage.base import WriteBatch

if TYPE_CHECKING:  # pragma: no cover
    from rocketlite.core.broker import Broker, ClientInfo

log = logging.getLogger("rocketlite.transactions")

HALF_TOPIC = "RMQ_SYS_TRANS_HALF_TOPIC"
CHECK_MAX_TOPIC = "TRANS_CHECK_MAX_TIME_TOPIC"  # where RocketMQ parks halves nobody resolved
T_TXN = "txn"
PROP_TRANSACTION_ID = "__transactionId__"

TransactionChecker = Callable[["ClientInfo", Message, str], Awaitable[Any]]


def is_prepared(msg: Message) -> bool:
    if (msg.sys_flag & SYSFLAG_TRANSACTION_MASK) == SYSFLAG_TRANSACTION_PREPARED:
        return True
    return msg.properties.get(PROP_TRANSACTION_PREPARED, "").lower() == "true"


ACTIONS = {
    "commit": "commit",
    "rollback": "rollback",
    "unknown": "unknown",
    "8": "commit",
    "12": "rollback",
    "0": "unknown",
}


@dataclass(slots=True)
class HalfEntry:
    txn_id: str
    uid: str
    producer_group: str
    topic: str
    queue_id: int
    store_ms: int
    next_check_ms: int
    checks: int = 0
    commit_offset: int = -1
    queue_offset: int = -1
    busy: bool = False

    def record(self) -> dict[str, Any]:
        return {
            "tid": self.txn_id,
            "uid": self.uid,
            "pg": self.producer_group,
            "topic": self.topic,
            "qid": self.queue_id,
            "born": self.store_ms,
            "next": self.next_check_ms,
            "checks": self.checks,
        }

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "HalfEntry":
        return cls(
            rec["tid"], rec.get("uid", ""), rec.get("pg", ""), rec["topic"], int(rec.get("qid", 0)),
            int(rec.get("born", 0)), int(rec.get("next", 0)), int(rec.get("checks", 0)),
        )


class Transactions:
    def __init__(self, broker: "Broker") -> None:
        self.broker = broker
        self._entries: dict[str, HalfEntry] = {}
        self._by_uid: dict[str, str] = {}
        self._by_offset: dict[int, str] = {}
        self._checkers: dict[str, TransactionChecker] = {}
        self._wake = broker.runtime.event()
        self.checks_sent = 0
        self.discarded = 0

    def clear(self) -> None:
        self._entries.clear()
        self._by_uid.clear()
        self._by_offset.clear()
        self._wake.set()

    async def load(self) -> None:
        self.clear()
        for _, rec in await self.broker.store.scan(T_TXN):
            self._add(HalfEntry.from_record(rec))

    def _add(self, e: HalfEntry) -> None:
        self._entries[e.txn_id] = e
        if e.uid:
            self._by_uid[e.uid] = e.txn_id
        if e.commit_offset >= 0:
            self._by_offset[e.commit_offset] = e.txn_id
        self._wake.set()

    def _remove(self, e: HalfEntry) -> None:
        self._entries.pop(e.txn_id, None)
        if self._by_uid.get(e.uid) == e.txn_id:
            del self._by_uid[e.uid]
        if self._by_offset.get(e.commit_offset) == e.txn_id:
            del self._by_offset[e.commit_offset]

    def pending(self) -> list[HalfEntry]:
        return sorted(self._entries.values(), key=lambda e: (e.store_ms, e.txn_id))

    def __len__(self) -> int:
        return len(self._entries)

    def add_checker(self, protocol: str, fn: TransactionChecker) -> None:
        self._checkers[protocol] = fn

    # -- prepare -------------------------------------------------------------------------------
    def prepare(self, msg: Message) -> tuple[Message, list[tuple[str, bytes, Any]], HalfEntry]:
        now = self.broker.now_ms()
        s = self.broker.settings
        txn_id = new_unique_id(now)
        pg = msg.properties.get(PROP_PRODUCER_GROUP) or msg.topic
        msg.properties[PROP_PRODUCER_GROUP] = pg
        msg.properties[PROP_TRANSACTION_PREPARED] = "true"
        msg.properties[PROP_TRANSACTION_ID] = txn_id
        msg.sys_flag = (msg.sys_flag & ~SYSFLAG_TRANSACTION_MASK) | SYSFLAG_TRANSACTION_PREPARED
        first = s.transaction_timeout_ms
        try:  # like RocketMQ, a valid immunity replaces the transaction timeout
            immunity = int(float(msg.properties.get(PROP_CHECK_IMMUNITY_SECONDS, "") or 0) * 1000)
        except ValueError:
            immunity = 0
        if immunity > 0:
            first = immunity
        stored = msg.copy(topic=HALF_TOPIC, queue_id=0)
        stored.properties[PROP_REAL_TOPIC] = msg.topic
        stored.properties[PROP_REAL_QUEUE_ID] = str(msg.queue_id)
        stored.keys = (msg.keys + " " + txn_id).strip()
        e = HalfEntry(txn_id, msg.unique_id, pg, msg.topic, msg.queue_id, now, now + first)
        return stored, [(T_TXN, txn_id.encode(), e.record())], e

    def committed(self, e: HalfEntry, stored: Message) -> None:
        e.commit_offset = stored.commit_offset
        e.queue_offset = stored.queue_offset
        self._add(e)

    # -- resolve -------------------------------------------------------------------------------
    def find(self, transaction_id: str = "", unique_id: str = "", commit_offset: int = -1) -> HalfEntry | None:
        for tid in (transaction_id, self._by_uid.get(transaction_id or "\x00"), self._by_uid.get(unique_id or "\x00"),
                    self._by_offset.get(commit_offset)):
            if tid and tid in self._entries:
                return self._entries[tid]
        if commit_offset >= 0:  # after a restart offsets are resolved lazily
            for e in self._entries.values():
                if e.commit_offset == commit_offset:
                    return e
        return None

    async def _half_message(self, e: HalfEntry) -> Message | None:
        store = self.broker.store
        if e.commit_offset < 0:
            offs = await store.lookup_key(e.txn_id, 4)
            if not offs:
                return None
            e.commit_offset = offs[-1]
            self._by_offset[e.commit_offset] = e.txn_id
        (m,) = await store.read_messages([e.commit_offset])
        if m is None or m.properties.get(PROP_TRANSACTION_ID) != e.txn_id:
            return None
        e.queue_offset = m.queue_offset
        return m

    async def end(
        self,
        producer_group: str,
        *,
        transaction_id: str = "",
        unique_id: str = "",
        commit_offset: int = -1,
        action: str = "commit",
        from_check: bool = False,
    ) -> Any:
        act = ACTIONS.get(str(action).lower())
        if act is None:
            raise BadRequest(f"unknown transaction action {action!r}")
        e = self.find(transaction_id, unique_id, commit_offset)
        if e is None or e.busy:
            raise NotFound("transaction not found or already resolved")
        if producer_group and e.producer_group and producer_group != e.producer_group:
            log.info("end transaction %s: producer group %s != %s (accepted)", e.txn_id, producer_group, e.producer_group)
        if act == "unknown":
            return None
        e.busy = True
        try:
            half = await self._half_message(e)
            batch = WriteBatch(deletes=[(T_TXN, e.txn_id.encode())])
            result = None
            if act == "commit":
                if half is None:
                    raise NotFound("prepared transaction message is gone")
                real = self.restore(half, e)
                result = await self.broker._store_batch([real], batch)
                result = result[0]
            else:
                await self.broker.store.write(batch)
        except BaseException:
            e.busy = False
            raise
        self._remove(e)
        return result

    def restore(self, half: Message, e: HalfEntry) -> Message:
        real = half.copy(topic=half.properties.get(PROP_REAL_TOPIC, e.topic))
        props = real.properties
        try:
            real.queue_id = int(props.get(PROP_REAL_QUEUE_ID, e.queue_id))
        except ValueError:
            real.queue_id = e.queue_id
        for k in (PROP_REAL_TOPIC, PROP_REAL_QUEUE_ID, PROP_TRANSACTION_PREPARED):
            props.pop(k, None)
        real.keys = strip_key(real.keys, e.txn_id)
        real.sys_flag = (real.sys_flag & ~SYSFLAG_TRANSACTION_MASK) | SYSFLAG_TRANSACTION_COMMIT
        real.queue_offset = -1
        real.commit_offset = -1
        return real

    # -- check-back ----------------------------------------------------------------------------
    def pick_producer(self, e: HalfEntry) -> "ClientInfo | None":
        b = self.broker
        candidates = [c for c in b.producers_of(e.producer_group) if c.protocol in self._checkers]
        if not candidates:
            candidates = [c for c in b.producers_of(e.topic) if c.protocol in self._checkers]
        if not candidates:
            candidates = [
                c for cs in b.producers.values() for c in cs.values()
                if c.protocol in self._checkers and e.topic in c.subscriptions
            ]
        if not candidates:
            return None
        return max(candidates, key=lambda c: c.last_seen_ms)

    def next_due(self) -> int | None:
        due = [e.next_check_ms for e in self._entries.values() if not e.busy]
        return min(due) if due else None

    async def run(self) -> None:
        rt = self.broker.runtime
        while True:
            due = self.next_due()
            now = self.broker.now_ms()
            if due is None or due > now:
                if self._wake.is_set():
                    self._wake = rt.event()
                await rt.wait(self._wake, (due - now) if due is not None else 3_600_000)
                continue
            try:
                await self.check_due(now)
            except Exception:  # pragma: no cover
                log.exception("transaction check round failed")
                await rt.sleep_ms(1000)

    async def check_due(self, now: int, limit: int = 1024) -> None:
        """One check round: bump or discard every due half in one write, then ask producers."""
        s = self.broker.settings
        due = sorted((e for e in self._entries.values() if not e.busy and e.next_check_ms <= now),
                     key=lambda e: e.next_check_ms)[:limit]
        batch = WriteBatch()
        to_check: list[HalfEntry] = []
        discard: list[HalfEntry] = []
        for e in due:
            if e.checks >= s.transaction_check_max:
                e.busy = True
                discard.append(e)
            else:
                e.checks += 1
                e.next_check_ms = now + s.transaction_check_interval_ms
                batch.puts.append((T_TXN, e.txn_id.encode(), e.record()))
                to_check.append(e)
        try:
            if discard:
                await self.broker.get_or_create_topic(CHECK_MAX_TOPIC, queues=1)
                for e in discard:
                    log.warning("transaction %s (%s) unresolved after %d checks: discarded to %s", e.txn_id,
                                e.topic, e.checks, CHECK_MAX_TOPIC)
                    batch.deletes.append((T_TXN, e.txn_id.encode()))
                    half = await self._half_message(e)
                    if half is not None:
                        kept = half.copy(topic=CHECK_MAX_TOPIC, queue_id=0, queue_offset=-1, commit_offset=-1)
                        kept.keys = strip_key(kept.keys, e.txn_id)
                        batch.messages.append(kept)
            if batch.puts or batch.deletes:
                await self.broker.write(batch)
        finally:
            for e in discard:
                e.busy = False
                self._remove(e)
                self.discarded += 1
        for e in to_check:
            if self._entries.get(e.txn_id) is not e or e.busy:
                continue  # resolved meanwhile
            client = self.pick_producer(e)
            if client is None:
                log.info("transaction %s: no live producer of %s to check", e.txn_id, e.producer_group)
                continue
            half = await self._half_message(e)
            if half is None:
                log.warning("transaction %s: half message gone, discarded", e.txn_id)
                self._remove(e)
                await self.broker.store.write(WriteBatch(deletes=[(T_TXN, e.txn_id.encode())]))
                continue
            view = half.copy(topic=e.topic, queue_id=e.queue_id)
            for k in (PROP_REAL_TOPIC, PROP_REAL_QUEUE_ID):
                view.properties.pop(k, None)
            view.keys = strip_key(view.keys, e.txn_id)
            try:
                self.checks_sent += 1
                await self._checkers[client.protocol](client, view, e.txn_id)
            except Exception:
                log.exception("transaction check of %s via %s failed", e.txn_id, client.client_id)
