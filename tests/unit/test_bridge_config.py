"""The pure rules of bridges: config parsing, which messages go, where they go, back-off."""

from __future__ import annotations

import random
import tomllib
from pathlib import Path

import pytest

from rocketlite.bridge.config import (
    PROP_BRIDGE,
    BridgeConfigError,
    backoff_ms,
    incoming_message,
    outgoing_properties,
    outgoing_sys_flag,
    parse_bridges,
    runs,
    upstream_queue,
)
from rocketlite.core.message import Message

ROOT = Path(__file__).resolve().parents[2]


def one(**table: object) -> object:
    (cfg,) = parse_bridges({"cloud": {"upstream": "ns:9876", **table}})
    return cfg


def test_defaults_and_upstream_forms() -> None:
    cfg = one(topics=["a"])
    assert cfg.namesrv == ["ns:9876"] and cfg.group == "rocketlite-bridge-cloud"
    assert cfg.producer_group == cfg.consumer_group == "rocketlite-bridge-cloud"
    (cfg,) = parse_bridges({"x": {"upstream": "remoting://ns1:9876;ns2:9876", "topics": "a, b"}})
    assert cfg.namesrv == ["ns1:9876", "ns2:9876"] and cfg.topics == ["a", "b"]
    (g,) = parse_bridges({"g": {"upstream": "grpcs://proxy:8081", "topics": ["a"]}})
    assert (g.protocol, g.namesrv, g.tls) == ("grpc", ["proxy:8081"], True)
    assert parse_bridges({"off": {"upstream": "ns:1", "topics": ["a"], "enabled": False}}) == []


@pytest.mark.parametrize("table, words", [
    ({"pull_topics": ["a"], "upstream": "grpc://proxy:8081", "pull_invisible_ms": 10}, "pull_invisible_ms"),
    ({"topics": ["a"], "upstream": "http://proxy:8081"}, "scheme"),
    ({"topics": ["a"], "upstream": "ns"}, "host:port"),
    ({"topics": ["a"], "colour": 1}, "unknown keys"),
    ({}, "forwards nothing"),
    ({"topics": ["a"], "access_key": "k"}, "go together"),
    ({"topics": ["a"], "batch_size": "x"}, "integer"),
    ({"topics": ["a"], "tls": "yes"}, "true or false"),
    ({"mqtt_filters": ["a/#/b"]}, "filter"),
    ({"topics": ["a"], "forward_from": "middle"}, "first or last"),
])
def test_bad_tables_fail_startup_clearly(table: dict[str, object], words: str) -> None:
    with pytest.raises(BridgeConfigError, match=words):
        parse_bridges({"cloud": {"upstream": "ns:9876", **table}})


def test_topic_selection_and_mqtt_filters() -> None:
    cfg = one(topics=["telemetry", "logs-*"], mqtt_filters=["sensors/+/temp", "+/alarm"])
    assert cfg.forwards("telemetry") and cfg.forwards_all("logs-eu")
    assert cfg.forwards("sensors") and not cfg.forwards_all("sensors")
    assert cfg.forwards("anything")  # "+/alarm" may match in any first level
    assert not cfg.forwards("%RETRY%g") and not cfg.forwards("rmq_sys_wheel_timer") and not cfg.forwards("TBW102")
    temp = Message("sensors", b"", properties={"originMqttTopic": "sensors/d1/temp"})
    hum = Message("sensors", b"", properties={"originMqttTopic": "sensors/d1/humidity"})
    plain = Message("sensors", b"")
    assert cfg.wants(temp, all_of_topic=False) and not cfg.wants(hum, all_of_topic=False)
    assert not cfg.wants(plain, all_of_topic=False) and cfg.wants(plain, all_of_topic=True)
    echoed = Message("telemetry", b"", properties={PROP_BRIDGE: "cloud"})
    assert not cfg.wants(echoed, all_of_topic=True)


def test_upstream_queue_is_deterministic_per_queue_and_group() -> None:
    assert [upstream_queue(Message("t", b"", queue_id=q), 4) for q in range(8)] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert upstream_queue(Message("t", b"", queue_id=5), 1) == 0
    g = [upstream_queue(Message("t", b"", queue_id=q, properties={"__SHARDINGKEY": "dev-7"}), 8) for q in range(4)]
    assert len(set(g)) == 1
    msgs = [Message("t", b"", queue_id=q) for q in (0, 0, 1, 1, 0)]
    assert [(q, len(r)) for q, r in runs(msgs, 2)] == [(0, 2), (1, 2), (0, 1)]
    assert [(q, len(r)) for q, r in runs(msgs, 1)] == [(0, 5)]
    big = [Message("t", b"x" * 400, queue_id=0) for _ in range(5)]
    assert [len(r) for _, r in runs(big, 1, max_bytes=1000)] == [2, 2, 1]
    assert [len(r) for _, r in runs([Message("t", b"x" * 5000, queue_id=0)], 1, max_bytes=1000)] == [1]


def test_translation_drops_pending_state() -> None:
    m = Message("t", b"x", tags="TagA", keys="k1 k2", sys_flag=0x8 | 0x1,
                properties={"DELAY": "3", "TIMER_DELIVER_MS": "1", "REAL_TOPIC": "t", "TRAN_MSG": "true", "u": "v",
                            "UNIQ_KEY": "ID1"})
    props = outgoing_properties(m)
    assert props == {"u": "v", "UNIQ_KEY": "ID1", "TAGS": "TagA", "KEYS": "k1 k2"}
    assert outgoing_sys_flag(m) == 0x1
    inc = incoming_message("cloud", "cmd", b"y", {"TAGS": "T", "KEYS": "K", "MIN_OFFSET": "0", "TRAN_MSG": "true"},
                           flag=3, sys_flag=0x4, born_timestamp=7, queue_id=2)
    assert inc.tags == "T" and inc.keys == "K" and inc.queue_id == 2 and inc.sys_flag == 0 and inc.flag == 3
    assert inc.properties == {"TAGS": "T", "KEYS": "K", PROP_BRIDGE: "cloud"}
    grouped = incoming_message("cloud", "cmd", b"", {"__SHARDINGKEY": "g"}, flag=0, sys_flag=0, born_timestamp=0,
                               queue_id=2)
    assert grouped.queue_id == -1  # the local broker hashes the group
    import zlib

    packed = incoming_message("cloud", "cmd", zlib.compress(b"big" * 100), {}, flag=0, sys_flag=0x1, born_timestamp=0,
                              queue_id=0)
    assert packed.body == b"big" * 100 and packed.sys_flag == 0


def test_backoff_doubles_and_caps() -> None:
    rnd = random.Random(1)
    values = [backoff_ms(a, 100, 2000, rnd) for a in range(10)]
    for a, v in enumerate(values):
        base = min(2000, 100 * 2 ** a)
        assert 0.8 * base <= v <= base
    assert backoff_ms(500, 100, 2000) <= 2000


def test_config_example_parses() -> None:
    """The commented example in the shipped config is valid once uncommented."""
    for path in (ROOT / "config" / "rocketlite.toml", ROOT / "rocketlite" / "default_config.toml"):
        text = path.read_text()
        start = text.index("# [bridges.cloud]")
        block = []
        for line in text[start:].splitlines():
            if not line.startswith("#"):
                break
            block.append(line[2:] if line.startswith("# ") else line[1:])
        data = tomllib.loads("\n".join(block))
        (cfg,) = parse_bridges(data["bridges"])
        assert cfg.name == "cloud" and cfg.topics and cfg.pull_topics


def test_batch_body_carries_crc_and_decodes() -> None:
    import zlib

    from rocketlite.bridge.config import encode_send_batch
    from rocketlite.protocols.remoting.codec import decode_batch

    body = encode_send_batch([(b"one", {"UNIQ_KEY": "A", "TAGS": "t"}, 0), (b"two", {}, 5)])
    items = decode_batch(body)
    assert [(i.body, i.flag, i.properties) for i in items] == [(b"one", 0, {"UNIQ_KEY": "A", "TAGS": "t"}),
                                                               (b"two", 5, {})]
    assert int.from_bytes(body[8:12], "big") == zlib.crc32(b"one") & 0x7FFFFFFF
