"""The one message type every protocol maps onto.

Field names follow RocketMQ's stored message (topic, queue id, tags, keys, properties,
flag, sysFlag, born/store timestamps, reconsume times) because that is the richest model;
MQTT keeps its own topic, QoS and user properties as properties (see docs/mapping.md).
"""

from __future__ import annotations

import dataclasses
import os
import struct
from dataclasses import dataclass, field

# Property names shared with Apache RocketMQ (MessageConst); protocols map onto these.
PROP_KEYS = "KEYS"
PROP_TAGS = "TAGS"
PROP_UNIQ_KEY = "UNIQ_KEY"
PROP_DELAY_LEVEL = "DELAY"
PROP_DELIVER_TIME_MS = "TIMER_DELIVER_MS"
PROP_REAL_TOPIC = "REAL_TOPIC"
PROP_REAL_QUEUE_ID = "REAL_QID"
PROP_RETRY_TOPIC = "RETRY_TOPIC"
PROP_ORIGIN_MSG_ID = "ORIGIN_MESSAGE_ID"
PROP_TRANSACTION_PREPARED = "TRAN_MSG"
PROP_PRODUCER_GROUP = "PGROUP"
PROP_MESSAGE_GROUP = "__SHARDINGKEY"
PROP_MAX_RECONSUME_TIMES = "MAX_RECONSUME_TIMES"
PROP_CHECK_IMMUNITY_SECONDS = "CHECK_IMMUNITY_TIME_IN_SECONDS"
PROP_MQTT_TOPIC = "originMqttTopic"
PROP_MQTT_QOS = "mqttQos"

# MessageSysFlag bits (REMOTING.md 3.6).
SYSFLAG_COMPRESSED = 0x1
SYSFLAG_MULTI_TAGS = 0x2
SYSFLAG_TRANSACTION_NOT_TYPE = 0
SYSFLAG_TRANSACTION_PREPARED = 0x4
SYSFLAG_TRANSACTION_COMMIT = 0x8
SYSFLAG_TRANSACTION_ROLLBACK = 0xC
SYSFLAG_TRANSACTION_MASK = 0xC
SYSFLAG_BORNHOST_V6 = 0x10
SYSFLAG_STOREHOST_V6 = 0x20


def tag_hash(tags: str | None) -> int:
    """Java ``String.hashCode`` of the tag string as a signed 64-bit value (RocketMQ's tag code)."""
    if not tags:
        return 0
    h = 0
    for ch in tags:
        h = (31 * h + ord(ch)) & 0xFFFFFFFF
    if h >= 0x80000000:
        h -= 0x100000000
    return h


_PID = os.getpid() & 0xFFFF
_SALT = int.from_bytes(os.urandom(2), "big")
_COUNTER = [0]


def new_unique_id(now_ms: int) -> str:
    """A 32-hex-digit message id in the spirit of RocketMQ's UNIQ_KEY.

    16 bytes: host (4), pid (2), a random salt per process (2), milliseconds (4, wrapping),
    a per-process counter (4).
    """
    _COUNTER[0] = (_COUNTER[0] + 1) & 0xFFFFFFFF
    raw = struct.pack(">4sHHII", b"\x7f\x00\x00\x01", _PID, _SALT, now_ms & 0xFFFFFFFF, _COUNTER[0])
    return raw.hex().upper()


@dataclass(slots=True)
class Message:
    """A message as stored in the commit log.

    ``queue_offset``, ``commit_offset`` and ``store_timestamp`` are assigned when stored.
    ``properties`` holds everything else as strings (RocketMQ semantics); tags and keys are
    kept as first-class fields as well as in properties for cheap access.
    """

    topic: str
    body: bytes
    queue_id: int = -1
    tags: str = ""
    keys: str = ""
    properties: dict[str, str] = field(default_factory=dict)
    flag: int = 0
    sys_flag: int = 0
    born_timestamp: int = 0
    born_host: str = ""
    store_timestamp: int = 0
    reconsume_times: int = 0
    queue_offset: int = -1
    commit_offset: int = -1

    @property
    def unique_id(self) -> str:
        return self.properties.get(PROP_UNIQ_KEY, "")

    @property
    def key_list(self) -> list[str]:
        return [k for k in self.keys.split(" ") if k] if self.keys else []

    @property
    def message_group(self) -> str:
        return self.properties.get(PROP_MESSAGE_GROUP, "")

    def copy(self, **changes: object) -> "Message":
        if not changes:  # the common case (memory store): positional, ~3x cheaper than replace()
            return Message(self.topic, self.body, self.queue_id, self.tags, self.keys, dict(self.properties),
                           self.flag, self.sys_flag, self.born_timestamp, self.born_host, self.store_timestamp,
                           self.reconsume_times, self.queue_offset, self.commit_offset)
        new = dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        if "properties" not in changes:
            new.properties = dict(self.properties)
        return new


def message_fields(m: Message) -> dict[str, object]:
    """The stored fields of a message as plain JSON-able values (no body): for admin views and wires."""
    return {
        "topic": m.topic,
        "queue_id": m.queue_id,
        "queue_offset": m.queue_offset,
        "commit_offset": m.commit_offset,
        "tags": m.tags,
        "keys": m.keys,
        "properties": dict(m.properties),
        "flag": m.flag,
        "sys_flag": m.sys_flag,
        "born_timestamp": m.born_timestamp,
        "born_host": m.born_host,
        "store_timestamp": m.store_timestamp,
        "reconsume_times": m.reconsume_times,
    }


@dataclass(slots=True)
class SendResult:
    """What a send returns to the protocol: where the message landed.

    Not ``frozen``: a frozen dataclass sets each field through ``object.__setattr__`` (about
    2.2 us per construction here against 0.3 us), and one is made per message sent."""

    topic: str
    queue_id: int
    queue_offset: int
    commit_offset: int
    unique_id: str
    transaction_id: str = ""
    recall_handle: str = ""  # delayed messages: cancel with Broker.recall(recall_handle)
