"""The gRPC front-end: HTTP/2 (the sans-IO connection in :mod:`.codec`) served directly on Trio.

One task reads the socket and feeds :class:`~.codec.GrpcConnection`; one writer task sends
whatever the connection has queued (so replies finished in the same scheduling round share one
``send_all``); one task per call runs the service handler. Policy, written down:

* TLS or plaintext is decided by the first byte (0x16 = a TLS handshake), on the same port.
* A call's ``grpc-timeout`` becomes its cancel scope's deadline; when it expires the call ends
  with DEADLINE_EXCEEDED. A client RST_STREAM cancels the call's task silently.
* Request credit (WINDOW_UPDATE) is returned when the handler takes a message, so a slow
  reader (an idle Telemetry stream) holds back only its own stream. Replies wait for the peer's
  window.
* Shutdown (cancellation): each connection sends GOAWAY with the last stream id it saw, gets
  up to a second to flush, then closes.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Awaitable, Callable

import trio

from rocketlite.metrics import METRICS
from rocketlite.protocols.grpc.codec import (
    DEADLINE_EXCEEDED,
    INTERNAL,
    OK,
    UNIMPLEMENTED,
    CallFailed,
    CallHalfClosed,
    CallMessage,
    CallReset,
    CallStarted,
    ConnectionEnded,
    ConnectionFailed,
    GrpcConnection,
    GrpcConnectionConfig,
    GrpcError,
    WindowOpened,
    frame_message,
)

log = logging.getLogger(__name__)

Handler = Callable[["Call"], Awaitable[None]]


class StreamGone(Exception):
    """The call's stream was reset or the connection closed."""


class PrefixedStream(trio.abc.Stream):
    """A stream that first replays bytes already read (the sniffed first bytes)."""

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self.inner = inner
        self.prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.prefix:
            data = self.prefix if max_bytes is None else self.prefix[:max_bytes]
            self.prefix = self.prefix[len(data) :]
            await trio.lowlevel.checkpoint()
            return data
        return await self.inner.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:  # pragma: no cover - unused
        pass

    async def aclose(self) -> None:
        await self.inner.aclose()


class Call:
    """One RPC as the service sees it: metadata, incoming messages, replies."""

    __slots__ = (
        "conn",
        "stream_id",
        "path",
        "metadata",
        "timeout",
        "_inbox",
        "_half_closed",
        "_arrived",
        "scope",
        "finished",
        "reset",
        "peer",
    )

    def __init__(self, conn: "Http2Connection", ev: CallStarted) -> None:
        self.conn = conn
        self.stream_id = ev.stream_id
        self.path = ev.path
        self.metadata = ev.metadata
        self.timeout = ev.timeout
        self._inbox: deque[CallMessage] = deque()
        self._half_closed = False
        self._arrived = trio.Event()
        self.scope: trio.CancelScope | None = None
        self.finished = False
        self.reset = False
        self.peer = conn.peer

    @property
    def client_id(self) -> str:
        return self.metadata.get("x-mq-client-id", "")

    def _push(self, msg: CallMessage) -> None:
        self._inbox.append(msg)
        self._arrived.set()

    def _close_input(self) -> None:
        self._half_closed = True
        self._arrived.set()

    async def recv(self) -> bytes | None:
        """The next request message, or None once the client half-closed."""
        while True:
            if self._inbox:
                m = self._inbox.popleft()
                if m.flow_bytes:
                    self.conn.grpc.ack(self.stream_id, m.flow_bytes)
                    self.conn.kick()
                return m.payload
            if self._half_closed:
                return None
            if self.reset:
                raise StreamGone()
            self._arrived = trio.Event()
            await self._arrived.wait()

    async def recv_one(self) -> bytes:
        """The single request message of a unary or server-streaming call."""
        payload = await self.recv()
        if payload is None:
            raise GrpcError(INTERNAL, "missing request message")
        return payload

    async def send(self, payload: bytes) -> None:
        """Send one response message, waiting for flow-control credit as needed."""
        await self.conn.send_message(self.stream_id, payload)

    async def reply(self, payload: bytes) -> None:
        """Unary reply: headers, one message and OK trailers."""
        if self.finished or self.reset:
            return
        g = self.conn.grpc
        if g.send_unary(self.stream_id, payload):
            self.finished = True
            self.conn.kick()
            return
        await self.send(payload)
        self.finish(OK)

    def finish(self, status: int = OK, message: str = "") -> None:
        if self.finished or self.reset:
            return
        self.finished = True
        self.conn.grpc.send_trailers(self.stream_id, status, message)
        self.conn.kick()


class Http2Connection:
    def __init__(
        self,
        stream: trio.abc.Stream,
        handlers: dict[str, Handler],
        config: GrpcConnectionConfig,
        peer: str = "",
        idle_timeout: float = 120.0,
    ) -> None:
        self.stream = stream
        self.handlers = handlers
        self.grpc = GrpcConnection(config)
        self.calls: dict[int, Call] = {}
        self.peer = peer
        self._need_flush = trio.Event()
        self._window = trio.Event()
        self._closed = False
        self._nursery: trio.Nursery | None = None
        # a connection with no call in flight for this long is closed (the proxy's 120 s)
        self.idle_timeout = idle_timeout

    def kick(self) -> None:
        self._need_flush.set()

    async def _writer(self) -> None:
        while True:
            await self._need_flush.wait()
            self._need_flush = trio.Event()
            data = self.grpc.data_to_send()
            if data:
                await self.stream.send_all(data)

    async def send_message(self, stream_id: int, payload: bytes) -> None:
        g = self.grpc
        data = frame_message(payload)
        g.send_headers(stream_id)
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            w = g.send_window(stream_id)
            if w < 0 or not g.is_open(stream_id) or self._closed:
                raise StreamGone()
            if w == 0:
                self.kick()
                self._window = trio.Event() if self._window.is_set() else self._window
                await self._window.wait()
                continue
            n = min(w, len(view) - pos)
            g.send_data(stream_id, view[pos : pos + n])
            pos += n
            self.kick()

    async def run(self, initial: bytes = b"") -> None:
        g = self.grpc
        g.initiate()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._writer)
                self.kick()
                data = initial
                while True:
                    if data:
                        try:
                            events = g.receive_data(data)
                        except ConnectionFailed as exc:
                            log.debug("grpc connection from %s failed: %s", self.peer, exc)
                            break
                        for ev in events:
                            self._dispatch(ev, nursery)
                        self.kick()
                        if g.closed:
                            break
                    with trio.move_on_after(self.idle_timeout) as idle:
                        data = await self.stream.receive_some(256 * 1024)
                    if idle.cancelled_caught:
                        if self.calls:
                            data = b""
                            continue
                        log.debug("closing idle grpc connection from %s", self.peer)
                        break
                    if not data:
                        break
                nursery.cancel_scope.cancel()
        finally:
            # the writer is gone now: say GOAWAY (or flush the one queued after an error),
            # give it a second, close
            self._closed = True
            self._window.set()
            with trio.CancelScope(shield=True) as shield:
                shield.deadline = trio.current_time() + 1.0
                g.goaway()
                try:
                    out = g.data_to_send()
                    if out:
                        await self.stream.send_all(out)
                except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError):
                    pass
                try:
                    await self.stream.aclose()
                except Exception:  # pragma: no cover
                    pass

    def _dispatch(self, ev: object, nursery: trio.Nursery) -> None:
        t = type(ev)
        if t is CallMessage:
            call = self.calls.get(ev.stream_id)  # type: ignore[attr-defined]
            if call is not None:
                call._push(ev)  # type: ignore[arg-type]
        elif t is CallStarted:
            call = Call(self, ev)  # type: ignore[arg-type]
            self.calls[call.stream_id] = call
            nursery.start_soon(self._run_call, call)
        elif t is CallHalfClosed:
            call = self.calls.get(ev.stream_id)  # type: ignore[attr-defined]
            if call is not None:
                call._close_input()
        elif t is WindowOpened:
            self._window.set()
        elif t is CallReset or t is CallFailed:
            call = self.calls.pop(ev.stream_id, None)  # type: ignore[attr-defined]
            if call is not None:
                call.reset = True
                call._arrived.set()
                if call.scope is not None:
                    call.scope.cancel()
            self._window.set()
        elif t is ConnectionEnded:
            self._window.set()

    async def _run_call(self, call: Call) -> None:
        handler = self.handlers.get(call.path)
        try:
            with trio.CancelScope() as scope:
                call.scope = scope
                if call.timeout is not None:
                    scope.deadline = trio.current_time() + call.timeout
                if handler is None:
                    call.finish(UNIMPLEMENTED, f"unknown method {call.path}")
                    return
                try:
                    await handler(call)
                except GrpcError as exc:
                    call.finish(exc.status, exc.message)
                except StreamGone:
                    pass
                except Exception as exc:  # a handler bug must not take the connection down
                    log.exception("grpc handler %s failed", call.path)
                    call.finish(INTERNAL, f"{type(exc).__name__}: {exc}")
                else:
                    call.finish(OK)
            if scope.cancelled_caught and not call.reset:
                call.finish(DEADLINE_EXCEEDED, "deadline exceeded")
        finally:
            self.calls.pop(call.stream_id, None)


class GrpcServer:
    """Accepts connections, sniffs TLS, runs one :class:`Http2Connection` each."""

    def __init__(
        self,
        handlers: dict[str, Handler],
        *,
        ssl_context: Any = None,
        config: GrpcConnectionConfig | None = None,
        handshake_timeout: float = 10.0,
        ssl_context_factory: Callable[[], Any] | None = None,
        idle_timeout: float = 120.0,
    ) -> None:
        self.handlers = handlers
        self.idle_timeout = idle_timeout
        self.ssl_context = ssl_context
        # made on the first TLS connection (a self-signed certificate costs ~1 s of startup)
        self.ssl_context_factory = ssl_context_factory
        self._ssl_lock = trio.Lock()
        self.config = config or GrpcConnectionConfig()
        self.handshake_timeout = handshake_timeout
        self.connections = 0

    async def handle(self, stream: trio.abc.Stream) -> None:
        peer = ""
        try:
            sock = getattr(stream, "socket", None)
            if sock is not None:
                h, p = sock.getpeername()[:2]
                peer = f"{h}:{p}"
        except OSError:
            pass
        self.connections += 1
        METRICS.connection_opened("grpc")
        try:
            with trio.move_on_after(self.handshake_timeout) as sniff:
                first = await stream.receive_some(65536)
            if sniff.cancelled_caught or not first:
                await stream.aclose()
                return
            if first[0] == 0x16 and (self.ssl_context is not None or self.ssl_context_factory is not None):
                if self.ssl_context is None:
                    async with self._ssl_lock:
                        if self.ssl_context is None:
                            self.ssl_context = await trio.to_thread.run_sync(self.ssl_context_factory)  # type: ignore[arg-type]
                tls = trio.SSLStream(PrefixedStream(stream, first), self.ssl_context, server_side=True)
                with trio.move_on_after(self.handshake_timeout) as hs:
                    await tls.do_handshake()
                if hs.cancelled_caught:
                    await stream.aclose()
                    return
                await Http2Connection(tls, self.handlers, self.config, peer, self.idle_timeout).run()
            else:
                await Http2Connection(stream, self.handlers, self.config, peer, self.idle_timeout).run(first)
        except Exception as exc:  # one connection's failure never reaches the listener
            if _only_io_errors(exc):
                log.debug("grpc connection %s: %s", peer, exc)
            else:
                log.exception("grpc connection %s failed", peer)
            with trio.CancelScope(shield=True):
                try:
                    await stream.aclose()
                except Exception:  # pragma: no cover
                    pass
        finally:
            self.connections -= 1
            METRICS.connection_closed("grpc")


_IO_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError)


def _only_io_errors(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return all(_only_io_errors(e) for e in exc.exceptions)
    return isinstance(exc, _IO_ERRORS)


# The front-end (binding, lazy start) lives in .frontend so that serve imports neither this module
# nor protobuf before the first gRPC connection; re-exported here for existing imports.
from rocketlite.protocols.grpc.frontend import GrpcFrontEnd  # noqa: E402,F401
