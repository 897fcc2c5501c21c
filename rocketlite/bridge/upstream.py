"""The upstream side of a bridge: a RocketMQ remoting client (NameServer routes, Broker send/pull).

Built on rocketlite's own remoting codec and its small Trio client
(:class:`rocketlite.protocols.remoting.client.RemotingClient`): one connection per address,
pipelined requests matched by opaque, optional TLS, optional ACL signing the way RocketMQ's
``AclClientRPCHook`` does (``AccessKey`` + ``Signature`` = base64 HMAC-SHA1 over the sorted header
values and the body). Every failure is an :class:`UpstreamUnavailable` and drops the connection;
the caller backs off and retries.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import Any

import trio

from rocketlite.bridge.config import BridgeConfig, encode_send_batch
from rocketlite.protocols.remoting.client import RemotingClient
from rocketlite.protocols.remoting.codec import (
    RemotingCommand,
    RequestCode,
    ResponseCode,
    StoredRecord,
    decode_json_body,
    decode_records,
    encode_properties,
    split_host_port,
)
from rocketlite.security.acl import remoting_signature

log = logging.getLogger("rocketlite.bridge")

# The message is stored upstream even though a replica or flush lagged: not a failure.
SEND_OK = {ResponseCode.SUCCESS, ResponseCode.FLUSH_DISK_TIMEOUT, ResponseCode.FLUSH_SLAVE_TIMEOUT,
           ResponseCode.SLAVE_NOT_AVAILABLE}
# The upstream will never take this message as it is (too large, bad properties).
SEND_REJECTED = {ResponseCode.MESSAGE_ILLEGAL}


class UpstreamUnavailable(Exception):
    """The upstream could not be reached or refused for now; retry later."""


class UpstreamRejected(Exception):
    """The upstream refuses this message for good (``MESSAGE_ILLEGAL``)."""


@dataclass(frozen=True)
class QueueRef:
    broker: str     # broker name
    addr: str       # master address
    queue_id: int


@dataclass
class Route:
    topic: str
    write: list[QueueRef]
    read: list[QueueRef]
    via_default: bool = False   # the topic does not exist upstream yet: send with defaultTopic TBW102
    fetched_at: float = 0.0


def client_ssl_context(cfg: BridgeConfig, alpn: list[str] | None = None) -> ssl.SSLContext | None:
    """The TLS context for a bridge's upstream connections (None without ``tls``)."""
    if not cfg.tls:
        return None
    ctx = ssl.create_default_context(cafile=cfg.tls_ca_file or None)
    if not cfg.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


class Upstream:
    """Connections to one upstream cluster, for one bridge."""

    def __init__(self, cfg: BridgeConfig, nursery: trio.Nursery) -> None:
        self.cfg = cfg
        self.nursery = nursery
        self._conns: dict[str, RemotingClient] = {}
        self._connecting: dict[str, trio.Lock] = {}
        self._routes: dict[str, Route] = {}
        self._ns_index = 0
        self.up = False
        self.last_error = ""
        self._ssl = client_ssl_context(cfg)

    # -- connections ---------------------------------------------------------------------------
    async def _client(self, addr: str) -> RemotingClient:
        c = self._conns.get(addr)
        if c is not None and not c.closed.is_set():
            return c
        lock = self._connecting.setdefault(addr, trio.Lock())
        async with lock:
            c = self._conns.get(addr)
            if c is not None and not c.closed.is_set():
                return c
            host, port = split_host_port(addr)
            with trio.fail_after(self.cfg.connect_timeout_ms / 1000):
                stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
                if self._ssl is not None:
                    tls = trio.SSLStream(stream, self._ssl, server_hostname=host, https_compatible=True)
                    await tls.do_handshake()
                    stream = tls
            c = RemotingClient(stream, language="JAVA", version=401)
            self._conns[addr] = c
            self.nursery.start_soon(self._read, c)
            return c

    async def _read(self, c: RemotingClient) -> None:
        try:
            await c._reader()
        except Exception:  # a TLS error on read: the connection is gone, callers see it closed
            c.closed.set()
        finally:
            with trio.CancelScope(shield=True):
                try:
                    await c.stream.aclose()
                except Exception:
                    pass

    async def _drop(self, addr: str) -> None:
        c = self._conns.pop(addr, None)
        if c is not None:
            c.closed.set()
            with trio.CancelScope(shield=True):
                try:
                    await c.stream.aclose()
                except Exception:
                    pass

    async def aclose(self) -> None:
        for addr in list(self._conns):
            await self._drop(addr)

    def _sign(self, cmd: RemotingCommand) -> None:
        if self.cfg.access_key:
            cmd.ext["AccessKey"] = self.cfg.access_key
            cmd.ext["Signature"] = remoting_signature(cmd.ext, cmd.body, self.cfg.secret_key)

    async def request(self, addr: str, code: int, ext: dict[str, Any], body: bytes = b"", *,
                      timeout_ms: int | None = None) -> RemotingCommand:
        timeout = (timeout_ms or self.cfg.request_timeout_ms) / 1000
        try:
            c = await self._client(addr)
            cmd = c.command(code, ext, body)
            self._sign(cmd)
            resp = await c.roundtrip(cmd, timeout=timeout)
        except (OSError, ConnectionError, trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError,
                ssl.SSLError) as exc:
            await self._drop(addr)
            self._failed(f"{addr}: {type(exc).__name__}: {exc}")
            raise UpstreamUnavailable(self.last_error) from exc
        if resp.code == ResponseCode.NO_PERMISSION:
            self._failed(f"{addr}: no permission: {resp.remark}")
            raise UpstreamUnavailable(self.last_error)
        return resp

    def _failed(self, why: str) -> None:
        if self.up or why != self.last_error:
            log.warning("bridge %s: upstream unavailable: %s", self.cfg.name, why)
        self.up = False
        self.last_error = why

    # -- NameServer ----------------------------------------------------------------------------
    async def _ns_request(self, code: int, ext: dict[str, Any]) -> RemotingCommand:
        last: Exception | None = None
        n = len(self.cfg.namesrv)
        for i in range(n):
            addr = self.cfg.namesrv[(self._ns_index + i) % n]
            try:
                resp = await self.request(addr, code, ext)
                self._ns_index = (self._ns_index + i) % n
                return resp
            except UpstreamUnavailable as exc:
                last = exc
        raise UpstreamUnavailable(str(last))

    async def route(self, topic: str, *, refresh: bool = False) -> Route:
        r = self._routes.get(topic)
        now = trio.current_time()
        if r is not None and not refresh and now - r.fetched_at < self.cfg.route_refresh_ms / 1000:
            return r
        resp = await self._ns_request(RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": topic})
        via_default = False
        if resp.code == ResponseCode.TOPIC_NOT_EXIST:
            # a strict cluster: like the Java producer, send through the default topic's route so a
            # broker with autoCreateTopicEnable creates it; otherwise the send fails and we retry.
            resp = await self._ns_request(RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": "TBW102"})
            via_default = True
        if resp.code != ResponseCode.SUCCESS:
            self._failed(f"no route for {topic}: {resp.code} {resp.remark}")
            raise UpstreamUnavailable(self.last_error)
        data = decode_json_body(resp.body) or {}
        masters = {}
        for bd in data.get("brokerDatas") or []:
            a = bd.get("brokerAddrs") or {}
            m = a.get("0") or a.get(0)
            if m:
                masters[bd.get("brokerName")] = m
        write: list[QueueRef] = []
        read: list[QueueRef] = []
        for qd in sorted(data.get("queueDatas") or [], key=lambda q: str(q.get("brokerName"))):
            addr = masters.get(qd.get("brokerName"))
            if not addr:
                continue
            perm = int(qd.get("perm", 6))
            if perm & 2:
                write += [QueueRef(qd["brokerName"], addr, i) for i in range(int(qd.get("writeQueueNums", 0)))]
            if perm & 4:
                read += [QueueRef(qd["brokerName"], addr, i) for i in range(int(qd.get("readQueueNums", 0)))]
        if not write and not read:
            self._failed(f"route for {topic} has no queues")
            raise UpstreamUnavailable(self.last_error)
        r = Route(topic, write, read, via_default, now)
        self._routes[topic] = r
        return r

    def forget_route(self, topic: str) -> None:
        self._routes.pop(topic, None)

    # -- Broker --------------------------------------------------------------------------------
    async def send(self, topic: str, q: QueueRef, items: list[tuple[bytes, dict[str, str], int, int, int]],
                   *, via_default: bool) -> RemotingCommand:
        """Send (body, properties, flag, sys_flag, born_ts) items to one queue, as one batch if several."""
        ext: dict[str, Any] = {
            "a": self.cfg.producer_group, "b": topic, "c": "TBW102", "d": 8 if via_default else 4, "e": q.queue_id,
            "g": 0, "j": 0, "k": False,
        }
        if len(items) == 1:
            body, props, flag, sys_flag, born = items[0]
            ext.update(f=sys_flag, g=born, h=flag, i=encode_properties(props))
            code = RequestCode.SEND_MESSAGE_V2
        else:
            body = encode_send_batch([(b, p, f) for b, p, f, _s, _b in items])
            ext.update(f=0, g=items[0][4], h=0, i="", m=True)
            code = RequestCode.SEND_BATCH_MESSAGE
        resp = await self.request(q.addr, code, ext, body)
        if resp.code in SEND_OK:
            self.up = True
            return resp
        if resp.code in SEND_REJECTED:
            raise UpstreamRejected(f"{resp.code} {resp.remark}")
        self.forget_route(topic)
        self._failed(f"send to {topic}@{q.addr}: {resp.code} {resp.remark}")
        raise UpstreamUnavailable(self.last_error)

    async def consumer_offset(self, q: QueueRef, group: str, topic: str) -> int | None:
        resp = await self.request(q.addr, RequestCode.QUERY_CONSUMER_OFFSET, {
            "consumerGroup": group, "topic": topic, "queueId": q.queue_id, "setZeroIfNotFound": False})
        if resp.code == ResponseCode.SUCCESS and "offset" in resp.ext:
            off = int(resp.ext["offset"])
            return off if off >= 0 else None
        return None

    async def max_offset(self, q: QueueRef, topic: str) -> int:
        resp = await self.request(q.addr, RequestCode.GET_MAX_OFFSET, {"topic": topic, "queueId": q.queue_id})
        if resp.code != ResponseCode.SUCCESS:
            raise UpstreamUnavailable(f"max offset of {topic}: {resp.code} {resp.remark}")
        return int(resp.ext.get("offset", 0))

    async def commit_offset(self, q: QueueRef, group: str, topic: str, offset: int) -> None:
        resp = await self.request(q.addr, RequestCode.UPDATE_CONSUMER_OFFSET, {
            "consumerGroup": group, "topic": topic, "queueId": q.queue_id, "commitOffset": offset})
        if resp.code != ResponseCode.SUCCESS:
            raise UpstreamUnavailable(f"commit offset of {topic}: {resp.code} {resp.remark}")

    async def pull(self, q: QueueRef, group: str, topic: str, offset: int, max_nums: int,
                   suspend_ms: int) -> tuple[int, list[StoredRecord], int]:
        """(response code, records, next offset). Long-polls up to ``suspend_ms`` upstream."""
        resp = await self.request(q.addr, RequestCode.PULL_MESSAGE, {
            "consumerGroup": group, "topic": topic, "queueId": q.queue_id, "queueOffset": offset,
            "maxMsgNums": max_nums, "sysFlag": 0x2 | 0x4, "commitOffset": 0, "suspendTimeoutMillis": suspend_ms,
            "subscription": "*", "subVersion": 0, "expressionType": "TAG",
        }, timeout_ms=suspend_ms + self.cfg.request_timeout_ms)
        nxt = int(resp.ext.get("nextBeginOffset", offset)) if resp.ext else offset
        if resp.code == ResponseCode.SUCCESS:
            self.up = True
            try:
                return resp.code, decode_records(resp.body), nxt
            except ValueError as exc:
                raise UpstreamUnavailable(f"undecodable pull body from {q.addr}: {exc}") from exc
        if resp.code in (ResponseCode.PULL_NOT_FOUND, ResponseCode.PULL_RETRY_IMMEDIATELY,
                         ResponseCode.PULL_OFFSET_MOVED):
            self.up = True
            return resp.code, [], nxt
        self._failed(f"pull {topic}@{q.addr}: {resp.code} {resp.remark}")
        raise UpstreamUnavailable(self.last_error)
