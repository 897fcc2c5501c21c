"""Edge-to-cloud bridge between two real rocketlite processes over the remoting protocol.

The edge forwards to the upstream through the upstream's NameServer (GET_ROUTEINFO_BY_TOPIC, then
SEND_MESSAGE_V2 / SEND_BATCH_MESSAGE to the routed broker); the upstream is stopped in the middle
and restarted on the same ports, the edge is killed and restarted too; every message must end up
upstream, in order per local queue and per message group. Upstream content is read back with
plain remoting PULLs (rocketlite.admin.client), MQTT with paho.
"""

from __future__ import annotations

import queue
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from rocketlite.admin.client import RemotingClient
from rocketlite.protocols.remoting.codec import RequestCode, ResponseCode, decode_records, encode_properties
from tests.support.server import RocketliteProcess

pytestmark = pytest.mark.interop


def wait_for(pred: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling interval, not synchronisation


def write_config(path: Path, upstream: str, *, name: str = "cloud", append: bool = False, **extra: Any) -> Path:
    lines = [f"[bridges.{name}]", f'upstream = "{upstream}"']
    base = {"retry_min_ms": 50, "retry_max_ms": 400, "request_timeout_ms": 2000, "connect_timeout_ms": 1000,
            "pull_suspend_ms": 1000}
    base.update(extra)
    for k, v in base.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, int):
            lines.append(f"{k} = {v}")
        elif isinstance(v, list):
            lines.append(f"{k} = [{', '.join(repr(x).replace(chr(39), chr(34)) for x in v)}]")
        else:
            lines.append(f'{k} = "{v}"')
    text = "\n".join(lines) + "\n"
    path.write_text((path.read_text() + "\n" if append else "") + text)
    return path


def send(c: RemotingClient, addr: str, topic: str, body: bytes, props: dict[str, str], queue_id: int = -1) -> None:
    ext = {"a": "PG", "b": topic, "c": "TBW102", "d": 4, "e": queue_id, "f": 0, "g": int(time.time() * 1000),
           "h": 0, "i": encode_properties(props), "j": 0, "k": "false"}
    c.invoke(addr, RequestCode.SEND_MESSAGE_V2, ext, body)


def read_all(srv: RocketliteProcess, topic: str) -> dict[int, list[Any]]:
    """Every record of every queue of ``topic`` on ``srv``, per queue, in queue order."""
    out: dict[int, list[Any]] = {}
    with RemotingClient(srv.endpoint("remoting"), timeout=5) as c:
        resp = c.invoke(c.namesrv, RequestCode.GET_ROUTEINFO_BY_TOPIC, {"topic": topic}, check=False)
        if resp.code != ResponseCode.SUCCESS:
            return out
        for _broker, addr, nread, _nwrite in c.topic_queues(topic):
            for q in range(nread):
                recs: list[Any] = []
                off = 0
                while True:
                    r = c.invoke(addr, RequestCode.PULL_MESSAGE, {
                        "consumerGroup": "verifier", "topic": topic, "queueId": q, "queueOffset": off,
                        "maxMsgNums": 256, "sysFlag": 0x4, "commitOffset": 0, "suspendTimeoutMillis": 0,
                        "subscription": "*", "subVersion": 0, "expressionType": "TAG"}, check=False)
                    if r.code != ResponseCode.SUCCESS:
                        break
                    batch = decode_records(r.body)
                    if not batch:
                        break
                    recs += batch
                    off = int(r.ext["nextBeginOffset"])
                out[q] = recs
    return out


def metric(srv: RocketliteProcess, name: str, **labels: str) -> float:
    host, port = srv.addr("http")
    text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def unique_count(srv: RocketliteProcess, topic: str) -> int:
    return len({r.properties.get("UNIQ_KEY") for recs in read_all(srv, topic).values() for r in recs})


def check_order(per_queue: dict[int, list[Any]]) -> None:
    """Within every upstream queue, each source's sequence numbers appear in increasing order of
    first appearance (at-least-once may replay a suffix; it never reorders)."""
    for q, recs in per_queue.items():
        seen: dict[str, list[int]] = {}
        firsts: set[str] = set()
        for r in recs:
            uid = r.properties["UNIQ_KEY"]
            if uid in firsts:
                continue
            firsts.add(uid)
            seen.setdefault(r.properties["src"], []).append(int(r.properties["seq"]))
        for src, seqs in seen.items():
            assert seqs == sorted(seqs), f"queue {q}, source {src}: out of order {seqs[:20]}..."


def test_store_and_forward_survives_upstream_and_edge_restarts(tmp_path: Path) -> None:
    up = RocketliteProcess(tmp_path / "up").start()
    edge = None
    try:
        cfg = write_config(tmp_path / "edge.toml", up.endpoint("remoting"), topics=["telemetry"], batch_size=16)
        edge = RocketliteProcess(tmp_path / "edge", extra_args=["--config", str(cfg)]).start()
        sent: list[tuple[str, int]] = []
        seqs: dict[str, int] = {}

        def produce(n: int) -> None:
            assert edge is not None
            with RemotingClient(edge.endpoint("remoting"), timeout=5) as c:
                for i in range(n):
                    k = len(sent)
                    if k % 3 == 0:  # message groups: order per group
                        src, qid, extra = f"g{k % 5}", -1, {"__SHARDINGKEY": f"g{k % 5}"}
                    else:  # plain messages sent to an explicit local queue: order per queue
                        src, qid, extra = f"q{k % 4}", k % 4, {}
                    seqs[src] = seqs.get(src, 0) + 1
                    send(c, edge.endpoint("remoting"), "telemetry", f"m{k}".encode(),
                         {"src": src, "seq": str(seqs[src]), "UNIQ_KEY": f"ID{k:08d}", **extra}, qid)
                    sent.append((src, seqs[src]))

        produce(100)
        wait_for(lambda: unique_count(up, "telemetry") >= 100, what="first 100 upstream")

        up.stop()  # the link drops: the edge keeps accepting, the backlog grows
        produce(100)
        wait_for(lambda: metric(edge, "rocketlite_bridge_backlog", bridge="cloud", topic="telemetry") >= 100,
                 what="backlog in /metrics")
        assert metric(edge, "rocketlite_bridge_upstream_up", bridge="cloud") == 0
        up.start()  # same ports
        produce(50)
        # a crash of the edge in the middle of draining: its position is durable in LMDB
        edge.kill()
        edge.start()
        produce(50)
        wait_for(lambda: unique_count(up, "telemetry") >= 300, timeout=20, what="all 300 upstream")
        wait_for(lambda: metric(edge, "rocketlite_bridge_backlog", bridge="cloud", topic="telemetry") == 0,
                 what="backlog drained")
        per_queue = read_all(up, "telemetry")
        got = {r.properties["UNIQ_KEY"] for recs in per_queue.values() for r in recs}
        assert got == {f"ID{k:08d}" for k in range(300)}
        check_order(per_queue)
        # each message group lives in exactly one upstream queue
        where: dict[str, set[int]] = {}
        for q, recs in per_queue.items():
            for r in recs:
                where.setdefault(r.properties["src"], set()).add(q)
        assert all(len(qs) == 1 for qs in where.values()), where
        assert metric(edge, "rocketlite_bridge_upstream_up", bridge="cloud") == 1
    finally:
        if edge is not None:
            edge.stop()
        up.stop()


def test_mqtt_filters_forward_and_commands_come_back(tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt

    up = RocketliteProcess(ephemeral=True).start()
    edge = None
    try:
        cfg = write_config(tmp_path / "edge.toml", up.endpoint("remoting"), mqtt_filters=["sensors/+/temp"],
                           pull_topics=["commands"])
        edge = RocketliteProcess(ephemeral=True, extra_args=["--config", str(cfg)]).start()
        host, port = edge.addr("mqtt")
        got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="device-1", protocol=mqtt.MQTTv311)
        subscribed = queue.Queue()  # type: ignore[var-annotated]
        sub.on_message = lambda c, u, m: got.put((m.topic, m.payload))
        sub.on_subscribe = lambda *a: subscribed.put(True)
        sub.connect(host, port)
        sub.loop_start()
        sub.subscribe("commands/device-1", qos=1)
        subscribed.get(timeout=10)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="device-2", protocol=mqtt.MQTTv311)
        pub.connect(host, port)
        pub.loop_start()
        for i in range(5):
            pub.publish("sensors/d1/temp", f"t{i}".encode(), qos=1).wait_for_publish(10)
            pub.publish("sensors/d1/humidity", f"h{i}".encode(), qos=1).wait_for_publish(10)
        wait_for(lambda: sum(len(v) for v in read_all(up, "sensors").values()) >= 5, what="temps upstream")
        recs = [r for v in read_all(up, "sensors").values() for r in v]
        assert sorted(r.body for r in recs) == [f"t{i}".encode() for i in range(5)]
        assert {r.properties["originMqttTopic"] for r in recs} == {"sensors/d1/temp"}
        # the reverse direction: a command sent to the upstream topic reaches the MQTT device
        with RemotingClient(up.endpoint("remoting"), timeout=5) as c:
            for i in range(3):
                send(c, up.endpoint("remoting"), "commands", f"cmd{i}".encode(),
                     {"originMqttTopic": "commands/device-1"}, 0)
        received = [got.get(timeout=15) for _ in range(3)]
        assert received == [("commands/device-1", f"cmd{i}".encode()) for i in range(3)]
        # commands brought down are not sent back up, and nothing else echoed
        assert metric(edge, "rocketlite_bridge_received_total", bridge="cloud", topic="commands") == 3
        pub.loop_stop()
        sub.loop_stop()
        pub.disconnect()
        sub.disconnect()
    finally:
        if edge is not None:
            edge.stop()
        up.stop()


def api(srv: RocketliteProcess, path: str) -> Any:
    import json

    host, port = srv.addr("http")
    try:
        return json.loads(urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5).read())
    except urllib.error.HTTPError:
        return None


def test_acl_signed_over_tls(tmp_path: Path) -> None:
    """Upstream with ACL on and TLS sniffed on its remoting port; a bridge with the right keys
    delivers, one with a wrong secret is refused and keeps its backlog (retrying)."""
    up = RocketliteProcess(ephemeral=True, extra_args=[
        "--set", "security.enabled=true", "--set", "security.access_key=edgeAK",
        "--set", "security.secret_key=edgeSK", "--set", "remoting.tls=true"]).start()
    edge = None
    try:
        cfg = write_config(tmp_path / "edge.toml", up.endpoint("remoting"), topics=["signed"], access_key="edgeAK",
                           secret_key="edgeSK", tls=True, tls_verify=False)
        write_config(cfg, up.endpoint("remoting"), name="bad", append=True, topics=["refused"], access_key="edgeAK",
                     secret_key="wrong", tls=True, tls_verify=False)
        edge = RocketliteProcess(ephemeral=True, extra_args=["--config", str(cfg)]).start()
        with RemotingClient(edge.endpoint("remoting"), timeout=5) as c:
            for i in range(20):
                send(c, edge.endpoint("remoting"), "signed", f"s{i}".encode(), {})
                send(c, edge.endpoint("remoting"), "refused", f"r{i}".encode(), {})
        wait_for(lambda: (api(up, "/api/topics/signed") or {}).get("appended") == 20, what="signed upstream")
        assert metric(edge, "rocketlite_bridge_forwarded_total", bridge="cloud", topic="signed") == 20
        wait_for(lambda: metric(edge, "rocketlite_bridge_retries_total", bridge="bad") >= 2, what="bad retries")
        assert metric(edge, "rocketlite_bridge_upstream_up", bridge="bad") == 0
        assert metric(edge, "rocketlite_bridge_backlog", bridge="bad", topic="refused") == 20
        assert (api(up, "/api/topics/refused") or {}).get("appended", 0) == 0
        # the backlog is a consumer group's lag in the console and the admin API
        groups = {g["name"]: g for g in api(edge, "/api/groups")["groups"]}
        assert groups["rocketlite-bridge-bad"]["lag"] == 20
        assert groups["rocketlite-bridge-cloud"]["lag"] == 0
    finally:
        if edge is not None:
            edge.stop()
        up.stop()


def test_real_clients_on_both_sides_alions(tmp_path: Path) -> None:
    """npm ali-ons produces on the edge; another ali-ons consumer group reads them upstream."""
    from tests.interop.test_remoting_clients import event, run_client

    up = RocketliteProcess(ephemeral=True).start()
    edge = None
    try:
        cfg = write_config(tmp_path / "edge.toml", up.endpoint("remoting"), topics=["T_bridged"])
        edge = RocketliteProcess(ephemeral=True, extra_args=["--config", str(cfg)]).start()
        base = {"topic": "T_bridged", "group": "G_bridged", "n": 10, "tag": "TagB", "prefix": "edge"}
        produced = event(run_client("alions", {**base, "scenario": "produce", "nameSrv": edge.endpoint("remoting")},
                                    tmp_path), "produced")
        assert len(produced["sent"]) == 10
        got = event(run_client("alions", {**base, "scenario": "consume", "nameSrv": up.endpoint("remoting")},
                               tmp_path), "consumed")["got"]
        assert sorted(g["body"] for g in got) == sorted(f"edge-{i}" for i in range(10))
        # the message ids (UNIQ_KEY) are the same on both sides
        recs = [r for v in read_all(up, "T_bridged").values() for r in v]
        local = [r for v in read_all(edge, "T_bridged").values() for r in v]
        assert len(recs) == 10 and {r.properties["UNIQ_KEY"] for r in recs} == {r.properties["UNIQ_KEY"] for r in local}
        assert {r.properties.get("TAGS") for r in recs} == {"TagB"}
    finally:
        if edge is not None:
            edge.stop()
        up.stop()


def test_commands_survive_upstream_and_edge_restarts(tmp_path: Path) -> None:
    """The reverse direction: offsets kept upstream, so neither outage loses or reorders a command."""
    up = RocketliteProcess(tmp_path / "up").start()
    edge = None
    try:
        cfg = write_config(tmp_path / "edge.toml", up.endpoint("remoting"), pull_topics=["commands"],
                           local_topic_prefix="cloud_")
        edge = RocketliteProcess(tmp_path / "edge", extra_args=["--config", str(cfg)]).start()
        seqs: dict[int, int] = {}

        def command(n: int) -> None:
            with RemotingClient(up.endpoint("remoting"), timeout=5) as c:
                for i in range(n):
                    q = i % 4
                    seqs[q] = seqs.get(q, 0) + 1
                    send(c, up.endpoint("remoting"), "commands", b"c", {"src": f"up{q}", "seq": str(seqs[q])}, q)

        def local_unique() -> int:
            return len({r.properties["UNIQ_KEY"] for v in read_all(edge, "cloud_commands").values() for r in v})

        command(20)
        wait_for(lambda: local_unique() >= 20, what="first commands on the edge")
        up.stop()
        up.start()
        command(20)
        wait_for(lambda: local_unique() >= 40, what="commands after the upstream restart")
        edge.kill()
        command(20)  # while the edge is down: they wait upstream
        edge.start()
        wait_for(lambda: local_unique() >= 60, what="commands after the edge restart")
        per_queue = read_all(edge, "cloud_commands")
        assert local_unique() == 60
        check_order(per_queue)
        assert all(r.properties.get("rocketliteBridge") == "cloud" for v in per_queue.values() for r in v)
    finally:
        if edge is not None:
            edge.stop()
        up.stop()


def test_grpc_upstream_over_tls_with_upstream_restart(tmp_path: Path) -> None:
    """Forwarding to a gRPC proxy endpoint (the upstream's gRPC port, TLS sniffed there), across an
    upstream restart; order per message group kept."""
    up = RocketliteProcess(tmp_path / "up").start()
    edge = None
    try:
        host, port = up.addr("grpc")
        cfg = write_config(tmp_path / "edge.toml", f"grpcs://{host}:{port}", topics=["gtopic"], tls_verify=False)
        edge = RocketliteProcess(tmp_path / "edge", extra_args=["--config", str(cfg)]).start()
        seqs: dict[str, int] = {}

        def produce(n: int, start: int) -> None:
            assert edge is not None
            with RemotingClient(edge.endpoint("remoting"), timeout=5) as c:
                for k in range(start, start + n):
                    src = f"g{k % 3}"
                    seqs[src] = seqs.get(src, 0) + 1
                    send(c, edge.endpoint("remoting"), "gtopic", f"m{k}".encode(),
                         {"src": src, "seq": str(seqs[src]), "UNIQ_KEY": f"7F0000010000000000000000{k:08X}",
                          "__SHARDINGKEY": src, "TAGS": "T", "KEYS": f"k{k}"})

        produce(30, 0)
        wait_for(lambda: unique_count(up, "gtopic") >= 30, what="first 30 over gRPC")
        up.stop()
        produce(30, 30)
        wait_for(lambda: metric(edge, "rocketlite_bridge_backlog", bridge="cloud", topic="gtopic") >= 30,
                 what="backlog while the proxy is down")
        up.start()
        wait_for(lambda: unique_count(up, "gtopic") >= 60, what="all 60 over gRPC")
        per_queue = read_all(up, "gtopic")
        recs = [r for v in per_queue.values() for r in v]
        assert {r.properties["UNIQ_KEY"] for r in recs} == {f"7F0000010000000000000000{k:08X}" for k in range(60)}
        assert {r.properties.get("TAGS") for r in recs} == {"T"}
        check_order(per_queue)
    finally:
        if edge is not None:
            edge.stop()
        up.stop()
