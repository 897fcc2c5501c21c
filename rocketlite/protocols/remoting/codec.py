"""rocketlite.protocols.remoting.codec
~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~

The RocketMQ classic "remoting" wire format, sans-IO (no sockets, no trio).

* Frames: ``total_length (4) | serialize_type (1) + header_length (3) | header | body``.
  :class:`FrameDecoder` turns bytes into :class:`RemotingCommand` objects (``feed`` then
  ``next_command``), :func:`encode_command` turns a command back into bytes.
* Headers in JSON (serialize type 0, what every non-Java client speaks) and in the ROCKETMQ
  binary layout (type 1, Java's optional compact form). Replies use the request's type.
* Message encodings: the properties string (``k\\x01v\\x02``), the stored-message record that
  PULL/VIEW/QUERY bodies and CHECK_TRANSACTION_STATE carry, the batch body of
  SEND_BATCH_MESSAGE, and offset message ids (store host + physical offset).

Every length is checked: a frame above :data:`MAX_FRAME` (16 MiB, RocketMQ's default) or with an
inconsistent header raises :class:`FrameError`, after which the connection should be closed.
See docs/remoting.md and shared/protocols/REMOTING.md for the field meanings.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

MAX_FRAME = 16 * 1024 * 1024

SERIALIZE_JSON = 0
SERIALIZE_ROCKETMQ = 1

FLAG_RESPONSE = 0x1
FLAG_ONEWAY = 0x2

#: Version we claim in our own headers (MQVersion V4_9_4 ordinal).
SERVER_VERSION = 401
#: From this request version on, the NameServer answers with standard JSON (quoted int keys).
STANDARD_JSON_VERSION = 401

LANGUAGES = (
    "JAVA", "CPP", "DOTNET", "PYTHON", "DELPHI", "ERLANG", "RUBY", "OTHER", "HTTP", "GO", "PHP",
    "OMS", "RUST", "NODE_JS",
)
LANGUAGE_CODES = {name: i for i, name in enumerate(LANGUAGES)}


class RequestCode:
    SEND_MESSAGE = 10
    PULL_MESSAGE = 11
    QUERY_MESSAGE = 12
    QUERY_CONSUMER_OFFSET = 14
    UPDATE_CONSUMER_OFFSET = 15
    UPDATE_AND_CREATE_TOPIC = 17
    GET_ALL_TOPIC_CONFIG = 21
    UPDATE_BROKER_CONFIG = 25
    GET_BROKER_CONFIG = 26
    GET_BROKER_RUNTIME_INFO = 28
    SEARCH_OFFSET_BY_TIMESTAMP = 29
    GET_MAX_OFFSET = 30
    GET_MIN_OFFSET = 31
    GET_EARLIEST_MSG_STORETIME = 32
    VIEW_MESSAGE_BY_ID = 33
    HEART_BEAT = 34
    UNREGISTER_CLIENT = 35
    CONSUMER_SEND_MSG_BACK = 36
    END_TRANSACTION = 37
    GET_CONSUMER_LIST_BY_GROUP = 38
    CHECK_TRANSACTION_STATE = 39
    NOTIFY_CONSUMER_IDS_CHANGED = 40
    LOCK_BATCH_MQ = 41
    UNLOCK_BATCH_MQ = 42
    GET_ALL_CONSUMER_OFFSET = 43
    GET_ALL_DELAY_OFFSET = 45
    CHECK_CLIENT_CONFIG = 46
    GET_KV_CONFIG = 101
    GET_ROUTEINFO_BY_TOPIC = 105
    GET_BROKER_CLUSTER_INFO = 106
    UPDATE_AND_CREATE_SUBSCRIPTIONGROUP = 200
    GET_ALL_SUBSCRIPTIONGROUP_CONFIG = 201
    DELETE_SUBSCRIPTIONGROUP = 207
    GET_ALL_TOPIC_LIST_FROM_NAMESERVER = 206
    DELETE_TOPIC_IN_BROKER = 215
    DELETE_TOPIC_IN_NAMESRV = 216
    GET_TOPICS_BY_CLUSTER = 224
    GET_SYSTEM_TOPIC_LIST_FROM_NS = 304
    GET_CONSUMER_RUNNING_INFO = 307
    SEND_MESSAGE_V2 = 310
    SEND_BATCH_MESSAGE = 320
    POP_MESSAGE = 200050
    ACK_MESSAGE = 200051
    PEEK_MESSAGE = 200052
    CHANGE_MESSAGE_INVISIBLETIME = 200053
    BATCH_ACK_MESSAGE = 200151


class ResponseCode:
    SUCCESS = 0
    SYSTEM_ERROR = 1
    SYSTEM_BUSY = 2
    REQUEST_CODE_NOT_SUPPORTED = 3
    TRANSACTION_FAILED = 4
    FLUSH_DISK_TIMEOUT = 10
    SLAVE_NOT_AVAILABLE = 11
    FLUSH_SLAVE_TIMEOUT = 12
    MESSAGE_ILLEGAL = 13
    SERVICE_NOT_AVAILABLE = 14
    VERSION_NOT_SUPPORTED = 15
    NO_PERMISSION = 16
    TOPIC_NOT_EXIST = 17
    TOPIC_EXIST_ALREADY = 18
    PULL_NOT_FOUND = 19
    PULL_RETRY_IMMEDIATELY = 20
    PULL_OFFSET_MOVED = 21
    QUERY_NOT_FOUND = 22
    SUBSCRIPTION_PARSE_FAILED = 23
    SUBSCRIPTION_NOT_EXIST = 24
    SUBSCRIPTION_NOT_LATEST = 25
    SUBSCRIPTION_GROUP_NOT_EXIST = 26
    INVALID_PARAMETER = 29
    CONSUMER_NOT_ONLINE = 206
    NO_MESSAGE = 208
    POLLING_FULL = 209
    POLLING_TIMEOUT = 210
    ILLEGAL_OPERATION = 604


class FrameError(ValueError):
    """A frame that cannot be decoded; the connection should be closed."""


@dataclass(slots=True)
class RemotingCommand:
    code: int
    opaque: int = 0
    flag: int = 0
    ext: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    remark: str | None = None
    language: str = "JAVA"
    version: int = SERVER_VERSION
    serialize: int = SERIALIZE_JSON

    @property
    def is_response(self) -> bool:
        return bool(self.flag & FLAG_RESPONSE)

    @property
    def is_oneway(self) -> bool:
        return bool(self.flag & FLAG_ONEWAY)

    def response(self, code: int = ResponseCode.SUCCESS, *, ext: dict[str, Any] | None = None,
                 body: bytes = b"", remark: str | None = None) -> "RemotingCommand":
        """A response to this request: same opaque and serialize type, RESPONSE flag set."""
        out: dict[str, str] = {}
        if ext:
            out = ext  # type: ignore[assignment]
            for v in ext.values():
                if type(v) is not str:
                    out = {k: ext_str(v) for k, v in ext.items() if v is not None}
                    break
        return RemotingCommand(code, self.opaque, FLAG_RESPONSE, out, body, remark, "JAVA", SERVER_VERSION,
                               self.serialize)


# -- ext values ---------------------------------------------------------------------------------

def ext_str(value: Any) -> str:
    """Coerce a header value to the string Java would see (booleans lowercase)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def ext_bool(value: str | None, default: bool = False) -> bool:
    """Java parses only "true" as true; C++ clients send "1"/"0", so accept those too."""
    if value is None or value == "":
        return default
    return value.strip().lower() in ("true", "1")


# -- frames -------------------------------------------------------------------------------------

def encode_command(cmd: RemotingCommand) -> bytes:
    if cmd.serialize == SERIALIZE_ROCKETMQ:
        header = encode_binary_header(cmd)
    else:
        header = encode_json_header(cmd)
    hlen = len(header)
    if hlen > 0xFFFFFF:
        raise FrameError("header too long")
    total = 4 + hlen + len(cmd.body)
    if total > MAX_FRAME:
        raise FrameError(f"frame of {total} bytes exceeds {MAX_FRAME}")
    return struct.pack(">II", total, (cmd.serialize << 24) | hlen) + header + cmd.body


def decode_frame(frame: bytes | bytearray | memoryview) -> RemotingCommand:
    """Decode one frame *without* its leading 4-byte total length."""
    if len(frame) < 4:
        raise FrameError("frame shorter than its header length field")
    (word,) = struct.unpack_from(">I", frame, 0)
    stype = (word >> 24) & 0xFF
    hlen = word & 0xFFFFFF
    if 4 + hlen > len(frame):
        raise FrameError(f"header length {hlen} exceeds frame of {len(frame)} bytes")
    header = bytes(frame[4 : 4 + hlen])
    body = bytes(frame[4 + hlen :])
    if stype == SERIALIZE_JSON:
        cmd = decode_json_header(header)
    elif stype == SERIALIZE_ROCKETMQ:
        cmd = decode_binary_header(header)
    else:
        raise FrameError(f"unknown serialize type {stype}")
    cmd.body = body
    return cmd


class FrameDecoder:
    """Receive buffer: ``feed(bytes)``, then ``next_command()`` until it returns None."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_command(self) -> RemotingCommand | None:
        avail = len(self._buf) - self._pos
        if avail < 4:
            return None
        (total,) = struct.unpack_from(">I", self._buf, self._pos)
        if total > self.max_frame:
            raise FrameError(f"frame of {total} bytes exceeds the {self.max_frame} byte limit")
        if total < 4:
            raise FrameError(f"frame length {total} is too small")
        if avail < 4 + total:
            return None
        start = self._pos + 4
        frame = memoryview(self._buf)[start : start + total]
        try:
            cmd = decode_frame(frame)
        finally:
            frame.release()
        self._pos = start + total
        if self._pos > 65536 and self._pos * 2 > len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        return cmd

    def __iter__(self) -> Iterator[RemotingCommand]:
        while (cmd := self.next_command()) is not None:
            yield cmd


# -- JSON header --------------------------------------------------------------------------------

def _as_int(value: Any, name: str) -> int:
    if type(value) is int:
        return value
    if isinstance(value, bool):
        raise FrameError(f"header field {name} is not an integer")
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise FrameError(f"header field {name} is not an integer: {value!r}")


# The C scanner behind json.loads, called directly: json.loads(bytes) adds encoding detection
# and two Python layers, which cost more than the parse of a ~250-byte header.
_scan_json = json.JSONDecoder().scan_once
_JSON_SPACE = " \t\n\r"


def decode_json_header(header: bytes) -> RemotingCommand:
    try:
        text = header.decode("utf-8-sig" if header[:3] == b"\xef\xbb\xbf" else "utf-8")
        start = 0
        if text[:1] in _JSON_SPACE:
            start = len(text) - len(text.lstrip(_JSON_SPACE))
        try:
            obj, end = _scan_json(text, start)
        except StopIteration:
            raise ValueError("no JSON value") from None
        if end != len(text) and text[end:].strip(_JSON_SPACE):  # the C++ client ends with "\n"
            raise ValueError("extra data after the JSON value")
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FrameError(f"bad JSON header: {exc}") from None
    if type(obj) is not dict:
        raise FrameError("JSON header is not an object")
    if "code" not in obj:
        raise FrameError("JSON header without code")
    ext_raw = obj.get("extFields") or {}
    if type(ext_raw) is not dict:
        raise FrameError("extFields is not an object")
    ext = ext_raw
    for v in ext_raw.values():
        if type(v) is not str:
            ext = {str(k): ext_str(v) for k, v in ext_raw.items() if v is not None}
            break
    lang = obj.get("language", "JAVA")
    if type(lang) is not str:
        if isinstance(lang, int) and not isinstance(lang, bool):
            lang = LANGUAGES[lang] if 0 <= lang < len(LANGUAGES) else "OTHER"
        else:
            lang = str(lang)
    remark = obj.get("remark")
    return RemotingCommand(
        _as_int(obj["code"], "code"),
        _as_int(obj.get("opaque", 0), "opaque"),
        _as_int(obj.get("flag", 0), "flag"),
        ext,
        b"",
        remark if type(remark) is str else None,
        lang,
        _as_int(obj.get("version", 0), "version"),
        SERIALIZE_JSON,
    )


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
_esc = json.encoder.encode_basestring_ascii  # str -> quoted, escaped JSON string (C)


def _json_object(ext: dict[str, str]) -> str:
    """``{"k":"v",...}`` of a dict of strings (json.dumps' output, for a fraction of its cost)."""
    if not ext:
        return "{}"
    return "{%s}" % ",".join(["%s:%s" % (_esc(k), _esc(v)) for k, v in ext.items()])


def encode_json_header(cmd: RemotingCommand) -> bytes:
    """Java's key order (alphabetical); every ext value a JSON string."""
    ext = cmd.ext
    for k, v in ext.items():
        if type(v) is not str or type(k) is not str:
            ext = {str(k): ext_str(v) for k, v in ext.items()}
            break
    remark = "" if cmd.remark is None else ',"remark":' + _esc(cmd.remark)
    return (
        '{"code":%d,"extFields":%s,"flag":%d,"language":%s,"opaque":%d%s,'
        '"serializeTypeCurrentRPC":"JSON","version":%d}'
        % (cmd.code, _json_object(ext), cmd.flag, _esc(cmd.language), cmd.opaque, remark, cmd.version)
    ).encode()


# -- ROCKETMQ binary header ---------------------------------------------------------------------

_BIN_FIXED = struct.Struct(">hbhii")  # code, language, version, opaque, flag


def decode_binary_header(header: bytes) -> RemotingCommand:
    n = len(header)
    if n < _BIN_FIXED.size + 8:
        raise FrameError("binary header too short")
    code, lang, version, opaque, flag = _BIN_FIXED.unpack_from(header, 0)
    pos = _BIN_FIXED.size
    (rlen,) = struct.unpack_from(">i", header, pos)
    pos += 4
    if rlen < 0 or pos + rlen + 4 > n:
        raise FrameError("binary header remark length out of range")
    try:
        remark = header[pos : pos + rlen].decode("utf-8") if rlen else None
        pos += rlen
        (elen,) = struct.unpack_from(">i", header, pos)
        pos += 4
        if elen < 0 or pos + elen > n:
            raise FrameError("binary header ext length out of range")
        end = pos + elen
        ext: dict[str, str] = {}
        while pos < end:
            if pos + 2 > end:
                raise FrameError("truncated ext key length")
            (klen,) = struct.unpack_from(">h", header, pos)
            pos += 2
            if klen < 0 or pos + klen + 4 > end:
                raise FrameError("ext key length out of range")
            key = header[pos : pos + klen].decode("utf-8")
            pos += klen
            (vlen,) = struct.unpack_from(">i", header, pos)
            pos += 4
            if vlen < 0 or pos + vlen > end:
                raise FrameError("ext value length out of range")
            value = header[pos : pos + vlen].decode("utf-8")
            pos += vlen
            if key and value:
                ext[key] = value
    except UnicodeDecodeError as exc:
        raise FrameError(f"bad UTF-8 in binary header: {exc}") from None
    language = LANGUAGES[lang] if 0 <= lang < len(LANGUAGES) else "OTHER"
    return RemotingCommand(
        code=code, opaque=opaque, flag=flag, ext=ext, remark=remark, language=language,
        version=version, serialize=SERIALIZE_ROCKETMQ,
    )


def encode_binary_header(cmd: RemotingCommand) -> bytes:
    remark = (cmd.remark or "").encode()
    parts = []
    for k, v in cmd.ext.items():
        if not k or v is None:
            continue
        kb, vb = k.encode(), ext_str(v).encode()
        parts.append(struct.pack(">h", len(kb)) + kb + struct.pack(">i", len(vb)) + vb)
    ext = b"".join(parts)
    lang = LANGUAGE_CODES.get(cmd.language, 0)
    return (
        _BIN_FIXED.pack(cmd.code, lang, cmd.version, cmd.opaque, cmd.flag)
        + struct.pack(">i", len(remark)) + remark
        + struct.pack(">i", len(ext)) + ext
    )


# -- properties string --------------------------------------------------------------------------

def encode_properties(props: dict[str, str]) -> str:
    return "".join([f"{k}\x01{v}\x02" for k, v in props.items() if k and v is not None])


def decode_properties(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if not text:
        return out
    for seg in text.split("\x02"):
        if len(seg) < 3:
            continue
        i = seg.find("\x01")
        if i <= 0 or i == len(seg) - 1:
            continue
        out[seg[:i]] = seg[i + 1 :]
    return out


# -- hosts and message ids ----------------------------------------------------------------------

def ipv4_bytes(host: str) -> bytes:
    """The 4 bytes of a dotted IPv4 address (mapped IPv6 and unknowns become 127.0.0.1)."""
    if host.startswith("::ffff:"):
        host = host[7:]
    parts = host.split(".")
    if len(parts) == 4:
        try:
            b = bytes(int(p) for p in parts)
            return b
        except ValueError:
            pass
    return b"\x7f\x00\x00\x01"


def split_host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return addr, 0


def offset_msg_id(host: str, port: int, offset: int) -> str:
    """Broker message id: store host IPv4 + port + physical offset, uppercase hex (32 chars)."""
    return (ipv4_bytes(host) + struct.pack(">iq", port, offset)).hex().upper()


def parse_offset_msg_id(msg_id: str) -> tuple[str, int, int]:
    """(host, port, offset) of an offset message id (IPv4 32 hex chars or IPv6 56)."""
    try:
        raw = bytes.fromhex(msg_id)
    except ValueError:
        raise ValueError(f"not a message id: {msg_id!r}") from None
    if len(raw) == 16:
        host = ".".join(str(b) for b in raw[:4])
        port, off = struct.unpack(">iq", raw[4:])
    elif len(raw) == 28:
        import ipaddress

        host = str(ipaddress.IPv6Address(raw[:16]))
        port, off = struct.unpack(">iq", raw[16:])
    else:
        raise ValueError(f"not a message id: {msg_id!r}")
    return host, port, off


# -- stored message records ---------------------------------------------------------------------

MAGIC_V1 = -626843481  # 0xDAA320A7
MAGIC_V2 = -626843477  # 0xDAA320AB

_REC_HEAD = struct.Struct(">iiiiiqqiq")  # size magic crc queueId flag queueOffset physOffset sysFlag bornTs


@dataclass(slots=True)
class StoredRecord:
    """The fields of one stored-message record (PULL / VIEW / QUERY bodies)."""

    topic: str
    body: bytes
    queue_id: int = 0
    flag: int = 0
    queue_offset: int = 0
    physical_offset: int = 0
    sys_flag: int = 0
    born_timestamp: int = 0
    born_host: str = "127.0.0.1:0"
    store_timestamp: int = 0
    store_host: str = "127.0.0.1:0"
    reconsume_times: int = 0
    prepared_transaction_offset: int = 0
    properties: dict[str, str] = field(default_factory=dict)
    body_crc: int = 0

    @property
    def msg_id(self) -> str:
        host, port = split_host_port(self.store_host)
        return offset_msg_id(host, port, self.physical_offset)


def encode_record(r: StoredRecord) -> bytes:
    """One stored-message record, IPv4 hosts, V1 magic (topic ≤ 127 bytes) else V2."""
    return pack_record(r.topic, r.body, encode_properties(r.properties), r.queue_id, r.flag, r.queue_offset,
                       r.physical_offset, r.sys_flag, r.born_timestamp, r.born_host, r.store_timestamp,
                       r.store_host, r.reconsume_times, r.prepared_transaction_offset, r.body_crc)


# fields 1-14 of a record with IPv4 hosts (each host = 4 address bytes + int32 port) and BODY's length
_REC_FIXED = struct.Struct(">iiiiiqqiq8sq8siqi")
_U16 = struct.Struct(">h")
_host_cache: dict[str, bytes] = {}


def host_bytes(addr: str) -> bytes:
    """``"a.b.c.d:port"`` as a record carries it: 4 IPv4 bytes and the port as int32."""
    b = _host_cache.get(addr)
    if b is None:
        host, port = split_host_port(addr)
        b = ipv4_bytes(host) + struct.pack(">i", port)
        if len(_host_cache) >= 4096:
            _host_cache.clear()
        _host_cache[addr] = b
    return b


def pack_record(topic: str, body: bytes, properties: str, queue_id: int, flag: int, queue_offset: int,
                physical_offset: int, sys_flag: int, born_timestamp: int, born_host: str, store_timestamp: int,
                store_host: str, reconsume_times: int = 0, prepared_offset: int = 0, body_crc: int = 0) -> bytes:
    """One stored-message record from its fields (``properties`` already in ``k\\x01v\\x02`` form)."""
    tb = topic.encode()
    pb = properties.encode()
    if len(pb) > 0x7FFF:
        raise ValueError("properties longer than 32767 bytes")
    if len(tb) > 0x7FFF:
        raise ValueError("topic too long")
    v2 = len(tb) > 127
    size = 88 + len(body) + (2 if v2 else 1) + len(tb) + 2 + len(pb)
    crc = body_crc or (zlib.crc32(body) & 0x7FFFFFFF)
    head = _REC_FIXED.pack(size, MAGIC_V2 if v2 else MAGIC_V1, crc, queue_id, flag, queue_offset, physical_offset,
                           sys_flag & ~0x30,  # we always write IPv4 hosts
                           born_timestamp, host_bytes(born_host), store_timestamp, host_bytes(store_host),
                           reconsume_times, prepared_offset, len(body))
    return b"".join((head, body, _U16.pack(len(tb)) if v2 else bytes((len(tb),)), tb, _U16.pack(len(pb)), pb))


def _host(raw: bytes, port: int) -> str:
    if len(raw) == 4:
        return f"{'.'.join(str(b) for b in raw)}:{port}"
    import ipaddress

    return f"[{ipaddress.IPv6Address(raw)}]:{port}"


def decode_records(data: bytes) -> list[StoredRecord]:
    """Decode concatenated stored-message records; raises ValueError on a malformed one."""
    out = []
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < _REC_HEAD.size:
            raise ValueError("truncated record")
        size, magic, crc, qid, flag, qoff, poff, sysflag, born_ts = _REC_HEAD.unpack_from(data, pos)
        if size < 84 or pos + size > n:
            raise ValueError("bad record size")
        if magic not in (MAGIC_V1, MAGIC_V2):
            raise ValueError("bad record magic")
        end = pos + size
        p = pos + _REC_HEAD.size
        blen = 16 if sysflag & 0x10 else 4
        born_host = _host(data[p : p + blen], struct.unpack_from(">i", data, p + blen)[0])
        p += blen + 4
        (store_ts,) = struct.unpack_from(">q", data, p)
        p += 8
        slen = 16 if sysflag & 0x20 else 4
        store_host = _host(data[p : p + slen], struct.unpack_from(">i", data, p + slen)[0])
        p += slen + 4
        recon, prep, body_len = struct.unpack_from(">iqi", data, p)
        p += 16
        if body_len < 0 or p + body_len > end:
            raise ValueError("bad body length")
        body = data[p : p + body_len]
        p += body_len
        if magic == MAGIC_V2:
            (tlen,) = struct.unpack_from(">h", data, p)
            p += 2
        else:
            tlen = data[p]
            p += 1
        topic = data[p : p + tlen].decode()
        p += tlen
        (plen,) = struct.unpack_from(">h", data, p)
        p += 2
        if plen < 0 or p + plen > end:
            raise ValueError("bad properties length")
        props = decode_properties(data[p : p + plen].decode())
        out.append(StoredRecord(
            topic=topic, body=bytes(body), queue_id=qid, flag=flag, queue_offset=qoff,
            physical_offset=poff, sys_flag=sysflag, born_timestamp=born_ts, born_host=born_host,
            store_timestamp=store_ts, store_host=store_host, reconsume_times=recon,
            prepared_transaction_offset=prep, properties=props, body_crc=crc,
        ))
        pos = end
    return out


# -- batch body (SEND_BATCH_MESSAGE) ------------------------------------------------------------

@dataclass(slots=True)
class BatchItem:
    body: bytes
    flag: int = 0
    properties: dict[str, str] = field(default_factory=dict)


def encode_batch(items: Iterable[BatchItem]) -> bytes:
    out = []
    for it in items:
        props = encode_properties(it.properties).encode()
        size = 4 + 4 + 4 + 4 + 4 + len(it.body) + 2 + len(props)
        out.append(struct.pack(">iiiii", size, 0, 0, it.flag, len(it.body)) + it.body
                   + struct.pack(">h", len(props)) + props)
    return b"".join(out)


def decode_batch(data: bytes, max_items: int = 10_000) -> list[BatchItem]:
    """Split a batch body into its messages; raises ValueError if it is not one."""
    out = []
    pos = 0
    n = len(data)
    while pos < n:
        if n - pos < 20:
            raise ValueError("truncated batch record")
        size, _magic, _crc, flag, blen = struct.unpack_from(">iiiii", data, pos)
        if size < 22 or pos + size > n or blen < 0 or 20 + blen + 2 > size:
            raise ValueError("bad batch record length")
        p = pos + 20
        body = data[p : p + blen]
        p += blen
        (plen,) = struct.unpack_from(">h", data, p)
        p += 2
        if plen < 0 or p + plen != pos + size:
            raise ValueError("bad batch properties length")
        try:
            props = decode_properties(data[p : p + plen].decode())
        except UnicodeDecodeError:
            raise ValueError("bad batch properties encoding") from None
        out.append(BatchItem(bytes(body), flag, props))
        if len(out) > max_items:
            raise ValueError("too many messages in batch")
        pos += size
    return out


# -- JSON bodies --------------------------------------------------------------------------------

def decode_json_body(body: bytes) -> Any:
    """Parse a JSON body as Java's fastjson would (tolerates unquoted integer keys)."""
    text = body.decode("utf-8").strip()
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        import re

        fixed = re.sub(r'([{,])\s*(-?\d+)\s*:', r'\1"\2":', text)
        return json.loads(fixed)


def encode_json_body(obj: Any, *, standard: bool = True) -> bytes:
    """JSON for bodies. ``standard=False`` writes integer dict keys unquoted, like fastjson's
    default (what NameServers before 4.9.4 sent, and what old clients expect)."""
    if standard:
        return json.dumps(_stringify_keys(obj), separators=(",", ":")).encode()
    return _fastjson(obj).encode()


def _stringify_keys(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _stringify_keys(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_stringify_keys(v) for v in obj]
    return obj


def _fastjson(obj: Any) -> str:
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            key = str(k) if isinstance(k, int) and not isinstance(k, bool) else json.dumps(str(k))
            items.append(f"{key}:{_fastjson(v)}")
        return "{" + ",".join(items) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(_fastjson(v) for v in obj) + "]"
    return json.dumps(obj)


def parse_java_properties(text: str) -> dict[str, str]:
    """``key=value`` lines (java.util.Properties, the UPDATE_BROKER_CONFIG body), simply."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!":
            continue
        for sep in ("=", ":"):
            if sep in line:
                k, _, v = line.partition(sep)
                out[k.strip()] = v.strip()
                break
    return out


def format_java_properties(props: dict[str, Any]) -> str:
    return "".join(f"{k}={ext_str(v)}\n" for k, v in props.items())
