"""Bridge configuration and the pure rules of forwarding (no I/O here).

A bridge is one ``[bridges.<name>]`` table::

    [bridges.cloud]
    upstream = "remoting://ns1.example.com:9876;ns2.example.com:9876"
    topics = ["telemetry"]                  # local topics forwarded as they are ("*" = all user topics)
    mqtt_filters = ["sensors/+/temperature"]  # plus MQTT publishes matching these filters
    pull_topics = ["commands"]              # upstream topics published locally (reverse direction)

Everything else has a default (see :class:`BridgeConfig`).
"""

from __future__ import annotations

import fnmatch
import random
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from rocketlite.core.message import (
    PROP_DELAY_LEVEL,
    PROP_DELIVER_TIME_MS,
    PROP_MQTT_TOPIC,
    PROP_REAL_QUEUE_ID,
    PROP_REAL_TOPIC,
    PROP_TRANSACTION_PREPARED,
    SYSFLAG_COMPRESSED,
    SYSFLAG_MULTI_TAGS,
    Message,
)
from rocketlite.protocols.remoting.codec import encode_properties
from rocketlite.protocols.mqtt.mapping import is_excluded_topic, rocketmq_topic
from rocketlite.protocols.mqtt.topics import topic_matches

PROP_BRIDGE = "rocketliteBridge"  # set on messages a bridge published locally (never forwarded back)
GROUP_PREFIX = "rocketlite-bridge-"

# Properties that would make the receiving side treat a delivered message as still pending.
_STRIP_OUT = (PROP_DELAY_LEVEL, PROP_DELIVER_TIME_MS, "TIMER_DELAY_SEC", "TIMER_DELAY_MS", "__RL_TIMER_ID",
              PROP_REAL_TOPIC, PROP_REAL_QUEUE_ID, PROP_TRANSACTION_PREPARED, "__STARTDELIVERTIME")
# ... and what a pull response adds on the client side or the upstream broker keeps for itself.
_STRIP_IN = (*_STRIP_OUT, "MIN_OFFSET", "MAX_OFFSET", "CLUSTER", "PGROUP")


class BridgeConfigError(ValueError):
    pass


@dataclass
class BridgeConfig:
    name: str
    namesrv: list[str]                  # NameServer addresses (remoting) or proxy endpoints (grpc)
    protocol: str = "remoting"          # remoting | grpc
    topics: list[str] = field(default_factory=list)
    mqtt_filters: list[str] = field(default_factory=list)
    pull_topics: list[str] = field(default_factory=list)
    upstream_topic_prefix: str = ""     # forwarded topic T is sent as prefix+T
    local_topic_prefix: str = ""        # pulled topic T is published locally as prefix+T
    producer_group: str = ""
    consumer_group: str = ""
    access_key: str = ""
    secret_key: str = ""
    tls: bool = False
    tls_verify: bool = True
    tls_ca_file: str = ""
    forward_from: str = "first"         # where a new forwarding position starts: first | last
    pull_from: str = "first"            # where a new upstream consumer group starts: first | last
    batch_size: int = 32
    batch_max_bytes: int = 1048576      # bodies per upstream request (a broker's maxMessageSize covers a whole batch)
    request_timeout_ms: int = 5000
    connect_timeout_ms: int = 3000
    retry_min_ms: int = 200
    retry_max_ms: int = 30000
    route_refresh_ms: int = 30000
    pull_suspend_ms: int = 10000
    pull_invisible_ms: int = 30000      # gRPC reverse: how long a received message stays invisible upstream before its ack

    @property
    def group(self) -> str:
        """The local consumer group whose committed offsets are the forwarding positions."""
        return GROUP_PREFIX + self.name

    def forwards(self, topic: str) -> bool:
        """Is any message of this local topic possibly forwarded?"""
        if is_excluded_topic(topic) or topic.startswith("%"):
            return False
        if self.forwards_all(topic):
            return True
        return any(self._filter_covers_topic(f, topic) for f in self.mqtt_filters)

    def forwards_all(self, topic: str) -> bool:
        """Is every message of this topic forwarded (named in ``topics``)?"""
        return any(t == topic or (any(c in t for c in "*?[") and fnmatch.fnmatchcase(topic, t)) for t in self.topics)

    @staticmethod
    def _filter_covers_topic(flt: str, topic: str) -> bool:
        first = flt.split("/", 1)[0]
        return first in ("+", "#") or rocketmq_topic(first) == topic

    def wants(self, msg: Message, *, all_of_topic: bool) -> bool:
        """Forward this stored message? (Messages this bridge brought down are never sent back.)"""
        if msg.properties.get(PROP_BRIDGE) == self.name:
            return False
        if all_of_topic:
            return True
        mt = msg.properties.get(PROP_MQTT_TOPIC)
        return bool(mt) and any(topic_matches(f, mt) for f in self.mqtt_filters)


def _list(value: Any, key: str, name: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise BridgeConfigError(f"bridges.{name}.{key} must be a list of strings")


def parse_upstream(text: str, name: str) -> tuple[str, list[str], bool]:
    """(protocol, addresses, tls implied by the scheme) of an ``upstream`` value."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "remoting", text
    if scheme not in ("remoting", "rocketmq", "grpc", "grpcs"):
        raise BridgeConfigError(f"bridges.{name}.upstream: unknown scheme {scheme!r} (remoting://, grpc://, grpcs://)")
    addrs = [a.strip() for a in rest.replace(",", ";").split(";") if a.strip()]
    for a in addrs:
        host, _, port = a.rpartition(":")
        if not host or not port.isdigit():
            raise BridgeConfigError(f"bridges.{name}.upstream: {a!r} is not host:port")
    if not addrs:
        raise BridgeConfigError(f"bridges.{name}.upstream is empty")
    protocol = "grpc" if scheme.startswith("grpc") else "remoting"
    return protocol, addrs, scheme == "grpcs"


def parse_bridge(name: str, table: Mapping[str, Any]) -> BridgeConfig | None:
    if not isinstance(table, Mapping):
        raise BridgeConfigError(f"[bridges.{name}] must be a table")
    if not table.get("enabled", True):
        return None
    known = set(BridgeConfig.__dataclass_fields__) | {"upstream", "enabled"}
    unknown = set(table) - known
    if unknown:
        raise BridgeConfigError(f"[bridges.{name}]: unknown keys {sorted(unknown)}")
    if "upstream" not in table:
        raise BridgeConfigError(f"[bridges.{name}] needs upstream = \"host:port\" (a NameServer)")
    protocol, addrs, tls = parse_upstream(str(table["upstream"]), name)
    cfg = BridgeConfig(name=name, namesrv=addrs, protocol=protocol, tls=tls)
    for key in ("topics", "mqtt_filters", "pull_topics"):
        setattr(cfg, key, _list(table.get(key), key, name))
    for key, f in BridgeConfig.__dataclass_fields__.items():
        if key in ("name", "namesrv", "protocol", "topics", "mqtt_filters", "pull_topics") or key not in table:
            continue
        value = table[key]
        default = getattr(cfg, key)
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise BridgeConfigError(f"bridges.{name}.{key} must be true or false")
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BridgeConfigError(f"bridges.{name}.{key} must be a non-negative integer")
        elif not isinstance(value, str):
            raise BridgeConfigError(f"bridges.{name}.{key} must be a string")
        setattr(cfg, key, value)
    for key in ("forward_from", "pull_from"):
        if getattr(cfg, key) not in ("first", "last"):
            raise BridgeConfigError(f"bridges.{name}.{key} must be first or last")
    if cfg.pull_invisible_ms < 1000:
        raise BridgeConfigError(f"bridges.{name}.pull_invisible_ms must be at least 1000 (an Apache proxy wants 10000)")
    if bool(cfg.access_key) != bool(cfg.secret_key):
        raise BridgeConfigError(f"bridges.{name}: access_key and secret_key go together")
    if not (cfg.topics or cfg.mqtt_filters or cfg.pull_topics):
        raise BridgeConfigError(f"[bridges.{name}] forwards nothing: set topics, mqtt_filters or pull_topics")
    for f in cfg.mqtt_filters:
        if not f or "#" in f[:-1] or any(("+" in p or "#" in p) and len(p) > 1 for p in f.split("/")):
            raise BridgeConfigError(f"bridges.{name}.mqtt_filters: {f!r} is not an MQTT topic filter")
    cfg.batch_size = max(1, min(cfg.batch_size, 1024))
    cfg.retry_min_ms = max(1, cfg.retry_min_ms)
    cfg.retry_max_ms = max(cfg.retry_min_ms, cfg.retry_max_ms)
    cfg.producer_group = cfg.producer_group or f"{GROUP_PREFIX}{name}"
    cfg.consumer_group = cfg.consumer_group or f"{GROUP_PREFIX}{name}"
    return cfg


def parse_bridges(section: Mapping[str, Any] | None) -> list[BridgeConfig]:
    """Every enabled bridge of the ``[bridges]`` section (a table of tables)."""
    out = []
    for name, table in (section or {}).items():
        if not name.replace("-", "").replace("_", "").isalnum():
            raise BridgeConfigError(f"bridge name {name!r}: use letters, digits, - and _")
        cfg = parse_bridge(name, table)
        if cfg is not None:
            out.append(cfg)
    return out


# -- forwarding rules ------------------------------------------------------------------------------

def upstream_queue(msg: Message, n: int) -> int:
    """The index (0..n-1) among the upstream's write queues a local message goes to.

    Deterministic, so one local queue (or one message group) always lands in one upstream queue
    and its order survives: a message group hashes like the local broker does; otherwise the
    local queue id modulo the upstream queue count.
    """
    if n <= 1:
        return 0
    group = msg.message_group
    if group:
        return zlib.crc32(group.encode()) % n
    return max(0, msg.queue_id) % n


def outgoing_properties(msg: Message) -> dict[str, str]:
    props = {k: v for k, v in msg.properties.items() if k not in _STRIP_OUT}
    if msg.tags:
        props["TAGS"] = msg.tags
    if msg.keys:
        props["KEYS"] = msg.keys
    return props


def outgoing_sys_flag(msg: Message) -> int:
    """Only the bits that describe the body survive (never a transaction state)."""
    return msg.sys_flag & (SYSFLAG_COMPRESSED | SYSFLAG_MULTI_TAGS)


def incoming_message(bridge: str, topic: str, body: bytes, properties: Mapping[str, str], *, flag: int,
                     sys_flag: int, born_timestamp: int, queue_id: int) -> Message:
    """A message pulled from upstream, as it is published locally."""
    props = {k: v for k, v in properties.items() if k not in _STRIP_IN}
    props[PROP_BRIDGE] = bridge
    if sys_flag & SYSFLAG_COMPRESSED:
        # a Java producer zlib-compresses large bodies; MQTT devices expect the payload itself
        try:
            body = zlib.decompress(body)
            sys_flag &= ~SYSFLAG_COMPRESSED
        except zlib.error:
            pass  # another codec (5.x LZ4/ZSTD): passed on compressed, flag kept
    msg = Message(topic=topic, body=body, tags=props.get("TAGS", ""), keys=props.get("KEYS", ""), properties=props,
                  flag=flag, sys_flag=sys_flag & (SYSFLAG_COMPRESSED | SYSFLAG_MULTI_TAGS),
                  born_timestamp=born_timestamp)
    msg.queue_id = -1 if msg.message_group else queue_id
    return msg


def backoff_ms(attempt: int, lo: int, hi: int, rnd: random.Random | None = None) -> float:
    """Exponential back-off: lo, 2 lo, 4 lo, ... capped at hi, with up to 20 % jitter below."""
    base = min(hi, lo * (2 ** min(attempt, 30)))
    r = (rnd or random).random()
    return base * (0.8 + 0.2 * r)


def runs(msgs: Sequence[Message], n: int, max_bytes: int = 1 << 20) -> list[tuple[int, list[Message]]]:
    """Split consecutive messages into runs that go to the same upstream queue (order kept), each
    run's bodies under ``max_bytes`` together (a broker checks a whole batch against its
    ``maxMessageSize``) unless a single message is larger."""
    out: list[tuple[int, list[Message]]] = []
    size = 0
    for m in msgs:
        q = upstream_queue(m, n)
        if out and out[-1][0] == q and size + len(m.body) <= max_bytes:
            out[-1][1].append(m)
            size += len(m.body)
        else:
            out.append((q, [m]))
            size = len(m.body)
    return out


def encode_send_batch(items: Sequence[tuple[bytes, Mapping[str, str], int]]) -> bytes:
    """A ``SEND_BATCH_MESSAGE`` body of (body, properties, flag) items, each with its body CRC
    (as the Java client writes it: brokers store that CRC and consumers may check it)."""
    out = []
    for body, props, flag in items:
        p = encode_properties(dict(props)).encode()
        size = 20 + len(body) + 2 + len(p)
        out.append(struct.pack(">iiiii", size, 0, zlib.crc32(body) & 0x7FFFFFFF, flag, len(body)) + body
                   + struct.pack(">h", len(p)) + p)
    return b"".join(out)
