"""rocketlite.metrics: the registry front-ends report into, rendered in the Prometheus text format."""

from __future__ import annotations

import pytest

from rocketlite.metrics import Registry, label_key

parser = pytest.importorskip("prometheus_client.parser")


def families(reg: Registry, extra: list = []) -> dict:  # type: ignore[type-arg]
    return {f.name: f for f in parser.text_string_to_metric_families(reg.render(extra))}


def test_counters_gauges_histograms_and_collectors() -> None:
    reg = Registry()
    reg.messages_in("mqtt", 'we"ird\\topic\n', 3, 30)
    reg.messages_in("mqtt", 'we"ird\\topic\n', 1, 10)
    reg.messages_out("grpc", "a", 2, 4)
    reg.connection_opened("remoting")
    reg.connection_opened("remoting")
    reg.connection_closed("remoting")
    reg.inc_key("rocketlite_custom_total", label_key(kind="x"), 5)
    for v in (0.00005, 0.0003, 0.2, 9.0):
        reg.observe("rocketlite_store_commit_seconds", None, v)
    reg.observe("rocketlite_store_commit_batch_size", {}, 3)
    remove = reg.add_collector(lambda: [("rocketlite_mqtt_sessions", {}, 7)])
    reg.add_collector(lambda: 1 / 0)  # type: ignore[arg-type,return-value]  # ignored, scrape goes on
    f = families(reg, [("rocketlite_consumer_lag", {"group": "g", "topic": "t"}, 12)])
    msgs_in = {s.labels["topic"]: s.value for s in f["rocketlite_messages_in"].samples if s.name.endswith("_total")}
    assert msgs_in == {'we"ird\\topic\n': 4}
    assert [s.value for s in f["rocketlite_bytes_in"].samples if s.name.endswith("_total")] == [40]
    assert f["rocketlite_connections"].samples[0].value == 1
    assert f["rocketlite_connections_opened"].samples[0].value == 2
    assert f["rocketlite_custom"].samples[0].value == 5
    assert f["rocketlite_mqtt_sessions"].samples[0].value == 7
    assert f["rocketlite_consumer_lag"].samples[0].labels == {"group": "g", "topic": "t"}
    h = f["rocketlite_store_commit_seconds"]
    assert h.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in h.samples if s.name.endswith("_bucket")}
    assert buckets["0.0001"] == 1 and buckets["0.25"] == 3 and buckets["+Inf"] == 4
    count = [s.value for s in h.samples if s.name.endswith("_count")]
    assert count == [4]
    assert f["rocketlite_store_commit_batch_size"].type == "histogram"
    remove()
    assert "rocketlite_mqtt_sessions" not in families(reg)


def test_declared_histograms_render_empty() -> None:
    f = families(Registry())
    assert f["rocketlite_store_commit_batch_size"].type == "histogram"
    assert [s.value for s in f["rocketlite_store_commit_seconds"].samples if s.name.endswith("_count")] == [0]
