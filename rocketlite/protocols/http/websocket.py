"""WebSocket (RFC 6455), server side, sans-IO: frames in, messages out.

Only what a WebSocket server needs: the handshake key, a decoder that takes the client's masked
frames (any split) and yields whole messages and control frames, and the unmasked frames a server
sends. No extensions are negotiated, so the RSV bits must be zero. Limits: a message (all its
fragments) at most ``max_message`` bytes, control frames at most 125 bytes. A violation raises
:class:`WsError` carrying the close code to send (1002 protocol error, 1007 bad UTF-8, 1009 too big).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Union

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA = (TEXT, BINARY)
_CONTROL = (CLOSE, PING, PONG)

PROTOCOL_ERROR, BAD_DATA, TOO_BIG = 1002, 1007, 1009
DEFAULT_MAX_MESSAGE = 16 * 1024 * 1024


class WsError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Message:
    """A whole data message: ``data`` is ``str`` for a text message, ``bytes`` for binary."""

    __slots__ = ("data",)

    def __init__(self, data: Union[str, bytes]) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"Message({self.data!r})"


class Ping:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Pong:
    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Close:
    """The peer's close frame: ``code`` 1005 when it carried none."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


Event = Union[Message, Ping, Pong, Close]


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.strip().encode("latin-1") + GUID).digest()).decode()


def unmask(mask: bytes, data: bytes) -> bytes:
    n = len(data)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def encode_frame(opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
    """One unmasked (server to client) frame."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        head = struct.pack("!BB", b0, n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 126, n)
    else:
        head = struct.pack("!BBQ", b0, 127, n)
    return head + payload


def close_frame(code: int = 1000, reason: str = "") -> bytes:
    if code in (1005, 1006):  # "no code" markers are never sent
        return encode_frame(CLOSE)
    return encode_frame(CLOSE, struct.pack("!H", code) + reason.encode()[:123])


def _valid_close_code(code: int) -> bool:
    if 1000 <= code <= 1014:
        return code not in (1004, 1005, 1006)
    return 3000 <= code <= 4999


class WsDecoder:
    """Feed the client's bytes; ``events()`` returns what is complete. After a :class:`WsError`
    or a close frame the decoder must not be fed again."""

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self.max_message = max_message
        self._buf = bytearray()
        self._frag_opcode: int | None = None
        self._frags: list[bytes] = []
        self._frag_len = 0

    def feed(self, data: bytes) -> list[Event]:
        self._buf += data
        out: list[Event] = []
        while True:
            ev = self._next()
            if ev is None:
                return out
            if ev is not True:
                out.append(ev)  # type: ignore[arg-type]
                if isinstance(ev, Close):
                    return out

    def _next(self) -> Event | bool | None:
        buf = self._buf
        if len(buf) < 2:
            return None
        b0, b1 = buf[0], buf[1]
        fin, rsv, opcode = b0 & 0x80, b0 & 0x70, b0 & 0x0F
        if rsv:
            raise WsError(PROTOCOL_ERROR, "reserved bits set (no extension negotiated)")
        if not b1 & 0x80:
            raise WsError(PROTOCOL_ERROR, "client frame not masked")
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            if len(buf) < 4:
                return None
            n = struct.unpack_from("!H", buf, 2)[0]
            pos = 4
        elif n == 127:
            if len(buf) < 10:
                return None
            n = struct.unpack_from("!Q", buf, 2)[0]
            if n >> 63:
                raise WsError(PROTOCOL_ERROR, "frame length has the top bit set")
            pos = 10
        if opcode in _CONTROL:
            if n > 125:
                raise WsError(PROTOCOL_ERROR, "control frame longer than 125 bytes")
            if not fin:
                raise WsError(PROTOCOL_ERROR, "fragmented control frame")
        elif opcode in _DATA or opcode == CONT:
            if self._frag_len + n > self.max_message:
                raise WsError(TOO_BIG, f"message larger than {self.max_message} bytes")
        else:
            raise WsError(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        if len(buf) < pos + 4 + n:
            return None
        mask = bytes(buf[pos:pos + 4])
        payload = unmask(mask, bytes(buf[pos + 4:pos + 4 + n]))
        del buf[:pos + 4 + n]
        if opcode == PING:
            return Ping(payload)
        if opcode == PONG:
            return Pong(payload)
        if opcode == CLOSE:
            return self._close(payload)
        if opcode == CONT:
            if self._frag_opcode is None:
                raise WsError(PROTOCOL_ERROR, "continuation frame without a message")
        elif self._frag_opcode is not None:
            raise WsError(PROTOCOL_ERROR, "new message before the last one finished")
        else:
            self._frag_opcode = opcode
        self._frags.append(payload)
        self._frag_len += n
        if not fin:
            return True
        kind, data = self._frag_opcode, b"".join(self._frags)
        self._frag_opcode, self._frags, self._frag_len = None, [], 0
        if kind == TEXT:
            try:
                return Message(data.decode("utf-8"))
            except UnicodeDecodeError:
                raise WsError(BAD_DATA, "text message is not UTF-8") from None
        return Message(data)

    @staticmethod
    def _close(payload: bytes) -> Close:
        if not payload:
            return Close(1005, "")
        if len(payload) == 1:
            raise WsError(PROTOCOL_ERROR, "close frame with a 1-byte payload")
        code = struct.unpack_from("!H", payload)[0]
        if not _valid_close_code(code):
            raise WsError(PROTOCOL_ERROR, f"invalid close code {code}")
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise WsError(BAD_DATA, "close reason is not UTF-8") from None
        return Close(code, reason)
