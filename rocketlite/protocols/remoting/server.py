"""The Trio adapter of the remoting protocol: listeners, connections, concurrency.

One front-end binds three listeners that all answer every code: the NameServer port
(``[remoting] port``, 9876), the Broker port (``broker_port``, 10911) and the VIP port
(``broker_port - 2``, used by Java clients up to 4.4). Port 0 binds free ports; the VIP port is
then chosen as ``broker port - 2`` when that is free.

Per connection: one reader task feeds the sans-IO :class:`FrameDecoder`; every request runs in
its own task (a parked long-poll PULL must not hold up the rest), at most ``MAX_INFLIGHT`` at a
time (beyond that the reader stops reading: back-pressure). Sends to the same (topic, queue) are
stored in arrival order, like a Java broker's single send thread, and consumer offset updates and
queries of one (group, topic, queue) apply in order: such requests queue behind the running one
(plain sends that piled up for one queue are then stored with one ``broker.send``).
Writes are serialised: the first writer flushes whatever other tasks queued meanwhile in one
system call. Plain TCP connections read and write their socket directly and wait in Trio only
when it would block (Trio's stream calls yield to the scheduler on every call, which cost more
than decoding and answering a SEND_MESSAGE_V2). Broker-initiated
requests (NOTIFY_CONSUMER_IDS_CHANGED, CHECK_TRANSACTION_STATE, GET_CONSUMER_RUNNING_INFO) go over
the client's own connection, which the handlers keep as ``ClientInfo.session``.
A malformed frame closes the connection (Java does the same); other connections carry on.
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import socket
import weakref
from typing import Any

import trio

from rocketlite.metrics import METRICS
from rocketlite.protocols import rawsock
from rocketlite.protocols.remoting.codec import (
    FLAG_ONEWAY,
    FLAG_RESPONSE,
    FrameDecoder,
    FrameError,
    RemotingCommand,
    ResponseCode,
    encode_command,
)
from rocketlite.protocols.remoting.handlers import Advertised, ConnState, RemotingService
from rocketlite.security.acl import get_acl
from rocketlite.security.limits import get_limiter, limited
from rocketlite.security.tls import context_for, tls_or_plain

log = logging.getLogger("rocketlite.remoting")

MAX_INFLIGHT = 256
MAX_SEND_GROUP = 64  # sends to one queue stored together (see Connection._run_chain)
_SEND_CODES = (10, 310, 320)  # SEND_MESSAGE, SEND_MESSAGE_V2, SEND_BATCH_MESSAGE
_OFFSET_CODES = (14, 15)  # QUERY_CONSUMER_OFFSET, UPDATE_CONSUMER_OFFSET
READ_SIZE = 65536
YIELD_EVERY = 16  # reads without a Trio checkpoint while the client keeps the socket busy


class Connection:
    """One client connection (a Session for the handlers)."""

    _opaque = itertools.count(100_000)

    def __init__(self, stream: trio.SocketStream, service: RemotingService, nursery: trio.Nursery,
                 raw: socket.socket | None = None) -> None:
        self.stream = stream
        # The plain TCP socket under ``stream`` (None for TLS): reads and writes go straight to it,
        # waiting in Trio only when it would block. Trio's stream methods yield to the scheduler
        # on every call even when the data is there, which cost more than the request itself.
        self.raw = raw
        self.service = service
        self.nursery = nursery
        self.state = ConnState()
        self.peer = "127.0.0.1:0"
        try:
            host, port = stream.socket.getpeername()[:2]
            self.peer = f"{host}:{port}"
        except OSError:
            pass
        self._out: list[bytes] = []
        self._flushing = False
        self._chains: dict[tuple[str, ...], collections.deque[RemotingCommand]] = {}  # see _dispatch
        self._inflight = 0  # requests running (at most MAX_INFLIGHT)
        self._reads = 0
        self._room: trio.Event | None = None  # set when a request finishes while the reader waits
        self._pending: dict[int, tuple[trio.Event, list[RemotingCommand]]] = {}
        self.closed = False

    async def send(self, cmd: RemotingCommand) -> None:
        """Queue a frame; the first sender flushes everything queued meanwhile in one write,
        so responses that finish together share a system call."""
        if self.closed:
            return
        self._out.append(encode_command(cmd))
        if not self._flushing:
            await self._flush()

    async def send_many(self, cmds: list[RemotingCommand]) -> None:
        """Several frames, written together."""
        if self.closed or not cmds:
            return
        self._out.extend([encode_command(cmd) for cmd in cmds])
        if not self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        self._flushing = True
        try:
            while self._out and not self.closed:
                chunk = self._out[0] if len(self._out) == 1 else b"".join(self._out)
                self._out.clear()
                try:
                    if self.raw is not None:
                        await self._send_raw(chunk)
                    else:
                        await self.stream.send_all(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    self.closed = True
        finally:
            self._flushing = False

    async def _send_raw(self, data: bytes) -> None:
        """All of ``data`` onto the socket; yields to Trio only when the socket buffer is full."""
        assert self.raw is not None
        await rawsock.send_all(self.raw, data)

    def send_soon(self, cmd: RemotingCommand) -> None:
        """Queue a broker-initiated request (oneway) without waiting."""
        if self.closed:
            return
        cmd.opaque = next(self._opaque)
        try:
            self.nursery.start_soon(self.send, cmd)
        except RuntimeError:  # nursery closed: the connection is going away
            pass

    async def request(self, cmd: RemotingCommand, timeout_ms: float) -> RemotingCommand | None:
        """Send a broker-initiated request and wait for the client's response."""
        cmd.opaque = next(self._opaque)
        cmd.flag &= ~(FLAG_ONEWAY | FLAG_RESPONSE)
        ev = trio.Event()
        slot: list[RemotingCommand] = []
        self._pending[cmd.opaque] = (ev, slot)
        try:
            await self.send(cmd)
            with trio.move_on_after(timeout_ms / 1000):
                await ev.wait()
        finally:
            self._pending.pop(cmd.opaque, None)
        return slot[0] if slot else None

    @staticmethod
    def _order_key(cmd: RemotingCommand) -> tuple[str, ...] | None:
        """Requests with the same key take effect in arrival order; the rest run in parallel.
        Sends to one queue over one connection are stored in arrival order (as a Java broker's
        single send thread does); a consumer offset update is visible to the query behind it."""
        code = cmd.code
        if code in _SEND_CODES:
            ext = cmd.ext
            return ("send", ext.get("b") or ext.get("topic") or "", ext.get("e") or ext.get("queueId") or "-1")
        if code in _OFFSET_CODES:
            ext = cmd.ext
            return ("offset", ext.get("consumerGroup") or "", ext.get("topic") or "", ext.get("queueId") or "")
        return None

    def _dispatch(self, cmd: RemotingCommand) -> None:
        """Start a request (called by the reader in arrival order). Ordered requests queue behind
        the running one with their key, which then runs them itself, one after the other (no
        task and no event per queued request)."""
        self._inflight += 1
        key = self._order_key(cmd)
        if key is None:
            self.nursery.start_soon(self._run_request, cmd)
            return
        queue = self._chains.get(key)
        if queue is not None:
            queue.append(cmd)
            return
        self._chains[key] = collections.deque()
        self.nursery.start_soon(self._run_chain, key, cmd)

    async def _run_chain(self, key: tuple[str, ...], cmd: RemotingCommand) -> None:
        queue = self._chains[key]
        grouped = key[0] == "send"
        try:
            while True:
                await self._run_request(cmd)
                while len(queue) > 1 and grouped:  # sends that piled up meanwhile: one store write
                    cmds = [queue.popleft() for _ in range(min(len(queue), MAX_SEND_GROUP))]
                    await self._run_sends(cmds)
                if not queue:
                    break
                cmd = queue.popleft()
        finally:
            del self._chains[key]

    async def _run_sends(self, cmds: list[RemotingCommand]) -> None:
        try:
            await self.send_many([resp for resp in await self.service.handle_sends(self, cmds) if resp is not None])
        except Exception:
            log.exception("remoting: handler for %d sends failed", len(cmds))
            for cmd in cmds:
                if not cmd.is_oneway:
                    await self.send(cmd.response(ResponseCode.SYSTEM_ERROR, remark="internal error"))
        finally:
            self._inflight -= len(cmds)
            if self._room is not None:
                self._room.set()
                self._room = None

    async def _run_request(self, cmd: RemotingCommand) -> None:
        try:
            resp = await self.service.handle(self, cmd)
            if resp is not None:
                await self.send(resp)
        except Exception:
            log.exception("remoting: handler for code %s failed", cmd.code)
            if not cmd.is_oneway:
                await self.send(cmd.response(ResponseCode.SYSTEM_ERROR, remark="internal error"))
        finally:
            self._inflight -= 1
            if self._room is not None:
                self._room.set()
                self._room = None

    async def _receive(self) -> bytes:
        """The next bytes from the client (b"" at end of stream). On a plain socket this reads
        without a Trio round trip when data is waiting, and waits for readability otherwise."""
        raw = self.raw
        if raw is None:
            return await self.stream.receive_some(READ_SIZE)
        self._reads += 1
        if self._reads >= YIELD_EVERY:  # a client that never lets the socket run dry must not starve others
            self._reads = 0
            await trio.lowlevel.checkpoint()
        while True:
            try:
                return raw.recv(READ_SIZE)
            except BlockingIOError:
                self._reads = 0
                await trio.lowlevel.wait_readable(raw)

    async def serve(self) -> None:
        decoder = FrameDecoder()
        METRICS.connection_opened("remoting")
        try:
            while True:
                try:
                    data = await self._receive()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    return
                if not data:
                    return
                decoder.feed(data)
                while True:
                    try:
                        cmd = decoder.next_command()
                    except FrameError as exc:
                        log.info("remoting: closing %s: %s", self.peer, exc)
                        return
                    if cmd is None:
                        break
                    if cmd.is_response:
                        pending = self._pending.get(cmd.opaque)
                        if pending is not None:
                            pending[1].append(cmd)
                            pending[0].set()
                        continue
                    while self._inflight >= MAX_INFLIGHT:  # back-pressure: stop reading
                        self._room = trio.Event()
                        await self._room.wait()
                    self._dispatch(cmd)
        finally:
            self.closed = True
            METRICS.connection_closed("remoting")
            self.service.connection_closed(self)


async def _handle_stream(stream: trio.SocketStream, service: RemotingService, raw: socket.socket | None = None) -> None:
    try:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)  # notice peers that vanished
    except (OSError, AttributeError):
        pass
    try:
        await _serve_stream(stream, service, raw)
    except Exception:  # one connection's failure must never take the listener down
        log.exception("remoting: connection failed")


async def _serve_stream(stream: trio.SocketStream, service: RemotingService, raw: socket.socket | None) -> None:
    served: trio.abc.Stream | None = stream
    tls = getattr(service, "tls", None)
    if tls is not None:  # [remoting] tls: TLS sniffed per connection (rocketlite/security/tls.py)
        served = await tls_or_plain(stream, tls)
        if served is None:
            await stream.aclose()
            return
    async with served:
        async with trio.open_nursery() as nursery:
            conn = Connection(served, service, nursery, raw if served is stream else None)  # type: ignore[arg-type]
            await conn.serve()
            nursery.cancel_scope.cancel()  # drop parked pulls of a closed connection


# accept() errors that concern only the connection being accepted (it is gone already)
_ACCEPT_SKIP = {getattr(errno, name) for name in ("ECONNABORTED", "EPROTO", "EPERM", "ENETDOWN", "ENOPROTOOPT",
                                                   "EHOSTDOWN", "ENONET", "EHOSTUNREACH", "EOPNOTSUPP",
                                                   "ENETUNREACH", "ECONNRESET") if hasattr(errno, name)}


async def _accept_loop(listener: trio.SocketListener, service: RemotingService, nursery: trio.Nursery) -> None:
    """Accept on the listener's own socket so each connection keeps its plain socket object
    for the fast path (see Connection.raw); Trio only waits for readability."""
    lsock = _raw_sockets[listener]
    handler = limited(_handle_stream, getattr(service, "conn_limit", None))
    while True:
        try:
            sock, _ = lsock.accept()
        except BlockingIOError:
            await trio.lowlevel.wait_readable(lsock)
            continue
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS):
                log.error("remoting: out of file descriptors or memory, pausing accepts: %s", exc)
                await trio.sleep(0.1)
                continue
            if exc.errno in _ACCEPT_SKIP:
                continue
            raise
        sock.setblocking(False)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        nursery.start_soon(handler, stream, service, sock)
        await trio.lowlevel.checkpoint()


def _listener(host: str, port: int) -> trio.SocketListener:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host or "0.0.0.0", port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
    _raw_sockets[listener] = sock
    return listener


_raw_sockets: "weakref.WeakKeyDictionary[trio.SocketListener, socket.socket]" = weakref.WeakKeyDictionary()


def bind_broker_ports(host: str, broker_port: int) -> tuple[trio.SocketListener, trio.SocketListener | None]:
    """The broker listener and its VIP companion at ``port - 2`` (best effort with port 0)."""
    if broker_port:
        main = _listener(host, broker_port)
        vip = None
        if broker_port > 2:
            try:
                vip = _listener(host, broker_port - 2)
            except OSError as exc:
                log.warning("remoting: VIP port %d not available: %s", broker_port - 2, exc)
        return main, vip
    for _ in range(50):
        main = _listener(host, 0)
        port = main.socket.getsockname()[1]
        if port > 1026:
            try:
                return main, _listener(host, port - 2)
            except OSError:
                pass
        main.socket.close()
    return _listener(host, 0), None


def _numeric_ipv4(host: str) -> str | None:
    try:
        socket.inet_aton(host)
    except OSError:
        return None
    return host if host.count(".") == 3 else None


def _resolve_ipv4(host: str) -> str:
    numeric = _numeric_ipv4(host)
    if numeric:
        return numeric
    try:
        return socket.gethostbyname(host)
    except OSError:
        return "127.0.0.1"


class RemotingFrontEnd:
    """NameServer + Broker remoting roles on three ports, all answering every code."""

    name = "remoting"

    def __init__(self) -> None:
        self.service: RemotingService | None = None
        self.ports: dict[str, int] = {}

    async def serve(self, ctx: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        settings = ctx.settings
        sec = settings.section("remoting")
        host = settings.host
        ns_port = int(sec.get("port", 9876))
        broker_port = int(sec.get("broker_port", 10911))
        broker_l, vip_l = bind_broker_ports(host, broker_port)
        actual_broker = broker_l.socket.getsockname()[1]
        listeners = [broker_l] + ([vip_l] if vip_l else [])
        if ns_port and ns_port in (actual_broker, actual_broker - 2):
            ns_l = None  # the NameServer role shares the broker listener
            actual_ns = ns_port
        else:
            ns_l = _listener(host, ns_port)
            actual_ns = ns_l.socket.getsockname()[1]
            listeners.append(ns_l)
        adv_host = settings.advertised_host
        numeric = _numeric_ipv4(adv_host)  # a name needs a (blocking) lookup, off the Trio thread
        advertised = Advertised(adv_host, actual_broker,
                                numeric or await trio.to_thread.run_sync(_resolve_ipv4, adv_host))
        hold = int(sec.get("pull_hold_max_ms", 20_000) or 20_000)
        self.service = RemotingService(ctx.broker, advertised, pull_hold_max_ms=hold)
        self.service.acl = get_acl(ctx)
        self.service.tls = context_for(ctx.settings, "remoting")  # type: ignore[attr-defined]
        self.service.conn_limit = get_limiter(ctx)  # type: ignore[attr-defined]  # server.max_connections
        self.ports = {"nameserver": actual_ns, "broker": actual_broker,
                      "vip": vip_l.socket.getsockname()[1] if vip_l else 0}
        ctx.services["remoting"] = self
        log.info("remoting: nameserver port %d, broker port %d, vip port %s; routes point at %s",
                 actual_ns, actual_broker, self.ports["vip"] or "-", advertised.addr)
        try:
            async with trio.open_nursery() as nursery:
                for lst in listeners:
                    nursery.start_soon(_accept_loop, lst, self.service, nursery)
                started = {"remoting": (host, actual_ns)}
                if actual_broker != actual_ns:
                    started["broker"] = (host, actual_broker)  # READY ... broker=HOST:PORT
                task_status.started(started)
        finally:
            for lst in listeners:
                with trio.CancelScope(shield=True):
                    await lst.aclose()
