"""The MQTT session manager: sessions, subscriptions, retained messages and wills on the core broker.

No I/O framework here: connections are objects with ``send_packet``/``send_packets``/``kick``
(see server.py); time comes from the broker's runtime; state goes through ``broker.store``.

Delivery
--------
* Publishes are stored with ``broker.send`` (one record in the first-level RocketMQ topic, see
  mapping.py). A write listener on the broker fans every committed message out to the online
  sessions whose subscriptions match (one copy per client at the highest matching QoS, one
  member per shared-subscription group, round robin).
* An offline persistent session keeps no copies: its record holds the queue offsets of every
  RocketMQ queue at the moment it went offline (``off``) plus references (commit offsets) of
  what was in flight or queued. On reconnect the session replays its references, then reads
  each queue from the saved offset up to the offsets captured when it came online, keeping
  messages its subscriptions match (QoS >= 1), in commit order. Live deliveries that arrive
  during that replay are held and sent after it, so order is kept.

Tables (all in broker.store): ``mqtt_session`` (client id -> session record) and
``mqtt_retained`` (MQTT topic -> payload and properties).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from rocketlite.core.broker import Broker
from rocketlite.core.message import PROP_MQTT_QOS, PROP_MQTT_TOPIC, Message
from rocketlite.metrics import METRICS
from rocketlite.protocols.mqtt import codec as C
from rocketlite.protocols.mqtt.mapping import (
    EXCLUDED_PREFIXES,
    PROP_MQTT_EXPIRY,
    PROP_MQTT_RETAIN,
    delivery_from_message,
    is_excluded_topic,
    messages_from_publishes,
    rocketmq_topic,
)
from rocketlite.protocols.mqtt.session import PUB, Delivery, OutItem, Session, SubOptions
from rocketlite.protocols.mqtt.topics import SubscriptionTrie, split_shared, topic_matches
from rocketlite.security.acl import AuthError
from rocketlite.storage.base import WriteBatch

log = logging.getLogger("rocketlite.mqtt")

T_SESSION = "mqtt_session"
T_RETAINED = "mqtt_retained"
NEVER = 0xFFFFFFFF
_UNKNOWN = object()
_QOS_INT = {"0": 0, "1": 1, "2": 2}


@dataclass
class MqttSettings:
    max_packet_size: int = 4 * 1024 * 1024 + 1024
    max_inflight: int = 1000  # outgoing QoS 1/2 window (capped by a v5 client's Receive Maximum)
    receive_maximum: int = 1000  # incoming QoS 2 a v5 client may have unacknowledged (CONNACK Receive Maximum)
    topic_alias_maximum: int = 10
    max_keep_alive: int = 0  # 0: accept the client's; else cap it (MQTT 5 Server Keep Alive)
    max_queued: int = 100_000  # per session, beyond the window
    max_session_expiry: int = NEVER
    sys_interval: int = 10  # seconds between $SYS updates; 0 = off
    replay_limit: int = 100_000  # messages scanned per reconnect
    connect_timeout: float = 10.0
    deny_subscribe: tuple[str, ...] = ()

    @classmethod
    def from_section(cls, sec: dict[str, Any]) -> "MqttSettings":
        s = cls()
        for name in ("max_packet_size", "max_inflight", "receive_maximum", "topic_alias_maximum", "max_keep_alive",
                     "max_queued", "max_session_expiry", "sys_interval", "replay_limit"):
            if name in sec and sec[name] is not None:
                setattr(s, name, int(sec[name]))
        if "connect_timeout" in sec:
            s.connect_timeout = float(sec["connect_timeout"])
        deny = sec.get("deny_subscribe")
        if deny:
            s.deny_subscribe = tuple(deny) if isinstance(deny, (list, tuple)) else tuple(
                x for x in str(deny).split(",") if x)
        return s


class Conn(Protocol):
    client_id: str
    version: int
    peer: str
    session: Session | None
    will: C.Will | None
    replaying: bool
    held: list[tuple[Delivery, int, bool, tuple[int, ...]]]

    def send_packet(self, pkt: Any) -> None: ...
    def send_packets(self, pkts: list[Any]) -> None: ...
    def send_encoded(self, items: list[Any]) -> None: ...  # fan-out: bytes or PUBLISH, already counted
    def congested(self) -> bool: ...  # output backlog so large that QoS 0 deliveries are dropped
    def kick(self, reason: int) -> None: ...


class MqttManager:
    def __init__(self, broker: Broker, settings: MqttSettings | None = None) -> None:
        self.broker = broker
        self.settings = settings or MqttSettings()
        self.sessions: dict[str, Session] = {}
        self.online: dict[str, Conn] = {}
        self.offline_since: dict[str, int] = {}
        self.trie = SubscriptionTrie()
        self.retained: dict[str, Delivery] = {}
        self.sys_retained: dict[str, Delivery] = {}
        self.pending_wills: dict[str, tuple[int, C.Will, int]] = {}  # cid -> (due ms, will, version)
        # Called when a will or a session expiry is scheduled, so the housekeeping loop (which
        # sleeps until next_deadline_ms) wakes up and re-plans.
        self.on_schedule: Any = None
        self._share_rr: dict[tuple[str, str], int] = {}
        self._plans: dict[str, Any] = {}  # MQTT topic -> fan-out plan (see _plan); cleared when the trie changes
        self._batch: dict[Any, list[Any]] | None = None  # per-connection packets while fanning out a batch
        self._counts: dict[str, list[int]] | None = None  # messages/bytes out per metrics label, same batch
        self._restored: dict[str, list[list[Any]]] = {}  # cid -> pending refs loaded from the store
        self.started_at = time.monotonic()
        self.stats = {"received": 0, "sent": 0, "connects": 0, "dropped": 0}
        broker.write_listeners.append(self._on_write)

    def now(self) -> int:
        return self.broker.now_ms()

    def next_deadline_ms(self) -> int | None:
        """When housekeeping_tick next has work: the earliest due will or session expiry."""
        due = [d for d, _w, _v in self.pending_wills.values()]
        for cid, since in self.offline_since.items():
            sess = self.sessions.get(cid)
            if sess is not None and sess.expiry_interval != NEVER:
                due.append(since + sess.expiry_interval * 1000)
        return min(due) if due else None

    def _scheduled(self) -> None:
        if self.on_schedule is not None:
            self.on_schedule()

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        store = self.broker.store
        now = self.now()
        for key, rec in await store.scan(T_SESSION):
            cid = key.decode()
            s = Session(cid, version=int(rec.get("v", 4)), max_queued=self.settings.max_queued)
            s.expiry_interval = int(rec.get("exp", 0))
            for flt, opts in (rec.get("subs") or {}).items():
                o = SubOptions.from_record(opts)
                s.subscriptions[flt] = o
                self._trie_add(cid, flt, o)
            s.resume_offsets = {(t, int(q)): int(o) for t, q, o in rec.get("off") or []}  # type: ignore[attr-defined]
            s.next_pid = int(rec.get("pid", 1)) or 1
            s.incoming_qos2 = set(rec.get("in2") or [])
            self._restored[cid] = list(rec.get("pending") or [])
            self.sessions[cid] = s
            self.offline_since[cid] = int(rec.get("since") or now)
        for key, rec in await store.scan(T_RETAINED):
            msg = Message(topic="", body=bytes(rec["b"]), properties=dict(rec["p"]),
                          store_timestamp=int(rec.get("t", 0)), commit_offset=int(rec.get("c", -1)))
            d = delivery_from_message(msg)
            d.retain = True
            self.retained[key.decode()] = d

    async def reset(self) -> None:
        """Forget every session and retained message (the broker's reset empties the store)."""
        for conn in list(self.online.values()):
            conn.kick(C.RC_ADMIN_ACTION)
        self.online.clear()
        self.sessions.clear()
        self.offline_since.clear()
        self.trie.clear()
        self._plans.clear()
        self.retained.clear()
        self.pending_wills.clear()
        self._restored.clear()
        self._share_rr.clear()
        store = self.broker.store
        deletes = [(T_SESSION, k) for k, _ in await store.scan(T_SESSION)]
        deletes += [(T_RETAINED, k) for k, _ in await store.scan(T_RETAINED)]
        if deletes:
            await store.write(WriteBatch(deletes=deletes))

    # -- subscriptions in the trie -------------------------------------------------------------
    def _trie_add(self, cid: str, flt: str, opts: SubOptions) -> None:
        self._plans.clear()
        if opts.share_group is not None:
            _, real = split_shared(flt)
            self.trie.add(real, (opts.share_group, real, cid), opts)
        else:
            self.trie.add(flt, cid, opts)

    def _trie_remove(self, cid: str, flt: str, opts: SubOptions) -> None:
        self._plans.clear()
        if opts.share_group is not None:
            _, real = split_shared(flt)
            self.trie.remove(real, (opts.share_group, real, cid))
        else:
            self.trie.remove(flt, cid)

    # -- connect / disconnect ------------------------------------------------------------------
    async def connect(self, conn: Conn, pkt: C.Connect) -> tuple[C.Connack, Session | None]:
        st = self.settings
        v5 = pkt.version == 5
        props: dict[int, Any] = {}
        acl = getattr(self, "acl", None)
        if acl is not None:  # [security] enabled: MQTT login (docs/security.md)
            try:
                conn.mqtt_user = acl.mqtt_login(pkt.username, pkt.password)  # type: ignore[attr-defined]
            except AuthError:
                return C.Connack(False, C.RC_BAD_USER_OR_PASSWORD), None
        cid = pkt.client_id
        if not cid:
            if not pkt.clean_start and not v5:
                return C.Connack(False, C.RC_CLIENT_ID_NOT_VALID), None
            cid = "rl-" + os.urandom(10).hex()  # 20 random hex digits (uuid costs start-up time)
            if v5:
                props[C.P_ASSIGNED_CLIENT_ID] = cid
        if pkt.will is not None and pkt.will.topic.startswith("$SYS"):
            return C.Connack(False, C.RC_TOPIC_NAME_INVALID if v5 else C.RC_NOT_AUTHORIZED), None
        if v5:
            expiry = int(pkt.properties.get(C.P_SESSION_EXPIRY, 0))
        else:
            expiry = 0 if pkt.clean_start else NEVER
        if expiry > st.max_session_expiry:
            expiry = st.max_session_expiry
            if v5:
                props[C.P_SESSION_EXPIRY] = expiry
        self.stats["connects"] += 1
        # take over a connected client with the same id
        old = self.online.pop(cid, None)
        if old is not None:
            old.kick(C.RC_SESSION_TAKEN_OVER)
            old_will = old.will
            old.will = None
            old.session = None
            if old_will is not None and not self._will_delay(old_will, old.version):
                await self.publish_will(old_will, cid)
        session = self.sessions.get(cid)
        pending_will = self.pending_wills.pop(cid, None)
        if session is not None and pkt.clean_start:
            await self._end_session(cid, publish_will=False)
            session = None
            if pending_will is not None:  # the old session ended: its delayed will goes now
                await self.publish_will(pending_will[1], cid)
        present = session is not None
        if session is None:
            session = Session(cid, version=pkt.version, max_queued=st.max_queued)
            self.sessions[cid] = session
        session.expiry_interval = expiry
        window = st.max_inflight
        alias_out = 0
        max_out = 0
        if v5:
            window = min(window, int(pkt.properties.get(C.P_RECEIVE_MAXIMUM, 65535)) or 65535)
            alias_out = min(int(pkt.properties.get(C.P_TOPIC_ALIAS_MAXIMUM, 0)), 65535)
            max_out = int(pkt.properties.get(C.P_MAXIMUM_PACKET_SIZE, 0))
        keep_alive = pkt.keep_alive
        if st.max_keep_alive and (keep_alive == 0 or keep_alive > st.max_keep_alive):
            keep_alive = st.max_keep_alive
            if v5:
                props[C.P_SERVER_KEEP_ALIVE] = keep_alive
        session.attach(version=pkt.version, window=window, alias_in_max=st.topic_alias_maximum if v5 else 0,
                       alias_out_max=alias_out, max_packet_out=max_out, keep_alive=keep_alive, now_ms=self.now())
        conn.client_id = cid
        conn.session = session
        conn.will = pkt.will
        self.offline_since.pop(cid, None)
        self.online[cid] = conn
        if self._restored.get(cid) or getattr(session, "resume_offsets", None) is not None:
            # From this instant live deliveries are held; the replay reads the log up to here.
            conn.replaying = True
            store = self.broker.store
            conn.replay_ends = {(t, q): store.max_offset(t, q) for t, q in list(store.queues())  # type: ignore[attr-defined]
                                if not is_excluded_topic(t)}
        if v5:
            props[C.P_RECEIVE_MAXIMUM] = st.receive_maximum
            props[C.P_TOPIC_ALIAS_MAXIMUM] = st.topic_alias_maximum
            props[C.P_MAXIMUM_PACKET_SIZE] = st.max_packet_size
            props[C.P_RETAIN_AVAILABLE] = 1
            props[C.P_WILDCARD_SUB_AVAILABLE] = 1
            props[C.P_SUB_ID_AVAILABLE] = 1
            props[C.P_SHARED_SUB_AVAILABLE] = 1
        if expiry:
            await self._persist(session)
        return C.Connack(present, 0, props), session

    async def after_connack(self, conn: Conn) -> None:
        """Resend what the session owes: in-flight window, references, then the log since it left."""
        s = conn.session
        if s is None:
            return
        now = self.now()
        restored = self._restored.pop(s.client_id, None)
        offsets = getattr(s, "resume_offsets", None)
        if not conn.replaying:
            conn.send_packets(s.resume(now))
            return
        store = self.broker.store
        # the end of the replay: what was in the log when the session came online (set in connect)
        ends: dict[tuple[str, int], int] = getattr(conn, "replay_ends", None) or {}
        try:
            if restored:
                refs = [r[0] for r in restored if r[0] >= 0]
                msgs = {m.commit_offset: m for m in await store.read_messages(refs) if m is not None}
                for ref, qos, retain, sub_ids, pid, state in restored:
                    m = msgs.get(ref)
                    if m is None:
                        continue
                    d = delivery_from_message(m)
                    item = OutItem(d, int(qos), bool(retain), tuple(sub_ids), int(pid), int(state))
                    if pid and pid not in s.inflight:
                        s.inflight[pid] = item
                    else:
                        item.packet_id = 0
                        item.state = PUB
                        s.queue.append(item)
            conn.send_packets(s.resume(now))
            if offsets is not None:
                found: list[tuple[int, Delivery, int, bool, tuple[int, ...]]] = []
                budget = self.settings.replay_limit
                for (t, q), end in ends.items():
                    start = offsets.get((t, q), store.min_offset(t, q))
                    while start < end and budget > 0:
                        batch = await store.read_queue(t, q, start, min(256, end - start))
                        if not batch:
                            break
                        for m in batch:
                            if m.queue_offset >= end:
                                break
                            budget -= 1
                            d = delivery_from_message(m)
                            got = self._match_session(s, d)
                            if got is not None and got[0] > 0:
                                found.append((m.commit_offset, d, *got))
                        start = batch[-1].queue_offset + 1
                found.sort(key=lambda x: x[0])
                out = []
                for _, d, qos, retain, sub_ids in found:
                    p = s.enqueue(d, qos, retain, sub_ids, now_ms=now)
                    if p is not None:
                        out.append(p)
                conn.send_packets(out)
            s.resume_offsets = None  # type: ignore[attr-defined]
        finally:
            conn.replaying = False
            held, conn.held = conn.held, []
            out = []
            for d, qos, retain, sub_ids in held:
                p = s.enqueue(d, qos, retain, sub_ids, now_ms=self.now())
                if p is not None:
                    out.append(p)
            if out:
                conn.send_packets(out)

    def _match_session(self, s: Session, d: Delivery) -> tuple[int, bool, tuple[int, ...]] | None:
        best = -1
        retain = False
        sub_ids: list[int] = []
        for flt, o in s.subscriptions.items():
            if o.share_group is not None:
                continue
            if not topic_matches(flt, d.topic):
                continue
            if o.no_local and d.origin == s.client_id:
                continue
            best = max(best, o.qos)
            retain = retain or (o.retain_as_published and d.retain)
            if o.sub_id:
                sub_ids.append(o.sub_id)
        if best < 0:
            return None
        return min(best, d.qos), retain, tuple(sub_ids)

    @staticmethod
    def _will_delay(will: C.Will, version: int) -> int:
        return int(will.properties.get(C.P_WILL_DELAY, 0)) if version == 5 else 0

    async def connection_lost(self, conn: Conn, *, graceful: bool) -> None:
        cid = conn.client_id
        s = conn.session
        if s is None or self.online.get(cid) is not conn:
            return
        del self.online[cid]
        conn.session = None
        will = conn.will
        conn.will = None
        now = self.now()
        if will is not None and not graceful:
            delay = self._will_delay(will, conn.version)
            if delay and s.expiry_interval:
                due = now + min(delay, s.expiry_interval) * 1000
                self.pending_wills[cid] = (due, will, conn.version)
                self._scheduled()
            else:
                await self.publish_will(will, cid)
        if s.expiry_interval == 0:
            await self._end_session(cid, publish_will=False)
            return
        s.drop_qos0()
        self.offline_since[cid] = now
        self._scheduled()
        self._snapshot_offsets(s)
        await self._persist(s)

    def _snapshot_offsets(self, s: Session) -> None:
        store = self.broker.store
        s.resume_offsets = {(t, q): store.max_offset(t, q) for t, q in list(store.queues())  # type: ignore[attr-defined]
                            if not is_excluded_topic(t)}

    def set_session_expiry(self, s: Session, expiry: int) -> None:
        s.expiry_interval = min(expiry, self.settings.max_session_expiry)

    async def _end_session(self, cid: str, *, publish_will: bool) -> None:
        s = self.sessions.pop(cid, None)
        self.offline_since.pop(cid, None)
        self._restored.pop(cid, None)
        if s is not None:
            for flt, o in s.subscriptions.items():
                self._trie_remove(cid, flt, o)
        pw = self.pending_wills.pop(cid, None)
        if publish_will and pw is not None:
            await self.publish_will(pw[1], cid)
        if s is not None and s.expiry_interval:
            pass
        await self.broker.store.write(WriteBatch(deletes=[(T_SESSION, cid.encode())]))

    async def _persist(self, s: Session) -> None:
        if not s.expiry_interval:
            return
        offsets = getattr(s, "resume_offsets", None)
        if offsets is None:
            self._snapshot_offsets(s)
            offsets = s.resume_offsets  # type: ignore[attr-defined]
            if s.client_id in self.online:
                s.resume_offsets = None  # type: ignore[attr-defined]
        rec = {
            "v": s.version,
            "exp": s.expiry_interval,
            "subs": {f: o.to_record() for f, o in s.subscriptions.items()},
            "off": [[t, q, o] for (t, q), o in offsets.items()],
            "pending": s.pending_refs(),
            "in2": sorted(s.incoming_qos2),
            "pid": s.next_pid,
            "since": self.offline_since.get(s.client_id, 0),
        }
        await self.broker.store.write(WriteBatch(puts=[(T_SESSION, s.client_id.encode(), rec)]))

    async def housekeeping_tick(self) -> None:
        """Publish due wills and end expired offline sessions (called periodically)."""
        now = self.now()
        for cid, (due, will, _v) in list(self.pending_wills.items()):
            if due <= now:
                self.pending_wills.pop(cid, None)
                await self.publish_will(will, cid)
        for cid, since in list(self.offline_since.items()):
            s = self.sessions.get(cid)
            if s is None:
                self.offline_since.pop(cid, None)
                continue
            if s.expiry_interval != NEVER and now >= since + s.expiry_interval * 1000:
                await self._end_session(cid, publish_will=True)

    # -- publish -------------------------------------------------------------------------------
    async def publish_will(self, will: C.Will, cid: str) -> None:
        pkt = C.Publish(will.topic, will.payload, will.qos, will.retain, False, 0,
                        {k: v for k, v in will.properties.items() if k != C.P_WILL_DELAY})
        try:
            await self.publish([pkt], cid, "")
        except Exception:  # noqa: BLE001 - a will that cannot be stored must not kill the caller
            log.exception("could not publish the will of %s", cid)

    async def publish(self, pkts: list[C.Publish], cid: str, peer: str,
                      on_stored: Callable[[], None] | None = None) -> None:
        """Store publishes (one atomic send), then update retained messages. ``on_stored`` runs
        once the messages are stored, before they fan out (Broker.send)."""
        msgs = messages_from_publishes(pkts, cid, peer)
        self.stats["received"] += len(pkts)
        await self.broker.send(msgs, results=False, one_queue=True, on_stored=on_stored)
        # metrics once per run of messages to the same RocketMQ topic (a batch usually has one)
        label = ""
        n = nbytes = 0
        for m in msgs:
            if m.topic != label:
                if n:
                    METRICS.messages_in("mqtt", label, n, nbytes)
                label = m.topic
                n = nbytes = 0
            n += 1
            nbytes += len(m.body)
        if n:
            METRICS.messages_in("mqtt", label, n, nbytes)
        for p in pkts:
            if p.retain:
                break
        else:
            return
        puts: list[tuple[str, bytes, Any]] = []
        deletes: list[tuple[str, bytes]] = []
        for p, m in zip(pkts, msgs):
            if not p.retain:
                continue
            key = p.topic.encode()
            if not p.payload:
                if self.retained.pop(p.topic, None) is not None:
                    deletes.append((T_RETAINED, key))
                continue
            d = delivery_from_message(m)
            d.retain = True
            self.retained[p.topic] = d
            puts.append((T_RETAINED, key, {"b": m.body, "p": m.properties, "t": m.store_timestamp,
                                           "c": m.commit_offset}))
        if puts or deletes:
            await self.broker.store.write(WriteBatch(puts=puts, deletes=deletes))

    def _plan(self, topic: str) -> Any:
        """How a message on ``topic`` fans out, worked out once per topic (until the trie changes).

        ``()``: nobody subscribes. ``None``: shared or no-local subscriptions match, which depend on
        each message (origin, round robin): use :meth:`_fan_out`. Otherwise ``(label, head, targets)``:
        the metrics label (RocketMQ topic), the encoded topic name and one ``(client id, QoS, retain
        as published, subscription ids)`` per client, overlapping subscriptions merged.
        """
        matches = self.trie.match(topic)
        plan: Any
        if not matches:
            plan = ()
        elif any(o.share_group is not None or o.no_local for _, o in matches):
            plan = None
        else:
            per: dict[str, list[Any]] = {}
            for cid, o in matches:
                cur = per.get(cid)
                if cur is None:
                    per[cid] = [o.qos, o.retain_as_published, [o.sub_id] if o.sub_id else []]
                else:
                    cur[0] = max(cur[0], o.qos)
                    cur[1] = cur[1] or o.retain_as_published
                    if o.sub_id:
                        cur[2].append(o.sub_id)
            plan = (rocketmq_topic(topic), C.topic_head(topic),
                    tuple((cid, q, rap, tuple(ids)) for cid, (q, rap, ids) in per.items()))
        if len(self._plans) >= 4096:
            self._plans.clear()
        self._plans[topic] = plan
        return plan

    def _on_write(self, msgs: list[Message]) -> None:
        """Fan committed messages out to online subscribers.

        Consecutive messages with the same topic (a publisher's batch) go out together, through
        the topic's plan (:meth:`_plan`). Packets for each connection are collected over the whole
        batch and handed over at the end (one buffer append and one writer wake-up per
        connection); a QoS 0 PUBLISH for 3.1/3.1.1 clients is encoded once per message and shared
        by all of them; metrics are counted per batch. Each connection still gets its messages in
        commit order.
        """
        if not self.trie.count:
            return
        plans = self._plans
        self._batch = batch = {}
        self._counts = counts = {}
        n = len(msgs)
        i = 0
        try:
            while i < n:
                m = msgs[i]
                mt = m.topic
                mqtt_topic = m.properties.get(PROP_MQTT_TOPIC)
                j = i + 1
                while j < n:
                    m2 = msgs[j]
                    if m2.topic != mt or m2.properties.get(PROP_MQTT_TOPIC) != mqtt_topic:
                        break
                    j += 1
                run = msgs if j - i == n else msgs[i:j]
                i = j
                if mt.startswith(EXCLUDED_PREFIXES) or mt == "DefaultCluster":
                    continue
                topic = mqtt_topic or mt
                plan = plans.get(topic, _UNKNOWN)
                if plan is _UNKNOWN:
                    plan = self._plan(topic)
                if plan:
                    self._fan_out_run(run, mqtt_topic is not None, plan)
                elif plan is None:
                    matches = self.trie.match(topic)
                    for m in run:
                        self._fan_out(delivery_from_message(m), matches)
        finally:
            self._batch = None
            self._counts = None
            self._flush(batch, counts)

    def _fan_out_run(self, run: list[Message], from_mqtt: bool, plan: tuple[str, bytes, Any]) -> None:
        """Deliver messages of one topic through its plan (no shared or no-local subscriptions)."""
        label, head, targets = plan
        batch = self._batch
        assert batch is not None
        # what the fast paths need, read from the properties without building Deliveries (see
        # mapping.py); a message not published over MQTT is QoS 1, never retained, never expires
        # (QoS and retain flags are read only when a subscription needs them: a QoS 0 subscriber
        # without "retain as published" needs neither)
        qoses: list[int] | None = None
        rets: list[bool] | None = None
        any_ret = False
        if from_mqtt:
            plain = not any(PROP_MQTT_EXPIRY in m.properties for m in run)
        else:
            qoses = [1] * len(run)
            rets = [False] * len(run)
            plain = True
        ds: list[Delivery] | None = None
        enc0: list[bytes] | None = None  # shared QoS 0 PUBLISH per message (3.1.1, retain clear)
        sent = 0
        nbytes = 0
        online = self.online
        for cid, sq, rap, sub_ids in targets:
            conn = online.get(cid)
            if conn is None:
                continue  # offline persistent sessions read the log when they come back
            s = conn.session
            fast = plain and conn.version != 5 and s is not None and not s.max_packet_out
            if ds is None and (conn.replaying or s is None or not fast):
                ds = [delivery_from_message(m) for m in run]
            if qoses is None and (sq or rap or conn.replaying or not fast):
                qoses = [_QOS_INT.get(m.properties.get(PROP_MQTT_QOS), 0) for m in run]  # type: ignore[arg-type]
                rets = [m.properties.get(PROP_MQTT_RETAIN) == "1" for m in run]
                any_ret = any(rets)
            if conn.replaying:
                assert ds is not None and qoses is not None and rets is not None
                for k, d in enumerate(ds):
                    q = qoses[k]
                    conn.held.append((d, sq if sq < q else q, rets[k] and rap, sub_ids))
                continue
            if s is None:
                continue
            out = batch.get(conn)
            if out is None:
                out = batch[conn] = []
                if conn.congested():
                    out.append(None)  # marker: QoS 0 is dropped for this connection
            drop0 = bool(out) and out[0] is None
            if sq == 0 and fast and not (rap and any_ret):
                # QoS 0 to a 3.1.1 client: the shared encodings, all at once
                if drop0:
                    self.stats["dropped"] += len(run)
                    continue
                if enc0 is None:
                    enc0 = [C.encode_publish_qos0(head, m.body, False) for m in run]
                out.extend(enc0)
                sent += len(run)
                nbytes += sum(len(m.body) for m in run)
                continue
            assert qoses is not None and rets is not None
            for k, m in enumerate(run):
                q = qoses[k]
                qos = sq if sq < q else q
                retain = rets[k] and rap
                if qos == 0:
                    if drop0:
                        self.stats["dropped"] += 1
                        continue
                    if fast:
                        out.append(C.encode_publish_qos0(head, m.body, retain))
                        sent += 1
                        nbytes += len(m.body)
                        continue
                if qos and fast:
                    # the Delivery is built only if the session ever needs it (see OutItem)
                    pid = s.take(m, qos, retain, sub_ids, delivery_from_message)
                    if pid:
                        out.append(C.encode_publish_qos12(head, m.body, qos, retain, pid))
                        sent += 1
                        nbytes += len(m.body)
                    continue
                assert ds is not None
                d = ds[k]
                pkt = s.enqueue(d, qos, retain, sub_ids, now_ms=d.expires_at_ms and self.now())
                if pkt is not None:
                    out.append(pkt)
                    sent += 1
                    nbytes += len(m.body)
        if sent:
            counts = self._counts
            assert counts is not None
            c = counts.get(label)
            if c is None:
                counts[label] = [sent, nbytes]
            else:
                c[0] += sent
                c[1] += nbytes

    def _flush(self, batch: dict[Any, list[Any]], counts: dict[str, list[int]]) -> None:
        for conn, out in batch.items():
            if out and out[0] is None:
                del out[0]
            if out:
                conn.send_encoded(out)
        sent = 0
        for label, (n, nbytes) in counts.items():
            METRICS.messages_out("mqtt", label, n, nbytes)
            sent += n
        self.stats["sent"] += sent

    def _fan_out(self, d: Delivery, matches: list[tuple[Any, Any]]) -> None:
        if len(matches) == 1:
            key, o = matches[0]
            if o.share_group is None:
                if o.no_local and d.origin == key:
                    return
                self._deliver(key, d, min(o.qos, d.qos), d.retain and o.retain_as_published,
                              (o.sub_id,) if o.sub_id else ())
                return
        per: dict[str, list[Any]] = {}
        shared: dict[tuple[str, str], list[tuple[str, SubOptions]]] = {}
        for key, o in matches:
            if o.share_group is not None:
                shared.setdefault((key[0], key[1]), []).append((key[2], o))
                continue
            if o.no_local and d.origin == key:
                continue
            cur = per.get(key)
            if cur is None:
                per[key] = [o.qos, d.retain and o.retain_as_published, [o.sub_id] if o.sub_id else []]
            else:
                cur[0] = max(cur[0], o.qos)
                cur[1] = cur[1] or (d.retain and o.retain_as_published)
                if o.sub_id:
                    cur[2].append(o.sub_id)
        for (group, flt), members in shared.items():
            online = [(c, o) for c, o in sorted(members, key=lambda x: x[0]) if c in self.online]
            if not online:
                continue
            i = self._share_rr.get((group, flt), 0)
            self._share_rr[(group, flt)] = i + 1
            c, o = online[i % len(online)]
            self._deliver(c, d, min(o.qos, d.qos), False, (o.sub_id,) if o.sub_id else ())
        for cid, (qos, retain, sub_ids) in per.items():
            self._deliver(cid, d, min(qos, d.qos), retain, tuple(sub_ids))

    def _deliver(self, cid: str, d: Delivery, qos: int, retain: bool, sub_ids: tuple[int, ...]) -> None:
        conn = self.online.get(cid)
        if conn is None:
            return  # offline persistent sessions read the log when they come back
        if conn.replaying:
            conn.held.append((d, qos, retain, sub_ids))
            return
        s = conn.session
        if s is None:
            return
        batch = self._batch
        if batch is None:  # outside a write batch ($SYS)
            pkt = s.enqueue(d, qos, retain, sub_ids, now_ms=d.expires_at_ms and self.now())
            if pkt is not None:
                conn.send_packet(pkt)
            return
        out = batch.get(conn)
        if out is None:
            out = batch[conn] = []
            if conn.congested():
                out.append(None)
        if qos == 0 and out and out[0] is None:
            self.stats["dropped"] += 1
            return
        pkt = s.enqueue(d, qos, retain, sub_ids, now_ms=d.expires_at_ms and self.now())
        if pkt is not None:
            out.append(pkt)
            counts = self._counts
            assert counts is not None
            label = rocketmq_topic(d.topic)
            c = counts.get(label)
            if c is None:
                counts[label] = [1, len(d.payload)]
            else:
                c[0] += 1
                c[1] += len(d.payload)

    def deliver_direct(self, d: Delivery) -> None:
        """Fan out a message that is not in the log ($SYS)."""
        matches = self.trie.match(d.topic)
        if matches:
            self._fan_out(d, matches)

    # -- subscribe -----------------------------------------------------------------------------
    async def subscribe(self, conn: Conn, pkt: C.Subscribe) -> tuple[C.Suback, list[C.Publish]]:
        s = conn.session
        assert s is not None
        v5 = conn.version == 5
        sub_id = 0
        if v5:
            ids = pkt.properties.get(C.P_SUBSCRIPTION_ID)
            if ids:
                sub_id = ids[0]
                if sub_id == 0:
                    raise C.protocol_error("subscription identifier 0")
        reasons: list[int] = []
        retained_out: list[tuple[Delivery, int, bool, tuple[int, ...]]] = []
        changed = False
        for sub in pkt.subscriptions:
            flt = sub.filter
            try:
                group, real = split_shared(flt)
            except ValueError:
                reasons.append(C.RC_TOPIC_FILTER_INVALID if v5 else 0x80)
                continue
            if not C.valid_topic_filter(real):
                reasons.append(C.RC_TOPIC_FILTER_INVALID if v5 else 0x80)
                continue
            if group is not None and sub.no_local:
                raise C.protocol_error("no local on a shared subscription")
            acl = getattr(self, "acl", None)
            if acl is not None and not acl.mqtt_may(getattr(conn, "mqtt_user", None), real, "SUB"):
                reasons.append(C.RC_NOT_AUTHORIZED if v5 else 0x80)  # [security] topic ACL
                continue
            if any(topic_matches(d, real) or d == real for d in self.settings.deny_subscribe):
                reasons.append(C.RC_UNSPECIFIED)  # what the Paho suite expects for a refused filter
                continue
            opts = SubOptions(sub.qos, sub.no_local, sub.retain_as_published, sub.retain_handling, sub_id, group)
            existed = flt in s.subscriptions
            if existed:
                self._trie_remove(s.client_id, flt, s.subscriptions[flt])
            s.subscriptions[flt] = opts
            self._trie_add(s.client_id, flt, opts)
            changed = True
            reasons.append(sub.qos)
            if group is None and (sub.retain_handling == 0 or (sub.retain_handling == 1 and not existed)):
                now = self.now()
                for store in (self.retained, self.sys_retained):
                    for topic, d in list(store.items()):
                        if d.expires_at_ms and d.expires_at_ms <= now:
                            continue
                        if topic_matches(real, topic):
                            retained_out.append((d, min(sub.qos, d.qos), True, (sub_id,) if sub_id else ()))
        if changed and s.expiry_interval:
            await self._persist(s)
        out = []
        now = self.now()
        for d, qos, retain, sub_ids in retained_out:
            p = s.enqueue(d, qos, retain, sub_ids, now_ms=now)
            if p is not None:
                out.append(p)
        return C.Suback(pkt.packet_id, reasons), out

    async def unsubscribe(self, conn: Conn, pkt: C.Unsubscribe) -> C.Unsuback:
        s = conn.session
        assert s is not None
        reasons = []
        for flt in pkt.filters:
            o = s.subscriptions.pop(flt, None)
            if o is None:
                reasons.append(C.RC_NO_SUBSCRIPTION_EXISTED)
            else:
                self._trie_remove(s.client_id, flt, o)
                reasons.append(0)
        if s.expiry_interval:
            await self._persist(s)
        return C.Unsuback(pkt.packet_id, reasons if conn.version == 5 else [])

    # -- $SYS ----------------------------------------------------------------------------------
    def sys_values(self) -> dict[str, str]:
        from rocketlite import __version__

        return {
            "$SYS/broker/version": f"rocketlite {__version__}",
            "$SYS/broker/uptime": f"{int(time.monotonic() - self.started_at)} seconds",
            "$SYS/broker/clients/connected": str(len(self.online)),
            "$SYS/broker/clients/total": str(len(self.sessions)),
            "$SYS/broker/clients/disconnected": str(len(self.sessions) - len(self.online)),
            "$SYS/broker/messages/received": str(self.stats["received"]),
            "$SYS/broker/messages/sent": str(self.stats["sent"]),
            "$SYS/broker/publish/messages/dropped": str(self.stats["dropped"]),
            "$SYS/broker/subscriptions/count": str(self.trie.count),
            "$SYS/broker/retained messages/count": str(len(self.retained)),
            "$SYS/broker/connects/total": str(self.stats["connects"]),
        }

    def publish_sys(self) -> None:
        for topic, value in self.sys_values().items():
            d = Delivery(topic, value.encode(), 0, True)
            old = self.sys_retained.get(topic)
            self.sys_retained[topic] = d
            if old is None or old.payload != d.payload:
                self.deliver_direct(Delivery(topic, d.payload, 0, False))
