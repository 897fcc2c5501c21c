"""MQTT publish <-> RocketMQ message mapping."""

from __future__ import annotations

from rocketlite.core.broker import TOPIC_NAME_RE
from rocketlite.core.message import Message
from rocketlite.protocols.mqtt import codec as C
from rocketlite.protocols.mqtt.mapping import delivery_from_message, is_excluded_topic, message_from_publish, rocketmq_topic


def test_first_level_becomes_a_valid_rocketmq_topic():
    for mqtt, rmq in [("a/b/c", "a"), ("a", "a"), ("/a/b", "mqtt_root"), ("sensors temp/x", "sensors_temp"),
                      ("été/x", "_t_"), ("%RETRY%g/x", "_RETRY_g"), ("rmq_sys_x/y", "mqtt_rmq_sys_x"),
                      ("$SYS/x", "$SYS"), ("x" * 300, "x" * 200)]:
        got = rocketmq_topic(mqtt)
        assert got == rmq, mqtt
        assert TOPIC_NAME_RE.match(got) and not is_excluded_topic(got)


def test_round_trip_of_mqtt5_properties():
    props = {C.P_MESSAGE_EXPIRY: 60, C.P_CONTENT_TYPE: "json", C.P_RESPONSE_TOPIC: "r/t", C.P_CORRELATION_DATA: b"\x01",
             C.P_PAYLOAD_FORMAT: 1, C.P_USER_PROPERTY: [("k", "1"), ("k", "2"), ("KEYS", "x")]}
    m = message_from_publish("a/b", b"body", 2, True, props, "cid")
    assert m.topic == "a" and m.properties["originMqttTopic"] == "a/b" and m.properties["mqttQos"] == "2"
    assert m.properties["k"] == "1" and "KEYS" not in m.properties  # reserved names are not shadowed
    m.store_timestamp = 1000
    m.commit_offset = 7
    d = delivery_from_message(m)
    assert (d.topic, d.payload, d.qos, d.retain, d.origin, d.ref) == ("a/b", b"body", 2, True, "cid", 7)
    assert d.expires_at_ms == 61_000
    assert d.properties[C.P_USER_PROPERTY] == [("k", "1"), ("k", "2"), ("KEYS", "x")]
    assert d.properties[C.P_CORRELATION_DATA] == b"\x01" and d.properties[C.P_RESPONSE_TOPIC] == "r/t"


def test_rocketmq_message_to_mqtt():
    m = Message(topic="orders", body=b"x", tags="TagA", keys="k1", properties={"UNIQ_KEY": "u", "color": "red"})
    d = delivery_from_message(m)
    assert (d.topic, d.qos) == ("orders", 1)
    assert d.properties[C.P_USER_PROPERTY] == [("color", "red"), ("TAGS", "TagA"), ("KEYS", "k1")]
    assert is_excluded_topic("%RETRY%g") and is_excluded_topic("rmq_sys_wheel") and not is_excluded_topic("orders")


def test_batch_mapping_equals_one_by_one():
    from rocketlite.protocols.mqtt.mapping import messages_from_publishes

    pkts = [C.Publish("a/b", b"1", 0), C.Publish("a/b", b"2", 1, False, False, 1), C.Publish("c", b"3", 2, True, False, 2),
            C.Publish("a/b", b"4", 1, False, False, 3, {C.P_CONTENT_TYPE: "json"}), C.Publish("%x/y", b"5", 0)]
    got = messages_from_publishes(pkts, "cid", "1.2.3.4:5")
    want = [message_from_publish(p.topic, p.payload, p.qos, p.retain, p.properties, "cid", "1.2.3.4:5") for p in pkts]
    assert got == want
