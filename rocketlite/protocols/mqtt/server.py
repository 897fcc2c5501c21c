"""The MQTT front-end: Trio TCP listener and the WebSocket route, around the sans-IO codec.

One task reads (feeding the decoder, storing publishes, answering), one task writes: every
packet a connection must send is encoded into one output buffer that the writer drains with
one ``send_all`` per wake-up, so fan-out from many publishers coalesces into few syscalls.

Error policy: a packet the codec rejects closes only that connection, after a DISCONNECT with
the reason code (MQTT 5) or a CONNACK with an error code (bad CONNECT). Keep-alive: nothing
received for 1.5 x the keep-alive closes the connection and publishes the will.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import struct
from typing import Any, Awaitable, Callable, Sequence

import trio

from rocketlite.core.errors import BrokerError
from rocketlite.frontends import FrontEndContext
from rocketlite.metrics import METRICS
from rocketlite.protocols import rawsock
from rocketlite.protocols.mqtt import codec as C
from rocketlite.protocols.mqtt.manager import MqttManager, MqttSettings
from rocketlite.protocols.mqtt.mapping import rocketmq_topic
from rocketlite.protocols.mqtt.session import Session, SessionError
from rocketlite.security.acl import get_acl
from rocketlite.security.limits import get_limiter, limited
from rocketlite.security.tls import context_for, tls_or_plain

log = logging.getLogger("rocketlite.mqtt")

_PUBACK = b"\x40\x02"  # PUBACK / PUBREC with reason 0, no properties (3.1.1 and 5.0)
_PUBREC = b"\x50\x02"
_U16 = struct.Struct(">H").pack
MAX_OUT_BUFFER = 16 * 1024 * 1024  # beyond this, QoS 0 deliveries to a slow client are dropped
READ_SIZE = 65536
YIELD_EVERY = 16  # reads without a Trio checkpoint while a client keeps its socket full


class MqttConnection:
    """One network connection (TCP or WebSocket)."""

    def __init__(self, manager: MqttManager, peer: str, send: Callable[[bytes], Awaitable[None]]) -> None:
        self.manager = manager
        self.peer = peer
        self._send = send
        self.decoder = C.Decoder(manager.settings.max_packet_size)
        self.client_id = ""
        self.version = 4
        self.session: Session | None = None
        self.will: C.Will | None = None
        self.replaying = False
        self.replay_ends: dict[tuple[str, int], int] = {}
        self.held: list[Any] = []
        self.connected = False
        self.graceful = False
        self._out = bytearray()
        self._wake = trio.Event()
        self._closing = False
        self._cancel: trio.CancelScope | None = None
        self._writer_done = trio.Event()
        self._receive_nowait: Callable[[], bytes | None] | None = None
        # plain TCP: the socket's non-blocking send, so output goes out at once instead of at
        # the writer task's next turn (the writer then only finishes what the socket refused)
        self.direct_send: Callable[[bytes], int] | None = None
        self._sending = False  # the writer task is in the middle of a send
        self.inbound_inflight = 0

    # -- output ----------------------------------------------------------------------------------
    def send_packet(self, pkt: Any) -> None:
        self.send_packets((pkt,))

    def send_packets(self, pkts: Sequence[Any]) -> None:
        """Encode and send packets (a QoS 0 PUBLISH is dropped while the output buffer is over
        MAX_OUT_BUFFER): one buffer append, and metrics per run of one topic."""
        if self._closing or not pkts:
            return
        v = self.version
        enc = C.encode_publish
        parts: list[bytes] = []
        label_topic = None
        n = nbytes = sent = 0
        stats = self.manager.stats
        for pkt in pkts:
            if pkt.type != C.PUBLISH:
                if pkt.__class__ is C.Ack and not pkt.reason and not pkt.properties:
                    parts.append(C.encode_ack(pkt.kind, pkt.packet_id))
                else:
                    parts.append(C.encode(pkt, v))
                continue
            if pkt.qos == 0 and len(self._out) > MAX_OUT_BUFFER:
                stats["dropped"] += 1
                continue
            if pkt.topic != label_topic:
                if n:
                    METRICS.messages_out("mqtt", rocketmq_topic(label_topic), n, nbytes)  # type: ignore[arg-type]
                label_topic = pkt.topic
                n = nbytes = 0
            n += 1
            sent += 1
            nbytes += len(pkt.payload)
            parts.append(enc(pkt, v))
        if n:
            METRICS.messages_out("mqtt", rocketmq_topic(label_topic), n, nbytes)  # type: ignore[arg-type]
        stats["sent"] += sent
        self._out += b"".join(parts)
        self._push()

    def send_encoded(self, items: list[Any]) -> None:
        """Fan-out's packets for this connection: encoded QoS 0 PUBLISH bytes or PUBLISH packets.
        The manager counted them (metrics, $SYS) and applied the QoS 0 drop rule (``congested``)."""
        if self._closing:
            return
        v = self.version
        enc = C.encode_publish
        self._out += b"".join([x if x.__class__ is bytes else enc(x, v) for x in items])
        self._push()

    def _push(self) -> None:
        """Send what is buffered now when the socket takes it, else leave it to the writer task."""
        send = self.direct_send
        if send is None or self._sending or self._closing:
            self._wake.set()
            return
        out = self._out
        try:
            n = send(out)
        except BlockingIOError:
            n = 0
        except OSError as exc:  # the peer went away: the writer reports it and stops the reader
            log.debug("mqtt %s write failed: %r", self.peer, exc)
            self._wake.set()
            return
        if n == len(out):
            out.clear()
        else:
            del out[:n]
            self._wake.set()

    def congested(self) -> bool:
        return len(self._out) > MAX_OUT_BUFFER

    def kick(self, reason: int) -> None:
        """Close from the server side (take-over, admin reset)."""
        if self.version == 5 and self.connected:
            self.send_packet(C.Disconnect(reason))
        self._closing = True
        self.graceful = True  # a kicked client's will is handled by whoever kicked it
        if self._cancel is not None:
            self._cancel.cancel()

    async def _writer(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                while self._out:
                    data = bytes(self._out)
                    self._out.clear()
                    self._sending = True
                    try:
                        await self._send(data)
                    finally:
                        self._sending = False
                if self._closing:
                    return
        except Exception as exc:  # noqa: BLE001 - the peer went away: stop reading too
            log.debug("mqtt %s write failed: %r", self.peer, exc)
            self._closing = True
            if self._cancel is not None:
                self._cancel.cancel()
        finally:
            self._writer_done.set()

    # -- input -----------------------------------------------------------------------------------
    async def run(self, receive: Callable[[], Awaitable[bytes]],
                  receive_nowait: Callable[[], bytes | None] | None = None) -> None:
        """Serve the connection until it ends. ``receive_nowait`` (plain TCP) returns what is
        waiting on the socket without a trip through the scheduler, or None when nothing is."""
        self._receive_nowait = receive_nowait
        st = self.manager.settings
        linger = False
        METRICS.connection_opened("mqtt")
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer)
                with trio.CancelScope() as cancel:
                    self._cancel = cancel
                    try:
                        await self._read_loop(receive, st.connect_timeout)
                    except C.MqttError as exc:
                        log.debug("mqtt %s %s: %s", self.peer, self.client_id, exc)
                        if self.connected:
                            if self.version == 5:
                                self.send_packet(C.Disconnect(exc.reason, {C.P_REASON_STRING: exc.message[:200]}))
                                linger = True
                        elif exc.reason in (C.RC_UNSUPPORTED_VERSION,):
                            self.version = 4
                            self._out += C.encode(C.Connack(False, exc.reason), 4)
                    except SessionError as exc:
                        if self.connected and self.version == 5:
                            self.send_packet(C.Disconnect(exc.reason, {C.P_REASON_STRING: str(exc)[:200]}))
                            linger = True
                    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
                        pass
                # let the writer drain what is queued (a DISCONNECT with a reason code), briefly
                self._closing = True
                self._wake.set()
                with trio.move_on_after(1):
                    await self._writer_done.wait()
                    if linger:
                        # Keep reading (and dropping) briefly so the client reads our DISCONNECT:
                        # closing with unread input would reset the connection and lose it.
                        while await receive():
                            pass
                nursery.cancel_scope.cancel()
        finally:
            METRICS.connection_closed("mqtt")
            with trio.CancelScope(shield=True):
                try:
                    await self.manager.connection_lost(self, graceful=self.graceful)
                except Exception:  # noqa: BLE001
                    log.exception("mqtt connection cleanup failed for %s", self.client_id)

    async def _read_loop(self, receive: Callable[[], Awaitable[bytes]], connect_timeout: float) -> None:
        timeout = connect_timeout
        nowait = self._receive_nowait
        reads = 0
        while True:
            data = None
            if nowait is not None:
                reads += 1
                if reads >= YIELD_EVERY:  # a client that keeps the socket full must not starve others
                    reads = 0
                    await trio.lowlevel.checkpoint()
                data = nowait()
            if data is None:
                reads = 0
                with trio.move_on_after(timeout) as cs:
                    data = await receive()
                if cs.cancelled_caught:
                    if self.connected:
                        raise C.MqttError(C.RC_KEEP_ALIVE_TIMEOUT, "keep-alive timeout")
                    return
            if not data:
                return
            pkts = self.decoder.feed(data)
            if not pkts:
                continue
            if not self.connected:
                first = pkts[0]
                if not isinstance(first, C.Connect):
                    raise C.protocol_error("first packet must be CONNECT")
                ok = await self._on_connect(first)
                if not ok:
                    return
                s = self.session
                assert s is not None
                timeout = s.keep_alive * 1.5 if s.keep_alive else math.inf
                pkts = pkts[1:]
            await self._process(pkts)
            if self.graceful or self._closing:
                return

    async def _on_connect(self, pkt: C.Connect) -> bool:
        self.version = pkt.version
        connack, session = await self.manager.connect(self, pkt)
        if session is None:
            self._out += C.encode(connack, self.version)
            self._wake.set()
            return False
        self.connected = True
        self.send_packet(connack)
        await self.manager.after_connack(self)
        return True

    async def _process(self, pkts: list[Any]) -> None:
        batch: list[C.Publish] = []
        q2: set[int] = set()  # packet ids of the QoS 2 publishes in batch
        refill = False  # acknowledgements freed room in the outgoing window
        s = self.session
        assert s is not None
        v5 = self.version == 5
        acl = getattr(self.manager, "acl", None)
        Publish, Ack, PUBACK, PUBCOMP = C.Publish, C.Ack, C.PUBACK, C.PUBCOMP
        for p in pkts:
            cls = p.__class__
            if cls is Publish:
                if v5:
                    s.resolve_alias(p)
                    if C.P_SUBSCRIPTION_ID in p.properties:
                        raise C.protocol_error("subscription identifier in PUBLISH")
                qos = p.qos
                if qos == 2:
                    if s.incoming_qos2_seen(p.packet_id) or p.packet_id in q2:
                        if batch:
                            await self._store(batch)
                            batch = []
                            q2 = set()
                        self.send_packet(C.Ack(C.PUBREC, p.packet_id))
                        continue
                    if v5 and len(s.incoming_qos2) + len(q2) >= self.manager.settings.receive_maximum:
                        raise C.MqttError(C.RC_RECEIVE_MAX_EXCEEDED,
                                          "more unacknowledged QoS 2 publishes than Receive Maximum")
                if p.topic.startswith("$SYS"):
                    if qos == 1:
                        self.send_packet(C.Ack(C.PUBACK, p.packet_id))
                    elif qos == 2:
                        s.incoming_qos2_stored(p.packet_id)
                        self.send_packet(C.Ack(C.PUBREC, p.packet_id))
                    continue
                if acl is not None and not acl.mqtt_may(getattr(self, "mqtt_user", None), p.topic, "PUB"):
                    # [security] topic ACL: MQTT 5 gets "not authorized"; 3.1.1 has no negative ack (dropped)
                    rc = C.RC_NOT_AUTHORIZED if v5 else 0
                    if qos == 1:
                        self.send_packet(C.Ack(C.PUBACK, p.packet_id, rc))
                    elif qos == 2:
                        if not rc:
                            s.incoming_qos2_stored(p.packet_id)
                        self.send_packet(C.Ack(C.PUBREC, p.packet_id, rc))
                    continue
                batch.append(p)
                if qos == 2:
                    q2.add(p.packet_id)
                continue
            if batch:
                await self._store(batch)
                batch = []
                q2 = set()
            # the acknowledgements of outgoing QoS 1/2 (the common packets after PUBLISH) inline;
            # the window is refilled once per run of them
            if cls is Ack:
                kind = p.kind
                if kind == PUBACK:
                    if s.on_puback(p.packet_id) and s.queue:
                        refill = True
                    continue
                if kind == PUBCOMP:
                    if s.on_pubcomp(p.packet_id) and s.queue:
                        refill = True
                    continue
            if refill:
                refill = False
                self.send_packets(s.pump(self.manager.now()))
            await self._other(p, s)
            if self.graceful or self._closing:
                return
        if refill:
            self.send_packets(s.pump(self.manager.now()))
        if batch:
            await self._store(batch)

    async def _store(self, batch: list[C.Publish]) -> None:
        s = self.session
        assert s is not None
        # Let other connections whose packets arrived in the same wake-up (a SUBSCRIBE sent just
        # before this PUBLISH on another socket) go first, as a single-threaded broker would.
        await trio.lowlevel.checkpoint()
        acked = False

        def ack_now() -> None:
            nonlocal acked
            acked = True
            self._ack(batch)

        # Acknowledged as soon as stored, before the fan-out to subscribers (the publisher's next
        # window starts meanwhile); a batch that sets retained messages is acknowledged after
        # the retained table is written too.
        early = not any(p.retain for p in batch)
        try:
            await self.manager.publish(batch, self.client_id, self.peer, ack_now if early else None)
            failed = 0
        except BrokerError as exc:
            log.warning("mqtt publish from %s refused: %s", self.client_id, exc)
            if acked:
                return
            if self.version != 5:
                raise C.MqttError(C.RC_IMPLEMENTATION_SPECIFIC, str(exc)) from exc
            failed = C.RC_IMPLEMENTATION_SPECIFIC
        if failed:
            for p in batch:
                if p.qos == 1:
                    self.send_packet(C.Ack(C.PUBACK, p.packet_id, failed))
                elif p.qos == 2:
                    self.send_packet(C.Ack(C.PUBREC, p.packet_id, failed))
            return
        if not acked:
            self._ack(batch)

    def _ack(self, batch: list[C.Publish]) -> None:
        """Every acknowledgement of a stored batch, in one buffer append."""
        s = self.session
        assert s is not None
        acks = []
        for p in batch:
            q = p.qos
            if q == 1:
                acks.append(_PUBACK + _U16(p.packet_id))
            elif q == 2:
                s.incoming_qos2_stored(p.packet_id)
                acks.append(_PUBREC + _U16(p.packet_id))
        if acks and not self._closing:
            self._out += b"".join(acks)
            self._push()

    async def _other(self, p: Any, s: Session) -> None:
        t = p.type
        s.touch(0)
        if t == C.PUBACK:
            if s.on_puback(p.packet_id):
                self.send_packets(s.pump(self.manager.now() if s.queue else 0))
        elif t == C.PUBREC:
            rel = s.on_pubrec(p.packet_id, p.reason)
            if rel is not None:
                self.send_packet(rel)
            else:
                self.send_packets(s.pump(self.manager.now()))
        elif t == C.PUBCOMP:
            if s.on_pubcomp(p.packet_id):
                self.send_packets(s.pump(self.manager.now() if s.queue else 0))
        elif t == C.PUBREL:
            self.send_packet(s.on_pubrel(p.packet_id))
        elif t == C.SUBSCRIBE:
            suback, retained = await self.manager.subscribe(self, p)
            self.send_packet(suback)
            self.send_packets(retained)
        elif t == C.UNSUBSCRIBE:
            self.send_packet(await self.manager.unsubscribe(self, p))
        elif t == C.PINGREQ:
            self.send_packet(C.PingResp())
        elif t == C.DISCONNECT:
            if self.version == 5:
                exp = p.properties.get(C.P_SESSION_EXPIRY)
                if exp is not None:
                    if s.expiry_interval == 0 and exp != 0:
                        raise C.protocol_error("session expiry set on DISCONNECT after 0 on CONNECT")
                    self.manager.set_session_expiry(s, exp)
                if p.reason == C.RC_DISCONNECT_WITH_WILL:
                    self._closing = True
                    return
            self.will = None
            self.graceful = True
        elif t == C.CONNECT:
            raise C.protocol_error("second CONNECT")
        elif t == C.AUTH:
            raise C.MqttError(C.RC_BAD_AUTH_METHOD, "enhanced authentication is not supported")
        else:
            raise C.protocol_error(f"unexpected {C.PACKET_NAMES.get(t, t)} from a client")


class MqttFrontEnd:
    name = "mqtt"

    async def serve(self, ctx: FrontEndContext, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        sec = ctx.settings.section("mqtt")
        settings = MqttSettings.from_section(sec)
        manager = MqttManager(ctx.broker, settings)
        manager.acl = get_acl(ctx)  # [security]
        await manager.start()
        ctx.services["mqtt"] = manager
        # rocketlite.testing's reset() runs these after broker.reset(): forget sessions, retained
        ctx.services.setdefault("reset_hooks", []).append(manager.reset)
        path = str(sec.get("websocket_path", "/mqtt") or "/mqtt")
        ctx.http_routes[path] = websocket_handler(manager)
        host = ctx.settings.host
        port = int(sec.get("port", 1883))
        listeners = await trio.open_tcp_listeners(port, host=host or None)
        bound = listeners[0].socket.getsockname()[1]
        manager.tls = context_for(ctx.settings, "mqtt")  # type: ignore[attr-defined]
        tls_port = int(sec.get("tls_port", 0) or 0)
        if manager.tls is not None and tls_port:  # the conventional MQTT-over-TLS port (8883), too
            listeners += await trio.open_tcp_listeners(tls_port, host=host or None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._housekeeping, manager)
            task_status.started((host, bound))
            await trio.serve_listeners(limited(lambda stream: handle_tcp(manager, stream), get_limiter(ctx)), listeners)

    async def _housekeeping(self, manager: MqttManager) -> None:
        """Sleep until the next due will, session expiry or $SYS publish (or until the manager
        schedules a new one), then run a tick. No polling: under a MockClock an hour of idle
        broker time costs a handful of wake-ups."""
        last_sys = -math.inf
        wake = trio.Event()

        def rearm() -> None:
            wake.set()

        manager.on_schedule = rearm
        while True:
            waits = []
            due = manager.next_deadline_ms()
            if due is not None:
                waits.append(max(0.0, (due - manager.now()) / 1000.0))
            if manager.settings.sys_interval:
                waits.append(max(0.0, last_sys + manager.settings.sys_interval - trio.current_time()))
            with trio.move_on_after(min(waits) if waits else math.inf):
                await wake.wait()
            if wake.is_set():
                wake = trio.Event()
            try:
                await manager.housekeeping_tick()
                if manager.settings.sys_interval and trio.current_time() - last_sys >= manager.settings.sys_interval:
                    last_sys = trio.current_time()
                    manager.publish_sys()
            except Exception:  # noqa: BLE001
                log.exception("mqtt housekeeping")


async def handle_tcp(manager: MqttManager, stream: trio.SocketStream) -> None:
    try:
        stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    tls = getattr(manager, "tls", None)
    if tls is not None:  # [mqtt] tls: TLS sniffed per connection (rocketlite/security/tls.py)
        served = await tls_or_plain(stream, tls)
        if served is None:
            await stream.aclose()
            return
        stream = served  # type: ignore[assignment]
    try:
        peer = "%s:%s" % stream.socket.getpeername()[:2]
    except OSError:
        peer = ""

    raw: socket.socket | None = None
    if type(stream) is trio.SocketStream:
        # Plain TCP: read and write a duplicate of the socket directly and wait in Trio only when
        # it would block. Trio's stream calls pass through the scheduler on every call even when
        # the bytes are there; per read and write that cost more than a small batch of packets.
        try:
            raw = socket.socket(fileno=os.dup(stream.socket.fileno()))
        except OSError:
            raw = None

    def receive_nowait() -> bytes | None:
        assert raw is not None
        try:
            return raw.recv(READ_SIZE)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    async def receive() -> bytes:
        try:
            if raw is not None:
                while True:
                    data = receive_nowait()
                    if data is not None:
                        return data
                    await trio.lowlevel.wait_readable(raw)
            return await stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return b""

    async def send_raw(data: bytes) -> None:
        assert raw is not None
        await rawsock.send_all(raw, data)

    conn = MqttConnection(manager, peer, stream.send_all if raw is None else send_raw)
    if raw is not None:
        conn.direct_send = raw.send
    try:
        await conn.run(receive, None if raw is None else receive_nowait)
    except Exception:  # noqa: BLE001 - one connection's failure never takes the listener down
        log.exception("mqtt connection %s failed", peer)
    finally:
        if raw is not None:
            raw.close()
        with trio.CancelScope(shield=True):
            with trio.move_on_after(1):
                await stream.aclose()


def websocket_handler(manager: MqttManager) -> Callable[..., Awaitable[None]]:
    """The ASGI websocket app for MQTT over WebSocket (subprotocol ``mqtt``)."""

    async def app(scope: dict[str, Any], receive: Callable[..., Awaitable[Any]], send: Callable[..., Awaitable[Any]]) -> None:
        msg = await receive()
        if msg.get("type") != "websocket.connect":
            return
        offered = [p.strip() for p in scope.get("subprotocols") or []]
        chosen = next((p for p in ("mqtt", "mqttv3.1", "mqttv3.1.1") if p in offered), None)
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if chosen:
            accept["subprotocol"] = chosen
        await send(accept)
        client = scope.get("client") or ("", 0)
        peer = f"{client[0]}:{client[1]}" if client else ""
        closed = False

        async def ws_receive() -> bytes:
            nonlocal closed
            while True:
                m = await receive()
                kind = m.get("type")
                if kind == "websocket.receive":
                    data = m.get("bytes")
                    if data is None:
                        text = m.get("text")
                        data = text.encode() if text else b""
                    if data:
                        return bytes(data)
                    continue
                closed = True
                return b""

        async def ws_send(data: bytes) -> None:
            if closed:
                raise trio.BrokenResourceError("websocket closed")
            await send({"type": "websocket.send", "bytes": data})

        conn = MqttConnection(manager, peer, ws_send)
        try:
            await conn.run(ws_receive)
        except Exception:  # noqa: BLE001
            log.exception("mqtt websocket connection %s failed", peer)
        if not closed:
            try:
                await send({"type": "websocket.close", "code": 1000})
            except Exception:  # noqa: BLE001
                pass

    return app
