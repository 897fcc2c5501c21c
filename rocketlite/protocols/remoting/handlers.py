"""Request handlers of the remoting front-end: NameServer and Broker roles in one table.

Each handler takes the connection it arrived on and the decoded request, calls the protocol-free
core (``self.broker``), and returns the response command (or None for no response). Nothing here
does I/O or imports trio; the connection object (see server.py) supplies ``peer``,
``send_soon(cmd)`` for broker-initiated oneway requests and ``request(cmd, timeout_ms)`` for
broker-initiated requests that want an answer.
"""

from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Protocol

from rocketlite.core.broker import Broker, ClientInfo, PullStatus
from rocketlite.core.errors import (
    BadRequest,
    BrokerError,
    Forbidden,
    GroupNotFound,
    InvalidReceipt,
    MessageTooLarge,
    NotFound,
    StorageFull,
    TopicNotFound,
)
from rocketlite.core.filters import Subscription
from rocketlite.core.pop import make_handle, parse_handle
from rocketlite.core.message import (
    PROP_KEYS,
    PROP_MAX_RECONSUME_TIMES,
    PROP_TAGS,
    SYSFLAG_COMPRESSED,
    Message,
    SendResult,
)
from rocketlite.metrics import METRICS
from rocketlite.protocols.remoting.codec import (
    FLAG_ONEWAY,
    STANDARD_JSON_VERSION,
    RemotingCommand,
    RequestCode as RC,
    ResponseCode as R,
    decode_batch,
    decode_json_body,
    decode_properties,
    encode_json_body,
    encode_properties,
    pack_record,
    ext_bool,
    format_java_properties,
    offset_msg_id,
    parse_java_properties,
)
from rocketlite.security.remoting_acl import check as acl_check

log = logging.getLogger("rocketlite.remoting")

DEFAULT_TOPIC = "TBW102"
PROTOCOL = "remoting"
MAX_PULL_BODY = 8 * 1024 * 1024
MAX_PULL_HOLD_MS = 20_000
PROP_START_DELIVER_TIME = "__STARTDELIVERTIME"  # Aliyun ONS deliver-at (ali-ons setStartDeliverTime)
PROP_DELIVER_TIME_MS = "TIMER_DELIVER_MS"

CONSUME_TYPES = {0: "PULL", 1: "PUSH", 2: "POP", "CONSUME_ACTIVELY": "PULL", "CONSUME_PASSIVELY": "PUSH",
                 "CONSUME_POP": "POP"}
MESSAGE_MODELS = {0: "BROADCASTING", 1: "CLUSTERING", "BROADCASTING": "BROADCASTING", "CLUSTERING": "CLUSTERING"}


class Session(Protocol):
    peer: str

    def send_soon(self, cmd: RemotingCommand) -> None: ...

    async def request(self, cmd: RemotingCommand, timeout_ms: float) -> RemotingCommand | None: ...


class MissingField(Exception):
    pass


class Ext:
    """Typed access to a request's extFields, with optional short (v2) names."""

    __slots__ = ("ext",)

    def __init__(self, ext: dict[str, str]) -> None:
        self.ext = ext

    def str(self, name: str, alias: str | None = None, default: str | None = None) -> str:
        v = self.ext.get(name)
        if (v is None or v == "") and alias:
            v = self.ext.get(alias)
        if v is None or v == "":
            if default is None:
                raise MissingField(f"the custom field <{name}> is null")
            return default
        return v

    def opt(self, name: str, alias: str | None = None) -> str | None:
        v = self.ext.get(name)
        if (v is None or v == "") and alias:
            v = self.ext.get(alias)
        return v if v not in (None, "") else None

    def int(self, name: str, alias: str | None = None, default: int | None = None) -> int:
        v = self.opt(name, alias)
        if v is None and default is None:
            raise MissingField(f"the custom field <{name}> is null")
        return _ext_int(v, name, default or 0)

    def bool(self, name: str, alias: str | None = None, default: bool = False) -> bool:
        return ext_bool(self.opt(name, alias), default)


# SEND_MESSAGE's header fields and SEND_MESSAGE_V2's one-letter names for them
_SEND_FIELDS = (("producerGroup", "a"), ("topic", "b"), ("queueId", "e"), ("sysFlag", "f"), ("bornTimestamp", "g"),
                ("flag", "h"), ("properties", "i"), ("reconsumeTimes", "j"), ("maxReconsumeTimes", "l"), ("batch", "m"))


def _ext_int(v: str | None, name: str, default: int) -> int:
    if v is None:
        return default
    try:
        return int(v)
    except ValueError:
        try:
            return int(float(v))
        except ValueError:
            raise BadRequest(f"the custom field <{name}> is not a number: {v!r}") from None


def _send_fields(ext: dict[str, str], v2: bool) -> tuple[str, str, int, int, int, int, str, int, str | None, str | None]:
    """(group, topic, queueId, sysFlag, bornTimestamp, flag, properties, reconsumeTimes,
    maxReconsumeTimes, batch) of a send request (SEND_MESSAGE's names, V2's one-letter ones)."""
    get = ext.get
    vals: list[str | None] = []
    if v2:  # the one-letter names are what V2 carries (Java reads only those); the long ones as a fallback
        for name, short in _SEND_FIELDS:
            vals.append(get(short) or get(name) or None)
    else:
        for name, _ in _SEND_FIELDS:
            vals.append(get(name) or None)
    group, topic, qid, sys_flag, born, flag, props, recon, max_recon, batch = vals
    if topic is None:
        raise MissingField("the custom field <topic> is null")
    return (group or "", topic, _ext_int(qid, "queueId", -1), _ext_int(sys_flag, "sysFlag", 0),
            _ext_int(born, "bornTimestamp", 0), _ext_int(flag, "flag", 0), props or "",
            _ext_int(recon, "reconsumeTimes", 0), max_recon, batch)


@dataclass
class Advertised:
    """Where clients are told the broker is (routes, store host, message ids)."""

    host: str
    port: int
    store_ip: str = "127.0.0.1"  # IPv4 literal for STOREHOST / offset message ids

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class ConnState:
    """Per-connection bookkeeping: which (client id, group, role) registered over it."""

    clients: set[tuple[str, str, str]] = field(default_factory=set)


Handler = Callable[[Session, RemotingCommand], Awaitable["RemotingCommand | None"]]


def error_code(exc: BaseException) -> int:
    if isinstance(exc, MessageTooLarge):
        return R.MESSAGE_ILLEGAL
    if isinstance(exc, TopicNotFound):
        return R.TOPIC_NOT_EXIST
    if isinstance(exc, GroupNotFound):
        return R.SUBSCRIPTION_GROUP_NOT_EXIST
    if isinstance(exc, Forbidden):
        return R.NO_PERMISSION
    if isinstance(exc, StorageFull):
        return R.SERVICE_NOT_AVAILABLE
    if isinstance(exc, (BadRequest, InvalidReceipt)):
        return R.INVALID_PARAMETER
    if isinstance(exc, NotFound):
        return R.QUERY_NOT_FOUND
    return R.SYSTEM_ERROR


class RemotingService:
    """The code table and the handlers. One per process, shared by every listener."""

    def __init__(self, broker: Broker, advertised: Advertised, *, pull_hold_max_ms: int = MAX_PULL_HOLD_MS) -> None:
        self.broker = broker
        self.adv = advertised
        self.pull_hold_max_ms = pull_hold_max_ms
        self.acl: Any = None  # rocketlite.security.acl.Acl when [security] enabled
        self._subs: dict[tuple[str, str, str], Subscription] = {}
        self._msg_id_key: tuple[str, int] | None = None
        self._msg_id_prefix = ""
        self._changed_handles: dict[tuple[str, str, bool, int, int], str] = {}
        self.handlers: dict[int, Handler] = {
            RC.GET_ROUTEINFO_BY_TOPIC: self.get_route,
            RC.GET_BROKER_CLUSTER_INFO: self.get_cluster_info,
            RC.GET_ALL_TOPIC_LIST_FROM_NAMESERVER: self.get_topic_list,
            RC.GET_TOPICS_BY_CLUSTER: self.get_topic_list,
            RC.GET_SYSTEM_TOPIC_LIST_FROM_NS: self.get_system_topic_list,
            RC.GET_KV_CONFIG: self.get_kv_config,
            RC.UPDATE_AND_CREATE_TOPIC: self.create_topic,
            RC.DELETE_TOPIC_IN_BROKER: self.delete_topic,
            RC.DELETE_TOPIC_IN_NAMESRV: self.delete_topic,
            RC.GET_ALL_TOPIC_CONFIG: self.get_all_topic_config,
            RC.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP: self.create_group,
            RC.GET_ALL_SUBSCRIPTIONGROUP_CONFIG: self.get_all_groups,
            RC.DELETE_SUBSCRIPTIONGROUP: self.delete_group,
            RC.UPDATE_BROKER_CONFIG: self.update_broker_config,
            RC.GET_BROKER_CONFIG: self.get_broker_config,
            RC.GET_BROKER_RUNTIME_INFO: self.get_runtime_info,
            RC.SEND_MESSAGE: self.send_message,
            RC.SEND_MESSAGE_V2: self.send_message,
            RC.SEND_BATCH_MESSAGE: self.send_message,
            RC.PULL_MESSAGE: self.pull_message,
            RC.QUERY_CONSUMER_OFFSET: self.query_consumer_offset,
            RC.UPDATE_CONSUMER_OFFSET: self.update_consumer_offset,
            RC.GET_MAX_OFFSET: self.get_max_offset,
            RC.GET_MIN_OFFSET: self.get_min_offset,
            RC.GET_EARLIEST_MSG_STORETIME: self.get_earliest_store_time,
            RC.SEARCH_OFFSET_BY_TIMESTAMP: self.search_offset,
            RC.HEART_BEAT: self.heartbeat,
            RC.UNREGISTER_CLIENT: self.unregister_client,
            RC.CHECK_CLIENT_CONFIG: self.check_client_config,
            RC.GET_CONSUMER_LIST_BY_GROUP: self.get_consumer_list,
            RC.CONSUMER_SEND_MSG_BACK: self.send_back,
            RC.END_TRANSACTION: self.end_transaction,
            RC.LOCK_BATCH_MQ: self.lock_batch,
            RC.UNLOCK_BATCH_MQ: self.unlock_batch,
            RC.QUERY_MESSAGE: self.query_message,
            RC.VIEW_MESSAGE_BY_ID: self.view_message,
            RC.GET_CONSUMER_RUNNING_INFO: self.get_consumer_running_info,
            RC.POP_MESSAGE: self.pop_message,
            RC.ACK_MESSAGE: self.ack_message,
            RC.BATCH_ACK_MESSAGE: self.batch_ack_message,
            RC.CHANGE_MESSAGE_INVISIBLETIME: self.change_invisible_time,
        }
        broker.add_group_listener(self._on_group_change)
        checker = getattr(broker, "add_transaction_checker", None)
        if checker is not None:
            checker(PROTOCOL, self._check_transaction)
        if hasattr(broker, "resets"):  # offset resets: 222 in, 220 out, pending resets (reset.py)
            from rocketlite.protocols.remoting.reset import install as install_resets

            self.resets = install_resets(self)

    # -- dispatch ------------------------------------------------------------------------------
    async def handle(self, session: Session, cmd: RemotingCommand) -> RemotingCommand | None:
        """Run one request; returns the response (None when none must be sent)."""
        handler = self.handlers.get(cmd.code)
        denied = acl_check(self.acl, cmd.code, cmd.ext, cmd.body) if self.acl is not None else None
        if denied is not None:  # [security] enabled: bad signature or no permission
            resp = cmd.response(R.NO_PERMISSION, remark=denied)
        elif handler is None:
            resp = cmd.response(R.REQUEST_CODE_NOT_SUPPORTED, remark=f" request type {cmd.code} not supported")
        else:
            try:
                resp = await handler(session, cmd)
            except MissingField as exc:
                resp = cmd.response(R.SYSTEM_ERROR, remark=str(exc))
            except BrokerError as exc:
                resp = cmd.response(error_code(exc), remark=str(exc))
            except (ValueError, KeyError, TypeError, AttributeError, OverflowError, struct.error) as exc:
                # malformed fields or bodies (wrong JSON shapes, non-numbers): the client's fault
                log.debug("bad request code %s from %s: %r", cmd.code, session.peer, exc)
                resp = cmd.response(R.SYSTEM_ERROR, remark=f"bad request: {exc!r}"[:512])
        if cmd.is_oneway or resp is None:
            return None
        return resp

    # -- helpers -------------------------------------------------------------------------------
    def store_host(self) -> str:
        return f"{self.adv.store_ip}:{self.adv.port}"

    def msg_id(self, commit_offset: int) -> str:
        adv = self.adv
        if self._msg_id_key != (adv.store_ip, adv.port):  # UPDATE_BROKER_CONFIG may move it
            self._msg_id_key = (adv.store_ip, adv.port)
            self._msg_id_prefix = offset_msg_id(adv.store_ip, adv.port, 0)[:16]
        return self._msg_id_prefix + "%016X" % (commit_offset & 0xFFFFFFFFFFFFFFFF)

    def record(self, m: Message, *, topic: str | None = None, queue_id: int | None = None) -> bytes:
        props = m.properties
        text = encode_properties(props) if props else ""
        if m.tags and PROP_TAGS not in props:
            text += f"{PROP_TAGS}\x01{m.tags}\x02"
        if m.keys and PROP_KEYS not in props:
            text += f"{PROP_KEYS}\x01{m.keys}\x02"
        if "CLUSTER" not in props:
            text += f"CLUSTER\x01{self.broker.settings.cluster_name}\x02"
        prepared = 0
        pto = props.get("__RL_PREPARED_OFFSET") or props.get("TRAN_PREPARED_OFFSET") if props else None
        if pto and pto.lstrip("-").isdigit():
            prepared = int(pto)
        store_host = self.store_host()
        return pack_record(
            m.topic if topic is None else topic, m.body, text,
            m.queue_id if queue_id is None else queue_id, m.flag, max(0, m.queue_offset), max(0, m.commit_offset),
            m.sys_flag, m.born_timestamp, m.born_host or store_host, m.store_timestamp, store_host,
            m.reconsume_times, prepared,
        )

    def subscription(self, topic: str, expression: str, kind: str) -> Subscription:
        key = (topic, expression, kind)
        sub = self._subs.get(key)
        if sub is None:
            if len(self._subs) > 4096:
                self._subs.clear()
            sub = self._subs[key] = Subscription.make(topic, expression or "*", kind or "TAG")
        return sub

    def standard_json(self, cmd: RemotingCommand) -> bool:
        return cmd.version >= STANDARD_JSON_VERSION or ext_bool(cmd.ext.get("acceptStandardJsonOnly"))

    def broker_data(self) -> dict[str, Any]:
        s = self.broker.settings
        return {"brokerAddrs": {0: self.adv.addr}, "brokerName": s.broker_name, "cluster": s.cluster_name}

    # -- NameServer ----------------------------------------------------------------------------
    def route_queues(self, topic: str) -> tuple[int, int, int] | None:
        """(read, write, perm) for a topic's route, or None if it has none."""
        tc = self.broker.topics.get(topic)
        if tc is not None:
            return tc.read_queues, tc.write_queues, tc.perm
        try:
            self.broker.validate_topic_name(topic)
        except BadRequest:
            return None
        if topic.startswith(("%RETRY%", "%DLQ%")):
            return 1, 1, 6
        if topic == DEFAULT_TOPIC or self.broker.settings.auto_create_topics:
            n = self.broker.settings.default_queue_count
            return n, n, 6
        return None

    async def get_route(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        topic = Ext(cmd.ext).str("topic")
        q = self.route_queues(topic)
        if q is None:
            return cmd.response(R.TOPIC_NOT_EXIST, remark=f"No topic route info in name server for the topic: {topic}")
        read, write, perm = q
        s = self.broker.settings
        route = {
            "brokerDatas": [{**self.broker_data(), "enableActingMaster": False}],
            "filterServerTable": {},
            "queueDatas": [{"brokerName": s.broker_name, "perm": perm, "readQueueNums": read,
                            "topicSysFlag": 0, "writeQueueNums": write}],
        }
        return cmd.response(body=encode_json_body(route, standard=self.standard_json(cmd)))

    async def get_cluster_info(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        s = self.broker.settings
        info = {"brokerAddrTable": {s.broker_name: self.broker_data()},
                "clusterAddrTable": {s.cluster_name: [s.broker_name]}}
        return cmd.response(body=encode_json_body(info, standard=self.standard_json(cmd)))

    async def get_topic_list(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        names = list(self.broker.topic_names())
        return cmd.response(body=encode_json_body({"topicList": names, "brokerAddr": self.adv.addr}))

    async def get_system_topic_list(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        names = [t for t in self.broker.topic_names() if self.broker.topics[t].system] or [DEFAULT_TOPIC]
        return cmd.response(body=encode_json_body({"topicList": names}))

    async def get_kv_config(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        e = Ext(cmd.ext)
        return cmd.response(R.QUERY_NOT_FOUND,
                            remark=f"No config item, Namespace: {e.opt('namespace')} Key: {e.opt('key')}")

    async def create_topic(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        e = Ext(cmd.ext)
        topic = e.str("topic")
        read = e.int("readQueueNums", default=self.broker.settings.default_queue_count)
        write = e.int("writeQueueNums", default=read)
        await self.broker.create_topic(topic, read_queues=read, write_queues=write, perm=e.int("perm", default=6),
                                       order=e.bool("order"))
        return cmd.response()

    async def delete_topic(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        await self.broker.delete_topic(Ext(cmd.ext).str("topic"))
        return cmd.response()

    def _data_version(self) -> dict[str, int]:
        return {"timestamp": self.broker.now_ms(), "counter": len(self.broker.topics) + len(self.broker.groups)}

    async def get_all_topic_config(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        table = {
            name: {"topicName": name, "readQueueNums": tc.read_queues, "writeQueueNums": tc.write_queues,
                   "perm": tc.perm, "topicFilterType": "SINGLE_TAG", "topicSysFlag": 0, "order": tc.order}
            for name, tc in self.broker.topics.items()
        }
        return cmd.response(body=encode_json_body({"topicConfigTable": table, "dataVersion": self._data_version()}))

    async def create_group(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        body = decode_json_body(cmd.body) or {}
        name = body.get("groupName")
        if not name:
            raise BadRequest("groupName is required")
        fields: dict[str, Any] = {}
        if "retryMaxTimes" in body:
            fields["max_reconsume_times"] = int(body["retryMaxTimes"])
        if "consumeMessageOrderly" in body:
            fields["consume_orderly"] = bool(body["consumeMessageOrderly"])
        if "retryQueueNums" in body:
            fields["retry_queues"] = int(body["retryQueueNums"])
        await self.broker.create_group(str(name), **fields)
        return cmd.response()

    async def get_all_groups(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        table = {
            name: {"groupName": name, "consumeEnable": True, "consumeFromMinEnable": True,
                   "consumeBroadcastEnable": True, "retryQueueNums": gc.retry_queues,
                   "retryMaxTimes": gc.max_reconsume_times, "brokerId": 0, "whichBrokerWhenConsumeSlowly": 1,
                   "notifyConsumerIdsChangedEnable": True, "consumeMessageOrderly": gc.consume_orderly}
            for name, gc in self.broker.groups.items()
        }
        return cmd.response(body=encode_json_body({"subscriptionGroupTable": table,
                                                   "dataVersion": self._data_version()}))

    async def delete_group(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        await self.broker.delete_group(Ext(cmd.ext).str("groupName"))
        return cmd.response()

    async def update_broker_config(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        props = parse_java_properties(cmd.body.decode("utf-8", "replace"))
        host = props.get("brokerIP1")
        if host:
            self.adv.host = host
            if all(p.isdigit() for p in host.split(".")) and host.count(".") == 3:
                self.adv.store_ip = host
        port = props.get("listenPort")
        if port:
            try:
                p = int(port)
            except ValueError:
                raise BadRequest(f"listenPort is not a number: {port!r}") from None
            if not 0 < p < 65536:
                raise BadRequest(f"listenPort out of range: {p}")
            self.adv.port = p
        if host or port:
            log.info("remoting: advertised broker address is now %s", self.adv.addr)
        return cmd.response()

    def broker_config(self) -> dict[str, Any]:
        s = self.broker.settings
        return {
            "brokerName": s.broker_name, "brokerClusterName": s.cluster_name, "brokerId": 0,
            "brokerIP1": self.adv.host, "listenPort": self.adv.port,
            "autoCreateTopicEnable": s.auto_create_topics, "autoCreateSubscriptionGroup": s.auto_create_groups,
            "defaultTopicQueueNums": s.default_queue_count, "maxMessageSize": s.max_message_size,
            "brokerRole": "ASYNC_MASTER", "messageDelayLevel": self.broker.settings.message_delay_level,
        }

    async def get_broker_config(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        body = format_java_properties(self.broker_config()).encode()
        return cmd.response(body=body, ext={"version": encode_json_body(self._data_version()).decode()})

    async def get_runtime_info(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        stats = {}
        try:
            stats = dict(self.broker.store.stats())
        except Exception:  # pragma: no cover - optional counters
            pass
        table = {"brokerVersion": str(STANDARD_JSON_VERSION), "brokerVersionDesc": "rocketlite",
                 **{k: str(v) for k, v in stats.items()}}
        return cmd.response(body=encode_json_body({"table": table}))

    # -- send ----------------------------------------------------------------------------------
    def _message_from(self, session: Session, topic: str, body: bytes, props: dict[str, str], *,
                      queue_id: int, flag: int, sys_flag: int, born_ts: int, reconsume: int) -> Message:
        if sys_flag & SYSFLAG_COMPRESSED and not (sys_flag & 0x700 and sys_flag & 0x700 != 0x300):
            # zlib (4.x default / 5.x type ZLIB): store plain so every protocol reads the same bytes
            try:
                body = zlib.decompress(body)
                sys_flag &= ~(SYSFLAG_COMPRESSED | 0x700)
            except zlib.error:
                pass
        if PROP_START_DELIVER_TIME in props and PROP_DELIVER_TIME_MS not in props:
            props[PROP_DELIVER_TIME_MS] = props[PROP_START_DELIVER_TIME]
        return Message(
            topic=topic, body=body, queue_id=queue_id, tags=props.get(PROP_TAGS, ""),
            keys=props.get(PROP_KEYS, ""), properties=props, flag=flag, sys_flag=sys_flag,
            born_timestamp=born_ts, born_host=session.peer, reconsume_times=reconsume,
        )

    def _ensure_producer(self, session: Session, group: str) -> None:
        """A transactional producer must be reachable for check-backs even before its first
        heartbeat (the C++ clients send one only every 30 s): register its connection."""
        if any(c.session is session for c in self.broker.producers_of(group)):
            return
        cid = f"{session.peer}@remoting"
        self.broker.register_producer(ClientInfo(cid, group, role="producer", protocol=PROTOCOL, session=session))
        state: ConnState | None = getattr(session, "state", None)
        if state is not None:
            state.clients.add((cid, group, "producer"))

    async def send_message(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        (group, topic, queue_id, sys_flag, born_ts, flag, props_text, reconsume, max_reconsume,
         batch_flag) = _send_fields(cmd.ext, cmd.code != RC.SEND_MESSAGE)
        if len(props_text) > 8191 and len(props_text.encode()) > 32767:  # at most 4 bytes per character
            return cmd.response(R.MESSAGE_ILLEGAL, remark="the message properties size is over 32K")
        props = decode_properties(props_text)
        is_batch = cmd.code == RC.SEND_BATCH_MESSAGE or (batch_flag is not None and ext_bool(batch_flag))
        if topic.startswith("%RETRY%"):
            group_name = topic[len("%RETRY%"):]
            limit = int(max_reconsume) if max_reconsume and cmd.version >= 121 else None
            if limit is None:
                gc = self.broker.groups.get(group_name)
                limit = gc.max_reconsume_times if gc else self.broker.settings.max_reconsume_times
            if max_reconsume:
                props.setdefault(PROP_MAX_RECONSUME_TIMES, max_reconsume)
            if reconsume >= limit:  # as the Java broker's SEND path (RECONSUME_TIME counts the next attempt)
                topic = "%DLQ%" + group_name
                props.pop("DELAY", None)
                queue_id = 0
                if topic not in self.broker.topics:
                    await self.broker.create_topic(topic, queues=1)
        msgs: list[Message] = []
        if is_batch:
            try:
                items = decode_batch(cmd.body)
            except ValueError:
                if cmd.code == RC.SEND_BATCH_MESSAGE:
                    return cmd.response(R.MESSAGE_ILLEGAL, remark="the batch body cannot be decoded")
                items = []  # a C++ "batch" flag on a plain body: store it as one message
            shared = {k: v for k, v in props.items() if k != "UNIQ_KEY"}  # each message keeps its own id
            for it in items:
                p = dict(shared)
                p.update(it.properties)
                msgs.append(self._message_from(session, topic, it.body, p, queue_id=queue_id, flag=it.flag,
                                               sys_flag=sys_flag, born_ts=born_ts, reconsume=reconsume))
        if not msgs:
            msgs = [self._message_from(session, topic, cmd.body, props, queue_id=queue_id, flag=flag,
                                       sys_flag=sys_flag, born_ts=born_ts, reconsume=reconsume)]
        if group and PROP_PRODUCER_GROUP_KEY not in msgs[0].properties and sys_flag & 0xC == 0x4:
            for m in msgs:
                m.properties[PROP_PRODUCER_GROUP_KEY] = group
        if group and (sys_flag & 0xC == 0x4 or ext_bool(props.get("TRAN_MSG"))):
            self._ensure_producer(session, group)
        results = await self.broker.send(msgs)
        return self._send_response(cmd, topic, msgs, results)

    def _send_response(self, cmd: RemotingCommand, topic: str, msgs: list[Message],
                       results: list[SendResult]) -> RemotingCommand:
        if len(msgs) == 1:
            METRICS.messages_in(PROTOCOL, topic, 1, len(msgs[0].body))
        else:
            METRICS.messages_in(PROTOCOL, topic, len(msgs), sum(len(m.body) for m in msgs))
        first = results[0]
        msg_id = self.msg_id
        ext = {
            "msgId": msg_id(first.commit_offset) if len(results) == 1
            else ",".join(msg_id(r.commit_offset) for r in results),
            "queueId": str(first.queue_id),
            "queueOffset": str(first.queue_offset),
            "transactionId": first.transaction_id or first.unique_id,
            "MSG_REGION": "DefaultRegion",
            "TRACE_ON": "true",
        }
        if len(results) > 1:
            ext["batchUniqId"] = ",".join(r.unique_id for r in results)
        return cmd.response(ext=ext)

    def _plain_send(self, session: Session, cmd: RemotingCommand) -> tuple[str, Message] | None:
        """(topic, message) of a SEND_MESSAGE(_V2) that needs none of send_message's special paths
        (batch, transaction, retry topic, ACL, oversized properties), else None."""
        if cmd.code == RC.SEND_BATCH_MESSAGE or self.acl is not None:
            return None
        try:
            (_, topic, queue_id, sys_flag, born_ts, flag, props_text, reconsume, _,
             batch_flag) = _send_fields(cmd.ext, cmd.code != RC.SEND_MESSAGE)
        except (MissingField, BrokerError):
            return None
        if (sys_flag & 0xC or topic.startswith("%RETRY%") or (batch_flag is not None and ext_bool(batch_flag))
                or len(props_text) > 8191):
            return None
        props = decode_properties(props_text)
        if ext_bool(props.get("TRAN_MSG")):
            return None
        return topic, self._message_from(session, topic, cmd.body, props, queue_id=queue_id, flag=flag,
                                          sys_flag=sys_flag, born_ts=born_ts, reconsume=reconsume)

    async def handle_sends(self, session: Session, cmds: list[RemotingCommand]) -> list[RemotingCommand | None]:
        """Answers to sends that queued behind each other for one (topic, queue) on one connection,
        in order. Plain ones are stored with one ``broker.send`` (one store group: they would have
        committed one after the other); anything else, or a group the broker refuses as a whole,
        goes through :meth:`handle` one by one, so each request still gets its own answer."""
        plain = [self._plain_send(session, cmd) for cmd in cmds]
        if all(p is not None for p in plain):
            msgs = [p[1] for p in plain]  # type: ignore[index]
            try:
                results = await self.broker.send(msgs)
            except (BrokerError, ValueError, KeyError, TypeError, AttributeError, OverflowError, struct.error):
                pass  # refused before anything was written: each request finds out on its own
            else:
                return [None if cmd.is_oneway else self._send_response(cmd, p[0], [m], [r])  # type: ignore[index]
                        for cmd, p, m, r in zip(cmds, plain, msgs, results)]
        return [await self.handle(session, cmd) for cmd in cmds]

    # -- pull ----------------------------------------------------------------------------------
    async def pull_message(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        e = Ext(cmd.ext)
        group = e.str("consumerGroup")
        topic = e.str("topic")
        queue_id = e.int("queueId")
        offset = e.int("queueOffset")
        max_nums = min(max(1, e.int("maxMsgNums", default=32)), 1024)
        sys_flag = e.int("sysFlag", default=0)
        commit = e.int("commitOffset", default=-1)
        suspend = e.int("suspendTimeoutMillis", default=15_000)
        if sys_flag & 0x1 and commit >= 0:
            await self.broker.commit_offset(group, topic, queue_id, commit)
        if sys_flag & 0x4:
            kind = e.opt("expressionType") or "TAG"
            try:
                sub = self.subscription(topic, e.opt("subscription") or "*", kind)
            except Exception as exc:
                return cmd.response(R.SUBSCRIPTION_PARSE_FAILED, remark=f"parse the consumer's subscription failed: {exc}")
        else:
            found = self.broker.subscription_of(group, topic)
            if found is None:
                return cmd.response(R.SUBSCRIPTION_NOT_EXIST,
                                    remark=f"the consumer's subscription not exist, group: {group} topic: {topic}")
            sub = found
        wait = min(max(0, suspend), self.pull_hold_max_ms) if sys_flag & 0x2 else 0
        res = await self.broker.pull(topic, queue_id, offset, max_nums, filter=sub.filter, wait_ms=wait)
        ext: dict[str, Any] = {"suggestWhichBrokerId": 0, "minOffset": res.min_offset, "maxOffset": res.max_offset}
        if res.status is PullStatus.FOUND:
            parts = []
            size = 0
            nbytes = 0
            next_offset = res.next_offset
            for m in res.messages:
                rec = self.record(m)
                if parts and size + len(rec) > MAX_PULL_BODY:
                    next_offset = m.queue_offset
                    break
                parts.append(rec)
                size += len(rec)
                nbytes += len(m.body)
            METRICS.messages_out(PROTOCOL, topic, len(parts), nbytes)
            ext.update(nextBeginOffset=next_offset, topicSysFlag=0, groupSysFlag=0)
            return cmd.response(ext=ext, body=b"".join(parts), remark="FOUND")
        ext["nextBeginOffset"] = res.next_offset
        if res.status is PullStatus.NO_NEW_MSG:
            remark = "NO_MESSAGE_IN_QUEUE" if res.max_offset == 0 else "OFFSET_OVERFLOW_ONE"
            return cmd.response(R.PULL_NOT_FOUND, ext=ext, remark=remark)
        if res.status is PullStatus.NO_MATCHED_MSG:
            return cmd.response(R.PULL_RETRY_IMMEDIATELY, ext=ext, remark="NO_MATCHED_MESSAGE")
        return cmd.response(R.PULL_OFFSET_MOVED, ext=ext, remark="OFFSET_OVERFLOW_BADLY")

    # -- offsets -------------------------------------------------------------------------------
    async def query_consumer_offset(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        e = Ext(cmd.ext)
        group, topic, qid = e.str("consumerGroup"), e.str("topic"), e.int("queueId")
        off = self.broker.query_offset(group, topic, qid)
        if off is not None:
            return cmd.response(ext={"offset": off})
        if e.opt("setZeroIfNotFound") != "false" and self.broker.min_offset(topic, qid) <= 0:
            return cmd.response(ext={"offset": 0})
        return cmd.response(R.QUERY_NOT_FOUND, remark="Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first")

    async def update_consumer_offset(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        e = Ext(cmd.ext)
        off = e.int("commitOffset")
        if off >= 0:
            await self.broker.commit_offset(e.str("consumerGroup"), e.str("topic"), e.int("queueId"), off)
        return cmd.response()

    async def get_max_offset(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        e = Ext(cmd.ext)
        return cmd.response(ext={"offset": self.broker.max_offset(e.str("topic"), e.int("queueId"))})

    async def get_min_offset(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        e = Ext(cmd.ext)
        return cmd.response(ext={"offset": self.broker.min_offset(e.str("topic"), e.int("queueId"))})

    async def get_earliest_store_time(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        e = Ext(cmd.ext)
        topic, qid = e.str("topic"), e.int("queueId")
        msgs = await self.broker.store.read_queue(topic, qid, self.broker.min_offset(topic, qid), 1)
        return cmd.response(ext={"timestamp": msgs[0].store_timestamp if msgs else 0})

    async def search_offset(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        e = Ext(cmd.ext)
        off = await self.broker.search_offset(e.str("topic"), e.int("queueId"), e.int("timestamp"))
        return cmd.response(ext={"offset": off})

    # -- clients -------------------------------------------------------------------------------
    def _on_group_change(self, group: str, event: str) -> None:
        for c in self.broker.consumers_of(group):
            if c.protocol != PROTOCOL or c.session is None:
                continue
            c.session.send_soon(RemotingCommand(
                code=RC.NOTIFY_CONSUMER_IDS_CHANGED, flag=FLAG_ONEWAY, ext={"consumerGroup": group}))

    async def heartbeat(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        data = decode_json_body(cmd.body) or {}
        client_id = str(data.get("clientID") or data.get("clientId") or "")
        if not client_id:
            raise BadRequest("heartbeat without clientID")
        state: ConnState | None = getattr(session, "state", None)
        for p in data.get("producerDataSet") or []:
            g = str(p.get("groupName") or "")
            if not g or g == "CLIENT_INNER_PRODUCER":
                continue
            self.broker.register_producer(ClientInfo(client_id, g, role="producer", protocol=PROTOCOL, session=session))
            if state is not None:
                state.clients.add((client_id, g, "producer"))
        for c in data.get("consumerDataSet") or []:
            g = str(c.get("groupName") or "")
            if not g:
                continue
            subs: dict[str, Subscription] = {}
            for sd in c.get("subscriptionDataSet") or []:
                topic = str(sd.get("topic") or "")
                if not topic:
                    continue
                try:
                    subs[topic] = self.subscription(topic, str(sd.get("subString") or "*"),
                                                    str(sd.get("expressionType") or "TAG"))
                except Exception as exc:
                    log.info("remoting: ignoring unparsable subscription %r of %s: %s", sd.get("subString"), g, exc)
            if self.broker.settings.auto_create_groups and g not in self.broker.groups:
                await self.broker.get_or_create_group(g)
            retry = "%RETRY%" + g
            model = MESSAGE_MODELS.get(c.get("messageModel"), "CLUSTERING")
            if retry not in self.broker.topics and model == "CLUSTERING":
                await self.broker.create_topic(retry, queues=1)
            info = ClientInfo(client_id, g, role="consumer", protocol=PROTOCOL, subscriptions=subs,
                              consume_type=CONSUME_TYPES.get(c.get("consumeType"), "PUSH"),
                              message_model=model, session=session)
            self.broker.register_consumer(info)
            if state is not None:
                state.clients.add((client_id, g, "consumer"))
        return cmd.response()

    async def unregister_client(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        e = Ext(cmd.ext)
        cid = e.str("clientID")
        for g in (e.opt("producerGroup"), e.opt("consumerGroup")):
            if g:
                self.broker.unregister_client(cid, group=g)
        return cmd.response()

    def connection_closed(self, session: Session) -> None:
        """Drop the clients that registered over a connection that is gone."""
        state: ConnState | None = getattr(session, "state", None)
        if state is None:
            return
        for cid, g, role in state.clients:
            registry = self.broker.clients if role == "consumer" else self.broker.producers
            info = registry.get(g, {}).get(cid)
            if info is not None and info.session is session:
                self.broker.unregister_client(cid, group=g)
                if role == "consumer":
                    locks = getattr(self.broker, "locks", None)
                    if locks is not None:
                        locks.unlock_client(cid)
        state.clients.clear()

    async def check_client_config(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        data = decode_json_body(cmd.body) or {}
        sd = data.get("subscriptionData") or {}
        try:
            Subscription.make(str(sd.get("topic") or ""), str(sd.get("subString") or "*"),
                              str(sd.get("expressionType") or "TAG"))
        except Exception as exc:
            return cmd.response(R.SUBSCRIPTION_PARSE_FAILED, remark=f"parse the consumer's subscription failed: {exc}")
        return cmd.response()

    async def get_consumer_list(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        group = Ext(cmd.ext).str("consumerGroup")
        ids = [c.client_id for c in self.broker.consumers_of(group) if c.protocol == PROTOCOL]
        if not ids:
            return cmd.response(R.SYSTEM_ERROR, remark=f"no consumer for this group, {group}")
        return cmd.response(body=encode_json_body({"consumerIdList": ids}))

    async def get_consumer_running_info(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        e = Ext(cmd.ext)
        group, cid = e.str("consumerGroup"), e.str("clientId")
        target = next((c for c in self.broker.consumers_of(group) if c.client_id == cid), None)
        if target is None or target.protocol != PROTOCOL or target.session is None:
            return cmd.response(R.CONSUMER_NOT_ONLINE, remark=f"The Consumer <{cid}> not online")
        fwd = RemotingCommand(code=RC.GET_CONSUMER_RUNNING_INFO, ext=dict(cmd.ext))
        answer = await target.session.request(fwd, 10_000)
        if answer is None:
            return cmd.response(R.SYSTEM_ERROR, remark=f"consumer <{cid}> did not answer in time")
        return cmd.response(answer.code, body=answer.body, remark=answer.remark, ext=answer.ext)

    # -- retry, transactions, orderly ----------------------------------------------------------
    async def send_back(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        e = Ext(cmd.ext)
        offset = e.int("offset")
        group = e.str("group")
        delay = e.int("delayLevel", default=0)
        max_times = e.opt("maxReconsumeTimes")
        msg = await self.broker.get_message(offset)
        if msg is None:
            return cmd.response(R.SYSTEM_ERROR, remark="look message by offset failed, " + str(offset))
        limit = int(max_times) if max_times and cmd.version >= 121 else None
        await self.broker.send_back(group, msg, delay_level=delay, max_reconsume_times=limit,
                                    origin_msg_id=e.opt("originMsgId") or "", origin_topic=e.opt("originTopic") or "")
        return cmd.response()

    async def end_transaction(self, session: Session, cmd: RemotingCommand) -> RemotingCommand | None:
        e = Ext(cmd.ext)
        kind = e.int("commitOrRollback")
        if kind not in (0x8, 0xC):
            return cmd.response()  # UNKNOWN: nothing to do; C++ clients wait for an answer
        action = "commit" if kind == 0x8 else "rollback"
        try:
            await self.broker.end_transaction(
                e.opt("producerGroup") or "",
                transaction_id=e.opt("transactionId") or "",
                unique_id=e.opt("msgId") or "",
                commit_offset=e.int("commitLogOffset", default=-1),
                action=action,
                from_check=e.bool("fromTransactionCheck"),
            )
        except NotFound as exc:
            return cmd.response(R.SYSTEM_ERROR, remark=f"Find prepared transaction message failed: {exc}")
        return cmd.response()

    async def _check_transaction(self, client: ClientInfo, half: Message, transaction_id: str) -> None:
        session = client.session
        if session is None:
            return
        real_topic = half.properties.get("REAL_TOPIC") or half.topic
        try:
            real_qid = int(half.properties.get("REAL_QID", half.queue_id))
        except ValueError:
            real_qid = half.queue_id
        ext = {
            "topic": real_topic, "commitLogOffset": half.commit_offset, "offsetMsgId": self.msg_id(half.commit_offset),
            "msgId": half.unique_id, "transactionId": transaction_id or half.unique_id,
            "tranStateTableOffset": half.queue_offset, "bname": self.broker.settings.broker_name,
        }
        session.send_soon(RemotingCommand(code=RC.CHECK_TRANSACTION_STATE, flag=FLAG_ONEWAY,
                                          ext={k: str(v) for k, v in ext.items()},
                                          body=self.record(half, topic=real_topic, queue_id=real_qid)))

    @staticmethod
    def _mq_set(body: dict[str, Any]) -> list[tuple[str, int]]:
        out = []
        for mq in body.get("mqSet") or []:
            out.append((str(mq["topic"]), int(mq["queueId"])))
        return out

    def _mq_json(self, queues: list[tuple[str, int]]) -> list[dict[str, Any]]:
        name = self.broker.settings.broker_name
        return [{"topic": t, "brokerName": name, "queueId": q} for t, q in queues]

    async def lock_batch(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        body = decode_json_body(cmd.body) or {}
        group, cid = str(body.get("consumerGroup") or ""), str(body.get("clientId") or "")
        wanted = self._mq_set(body)
        locked = self.broker.lock_queues(group, cid, wanted)
        if hasattr(locked, "__await__"):
            locked = await locked
        return cmd.response(body=encode_json_body({"lockOKMQSet": self._mq_json(list(locked))}))

    async def unlock_batch(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        body = decode_json_body(cmd.body) or {}
        group, cid = str(body.get("consumerGroup") or ""), str(body.get("clientId") or "")
        res = self.broker.unlock_queues(group, cid, self._mq_set(body))
        if hasattr(res, "__await__"):
            await res
        return cmd.response()

    # -- lookups -------------------------------------------------------------------------------
    async def query_message(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        e = Ext(cmd.ext)
        topic, key = e.str("topic"), e.str("key")
        max_num = min(max(1, e.int("maxNum", default=32)), 64)
        begin, end = e.int("beginTimestamp", default=0), e.int("endTimestamp", default=2**62)
        msgs = [m for m in await self.broker.query_by_key(topic, key, max_num * 2)
                if begin <= m.store_timestamp <= end or e.bool("_UNIQUE_KEY_QUERY")]
        msgs = msgs[-max_num:]
        if not msgs:
            return cmd.response(R.QUERY_NOT_FOUND, remark="can not find message, maybe time range not correct")
        last = msgs[-1]
        return cmd.response(body=b"".join(self.record(m) for m in msgs),
                            ext={"indexLastUpdateTimestamp": last.store_timestamp,
                                 "indexLastUpdatePhyoffset": last.commit_offset})

    async def view_message(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        off = Ext(cmd.ext).int("offset")
        m = await self.broker.get_message(off) if off >= 0 else None
        if m is None:
            return cmd.response(R.SYSTEM_ERROR, remark=f"can not find message by the offset, {off}")
        return cmd.response(body=self.record(m))

    # -- POP (5.x remoting) --------------------------------------------------------------------
    # The POP_CK "extraInfo" a client echoes in ACK / CHANGE_INVISIBLETIME is
    #   "<ck> <popTime> <invisibleTime> <reviveQid> <topicKind> <brokerName> <queueId> <queueOffset>".
    # We carry the core's receipt handle in it without server state: ck = the handle's 60-bit
    # nonce as a decimal, reviveQid = 1 when the message came from the retry queue, and
    # topicKind = 0 (records carry the subscribed topic). A Java client rebuilds extraInfo itself
    # after CHANGE_INVISIBLETIME (ck = queue offset), so handles issued by a change are remembered.
    def _extra_info(self, handle: str, pop_time: int, invisible: int) -> str:
        h = parse_handle(handle)
        ck = int(h.nonce, 16) if all(c in "0123456789abcdef" for c in h.nonce) and len(h.nonce) <= 15 else 0
        return (f"{ck} {pop_time} {invisible} {1 if h.retry else 0} 0 {self.broker.settings.broker_name} "
                f"{h.queue_id} {h.offset}")

    def _handle_from(self, group: str, topic: str, extra: str, queue_id: int | None, offset: int | None) -> str:
        parts = extra.split(" ")
        if len(parts) < 8:
            raise BadRequest(f"bad extraInfo {extra!r}")
        ck, retry = int(parts[0]), parts[3] == "1"
        qid = int(parts[6]) if queue_id is None else queue_id
        off = int(parts[7]) if offset is None else offset
        changed = self._changed_handles.get((group, topic, retry, qid, off))
        if changed is not None:
            if ck == off or (ck >= 0 and make_handle(retry, qid, off, ck) == changed):
                return changed
        if ck < 0:
            raise InvalidReceipt("receipt handle expired, superseded or already acknowledged")
        return make_handle(retry, qid, off, ck)

    async def pop_message(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        e = Ext(cmd.ext)
        group, topic = e.str("consumerGroup"), e.str("topic")
        qid = e.int("queueId", default=-1)
        max_nums = min(max(1, e.int("maxMsgNums", default=32)), 32)
        invisible = max(1000, e.int("invisibleTime", default=60_000))
        poll = min(max(0, e.int("pollTime", default=0)), self.pull_hold_max_ms)
        init_mode = "last" if e.int("initMode", default=0) == 1 else "first"  # ConsumeInitMode MIN=0, MAX=1
        exp = e.opt("exp")
        try:
            flt = self.subscription(topic, exp or "*", e.opt("expType") or "TAG").filter
        except BrokerError as exc:
            return cmd.response(R.SUBSCRIPTION_PARSE_FAILED, remark=f"parse the consumer's subscription failed: {exc}")
        items = await self.broker.pop(group, topic, max_nums, invisible, queue_id=qid if qid >= 0 else None,
                                      filter=flt, wait_ms=poll, fifo=e.bool("order"),
                                      client_id=session.peer, init_mode=init_mode)
        pop_time = self.broker.now_ms()
        ext: dict[str, Any] = {"popTime": pop_time, "invisibleTime": invisible, "reviveQid": 0, "restNum": 0}
        if not items:
            code = R.POLLING_TIMEOUT if poll > 0 else R.PULL_NOT_FOUND
            return cmd.response(code, ext=ext, remark="no new message")
        parts = []
        starts: dict[tuple[int, int], int] = {}
        offs: dict[tuple[int, int], list[int]] = {}
        METRICS.messages_out(PROTOCOL, topic, len(items), sum(len(msg.body) for msg, _ in items))
        for msg, handle in items:
            h = parse_handle(handle)
            m = msg.copy()
            m.properties["POP_CK"] = self._extra_info(handle, pop_time, invisible)
            m.properties.setdefault("1ST_POP_TIME", str(pop_time))
            parts.append(self.record(m, queue_id=h.queue_id))
            key = (1 if h.retry else 0, h.queue_id)
            starts.setdefault(key, h.offset)
            offs.setdefault(key, []).append(h.offset)
        ext["startOffsetInfo"] = ";".join(f"{k} {q} {o}" for (k, q), o in starts.items())
        ext["msgOffsetInfo"] = ";".join(f"{k} {q} {','.join(map(str, o))}" for (k, q), o in offs.items())
        if e.bool("order"):
            ext["orderCountInfo"] = ";".join(f"{k} {q} 0" for (k, q) in starts)
        return cmd.response(ext=ext, body=b"".join(parts), remark="FOUND")

    async def ack_message(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        e = Ext(cmd.ext)
        group, topic = e.str("consumerGroup"), e.str("topic")
        handle = self._handle_from(group, topic, e.str("extraInfo"), e.int("queueId", default=None) if e.opt("queueId") else None,
                                   e.int("offset") if e.opt("offset") else None)
        await self.broker.ack(group, topic, handle)
        self._changed_handles.pop(self._position(group, topic, handle), None)
        return cmd.response()

    async def batch_ack_message(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        return cmd.response(R.REQUEST_CODE_NOT_SUPPORTED,
                            remark=f" request type {cmd.code} not supported (acknowledge one by one)")

    @staticmethod
    def _position(group: str, topic: str, handle: str) -> tuple[str, str, bool, int, int]:
        h = parse_handle(handle)
        return group, topic, h.retry, h.queue_id, h.offset

    async def change_invisible_time(self, session: Session, cmd: RemotingCommand) -> RemotingCommand:
        e = Ext(cmd.ext)
        group, topic = e.str("consumerGroup"), e.str("topic")
        handle = self._handle_from(group, topic, e.str("extraInfo"), e.int("queueId", default=None) if e.opt("queueId") else None,
                                   e.int("offset") if e.opt("offset") else None)
        invisible = max(0, e.int("invisibleTime"))
        new = await self.broker.change_invisible(group, topic, handle, invisible)
        if len(self._changed_handles) > 100_000:
            self._changed_handles.clear()
        self._changed_handles[self._position(group, topic, new)] = new
        h = parse_handle(new)
        return cmd.response(ext={"popTime": self.broker.now_ms(), "invisibleTime": invisible,
                                 "reviveQid": 1 if h.retry else 0})


PROP_PRODUCER_GROUP_KEY = "PGROUP"
