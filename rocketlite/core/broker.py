"""The Broker service: the domain every front-end calls.

Front-ends translate protocol verbs into these calls: ``send``, ``pull`` (with long polling),
offsets, topic and group metadata, and the client registry. Time and waiting come from the
injected :class:`~rocketlite.core.runtime.Runtime`; durable state goes through the
:class:`~rocketlite.storage.base.Store`.

Theory of operation
-------------------
* A topic has ``write_queues`` queues; a send without a queue id is spread round robin (or, for
  a message group, hashed so one group always lands in one queue, which keeps FIFO order).
* Consumers read by queue offset. ``pull`` with ``wait_ms`` parks until a write to that queue
  sets the queue's wake-up event, or the wait ends; the event is set right after the store's
  commit returns, so a woken puller always finds the message.
* Consumer offsets live in the ``offset`` table (and a dict in front of it).
* The client registry is memory only: clients re-register with every heartbeat.
* Feature modules hang off the broker and are reached through its methods:
  ``timers`` (delay levels, deliver times, recall: rocketlite/core/timers.py),
  ``transactions`` (half messages, end/check-back: transactions.py), retry/DLQ (retry.py),
  ``pops`` (POP with receipt handles and FIFO groups: pop.py), ``locks`` (orderly queue locks:
  locks.py). Each module's docstring documents its API; docs/core.md summarises all of it.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Callable, Coroutine, Iterable

from rocketlite.core.errors import BadRequest, BrokerError, MessageTooLarge, TopicNotFound
from rocketlite.core.filters import MATCH_ALL, Filter, Subscription
from rocketlite.core.message import (
    PROP_DELAY_LEVEL,
    PROP_DELIVER_TIME_MS,
    PROP_MESSAGE_GROUP,
    PROP_TRANSACTION_PREPARED,
    PROP_UNIQ_KEY,
    SYSFLAG_TRANSACTION_MASK,
    SYSFLAG_TRANSACTION_PREPARED,
    Message,
    SendResult,
    new_unique_id,
)
from rocketlite.core.runtime import Event, Runtime
from rocketlite.storage.base import Store, WriteBatch

from rocketlite.core import retry as _retry
from rocketlite.core.locks import QueueLocks
from rocketlite.core.offset_reset import OffsetResets
from rocketlite.core.pop import Pops
from rocketlite.core.timers import (
    DEFAULT_DELAY_LEVELS,
    PROP_DELAY_MS,
    PROP_DELAY_SEC,
    TIMER_TOPIC,
    Timers,
    deliver_time,
    parse_delay_levels,
)
from rocketlite.core.transactions import HALF_TOPIC, TransactionChecker, Transactions, is_prepared

TOPIC_NAME_RE = re.compile(r"^[%|a-zA-Z0-9_\-./:\$]{1,255}$")

T_TOPIC = "topic"
T_GROUP = "group"
T_OFFSET = "offset"
T_PURGE = "purge"  # topic \x00 queue id -> queue offset below which messages are purged


@dataclass(slots=True)
class BrokerSettings:
    broker_name: str = "rocketlite"
    cluster_name: str = "DefaultCluster"
    auto_create_topics: bool = True
    auto_create_groups: bool = True
    default_queue_count: int = 4
    max_message_size: int = 4 * 1024 * 1024
    client_expiry_ms: int = 120_000
    retention_age_ms: int | None = 72 * 3600 * 1000
    retention_bytes: int | None = None
    retention_interval_ms: int = 60_000
    max_reconsume_times: int = 16
    # Timers: reject deliver times further than this ahead (None: no limit).
    timer_max_delay_ms: int | None = None
    # RocketMQ's messageDelayLevel: delay levels 1..N (message DELAY property and consumer retries).
    message_delay_level: str = DEFAULT_DELAY_LEVELS
    # Transactions (RocketMQ transactionTimeOut / transactionCheckInterval / transactionCheckMax).
    transaction_timeout_ms: int = 6_000
    transaction_check_interval_ms: int = 30_000
    transaction_check_max: int = 15
    # Orderly consumers' queue locks (rocketmq.broker.rebalance.lockMaxLiveTime).
    lock_max_live_ms: int = 60_000
    # POP: at most this many tracked (in flight, expired, FIFO-waiting) messages per group and topic.
    pop_max_entries: int = 10_000
    # POP FIFO: at most this many messages parked behind their in-flight message group.
    pop_fifo_lookahead: int = 1_000


@dataclass(slots=True)
class TopicConfig:
    name: str
    read_queues: int = 4
    write_queues: int = 4
    perm: int = 6  # RocketMQ PermName: 4 read, 2 write
    message_type: str = "NORMAL"  # NORMAL, FIFO, DELAY, TRANSACTION, MIXED
    order: bool = False
    system: bool = False
    attributes: dict[str, str] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "TopicConfig":
        return cls(**{k: v for k, v in rec.items() if k in cls.__dataclass_fields__})


@dataclass(slots=True)
class GroupConfig:
    name: str
    max_reconsume_times: int = 16
    consume_orderly: bool = False
    retry_queues: int = 1
    attributes: dict[str, str] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "GroupConfig":
        return cls(**{k: v for k, v in rec.items() if k in cls.__dataclass_fields__})


@dataclass(slots=True)
class ClientInfo:
    """A consumer or producer that announced itself (heartbeat, telemetry, MQTT connect)."""

    client_id: str
    group: str
    role: str = "consumer"  # consumer or producer
    protocol: str = ""
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    consume_type: str = "PUSH"  # PUSH, PULL, POP, SIMPLE
    message_model: str = "CLUSTERING"
    orderly: bool = False
    last_seen_ms: int = 0
    # Opaque handle the front-end uses to reach the client (e.g. a connection) for
    # broker-initiated requests: consumer-ids-changed, transaction check-back.
    session: Any = None


class PullStatus(Enum):
    FOUND = "FOUND"
    NO_NEW_MSG = "NO_NEW_MSG"
    NO_MATCHED_MSG = "NO_MATCHED_MSG"
    OFFSET_ILLEGAL = "OFFSET_ILLEGAL"


@dataclass(slots=True)
class PullResult:
    status: PullStatus
    messages: list[Message]
    next_offset: int
    min_offset: int
    max_offset: int


GroupListener = Callable[[str, str], None]  # (group, event) where event is "change"


def offset_key(group: str, topic: str, queue_id: int) -> bytes:
    return f"{group}\x00{topic}\x00{queue_id}".encode()


# the properties timers.deliver_time reads: a message with none of them is not delayed (checked
# first because nearly every message has none, and parsing them costs a few us per send)
_DELAY_PROPS = frozenset((PROP_DELIVER_TIME_MS, PROP_DELAY_MS, PROP_DELAY_SEC, PROP_DELAY_LEVEL))


def is_system_topic(name: str) -> bool:
    return name.startswith(("rmq_sys_", "SCHEDULE_TOPIC", "RMQ_SYS_", "TBW102")) or name in (
        "DefaultCluster",
    )


class Broker:
    """The protocol-free broker. One per process; every front-end shares it."""

    def __init__(self, store: Store, runtime: Runtime, settings: BrokerSettings | None = None) -> None:
        self.store = store
        self.runtime = runtime
        self.settings = settings or BrokerSettings()
        self.delay_levels_ms = parse_delay_levels(self.settings.message_delay_level)  # ValueError if malformed
        self.topics: dict[str, TopicConfig] = {}
        self.groups: dict[str, GroupConfig] = {}
        self.clients: dict[str, dict[str, ClientInfo]] = {}  # group -> client id -> info
        self.producers: dict[str, dict[str, ClientInfo]] = {}
        self._offsets: dict[bytes, int] = {}
        self._purged: dict[tuple[str, int], int] = {}  # (topic, queue id) -> purged below this offset
        self._waiters: dict[tuple[str, int], Event] = {}
        self._rr: dict[str, int] = {}
        self._group_listeners: list[GroupListener] = []
        self._started = False
        # Called after every committed write with the stored messages (wake-ups, MQTT fan-out).
        self.write_listeners: list[Callable[[list[Message]], None]] = []
        # Background loops the app runs for the broker's lifetime.
        self.services: list[Callable[[], Any]] = [self._expire_clients_loop, self._retention_loop]
        self.timers = Timers(self)
        self.transactions = Transactions(self)
        self.pops = Pops(self)
        self.locks = QueueLocks(self)
        self.resets = OffsetResets(self)
        self.services += [self.timers.run, self.transactions.run, self.pops.run]

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Load metadata from the store."""
        for _, rec in await self.store.scan(T_TOPIC):
            tc = TopicConfig.from_record(rec)
            self.topics[tc.name] = tc
        for _, rec in await self.store.scan(T_GROUP):
            gc = GroupConfig.from_record(rec)
            self.groups[gc.name] = gc
        for key, value in await self.store.scan(T_OFFSET):
            self._offsets[key] = int(value)
        for key, value in await self.store.scan(T_PURGE):
            topic, _, qid = key.decode().rpartition("\x00")
            self._purged[(topic, int(qid))] = int(value)
        await self.timers.load()
        await self.transactions.load()
        await self.pops.load()
        self._started = True

    async def reset(self) -> None:
        """Empty everything: messages, offsets, metadata, clients (tests' reset)."""
        await self.store.clear()
        self.topics.clear()
        self.groups.clear()
        self.clients.clear()
        self.producers.clear()
        self._offsets.clear()
        self._purged.clear()
        self._rr.clear()
        for ev in self._waiters.values():
            ev.set()
        self._waiters.clear()
        self.timers.clear()
        self.transactions.clear()
        self.pops.clear()
        self.locks.clear()
        self.resets.clear()

    def now_ms(self) -> int:
        return self.runtime.now_ms()

    # -- topics --------------------------------------------------------------------------------
    def validate_topic_name(self, name: str) -> None:
        if not name or not TOPIC_NAME_RE.match(name):
            raise BadRequest(f"invalid topic name {name!r}")

    async def create_topic(
        self,
        name: str,
        *,
        queues: int | None = None,
        read_queues: int | None = None,
        write_queues: int | None = None,
        perm: int = 6,
        message_type: str | None = None,
        order: bool = False,
        attributes: dict[str, str] | None = None,
    ) -> TopicConfig:
        """Create or update a topic (queue counts can only be changed, data stays)."""
        self.validate_topic_name(name)
        n = queues if queues is not None else self.settings.default_queue_count
        tc = self.topics.get(name) or TopicConfig(name)
        tc.read_queues = read_queues if read_queues is not None else n
        tc.write_queues = write_queues if write_queues is not None else n
        if tc.read_queues < 1 or tc.write_queues < 1 or max(tc.read_queues, tc.write_queues) > 1024:
            raise BadRequest("queue count must be between 1 and 1024")
        tc.perm = perm
        tc.order = order
        if message_type:
            tc.message_type = message_type
        if attributes:
            tc.attributes.update(attributes)
        tc.system = is_system_topic(name)
        self.topics[name] = tc
        await self.store.write(WriteBatch(puts=[(T_TOPIC, name.encode(), tc.to_record())]))
        return tc

    async def delete_topic(self, name: str) -> bool:
        tc = self.topics.pop(name, None)
        if tc is None:
            return False
        await self.store.write(WriteBatch(deletes=[(T_TOPIC, name.encode())]))
        return True

    async def get_or_create_topic(self, name: str, *, queues: int | None = None) -> TopicConfig:
        tc = self.topics.get(name)
        if tc is not None:
            return tc
        if not self.settings.auto_create_topics and not is_system_topic(name) and not name.startswith("%"):
            raise TopicNotFound(f"topic {name} does not exist")
        return await self.create_topic(name, queues=queues)

    def topic_queue_ids(self, name: str) -> list[int]:
        tc = self.topics.get(name)
        return list(range(tc.read_queues)) if tc else []

    # -- groups --------------------------------------------------------------------------------
    async def create_group(self, name: str, **fields: Any) -> GroupConfig:
        gc = self.groups.get(name) or GroupConfig(name, max_reconsume_times=self.settings.max_reconsume_times)
        for k, v in fields.items():
            if v is not None and k in GroupConfig.__dataclass_fields__:
                setattr(gc, k, v)
        self.groups[name] = gc
        await self.store.write(WriteBatch(puts=[(T_GROUP, name.encode(), gc.to_record())]))
        return gc

    async def get_or_create_group(self, name: str) -> GroupConfig:
        gc = self.groups.get(name)
        if gc is None:
            gc = await self.create_group(name)
        return gc

    async def delete_group(self, name: str) -> bool:
        gc = self.groups.pop(name, None)
        drops = [(T_OFFSET, k) for k in list(self._offsets) if k.startswith(name.encode() + b"\x00")]
        for _, k in drops:
            del self._offsets[k]
        await self.store.write(WriteBatch(deletes=[(T_GROUP, name.encode()), *drops]))
        await self.pops.drop_group(name)
        self.resets.drop_group(name)
        return gc is not None

    # -- send ----------------------------------------------------------------------------------
    def send(self, msgs: list[Message], *, results: bool = True, one_queue: bool = False,
             on_stored: Callable[[], None] | None = None) -> Coroutine[Any, Any, list[SendResult]]:
        """Store messages (all or none), assigning queues, ids and timestamps (``await`` it).

        Delay properties route a message through the timer topic, a prepared transaction flag
        makes it a half message (see timers.py, transactions.py); everything in one batch.
        ``results=False`` (a caller that acknowledges by other means, e.g. MQTT) returns ``[]``
        instead of one SendResult per message. Messages without a queue or message group go round
        robin, one queue each; with ``one_queue=True`` each run of them to one topic goes to the
        next queue in turn, as a RocketMQ batch goes to one queue (cheaper to store: one consume
        queue appended in a row). ``on_stored`` is called once the batch is stored (durable per
        the flush mode), before write listeners (fan-out to subscribers, pulls) run: a protocol
        that acknowledges there answers its producer without waiting for the deliveries.
        (A plain function handing back :meth:`_store_batch`'s coroutine: one coroutine less per
        send than an ``async def`` wrapper.)
        """
        return self._store_batch(msgs, results=results, one_queue=one_queue, on_stored=on_stored)

    async def _store_batch(
        self,
        msgs: list[Message],
        batch: WriteBatch | None = None,
        *,
        route: bool = True,
        deliver_at: int | None = None,
        results: bool = True,
        one_queue: bool = False,
        on_stored: Callable[[], None] | None = None,
    ) -> list[SendResult]:
        """The one write path for new messages: validate, route (half/timer/normal), commit.

        ``batch`` may carry extra table changes that must commit atomically with the messages;
        ``route=False`` ignores delay/transaction properties; ``deliver_at`` forces a timer.
        """
        if not msgs:
            return []
        now = self.now_ms()
        batch = batch or WriteBatch()
        first = len(batch.messages)
        stored_append = batch.messages.append
        originals: list[Message] = []
        after: list[Callable[[], None]] = []
        meta: list[tuple[str, str]] | None = None  # (transaction id, recall handle) when any is set
        max_size = self.settings.max_message_size
        topics = self.topics
        rr = self._rr
        delay_props = _DELAY_PROPS
        # per run of messages to the same topic (a batch usually has one): its config, queue
        # count and round-robin position, looked up once
        last_topic: str | None = None
        nq = rr_i = 0
        rr_used = False
        try:
            for msg in msgs:
                if len(msg.body) > max_size:
                    raise MessageTooLarge(f"message body of {len(msg.body)} bytes exceeds {max_size}")
                topic = msg.topic
                if topic != last_topic:
                    if last_topic is not None:
                        rr[last_topic] = rr_i + 1 if rr_used else rr_i
                        rr_used = False
                    tc = topics.get(topic)  # known topics were validated when created
                    if tc is None:
                        self.validate_topic_name(topic)
                        tc = await self.get_or_create_topic(topic, queues=1 if topic.startswith("%") else None)
                    if not tc.perm & 2:
                        raise BadRequest(f"topic {topic} is not writable")
                    last_topic = topic
                    nq = max(1, tc.write_queues)
                    rr_i = rr.get(topic, 0)
                props = msg.properties
                # the queue: an explicit one, else the message group's, else round robin
                qid = msg.queue_id
                if not 0 <= qid < nq:
                    group = props.get(PROP_MESSAGE_GROUP) if props else None
                    if group:
                        qid = zlib.crc32(group.encode()) % nq
                    else:
                        qid = rr_i % nq
                        if one_queue:
                            rr_used = True
                        else:
                            rr_i += 1
                    msg.queue_id = qid
                if not msg.born_timestamp:
                    msg.born_timestamp = now
                msg.store_timestamp = now
                if not props.get(PROP_UNIQ_KEY):
                    props[PROP_UNIQ_KEY] = new_unique_id(now)
                # the common message carries none of the routing properties: skip their parsing
                if deliver_at is not None:
                    at: int | None = deliver_at
                elif route and not delay_props.isdisjoint(props):
                    at = deliver_time(msg, now, self.delay_levels_ms)
                else:
                    at = None
                if route and ((msg.sys_flag & SYSFLAG_TRANSACTION_MASK) == SYSFLAG_TRANSACTION_PREPARED
                              or PROP_TRANSACTION_PREPARED in props) and is_prepared(msg):
                    stored, puts, half = self.transactions.prepare(msg)
                    batch.puts.extend(puts)
                    after.append(lambda h=half, m=stored: self.transactions.committed(h, m))
                    if meta is None:
                        meta = [("", "")] * len(originals)
                    meta.append((half.txn_id, ""))
                elif at is not None and at > now:
                    limit = self.settings.timer_max_delay_ms
                    if limit is not None and at - now > limit:
                        raise BadRequest(f"deliver time is more than {limit} ms ahead")
                    stored, puts, entry = self.timers.prepare(msg, at)
                    batch.puts.extend(puts)
                    after.append(lambda e=entry, m=stored: self.timers.committed(e, m))
                    if meta is None:
                        meta = [("", "")] * len(originals)
                    meta.append(("", entry.tid))
                else:
                    stored = msg
                    if meta is not None:
                        meta.append(("", ""))
                originals.append(msg)
                stored_append(stored)
        finally:
            if last_topic is not None:
                rr[last_topic] = rr_i + 1 if rr_used else rr_i
        await self.store.write(batch)  # self.write, inline (one coroutine less per send)
        stored_msgs = batch.messages
        if on_stored is not None:
            on_stored()
        self._after_write(stored_msgs)
        for fn in after:
            fn()
        if not results:
            return []
        out = []
        for i, orig in enumerate(originals):
            stored = stored_msgs[first + i]
            txn_id, recall = meta[i] if meta is not None else ("", "")
            # positional (topic, queue_id, queue_offset, commit_offset, unique_id, transaction_id,
            # recall_handle)
            out.append(SendResult(orig.topic, orig.queue_id, stored.queue_offset, stored.commit_offset,
                                  orig.properties.get(PROP_UNIQ_KEY, ""), txn_id, recall))
        return out

    async def write(self, batch: WriteBatch) -> None:
        """Commit a batch through the store, then wake pullers and tell listeners."""
        await self.store.write(batch)
        if batch.messages:
            self._after_write(batch.messages)

    def _after_write(self, msgs: list[Message]) -> None:
        waiters = self._waiters
        if waiters:  # nobody long-polls while producers alone are busy: skip the lookups
            for msg in msgs:
                ev = waiters.pop((msg.topic, msg.queue_id), None)
                if ev is not None:
                    ev.set()
        for listener in self.write_listeners:
            listener(msgs)

    def interrupt_pulls(self, topic: str, queue_id: int) -> None:
        """Long polls parked on this queue return now (NO_NEW_MSG) instead of at their deadline."""
        ev = self._waiters.pop((topic, queue_id), None)
        if ev is not None:
            ev.set()

    def queue_event(self, topic: str, queue_id: int) -> Event:
        """The event set by the next write to this queue (for long polls)."""
        key = (topic, queue_id)
        ev = self._waiters.get(key)
        if ev is None:
            ev = self._waiters[key] = self.runtime.event()
        return ev

    # -- pull ----------------------------------------------------------------------------------
    def min_offset(self, topic: str, queue_id: int) -> int:
        lo = self.store.min_offset(topic, queue_id)
        if self._purged:
            return max(lo, self._purged.get((topic, queue_id), 0))
        return lo

    async def purge_topic(self, name: str) -> dict[str, int]:
        """Purge every message stored in topic ``name`` now (the admin API's purge).

        Like a commit-log broker, nothing is rewritten: each queue's minimum offset moves to its
        current maximum, so consumers, pulls and browsing start after what was there; the records
        leave the file with retention. Messages sent afterwards are kept; delayed messages still
        waiting in the timer wheel are not part of the topic yet and are delivered later."""
        if name not in self.topics and not any(t == name for t, _ in self.store.queues()):
            raise TopicNotFound(f"topic {name} does not exist")
        puts: list[tuple[str, bytes, Any]] = []
        purged = 0
        marks: dict[tuple[str, int], int] = {}
        for topic, qid in list(self.store.queues()):
            if topic != name:
                continue
            hi = self.store.max_offset(topic, qid)
            purged += max(0, hi - self.min_offset(topic, qid))
            marks[(topic, qid)] = hi
            puts.append((T_PURGE, f"{topic}\x00{qid}".encode(), hi))
        if puts:
            await self.store.write(WriteBatch(puts=puts))
            for k, hi in marks.items():
                self._purged[k] = max(hi, self._purged.get(k, 0))
        return {"queues": len(marks), "messages": purged}

    def max_offset(self, topic: str, queue_id: int) -> int:
        return self.store.max_offset(topic, queue_id)

    async def pull(
        self,
        topic: str,
        queue_id: int,
        offset: int,
        max_count: int = 32,
        *,
        filter: Filter = MATCH_ALL,
        wait_ms: float = 0,
        scan_limit: int = 2048,
    ) -> PullResult:
        """Read up to ``max_count`` matching messages from ``offset``.

        With ``wait_ms`` > 0 and nothing to return, park until a message lands in the queue or
        the wait ends (long polling). Offsets below the minimum start at the minimum; offsets
        beyond the maximum give ``OFFSET_ILLEGAL`` with ``next_offset`` = max.
        """
        deadline = self.now_ms() + wait_ms
        max_count = max(1, max_count)
        while True:
            lo = self.min_offset(topic, queue_id)
            hi = self.store.max_offset(topic, queue_id)
            if offset > hi:
                return PullResult(PullStatus.OFFSET_ILLEGAL, [], hi, lo, hi)
            start = max(offset, lo)
            found: list[Message] = []
            next_offset = start
            if start < hi:
                entries = await self.store.read_index(topic, queue_id, start, min(scan_limit, max(max_count, 32)))
                wanted = []
                for e in entries:
                    if len(wanted) >= max_count:
                        break
                    next_offset = e.queue_offset + 1
                    if filter is MATCH_ALL or filter.match_index(e.tag_hash):
                        wanted.append(e.commit_offset)
                if wanted:
                    for m in await self.store.read_messages(wanted):
                        if m is not None and (filter is MATCH_ALL or filter.match(m)):
                            found.append(m)
                if found:
                    return PullResult(PullStatus.FOUND, found, next_offset, lo, hi)
            remaining = deadline - self.now_ms()
            if next_offset < hi or remaining <= 0:
                status = PullStatus.NO_MATCHED_MSG if next_offset > start else PullStatus.NO_NEW_MSG
                return PullResult(status, [], next_offset, lo, hi)
            offset = next_offset
            ev = self.queue_event(topic, queue_id)
            if self.store.max_offset(topic, queue_id) > offset:
                continue
            await self.runtime.wait(ev, remaining)
            hi = self.store.max_offset(topic, queue_id)
            if hi <= offset:  # the wait ended, or was interrupted (interrupt_pulls) without a new message
                status = PullStatus.NO_MATCHED_MSG if offset > start else PullStatus.NO_NEW_MSG
                return PullResult(status, [], offset, self.store.min_offset(topic, queue_id), hi)

    async def get_message(self, commit_offset: int) -> Message | None:
        (m,) = await self.store.read_messages([commit_offset])
        return m

    async def query_by_key(self, topic: str, key: str, max_count: int = 64) -> list[Message]:
        offs = await self.store.lookup_key(key, max_count * 4)
        msgs = await self.store.read_messages(offs)
        out = [m for m in msgs if m is not None and (not topic or m.topic == topic)]
        return out[-max_count:]

    async def query_by_id(self, unique_id: str) -> Message | None:
        """The newest copy of a message with this unique id in a consumer-visible topic
        (re-appended by a timer, a commit or a retry), else a pending internal copy."""
        found = [m for m in await self.query_by_key("", unique_id, 16) if m.unique_id == unique_id]
        for m in reversed(found):
            if m.topic not in (TIMER_TOPIC, HALF_TOPIC):
                return m
        return found[-1] if found else None

    async def search_offset(self, topic: str, queue_id: int, timestamp_ms: int) -> int:
        return await self.store.offset_for_timestamp(topic, queue_id, timestamp_ms)

    # -- timers, transactions, retry (see timers.py, transactions.py, retry.py) --------------
    async def recall(self, handle: str) -> bool:
        """Cancel a pending delayed message by its ``SendResult.recall_handle`` or unique id."""
        return await self.timers.recall(handle)

    async def end_transaction(
        self,
        producer_group: str,
        *,
        transaction_id: str = "",
        unique_id: str = "",
        commit_offset: int = -1,
        action: str = "commit",
        from_check: bool = False,
    ) -> SendResult | None:
        """Resolve a half message: ``action`` is "commit", "rollback" or "unknown" (also the
        remoting values "8", "12", "0"). Raises NotFound when nothing pending matches."""
        return await self.transactions.end(
            producer_group,
            transaction_id=transaction_id,
            unique_id=unique_id,
            commit_offset=commit_offset,
            action=action,
            from_check=from_check,
        )

    def add_transaction_checker(self, protocol: str, fn: TransactionChecker) -> None:
        """Register ``async fn(client, half_msg, transaction_id)`` for producers of ``protocol``."""
        self.transactions.add_checker(protocol, fn)

    async def send_back(
        self,
        group: str,
        msg_or_commit_offset: Message | int,
        delay_level: int = 0,
        max_reconsume_times: int | None = None,
        origin_topic: str = "",
        origin_msg_id: str = "",
    ) -> SendResult:
        """Consumer send-back: to ``%RETRY%<group>`` after a backoff, or to ``%DLQ%<group>``."""
        return await _retry.send_back(
            self, group, msg_or_commit_offset, delay_level, max_reconsume_times, origin_topic, origin_msg_id
        )

    async def forward_to_dlq(self, group: str, msg: Message) -> SendResult:
        return await _retry.forward_to_dlq(self, group, msg)

    # -- POP (see pop.py) ----------------------------------------------------------------------
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
        """Hand out up to ``max_count`` messages, each invisible for ``invisible_ms``: (message, receipt handle)."""
        return await self.pops.pop(
            group, topic, max_count, invisible_ms, queue_id=queue_id, filter=filter, wait_ms=wait_ms, fifo=fifo,
            client_id=client_id, init_mode=init_mode,
        )

    async def ack(self, group: str, topic: str, receipt_handle: str) -> None:
        """Acknowledge a popped message; InvalidReceipt for unknown/superseded handles."""
        await self.pops.ack(group, topic, receipt_handle)

    async def ack_batch(self, group: str, topic: str, receipt_handles: list[str]) -> list[BrokerError | None]:
        """Acknowledge several popped messages in one write; per handle None or its InvalidReceipt."""
        return list(await self.pops.ack_batch(group, topic, receipt_handles))

    async def change_invisible(self, group: str, topic: str, receipt_handle: str, invisible_ms: int) -> str:
        """Make a popped message invisible for ``invisible_ms`` from now; returns the new handle."""
        return await self.pops.change_invisible(group, topic, receipt_handle, invisible_ms)

    async def pop_to_dlq(self, group: str, topic: str, receipt_handle: str) -> SendResult:
        """Move a popped message to ``%DLQ%<group>`` and consider it acknowledged."""
        return await self.pops.to_dlq(group, topic, receipt_handle)

    # -- admin offset resets (see offset_reset.py) ---------------------------------------------
    async def reset_offsets(self, group: str, topic: str, targets: dict[int, int]) -> dict[int, int]:
        """Move ``group`` to ``{queue_id: offset}`` in ``topic`` (clamped): committed offsets, POP
        position, pending resets for running readers, listeners told. Returns what was applied."""
        return await self.resets.reset(group, topic, targets)

    # -- orderly queue locks (see locks.py) ----------------------------------------------------
    def lock_queues(self, group: str, client_id: str, queues: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
        return self.locks.lock(group, client_id, queues)

    def unlock_queues(self, group: str, client_id: str, queues: Iterable[tuple[str, int]]) -> None:
        self.locks.unlock(group, client_id, queues)

    # -- consumer offsets ----------------------------------------------------------------------
    async def commit_offset(self, group: str, topic: str, queue_id: int, offset: int) -> None:
        key = offset_key(group, topic, queue_id)
        if self._offsets.get(key) == offset:
            return
        self._offsets[key] = offset
        await self.store.write(WriteBatch(puts=[(T_OFFSET, key, offset)]))

    def query_offset(self, group: str, topic: str, queue_id: int) -> int | None:
        return self._offsets.get(offset_key(group, topic, queue_id))

    def group_offsets(self, group: str) -> dict[tuple[str, int], int]:
        prefix = group.encode() + b"\x00"
        out = {}
        for k, v in self._offsets.items():
            if k.startswith(prefix):
                _, topic, qid = k.decode().split("\x00")
                out[(topic, int(qid))] = v
        return out

    def groups_consuming(self, topic: str) -> set[str]:
        out = {g for g, cs in self.clients.items() for c in cs.values() if topic in c.subscriptions}
        for k in self._offsets:
            g, t, _ = k.decode().split("\x00")
            if t == topic:
                out.add(g)
        return out

    # -- client registry -----------------------------------------------------------------------
    def add_group_listener(self, fn: GroupListener) -> None:
        self._group_listeners.append(fn)

    def _notify_group(self, group: str) -> None:
        for fn in list(self._group_listeners):
            fn(group, "change")

    def register_consumer(self, info: ClientInfo) -> bool:
        """Add or refresh a consumer; returns True when the group's membership or subscriptions changed."""
        info.last_seen_ms = self.now_ms()
        members = self.clients.setdefault(info.group, {})
        old = members.get(info.client_id)
        members[info.client_id] = info
        changed = old is None or {k: v.expression for k, v in old.subscriptions.items()} != {
            k: v.expression for k, v in info.subscriptions.items()
        }
        if changed:
            self._notify_group(info.group)
        return changed

    def register_producer(self, info: ClientInfo) -> None:
        info.role = "producer"
        info.last_seen_ms = self.now_ms()
        self.producers.setdefault(info.group, {})[info.client_id] = info

    def unregister_client(self, client_id: str, *, group: str | None = None) -> None:
        for registry, notify in ((self.clients, True), (self.producers, False)):
            for g in [group] if group else list(registry):
                members = registry.get(g or "")
                if members and members.pop(client_id, None) is not None:
                    if not members:
                        del registry[g or ""]
                    if notify:
                        self._notify_group(g or "")

    def consumers_of(self, group: str) -> list[ClientInfo]:
        return sorted(self.clients.get(group, {}).values(), key=lambda c: c.client_id)

    def producers_of(self, group: str) -> list[ClientInfo]:
        return list(self.producers.get(group, {}).values())

    def subscription_of(self, group: str, topic: str) -> Subscription | None:
        for c in self.clients.get(group, {}).values():
            sub = c.subscriptions.get(topic)
            if sub is not None:
                return sub
        return None

    def expire_clients(self) -> None:
        limit = self.now_ms() - self.settings.client_expiry_ms
        for registry, notify in ((self.clients, True), (self.producers, False)):
            for group in list(registry):
                members = registry[group]
                stale = [cid for cid, c in members.items() if c.last_seen_ms < limit]
                for cid in stale:
                    del members[cid]
                if not members:
                    del registry[group]
                if stale and notify:
                    self._notify_group(group)

    async def _expire_clients_loop(self) -> None:
        while True:
            await self.runtime.sleep_ms(10_000)
            self.expire_clients()

    async def _retention_loop(self) -> None:
        s = self.settings
        while True:
            await self.runtime.sleep_ms(s.retention_interval_ms)
            if s.retention_age_ms is not None or s.retention_bytes is not None:
                await self.store.retain(max_age_ms=s.retention_age_ms, max_bytes=s.retention_bytes, now_ms=self.now_ms())

    def topic_names(self) -> Iterable[str]:
        return sorted(self.topics)
