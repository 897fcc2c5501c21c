"""MQTT publish <-> RocketMQ message mapping (pure functions; see docs/mqtt.md).

* An MQTT publish to ``a/b/c`` is stored once in RocketMQ topic ``a`` (the first level, with
  characters RocketMQ does not allow replaced by ``_``) and the full MQTT topic in property
  ``originMqttTopic`` (the name apache/rocketmq-mqtt uses), QoS in ``mqttQos``.
* A message without ``originMqttTopic`` (sent by a RocketMQ client) has MQTT topic = its
  RocketMQ topic and is delivered at QoS 1; its non-system properties become MQTT 5 user
  properties.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from rocketlite.core.message import PROP_MQTT_QOS, PROP_MQTT_TOPIC, Message
from rocketlite.protocols.mqtt.codec import (
    P_CONTENT_TYPE,
    P_CORRELATION_DATA,
    P_MESSAGE_EXPIRY,
    P_PAYLOAD_FORMAT,
    P_RESPONSE_TOPIC,
    P_USER_PROPERTY,
    Publish,
)
from rocketlite.protocols.mqtt.session import Delivery

PROP_MQTT_CLIENT = "mqttClientId"
PROP_MQTT_RETAIN = "mqttRetain"
PROP_MQTT_EXPIRY = "mqttMessageExpiry"
PROP_MQTT_PAYLOAD_FORMAT = "mqttPayloadFormat"
PROP_MQTT_CONTENT_TYPE = "mqttContentType"
PROP_MQTT_RESPONSE_TOPIC = "mqttResponseTopic"
PROP_MQTT_CORRELATION = "mqttCorrelationData"  # hex
PROP_MQTT_USER_PROPS = "mqttUserProperties"  # JSON list of [name, value], order and duplicates kept

_MQTT_PROPS = {
    PROP_MQTT_TOPIC, PROP_MQTT_QOS, PROP_MQTT_CLIENT, PROP_MQTT_RETAIN, PROP_MQTT_EXPIRY, PROP_MQTT_PAYLOAD_FORMAT,
    PROP_MQTT_CONTENT_TYPE, PROP_MQTT_RESPONSE_TOPIC, PROP_MQTT_CORRELATION, PROP_MQTT_USER_PROPS,
}
# RocketMQ's own property names are upper case (KEYS, TAGS, UNIQ_KEY, WAIT, DELAY, ...) or start
# with "__" (sharding key, ...): they are not user properties.
_SYSTEM_PROP = re.compile(r"^([A-Z0-9_]+|__.*)$")
_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_\-.:|$]")
_SYSTEM_PREFIXES = ("rmq_sys_", "RMQ_SYS_", "SCHEDULE_TOPIC", "TBW102", "%")
EXCLUDED_PREFIXES = _SYSTEM_PREFIXES  # RocketMQ topics starting so never reach MQTT (is_excluded_topic)

_topic_cache: dict[str, str] = {}
_QOS_STR = ("0", "1", "2")


def rocketmq_topic(mqtt_topic: str) -> str:
    """The RocketMQ topic an MQTT topic is stored in: its first level, sanitised."""
    hit = _topic_cache.get(mqtt_topic)
    if hit is not None:
        return hit
    first = mqtt_topic.split("/", 1)[0]
    name = _BAD_CHARS.sub("_", first)[:200] or "mqtt_root"
    if name.startswith(_SYSTEM_PREFIXES) or name == "DefaultCluster":
        name = "mqtt_" + name.lstrip("%")
    if len(_topic_cache) > 10_000:
        _topic_cache.clear()
    _topic_cache[mqtt_topic] = name
    return name


def is_excluded_topic(rocketmq_name: str) -> bool:
    """RocketMQ-internal topics (retry, DLQ, timers, half messages) never reach MQTT."""
    return rocketmq_name.startswith(_SYSTEM_PREFIXES) or rocketmq_name == "DefaultCluster"


# ``Message(topic=, body=, properties=, born_host=)`` is called positionally when the field order is
# the expected one: a class called with keywords costs CPython a kwargs dict for ``__init__`` (about
# 40% more for Message), and this runs once per published message.
_POSITIONAL = [f.name for f in dataclasses.fields(Message)][:10] == [
    "topic", "body", "queue_id", "tags", "keys", "properties", "flag", "sys_flag", "born_timestamp", "born_host"]


def _new_message(topic: str, body: bytes, props: dict[str, str], born_host: str) -> Message:
    if _POSITIONAL:
        return Message(topic, body, -1, "", "", props, 0, 0, 0, born_host)
    return Message(topic=topic, body=body, properties=props, born_host=born_host)


def messages_from_publishes(pkts: list[Publish], client_id: str, born_host: str = "") -> list[Message]:
    """``message_from_publish`` for a batch; publishes without properties or retain flag (most)
    take a short path, the RocketMQ topic looked up once per run of the same MQTT topic."""
    out: list[Message] = []
    append = out.append
    last = None
    rtopic = ""
    for pk in pkts:
        t = pk.topic
        if pk.properties or pk.retain or not _POSITIONAL:
            append(message_from_publish(t, pk.payload, pk.qos, pk.retain, pk.properties, client_id, born_host))
            continue
        if t != last:
            rtopic = rocketmq_topic(t)
            last = t
        append(Message(rtopic, pk.payload, -1, "", "", {PROP_MQTT_TOPIC: t, PROP_MQTT_QOS: _QOS_STR[pk.qos],
                                                        PROP_MQTT_CLIENT: client_id}, 0, 0, 0, born_host))
    return out


def message_from_publish(topic: str, payload: bytes, qos: int, retain: bool, props: dict[int, Any],
                         client_id: str, born_host: str = "") -> Message:
    p: dict[str, str] = {PROP_MQTT_TOPIC: topic, PROP_MQTT_QOS: _QOS_STR[qos], PROP_MQTT_CLIENT: client_id}
    if retain:
        p[PROP_MQTT_RETAIN] = "1"
    if props:
        v = props.get(P_MESSAGE_EXPIRY)
        if v is not None:
            p[PROP_MQTT_EXPIRY] = str(v)
        v = props.get(P_PAYLOAD_FORMAT)
        if v is not None:
            p[PROP_MQTT_PAYLOAD_FORMAT] = str(v)
        v = props.get(P_CONTENT_TYPE)
        if v is not None:
            p[PROP_MQTT_CONTENT_TYPE] = v
        v = props.get(P_RESPONSE_TOPIC)
        if v is not None:
            p[PROP_MQTT_RESPONSE_TOPIC] = v
        v = props.get(P_CORRELATION_DATA)
        if v is not None:
            p[PROP_MQTT_CORRELATION] = v.hex()
        ups = props.get(P_USER_PROPERTY)
        if ups:
            p[PROP_MQTT_USER_PROPS] = json.dumps([[k, val] for k, val in ups], separators=(",", ":"))
            for k, val in ups:  # plain copies for RocketMQ consumers, never shadowing a reserved name
                if k not in p and k not in _MQTT_PROPS and not _SYSTEM_PROP.match(k):
                    p[k] = val
    return _new_message(rocketmq_topic(topic), payload, p, born_host)


_QOS_INT = {"0": 0, "1": 1, "2": 2}


def delivery_from_message(msg: Message) -> Delivery:
    p = msg.properties
    mqtt_topic = p.get(PROP_MQTT_TOPIC)
    props: dict[int, Any] = {}
    expires = 0
    if mqtt_topic is not None:
        qs = p.get(PROP_MQTT_QOS)
        qos = _QOS_INT.get(qs)  # type: ignore[arg-type]
        if qos is None:
            qos = int(qs or 0)
        retain = p.get(PROP_MQTT_RETAIN) == "1"
        origin = p.get(PROP_MQTT_CLIENT, "")
        if len(p) > 4:
            v = p.get(PROP_MQTT_EXPIRY)
            if v is not None:
                expires = msg.store_timestamp + int(v) * 1000
            v = p.get(PROP_MQTT_PAYLOAD_FORMAT)
            if v is not None:
                props[P_PAYLOAD_FORMAT] = int(v)
            v = p.get(PROP_MQTT_CONTENT_TYPE)
            if v is not None:
                props[P_CONTENT_TYPE] = v
            v = p.get(PROP_MQTT_RESPONSE_TOPIC)
            if v is not None:
                props[P_RESPONSE_TOPIC] = v
            v = p.get(PROP_MQTT_CORRELATION)
            if v is not None:
                props[P_CORRELATION_DATA] = bytes.fromhex(v)
            v = p.get(PROP_MQTT_USER_PROPS)
            if v is not None:
                props[P_USER_PROPERTY] = [(str(a), str(b)) for a, b in json.loads(v)]
    else:
        mqtt_topic = msg.topic
        qos = 1
        retain = False
        origin = ""
        ups = [(k, v) for k, v in p.items() if not _SYSTEM_PROP.match(k) and k not in _MQTT_PROPS]
        if msg.tags:
            ups.append(("TAGS", msg.tags))
        if msg.keys:
            ups.append(("KEYS", msg.keys))
        if ups:
            props[P_USER_PROPERTY] = ups
    return Delivery(mqtt_topic, msg.body, qos, retain, props, msg.commit_offset, expires, origin)
