"""The per-client MQTT session state machine (pure: no I/O, no clock of its own).

Rules of this file
------------------
1. Everything a client session remembers lives here: subscriptions, outgoing QoS 1/2 messages
   in flight (by packet id) and queued behind the in-flight window, incoming QoS 2 packet ids
   awaiting PUBREL, topic aliases in both directions, keep-alive bookkeeping.
2. It does not know how bytes travel nor how messages are stored: the server feeds it
   :class:`Delivery` objects and packet events and sends the packets it returns.

Theory of operation
-------------------
Outgoing (server -> client): ``enqueue`` takes a delivery at the subscriber's QoS. QoS 0 goes out
at once. QoS 1/2 go out while fewer than ``window`` (the client's Receive Maximum, or the
server's in-flight limit for 3.1.1) are unacknowledged; the rest wait in ``queue``. A QoS 1
message leaves the window on PUBACK; a QoS 2 message moves to state ``REL`` on PUBREC (the
server sends PUBREL) and leaves on PUBCOMP. ``resume`` replays the window after a reconnect: 
PUBLISH with DUP set for unacknowledged messages, PUBREL for those in ``REL``.

Incoming (client -> server): QoS 2 packet ids stay in ``incoming_qos2`` from the PUBLISH until
the PUBREL, so a duplicate PUBLISH is acknowledged but not stored twice.

Every queued or in-flight delivery carries ``ref``, the commit-log offset of the message it
came from (-1 for messages that are not in the log, such as ``$SYS``), so a persisted session
refers to the log instead of copying payloads.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from rocketlite.protocols.mqtt.codec import (
    P_MESSAGE_EXPIRY,
    P_SUBSCRIPTION_ID,
    P_TOPIC_ALIAS,
    PUBREL,
    Ack,
    Publish,
)

PUB = 1  # waiting for PUBACK / PUBREC
REL = 2  # PUBREL sent, waiting for PUBCOMP


@dataclass(slots=True)
class SubOptions:
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    sub_id: int = 0
    share_group: str | None = None

    def to_record(self) -> list[Any]:
        return [self.qos, self.no_local, self.retain_as_published, self.retain_handling, self.sub_id, self.share_group]

    @classmethod
    def from_record(cls, rec: list[Any]) -> "SubOptions":
        return cls(int(rec[0]), bool(rec[1]), bool(rec[2]), int(rec[3]), int(rec[4] or 0), rec[5] if len(rec) > 5 else None)


@dataclass(slots=True)
class Delivery:
    """One message as published, before per-subscriber QoS, retain and ids are applied."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    properties: dict[int, Any] = field(default_factory=dict)  # MQTT 5 properties (no alias / sub ids)
    ref: int = -1  # commit offset in the log
    expires_at_ms: int = 0  # 0 = never
    origin: str = ""  # publishing MQTT client id (for no-local)


class OutItem:
    """A QoS 1/2 delivery in the window or queued (QoS 0 only when queued).

    ``delivery`` may be given as any source object plus ``make`` that turns it into the
    Delivery: the fan-out hands over the stored message and the Delivery is built only if it is
    ever needed (a resend, a queued message, persistence), not for every message that goes
    straight out."""

    __slots__ = ("_delivery", "_make", "qos", "retain", "sub_ids", "packet_id", "state")

    def __init__(self, delivery: Any, qos: int, retain: bool, sub_ids: tuple[int, ...] = (), packet_id: int = 0,
                 state: int = PUB, make: Callable[[Any], Delivery] | None = None) -> None:
        self._delivery = delivery
        self._make = make
        self.qos = qos
        self.retain = retain
        self.sub_ids = sub_ids
        self.packet_id = packet_id
        self.state = state

    @property
    def delivery(self) -> Delivery:
        if self._make is not None:
            self._delivery = self._make(self._delivery)
            self._make = None
        return self._delivery  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"OutItem({self.delivery!r}, qos={self.qos}, retain={self.retain}, packet_id={self.packet_id})"


class SessionError(Exception):
    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Session:
    """State of one client id, surviving connections when the session is persistent."""

    def __init__(self, client_id: str, *, version: int = 4, window: int = 100, max_queued: int = 100_000) -> None:
        self.client_id = client_id
        self.version = version
        self.subscriptions: dict[str, SubOptions] = {}
        self.inflight: dict[int, OutItem] = {}
        self.queue: deque[OutItem] = deque()
        self.incoming_qos2: set[int] = set()
        self.window = window
        self.max_queued = max_queued
        self.expiry_interval = 0  # seconds; 0xFFFFFFFF = never
        self.next_pid = 1
        # topic aliases
        self.alias_in: dict[int, str] = {}
        self.alias_in_max = 0
        self.alias_out: dict[str, int] = {}
        self.alias_out_max = 0
        self.max_packet_out = 0  # client's Maximum Packet Size, 0 = unlimited
        # keep-alive bookkeeping (milliseconds of the injected clock)
        self.keep_alive = 0
        self.last_packet_ms = 0
        self.dropped = 0

    # -- connection lifecycle ------------------------------------------------------------------
    def attach(self, *, version: int, window: int, alias_in_max: int, alias_out_max: int, max_packet_out: int,
               keep_alive: int, now_ms: int) -> None:
        """A (new) network connection takes over this session."""
        self.version = version
        self.window = max(1, window)
        self.alias_in = {}
        self.alias_in_max = alias_in_max
        self.alias_out = {}
        self.alias_out_max = alias_out_max
        self.max_packet_out = max_packet_out
        self.keep_alive = keep_alive
        self.last_packet_ms = now_ms

    def touch(self, now_ms: int) -> None:
        self.last_packet_ms = now_ms

    def keep_alive_expired(self, now_ms: int) -> bool:
        """True when 1.5 x keep-alive passed without a packet from the client."""
        return self.keep_alive > 0 and now_ms - self.last_packet_ms > self.keep_alive * 1500

    # -- incoming ------------------------------------------------------------------------------
    def resolve_alias(self, pkt: Publish) -> None:
        """Apply an incoming Topic Alias (MQTT 5): set or look up, then strip it."""
        alias = pkt.properties.pop(P_TOPIC_ALIAS, None)
        if alias is None:
            if not pkt.topic:
                raise SessionError(0x82, "empty topic without topic alias")
            return
        if alias == 0 or alias > self.alias_in_max:
            raise SessionError(0x94, f"topic alias {alias} out of range")
        if pkt.topic:
            self.alias_in[alias] = pkt.topic
        else:
            topic = self.alias_in.get(alias)
            if topic is None:
                raise SessionError(0x82, f"unknown topic alias {alias}")
            pkt.topic = topic

    def incoming_qos2_seen(self, packet_id: int) -> bool:
        return packet_id in self.incoming_qos2

    def incoming_qos2_stored(self, packet_id: int) -> None:
        self.incoming_qos2.add(packet_id)

    def on_pubrel(self, packet_id: int) -> Ack:
        found = packet_id in self.incoming_qos2
        self.incoming_qos2.discard(packet_id)
        return Ack(7, packet_id, 0 if found or self.version != 5 else 0x92)

    # -- outgoing ------------------------------------------------------------------------------
    def _alloc_pid(self) -> int:
        pid = self.next_pid
        if pid in self.inflight:
            for _ in range(65535):
                if pid not in self.inflight:
                    break
                pid = pid % 65535 + 1
            else:  # pragma: no cover - window is far below 65535
                raise SessionError(0x93, "no free packet identifier")
        self.next_pid = pid + 1 if pid < 65535 else 1
        return pid

    def enqueue(self, delivery: Delivery, qos: int, retain: bool, sub_ids: tuple[int, ...] = (), *,
                now_ms: int = 0, online: bool = True) -> Publish | None:
        """Take a delivery; returns the PUBLISH to send now, or None (queued or dropped)."""
        if qos == 0:
            if not online:
                return None
            if self.version != 5 and not delivery.expires_at_ms and not self.max_packet_out:
                return Publish(delivery.topic, delivery.payload, 0, retain, False, 0, {})
            return self._publish(OutItem(delivery, 0, retain, sub_ids), now_ms)
        item = OutItem(delivery, qos, retain, sub_ids)
        if online and len(self.inflight) < self.window and not self.queue:
            item.packet_id = self._alloc_pid()
            self.inflight[item.packet_id] = item
            pkt = self._publish(item, now_ms)
            if pkt is None:  # expired or too large: acknowledged as dropped
                del self.inflight[item.packet_id]
            return pkt
        if len(self.queue) >= self.max_queued:
            self.dropped += 1
            return None
        self.queue.append(item)
        return None

    def take(self, delivery: Any, qos: int, retain: bool, sub_ids: tuple[int, ...] = (),
             make: Callable[[Any], Delivery] | None = None) -> int:
        """``enqueue`` for QoS 1/2 when the caller encodes the PUBLISH itself (3.1.1, no expiry, no
        Maximum Packet Size): the packet id it went out with, or 0 when it was queued or dropped.
        With ``make``, ``delivery`` is its source, converted when first needed (see OutItem)."""
        item = OutItem(delivery, qos, retain, sub_ids, 0, PUB, make)
        if len(self.inflight) < self.window and not self.queue:
            pid = item.packet_id = self._alloc_pid()
            self.inflight[pid] = item
            return pid
        if len(self.queue) >= self.max_queued:
            self.dropped += 1
        else:
            self.queue.append(item)
        return 0

    def _publish(self, item: OutItem, now_ms: int, dup: bool = False) -> Publish | None:
        d = item.delivery
        props: dict[int, Any]
        if self.version == 5:
            props = dict(d.properties) if d.properties else {}
            if d.expires_at_ms:
                left = (d.expires_at_ms - now_ms + 999) // 1000
                if left <= 0:
                    return None
                props[P_MESSAGE_EXPIRY] = left
            if item.sub_ids:
                props[P_SUBSCRIPTION_ID] = list(item.sub_ids)
            topic = d.topic
            if self.alias_out_max:
                alias = self.alias_out.get(topic)
                if alias is not None:
                    props[P_TOPIC_ALIAS] = alias
                    topic = ""
                elif len(self.alias_out) < self.alias_out_max:
                    alias = len(self.alias_out) + 1
                    self.alias_out[topic] = alias
                    props[P_TOPIC_ALIAS] = alias
        else:
            if d.expires_at_ms and d.expires_at_ms <= now_ms:
                return None
            props = {}
            topic = d.topic
        if self.max_packet_out and len(d.payload) + len(topic) + 16 > self.max_packet_out:
            self.dropped += 1
            return None
        return Publish(topic, d.payload, item.qos, item.retain, dup, item.packet_id, props)

    def pump(self, now_ms: int = 0) -> list[Publish]:
        """Move queued messages into the window; returns the PUBLISH packets to send."""
        out: list[Publish] = []
        while self.queue and len(self.inflight) < self.window:
            item = self.queue.popleft()
            if item.qos == 0:
                pkt = self._publish(item, now_ms)
                if pkt is not None:
                    out.append(pkt)
                continue
            item.packet_id = self._alloc_pid()
            self.inflight[item.packet_id] = item
            pkt = self._publish(item, now_ms)
            if pkt is None:
                del self.inflight[item.packet_id]
                continue
            out.append(pkt)
        return out

    def on_puback(self, packet_id: int) -> bool:
        item = self.inflight.get(packet_id)
        if item is None or item.qos != 1:
            return False
        del self.inflight[packet_id]
        return True

    def on_pubrec(self, packet_id: int, reason: int = 0) -> Ack | None:
        item = self.inflight.get(packet_id)
        if item is None or item.qos != 2:
            return Ack(PUBREL, packet_id, 0x92 if self.version == 5 else 0)
        if reason >= 0x80:  # the client refused: the flow ends here
            del self.inflight[packet_id]
            return None
        item.state = REL
        return Ack(PUBREL, packet_id)

    def on_pubcomp(self, packet_id: int) -> bool:
        item = self.inflight.get(packet_id)
        if item is None or item.state != REL:
            return False
        del self.inflight[packet_id]
        return True

    def resume(self, now_ms: int = 0) -> list[Publish | Ack]:
        """After a reconnect: resend the window (DUP PUBLISH or PUBREL), then queued messages."""
        out: list[Publish | Ack] = []
        self.alias_out = {}
        for pid, item in list(self.inflight.items()):
            if item.state == REL:
                out.append(Ack(PUBREL, pid))
                continue
            pkt = self._publish(item, now_ms, dup=True)
            if pkt is None:
                del self.inflight[pid]
            else:
                out.append(pkt)
        out.extend(self.pump(now_ms))
        return out

    def drop_qos0(self) -> None:
        if any(i.qos == 0 for i in self.queue):
            self.queue = deque(i for i in self.queue if i.qos)

    def pending_refs(self) -> list[list[Any]]:
        """In-flight and queued QoS 1/2 deliveries as log references, for persistence."""
        out: list[list[Any]] = []
        for item in self.inflight.values():
            out.append([item.delivery.ref, item.qos, item.retain, list(item.sub_ids), item.packet_id, item.state])
        for item in self.queue:
            if item.qos:
                out.append([item.delivery.ref, item.qos, item.retain, list(item.sub_ids), 0, PUB])
        return out
