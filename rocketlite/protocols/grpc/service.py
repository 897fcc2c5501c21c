"""apache.rocketmq.v2.MessagingService on the rocketlite core.

Every RPC maps onto :class:`~rocketlite.core.broker.Broker` calls; this module only translates
between protobuf shapes and core shapes, keeps the per-client Telemetry state (settings, the
open stream used for server-initiated commands) and applies the proxy's request policy
(validation, long-poll sizing, the settings reply). Business errors go back inside the
response's ``Status`` with gRPC status OK, as the real proxy does. See docs/grpc.md.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import trio
from google.protobuf.message import DecodeError

from rocketlite.core import errors as core_errors
from rocketlite.core.broker import Broker, ClientInfo
from rocketlite.core.filters import Subscription
from rocketlite.core.message import (
    PROP_DELIVER_TIME_MS,
    PROP_KEYS,
    PROP_MESSAGE_GROUP,
    PROP_PRODUCER_GROUP,
    PROP_TAGS,
    PROP_TRANSACTION_PREPARED,
    PROP_UNIQ_KEY,
    SYSFLAG_COMPRESSED,
    SYSFLAG_TRANSACTION_MASK,
    Message,
)
from rocketlite.metrics import METRICS
from rocketlite.protocols.grpc import messaging_pb2 as pb
from rocketlite.protocols.grpc.codec import INTERNAL, GrpcError
from rocketlite.protocols.grpc.server import Call

log = logging.getLogger(__name__)

SERVICE = "/apache.rocketmq.v2.MessagingService/"
C = pb.Code
OK_CODE = int(pb.OK)  # module constant: pb.Code.OK goes through a Python __getattr__ on every use

MAX_DELAY_MS = 24 * 3600 * 1000
MAX_INVISIBLE_MS = 12 * 3600 * 1000
AUTO_RENEW_INVISIBLE_MS = 60_000
MAX_LONG_POLL_MS = 20_000
MAX_MESSAGE_GROUP = 64
PROP_IMMUNITY = "CHECK_IMMUNITY_TIME_IN_SECONDS"
PROP_TRACE = "__GRPC_TRACE_CONTEXT"
PROP_BODY_ENCODING = "__GRPC_BODY_ENCODING"
PROP_BORN_HOST = "__GRPC_BORN_HOST"

# Properties that carry system meaning (RocketMQ MessageConst names and rocketlite internals):
# never shown to gRPC consumers as user properties.
_HIDDEN = frozenset({
    PROP_UNIQ_KEY, PROP_KEYS, PROP_TAGS, PROP_MESSAGE_GROUP, PROP_DELIVER_TIME_MS, PROP_TRANSACTION_PREPARED,
    PROP_PRODUCER_GROUP, PROP_IMMUNITY, PROP_TRACE, PROP_BODY_ENCODING, PROP_BORN_HOST, "DELAY", "TIMER_DELAY_SEC",
    "TIMER_DELAY_MS", "REAL_TOPIC", "REAL_QID", "RETRY_TOPIC", "ORIGIN_MESSAGE_ID", "MAX_RECONSUME_TIMES",
    "WAIT", "MSG_REGION", "TRACE_ON", "CLUSTER", "MIN_OFFSET", "MAX_OFFSET", "CONSUME_START_TIME",
    "__transactionId__", "TRAN_PREPARED_QUEUE_OFFSET", "INNER_NUM", "INNER_MULTI_TOPIC",
})

_ERROR_CODES = {
    "TOPIC_NOT_FOUND": C.TOPIC_NOT_FOUND,
    "GROUP_NOT_FOUND": C.CONSUMER_GROUP_NOT_FOUND,
    "BAD_REQUEST": C.BAD_REQUEST,
    "MESSAGE_TOO_LARGE": C.MESSAGE_BODY_TOO_LARGE,
    "NOT_FOUND": C.NOT_FOUND,
    "INVALID_RECEIPT_HANDLE": C.INVALID_RECEIPT_HANDLE,
    "STORAGE_FULL": C.INTERNAL_SERVER_ERROR,
    "FORBIDDEN": C.FORBIDDEN,
}


class Reject(Exception):
    """A business error: answered with this RocketMQ status code (gRPC status stays OK)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def status(code: int = OK_CODE, message: str = "OK") -> pb.Status:
    return pb.Status(code=code, message=message)


def error_status(exc: Exception) -> pb.Status:
    if isinstance(exc, Reject):
        return status(exc.code, exc.message)
    if isinstance(exc, core_errors.BrokerError):
        return status(_ERROR_CODES.get(exc.code, C.INTERNAL_SERVER_ERROR), str(exc) or exc.code)
    return status(C.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")


def ms_of(d: Any) -> int:
    return int(d.seconds) * 1000 + int(d.nanos) // 1_000_000


def set_ms(target: Any, ms: int) -> None:
    target.seconds = ms // 1000
    target.nanos = (ms % 1000) * 1_000_000


def body_md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest().upper()


@dataclass
class GrpcClient:
    """What we know about one client id (x-mq-client-id)."""

    client_id: str
    client_type: int = 0
    settings: pb.Settings | None = None
    group: str = ""
    topics: list[str] = field(default_factory=list)
    telemetry: Call | None = None
    send_lock: trio.Lock = field(default_factory=trio.Lock)
    language: int = 0
    last_seen_ms: int = 0

    @property
    def is_producer(self) -> bool:
        return self.client_type == pb.PRODUCER

    async def push(self, cmd: pb.TelemetryCommand) -> bool:
        call = self.telemetry
        if call is None or call.reset or call.finished:
            return False
        async with self.send_lock:
            await call.send(cmd.SerializeToString())
        return True


@dataclass
class _Renewal:
    """A message handed to an auto-renew (push) consumer: its invisibility is extended for it."""

    group: str
    topic: str
    handle: str  # the latest handle; the client keeps using the first one
    deadline_ms: int
    started_ms: int
    client_id: str


class MessagingService:
    def __init__(self, broker: Broker, settings: Any = None) -> None:
        self.broker = broker
        sec = settings.section("grpc") if settings is not None else {}
        self.store_host = f"{socket.gethostname()}"
        self.clients: dict[str, GrpcClient] = {}
        self.fifo_by_message_group = bool(sec.get("fifo_by_message_group", True))
        self.min_long_poll_ms = 0
        self._checker_installed = False
        self._nursery: trio.Nursery | None = None
        # auto-renew: original receipt handle -> renewal state (RocketMQ's proxy does the same)
        self.renewals: dict[str, _Renewal] = {}
        self.renew_ahead_ms = int(sec.get("renew_ahead_ms", 10_000))
        self.renew_max_ms = int(sec.get("renew_max_ms", 3 * 3600 * 1000))

    # -- plumbing ------------------------------------------------------------------------------
    def handlers(self) -> dict[str, Callable[[Call], Awaitable[None]]]:
        unary = {
            "QueryRoute": (pb.QueryRouteRequest, self.query_route),
            "Heartbeat": (pb.HeartbeatRequest, self.heartbeat),
            "SendMessage": (pb.SendMessageRequest, self.send_message),
            "QueryAssignment": (pb.QueryAssignmentRequest, self.query_assignment),
            "AckMessage": (pb.AckMessageRequest, self.ack_message),
            "ForwardMessageToDeadLetterQueue": (pb.ForwardMessageToDeadLetterQueueRequest, self.forward_to_dlq),
            "UpdateOffset": (pb.UpdateOffsetRequest, self.update_offset),
            "GetOffset": (pb.GetOffsetRequest, self.get_offset),
            "QueryOffset": (pb.QueryOffsetRequest, self.query_offset),
            "EndTransaction": (pb.EndTransactionRequest, self.end_transaction),
            "NotifyClientTermination": (pb.NotifyClientTerminationRequest, self.notify_termination),
            "ChangeInvisibleDuration": (pb.ChangeInvisibleDurationRequest, self.change_invisible),
            "RecallMessage": (pb.RecallMessageRequest, self.recall_message),
            "SyncLiteSubscription": (pb.SyncLiteSubscriptionRequest, self.sync_lite_subscription),
        }
        out: dict[str, Callable[[Call], Awaitable[None]]] = {}
        for name, (req_cls, fn) in unary.items():
            out[SERVICE + name] = self._unary(req_cls, fn)
        out[SERVICE + "ReceiveMessage"] = self._server_stream(pb.ReceiveMessageRequest, self.receive_message)
        out[SERVICE + "PullMessage"] = self._server_stream(pb.PullMessageRequest, self.pull_message)
        out[SERVICE + "Telemetry"] = self.telemetry
        return out

    def _unary(self, req_cls: Any, fn: Callable[[Any, Call], Awaitable[Any]]) -> Callable[[Call], Awaitable[None]]:
        async def handle(call: Call) -> None:
            req = decode(req_cls, await call.recv_one())
            resp = await fn(req, call)
            await call.reply(resp.SerializeToString())

        return handle

    def _server_stream(self, req_cls: Any, fn: Callable[[Any, Call], Awaitable[None]]) -> Callable[[Call], Awaitable[None]]:
        async def handle(call: Call) -> None:
            req = decode(req_cls, await call.recv_one())
            await fn(req, call)

        return handle

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Background work for the front-end's lifetime (server-initiated commands)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            add = getattr(self.broker, "add_transaction_checker", None)
            if add is not None:
                add("grpc", self._check_transaction)
                self._checker_installed = True
            task_status.started()
            ticks = 0
            while True:
                await trio.sleep(1.0)
                await self.renew_due()
                ticks += 1
                if ticks % 60 == 0:
                    self.expire_clients()

    async def renew_due(self) -> None:
        """Extend the invisibility of auto-renewed messages whose deadline is near."""
        now = self.broker.now_ms()
        for original, r in list(self.renewals.items()):
            if r.deadline_ms - now > self.renew_ahead_ms:
                continue
            c = self.clients.get(r.client_id)
            alive = c is not None and c.telemetry is not None
            if not alive or now - r.started_ms > self.renew_max_ms:
                self.renewals.pop(original, None)  # let it become visible again
                continue
            try:
                r.handle = await self.broker.change_invisible(r.group, r.topic, r.handle, AUTO_RENEW_INVISIBLE_MS)
                r.deadline_ms = now + AUTO_RENEW_INVISIBLE_MS
            except Exception as exc:  # acked meanwhile, or gone: stop renewing
                log.debug("renewing %s failed: %s", original, exc)
                self.renewals.pop(original, None)

    def _current_handle(self, handle: str) -> str:
        r = self.renewals.get(handle)
        return r.handle if r is not None else handle

    def client(self, call: Call) -> GrpcClient:
        cid = call.client_id
        c = self.clients.get(cid)
        if c is None:
            c = self.clients[cid] = GrpcClient(cid)
        c.last_seen_ms = self.broker.now_ms()
        return c

    def expire_clients(self) -> None:
        """Forget clients that vanished without NotifyClientTermination (no stream, no heartbeat)."""
        limit = self.broker.now_ms() - self.broker.settings.client_expiry_ms
        for cid, c in list(self.clients.items()):
            if c.telemetry is None and c.last_seen_ms < limit:
                del self.clients[cid]

    # -- QueryRoute ----------------------------------------------------------------------------
    async def query_route(self, req: pb.QueryRouteRequest, call: Call) -> pb.QueryRouteResponse:
        try:
            topic = req.topic.name
            if not topic:
                raise Reject(C.ILLEGAL_TOPIC, "topic name is empty")
            if not req.endpoints.addresses:
                raise Reject(C.ILLEGAL_ACCESS_POINT, "no access point in the request")
            try:
                self.broker.validate_topic_name(topic)
            except core_errors.BadRequest as exc:
                raise Reject(C.ILLEGAL_TOPIC, str(exc)) from exc
            tc = await self.broker.get_or_create_topic(topic)
        except Exception as exc:
            return pb.QueryRouteResponse(status=error_status(exc))
        endpoints = pb.Endpoints()
        endpoints.CopyFrom(req.endpoints)
        if endpoints.scheme == pb.ADDRESS_SCHEME_UNSPECIFIED:
            endpoints.scheme = scheme_of(endpoints.addresses[0].host)
        broker = pb.Broker(name=self.broker.settings.broker_name, id=0, endpoints=endpoints)
        resp = pb.QueryRouteResponse(status=status())
        types = accepted_types(tc.message_type)
        n = max(tc.read_queues, tc.write_queues)
        for qid in range(n):
            readable = qid < tc.read_queues and bool(tc.perm & 4)
            writable = qid < tc.write_queues and bool(tc.perm & 2)
            perm = (
                pb.READ_WRITE if readable and writable else pb.READ if readable else pb.WRITE if writable else pb.NONE
            )
            mq = resp.message_queues.add(id=qid, permission=perm, accept_message_types=types)
            mq.topic.CopyFrom(req.topic)
            mq.broker.CopyFrom(broker)
        return resp

    # -- Heartbeat / Telemetry / termination ---------------------------------------------------
    async def heartbeat(self, req: pb.HeartbeatRequest, call: Call) -> pb.HeartbeatResponse:
        c = self.client(call)  # also refreshes last_seen_ms
        if req.client_type:
            c.client_type = req.client_type
        if req.HasField("group") and req.group.name:
            c.group = req.group.name
        self._register(c)
        return pb.HeartbeatResponse(status=status())

    async def telemetry(self, call: Call) -> None:
        c = self.client(call)
        c.telemetry = call
        try:
            while True:
                payload = await call.recv()
                if payload is None:
                    break
                cmd = decode(pb.TelemetryCommand, payload)
                kind = cmd.WhichOneof("command")
                if kind == "settings":
                    reply = self.apply_settings(c, cmd.settings)
                    await c.push(reply)
                # thread_stack_trace / verify_message_result: answers to commands we never send
        finally:
            if c.telemetry is call:
                c.telemetry = None

    def apply_settings(self, c: GrpcClient, s: pb.Settings) -> pb.TelemetryCommand:
        c.settings = s
        if s.HasField("client_type"):
            c.client_type = s.client_type
        c.language = s.user_agent.language
        merged = pb.Settings()
        merged.CopyFrom(s)
        which = s.WhichOneof("pub_sub")
        if which == "publishing" or c.client_type == pb.PRODUCER:
            c.topics = [r.name for r in s.publishing.topics]
            bp = merged.backoff_policy
            bp.Clear()
            bp.max_attempts = 3
            set_ms(bp.exponential_backoff.initial, 10)
            set_ms(bp.exponential_backoff.max, 1000)
            bp.exponential_backoff.multiplier = 2.0
            merged.publishing.max_body_size = int(self.broker.settings.max_message_size)
            merged.publishing.validate_message_type = True
        elif which == "subscription":
            sub = s.subscription
            c.group = sub.group.name
            c.topics = [e.topic.name for e in sub.subscriptions]
            gc = self.broker.groups.get(c.group)
            max_reconsume = gc.max_reconsume_times if gc else self.broker.settings.max_reconsume_times
            m = merged.subscription
            m.receive_batch_size = 32
            if not sub.HasField("long_polling_timeout") or c.client_type != pb.SIMPLE_CONSUMER:
                set_ms(m.long_polling_timeout, MAX_LONG_POLL_MS)
            m.fifo = bool(gc and gc.consume_orderly)
            bp = merged.backoff_policy
            bp.Clear()
            bp.max_attempts = max_reconsume + 1
            if c.language == pb.NODE_JS:
                # Node only understands an exponential policy (and reads its seconds as ms)
                set_ms(bp.exponential_backoff.initial, 1000)
                set_ms(bp.exponential_backoff.max, 60_000)
                bp.exponential_backoff.multiplier = 2.0
            else:
                for s_ in (1, 5, 10, 30, 60, 120, 180, 240, 300, 360, 420, 480, 540, 600, 1200, 1800, 3600, 7200):
                    d = bp.customized_backoff.next.add()
                    d.seconds = s_
        merged.metric.Clear()
        merged.metric.on = False
        self._register(c)
        return pb.TelemetryCommand(status=status(), settings=merged)

    def _register(self, c: GrpcClient) -> None:
        if not c.client_id:
            return
        if c.client_type == pb.PRODUCER:
            subs = {t: Subscription.make(t) for t in c.topics}
            for t in c.topics or [""]:
                self.broker.register_producer(
                    ClientInfo(c.client_id, group=t, role="producer", protocol="grpc", subscriptions=subs, session=c)
                )
        elif c.group:
            subs = {}
            if c.settings is not None and c.settings.WhichOneof("pub_sub") == "subscription":
                for e in c.settings.subscription.subscriptions:
                    subs[e.topic.name] = make_subscription(e.topic.name, e.expression)
            self.broker.register_consumer(
                ClientInfo(
                    c.client_id,
                    group=c.group,
                    protocol="grpc",
                    subscriptions=subs,
                    consume_type="POP" if c.client_type == pb.PUSH_CONSUMER else "SIMPLE",
                    session=c,
                )
            )

    async def notify_termination(
        self, req: pb.NotifyClientTerminationRequest, call: Call
    ) -> pb.NotifyClientTerminationResponse:
        cid = call.client_id
        if cid:
            self.broker.unregister_client(cid)
            self.clients.pop(cid, None)
        return pb.NotifyClientTerminationResponse(status=status())

    # -- SendMessage ---------------------------------------------------------------------------
    async def send_message(self, req: pb.SendMessageRequest, call: Call) -> pb.SendMessageResponse:
        resp = pb.SendMessageResponse()
        messages = req.messages
        if not messages:
            resp.status.code = C.BAD_REQUEST
            resp.status.message = "no message in the request"
            return resp
        try:
            msgs = [self.to_core(m, call) for m in messages]
            results = await self.broker.send(msgs)
        except Exception as exc:
            st = error_status(exc)
            resp.status.CopyFrom(st)
            for m in messages:
                resp.entries.add(status=st, message_id=m.system_properties.message_id)
            return resp
        for msg in msgs:
            METRICS.messages_in("grpc", msg.topic, 1, len(msg.body))
        rs = resp.status
        rs.code = OK_CODE
        rs.message = "OK"
        for msg, r in zip(msgs, results):
            e = resp.entries.add()
            es = e.status
            es.code = OK_CODE
            es.message = "OK"
            e.message_id = msg.properties.get(PROP_UNIQ_KEY) or r.unique_id
            if r.transaction_id:
                e.transaction_id = r.transaction_id
            if r.queue_offset > 0:
                e.offset = r.queue_offset
            if r.recall_handle:
                e.recall_handle = r.recall_handle
        return resp

    def to_core(self, m: pb.Message, call: Call) -> Message:
        sp = m.system_properties
        topic = m.topic.name
        body = m.body
        if not topic:
            raise Reject(C.ILLEGAL_TOPIC, "topic name is empty")
        if not body:
            raise Reject(C.MESSAGE_BODY_EMPTY, "message body is empty")
        limit = self.broker.settings.max_message_size
        if len(body) > limit:
            raise Reject(C.MESSAGE_BODY_TOO_LARGE, f"message body exceeds {limit} bytes")
        mid = sp.message_id
        if not mid:
            raise Reject(C.ILLEGAL_MESSAGE_ID, "message id is empty")
        props: dict[str, str] = dict(m.user_properties) if m.user_properties else {}
        if props:
            if not _HIDDEN.isdisjoint(props):
                raise Reject(C.ILLEGAL_MESSAGE_PROPERTY_KEY, f"reserved property in {sorted(_HIDDEN & set(props))}")
            if len(props) > 128 or sum(len(k) + len(v) for k, v in props.items()) > 16 * 1024:
                raise Reject(C.MESSAGE_PROPERTIES_TOO_LARGE, "too many or too large user properties")
        props[PROP_UNIQ_KEY] = mid
        present = {f.name for f, _ in sp.ListFields()}
        tags = sp.tag if "tag" in present else ""
        if tags:
            if not tags.isprintable() or "|" in tags:
                raise Reject(C.ILLEGAL_MESSAGE_TAG, f"illegal tag {tags!r}")
            props[PROP_TAGS] = tags
        keys = " ".join(k for k in sp.keys if k) if "keys" in present else ""
        if keys:
            props[PROP_KEYS] = keys
        if "message_group" in present:
            group = sp.message_group
            if len(group) > MAX_MESSAGE_GROUP:
                raise Reject(C.ILLEGAL_MESSAGE_GROUP, "message group longer than 64 characters")
            if group:
                props[PROP_MESSAGE_GROUP] = group
        now = self.broker.now_ms()
        if "delivery_timestamp" in present:
            at = ms_of(sp.delivery_timestamp)
            if at - now > MAX_DELAY_MS:
                raise Reject(C.ILLEGAL_DELIVERY_TIME, "delivery time is more than a day ahead")
            if at > now:
                props[PROP_DELIVER_TIME_MS] = str(at)
        sys_flag = 0
        if sp.message_type == pb.TRANSACTION:
            props[PROP_TRANSACTION_PREPARED] = "true"
            props[PROP_PRODUCER_GROUP] = topic
            if "orphaned_transaction_recovery_duration" in present:
                secs = ms_of(sp.orphaned_transaction_recovery_duration) // 1000
                if secs > 3600:
                    raise Reject(C.BAD_REQUEST, "orphaned transaction recovery duration exceeds 1 hour")
                props[PROP_IMMUNITY] = str(max(0, secs))
        if "trace_context" in present and sp.trace_context:
            props[PROP_TRACE] = sp.trace_context
        if sp.body_encoding == pb.GZIP:
            sys_flag |= SYSFLAG_COMPRESSED
        qid = sp.queue_id
        return Message(
            topic=topic,
            body=body,
            queue_id=qid if qid >= 0 else -1,
            tags=tags,
            keys=keys,
            properties=props,
            sys_flag=sys_flag,
            born_timestamp=ms_of(sp.born_timestamp) if "born_timestamp" in present else now,
            born_host=sp.born_host or call.peer,
        )

    # -- messages out --------------------------------------------------------------------------
    def to_pb(
        self,
        msg: Message,
        *,
        receipt_handle: str = "",
        invisible_ms: int = 0,
        attempt: int = 0,
        topic: str = "",
    ) -> pb.Message:
        out = pb.Message()
        out.topic.name = topic or msg.properties.get("RETRY_TOPIC", "") or msg.topic
        for k, v in msg.properties.items():
            if k not in _HIDDEN and not k.startswith("__RL_"):
                out.user_properties[k] = v
        sp = out.system_properties
        if msg.tags:
            sp.tag = msg.tags
        sp.keys.extend(msg.key_list)
        sp.message_id = msg.unique_id
        sp.body_digest.type = pb.MD5
        sp.body_digest.checksum = body_md5(msg.body)
        sp.body_encoding = pb.GZIP if msg.sys_flag & SYSFLAG_COMPRESSED else pb.IDENTITY
        group = msg.message_group
        if group:
            sp.message_type = pb.FIFO
            sp.message_group = group
        elif PROP_DELIVER_TIME_MS in msg.properties:
            sp.message_type = pb.DELAY
            try:
                set_ms(sp.delivery_timestamp, int(msg.properties[PROP_DELIVER_TIME_MS]))
            except ValueError:
                pass
        elif msg.sys_flag & SYSFLAG_TRANSACTION_MASK or PROP_TRANSACTION_PREPARED in msg.properties:
            sp.message_type = pb.TRANSACTION
        else:
            sp.message_type = pb.NORMAL
        set_ms(sp.born_timestamp, msg.born_timestamp or msg.store_timestamp)
        sp.born_host = msg.born_host or ""
        set_ms(sp.store_timestamp, msg.store_timestamp)
        sp.store_host = self.store_host
        sp.queue_id = max(msg.queue_id, 0)
        sp.queue_offset = max(msg.queue_offset, 0)
        if receipt_handle:
            sp.receipt_handle = receipt_handle
        if invisible_ms:
            set_ms(sp.invisible_duration, invisible_ms)
        sp.delivery_attempt = attempt or (msg.reconsume_times + 1)
        trace = msg.properties.get(PROP_TRACE)
        if trace:
            sp.trace_context = trace
        out.body = msg.body
        return out

    # -- QueryAssignment / ReceiveMessage / Ack / ChangeInvisible / DLQ ------------------------
    async def query_assignment(self, req: pb.QueryAssignmentRequest, call: Call) -> pb.QueryAssignmentResponse:
        try:
            tc = await self.broker.get_or_create_topic(req.topic.name)
            if req.group.name:
                await self.broker.get_or_create_group(req.group.name)
        except Exception as exc:
            return pb.QueryAssignmentResponse(status=error_status(exc))
        if not tc.perm & 4 or tc.read_queues < 1:
            return pb.QueryAssignmentResponse(status=status(C.FORBIDDEN, "topic is not readable"))
        endpoints = pb.Endpoints()
        endpoints.CopyFrom(req.endpoints)
        if endpoints.addresses and endpoints.scheme == pb.ADDRESS_SCHEME_UNSPECIFIED:
            endpoints.scheme = scheme_of(endpoints.addresses[0].host)
        broker = pb.Broker(name=self.broker.settings.broker_name, id=0, endpoints=endpoints)
        resp = pb.QueryAssignmentResponse(status=status())
        gc = self.broker.groups.get(req.group.name)
        qids = range(tc.read_queues) if gc is not None and gc.consume_orderly else [-1]
        for qid in qids:
            a = resp.assignments.add()
            mq = a.message_queue
            mq.topic.CopyFrom(req.topic)
            mq.id = qid
            mq.permission = pb.READ_WRITE
            mq.broker.CopyFrom(broker)
            mq.accept_message_types.extend(accepted_types(tc.message_type))
        return resp

    async def receive_message(self, req: pb.ReceiveMessageRequest, call: Call) -> None:
        now_pb = pb.ReceiveMessageResponse()
        try:
            group = req.group.name
            topic = req.message_queue.topic.name
            if not group:
                raise Reject(C.ILLEGAL_CONSUMER_GROUP, "consumer group is empty")
            if not topic:
                raise Reject(C.ILLEGAL_TOPIC, "topic is empty")
            await self.broker.get_or_create_topic(topic)
            gc = await self.broker.get_or_create_group(group)
            flt = make_subscription(topic, req.filter_expression).filter
            if req.auto_renew or not req.HasField("invisible_duration"):
                invisible_ms = AUTO_RENEW_INVISIBLE_MS
            else:
                invisible_ms = ms_of(req.invisible_duration)
                if invisible_ms <= 0 or invisible_ms > MAX_INVISIBLE_MS:
                    raise Reject(C.ILLEGAL_INVISIBLE_TIME, f"invisible duration {invisible_ms} ms out of range")
            wait_ms = MAX_LONG_POLL_MS
            if req.HasField("long_polling_timeout"):
                wait_ms = min(ms_of(req.long_polling_timeout), MAX_LONG_POLL_MS)
            if call.timeout is not None:
                # leave the reply time to travel before the client's deadline
                wait_ms = max(0, min(wait_ms, int(call.timeout * 1000) - 1500))
            batch = max(1, min(req.batch_size or 32, 1024))
            fifo = bool(gc.consume_orderly) or self.fifo_by_message_group
            popped = await self.broker.pop(
                group, topic, batch, invisible_ms, filter=flt, wait_ms=wait_ms, fifo=fifo, client_id=call.client_id
            )
        except Exception as exc:
            if isinstance(exc, (trio.Cancelled,)):
                raise
            await call.send(pb.ReceiveMessageResponse(status=error_status(exc)).SerializeToString())
            set_ms(now_pb.delivery_timestamp, self.broker.now_ms())
            await call.send(now_pb.SerializeToString())
            return
        items = pop_items(popped)
        if not items:
            await call.send(
                pb.ReceiveMessageResponse(status=status(C.MESSAGE_NOT_FOUND, "no new message")).SerializeToString()
            )
        else:
            await call.send(pb.ReceiveMessageResponse(status=status()).SerializeToString())
            METRICS.messages_out("grpc", topic, len(items), sum(len(it[0].body) for it in items))
            now = self.broker.now_ms()
            for msg, handle, attempt in items:
                if req.auto_renew:
                    self.renewals[handle] = _Renewal(group, topic, handle, now + invisible_ms, now, call.client_id)
                m = self.to_pb(msg, receipt_handle=handle, invisible_ms=invisible_ms, attempt=attempt)
                await call.send(pb.ReceiveMessageResponse(message=m).SerializeToString())
        set_ms(now_pb.delivery_timestamp, self.broker.now_ms())
        await call.send(now_pb.SerializeToString())

    async def ack_message(self, req: pb.AckMessageRequest, call: Call) -> pb.AckMessageResponse:
        resp = pb.AckMessageResponse()
        codes = []
        for e in req.entries:
            try:
                await self.broker.ack(req.group.name, req.topic.name, self._current_handle(e.receipt_handle))
                self.renewals.pop(e.receipt_handle, None)
                st = status()
            except Exception as exc:
                st = error_status(exc)
            codes.append(st)
            resp.entries.add(message_id=e.message_id, receipt_handle=e.receipt_handle, status=st)
        if not codes:
            resp.status.CopyFrom(status(C.BAD_REQUEST, "no entry"))
        elif all(s.code == OK_CODE for s in codes):
            resp.status.CopyFrom(status())
        elif len(codes) == 1:
            resp.status.CopyFrom(codes[0])
        else:
            resp.status.CopyFrom(status(C.MULTIPLE_RESULTS, "some entries failed"))
        return resp

    async def change_invisible(
        self, req: pb.ChangeInvisibleDurationRequest, call: Call
    ) -> pb.ChangeInvisibleDurationResponse:
        try:
            ms = ms_of(req.invisible_duration)
            if ms < 0 or ms > MAX_INVISIBLE_MS:
                raise Reject(C.ILLEGAL_INVISIBLE_TIME, f"invisible duration {ms} ms out of range")
            handle = await self.broker.change_invisible(
                req.group.name, req.topic.name, self._current_handle(req.receipt_handle), ms
            )
            self.renewals.pop(req.receipt_handle, None)  # a nack: the client manages it from here
        except Exception as exc:
            return pb.ChangeInvisibleDurationResponse(status=error_status(exc))
        return pb.ChangeInvisibleDurationResponse(status=status(), receipt_handle=str(handle))

    async def forward_to_dlq(
        self, req: pb.ForwardMessageToDeadLetterQueueRequest, call: Call
    ) -> pb.ForwardMessageToDeadLetterQueueResponse:
        try:
            await self.broker.pop_to_dlq(req.group.name, req.topic.name, self._current_handle(req.receipt_handle))
            self.renewals.pop(req.receipt_handle, None)
        except Exception as exc:
            return pb.ForwardMessageToDeadLetterQueueResponse(status=error_status(exc))
        return pb.ForwardMessageToDeadLetterQueueResponse(status=status())

    # -- transactions --------------------------------------------------------------------------
    async def end_transaction(self, req: pb.EndTransactionRequest, call: Call) -> pb.EndTransactionResponse:
        action = {pb.COMMIT: "commit", pb.ROLLBACK: "rollback"}.get(req.resolution, "unknown")
        try:
            await self.broker.end_transaction(
                req.topic.name,
                transaction_id=req.transaction_id,
                unique_id=req.message_id,
                action=action,
                from_check=req.source == pb.SOURCE_SERVER_CHECK,
            )
        except core_errors.NotFound as exc:
            return pb.EndTransactionResponse(status=status(C.INVALID_TRANSACTION_ID, str(exc) or "unknown transaction"))
        except Exception as exc:
            return pb.EndTransactionResponse(status=error_status(exc))
        return pb.EndTransactionResponse(status=status())

    async def _check_transaction(self, client: ClientInfo, half: Message, transaction_id: str) -> None:
        c = client.session
        if not isinstance(c, GrpcClient) or c.telemetry is None:
            return
        cmd = pb.TelemetryCommand()
        cmd.recover_orphaned_transaction_command.transaction_id = transaction_id
        m = self.to_pb(half, topic=half.topic)
        m.system_properties.message_type = pb.TRANSACTION
        cmd.recover_orphaned_transaction_command.message.CopyFrom(m)

        async def push() -> None:
            try:
                await c.push(cmd)
            except Exception as exc:  # the stream went away: the next check round retries
                log.debug("recover-orphaned-transaction to %s failed: %s", c.client_id, exc)

        if self._nursery is not None:
            self._nursery.start_soon(push)
        else:  # pragma: no cover
            await push()

    async def recall_message(self, req: pb.RecallMessageRequest, call: Call) -> pb.RecallMessageResponse:
        try:
            ok = await self.broker.recall(req.recall_handle)
        except Exception as exc:
            return pb.RecallMessageResponse(status=error_status(exc))
        if not ok:
            return pb.RecallMessageResponse(status=status(C.NOT_FOUND, "no pending delayed message for this handle"))
        return pb.RecallMessageResponse(status=status(), message_id="")

    async def sync_lite_subscription(
        self, req: pb.SyncLiteSubscriptionRequest, call: Call
    ) -> pb.SyncLiteSubscriptionResponse:
        return pb.SyncLiteSubscriptionResponse(status=status(C.NOT_IMPLEMENTED, "lite topics are not supported"))

    # -- offset-based pull ---------------------------------------------------------------------
    async def pull_message(self, req: pb.PullMessageRequest, call: Call) -> None:
        try:
            topic = req.message_queue.topic.name
            await self.broker.get_or_create_topic(topic)
            flt = make_subscription(topic, req.filter_expression).filter
            wait = min(ms_of(req.long_polling_timeout), MAX_LONG_POLL_MS) if req.HasField("long_polling_timeout") else 0
            if call.timeout is not None:
                wait = max(0, min(wait, int(call.timeout * 1000) - 1500))
            res = await self.broker.pull(
                topic, req.message_queue.id, req.offset, max(1, req.batch_size or 32), filter=flt, wait_ms=wait
            )
        except Exception as exc:
            await call.send(pb.PullMessageResponse(status=error_status(exc)).SerializeToString())
            return
        if res.messages:
            await call.send(pb.PullMessageResponse(status=status()).SerializeToString())
            METRICS.messages_out("grpc", topic, len(res.messages), sum(len(m.body) for m in res.messages))
            for m in res.messages:
                await call.send(pb.PullMessageResponse(message=self.to_pb(m)).SerializeToString())
        elif res.status.value == "OFFSET_ILLEGAL":
            await call.send(pb.PullMessageResponse(status=status(C.ILLEGAL_OFFSET, "offset out of range")).SerializeToString())
        else:
            await call.send(pb.PullMessageResponse(status=status(C.MESSAGE_NOT_FOUND, "no new message")).SerializeToString())
        await call.send(pb.PullMessageResponse(next_offset=res.next_offset).SerializeToString())

    async def update_offset(self, req: pb.UpdateOffsetRequest, call: Call) -> pb.UpdateOffsetResponse:
        try:
            await self.broker.commit_offset(req.group.name, req.message_queue.topic.name, req.message_queue.id, req.offset)
        except Exception as exc:
            return pb.UpdateOffsetResponse(status=error_status(exc))
        return pb.UpdateOffsetResponse(status=status())

    async def get_offset(self, req: pb.GetOffsetRequest, call: Call) -> pb.GetOffsetResponse:
        off = self.broker.query_offset(req.group.name, req.message_queue.topic.name, req.message_queue.id)
        if off is None:
            return pb.GetOffsetResponse(status=status(C.OFFSET_NOT_FOUND, "no committed offset"))
        return pb.GetOffsetResponse(status=status(), offset=off)

    async def query_offset(self, req: pb.QueryOffsetRequest, call: Call) -> pb.QueryOffsetResponse:
        topic, qid = req.message_queue.topic.name, req.message_queue.id
        try:
            if req.query_offset_policy == pb.BEGINNING:
                off = self.broker.min_offset(topic, qid)
            elif req.query_offset_policy == pb.END:
                off = self.broker.max_offset(topic, qid)
            else:
                off = await self.broker.search_offset(topic, qid, ms_of(req.timestamp))
        except Exception as exc:
            return pb.QueryOffsetResponse(status=error_status(exc))
        return pb.QueryOffsetResponse(status=status(), offset=off)


# -- helpers ------------------------------------------------------------------------------------


def decode(cls: Any, payload: bytes) -> Any:
    try:
        return cls.FromString(payload)
    except (DecodeError, ValueError, RecursionError) as exc:
        raise GrpcError(INTERNAL, f"could not parse {cls.DESCRIPTOR.name}: {exc}") from exc


def scheme_of(host: str) -> int:
    if host.count(":") >= 2:
        return pb.IPv6
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        return pb.IPv4
    return pb.DOMAIN_NAME


def accepted_types(message_type: str) -> list[int]:
    specific = {"FIFO": pb.FIFO, "DELAY": pb.DELAY, "TRANSACTION": pb.TRANSACTION}
    if message_type in specific:
        return [specific[message_type]]
    # auto-created and MIXED topics take every kind, so clients never refuse to send
    return [pb.NORMAL, pb.FIFO, pb.DELAY, pb.TRANSACTION]


def make_subscription(topic: str, expr: pb.FilterExpression) -> Subscription:
    text = expr.expression or "*"
    if expr.type == pb.SQL:
        return Subscription.make(topic, text, "SQL92")
    return Subscription.make(topic, text, "TAG")


def pop_items(popped: Any) -> list[tuple[Message, str, int]]:
    """(message, receipt handle, delivery attempt) from whatever ``broker.pop`` returned."""
    items = getattr(popped, "messages", popped) or []
    out = []
    for it in items:
        if isinstance(it, tuple):
            msg, handle = it[0], it[1]
            attempt = it[2] if len(it) > 2 else msg.reconsume_times + 1
        else:
            msg = getattr(it, "message", it)
            handle = getattr(it, "receipt_handle", "") or getattr(it, "handle", "")
            attempt = getattr(it, "delivery_attempt", 0) or getattr(it, "attempt", 0) or msg.reconsume_times + 1
        out.append((msg, str(handle), int(attempt)))
    return out
