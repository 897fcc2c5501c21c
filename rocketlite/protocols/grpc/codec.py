"""gRPC over HTTP/2, sans-IO: bytes in, call events out, bytes to send.

Two layers, both pure (no trio, no sockets):

* gRPC message framing: :class:`MessageReader` turns a stream's DATA bytes into whole
  length-prefixed messages (1 flag byte, 4-byte big-endian length, payload) with a size limit;
  :func:`frame_message` does the reverse. :func:`parse_timeout` reads ``grpc-timeout``;
  :func:`encode_grpc_message` percent-encodes ``grpc-message``.
* :class:`GrpcConnection` is a small server-side HTTP/2 implementation (RFC 9113: frames,
  flow control both ways, SETTINGS, PING, GOAWAY, stream limits; HPACK decoding by the ``hpack``
  package, replies through a cached stateless encoder) that speaks in calls:
  :class:`CallStarted` (path, metadata, deadline), :class:`CallMessage` (one decoded gRPC
  message), :class:`CallHalfClosed`, :class:`CallReset` (the peer cancelled), and
  :class:`CallFailed` (this one stream was malformed: it is answered with a gRPC error and
  reset; the connection carries on). Replies go out through ``send_headers`` /
  ``send_message`` / ``send_trailers`` / ``send_trailers_only``; ``data_to_send()`` drains the
  bytes. Outbound flow control is the caller's: ``send_window(stream_id)`` tells how much may be
  sent now, :class:`WindowOpened` says when to try again.

Error policy: a malformed HTTP/2 connection (bad preface, illegal frame sequence) raises
:class:`ConnectionFailed` after a GOAWAY was queued; anything wrong inside one call only ends
that call. h2's general-purpose state machines cost most of a call's CPU time in a server like
this one (GRPC.md section 12), hence the purpose-built connection; h2 remains the independent
client the unit tests check it against.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass, field

from hpack.hpack import encode_integer
from hpack.table import HeaderTable

from rocketlite.protocols.grpc.hpack_decode import HpackDecoder, HpackError

# gRPC status codes (the transport-level ones; business errors travel in the RocketMQ Status).
OK = 0
CANCELLED = 1
UNKNOWN = 2
INVALID_ARGUMENT = 3
DEADLINE_EXCEEDED = 4
NOT_FOUND = 5
RESOURCE_EXHAUSTED = 8
UNIMPLEMENTED = 12
INTERNAL = 13
UNAVAILABLE = 14

DEFAULT_MAX_MESSAGE = 130 * 1024 * 1024  # the real proxy's inbound limit
_HEADER = struct.Struct(">BI")

# grpc-timeout unit -> seconds
_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


class GrpcError(Exception):
    """A call-level failure with a gRPC status code."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ConnectionFailed(Exception):
    """The HTTP/2 connection is broken; a GOAWAY was queued, send it and close."""


def frame_message(payload: bytes) -> bytes:
    """One uncompressed length-prefixed gRPC message."""
    return _HEADER.pack(0, len(payload)) + payload


def parse_timeout(value: str | None) -> float | None:
    """``grpc-timeout`` (up to 8 digits and a unit) in seconds; None when absent or malformed."""
    if not value or len(value) < 2 or len(value) > 9:
        return None
    digits, unit = value[:-1], value[-1]
    if not digits.isdigit() or unit not in _UNITS:
        return None
    return int(digits) * _UNITS[unit]


def encode_grpc_message(text: str) -> str:
    """Percent-encode for ``grpc-message``: bytes outside 0x20..0x7E and ``%`` become %XX."""
    out = []
    for b in text.encode("utf-8"):
        if 0x20 <= b <= 0x7E and b != 0x25:
            out.append(chr(b))
        else:
            out.append(f"%{b:02X}")
    return "".join(out)


def decode_grpc_message(text: str) -> str:
    raw = bytearray()
    i = 0
    data = text.encode("latin-1", "replace")
    while i < len(data):
        if data[i] == 0x25 and i + 2 < len(data):
            try:
                raw.append(int(data[i + 1 : i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        raw.append(data[i])
        i += 1
    return raw.decode("utf-8", "replace")


class MessageReader:
    """Reassembles length-prefixed gRPC messages from arbitrary DATA chunks.

    ``feed(data)`` returns the messages completed by this chunk. A length above ``max_message``
    or a compressed message without a known ``grpc-encoding`` raises :class:`GrpcError`.
    """

    __slots__ = ("_buf", "max_message", "encoding")

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE, encoding: str = "identity") -> None:
        self._buf = bytearray()
        self.max_message = max_message
        self.encoding = encoding

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        while len(buf) >= 5:
            flag, length = _HEADER.unpack_from(buf)
            if flag not in (0, 1):
                raise GrpcError(INTERNAL, f"invalid compressed-flag {flag}")
            if length > self.max_message:
                raise GrpcError(RESOURCE_EXHAUSTED, f"message of {length} bytes exceeds {self.max_message}")
            if len(buf) < 5 + length:
                break
            payload = bytes(buf[5 : 5 + length])
            del buf[: 5 + length]
            if flag:
                payload = self._decompress(payload)
            out.append(payload)
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)

    def _decompress(self, payload: bytes) -> bytes:
        try:
            if self.encoding == "gzip":
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            elif self.encoding == "deflate":
                d = zlib.decompressobj()
            else:
                raise GrpcError(UNIMPLEMENTED, f"compressed message with grpc-encoding {self.encoding!r}")
            out = d.decompress(payload, self.max_message + 1)
            if len(out) > self.max_message or d.unconsumed_tail:
                raise GrpcError(RESOURCE_EXHAUSTED, "decompressed message too large")
            return out
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise GrpcError(INTERNAL, f"bad compressed message: {exc}") from exc


# ---- call events ------------------------------------------------------------------------------


@dataclass(slots=True)
class CallStarted:
    stream_id: int
    path: str
    metadata: dict[str, str]
    timeout: float | None  # seconds from now, from grpc-timeout


@dataclass(slots=True)
class CallMessage:
    stream_id: int
    payload: bytes
    flow_bytes: int  # credit to return (``ack``) once the message is consumed


@dataclass(slots=True)
class CallHalfClosed:
    stream_id: int


@dataclass(slots=True)
class CallReset:
    stream_id: int
    error_code: int


@dataclass(slots=True)
class CallFailed:
    """This stream was malformed; it has already been answered and reset."""

    stream_id: int
    status: int
    message: str


@dataclass(slots=True)
class WindowOpened:
    stream_id: int  # 0 = the connection window (every stream may retry)


@dataclass(slots=True)
class ConnectionEnded:
    """The peer sent GOAWAY."""

    error_code: int


@dataclass
class GrpcConnectionConfig:
    max_concurrent_streams: int = 1000
    initial_window_size: int = 4 * 1024 * 1024
    connection_window_boost: int = 16 * 1024 * 1024
    max_message: int = DEFAULT_MAX_MESSAGE
    max_header_list_size: int = 64 * 1024
    extra: dict[str, int] = field(default_factory=dict)


class StaticHeaderEncoder:
    """A stateless HPACK encoder with a cache, for a server that sends few distinct header lists.

    Every field is sent from the static table or as a literal *without indexing*, so the peer's
    dynamic table is never touched and an encoded block can be reused for identical header lists
    (``:status 200`` + ``content-type``, ``grpc-status 0``, ...). Used in place of h2's encoder:
    the per-call HPACK work on the reply path becomes a dict lookup.
    """

    _STATIC = {(n, v): i + 1 for i, (n, v) in enumerate(HeaderTable.STATIC_TABLE)}
    _STATIC_NAMES: dict[bytes, int] = {}
    for _i, (_n, _v) in enumerate(HeaderTable.STATIC_TABLE):
        _STATIC_NAMES.setdefault(_n, _i + 1)

    def __init__(self, max_cache: int = 256) -> None:
        self._cache: dict[tuple[tuple[bytes, bytes], ...], bytes] = {}
        self._max_cache = max_cache
        self._table_size_update: int | None = None
        self._header_table_size = 4096

    @property
    def header_table_size(self) -> int:
        return self._header_table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        # we never index, but a peer that shrank its table expects to see the update acknowledged
        if value < self._header_table_size:
            self._table_size_update = value
        self._header_table_size = value

    def encode(self, headers: object, huffman: bool = True) -> bytes:
        key = tuple((bytes(n), bytes(v)) for n, v in headers)  # type: ignore[attr-defined]
        block = self._cache.get(key)
        if block is None:
            block = b"".join(self._field(n, v) for n, v in key)
            if len(self._cache) < self._max_cache:
                self._cache[key] = block
        if self._table_size_update is not None:
            upd = bytearray(encode_integer(self._table_size_update, 5))
            upd[0] |= 0x20
            self._table_size_update = None
            return bytes(upd) + block
        return block

    def _field(self, name: bytes, value: bytes) -> bytes:
        idx = self._STATIC.get((name, value))
        if idx is not None:
            out = bytearray(encode_integer(idx, 7))
            out[0] |= 0x80
            return bytes(out)
        name_idx = self._STATIC_NAMES.get(name, 0)
        out = bytearray(encode_integer(name_idx, 4))  # literal without indexing: 0000xxxx
        if not name_idx:
            out += encode_integer(len(name), 7) + name
        out += encode_integer(len(value), 7) + value
        return bytes(out)


# ---- HTTP/2, server side ------------------------------------------------------------------------
#
# A deliberately small HTTP/2 implementation for exactly what gRPC needs from a server: clients
# open streams with HEADERS, send DATA, half-close; we answer with HEADERS, DATA and trailers.
# No server push, no priorities (PRIORITY frames are read and ignored), no padding on output.
# HPACK decoding uses the ``hpack`` package; replies use :class:`StaticHeaderEncoder`. Connection
# errors queue a GOAWAY and raise :class:`ConnectionFailed`; stream errors reset that stream.

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

S_HEADER_TABLE_SIZE = 0x1
S_ENABLE_PUSH = 0x2
S_MAX_CONCURRENT_STREAMS = 0x3
S_INITIAL_WINDOW_SIZE = 0x4
S_MAX_FRAME_SIZE = 0x5
S_MAX_HEADER_LIST_SIZE = 0x6

MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65535
LOCAL_MAX_FRAME = 16384
_FRAME_HEADER = struct.Struct(">HBBBI")  # length as 2+1 bytes, type, flags, stream id
_U32 = struct.Struct(">I")


class _H2Error(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(slots=True)
class _Stream:
    reader: MessageReader
    send_window: int
    recv_window: int
    remote_closed: bool = False
    failed: bool = False
    headers_sent: bool = False


_RESPONSE_HEADERS = ((b":status", b"200"), (b"content-type", b"application/grpc"))


def _frame(ftype: int, flags: int, sid: int, payload: bytes | bytearray | memoryview = b"") -> bytes:
    n = len(payload)
    return _FRAME_HEADER.pack(n >> 8, n & 0xFF, ftype, flags, sid) + bytes(payload)


class GrpcConnection:
    """The server side of one HTTP/2 connection, in gRPC terms (sans-IO)."""

    def __init__(self, config: GrpcConnectionConfig | None = None) -> None:
        self.config = cfg = config or GrpcConnectionConfig()
        self.streams: dict[int, _Stream] = {}
        self.closed = False
        self._buf = bytearray()
        self._out = bytearray()
        self._preface = False
        self._got_settings = False
        self._decoder = HpackDecoder(4096, cfg.max_header_list_size)
        self._encoder = StaticHeaderEncoder()
        self._highest = 0
        self._goaway_sent = False
        # peer's settings
        self._peer_window = DEFAULT_WINDOW
        self._peer_max_frame = 16384
        # windows
        self._send_conn = DEFAULT_WINDOW
        self._recv_conn = DEFAULT_WINDOW
        self._conn_unacked = 0
        # header block being continued: (stream id, end_stream, fragments)
        self._cont: tuple[int, bool, bytearray] | None = None

    # -- setup ---------------------------------------------------------------------------------
    def initiate(self) -> None:
        cfg = self.config
        settings = [
            (S_MAX_CONCURRENT_STREAMS, cfg.max_concurrent_streams),
            (S_INITIAL_WINDOW_SIZE, cfg.initial_window_size),
            (S_MAX_HEADER_LIST_SIZE, cfg.max_header_list_size),
            *cfg.extra.items(),
        ]
        self._out += _frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in settings))
        if cfg.connection_window_boost:
            self._out += _frame(WINDOW_UPDATE, 0, 0, _U32.pack(cfg.connection_window_boost))
            self._recv_conn += cfg.connection_window_boost

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    # -- input ---------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[object]:
        if self.closed:
            raise ConnectionFailed("connection already closed")
        out: list[object] = []
        buf = self._buf
        buf += data
        try:
            if not self._preface:
                if len(buf) < len(PREFACE):
                    if not PREFACE.startswith(bytes(buf)):
                        raise _H2Error(PROTOCOL_ERROR, "not an HTTP/2 client preface")
                    return out
                if bytes(buf[: len(PREFACE)]) != PREFACE:
                    raise _H2Error(PROTOCOL_ERROR, "not an HTTP/2 client preface")
                del buf[: len(PREFACE)]
                self._preface = True
            pos = 0
            n = len(buf)
            while n - pos >= 9:
                hi, lo, ftype, flags, sid = _FRAME_HEADER.unpack_from(buf, pos)
                length = (hi << 8) | lo
                sid &= 0x7FFFFFFF
                if length > LOCAL_MAX_FRAME:
                    raise _H2Error(FRAME_SIZE_ERROR, f"frame of {length} bytes exceeds {LOCAL_MAX_FRAME}")
                if n - pos < 9 + length:
                    break
                payload = bytes(buf[pos + 9 : pos + 9 + length])
                pos += 9 + length
                self._on_frame(ftype, flags, sid, payload, out)
            if pos:
                del buf[:pos]
        except _H2Error as exc:
            self._buf.clear()
            self.closed = True
            self._send_goaway(exc.code, str(exc))
            raise ConnectionFailed(str(exc)) from None
        return out

    def _on_frame(self, ftype: int, flags: int, sid: int, p: bytes, out: list[object]) -> None:
        if not self._got_settings:
            if ftype != SETTINGS or flags & FLAG_ACK:
                raise _H2Error(PROTOCOL_ERROR, "the connection must start with SETTINGS")
            self._got_settings = True
        if self._cont is not None and (ftype != CONTINUATION or sid != self._cont[0]):
            raise _H2Error(PROTOCOL_ERROR, "expected CONTINUATION")
        if ftype == DATA:
            self._on_data(flags, sid, p, out)
        elif ftype == HEADERS:
            self._on_headers(flags, sid, p, out)
        elif ftype == CONTINUATION:
            if self._cont is None:
                raise _H2Error(PROTOCOL_ERROR, "unexpected CONTINUATION")
            csid, end_stream, block = self._cont
            block += p
            if len(block) > self.config.max_header_list_size + 16384:
                raise _H2Error(ENHANCE_YOUR_CALM, "header block too large")
            if flags & FLAG_END_HEADERS:
                self._cont = None
                self._on_header_block(csid, end_stream, bytes(block), out)
        elif ftype == SETTINGS:
            self._on_settings(flags, sid, p, out)
        elif ftype == WINDOW_UPDATE:
            self._on_window_update(sid, p, out)
        elif ftype == PING:
            if sid != 0:
                raise _H2Error(PROTOCOL_ERROR, "PING on a stream")
            if len(p) != 8:
                raise _H2Error(FRAME_SIZE_ERROR, "PING payload must be 8 bytes")
            if not flags & FLAG_ACK:
                self._out += _frame(PING, FLAG_ACK, 0, p)
        elif ftype == RST_STREAM:
            if sid == 0:
                raise _H2Error(PROTOCOL_ERROR, "RST_STREAM on stream 0")
            if len(p) != 4:
                raise _H2Error(FRAME_SIZE_ERROR, "RST_STREAM payload must be 4 bytes")
            if sid > self._highest:
                raise _H2Error(PROTOCOL_ERROR, "RST_STREAM on an idle stream")
            if self.streams.pop(sid, None) is not None:
                out.append(CallReset(sid, _U32.unpack(p)[0]))
        elif ftype == PRIORITY:
            if sid == 0:
                raise _H2Error(PROTOCOL_ERROR, "PRIORITY on stream 0")
            if len(p) != 5:
                self._rst(sid, FRAME_SIZE_ERROR)
        elif ftype == GOAWAY:
            if sid != 0 or len(p) < 8:
                raise _H2Error(PROTOCOL_ERROR, "malformed GOAWAY")
            code = _U32.unpack_from(p, 4)[0]
            out.append(ConnectionEnded(code))
            if code != NO_ERROR:
                self.closed = True
        elif ftype == PUSH_PROMISE:
            raise _H2Error(PROTOCOL_ERROR, "clients cannot push")
        # unknown frame types are ignored (RFC 9113 5.5)

    def _strip_padding(self, flags: int, p: bytes) -> bytes:
        if flags & FLAG_PADDED:
            if not p:
                raise _H2Error(PROTOCOL_ERROR, "padded frame without pad length")
            pad = p[0]
            if pad >= len(p):
                raise _H2Error(PROTOCOL_ERROR, "padding exceeds the frame")
            return p[1 : len(p) - pad]
        return p

    def _on_data(self, flags: int, sid: int, p: bytes, out: list[object]) -> None:
        if sid == 0:
            raise _H2Error(PROTOCOL_ERROR, "DATA on stream 0")
        flow = len(p)
        self._recv_conn -= flow
        if self._recv_conn < 0:
            raise _H2Error(FLOW_CONTROL_ERROR, "connection receive window exceeded")
        data = self._strip_padding(flags, p)
        st = self.streams.get(sid)
        if st is None or st.remote_closed:
            if sid > self._highest:
                raise _H2Error(PROTOCOL_ERROR, "DATA on an idle stream")
            self._credit_conn(flow)
            if st is not None:
                self._rst(sid, STREAM_CLOSED)
                self.streams.pop(sid, None)
                out.append(CallReset(sid, STREAM_CLOSED))
            return
        st.recv_window -= flow
        if st.recv_window < 0:
            self._credit_conn(flow)
            self._fail(sid, INTERNAL, "stream flow-control window exceeded", out, FLOW_CONTROL_ERROR)
            return
        end = bool(flags & FLAG_END_STREAM)
        if st.failed:
            self._credit_conn(flow)
            return
        try:
            payloads = st.reader.feed(data) if data else []
        except GrpcError as exc:
            self._credit_conn(flow)
            self._fail(sid, exc.status, exc.message, out)
            return
        if not payloads:
            # part of a message: credit now (the reader's size limit bounds what is buffered),
            # or a message larger than the window could never complete
            self.ack(sid, flow)
        else:
            # the credit for a chunk that completed messages is returned when the handler takes the
            # last of them: a reader that stops reading stops only its own stream
            last = len(payloads) - 1
            for i, m in enumerate(payloads):
                out.append(CallMessage(sid, m, flow if i == last else 0))
        if end:
            st.remote_closed = True
            if st.reader.pending:
                self._fail(sid, INTERNAL, "truncated gRPC message", out)
            else:
                out.append(CallHalfClosed(sid))

    def _on_headers(self, flags: int, sid: int, p: bytes, out: list[object]) -> None:
        if sid == 0:
            raise _H2Error(PROTOCOL_ERROR, "HEADERS on stream 0")
        p = self._strip_padding(flags, p)
        if flags & FLAG_PRIORITY:
            if len(p) < 5:
                raise _H2Error(FRAME_SIZE_ERROR, "HEADERS priority fields missing")
            p = p[5:]
        end_stream = bool(flags & FLAG_END_STREAM)
        if flags & FLAG_END_HEADERS:
            self._on_header_block(sid, end_stream, p, out)
        else:
            self._cont = (sid, end_stream, bytearray(p))

    def _on_header_block(self, sid: int, end_stream: bool, block: bytes, out: list[object]) -> None:
        try:
            headers = self._decoder.decode(block)
        except HpackError as exc:
            raise _H2Error(COMPRESSION_ERROR, f"header block does not decode: {exc}") from None
        st = self.streams.get(sid)
        if st is not None:
            # trailers from the client: they must end the stream
            if st.remote_closed:
                self._fail(sid, INTERNAL, "HEADERS after END_STREAM", out, STREAM_CLOSED)
            elif not end_stream:
                self._fail(sid, INTERNAL, "trailers without END_STREAM", out, PROTOCOL_ERROR)
            elif not st.failed:
                st.remote_closed = True
                if st.reader.pending:
                    self._fail(sid, INTERNAL, "truncated gRPC message", out)
                else:
                    out.append(CallHalfClosed(sid))
            return
        if sid % 2 == 0:
            raise _H2Error(PROTOCOL_ERROR, "client stream ids are odd")
        if sid <= self._highest:
            # a stream we already closed: its header block was decoded to keep HPACK in sync
            self._rst(sid, STREAM_CLOSED)
            return
        self._highest = sid
        if self._goaway_sent:
            self._rst(sid, REFUSED_STREAM)
            return
        if len(self.streams) >= self.config.max_concurrent_streams:
            self._rst(sid, REFUSED_STREAM)
            return
        method = path = ctype = b""
        meta: dict[str, str] = {}
        for name, value in headers:
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
            elif name == b"content-type":
                ctype = value
            else:
                meta[name.decode("latin-1")] = value.decode("utf-8", "replace")
        st = self.streams[sid] = _Stream(
            MessageReader(self.config.max_message, meta.get("grpc-encoding", "identity")),
            self._peer_window,
            self.config.initial_window_size,
        )
        if method != b"POST" or not path or not ctype.startswith(b"application/grpc"):
            self._fail(sid, UNIMPLEMENTED if method and method != b"POST" else INTERNAL, "not a gRPC request", out)
            return
        out.append(CallStarted(sid, path.decode("latin-1"), meta, parse_timeout(meta.get("grpc-timeout"))))
        if end_stream:
            st.remote_closed = True
            out.append(CallHalfClosed(sid))

    def _on_settings(self, flags: int, sid: int, p: bytes, out: list[object]) -> None:
        if sid != 0:
            raise _H2Error(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & FLAG_ACK:
            if p:
                raise _H2Error(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(p) % 6:
            raise _H2Error(FRAME_SIZE_ERROR, "SETTINGS payload not a multiple of 6")
        for i in range(0, len(p), 6):
            key, value = struct.unpack_from(">HI", p, i)
            if key == S_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise _H2Error(FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self._peer_window
                self._peer_window = value
                for st in self.streams.values():
                    st.send_window += delta
                    if st.send_window > MAX_WINDOW:
                        raise _H2Error(FLOW_CONTROL_ERROR, "stream window overflow")
                out.append(WindowOpened(0))
            elif key == S_MAX_FRAME_SIZE:
                if not 16384 <= value <= 16777215:
                    raise _H2Error(PROTOCOL_ERROR, "illegal MAX_FRAME_SIZE")
                self._peer_max_frame = value
            elif key == S_HEADER_TABLE_SIZE:
                self._encoder.header_table_size = value
            elif key == S_ENABLE_PUSH:
                if value > 1:
                    raise _H2Error(PROTOCOL_ERROR, "illegal ENABLE_PUSH")
        self._out += _frame(SETTINGS, FLAG_ACK, 0)

    def _on_window_update(self, sid: int, p: bytes, out: list[object]) -> None:
        if len(p) != 4:
            raise _H2Error(FRAME_SIZE_ERROR, "WINDOW_UPDATE payload must be 4 bytes")
        inc = _U32.unpack(p)[0] & 0x7FFFFFFF
        if sid == 0:
            if inc == 0:
                raise _H2Error(PROTOCOL_ERROR, "zero WINDOW_UPDATE")
            self._send_conn += inc
            if self._send_conn > MAX_WINDOW:
                raise _H2Error(FLOW_CONTROL_ERROR, "connection window overflow")
            out.append(WindowOpened(0))
            return
        st = self.streams.get(sid)
        if st is None:
            if sid > self._highest:
                raise _H2Error(PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return
        if inc == 0:
            self._fail(sid, INTERNAL, "zero WINDOW_UPDATE", out, PROTOCOL_ERROR)
            return
        st.send_window += inc
        if st.send_window > MAX_WINDOW:
            self._fail(sid, INTERNAL, "stream window overflow", out, FLOW_CONTROL_ERROR)
            return
        out.append(WindowOpened(sid))

    # -- flow control credit -------------------------------------------------------------------
    def _credit_conn(self, n: int) -> None:
        if n <= 0:
            return
        self._conn_unacked += n
        # batch connection credit: return it once a good part of the window is used
        if self._conn_unacked >= min(1 << 20, (self.config.connection_window_boost + DEFAULT_WINDOW) // 4):
            self._out += _frame(WINDOW_UPDATE, 0, 0, _U32.pack(self._conn_unacked))
            self._recv_conn += self._conn_unacked
            self._conn_unacked = 0

    def ack(self, stream_id: int, n: int) -> None:
        """Return ``n`` bytes of receive credit for a consumed message."""
        if n <= 0:
            return
        self._credit_conn(n)
        st = self.streams.get(stream_id)
        if st is not None and not st.remote_closed:
            st.recv_window += n
            self._out += _frame(WINDOW_UPDATE, 0, stream_id, _U32.pack(n))

    # -- output --------------------------------------------------------------------------------
    def _rst(self, sid: int, code: int) -> None:
        self._out += _frame(RST_STREAM, 0, sid, _U32.pack(code))

    def _send_goaway(self, code: int, message: str = "") -> None:
        if self._goaway_sent and code == NO_ERROR:
            return
        self._goaway_sent = True
        self._out += _frame(GOAWAY, 0, 0, struct.pack(">II", self._highest, code) + message.encode()[:256])

    def _fail(
        self, sid: int, status: int, message: str, out: list[object], rst_code: int = NO_ERROR
    ) -> None:
        st = self.streams.get(sid)
        if st is not None:
            st.failed = True
            self.send_trailers(sid, status, message)  # also RST(NO_ERROR) if the client still sends
            if rst_code != NO_ERROR:
                self._rst(sid, rst_code)
        else:
            self._rst(sid, rst_code or CANCEL)
        out.append(CallFailed(sid, status, message))

    def is_open(self, stream_id: int) -> bool:
        return stream_id in self.streams

    def send_headers(self, stream_id: int) -> None:
        st = self.streams.get(stream_id)
        if st is None or st.headers_sent:
            return
        st.headers_sent = True
        self._out += _frame(HEADERS, FLAG_END_HEADERS, stream_id, self._encoder.encode(_RESPONSE_HEADERS))

    def send_window(self, stream_id: int) -> int:
        """How many DATA bytes may be sent on this stream right now (-1: the stream is gone)."""
        st = self.streams.get(stream_id)
        if st is None:
            return -1
        return max(0, min(self._send_conn, st.send_window))

    def send_data(self, stream_id: int, data: bytes | memoryview) -> None:
        """Send DATA that fits the window (see :meth:`send_window`), split into frames."""
        st = self.streams.get(stream_id)
        if st is None:
            return
        n = len(data)
        st.send_window -= n
        self._send_conn -= n
        mfs = self._peer_max_frame
        if n <= mfs:
            self._out += _frame(DATA, 0, stream_id, data)
            return
        view = memoryview(data)
        for i in range(0, n, mfs):
            self._out += _frame(DATA, 0, stream_id, view[i : i + mfs])

    def send_trailers(self, stream_id: int, status: int = OK, message: str = "") -> None:
        st = self.streams.pop(stream_id, None)
        if st is None:
            return
        trailers: tuple[tuple[bytes, bytes], ...] = ((b"grpc-status", str(status).encode()),)
        if message:
            trailers += ((b"grpc-message", encode_grpc_message(message).encode()),)
        if not st.headers_sent:
            trailers = _RESPONSE_HEADERS + trailers
        self._out += _frame(HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, stream_id, self._encoder.encode(trailers))
        if not st.remote_closed:
            # the call is over: tell the client to stop sending (RFC 9113 8.1)
            self._rst(stream_id, NO_ERROR)

    def send_trailers_only(self, stream_id: int, status: int, message: str = "") -> None:
        """An error reply: one HEADERS frame with END_STREAM when nothing was sent yet."""
        self.send_trailers(stream_id, status, message)

    def send_unary(self, stream_id: int, payload: bytes) -> bool:
        """Headers + one message + OK trailers in one go when the window allows; False otherwise."""
        st = self.streams.get(stream_id)
        if st is None:
            return True
        framed = frame_message(payload)
        if len(framed) > min(self._send_conn, st.send_window, self._peer_max_frame):
            return False
        self.send_headers(stream_id)
        self.send_data(stream_id, framed)
        self.send_trailers(stream_id, OK)
        return True

    def reset(self, stream_id: int, code: int = CANCEL) -> None:
        self.streams.pop(stream_id, None)
        if stream_id <= self._highest:
            self._rst(stream_id, code)

    def goaway(self) -> None:
        """Graceful shutdown: tell the peer the last stream we will process."""
        if not self._goaway_sent:
            self._send_goaway(NO_ERROR)
