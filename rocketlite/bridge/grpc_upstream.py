"""A RocketMQ 5 gRPC proxy as a bridge upstream, both directions.

A minimal gRPC client over one HTTP/2 connection driven by the sans-IO ``h2`` library on a Trio
stream (TLS with ALPN ``h2`` when ``tls = true``), messages from rocketlite's generated
``messaging_pb2``. ACL: the ``authorization`` header the official clients send
(``MQv2-HMAC-SHA1``, HMAC over ``x-mq-date-time``).

* Forward (role ``producer``): unary ``QueryRoute`` + ``SendMessage``; same interface as
  :class:`rocketlite.bridge.upstream.Upstream` for what the forwarder needs (route, send).
* Reverse (role ``consumer``, its own connection and client id): a SimpleConsumer of the
  bridge's consumer group, as the Apache proxy expects one: the ``Telemetry`` stream carries the
  client's settings first (the proxy answers ``ReceiveMessage`` and ``Heartbeat`` only for client
  ids whose settings it holds), ``Heartbeat`` every 10 s, then long-polled ``ReceiveMessage``
  (server streaming: status, messages, delivery timestamp) with an explicit invisible duration, and
  ``AckMessage`` with the receipt handles once the caller has stored the messages.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import socket
import ssl
import struct
import sys
import time
import urllib.parse
import zlib
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import trio
from google.protobuf.message import DecodeError

from rocketlite.bridge.config import BridgeConfig, incoming_message
from rocketlite.bridge.upstream import (
    QueueRef,
    Route,
    UpstreamRejected,
    UpstreamUnavailable,
    client_ssl_context,
)
from rocketlite.core.message import (
    PROP_KEYS,
    PROP_MESSAGE_GROUP,
    PROP_TAGS,
    PROP_UNIQ_KEY,
    SYSFLAG_COMPRESSED,
    Message,
)
from rocketlite.metrics import METRICS
from rocketlite.protocols.grpc import messaging_pb2 as pb
from rocketlite.security.acl import grpc_signature

log = logging.getLogger("rocketlite.bridge")

SERVICE = "/apache.rocketmq.v2.MessagingService/"
MAX_RESPONSE = 16 * 1024 * 1024
CLIENT_VERSION = "5.0.0"
MAX_STREAM_RESPONSE = 160 * 1024 * 1024  # a ReceiveMessage reply: up to 32 messages of the proxy's 4 MiB
MIN_POLL_MS = 5000         # the proxy long-polls at least this long (and wants that much deadline left)
HEARTBEAT_S = 10.0         # as the official clients
SETTINGS_RESEND_S = 300.0  # settings re-sent on the Telemetry stream (Python client: every 5 min)
_SYSTEM_PROP = re.compile(r"^([A-Z0-9_]+|__.*)$")  # RocketMQ's own property names: not user properties
# Codes meaning "this message will never be accepted as it is".
_REJECTED = {pb.BAD_REQUEST, pb.ILLEGAL_MESSAGE_TAG, pb.ILLEGAL_MESSAGE_KEY, pb.ILLEGAL_MESSAGE_GROUP,
             pb.ILLEGAL_MESSAGE_PROPERTY_KEY, pb.ILLEGAL_MESSAGE_ID, pb.ILLEGAL_DELIVERY_TIME,
             pb.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, pb.MESSAGE_CORRUPTED, pb.PAYLOAD_TOO_LARGE,
             pb.MESSAGE_BODY_TOO_LARGE, pb.MESSAGE_BODY_EMPTY, pb.MESSAGE_PROPERTIES_TOO_LARGE}


# What a lost or broken connection (or an undecodable reply) raises: drop it, back off, retry.
_TRANSPORT_ERRORS = (OSError, ConnectionError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError,
                     ssl.SSLError, h2.exceptions.H2Error, DecodeError)


class _Call:
    __slots__ = ("changed", "data", "done", "headers", "limit", "reset", "trailers")

    def __init__(self, limit: int = MAX_RESPONSE) -> None:
        self.headers: dict[str, str] = {}
        self.trailers: dict[str, str] = {}
        self.data = bytearray()
        self.done = trio.Event()
        self.reset = False
        self.changed = trio.Event()  # set on every event of the stream (data, end, reset)
        self.limit = limit

    def finish(self, reset: bool = False) -> None:
        if reset:
            self.reset = True
        self.done.set()
        self.changed.set()

    def take(self) -> bytes | None:
        """The next complete length-prefixed message received, if any."""
        if len(self.data) < 5:
            return None
        compressed, n = struct.unpack_from(">BI", self.data)
        if len(self.data) < 5 + n:
            return None
        if compressed:
            raise ConnectionError("compressed gRPC response")
        msg = bytes(self.data[5 : 5 + n])
        del self.data[: 5 + n]
        return msg

    def check_status(self) -> None:
        meta = {**self.headers, **self.trailers}
        status = meta.get("grpc-status", "")
        if status and status != "0":
            raise ConnectionError(f"grpc-status {status}: {urllib.parse.unquote(meta.get('grpc-message', ''))}")
        if self.reset:
            raise ConnectionError("stream reset or connection lost")
        if status != "0":
            raise ConnectionError("no grpc-status")


class _Channel:
    """One HTTP/2 connection; calls multiplexed on it."""

    def __init__(self, stream: trio.abc.Stream, authority: str, scheme: str) -> None:
        self.stream = stream
        self.authority = authority
        self.scheme = scheme
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.calls: dict[int, _Call] = {}
        self.window = trio.Event()
        self.closed = trio.Event()
        self._send_lock = trio.Lock()

    async def start(self) -> None:
        self.conn.initiate_connection()
        await self.flush()

    async def flush(self) -> None:
        async with self._send_lock:
            data = self.conn.data_to_send()
            if data:
                await self.stream.send_all(data)

    async def reader(self) -> None:
        try:
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    break
                for ev in self.conn.receive_data(data):
                    self._event(ev)
                await self.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h2.exceptions.ProtocolError, ssl.SSLError, OSError):
            pass
        finally:
            self.closed.set()
            self.window.set()
            for c in self.calls.values():
                c.finish(reset=True)

    def _event(self, ev: Any) -> None:
        sid = getattr(ev, "stream_id", None)
        call = self.calls.get(sid) if sid else None
        if isinstance(ev, h2.events.ResponseReceived) and call:
            call.headers = dict(ev.headers)
        elif isinstance(ev, h2.events.TrailersReceived) and call:
            call.trailers = dict(ev.headers)
        elif isinstance(ev, h2.events.DataReceived):
            self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if call:
                call.data += ev.data
                if len(call.data) > call.limit:
                    call.finish(reset=True)
                else:
                    call.changed.set()
        elif isinstance(ev, h2.events.StreamEnded) and call:
            call.finish()
        elif isinstance(ev, h2.events.StreamReset) and call:
            call.finish(reset=True)
        elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.window.set()
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.closed.set()
            for c in self.calls.values():
                c.finish(reset=True)

    def _open(self, method: str, metadata: list[tuple[str, str]], timeout: float | None, limit: int) -> tuple[int, _Call]:
        if self.closed.is_set():
            raise ConnectionError("connection closed")
        sid = self.conn.get_next_available_stream_id()
        call = self.calls[sid] = _Call(limit)
        headers = [(":method", "POST"), (":scheme", self.scheme), (":path", SERVICE + method),
                   (":authority", self.authority), ("content-type", "application/grpc"), ("te", "trailers")]
        if timeout is not None:
            headers.append(("grpc-timeout", grpc_timeout(timeout)))
        self.conn.send_headers(sid, headers + metadata)
        return sid, call

    async def _send_message(self, sid: int, payload: bytes, end_stream: bool) -> None:
        """One length-prefixed message on stream ``sid``, waiting for flow-control credit."""
        view = memoryview(struct.pack(">BI", 0, len(payload)) + payload)
        while True:
            room = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if room <= 0 and len(view):
                self.window = trio.Event()
                await self.flush()
                await self.window.wait()
                if self.closed.is_set():
                    raise ConnectionError("connection closed")
                continue
            chunk, view = view[:room], view[room:]
            self.conn.send_data(sid, bytes(chunk), end_stream=end_stream and not len(view))
            if not len(view):
                break
        await self.flush()

    def _reset(self, sid: int) -> bool:
        """Forget a call; tell the server when it is still open (a timeout or a cancellation)."""
        call = self.calls.pop(sid, None)
        if call is not None and not call.done.is_set() and not self.closed.is_set():
            try:
                self.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                return True
            except h2.exceptions.H2Error:
                pass
        return False

    async def _flush_shielded(self) -> None:
        with trio.CancelScope(shield=True):
            with trio.move_on_after(1):
                try:
                    await self.flush()
                except Exception:
                    pass

    async def call(self, method: str, payload: bytes, metadata: list[tuple[str, str]], timeout: float,
                   limit: int = MAX_RESPONSE) -> list[bytes]:
        """A unary or server-streaming call: every response message, after an OK grpc-status."""
        sid, call = self._open(method, metadata, timeout, limit)
        try:
            with trio.fail_after(timeout):
                await self._send_message(sid, payload, True)
                await call.done.wait()
        finally:
            if self._reset(sid):
                await self._flush_shielded()
        call.check_status()
        out = []
        while (msg := call.take()) is not None:
            out.append(msg)
        return out

    async def unary(self, method: str, payload: bytes, metadata: list[tuple[str, str]], timeout: float) -> bytes:
        msgs = await self.call(method, payload, metadata, timeout)
        if not msgs:
            raise ConnectionError("empty gRPC response")
        return msgs[0]

    async def open_stream(self, method: str, metadata: list[tuple[str, str]]) -> _BidiStream:
        sid, call = self._open(method, metadata, None, MAX_RESPONSE)
        await self.flush()
        return _BidiStream(self, sid, call)


def grpc_timeout(seconds: float) -> str:
    """A ``grpc-timeout`` header value: at most 8 digits, in the finest unit that fits."""
    for unit, scale in (("m", 1000), ("S", 1), ("M", 1 / 60), ("H", 1 / 3600)):
        n = max(1, int(seconds * scale))
        if n < 100_000_000:
            return f"{n}{unit}"
    return "99999999H"


class _BidiStream:
    """A bidirectional streaming call (``Telemetry``) on a :class:`_Channel`."""

    def __init__(self, ch: _Channel, sid: int, call: _Call) -> None:
        self.ch = ch
        self.sid = sid
        self.call = call

    async def send(self, payload: bytes) -> None:
        if self.call.done.is_set() or self.ch.closed.is_set():
            raise ConnectionError("stream closed")
        await self.ch._send_message(self.sid, payload, False)

    async def recv(self) -> bytes | None:
        """The next message from the server; None when the server ended the stream."""
        while True:
            msg = self.call.take()
            if msg is not None:
                return msg
            if self.call.done.is_set():
                if self.call.reset or {**self.call.headers, **self.call.trailers}.get("grpc-status", "0") != "0":
                    self.call.check_status()
                return None
            self.call.changed = trio.Event()
            await self.call.changed.wait()

    async def aclose(self) -> None:
        """Cancel the stream (the server drops what it kept for it) and forget it."""
        if self.ch._reset(self.sid):
            await self.ch._flush_shielded()


class GrpcUpstream:
    """A RocketMQ 5 proxy (or rocketlite's gRPC port) reached at ``cfg.namesrv`` endpoints."""

    def __init__(self, cfg: BridgeConfig, nursery: trio.Nursery, *, role: str = "producer") -> None:
        self.cfg = cfg
        self.nursery = nursery
        self.role = role
        self._channel: _Channel | None = None
        self._lock = trio.Lock()
        self._routes: dict[str, Route] = {}
        self._index = 0
        self.up = False
        self.last_error = ""
        self._logged: dict[str, float] = {}
        self._stopping = False
        # the proxy keeps one Settings per client id: the consumer needs its own
        self.client_id = f"{socket.gethostname()}@{os.getpid()}@rocketlite-bridge-{cfg.name}"
        if role != "producer":
            self.client_id += f"@{role}"
        # consumer session: set while the upstream holds our settings (Telemetry answered on this connection)
        self._ready = trio.Event()
        self.fifo = False               # the upstream group delivers in order (settings reply)
        self.settings_reply: pb.Settings | None = None
        self._ssl = client_ssl_context(cfg, alpn=["h2"])
        self._ids = itertools.count()

    @property
    def endpoint(self) -> str:
        return self.cfg.namesrv[self._index % len(self.cfg.namesrv)]

    async def _connect(self) -> _Channel:
        ch = self._channel
        if ch is not None and not ch.closed.is_set():
            return ch
        async with self._lock:
            ch = self._channel
            if ch is not None and not ch.closed.is_set():
                return ch
            host, _, port = self.endpoint.rpartition(":")
            with trio.fail_after(self.cfg.connect_timeout_ms / 1000):
                stream: trio.abc.Stream = await trio.open_tcp_stream(host, int(port))
                if self._ssl is not None:
                    tls = trio.SSLStream(stream, self._ssl, server_hostname=host, https_compatible=True)
                    await tls.do_handshake()
                    stream = tls
                ch = _Channel(stream, self.endpoint, "https" if self._ssl else "http")
                await ch.start()
            self._channel = ch
            self.nursery.start_soon(self._read, ch)
            return ch

    async def _read(self, ch: _Channel) -> None:
        try:
            await ch.reader()
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await ch.stream.aclose()
                except Exception:
                    pass

    async def aclose(self) -> None:
        self._unready()  # a new connection needs a new consumer session (settings) first
        ch, self._channel = self._channel, None
        if ch is not None:
            ch.closed.set()
            with trio.CancelScope(shield=True):
                try:
                    await ch.stream.aclose()
                except Exception:
                    pass

    def _metadata(self) -> list[tuple[str, str]]:
        md = [("x-mq-client-id", self.client_id), ("x-mq-language", "PYTHON"), ("x-mq-protocol", "v2"),
              ("x-mq-client-version", CLIENT_VERSION), ("x-mq-request-id", f"{self.client_id}-{next(self._ids)}")]
        if self.cfg.access_key:
            dt = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            sig = grpc_signature(dt, self.cfg.secret_key)
            md += [("x-mq-date-time", dt),
                   ("authorization", f"MQv2-HMAC-SHA1 Credential={self.cfg.access_key}, "
                                     f"SignedHeaders=x-mq-date-time, Signature={sig}")]
        return md

    def _failed(self, why: str) -> None:
        now = time.monotonic()
        if self._stopping:
            pass  # what breaks while the bridge shuts down is no news
        elif self.up or now - self._logged.get(why, -1e9) > 60:  # each distinct failure once a minute
            log.warning("bridge %s: upstream unavailable: %s", self.cfg.name, why)
            if len(self._logged) > 100:
                self._logged.clear()
            self._logged[why] = now
        self.up = False
        self.last_error = why

    async def _call(self, method: str, req: Any, resp_cls: Any, *, timeout_ms: int | None = None,
                    stream: bool = False) -> Any:
        """A unary call (the response) or a server-streaming one (every response, in order).
        A transport failure drops the connection and moves on to the next endpoint."""
        timeout = (timeout_ms or self.cfg.request_timeout_ms) / 1000
        try:
            ch = await self._connect()
            if stream:
                raws = await ch.call(method, req.SerializeToString(), self._metadata(), timeout, limit=MAX_STREAM_RESPONSE)
                return [resp_cls.FromString(r) for r in raws]
            raw = await ch.unary(method, req.SerializeToString(), self._metadata(), timeout)
            return resp_cls.FromString(raw)
        except _TRANSPORT_ERRORS as exc:
            await self.aclose()
            self._index += 1  # next endpoint next time
            self._failed(f"{self.endpoint}: {type(exc).__name__}: {exc}")
            raise UpstreamUnavailable(self.last_error) from exc

    def _endpoints(self) -> pb.Endpoints:
        host, _, port = self.endpoint.rpartition(":")
        scheme = pb.IPv4 if re.fullmatch(r"[0-9.]+", host) else pb.IPv6 if ":" in host else pb.DOMAIN_NAME
        return pb.Endpoints(scheme=scheme, addresses=[pb.Address(host=host, port=int(port))])

    async def route(self, topic: str, *, refresh: bool = False) -> Route:
        r = self._routes.get(topic)
        now = trio.current_time()
        if r is not None and not refresh and now - r.fetched_at < self.cfg.route_refresh_ms / 1000:
            return r
        req = pb.QueryRouteRequest(topic=pb.Resource(name=topic), endpoints=self._endpoints())
        resp = await self._call("QueryRoute", req, pb.QueryRouteResponse)
        if resp.status.code != pb.OK:
            self._failed(f"no route for {topic}: {pb.Code.Name(resp.status.code)} {resp.status.message}")
            raise UpstreamUnavailable(self.last_error)
        write, read = [], []
        for mq in sorted(resp.message_queues, key=lambda m: (m.broker.name, m.id)):
            ref = QueueRef(mq.broker.name, self.endpoint, mq.id)
            if mq.permission in (pb.WRITE, pb.READ_WRITE):
                write.append(ref)
            if mq.permission in (pb.READ, pb.READ_WRITE):
                read.append(ref)
        r = Route(topic, write, read, False, now)
        self._routes[topic] = r
        return r

    def forget_route(self, topic: str) -> None:
        self._routes.pop(topic, None)

    async def send(self, topic: str, q: QueueRef, items: list[tuple[bytes, dict[str, str], int, int, int]],
                   *, via_default: bool) -> Any:
        req = pb.SendMessageRequest()
        host = socket.gethostname()
        for body, props, _flag, sys_flag, born in items:
            m = req.messages.add()
            m.topic.name = topic
            m.body = body
            sp = m.system_properties
            sp.message_id = props.get("UNIQ_KEY", "")
            if props.get("TAGS"):
                sp.tag = props["TAGS"]
            if props.get("KEYS"):
                sp.keys.extend(k for k in props["KEYS"].split(" ") if k)
            group = props.get("__SHARDINGKEY", "")
            if group:
                sp.message_group = group
            sp.message_type = pb.FIFO if group else pb.NORMAL
            sp.body_encoding = pb.GZIP if sys_flag & 0x1 else pb.IDENTITY
            sp.born_timestamp.FromMilliseconds(born or int(time.time() * 1000))
            sp.born_host = host
            sp.queue_id = q.queue_id
            for k, v in props.items():
                if not _SYSTEM_PROP.match(k):
                    m.user_properties[k] = v
        resp = await self._call("SendMessage", req, pb.SendMessageResponse)
        code = resp.status.code
        if code == pb.OK:
            self.up = True
            return resp
        codes = {e.status.code for e in resp.entries} or {code}
        if codes <= _REJECTED | {pb.OK}:
            self.up = True
            raise UpstreamRejected(f"{pb.Code.Name(code)} {resp.status.message}")
        self.forget_route(topic)
        self._failed(f"send to {topic}: {pb.Code.Name(code)} {resp.status.message}")
        raise UpstreamUnavailable(self.last_error)

    # -- reverse direction: a SimpleConsumer of cfg.consumer_group --------------------------------
    def settings_command(self, topics: list[str]) -> pb.TelemetryCommand:
        """What a SimpleConsumer says first on its Telemetry stream (GRPC.md §4.1)."""
        cmd = pb.TelemetryCommand()
        st = cmd.settings
        st.client_type = pb.SIMPLE_CONSUMER
        st.access_point.CopyFrom(self._endpoints())
        st.request_timeout.FromMilliseconds(self.cfg.request_timeout_ms)
        sub = st.subscription
        sub.group.name = self.cfg.consumer_group
        for t in topics:
            e = sub.subscriptions.add()
            e.topic.name = t
            e.expression.type = pb.TAG
            e.expression.expression = "*"
        sub.long_polling_timeout.FromMilliseconds(self.poll_ms)
        st.user_agent.language = pb.PYTHON
        st.user_agent.version = CLIENT_VERSION
        st.user_agent.platform = sys.platform
        st.user_agent.hostname = socket.gethostname()
        return cmd

    @property
    def poll_ms(self) -> int:
        return max(1, min(self.cfg.pull_suspend_ms, 20_000))

    async def wait_ready(self) -> None:
        """Until the upstream holds this consumer's settings (``Telemetry`` answered)."""
        await self._ready.wait()

    async def consumer_session(self, topics: list[str]) -> None:
        """Keep the consumer registered upstream, forever: open ``Telemetry``, send the settings,
        wait for the upstream's reply, ``Heartbeat`` every 10 s, re-send the settings every 5 min,
        answer the server's commands. A lost connection (or a ``reconnect_endpoints_command``)
        starts over on a new connection, after a back-off; receivers wait meanwhile."""
        from rocketlite.bridge.config import backoff_ms

        attempt = 0
        while True:
            started = trio.current_time()
            try:
                await self._session_once(topics)
                if trio.current_time() - started > HEARTBEAT_S:
                    attempt = 0  # it worked for a while: reconnect at once
                    continue
            except UpstreamUnavailable:
                pass
            METRICS.inc("rocketlite_bridge_retries_total", {"bridge": self.cfg.name})
            await trio.sleep(backoff_ms(attempt, self.cfg.retry_min_ms, self.cfg.retry_max_ms) / 1000)
            attempt += 1

    def _unready(self) -> None:
        if self._ready.is_set():  # never replace an event someone waits on before it fired
            self._ready = trio.Event()

    async def _session_once(self, topics: list[str]) -> None:
        self._unready()
        stream: _BidiStream | None = None
        try:
            try:
                ch = await self._connect()
                stream = await ch.open_stream("Telemetry", self._metadata())
                await stream.send(self.settings_command(topics).SerializeToString())
                with trio.fail_after(self.cfg.request_timeout_ms / 1000):
                    reply = await self._next_settings(stream)
            except _TRANSPORT_ERRORS as exc:
                await self.aclose()
                self._index += 1
                self._failed(f"{self.endpoint}: Telemetry: {type(exc).__name__}: {exc}")
                raise UpstreamUnavailable(self.last_error) from exc
            self._take_settings(reply)
            await self.heartbeat()
            self.up = True
            self._ready.set()
            log.info("bridge %s: subscribed upstream as %s (group %s, fifo=%s)", self.cfg.name, self.client_id,
                     self.cfg.consumer_group, self.fifo)
            asked = False
            async with trio.open_nursery() as n:
                n.start_soon(self._heartbeats, stream, topics, n.cancel_scope)
                asked = await self._telemetry_reader(stream)
                n.cancel_scope.cancel()
            if asked:
                log.info("bridge %s: the upstream asked us to reconnect", self.cfg.name)
            else:
                self._failed(f"{self.endpoint}: Telemetry stream ended")
            await self.aclose()
        finally:
            self._unready()
            if stream is not None:
                await stream.aclose()

    async def _next_settings(self, stream: _BidiStream) -> pb.TelemetryCommand:
        while True:
            raw = await stream.recv()
            if raw is None:
                stream.call.check_status()  # an error status ends the stream: say which
                raise ConnectionError("Telemetry ended before the settings reply")
            cmd = pb.TelemetryCommand.FromString(raw)
            if cmd.WhichOneof("command") == "settings" or cmd.HasField("status") and cmd.status.code != pb.OK:
                return cmd
            await self._answer(stream, cmd)

    def _take_settings(self, cmd: pb.TelemetryCommand) -> None:
        if cmd.HasField("status") and cmd.status.code not in (pb.OK, 0):
            self._failed(f"settings refused: {pb.Code.Name(cmd.status.code)} {cmd.status.message}")
            raise UpstreamUnavailable(self.last_error)
        if cmd.WhichOneof("command") == "settings":
            self.settings_reply = cmd.settings
            self.fifo = bool(cmd.settings.subscription.fifo)

    async def _heartbeats(self, stream: _BidiStream, topics: list[str], scope: trio.CancelScope) -> None:
        last_settings = trio.current_time()
        try:
            while True:
                await trio.sleep(HEARTBEAT_S)
                await self.heartbeat()
                if trio.current_time() - last_settings >= SETTINGS_RESEND_S:
                    await stream.send(self.settings_command(topics).SerializeToString())
                    last_settings = trio.current_time()
        except (UpstreamUnavailable, *_TRANSPORT_ERRORS):
            scope.cancel()  # the session starts over

    async def _telemetry_reader(self, stream: _BidiStream) -> bool:
        """Until the stream ends (False) or the server asks us to reconnect (True)."""
        try:
            while True:
                raw = await stream.recv()
                if raw is None:
                    return False
                cmd = pb.TelemetryCommand.FromString(raw)
                kind = cmd.WhichOneof("command")
                if kind == "settings":
                    self._take_settings(cmd)
                elif kind == "reconnect_endpoints_command":
                    return True
                else:
                    await self._answer(stream, cmd)
        except (UpstreamUnavailable, *_TRANSPORT_ERRORS):
            return False

    async def _answer(self, stream: _BidiStream, cmd: pb.TelemetryCommand) -> None:
        """Commands a proxy may send a consumer (the console's "consumer status", "resend")."""
        kind = cmd.WhichOneof("command")
        out = pb.TelemetryCommand()
        if kind == "print_thread_stack_trace_command":
            out.status.code, out.status.message = pb.OK, "OK"
            out.thread_stack_trace.nonce = cmd.print_thread_stack_trace_command.nonce
            out.thread_stack_trace.thread_stack_trace = f"rocketlite bridge {self.cfg.name}: one Trio thread"
        elif kind == "verify_message_command":
            out.status.code, out.status.message = pb.NOT_IMPLEMENTED, "a bridge does not verify messages"
            out.verify_message_result.nonce = cmd.verify_message_command.nonce
        else:
            return
        await stream.send(out.SerializeToString())

    async def heartbeat(self) -> None:
        req = pb.HeartbeatRequest(client_type=pb.SIMPLE_CONSUMER)
        req.group.name = self.cfg.consumer_group
        resp = await self._call("Heartbeat", req, pb.HeartbeatResponse)
        if resp.status.code != pb.OK:
            self._failed(f"heartbeat: {pb.Code.Name(resp.status.code)} {resp.status.message}")
            raise UpstreamUnavailable(self.last_error)

    async def terminate(self) -> None:
        """Tell the upstream we are gone (``NotifyClientTermination``), best effort."""
        self._stopping = True
        if self._channel is None or self._channel.closed.is_set():
            return
        req = pb.NotifyClientTerminationRequest()
        req.group.name = self.cfg.consumer_group
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            try:
                await self._call("NotifyClientTermination", req, pb.NotifyClientTerminationResponse, timeout_ms=1000)
            except UpstreamUnavailable:
                pass

    async def receive(self, topic: str, q: QueueRef, batch: int, invisible_ms: int) -> list[pb.Message]:
        """One long-polled ``ReceiveMessage`` from broker ``q.broker``: the messages, each now
        invisible to the group for ``invisible_ms`` (a real proxy pops across every queue of
        that broker; the queue id only says which broker)."""
        req = pb.ReceiveMessageRequest(batch_size=max(1, min(batch, 32)), auto_renew=False)
        req.group.name = self.cfg.consumer_group
        mq = req.message_queue
        mq.topic.name = topic
        mq.id = q.queue_id
        mq.permission = pb.READ_WRITE
        mq.broker.name = q.broker
        mq.broker.id = 0
        mq.broker.endpoints.CopyFrom(self._endpoints())
        req.filter_expression.type = pb.TAG
        req.filter_expression.expression = "*"
        req.invisible_duration.FromMilliseconds(invisible_ms)
        req.long_polling_timeout.FromMilliseconds(self.poll_ms)
        # the proxy polls at least 5 s and refuses a deadline shorter than that
        timeout_ms = max(self.poll_ms, MIN_POLL_MS) + self.cfg.request_timeout_ms
        resps = await self._call("ReceiveMessage", req, pb.ReceiveMessageResponse, timeout_ms=timeout_ms, stream=True)
        status: pb.Status | None = None
        msgs: list[pb.Message] = []
        for r in resps:
            kind = r.WhichOneof("content")
            if kind == "status":
                status = r.status
            elif kind == "message":
                msgs.append(r.message)
        code = status.code if status is not None else pb.OK
        if code == pb.OK or msgs:
            self.up = True
            return msgs
        if code == pb.MESSAGE_NOT_FOUND:
            self.up = True
            return []
        why = f"receive {topic}: {pb.Code.Name(code) if code in pb.Code.values() else code} {status.message if status else ''}"
        if code == pb.ILLEGAL_INVISIBLE_TIME:
            why += " (an Apache proxy wants pull_invisible_ms >= 10000)"
        self._failed(why)
        if code >= 50000 or code == pb.UNRECOGNIZED_CLIENT_TYPE:
            await self.aclose()  # start a fresh session: the upstream may have lost our settings
        raise UpstreamUnavailable(self.last_error)

    async def ack(self, topic: str, entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Acknowledge (message id, receipt handle) pairs; returns those to try again. A handle
        the upstream no longer knows (invisible time over, redelivered meanwhile) is dropped:
        the message comes back and the caller recognises it."""
        req = pb.AckMessageRequest()
        req.group.name = self.cfg.consumer_group
        req.topic.name = topic
        for mid, handle in entries:
            req.entries.add(message_id=mid, receipt_handle=handle)
        resp = await self._call("AckMessage", req, pb.AckMessageResponse)
        code = resp.status.code
        if code == pb.OK:
            self.up = True
            return []
        by_handle = {e.receipt_handle: e.status.code for e in resp.entries}
        again = []
        for mid, handle in entries:
            c = by_handle.get(handle, code)
            if c == pb.OK:
                continue
            if 40000 <= c < 50000 and c not in (pb.TOO_MANY_REQUESTS, pb.REQUEST_TIMEOUT):
                log.warning("bridge %s: upstream refused the ack of %s on %s: %s (it will be redelivered)",
                            self.cfg.name, mid, topic, pb.Code.Name(c) if c in pb.Code.values() else c)
                continue
            again.append((mid, handle))
        if again:
            self._failed(f"ack on {topic}: {pb.Code.Name(code) if code in pb.Code.values() else code} {resp.status.message}")
        else:
            self.up = True
        return again


def _digest_ok(digest: pb.Digest, body: bytes) -> bool:
    want = digest.checksum.strip()
    if not want:
        return True
    if digest.type == pb.MD5:
        return hashlib.md5(body).hexdigest().upper() == want.upper()
    if digest.type == pb.SHA1:
        return hashlib.sha1(body).hexdigest().upper() == want.upper()
    if digest.type == pb.CRC32:
        crc = zlib.crc32(body) & 0xFFFFFFFF
        try:  # clients disagree on the rendering (hex, zero-padded hex, decimal)
            return int(want, 16) == crc or (want.isdigit() and int(want) == crc)
        except ValueError:
            return False
    return True


def received_message(bridge: str, local_topic: str, m: pb.Message, n_queues: int) -> Message | None:
    """A message received from a proxy, as it is published locally (None: its body digest does
    not match, so it is not taken and the upstream redelivers it).

    Tag, keys, message id (``UNIQ_KEY``) and message group (``__SHARDINGKEY``) become the usual
    properties, user properties are kept; the local queue is the upstream queue id modulo the
    local queue count (one upstream queue stays in order), or by message group when there is one.
    A GZIP-encoded body is published decompressed (MQTT devices get the payload)."""
    sp = m.system_properties
    body = m.body
    if sp.HasField("body_digest") and not _digest_ok(sp.body_digest, body):
        return None
    props = dict(m.user_properties)
    if sp.message_id:
        props[PROP_UNIQ_KEY] = sp.message_id
    if sp.tag:
        props[PROP_TAGS] = sp.tag
    keys = " ".join(k for k in sp.keys if k)
    if keys:
        props[PROP_KEYS] = keys
    if sp.message_group:
        props[PROP_MESSAGE_GROUP] = sp.message_group
    sys_flag = 0
    if sp.body_encoding == pb.GZIP:
        try:
            body = zlib.decompress(body, 47)  # gzip or zlib framing, whichever it is
        except zlib.error:
            sys_flag = SYSFLAG_COMPRESSED  # passed on as it came
    born = sp.born_timestamp.ToMilliseconds() if sp.HasField("born_timestamp") else 0
    msg = incoming_message(bridge, local_topic, body, props, flag=0, sys_flag=0, born_timestamp=born,
                           queue_id=max(0, sp.queue_id) % max(1, n_queues))
    msg.sys_flag |= sys_flag
    return msg
