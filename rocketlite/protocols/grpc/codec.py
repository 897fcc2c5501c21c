"""gRPC over HTTP/2, sans-IO: bytes in, call events out, bytes to send.

Two layers, both pure (no trio, no sockets):

* gRPC message framing: :class:`MessageReader` turns a stream's DATA bytes into whole
  length-prefixed messages (1 flag byte, 4-byte big-endian length, payload) with a size limit;
  :func:`frame_message` does the reverse. :func:`parse_timeout` reads ``grpc-timeout``;
  :func:`encode_grpc_message` percent-encodes ``grpc-message``.
* :class:`GrpcConnection` wraps h2's :class:`h2.connection.H2Connection` and speaks in calls:
  :class:`CallStarted` (path, metadata, deadline), :class:`CallMessage` (one decoded gRPC
  message), :class:`CallHalfClosed`, :class:`CallReset` (the peer cancelled), and
  :class:`CallFailed` (this one stream was malformed: it is answered with a gRPC error and
  reset; the connection carries on). Replies go out through ``send_headers`` /
  ``send_message`` / ``send_trailers`` / ``send_trailers_only``; ``data_to_send()`` drains the
  bytes. Outbound flow control is the caller's: ``send_window(stream_id)`` tells how much may be
  sent now, :class:`WindowOpened` says when to try again.

Error policy: a malformed HTTP/2 connection (bad preface, illegal frame sequence) raises
:class:`ConnectionFailed` after h2 queued a GOAWAY; anything wrong inside one call only ends
that call.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hpack.hpack import encode_integer
from hpack.table import HeaderTable

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


@dataclass(slots=True)
class _Stream:
    reader: MessageReader
    failed: bool = False
    headers_sent: bool = False


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


class _GracefulH2Connection(h2.connection.H2Connection):
    """h2 closes the connection the moment a GOAWAY arrives; a peer's graceful GOAWAY (NO_ERROR,
    sent by grpc-js when a channel closes) still expects its open streams to complete, so only
    report it and keep the streams working."""

    def _receive_goaway_frame(self, frame):  # type: ignore[no-untyped-def]
        if frame.error_code != 0:
            return super()._receive_goaway_frame(frame)
        ev = h2.events.ConnectionTerminated()
        ev.error_code = h2.errors.ErrorCodes.NO_ERROR
        ev.last_stream_id = frame.last_stream_id
        ev.additional_data = frame.additional_data or None
        return [], [ev]


_RESPONSE_HEADERS = [(b":status", b"200"), (b"content-type", b"application/grpc")]


class GrpcConnection:
    """The server side of one HTTP/2 connection, in gRPC terms."""

    def __init__(self, config: GrpcConnectionConfig | None = None) -> None:
        self.config = cfg = config or GrpcConnectionConfig()
        h2cfg = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_inbound_headers=False,
            normalize_outbound_headers=False,
            split_outbound_cookies=False,
        )
        self.h2 = _GracefulH2Connection(config=h2cfg)
        self.h2.encoder = StaticHeaderEncoder()  # type: ignore[assignment]
        self.streams: dict[int, _Stream] = {}
        self.closed = False

    def initiate(self) -> None:
        """Queue our preface: SETTINGS (big windows, stream bound) plus a connection window boost."""
        cfg = self.config
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: cfg.max_concurrent_streams,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: cfg.initial_window_size,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: cfg.max_header_list_size,
                **cfg.extra,
            },
        )
        self.h2.initiate_connection()
        if cfg.connection_window_boost:
            self.h2.increment_flow_control_window(cfg.connection_window_boost)

    def data_to_send(self) -> bytes:
        return self.h2.data_to_send()

    # -- input ---------------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[object]:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.closed = True
            raise ConnectionFailed(str(exc) or type(exc).__name__) from exc
        out: list[object] = []
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                self._on_request(ev, out)
            elif isinstance(ev, h2.events.DataReceived):
                self._on_data(ev, out)
            elif isinstance(ev, h2.events.StreamEnded):
                st = self.streams.get(ev.stream_id)
                if st is not None and not st.failed:
                    if st.reader.pending:
                        self._fail(ev.stream_id, INTERNAL, "truncated gRPC message", out)
                    else:
                        out.append(CallHalfClosed(ev.stream_id))
            elif isinstance(ev, h2.events.StreamReset):
                if self.streams.pop(ev.stream_id, None) is not None:
                    out.append(CallReset(ev.stream_id, int(ev.error_code or 0)))
            elif isinstance(ev, h2.events.WindowUpdated):
                out.append(WindowOpened(ev.stream_id))
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                out.append(WindowOpened(0))
            elif isinstance(ev, h2.events.ConnectionTerminated):
                if ev.error_code:
                    self.closed = True
                out.append(ConnectionEnded(int(ev.error_code or 0)))
            elif isinstance(ev, h2.events.TrailersReceived):
                # client trailers are unusual but legal; they end the request
                if ev.stream_ended:
                    st = self.streams.get(ev.stream_id)
                    if st is not None and not st.failed:
                        out.append(CallHalfClosed(ev.stream_id))
            # PingReceived (auto-acked), SettingsAcknowledged, PriorityUpdated: nothing to do
        return out

    def _on_request(self, ev: h2.events.RequestReceived, out: list[object]) -> None:
        sid = ev.stream_id
        method = path = ctype = b""
        meta: dict[str, str] = {}
        for name, value in ev.headers:  # bytes, since header_encoding=None
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
            elif name == b"content-type":
                ctype = value
            else:
                try:
                    meta[name.decode("latin-1")] = value.decode("utf-8", "replace")
                except Exception:  # pragma: no cover - bytes always decode with replace
                    pass
        encoding = meta.get("grpc-encoding", "identity")
        self.streams[sid] = _Stream(MessageReader(self.config.max_message, encoding))
        if method != b"POST" or not ctype.startswith(b"application/grpc"):
            self._fail(sid, INTERNAL if method == b"POST" else UNIMPLEMENTED, "not a gRPC request", out)
            return
        out.append(CallStarted(sid, path.decode("latin-1"), meta, parse_timeout(meta.get("grpc-timeout"))))
        if ev.stream_ended is not None:
            out.append(CallHalfClosed(sid))

    def _on_data(self, ev: h2.events.DataReceived, out: list[object]) -> None:
        sid = ev.stream_id
        st = self.streams.get(sid)
        flow = ev.flow_controlled_length or 0
        if st is None or st.failed:
            if flow:
                self._ack_safe(flow, sid)
            return
        try:
            payloads = st.reader.feed(ev.data)
        except GrpcError as exc:
            if flow:
                self._ack_safe(flow, sid)
            self._fail(sid, exc.status, exc.message, out)
            return
        if not payloads:
            # part of a message: credit now (the reader's size limit bounds what is buffered),
            # or a message larger than the window could never complete
            if flow:
                self._ack_safe(flow, sid)
            return
        # the credit for a chunk that completed messages is returned when the handler takes the
        # last of them: a reader that stops reading stops only its own stream
        for i, p in enumerate(payloads):
            out.append(CallMessage(sid, p, flow if i == len(payloads) - 1 else 0))

    def _ack_safe(self, n: int, sid: int) -> None:
        try:
            self.h2.acknowledge_received_data(n, sid)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
            pass  # the stream is gone; h2 already credited the connection window

    def ack(self, stream_id: int, n: int) -> None:
        """Return ``n`` bytes of receive credit for a consumed message."""
        if n:
            self._ack_safe(n, stream_id)

    def _fail(self, sid: int, status: int, message: str, out: list[object]) -> None:
        st = self.streams.get(sid)
        if st is not None:
            st.failed = True
        try:
            self.send_trailers_only(sid, status, message)
        except h2.exceptions.ProtocolError:
            pass
        self.reset(sid, h2.errors.ErrorCodes.NO_ERROR)
        out.append(CallFailed(sid, status, message))

    # -- output --------------------------------------------------------------------------------
    def is_open(self, stream_id: int) -> bool:
        return stream_id in self.streams

    def send_headers(self, stream_id: int) -> None:
        st = self.streams.get(stream_id)
        if st is None or st.headers_sent:
            return
        st.headers_sent = True
        self.h2.send_headers(stream_id, _RESPONSE_HEADERS)

    def send_window(self, stream_id: int) -> int:
        """How many DATA bytes may be sent on this stream right now."""
        try:
            return min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size * 64)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
            return -1

    def send_data(self, stream_id: int, data: bytes | memoryview) -> None:
        """Send DATA that fits the window (see :meth:`send_window`), split into frames."""
        mfs = self.h2.max_outbound_frame_size
        view = memoryview(data)
        for i in range(0, len(view), mfs):
            self.h2.send_data(stream_id, view[i : i + mfs].tobytes())

    def send_trailers(self, stream_id: int, status: int = OK, message: str = "") -> None:
        st = self.streams.pop(stream_id, None)
        if st is None:
            return
        trailers = [(b"grpc-status", str(status).encode())]
        if message:
            trailers.append((b"grpc-message", encode_grpc_message(message).encode()))
        if not st.headers_sent:
            self.h2.send_headers(stream_id, _RESPONSE_HEADERS + trailers, end_stream=True)
        else:
            self.h2.send_headers(stream_id, trailers, end_stream=True)

    def send_trailers_only(self, stream_id: int, status: int, message: str = "") -> None:
        """An error reply: one HEADERS frame with END_STREAM when nothing was sent yet."""
        self.send_trailers(stream_id, status, message)

    def send_unary(self, stream_id: int, payload: bytes) -> bool:
        """Headers + one message + OK trailers in one go when the window allows; False otherwise."""
        st = self.streams.get(stream_id)
        if st is None:
            return True
        framed = frame_message(payload)
        if self.send_window(stream_id) < len(framed) or len(framed) > self.h2.max_outbound_frame_size:
            return False
        self.send_headers(stream_id)
        self.h2.send_data(stream_id, framed)
        self.send_trailers(stream_id, OK)
        return True

    def reset(self, stream_id: int, code: int = h2.errors.ErrorCodes.CANCEL) -> None:
        self.streams.pop(stream_id, None)
        try:
            self.h2.reset_stream(stream_id, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
            pass

    def goaway(self) -> None:
        """Graceful shutdown: tell the peer the last stream we will process."""
        try:
            self.h2.close_connection(h2.errors.ErrorCodes.NO_ERROR, last_stream_id=self.h2.highest_inbound_stream_id)
        except h2.exceptions.ProtocolError:
            pass
