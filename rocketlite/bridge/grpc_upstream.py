"""A RocketMQ 5 gRPC proxy as a bridge upstream (forward direction only).

A minimal gRPC client: unary calls (``QueryRoute``, ``SendMessage``) over one HTTP/2 connection
driven by the sans-IO ``h2`` library on a Trio stream (TLS with ALPN ``h2`` when ``tls = true``),
messages from rocketlite's generated ``messaging_pb2``. ACL: the ``authorization`` header the
official clients send (``MQv2-HMAC-SHA1``, HMAC over ``x-mq-date-time``). Same interface as
:class:`rocketlite.bridge.upstream.Upstream` for what the forwarder needs (route, send).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import socket
import ssl
import struct
import time
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio

from rocketlite.bridge.config import BridgeConfig
from rocketlite.bridge.upstream import QueueRef, Route, UpstreamRejected, UpstreamUnavailable
from rocketlite.protocols.grpc import messaging_pb2 as pb
from rocketlite.security.acl import grpc_signature

log = logging.getLogger("rocketlite.bridge")

SERVICE = "/apache.rocketmq.v2.MessagingService/"
MAX_RESPONSE = 16 * 1024 * 1024
_SYSTEM_PROP = re.compile(r"^([A-Z0-9_]+|__.*)$")  # RocketMQ's own property names: not user properties
# Codes meaning "this message will never be accepted as it is".
_REJECTED = {pb.BAD_REQUEST, pb.ILLEGAL_MESSAGE_TAG, pb.ILLEGAL_MESSAGE_KEY, pb.ILLEGAL_MESSAGE_GROUP,
             pb.ILLEGAL_MESSAGE_PROPERTY_KEY, pb.ILLEGAL_MESSAGE_ID, pb.ILLEGAL_DELIVERY_TIME,
             pb.MESSAGE_PROPERTY_CONFLICT_WITH_TYPE, pb.MESSAGE_CORRUPTED, pb.PAYLOAD_TOO_LARGE,
             pb.MESSAGE_BODY_TOO_LARGE, pb.MESSAGE_BODY_EMPTY, pb.MESSAGE_PROPERTIES_TOO_LARGE}


class _Call:
    __slots__ = ("headers", "trailers", "data", "done", "reset")

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}
        self.trailers: dict[str, str] = {}
        self.data = bytearray()
        self.done = trio.Event()
        self.reset = False


class _Channel:
    """One HTTP/2 connection; unary calls multiplexed on it."""

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
                c.reset = True
                c.done.set()

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
                if len(call.data) > MAX_RESPONSE:
                    call.reset = True
                    call.done.set()
        elif isinstance(ev, h2.events.StreamEnded) and call:
            call.done.set()
        elif isinstance(ev, h2.events.StreamReset) and call:
            call.reset = True
            call.done.set()
        elif isinstance(ev, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self.window.set()
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.closed.set()
            for c in self.calls.values():
                c.reset = True
                c.done.set()

    async def unary(self, method: str, payload: bytes, metadata: list[tuple[str, str]], timeout: float) -> bytes:
        if self.closed.is_set():
            raise ConnectionError("connection closed")
        sid = self.conn.get_next_available_stream_id()
        call = self.calls[sid] = _Call()
        try:
            with trio.fail_after(timeout):
                headers = [(":method", "POST"), (":scheme", self.scheme), (":path", SERVICE + method),
                           (":authority", self.authority), ("content-type", "application/grpc"), ("te", "trailers"),
                           ("grpc-timeout", f"{int(timeout * 1000)}m"), *metadata]
                self.conn.send_headers(sid, headers)
                body = struct.pack(">BI", 0, len(payload)) + payload
                view = memoryview(body)
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
                    self.conn.send_data(sid, bytes(chunk), end_stream=not len(view))
                    if not len(view):
                        break
                await self.flush()
                await call.done.wait()
        finally:
            self.calls.pop(sid, None)
        if call.reset:
            raise ConnectionError("stream reset or connection lost")
        meta = {**call.headers, **call.trailers}
        status = meta.get("grpc-status", "")
        if status != "0":
            raise ConnectionError(f"grpc-status {status or '?'}: {meta.get('grpc-message', '')}")
        data = bytes(call.data)
        if len(data) < 5:
            raise ConnectionError("empty gRPC response")
        compressed, n = struct.unpack_from(">BI", data)
        if compressed:
            raise ConnectionError("compressed gRPC response")
        return data[5 : 5 + n]


class GrpcUpstream:
    """A RocketMQ 5 proxy (or rocketlite's gRPC port) reached at ``cfg.namesrv`` endpoints."""

    def __init__(self, cfg: BridgeConfig, nursery: trio.Nursery) -> None:
        self.cfg = cfg
        self.nursery = nursery
        self._channel: _Channel | None = None
        self._lock = trio.Lock()
        self._routes: dict[str, Route] = {}
        self._index = 0
        self.up = False
        self.last_error = ""
        self.client_id = f"{socket.gethostname()}@{os.getpid()}@rocketlite-bridge-{cfg.name}"
        self._ssl: ssl.SSLContext | None = None
        if cfg.tls:
            ctx = ssl.create_default_context(cafile=cfg.tls_ca_file or None)
            if not cfg.tls_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            self._ssl = ctx
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
              ("x-mq-client-version", "5.0.0"), ("x-mq-request-id", f"{self.client_id}-{next(self._ids)}")]
        if self.cfg.access_key:
            dt = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            sig = grpc_signature(dt, self.cfg.secret_key)
            md += [("x-mq-date-time", dt),
                   ("authorization", f"MQv2-HMAC-SHA1 Credential={self.cfg.access_key}, "
                                     f"SignedHeaders=x-mq-date-time, Signature={sig}")]
        return md

    def _failed(self, why: str) -> None:
        if self.up or why != self.last_error:
            log.warning("bridge %s: upstream unavailable: %s", self.cfg.name, why)
        self.up = False
        self.last_error = why

    async def _call(self, method: str, req: Any, resp_cls: Any) -> Any:
        try:
            ch = await self._connect()
            raw = await ch.unary(method, req.SerializeToString(), self._metadata(), self.cfg.request_timeout_ms / 1000)
            return resp_cls.FromString(raw)
        except (OSError, ConnectionError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError,
                ssl.SSLError, h2.exceptions.H2Error) as exc:
            await self.aclose()
            self._index += 1  # next endpoint next time
            self._failed(f"{self.endpoint}: {type(exc).__name__}: {exc}")
            raise UpstreamUnavailable(self.last_error) from exc

    async def route(self, topic: str, *, refresh: bool = False) -> Route:
        r = self._routes.get(topic)
        now = trio.current_time()
        if r is not None and not refresh and now - r.fetched_at < self.cfg.route_refresh_ms / 1000:
            return r
        host, _, port = self.endpoint.rpartition(":")
        scheme = pb.IPv4 if re.fullmatch(r"[0-9.]+", host) else pb.IPv6 if ":" in host else pb.DOMAIN_NAME
        req = pb.QueryRouteRequest(topic=pb.Resource(name=topic),
                                   endpoints=pb.Endpoints(scheme=scheme, addresses=[pb.Address(host=host, port=int(port))]))
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
