"""MQTT 3.1.1 and 5.0 packets, sans-IO.

``Decoder.feed(data)`` buffers bytes and returns every complete packet as a typed object;
``encode(packet, version)`` turns a packet back into bytes. Nothing here does I/O.

* The protocol version is learnt from the CONNECT packet (3 = 3.1, 4 = 3.1.1, 5 = 5.0); the
  decoder uses it for every later packet (MQTT 5 adds reason codes and properties).
* Every length field is bounded: the remaining length by ``max_packet_size`` (checked on the
  fixed header, before the body arrives), strings and binaries by the packet they sit in.
* Bad input raises :class:`MqttError` carrying the MQTT 5 reason code the server puts in its
  DISCONNECT (or CONNACK) before closing: 0x81 malformed packet, 0x82 protocol error,
  0x95 packet too large, 0x84 unsupported protocol version.

Properties are ``dict[int, value]`` keyed by property identifier (``P_*`` constants); the two
repeatable ones are lists: user properties (``P_USER_PROPERTY``: list of (name, value)) and
subscription identifiers (``P_SUBSCRIPTION_ID``: list of ints).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Union

# -- packet types --------------------------------------------------------------------------------
CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15

PACKET_NAMES = {
    1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP",
    8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP",
    14: "DISCONNECT", 15: "AUTH",
}

# -- reason codes (MQTT 5; 3.1.1 CONNACK return codes are mapped in connack_code_v3) ---------------
RC_SUCCESS = 0x00
RC_GRANTED_QOS1 = 0x01
RC_GRANTED_QOS2 = 0x02
RC_DISCONNECT_WITH_WILL = 0x04
RC_NO_MATCHING_SUBSCRIBERS = 0x10
RC_NO_SUBSCRIPTION_EXISTED = 0x11
RC_CONTINUE_AUTH = 0x18
RC_UNSPECIFIED = 0x80
RC_MALFORMED = 0x81
RC_PROTOCOL_ERROR = 0x82
RC_IMPLEMENTATION_SPECIFIC = 0x83
RC_UNSUPPORTED_VERSION = 0x84
RC_CLIENT_ID_NOT_VALID = 0x85
RC_BAD_USER_OR_PASSWORD = 0x86
RC_NOT_AUTHORIZED = 0x87
RC_SERVER_UNAVAILABLE = 0x88
RC_SERVER_BUSY = 0x89
RC_BANNED = 0x8A
RC_SERVER_SHUTTING_DOWN = 0x8B
RC_BAD_AUTH_METHOD = 0x8C
RC_KEEP_ALIVE_TIMEOUT = 0x8D
RC_SESSION_TAKEN_OVER = 0x8E
RC_TOPIC_FILTER_INVALID = 0x8F
RC_TOPIC_NAME_INVALID = 0x90
RC_PACKET_ID_IN_USE = 0x91
RC_PACKET_ID_NOT_FOUND = 0x92
RC_RECEIVE_MAX_EXCEEDED = 0x93
RC_TOPIC_ALIAS_INVALID = 0x94
RC_PACKET_TOO_LARGE = 0x95
RC_MESSAGE_RATE_TOO_HIGH = 0x96
RC_QUOTA_EXCEEDED = 0x97
RC_ADMIN_ACTION = 0x98
RC_PAYLOAD_FORMAT_INVALID = 0x99
RC_RETAIN_NOT_SUPPORTED = 0x9A
RC_QOS_NOT_SUPPORTED = 0x9B
RC_USE_ANOTHER_SERVER = 0x9C
RC_SERVER_MOVED = 0x9D
RC_SHARED_SUBS_NOT_SUPPORTED = 0x9E
RC_CONNECTION_RATE_EXCEEDED = 0x9F
RC_MAX_CONNECT_TIME = 0xA0
RC_SUB_IDS_NOT_SUPPORTED = 0xA1
RC_WILDCARD_SUBS_NOT_SUPPORTED = 0xA2


def connack_code_v3(reason: int) -> int:
    """The 3.1.1 CONNACK return code closest to an MQTT 5 reason code."""
    if reason == RC_SUCCESS:
        return 0
    return {
        RC_UNSUPPORTED_VERSION: 1,
        RC_CLIENT_ID_NOT_VALID: 2,
        RC_SERVER_UNAVAILABLE: 3,
        RC_SERVER_BUSY: 3,
        RC_BAD_USER_OR_PASSWORD: 4,
        RC_NOT_AUTHORIZED: 5,
    }.get(reason, 3)


# -- properties ----------------------------------------------------------------------------------
P_PAYLOAD_FORMAT = 0x01
P_MESSAGE_EXPIRY = 0x02
P_CONTENT_TYPE = 0x03
P_RESPONSE_TOPIC = 0x08
P_CORRELATION_DATA = 0x09
P_SUBSCRIPTION_ID = 0x0B
P_SESSION_EXPIRY = 0x11
P_ASSIGNED_CLIENT_ID = 0x12
P_SERVER_KEEP_ALIVE = 0x13
P_AUTH_METHOD = 0x15
P_AUTH_DATA = 0x16
P_REQUEST_PROBLEM_INFO = 0x17
P_WILL_DELAY = 0x18
P_REQUEST_RESPONSE_INFO = 0x19
P_RESPONSE_INFO = 0x1A
P_SERVER_REFERENCE = 0x1C
P_REASON_STRING = 0x1F
P_RECEIVE_MAXIMUM = 0x21
P_TOPIC_ALIAS_MAXIMUM = 0x22
P_TOPIC_ALIAS = 0x23
P_MAXIMUM_QOS = 0x24
P_RETAIN_AVAILABLE = 0x25
P_USER_PROPERTY = 0x26
P_MAXIMUM_PACKET_SIZE = 0x27
P_WILDCARD_SUB_AVAILABLE = 0x28
P_SUB_ID_AVAILABLE = 0x29
P_SHARED_SUB_AVAILABLE = 0x2A

_BYTE, _U16, _U32, _VARINT, _UTF8, _BIN, _PAIR = range(7)
PROPERTY_TYPES: dict[int, int] = {
    P_PAYLOAD_FORMAT: _BYTE, P_MESSAGE_EXPIRY: _U32, P_CONTENT_TYPE: _UTF8, P_RESPONSE_TOPIC: _UTF8,
    P_CORRELATION_DATA: _BIN, P_SUBSCRIPTION_ID: _VARINT, P_SESSION_EXPIRY: _U32,
    P_ASSIGNED_CLIENT_ID: _UTF8, P_SERVER_KEEP_ALIVE: _U16, P_AUTH_METHOD: _UTF8, P_AUTH_DATA: _BIN,
    P_REQUEST_PROBLEM_INFO: _BYTE, P_WILL_DELAY: _U32, P_REQUEST_RESPONSE_INFO: _BYTE,
    P_RESPONSE_INFO: _UTF8, P_SERVER_REFERENCE: _UTF8, P_REASON_STRING: _UTF8,
    P_RECEIVE_MAXIMUM: _U16, P_TOPIC_ALIAS_MAXIMUM: _U16, P_TOPIC_ALIAS: _U16, P_MAXIMUM_QOS: _BYTE,
    P_RETAIN_AVAILABLE: _BYTE, P_USER_PROPERTY: _PAIR, P_MAXIMUM_PACKET_SIZE: _U32,
    P_WILDCARD_SUB_AVAILABLE: _BYTE, P_SUB_ID_AVAILABLE: _BYTE, P_SHARED_SUB_AVAILABLE: _BYTE,
}
_REPEATABLE = (P_USER_PROPERTY, P_SUBSCRIPTION_ID)

Properties = dict[int, Any]

MAX_VARINT = 268_435_455
DEFAULT_MAX_PACKET_SIZE = 1024 * 1024 * 4 + 1024


class MqttError(Exception):
    """A protocol violation; ``reason`` is the MQTT 5 reason code to report before closing."""

    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def malformed(msg: str) -> MqttError:
    return MqttError(RC_MALFORMED, msg)


def protocol_error(msg: str) -> MqttError:
    return MqttError(RC_PROTOCOL_ERROR, msg)


# -- packets -------------------------------------------------------------------------------------
@dataclass(slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Connect:
    client_id: str = ""
    version: int = 4
    clean_start: bool = True
    keep_alive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = field(default_factory=dict)
    protocol_name: str = "MQTT"
    type = CONNECT


@dataclass(slots=True)
class Connack:
    session_present: bool = False
    reason: int = 0
    properties: Properties = field(default_factory=dict)
    type = CONNACK


@dataclass(slots=True)
class Publish:
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int = 0
    properties: Properties = field(default_factory=dict)
    type = PUBLISH


@dataclass(slots=True)
class Ack:
    """PUBACK, PUBREC, PUBREL or PUBCOMP (``kind``)."""

    kind: int
    packet_id: int
    reason: int = 0
    properties: Properties = field(default_factory=dict)

    @property
    def type(self) -> int:
        return self.kind


@dataclass(slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its options."""

    filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(slots=True)
class Subscribe:
    packet_id: int
    subscriptions: list[Subscription]
    properties: Properties = field(default_factory=dict)
    type = SUBSCRIBE


@dataclass(slots=True)
class Suback:
    packet_id: int
    reasons: list[int]
    properties: Properties = field(default_factory=dict)
    type = SUBACK


@dataclass(slots=True)
class Unsubscribe:
    packet_id: int
    filters: list[str]
    properties: Properties = field(default_factory=dict)
    type = UNSUBSCRIBE


@dataclass(slots=True)
class Unsuback:
    packet_id: int
    reasons: list[int] = field(default_factory=list)
    properties: Properties = field(default_factory=dict)
    type = UNSUBACK


@dataclass(slots=True)
class PingReq:
    type = PINGREQ


@dataclass(slots=True)
class PingResp:
    type = PINGRESP


@dataclass(slots=True)
class Disconnect:
    reason: int = 0
    properties: Properties = field(default_factory=dict)
    type = DISCONNECT


@dataclass(slots=True)
class Auth:
    reason: int = 0
    properties: Properties = field(default_factory=dict)
    type = AUTH


Packet = Union[Connect, Connack, Publish, Ack, Subscribe, Suback, Unsubscribe, Unsuback, PingReq, PingResp,
               Disconnect, Auth]

# -- primitive readers ---------------------------------------------------------------------------
_U16S = struct.Struct(">H")
_U32S = struct.Struct(">I")


class _Cursor:
    """Reads primitives from one packet body; every read is bounds-checked."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes | memoryview, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def left(self) -> int:
        return self.end - self.pos

    def byte(self) -> int:
        if self.pos >= self.end:
            raise malformed("packet truncated")
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def u16(self) -> int:
        p = self.pos
        if p + 2 > self.end:
            raise malformed("packet truncated")
        self.pos = p + 2
        return (self.buf[p] << 8) | self.buf[p + 1]

    def u32(self) -> int:
        p = self.pos
        if p + 4 > self.end:
            raise malformed("packet truncated")
        self.pos = p + 4
        return int(_U32S.unpack_from(self.buf, p)[0])

    def varint(self) -> int:
        mult = 1
        value = 0
        for _ in range(4):
            b = self.byte()
            value += (b & 0x7F) * mult
            if not b & 0x80:
                return value
            mult <<= 7
        raise malformed("variable byte integer longer than 4 bytes")

    def binary(self) -> bytes:
        n = self.u16()
        p = self.pos
        if p + n > self.end:
            raise malformed("string or binary runs past the packet")
        self.pos = p + n
        return bytes(self.buf[p:p + n])

    def utf8(self) -> str:
        raw = self.binary()
        return decode_utf8(raw)

    def rest(self) -> bytes:
        out = bytes(self.buf[self.pos:self.end])
        self.pos = self.end
        return out


def decode_utf8(raw: bytes) -> str:
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise malformed("invalid UTF-8 string") from None
    if "\x00" in s:
        raise malformed("UTF-8 string contains U+0000")
    return s


def _read_properties(c: _Cursor) -> Properties:
    n = c.varint()
    if n == 0:
        return {}
    end = c.pos + n
    if end > c.end:
        raise malformed("properties run past the packet")
    saved_end = c.end
    c.end = end
    props: Properties = {}
    try:
        while c.pos < end:
            pid = c.varint()
            kind = PROPERTY_TYPES.get(pid)
            if kind is None:
                raise malformed(f"unknown property 0x{pid:02x}")
            value: Any
            if kind == _BYTE:
                value = c.byte()
            elif kind == _U16:
                value = c.u16()
            elif kind == _U32:
                value = c.u32()
            elif kind == _VARINT:
                value = c.varint()
            elif kind == _UTF8:
                value = c.utf8()
            elif kind == _BIN:
                value = c.binary()
            else:
                value = (c.utf8(), c.utf8())
            if pid in _REPEATABLE:
                props.setdefault(pid, []).append(value)
            elif pid in props:
                raise protocol_error(f"property 0x{pid:02x} appears twice")
            else:
                props[pid] = value
    finally:
        c.end = saved_end
    return props


# -- primitive writers ---------------------------------------------------------------------------
def varint(n: int) -> bytes:
    if n < 128:
        return bytes((n,))
    if n > MAX_VARINT:
        raise ValueError("variable byte integer too large")
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _str(s: str) -> bytes:
    raw = s.encode("utf-8")
    return _U16S.pack(len(raw)) + raw


def _bin(b: bytes) -> bytes:
    return _U16S.pack(len(b)) + b


def encode_properties(props: Properties | None) -> bytes:
    if not props:
        return b"\x00"
    out = bytearray()
    for pid, value in props.items():
        kind = PROPERTY_TYPES[pid]
        values = value if pid in _REPEATABLE else (value,)
        for v in values:
            out += varint(pid)
            if kind == _BYTE:
                out.append(v)
            elif kind == _U16:
                out += _U16S.pack(v)
            elif kind == _U32:
                out += _U32S.pack(v)
            elif kind == _VARINT:
                out += varint(v)
            elif kind == _UTF8:
                out += _str(v)
            elif kind == _BIN:
                out += _bin(v)
            else:
                out += _str(v[0]) + _str(v[1])
    return varint(len(out)) + bytes(out)


def _frame(first: int, body: bytes) -> bytes:
    n = len(body)
    if n < 128:
        return bytes((first, n)) + body
    return bytes((first,)) + varint(n) + body


# -- topic checks --------------------------------------------------------------------------------
def valid_topic_name(topic: str) -> bool:
    return bool(topic) and "+" not in topic and "#" not in topic and len(topic.encode()) <= 65535


def valid_topic_filter(flt: str) -> bool:
    if not flt:
        return False
    levels = flt.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return False
        if "+" in level and level != "+":
            return False
    return True


# -- decoding ------------------------------------------------------------------------------------
class Decoder:
    """Incremental decoder for one connection (server side by default).

    ``feed(data)`` returns the packets completed by ``data``. ``version`` is set from the first
    CONNECT (or by the caller, for a client-side decoder).
    """

    def __init__(self, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE, *, version: int = 0, server: bool = True) -> None:
        self.max_packet_size = max_packet_size
        self.version = version
        self.server = server
        self._buf = b""
        self._topics: dict[bytes, str] = {}  # raw PUBLISH topic -> decoded, validated name

    def feed(self, data: bytes) -> list[Packet]:
        # Work on an immutable bytes object: slices are then single copies. Only the tail of an
        # incomplete packet is carried over to the next call.
        buf = self._buf + data if self._buf else bytes(data)
        out: list[Packet] = []
        pos = 0
        n = len(buf)
        max_size = self.max_packet_size
        # PUBLISH of 3.1/3.1.1 on a topic already seen: decoded inline (the hot packet); anything
        # unusual (first of its topic, bad flags, truncation) goes through _publish, which checks
        fast = self.version == 4 or self.version == 3
        topics = self._topics
        try:
            while n - pos >= 2:
                first = buf[pos]
                b = buf[pos + 1]
                if b < 128:  # one-byte remaining length (most packets)
                    length = b
                    i = pos + 2
                elif n - pos >= 3 and buf[pos + 2] < 128:  # two bytes
                    length = (b & 0x7F) | (buf[pos + 2] << 7)
                    i = pos + 3
                else:
                    length = b & 0x7F
                    mult = 128
                    i = pos + 2
                    while True:
                        if i >= n:
                            length = -1
                            break
                        b = buf[i]
                        length += (b & 0x7F) * mult
                        i += 1
                        if not b & 0x80:
                            break
                        mult <<= 7
                        if i - pos > 4:
                            raise malformed("remaining length longer than 4 bytes")
                    if length < 0:
                        break
                if i - pos + length > max_size:
                    raise MqttError(RC_PACKET_TOO_LARGE, f"packet of {i - pos + length} bytes exceeds {max_size}")
                end = i + length
                if end > n:
                    break
                ptype = first >> 4
                if ptype == PUBLISH:
                    if fast and length >= 4:
                        p = i + 2 + ((buf[i] << 8) | buf[i + 1])
                        topic = topics.get(buf[i + 2:p]) if p <= end else None
                        qos = (first >> 1) & 3
                        if topic is not None:
                            if qos == 0:
                                if not first & 8:
                                    out.append(Publish(topic, buf[p:end], 0, (first & 1) != 0, False, 0, {}))
                                    pos = end
                                    continue
                            elif qos < 3 and p + 2 <= end:
                                pid = (buf[p] << 8) | buf[p + 1]
                                if pid:
                                    out.append(Publish(topic, buf[p + 2:end], qos, (first & 1) != 0, (first & 8) != 0,
                                                       pid, {}))
                                    pos = end
                                    continue
                    out.append(self._publish(first & 0x0F, buf, i, end))
                elif length == 2 and 4 <= ptype <= 7 and first & 0x0F == (2 if ptype == PUBREL else 0) \
                        and self.version:  # the common 2-byte PUBACK/PUBREC/PUBREL/PUBCOMP
                    out.append(Ack(ptype, (buf[i] << 8) | buf[i + 1], 0, {}))
                else:
                    out.append(self._decode(first, buf, i, end))
                pos = end
        finally:
            self._buf = buf[pos:] if pos < n else b""
        return out

    def buffered(self) -> int:
        return len(self._buf)

    def _decode(self, first: int, buf: bytes, start: int, end: int) -> Packet:
        ptype = first >> 4
        flags = first & 0x0F
        if ptype == PUBLISH:
            return self._publish(flags, buf, start, end)
        if self.version == 0 and ptype != CONNECT and self.server:
            raise protocol_error("first packet must be CONNECT")
        c = _Cursor(buf, start, end)
        v5 = self.version == 5
        if ptype in (PUBACK, PUBREC, PUBCOMP, PUBREL):
            if flags != (2 if ptype == PUBREL else 0):
                raise malformed("bad fixed header flags")
            pid = c.u16()
            reason = 0
            props: Properties = {}
            if v5 and c.left():
                reason = c.byte()
                if c.left():
                    props = _read_properties(c)
            self._done(c)
            return Ack(ptype, pid, reason, props)
        if ptype == PINGREQ or ptype == PINGRESP:
            if flags or c.left():
                raise malformed("bad PING")
            return PingReq() if ptype == PINGREQ else PingResp()
        if ptype == SUBSCRIBE:
            if flags != 2:
                raise malformed("bad SUBSCRIBE flags")
            pid = c.u16()
            props = _read_properties(c) if v5 else {}
            subs = []
            while c.left():
                flt = c.utf8()
                opts = c.byte()
                if v5:
                    if opts & 0xC0 or (opts >> 4) & 3 == 3:
                        raise malformed("reserved subscription option bits set")
                elif opts & 0xFC:
                    raise malformed("reserved subscription option bits set")
                if opts & 3 == 3:
                    raise malformed("QoS 3 in SUBSCRIBE")
                subs.append(Subscription(flt, opts & 3, bool(opts & 4), bool(opts & 8), (opts >> 4) & 3))
            if not subs:
                raise protocol_error("SUBSCRIBE without topic filters")
            if pid == 0:
                raise malformed("packet identifier 0")
            return Subscribe(pid, subs, props)
        if ptype == UNSUBSCRIBE:
            if flags != 2:
                raise malformed("bad UNSUBSCRIBE flags")
            pid = c.u16()
            props = _read_properties(c) if v5 else {}
            filters = []
            while c.left():
                filters.append(c.utf8())
            if not filters:
                raise protocol_error("UNSUBSCRIBE without topic filters")
            if pid == 0:
                raise malformed("packet identifier 0")
            return Unsubscribe(pid, filters, props)
        if ptype == DISCONNECT:
            if flags:
                raise malformed("bad DISCONNECT flags")
            reason = 0
            props = {}
            if v5 and c.left():
                reason = c.byte()
                if c.left():
                    props = _read_properties(c)
            self._done(c)
            return Disconnect(reason, props)
        if ptype == CONNECT:
            if flags:
                raise malformed("bad CONNECT flags")
            if self.version and self.server:
                raise protocol_error("second CONNECT")
            pkt = self._connect(c)
            self.version = pkt.version
            return pkt
        if ptype == CONNACK:
            sp = c.byte()
            reason = c.byte()
            props = _read_properties(c) if v5 else {}
            return Connack(bool(sp & 1), reason, props)
        if ptype == SUBACK:
            pid = c.u16()
            props = _read_properties(c) if v5 else {}
            return Suback(pid, list(c.rest()), props)
        if ptype == UNSUBACK:
            pid = c.u16()
            props = {}
            reasons: list[int] = []
            if v5:
                props = _read_properties(c)
                reasons = list(c.rest())
            return Unsuback(pid, reasons, props)
        if ptype == AUTH:
            if not v5:
                raise malformed("AUTH before MQTT 5")
            reason = 0
            props = {}
            if c.left():
                reason = c.byte()
                if c.left():
                    props = _read_properties(c)
            self._done(c)
            return Auth(reason, props)
        raise malformed(f"reserved packet type {ptype}")

    @staticmethod
    def _done(c: _Cursor) -> None:
        if c.left():
            raise malformed("trailing bytes in packet")

    def _publish(self, flags: int, buf: bytes, start: int, end: int) -> Publish:
        if self.version == 0 and self.server:
            raise protocol_error("first packet must be CONNECT")
        qos = (flags >> 1) & 3
        if qos == 3:
            raise malformed("PUBLISH with QoS 3")
        if flags & 8 and not qos:
            raise malformed("DUP set on a QoS 0 PUBLISH")
        if end - start < 2:
            raise malformed("packet truncated")
        p = start + 2 + ((buf[start] << 8) | buf[start + 1])
        if p > end:
            raise malformed("topic runs past the packet")
        raw = buf[start + 2:p]
        topic = self._topics.get(raw)  # topics already decoded and checked on this connection
        if topic is None:
            try:
                topic = raw.decode()
            except UnicodeDecodeError:
                raise malformed("invalid UTF-8 topic") from None
            if "\x00" in topic:
                raise malformed("topic contains U+0000")
            if "+" in topic or "#" in topic:
                raise MqttError(RC_TOPIC_NAME_INVALID, "wildcard in a PUBLISH topic name")
            if len(self._topics) >= 256:
                self._topics.clear()
            self._topics[raw] = topic
        pid = 0
        if qos:
            if p + 2 > end:
                raise malformed("packet truncated")
            pid = (buf[p] << 8) | buf[p + 1]
            if pid == 0:
                raise malformed("packet identifier 0")
            p += 2
        props: Properties
        if self.version == 5:
            if p < end and buf[p] == 0:
                props = {}
                p += 1
            else:
                c = _Cursor(buf, p, end)
                props = _read_properties(c)
                p = c.pos
        else:
            props = {}
        return Publish(topic, buf[p:end], qos, bool(flags & 1), bool(flags & 8), pid, props)

    def _connect(self, c: _Cursor) -> Connect:
        name = c.utf8()
        level = c.byte()
        if name == "MQIsdp" and level == 3:
            pass
        elif name != "MQTT":
            raise MqttError(RC_UNSUPPORTED_VERSION, f"unknown protocol name {name!r}")
        elif level not in (4, 5):
            raise MqttError(RC_UNSUPPORTED_VERSION, f"unsupported protocol level {level}")
        flags = c.byte()
        if flags & 1:
            raise malformed("reserved CONNECT flag set")
        keep_alive = c.u16()
        props = _read_properties(c) if level == 5 else {}
        client_id = c.utf8()
        will = None
        will_qos = (flags >> 3) & 3
        will_retain = bool(flags & 0x20)
        if flags & 4:
            if will_qos == 3:
                raise malformed("will QoS 3")
            wprops = _read_properties(c) if level == 5 else {}
            wtopic = c.utf8()
            if not valid_topic_name(wtopic):
                raise MqttError(RC_TOPIC_NAME_INVALID, "invalid will topic")
            will = Will(wtopic, c.binary(), will_qos, will_retain, wprops)
        elif will_qos or will_retain:
            raise malformed("will QoS/retain without will flag")
        username = c.utf8() if flags & 0x80 else None
        if flags & 0x40:
            if level != 5 and not flags & 0x80:
                raise malformed("password without user name")
            password: bytes | None = c.binary()
        else:
            password = None
        self._done(c)
        return Connect(client_id, level, bool(flags & 2), keep_alive, username, password, will, props, name)


# -- encoding ------------------------------------------------------------------------------------
def encode_publish(pkt: Publish, version: int) -> bytes:
    """Fast path for the hot packet."""
    t = pkt.topic.encode()
    qos = pkt.qos
    head = _U16S.pack(len(t)) + t
    if qos:
        head += _U16S.pack(pkt.packet_id)
    if version == 5:
        head += encode_properties(pkt.properties) if pkt.properties else b"\x00"
    payload = pkt.payload
    n = len(head) + len(payload)
    first = 0x30 | (qos << 1) | (8 if pkt.dup else 0) | (1 if pkt.retain else 0)
    if n < 128:
        return bytes((first, n)) + head + payload
    return bytes((first,)) + varint(n) + head + payload


def topic_head(topic: str) -> bytes:
    """The topic name as it sits in a PUBLISH (length-prefixed UTF-8), for encode_publish_qos0."""
    t = topic.encode()
    return _U16S.pack(len(t)) + t


def encode_publish_qos0(head: bytes, payload: bytes, retain: bool) -> bytes:
    """A QoS 0 PUBLISH without properties (3.1/3.1.1) from an encoded topic (``topic_head``)."""
    n = len(head) + len(payload)
    first = 0x31 if retain else 0x30
    if n < 128:
        return bytes((first, n)) + head + payload
    return bytes((first,)) + varint(n) + head + payload


def encode_publish_qos12(head: bytes, payload: bytes, qos: int, retain: bool, packet_id: int) -> bytes:
    """A QoS 1/2 PUBLISH without properties (3.1/3.1.1), DUP clear, from an encoded topic."""
    n = len(head) + 2 + len(payload)
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    if n < 128:
        return bytes((first, n)) + head + _U16S.pack(packet_id) + payload
    return bytes((first,)) + varint(n) + head + _U16S.pack(packet_id) + payload


_ACK_FIRST = {PUBACK: b"\x40\x02", PUBREC: b"\x50\x02", PUBREL: b"\x62\x02", PUBCOMP: b"\x70\x02"}


def encode_ack(kind: int, packet_id: int) -> bytes:
    """A PUBACK/PUBREC/PUBREL/PUBCOMP with reason 0 and no properties (valid in 3.1.1 and 5.0)."""
    return _ACK_FIRST[kind] + _U16S.pack(packet_id)


def encode(pkt: Packet, version: int = 4) -> bytes:
    v5 = version == 5
    t = pkt.type
    if t == PUBLISH:
        assert isinstance(pkt, Publish)
        return encode_publish(pkt, version)
    if isinstance(pkt, Ack):
        first = (pkt.kind << 4) | (2 if pkt.kind == PUBREL else 0)
        if v5 and (pkt.reason or pkt.properties):
            body = _U16S.pack(pkt.packet_id) + bytes((pkt.reason,))
            if pkt.properties:
                body += encode_properties(pkt.properties)
            return _frame(first, body)
        return bytes((first, 2)) + _U16S.pack(pkt.packet_id)
    if isinstance(pkt, Connack):
        body = bytes((1 if pkt.session_present else 0, pkt.reason if v5 else connack_code_v3(pkt.reason)))
        if v5:
            body += encode_properties(pkt.properties)
        return _frame(0x20, body)
    if isinstance(pkt, Suback):
        body = _U16S.pack(pkt.packet_id)
        if v5:
            body += encode_properties(pkt.properties)
        return _frame(0x90, body + bytes(pkt.reasons))
    if isinstance(pkt, Unsuback):
        body = _U16S.pack(pkt.packet_id)
        if v5:
            body += encode_properties(pkt.properties) + bytes(pkt.reasons)
        return _frame(0xB0, body)
    if isinstance(pkt, PingReq):
        return b"\xc0\x00"
    if isinstance(pkt, PingResp):
        return b"\xd0\x00"
    if isinstance(pkt, Disconnect):
        if not v5 or (pkt.reason == 0 and not pkt.properties):
            return b"\xe0\x00"
        body = bytes((pkt.reason,))
        if pkt.properties:
            body += encode_properties(pkt.properties)
        return _frame(0xE0, body)
    if isinstance(pkt, Auth):
        body = bytes((pkt.reason,)) + encode_properties(pkt.properties)
        return _frame(0xF0, body)
    if isinstance(pkt, Subscribe):
        body = bytearray(_U16S.pack(pkt.packet_id))
        if v5:
            body += encode_properties(pkt.properties)
        for s in pkt.subscriptions:
            opts = s.qos | (4 if s.no_local else 0) | (8 if s.retain_as_published else 0) | (s.retain_handling << 4)
            body += _str(s.filter) + bytes((opts,))
        return _frame(0x82, bytes(body))
    if isinstance(pkt, Unsubscribe):
        body = bytearray(_U16S.pack(pkt.packet_id))
        if v5:
            body += encode_properties(pkt.properties)
        for f in pkt.filters:
            body += _str(f)
        return _frame(0xA2, bytes(body))
    if isinstance(pkt, Connect):
        level = pkt.version
        name = "MQIsdp" if level == 3 else "MQTT"
        flags = 2 if pkt.clean_start else 0
        if pkt.will is not None:
            flags |= 4 | (pkt.will.qos << 3) | (0x20 if pkt.will.retain else 0)
        if pkt.username is not None:
            flags |= 0x80
        if pkt.password is not None:
            flags |= 0x40
        body = bytearray(_str(name) + bytes((level, flags)) + _U16S.pack(pkt.keep_alive))
        if level == 5:
            body += encode_properties(pkt.properties)
        body += _str(pkt.client_id)
        if pkt.will is not None:
            if level == 5:
                body += encode_properties(pkt.will.properties)
            body += _str(pkt.will.topic) + _bin(pkt.will.payload)
        if pkt.username is not None:
            body += _str(pkt.username)
        if pkt.password is not None:
            body += _bin(pkt.password)
        return _frame(0x10, bytes(body))
    raise TypeError(f"cannot encode {pkt!r}")
