"""MQTT codec: round trips for every packet type in 3.1.1 and 5.0, limits, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rocketlite.protocols.mqtt import codec as C


def roundtrip(pkt, version, *, server=True):
    data = C.encode(pkt, version)
    dec = C.Decoder(version=version, server=server)
    out = []
    for i in range(len(data)):  # byte by byte: packets split anywhere
        out += dec.feed(data[i:i + 1])
    assert len(out) == 1
    return out[0]


PROPS5 = {
    C.P_PAYLOAD_FORMAT: 1, C.P_MESSAGE_EXPIRY: 30, C.P_CONTENT_TYPE: "text/plain",
    C.P_RESPONSE_TOPIC: "resp/x", C.P_CORRELATION_DATA: b"\x00\x01", C.P_USER_PROPERTY: [("a", "1"), ("a", "2")],
}


@pytest.mark.parametrize("version", [3, 4, 5])
def test_connect_roundtrip(version):
    will = C.Will("will/t", b"bye", 1, True, {C.P_WILL_DELAY: 5} if version == 5 else {})
    pkt = C.Connect("cid", version, False, 30, "user", b"pw", will,
                    {C.P_SESSION_EXPIRY: 100, C.P_RECEIVE_MAXIMUM: 10} if version == 5 else {},
                    "MQIsdp" if version == 3 else "MQTT")
    dec = C.Decoder()
    (got,) = dec.feed(C.encode(pkt, version))
    assert got == pkt
    assert dec.version == version


@pytest.mark.parametrize("version", [4, 5])
def test_all_packets_roundtrip(version):
    v5 = version == 5
    pkts = [
        C.Publish("a/b", b"x" * 300, 1, True, True, 7, PROPS5 if v5 else {}),
        C.Publish("a/b", b"", 0, False, False, 0, {}),
        C.Ack(C.PUBACK, 1), C.Ack(C.PUBREC, 2), C.Ack(C.PUBREL, 3), C.Ack(C.PUBCOMP, 4),
        C.Subscribe(5, [C.Subscription("a/+", 2, v5, v5, 2 if v5 else 0), C.Subscription("#", 0)],
                    {C.P_SUBSCRIPTION_ID: [9]} if v5 else {}),
        C.Unsubscribe(6, ["a/+", "#"]),
        C.PingReq(), C.Disconnect(),
    ]
    if v5:
        pkts += [C.Ack(C.PUBACK, 8, 0x10, {C.P_REASON_STRING: "no one"}), C.Disconnect(0x04, {C.P_SESSION_EXPIRY: 0}),
                 C.Auth(0x18, {C.P_AUTH_METHOD: "x"})]
    for pkt in pkts:
        assert roundtrip(pkt, version) == pkt
    client_side = [C.Connack(True, 0, {C.P_RECEIVE_MAXIMUM: 5} if v5 else {}), C.Suback(5, [0, 1, 2, 0x80]),
                   C.Unsuback(6, [0, 0x11] if v5 else []), C.PingResp()]
    for pkt in client_side:
        assert roundtrip(pkt, version, server=False) == pkt


def test_several_packets_in_one_chunk():
    data = C.encode(C.Connect("c"), 4) + C.encode(C.Publish("t", b"1"), 4) + C.encode(C.PingReq(), 4)
    assert [p.type for p in C.Decoder().feed(data)] == [C.CONNECT, C.PUBLISH, C.PINGREQ]


def test_first_packet_must_be_connect():
    with pytest.raises(C.MqttError) as e:
        C.Decoder().feed(C.encode(C.Publish("t", b""), 4))
    assert e.value.reason == C.RC_PROTOCOL_ERROR


def test_packet_too_large_checked_on_header():
    dec = C.Decoder(max_packet_size=100, version=4)
    with pytest.raises(C.MqttError) as e:
        dec.feed(b"\x30\xff\xff\x03")  # claims ~64 KiB, body not sent
    assert e.value.reason == C.RC_PACKET_TOO_LARGE


@pytest.mark.parametrize("data", [
    b"\x30\x02\x00\x05",  # topic runs past
    b"\x36\x04\x00\x01t\x00",  # QoS 3
    b"\x32\x05\x00\x01t\x00\x00",  # packet id 0
    b"\x60\x02\x00\x01",  # PUBREL with flags 0
    b"\x80\x03\x00\x01\x00",  # SUBSCRIBE flags 0
    b"\x82\x02\x00\x01",  # SUBSCRIBE without filters
    b"\x30\x05\x00\x03a+b",  # wildcard in topic name
    b"\x30\x05\x00\x03\xff\xfe\xfd",  # invalid UTF-8
    b"\x30\x04\x00\x02a\x00",  # U+0000
    b"\x00\x00",  # reserved type 0
    b"\x30\xff\xff\xff\xff\x01",  # 5-byte remaining length
])
def test_malformed(data):
    with pytest.raises(C.MqttError):
        C.Decoder(version=4).feed(data)


def test_bad_connect_versions():
    with pytest.raises(C.MqttError) as e:
        C.Decoder().feed(b"\x10\x0c\x00\x04MQTT\x06\x02\x00\x3c\x00\x00")
    assert e.value.reason == C.RC_UNSUPPORTED_VERSION
    with pytest.raises(C.MqttError):  # reserved flag
        C.Decoder().feed(b"\x10\x0c\x00\x04MQTT\x04\x03\x00\x3c\x00\x00")


def test_duplicate_property_is_protocol_error():
    body = b"\x00\x01t" + bytes([10]) + b"\x02\x00\x00\x00\x01" * 2
    with pytest.raises(C.MqttError) as e:
        C.Decoder(version=5).feed(bytes([0x30, len(body)]) + body)
    assert e.value.reason == C.RC_PROTOCOL_ERROR


def test_topic_filter_validation():
    for ok in ["a", "a/+/b", "#", "a/#", "+", "/", "+/+", "$SYS/#"]:
        assert C.valid_topic_filter(ok)
    for bad in ["", "a#", "a/#/b", "a+", "#/a", "a/b+"]:
        assert not C.valid_topic_filter(bad)


# -- fuzzing -----------------------------------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([0, 4, 5]))
def test_fuzz_decoder_never_crashes(data, version):
    dec = C.Decoder(max_packet_size=256, version=version)
    try:
        dec.feed(data)
    except C.MqttError as e:
        assert 0x80 <= e.reason <= 0xA2


text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00+#"), min_size=1, max_size=30)
user_props = st.lists(st.tuples(st.text(max_size=5).filter(lambda s: "\x00" not in s),
                                st.text(max_size=5).filter(lambda s: "\x00" not in s)), max_size=3)


@settings(max_examples=300, deadline=None)
@given(text, st.binary(max_size=200), st.integers(0, 2), st.booleans(), st.integers(1, 65535), user_props,
       st.sampled_from([4, 5]), st.integers(1, 50))
def test_fuzz_publish_roundtrip(topic, payload, qos, retain, pid, ups, version, chunk):
    props = {C.P_USER_PROPERTY: ups} if (version == 5 and ups) else {}
    pkt = C.Publish(topic, payload, qos, retain, qos > 0 and retain, pid if qos else 0, props)
    data = C.encode(pkt, version)
    dec = C.Decoder(version=version)
    out = []
    for i in range(0, len(data), chunk):
        out += dec.feed(data[i:i + chunk])
    assert out == [pkt]


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=120))
def test_fuzz_mutated_connect(noise):
    good = C.encode(C.Connect("client", 5, True, 10, "u", b"p", C.Will("w", b"x", 1), {C.P_SESSION_EXPIRY: 5}), 5)
    i = noise[0] % len(good)
    data = good[:i] + noise[1:] + good[i + len(noise) - 1:]
    try:
        C.Decoder(max_packet_size=1024).feed(data)
    except C.MqttError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "a/b", "t/é", "x" * 130]), st.binary(max_size=300), st.integers(0, 2),
                          st.booleans(), st.booleans()), min_size=1, max_size=8),
       st.sampled_from([3, 4]), st.integers(1, 400))
def test_fuzz_publish_stream_repeated_topics(items, version, chunk):
    """PUBLISH on a topic the connection used before takes the decoder's inline path: same packets
    as the checked path, whatever the chunking (lengths of one and two bytes)."""
    pkts = [C.Publish(t, pl, q, r, q > 0 and d, i + 1 if q else 0, {}) for i, (t, pl, q, r, d) in enumerate(items)]
    data = b"".join(C.encode(p, version) for p in pkts) * 2
    dec = C.Decoder(version=version)
    out = []
    for i in range(0, len(data), chunk):
        out += dec.feed(data[i:i + chunk])
    assert out == pkts * 2
    assert all(type(p.retain) is bool and type(p.dup) is bool for p in out)


def test_inline_publish_path_still_rejects_bad_packets():
    dec = C.Decoder(version=4)
    assert dec.feed(C.encode(C.Publish("a/b", b"x", 1, False, False, 1), 4))[0].topic == "a/b"  # topic now known
    for bad in (b"\x38\x09\x00\x03a/b\x00\x01xy",  # QoS 0 with DUP
                b"\x36\x09\x00\x03a/b\x00\x01xy",  # QoS 3
                b"\x32\x09\x00\x03a/b\x00\x00xy"):  # packet id 0
        with pytest.raises(C.MqttError):
            C.Decoder(version=4).feed(C.encode(C.Publish("a/b", b"x", 1, False, False, 1), 4) + bad)
