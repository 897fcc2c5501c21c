"""The admin API, /metrics and the console assets, driven in-process through the ASGI callable."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rocketlite.config import Settings
from rocketlite.core.broker import Broker, ClientInfo
from rocketlite.core.filters import Subscription
from rocketlite.core.message import Message
from rocketlite.frontends import FrontEndContext
from rocketlite.protocols.http.app import body_fields, build_app
from rocketlite.protocols.http.server import build_asgi
from rocketlite.runtime import TrioRuntime
from rocketlite.storage.memory import MemoryStore


class Client:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def request(self, method: str, path: str, body: Any = None,
                      headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        path, _, qs = path.partition("?")
        data = json.dumps(body).encode() if body is not None else b""
        scope = {"type": "http", "method": method, "path": path, "query_string": qs.encode(),
                 "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": data, "more_body": False}

        out: dict[str, Any] = {"body": b""}

        async def send(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start":
                out["status"] = msg["status"]
                out["headers"] = {k.decode(): v.decode() for k, v in msg["headers"]}
            else:
                out["body"] += msg.get("body", b"")

        await self.app(scope, receive, send)
        return out["status"], out["headers"], out["body"]

    async def json(self, method: str, path: str, body: Any = None, status: int = 200, **kw: Any) -> Any:
        code, _, raw = await self.request(method, path, body, **kw)
        assert code == status, (code, raw)
        return json.loads(raw)


async def make(token: str = "") -> tuple[Broker, FrontEndContext, Client]:
    broker = Broker(MemoryStore(), TrioRuntime())
    await broker.start()
    settings = Settings()
    settings.set("storage", "ephemeral", True)
    settings.set("http", "admin_token", token)
    ctx = FrontEndContext(broker=broker, settings=settings)
    ctx.ready = True
    return broker, ctx, Client(build_asgi(ctx))


async def test_topic_lifecycle() -> None:
    broker, _, c = await make()
    t = await c.json("POST", "/api/topics", {"name": "orders", "queues": 2}, status=201)
    assert t["read_queues"] == 2 and t["write_queues"] == 2 and len(t["queues"]) == 2
    await broker.send([Message("orders", b"x") for _ in range(5)])
    listed = await c.json("GET", "/api/topics")
    assert [(x["name"], x["messages"]) for x in listed["topics"]] == [("orders", 5)]
    await broker.create_topic("%RETRY%g", queues=1)
    assert [x["name"] for x in (await c.json("GET", "/api/topics"))["topics"]] == ["orders"]
    assert "%RETRY%g" in [x["name"] for x in (await c.json("GET", "/api/topics?system=true"))["topics"]]
    t = await c.json("PUT", "/api/topics/orders", {"queues": 8})
    assert t["write_queues"] == 8 and broker.topics["orders"].read_queues == 8
    t = await c.json("PATCH", "/api/topics/orders", {"write_queues": 3})
    assert (t["read_queues"], t["write_queues"]) == (8, 3)
    await c.json("GET", "/api/topics/nope", status=404)
    await c.json("POST", "/api/topics", {"name": "bad name!"}, status=400)
    await c.json("POST", "/api/topics", {"name": "x", "queues": 0}, status=400)
    purge = await c.json("POST", "/api/topics/orders/purge")
    assert purge == {"purged": "orders", "queues": 2, "messages": 5}
    assert [x["messages"] for x in (await c.json("GET", "/api/topics"))["topics"]] == [0]
    await c.json("POST", "/api/topics/nope/purge", status=404)
    await c.json("DELETE", "/api/topics/orders")
    assert "orders" not in broker.topics
    await c.json("DELETE", "/api/topics/orders", status=404)
    await c.json("DELETE", "/api/topics", status=405)


async def test_groups_lag_and_offset_reset() -> None:
    broker, _, c = await make()
    await broker.create_topic("t", queues=2)
    results = await broker.send([Message("t", b"m%d" % i) for i in range(10)])
    broker.register_consumer(ClientInfo("c1", "g1", protocol="remoting",
                                        subscriptions={"t": Subscription.make("t", "*")}))
    await broker.commit_offset("g1", "t", 0, 2)
    groups = await c.json("GET", "/api/groups")
    assert groups["groups"] == [{"name": "g1", "declared": False, "clients": 1, "topics": ["t"], "lag": 8}]
    g = await c.json("GET", "/api/groups/g1")
    q = {x["queue_id"]: x for x in g["topics"][0]["queues"]}
    assert q[0] == {"queue_id": 0, "broker_offset": 5, "min_offset": 0, "consumer_offset": 2, "lag": 3}
    assert q[1]["consumer_offset"] is None and q[1]["lag"] == 5
    assert g["clients"][0]["subscriptions"] == {"t": "*"}
    r = await c.json("POST", "/api/groups/g1/offsets", {"topic": "t", "to": "latest"})
    assert {x["new_offset"] for x in r["queues"]} == {5}
    assert (await c.json("GET", "/api/groups/g1"))["lag"] == 0
    await c.json("POST", "/api/groups/g1/offsets", {"topic": "t", "offset": 1, "queue_id": 1})
    assert broker.query_offset("g1", "t", 1) == 1 and broker.query_offset("g1", "t", 0) == 5
    first_ts = min(x.queue_offset for x in results)  # noqa: F841 - timestamps are equal in a fast test
    r = await c.json("POST", "/api/groups/g1/offsets", {"topic": "t", "timestamp_ms": 0})
    assert {x["new_offset"] for x in r["queues"]} == {0}
    await c.json("POST", "/api/groups/g1/offsets", {"topic": "t"}, status=400)
    await c.json("POST", "/api/groups/g1/offsets", {"topic": "t", "offset": "ten"}, status=400)
    await c.json("POST", "/api/messages", {"topic": "t", "body_base64": "!!notbase64"}, status=400)
    await c.json("POST", "/api/groups/g1/offsets", {"topic": "t", "to": "sideways"}, status=400)
    await c.json("GET", "/api/groups/zzz", status=404)
    clients = await c.json("GET", "/api/clients")
    assert clients["consumers"][0]["client_id"] == "c1"


async def test_message_lookup_send_and_resend() -> None:
    broker, _, c = await make()
    sent = await c.json("POST", "/api/messages", {"topic": "orders", "body": "hello", "keys": "k1 k2",
                                                  "tags": "TagA", "properties": {"a": "b"}}, status=201)
    await broker.send([Message("orders", b"\xff\xfe binary", keys="k3")])
    mid = sent["unique_id"]
    m = await c.json("GET", f"/api/messages/{mid}")
    assert m["body_text"] == "hello" and m["tags"] == "TagA" and m["properties"]["a"] == "b"
    assert m["delivery"] == []
    by_key = await c.json("GET", "/api/messages?key=k2&topic=orders")
    assert [x["unique_id"] for x in by_key["messages"]] == [mid]
    assert (await c.json("GET", "/api/messages?key=k2&topic=other"))["messages"] == []
    binary = (await c.json("GET", "/api/messages?key=k3"))["messages"][0]
    assert binary["body_text"] is None and binary["body_base64"]
    by_id = await c.json("GET", f"/api/messages?id={mid}")
    assert len(by_id["messages"]) == 1
    q = m["queue_id"]
    by_off = await c.json("GET", f"/api/messages?topic=orders&queue_id={q}&offset={m['queue_offset']}&count=1")
    assert by_off["messages"][0]["unique_id"] == mid
    newest = await c.json("GET", "/api/messages?topic=orders")
    assert len(newest["messages"]) == 2
    await c.json("GET", "/api/messages", status=400)
    await c.json("GET", "/api/messages/NOPE", status=404)
    # delivery state per group
    await broker.commit_offset("g1", "orders", q, m["queue_offset"] + 1)
    m = await c.json("GET", f"/api/messages/{mid}")
    assert m["delivery"] == [{"group": "g1", "state": "CONSUMED", "consumer_offset": m["queue_offset"] + 1}]
    r = await c.json("POST", f"/api/messages/{mid}/resend", {"group": "g1"})
    assert r["resent"] == mid
    if r["method"] == "retry_topic":
        again = await broker.query_by_id(r["new_id"])
        assert again is not None and again.topic == "%RETRY%g1" and again.body == b"hello"
        assert again.properties["RETRY_TOPIC"] == "orders"
    await c.json("POST", f"/api/messages/{mid}/resend", {}, status=400)


async def test_admin_token() -> None:
    _, _, c = await make(token="s3cret")
    await c.json("GET", "/api/topics", status=401)
    await c.json("GET", "/api/topics", headers={"Authorization": "Bearer wrong"}, status=401)
    await c.json("GET", "/api/topics", headers={"Authorization": "Bearer s3cret"})
    await c.json("GET", "/api/openapi.json")  # the description stays public
    code, _, _ = await c.request("GET", "/metrics")
    assert code == 200
    code, _, _ = await c.request("GET", "/")
    assert code == 200


async def test_console_assets_and_errors() -> None:
    _, _, c = await make()
    code, headers, body = await c.request("GET", "/")
    assert code == 200 and headers["content-type"].startswith("text/html") and b"rocketlite" in body
    for name in ("console.js", "console.css"):
        code, headers, _ = await c.request("GET", f"/static/{name}")
        assert code == 200, name
    assert (await c.request("GET", "/static/../app.py"))[0] == 404
    assert (await c.request("GET", "/nothing-here"))[0] == 404
    assert (await c.request("POST", "/api/topics", None))[0] == 400
    code, _, _ = await c.request("GET", "/health")
    assert code == 200


async def test_cluster_and_mqtt_placeholder() -> None:
    _, ctx, c = await make()
    info = await c.json("GET", "/api/cluster")
    assert info["broker_name"] == "rocketlite" and info["features"]["purge"] in (True, False)
    assert (await c.json("GET", "/api/mqtt"))["available"] is False

    class FakeMqtt:
        def admin_snapshot(self) -> dict[str, Any]:
            return {"clients": [{"client_id": "dev1"}], "sessions": {"dev1": {"subs": ["a/#"]}},
                    "retained": [{"topic": "a/b", "payload": b"on"}]}

    ctx.services["mqtt"] = FakeMqtt()
    snap = await c.json("GET", "/api/mqtt")
    assert snap["available"] and snap["clients"] == [{"client_id": "dev1"}]
    assert snap["sessions"] == [{"id": "dev1", "subs": ["a/#"]}]
    assert snap["retained"][0]["payload"] == b"on".hex()


def test_body_preview() -> None:
    assert body_fields(b"hi")["body_text"] == "hi"
    big = ("é" * 5000).encode()
    f = body_fields(big)
    assert f["body_truncated"] and f["body_text"] and f["body_size"] == 10000
    assert body_fields(b"\x80\x81")["body_text"] is None


async def test_openapi_document_validates() -> None:
    validator = pytest.importorskip("openapi_spec_validator")
    _, _, c = await make()
    doc = await c.json("GET", "/api/openapi.json")
    validator.validate(doc)
    assert doc["openapi"].startswith("3.")
    # every routed path is described
    for path in ("/api/topics", "/api/groups/{name}/offsets", "/api/messages/{id}/resend", "/metrics"):
        assert path in doc["paths"]


async def test_metrics_parse() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    broker, _, c = await make()
    from rocketlite.metrics import METRICS

    METRICS.connection_opened("mqtt")
    METRICS.messages_in("mqtt", "a", 2, 10)
    METRICS.observe("rocketlite_store_commit_seconds", {}, 0.0003)
    await broker.send([Message("a", b"xyz") for _ in range(3)])
    await broker.commit_offset("g", "a", 0, 0)
    code, headers, body = await c.request("GET", "/metrics")
    assert code == 200 and headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in parser.text_string_to_metric_families(body.decode())}
    lag = {tuple(sorted(s.labels.items())): s.value for s in families["rocketlite_consumer_lag"].samples}
    assert lag[(("group", "g"), ("topic", "a"))] == 3
    assert families["rocketlite_store_commit_seconds"].type == "histogram"
    assert families["rocketlite_connections"].type == "gauge"
    assert any(s.value >= 2 for s in families["rocketlite_messages_in"].samples)


async def test_mqtt_manager_shape_and_metrics() -> None:
    """The console reads the MQTT front-end's manager (sessions, online, retained) as it is."""
    parser = pytest.importorskip("prometheus_client.parser")
    from types import SimpleNamespace

    _, ctx, c = await make()
    sub = SimpleNamespace(qos=1)
    sess = SimpleNamespace(client_id="dev1", subscriptions={"a/#": sub}, inflight={1: None}, queue=[],
                           expiry_interval=3600, keep_alive=30)
    gone = SimpleNamespace(client_id="dev2", subscriptions={}, inflight={}, queue=[1, 2], expiry_interval=60,
                           keep_alive=0)
    conn = SimpleNamespace(client_id="dev1", peer="127.0.0.1:5555", version=5, session=sess)
    ctx.services["mqtt"] = SimpleNamespace(
        sessions={"dev1": sess, "dev2": gone}, online={"dev1": conn}, offline_since={"dev2": 123},
        retained={"a/lamp": SimpleNamespace(payload=b"on", qos=1)},
        stats={"received": 4, "sent": 2, "connects": 2, "dropped": 0})
    snap = await c.json("GET", "/api/mqtt")
    assert snap["clients"] == [{"client_id": "dev1", "peer": "127.0.0.1:5555", "protocol": "MQTT 5.0",
                                "keep_alive": 30, "subscriptions": 1}]
    assert snap["sessions"][0]["subscriptions"] == ["a/# (QoS 1)"] and snap["sessions"][1]["queued"] == 2
    assert snap["sessions"][1]["connected"] is False
    assert snap["retained"] == [{"topic": "a/lamp", "qos": 1, "size": 2, "payload": "on"}]
    _, _, body = await c.request("GET", "/metrics")
    families = {f.name: f for f in parser.text_string_to_metric_families(body.decode())}
    assert families["rocketlite_mqtt_sessions"].samples[0].value == 2
    assert families["rocketlite_mqtt_received"].samples[0].value == 4


async def test_group_shows_pop_inflight() -> None:
    broker, _, c = await make()
    if not hasattr(broker, "pop"):
        pytest.skip("core without POP")
    await broker.create_topic("p", queues=1)
    await broker.send([Message("p", b"m%d" % i) for i in range(3)])
    got = await broker.pop("gp", "p", 2, 30_000)
    assert len(got) == 2
    g = await c.json("GET", "/api/groups/gp")
    assert g["topics"][0]["pop_inflight"] == 2


async def test_hostile_requests_never_500() -> None:
    """Random paths, methods, query strings and bodies: always a 2xx/4xx/501 JSON answer, never a 500."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    broker, _, c = await make()
    await broker.send([Message("t", b"x", keys="k")])
    results: list[tuple[str, str, int]] = []
    json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                               lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                               max_leaves=6)
    fields = st.dictionaries(st.sampled_from(["name", "topic", "queues", "read_queues", "perm", "offset", "to",
                                              "timestamp_ms", "queue_id", "group", "body", "body_base64", "keys",
                                              "properties", "attributes", "message_type"]), json_values, max_size=5)
    paths = st.sampled_from(["/api/topics", "/api/topics/t", "/api/topics/t/purge", "/api/groups", "/api/groups/g",
                             "/api/groups/g/offsets", "/api/messages", "/api/messages/X", "/api/messages/X/resend",
                             "/api/cluster", "/api/mqtt", "/metrics", "/", "/static/x", "/api/%ff", "/api/topics/%00"])
    cases: list[tuple[str, str, Any]] = []

    @settings(max_examples=80, suppress_health_check=list(HealthCheck), deadline=None)
    @given(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]), paths,
           st.text(max_size=20), fields | json_values)
    def gen(method: str, path: str, qs: str, body: Any) -> None:
        cases.append((method, path + ("?" + qs if qs else ""), body))

    gen()
    for method, path, body in cases:
        code, _, _ = await c.request(method, path, body)
        results.append((method, path, code))
    assert all(code < 500 or code == 501 for _, _, code in results), [r for r in results if r[2] >= 500]
