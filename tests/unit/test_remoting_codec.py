"""Remoting codec: captured real-client frames, header encodings, message encodings, fuzzing."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rocketlite.protocols.remoting.codec import (
    MAX_FRAME,
    SERIALIZE_JSON,
    SERIALIZE_ROCKETMQ,
    BatchItem,
    FrameDecoder,
    FrameError,
    RemotingCommand,
    StoredRecord,
    decode_batch,
    decode_frame,
    decode_json_body,
    decode_properties,
    decode_records,
    encode_batch,
    encode_command,
    encode_json_body,
    encode_properties,
    encode_record,
    ext_bool,
    ext_str,
    offset_msg_id,
    parse_java_properties,
    parse_offset_msg_id,
)

# shared/ sits beside the repository (here and in CI)
# Every request frame three real clients sent in one full run (a copy of shared/protocols/, kept in the repo
# so the vectors travel with the tests).
FRAMES = Path(__file__).resolve().parents[1] / "data" / "remoting-client-frames.jsonl"


def captured() -> list[dict]:
    return [json.loads(line) for line in FRAMES.read_text().splitlines() if line.strip()]


CAPTURED = captured()


def test_every_captured_frame_decodes() -> None:
    codes = set()
    for rec in CAPTURED:
        raw = bytes.fromhex(rec["raw_hex"])
        dec = FrameDecoder()
        dec.feed(raw)
        cmd = dec.next_command()
        assert cmd is not None and dec.next_command() is None and dec.buffered == 0
        h = rec["header"]
        assert cmd.code == h["code"]
        assert cmd.opaque == h["opaque"]
        assert cmd.flag == h["flag"]
        assert cmd.version == h["version"]
        assert cmd.language == h["language"]
        assert cmd.serialize == SERIALIZE_JSON
        assert len(cmd.body) == rec["body_len"]
        # every ext value becomes the string Java would see
        for k, v in (h.get("extFields") or {}).items():
            assert cmd.ext[k] == ext_str(v)
            assert isinstance(cmd.ext[k], str)
        codes.add(cmd.code)
    assert {10, 11, 14, 15, 30, 34, 35, 36, 37, 38, 41, 105, 310} <= codes


def test_captured_frames_byte_by_byte_and_concatenated() -> None:
    stream = b"".join(bytes.fromhex(r["raw_hex"]) for r in CAPTURED[:40])
    dec = FrameDecoder()
    got = []
    for i in range(len(stream)):
        dec.feed(stream[i : i + 1])
        got.extend(dec)
    assert [c.opaque for c in got] == [r["header"]["opaque"] for r in CAPTURED[:40]]


def test_captured_values_are_coerced_like_java() -> None:
    ali_send = next(r for r in CAPTURED if r["header"]["code"] == 310 and r["header"]["language"] == "JAVA")
    cmd = decode_frame(bytes.fromhex(ali_send["raw_hex"])[4:])
    assert cmd.ext["k"] == "false"  # JSON false -> "false", not Python's "False"
    assert cmd.ext["e"].isdigit()
    props = decode_properties(cmd.ext["i"])
    assert props["TAGS"] == "TagA" and props["KEYS"].startswith("key-")
    assert cmd.body.startswith(b"rocketlite-")
    cpp_hb = next(r for r in CAPTURED if r["header"]["code"] == 34 and r["header"]["language"] == "CPP")
    cmd = decode_frame(bytes.fromhex(cpp_hb["raw_hex"])[4:])
    assert cmd.remark == ""
    body = decode_json_body(cmd.body)
    assert body["clientID"]


def test_first_ali_ons_frame_from_the_reference() -> None:
    raw = bytes.fromhex(
        "0000006b000000677b22636f6465223a3130352c226c616e6775616765223a224a415641222c226f7061717565223a312c"
        "22666c6167223a302c2276657273696f6e223a3132312c226578744669656c6473223a7b22746f706963223a22526f636b"
        "65746c69746554657374227d7d"
    )
    cmd = decode_frame(raw[4:])
    assert (cmd.code, cmd.opaque, cmd.version, cmd.ext) == (105, 1, 121, {"topic": "RocketliteTest"})


def test_binary_header_worked_example() -> None:
    """REMOTING.md 2.3: GET_ROUTEINFO_BY_TOPIC, JAVA, v409, opaque 7, {topic: T1}."""
    expected = bytes.fromhex(
        "00000026 01000022 0069 00 0199 00000007 00000000 00000000 0000000d 0005 746f706963 00000002 5431".replace(" ", "")
    )
    cmd = RemotingCommand(code=105, opaque=7, version=409, ext={"topic": "T1"}, serialize=SERIALIZE_ROCKETMQ)
    assert encode_command(cmd) == expected
    back = decode_frame(expected[4:])
    assert (back.code, back.opaque, back.version, back.language, back.ext, back.remark) == (
        105, 7, 409, "JAVA", {"topic": "T1"}, None)
    assert back.serialize == SERIALIZE_ROCKETMQ


@pytest.mark.parametrize("serialize", [SERIALIZE_JSON, SERIALIZE_ROCKETMQ])
def test_roundtrip_both_serializations(serialize: int) -> None:
    cmd = RemotingCommand(code=11, opaque=-5, flag=3, ext={"a": "1", "ü": "\x01x\x02"}, body=b"\x00\xff",
                          remark="FOUND", language="CPP", version=333, serialize=serialize)
    back = decode_frame(encode_command(cmd)[4:])
    assert back == cmd


def test_response_mirrors_request_and_stringifies() -> None:
    req = RemotingCommand(code=310, opaque=42, serialize=SERIALIZE_ROCKETMQ)
    resp = req.response(ext={"queueId": 3, "ok": True, "none": None})
    assert resp.is_response and not resp.is_oneway and resp.opaque == 42
    assert resp.serialize == SERIALIZE_ROCKETMQ
    assert resp.ext == {"queueId": "3", "ok": "true"}
    header = json.loads(encode_command(RemotingCommand(code=310, opaque=42).response(ext={"n": 1}))[8:].decode())
    assert header == {"code": 0, "extFields": {"n": "1"}, "flag": 1, "language": "JAVA", "opaque": 42,
                      "serializeTypeCurrentRPC": "JSON", "version": 401}


def test_frame_limits() -> None:
    dec = FrameDecoder()
    dec.feed(struct.pack(">I", MAX_FRAME + 1))
    with pytest.raises(FrameError):
        dec.next_command()
    dec = FrameDecoder()
    dec.feed(struct.pack(">I", 2) + b"\x00\x00")
    with pytest.raises(FrameError):
        dec.next_command()
    with pytest.raises(FrameError):  # header longer than the frame
        decode_frame(struct.pack(">I", 100) + b"{}")
    with pytest.raises(FrameError):  # unknown serialize type
        decode_frame(struct.pack(">I", (7 << 24) | 2) + b"{}")
    with pytest.raises(FrameError):
        decode_frame(struct.pack(">I", 2) + b"[]")
    with pytest.raises(FrameError):
        decode_frame(struct.pack(">I", 12) + b'{"code":"x"}')


def test_ext_bool_and_str() -> None:
    assert ext_bool("true") and ext_bool("TRUE") and ext_bool("1")
    assert not ext_bool("0") and not ext_bool("false") and not ext_bool(None) and not ext_bool("")
    assert ext_str(False) == "false" and ext_str(3) == "3" and ext_str(3.0) == "3"


def test_properties_string() -> None:
    props = {"TAGS": "TagA", "KEYS": "k1 k2", "UNIQ_KEY": "ABC"}
    text = encode_properties(props)
    assert text == "TAGS\x01TagA\x02KEYS\x01k1 k2\x02UNIQ_KEY\x01ABC\x02"
    assert decode_properties(text) == props
    # Java's rules: short segments and a \x01 at the start or end are skipped
    assert decode_properties("a\x01b\x02\x01x\x02y\x01\x02zz\x02k\x01v") == {"a": "b", "k": "v"}
    assert decode_properties("") == {} and decode_properties(None) == {}


def test_stored_record_matches_the_reference_example() -> None:
    props_text = "TAGS\x01TagA\x02KEYS\x01key-2\x02UNIQ_KEY\x01" + "X" * 32 + "\x02CLUSTER\x01DefaultCluster\x02"
    props = decode_properties(props_text)
    rec = StoredRecord(
        topic="RetryTopicA", body=b"rocketlite-1795324035107-2", queue_id=0, queue_offset=0, physical_offset=428,
        born_timestamp=0x1A201A6C04B, born_host="127.0.0.1:38846", store_timestamp=0x1A201A6C04C,
        store_host="127.0.0.1:10911", properties=props,
    )
    data = encode_record(rec)
    assert len(data) == 84 + 4 + 26 + 1 + 11 + 2 + len(props_text) == struct.unpack(">i", data[:4])[0]
    assert data[4:8] == bytes.fromhex("daa320a7")
    assert data[84:88] == struct.pack(">i", 26)
    assert data[64:72] == bytes.fromhex("7f00000100002a9f")  # store host 127.0.0.1:10911
    (back,) = decode_records(data)
    assert back.topic == rec.topic and back.body == rec.body and back.properties == props
    assert back.born_host == "127.0.0.1:38846" and back.store_host == "127.0.0.1:10911"
    assert back.msg_id == "7F00000100002A9F00000000000001AC"
    two = decode_records(data + data)
    assert len(two) == 2


def test_long_topic_uses_v2_magic() -> None:
    rec = StoredRecord(topic="t" * 200, body=b"x")
    data = encode_record(rec)
    assert data[4:8] == bytes.fromhex("daa320ab")
    assert decode_records(data)[0].topic == "t" * 200


def test_message_ids() -> None:
    mid = offset_msg_id("127.0.0.1", 10911, 0x364)
    assert mid == "7F00000100002A9F0000000000000364"
    assert parse_offset_msg_id(mid) == ("127.0.0.1", 10911, 0x364)
    with pytest.raises(ValueError):
        parse_offset_msg_id("zz")


def test_batch_roundtrip_and_garbage() -> None:
    items = [BatchItem(b"a", 1, {"UNIQ_KEY": "1"}), BatchItem(b"", 0, {}), BatchItem(b"ccc", 0, {"TAGS": "t"})]
    assert decode_batch(encode_batch(items)) == items
    with pytest.raises(ValueError):
        decode_batch(b"plain body, not a batch")


def test_json_bodies_quoted_and_fastjson() -> None:
    route = {"brokerAddrs": {0: "127.0.0.1:10911"}, "n": [1, "x"]}
    assert encode_json_body(route) == b'{"brokerAddrs":{"0":"127.0.0.1:10911"},"n":[1,"x"]}'
    legacy = encode_json_body(route, standard=False)
    assert legacy == b'{"brokerAddrs":{0:"127.0.0.1:10911"},"n":[1,"x"]}'
    assert decode_json_body(legacy) == {"brokerAddrs": {"0": "127.0.0.1:10911"}, "n": [1, "x"]}
    assert decode_json_body(b'{"a":1}\n') == {"a": 1}


def test_java_properties() -> None:
    assert parse_java_properties("# c\nbrokerIP1=10.0.0.1\nlistenPort = 30911\n\n") == {
        "brokerIP1": "10.0.0.1", "listenPort": "30911"}


# -- fuzzing ------------------------------------------------------------------------------------

@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_decoder_never_crashes(data: bytes) -> None:
    dec = FrameDecoder(max_frame=4096)
    dec.feed(data)
    try:
        for _ in dec:
            pass
    except FrameError:
        pass


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=300), st.sampled_from([0, 1]))
def test_fuzz_frame_bodies(header: bytes, stype: int) -> None:
    frame = struct.pack(">I", (stype << 24) | len(header)) + header + b"body"
    try:
        cmd = decode_frame(frame)
    except FrameError:
        return
    assert cmd.body == b"body"


@settings(max_examples=100, deadline=None)
@given(
    st.integers(-(2**31), 2**31 - 1), st.integers(0, 3), st.integers(-(2**15), 2**15 - 1),
    st.dictionaries(st.text(min_size=1, max_size=10), st.text(min_size=1, max_size=20), max_size=5),
    st.binary(max_size=64), st.one_of(st.none(), st.text(min_size=1, max_size=20)), st.sampled_from([0, 1]),
)
def test_fuzz_roundtrip(opaque: int, flag: int, code: int, ext: dict, body: bytes, remark: str | None, stype: int) -> None:
    cmd = RemotingCommand(code=code, opaque=opaque, flag=flag, ext=ext, body=body, remark=remark, serialize=stype)
    back = decode_frame(encode_command(cmd)[4:])
    assert back == cmd


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_records_and_batches(data: bytes) -> None:
    for fn in (decode_records, decode_batch):
        try:
            fn(data)
        except (ValueError, struct.error, IndexError):
            pass


_json_scalars = st.one_of(st.text(max_size=12), st.integers(-(2**40), 2**40), st.booleans(), st.none())


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-(2**31), 2**31 - 1),
    st.dictionaries(st.text(max_size=8), _json_scalars, max_size=6),
    st.sampled_from(["", " ", "\n", "\r\n\t "]), st.sampled_from([None, 1, 2]),
    st.sampled_from(["JAVA", 13, "CPP", None]), st.one_of(st.none(), st.text(max_size=12)),
)
def test_json_header_decoder_agrees_with_json_loads(code: int, ext: dict, space: str, indent: int | None,
                                                    language: object, remark: str | None) -> None:
    """The direct scanner call reads what json.loads reads (whitespace around, any key order)."""
    obj = {"extFields": ext, "code": code, "opaque": 7, "flag": 0, "version": 401, "remark": remark}
    if language is not None:
        obj["language"] = language
    text = space + json.dumps(obj, indent=indent) + space
    header = text.encode()
    cmd = decode_frame(struct.pack(">I", len(header)) + header)
    want = json.loads(header)
    assert (cmd.code, cmd.opaque, cmd.remark) == (want["code"], 7, remark)
    assert cmd.ext == {str(k): ext_str(v) for k, v in want["extFields"].items() if v is not None}
    assert cmd.language == {13: "NODE_JS", None: "JAVA"}.get(language, language)  # type: ignore[call-overload]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_json_header_decoder_rejects_what_json_loads_rejects(text: str) -> None:
    header = text.encode()
    try:
        obj = json.loads(header)
        ok = isinstance(obj, dict) and "code" in obj
    except ValueError:
        ok = False
    try:
        decode_frame(struct.pack(">I", len(header)) + header)
    except FrameError as exc:
        assert not ok or "bad JSON header" not in str(exc)  # parsed, but e.g. a code that is no number
    else:
        assert ok


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=8), st.one_of(st.none(), st.text(max_size=20)))
def test_json_header_encoder_matches_json_dumps(ext: dict, remark: str | None) -> None:
    cmd = RemotingCommand(code=0, opaque=3, flag=1, ext=ext, remark=remark)
    header = encode_command(cmd)[8:]
    want = {"code": 0, "extFields": ext, "flag": 1, "language": "JAVA", "opaque": 3,
            **({} if remark is None else {"remark": remark}), "serializeTypeCurrentRPC": "JSON", "version": cmd.version}
    assert header == json.dumps(want, separators=(",", ":")).encode()
