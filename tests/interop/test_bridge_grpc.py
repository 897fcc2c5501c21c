"""The bridge's reverse direction over a gRPC upstream (a RocketMQ 5 proxy endpoint), between two
real rocketlite processes: the edge reaches the second one, the upstream, only on its gRPC port.

The first commands are produced upstream by the official PyPI ``rocketmq-python-client`` 5.1.2 (its
own venv, a subprocess), later rounds by a remoting producer (batches: fast). The edge subscribes
as a SimpleConsumer of its consumer group (Telemetry settings, Heartbeat, long-polled
ReceiveMessage, AckMessage after the local commit) and publishes them locally, where a paho MQTT
subscriber and plain remoting pulls see them. The upstream is stopped and restarted, the edge is
SIGKILLed and restarted (once idle, once in the middle of a 300-command burst): nothing is lost,
nothing duplicated (a redelivery of something already published is recognised by its message id).
"""

from __future__ import annotations

import json
import queue
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from rocketlite.admin.client import RemotingClient
from rocketlite.protocols.remoting.codec import BatchItem, RequestCode, encode_batch
from tests.interop.test_bridge_remoting import (
    api,
    metric,
    read_all,
    wait_for,
    write_config,
)
from tests.support.interop import venv_python
from tests.support.server import RocketliteProcess

pytestmark = pytest.mark.interop

PRODUCER = r'''
import json, sys
from rocketmq import ClientConfiguration, Credentials, Message, Producer
endpoint, topic, start, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ak, sk = (sys.argv[5], sys.argv[6]) if len(sys.argv) > 6 else ("", "")
p = Producer(ClientConfiguration(endpoint, Credentials(ak, sk), request_timeout=5), (topic,))
p.startup()
sent = []
for k in range(start, start + count):
    m = Message()
    m.topic = topic
    m.body = f"cmd-{k}".encode()
    m.tag = "Cmd"
    m.keys = f"key-{k}"
    src = f"g{k % 3}"
    if k % 2 == 0:  # every other command in a message group (FIFO), the rest plain
        m.message_group = src
    else:
        src = "plain"
    m.add_property("src", src)
    m.add_property("k", str(k))
    m.add_property("originMqttTopic", f"commands/device-{k % 2}")
    r = p.send(m)
    sent.append({"k": k, "id": r.message_id})
print(json.dumps({"event": "produced", "sent": sent}), flush=True)
p.shutdown()
print(json.dumps({"event": "done"}), flush=True)
'''


def produce(tmp_path: Path, up: RocketliteProcess, topic: str, start: int, count: int, *keys: str) -> list[str]:
    """Send ``count`` commands upstream with the official Python client; their message ids."""
    py = venv_python("grpc-python")
    script = tmp_path / "producer.py"
    script.write_text(PRODUCER)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    proc = subprocess.run([str(py), str(script), up.endpoint("grpc"), topic, str(start), str(count), *keys],
                          check=False, capture_output=True, timeout=60, env={"HOME": str(home), "PATH": "/usr/bin:/bin"})
    events = [json.loads(x) for x in proc.stdout.decode().splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not events or events[-1].get("event") != "done":
        pytest.fail(f"producer failed ({proc.returncode}): {proc.stdout.decode()[-2000:]}\n{proc.stderr.decode()[-4000:]}")
    return [s["id"] for s in events[0]["sent"]]


def produce_remoting(up: RocketliteProcess, topic: str, start: int, count: int) -> list[str]:
    """The same kind of commands through the upstream's remoting port, one batch per upstream queue
    (fast: the whole round is stored upstream at once); their message ids."""
    per_queue: dict[int, list[BatchItem]] = {}
    ids = []
    for k in range(start, start + count):
        uid = f"RMT{k:08d}"
        props = {"UNIQ_KEY": uid, "TAGS": "Cmd", "KEYS": f"key-{k}", "k": str(k),
                 "originMqttTopic": f"commands/device-{k % 2}"}
        if k % 2 == 0:
            props.update(src=f"g{k % 3}", __SHARDINGKEY=f"g{k % 3}")
            q = 0
        else:
            props["src"] = f"q{k % 4}"  # plain messages: order per upstream queue
            q = k % 4
        per_queue.setdefault(q, []).append(BatchItem(f"cmd-{k}".encode(), 0, props))
        ids.append(uid)
    with RemotingClient(up.endpoint("remoting"), timeout=10) as c:
        for q, items in per_queue.items():
            ext = {"a": "PG", "b": topic, "c": "TBW102", "d": 4, "e": q, "f": 0, "g": int(time.time() * 1000), "h": 0,
                   "i": "", "j": 0, "k": "false", "m": "true"}
            c.invoke(up.endpoint("remoting"), RequestCode.SEND_BATCH_MESSAGE, ext, encode_batch(items))
    return ids


def local_records(edge: RocketliteProcess, topic: str) -> list[Any]:
    return [r for recs in read_all(edge, topic).values() for r in recs]


def check_local_order(edge: RocketliteProcess, topic: str, plain_below: int) -> None:
    """Each message group's commands sit in one local queue, in the order they were sent. Plain
    commands of one upstream queue (``q*``) too, for those sent before ``plain_below``: later ones
    were in flight when the edge was killed, and a message received but not stored before a crash
    is redelivered after newer ones (POP semantics of a non-FIFO group; a FIFO group holds back
    the rest of the message group instead)."""
    per_queue = read_all(edge, topic)
    where: dict[str, set[int]] = {}
    for q, recs in per_queue.items():
        per_src: dict[str, list[int]] = {}
        for r in recs:
            src, k = r.properties["src"], int(r.properties["k"])
            if src.startswith("g") or (src.startswith("q") and k < plain_below):
                per_src.setdefault(src, []).append(k)
                where.setdefault(src, set()).add(q)
        for src, ks in per_src.items():
            assert ks == sorted(ks), f"local queue {q}, source {src}: {ks}"
    assert all(len(qs) == 1 for qs in where.values()), where


def upstream_lag(up: RocketliteProcess, group: str) -> int:
    groups = {g["name"]: g for g in (api(up, "/api/groups") or {}).get("groups", [])}
    return int(groups.get(group, {}).get("lag", -1))


def test_grpc_commands_reach_mqtt_across_upstream_and_edge_restarts(tmp_path: Path) -> None:
    import paho.mqtt.client as mqtt

    venv_python("grpc-python")  # skip early when the client is not installed
    up = RocketliteProcess(tmp_path / "up").start()
    edge = None
    sub = None
    try:
        host, port = up.addr("grpc")
        cfg = write_config(tmp_path / "edge.toml", f"grpc://{host}:{port}", pull_topics=["commands"],
                           pull_invisible_ms=2000, consumer_group="edge-17-commands", batch_size=8)
        edge = RocketliteProcess(tmp_path / "edge", extra_args=["--config", str(cfg)]).start()
        mhost, mport = edge.addr("mqtt")
        got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        subscribed: queue.Queue[bool] = queue.Queue()
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="device-0", protocol=mqtt.MQTTv311)
        sub.on_message = lambda c, u, m: got.put((m.topic, m.payload))
        sub.on_subscribe = lambda *a: subscribed.put(True)
        sub.connect(mhost, mport)
        sub.loop_start()
        sub.subscribe("commands/device-0", qos=1)
        subscribed.get(timeout=10)

        def local_ids() -> set[str]:
            assert edge is not None
            return {r.properties.get("UNIQ_KEY") for r in local_records(edge, "commands")}

        ids = produce(tmp_path, up, "commands", 0, 12)
        # round 1: commands for device-0 (even k) reach its MQTT subscription
        received = sorted(got.get(timeout=20) for _ in range(6))
        assert received == sorted(("commands/device-0", f"cmd-{k}".encode()) for k in range(0, 12, 2))
        wait_for(lambda: local_ids() >= set(ids), what="round 1 on the edge")
        assert metric(edge, "rocketlite_bridge_upstream_up", bridge="cloud") == 1

        # the upstream stops: the edge backs off and says so; restarted on the same ports
        up.stop()
        wait_for(lambda: metric(edge, "rocketlite_bridge_upstream_up", bridge="cloud") == 0, what="upstream down")
        up.start()
        ids += produce_remoting(up, "commands", 12, 12)
        wait_for(lambda: local_ids() >= set(ids), timeout=30, what="round 2 after the upstream restart")
        wait_for(lambda: upstream_lag(up, "edge-17-commands") == 0, what="acknowledged upstream")

        # the edge is SIGKILLed: commands wait upstream (the group's lag shows them), then arrive
        edge.kill()
        ids += produce_remoting(up, "commands", 24, 12)
        wait_for(lambda: upstream_lag(up, "edge-17-commands") >= 12, what="lag upstream while the edge is down")
        edge.start()
        wait_for(lambda: local_ids() >= set(ids), timeout=30, what="round 3 after the edge restart")
        wait_for(lambda: upstream_lag(up, "edge-17-commands") == 0, what="all acknowledged")

        assert metric(edge, "rocketlite_bridge_received_total", bridge="cloud", topic="commands") == 12  # since restart
        recs = local_records(edge, "commands")
        assert len(recs) == len(ids) == 36, "a command was published twice"
        assert {r.properties["UNIQ_KEY"] for r in recs} == set(ids)
        assert {r.properties.get("TAGS") for r in recs} == {"Cmd"}
        assert {r.properties["KEYS"] for r in recs} == {f"key-{k}" for k in range(36)}
        assert len({r.properties["originMqttTopic"] for r in recs}) == 2

        # a burst with the edge SIGKILLed as soon as it starts arriving: whatever was received
        # but not acknowledged comes back after the invisible time and is published exactly once
        burst = produce_remoting(up, "commands", 36, 300)
        wait_for(lambda: len(local_ids()) > 36, what="the burst starting to arrive")
        edge.kill()
        edge.start()
        wait_for(lambda: local_ids() >= set(ids) | set(burst), timeout=30, what="the burst after the kill")
        recs = local_records(edge, "commands")
        assert len(recs) == 336, f"{len(recs) - 336} duplicate(s)"
        assert all(r.properties.get("rocketliteBridge") == "cloud" for r in recs)
        check_local_order(edge, "commands", plain_below=36)
    finally:
        if sub is not None:
            sub.loop_stop()
            sub.disconnect()
        if edge is not None:
            edge.stop()
        up.stop()


def test_grpc_reverse_with_acl_over_tls(tmp_path: Path) -> None:
    """An upstream with ACL on; the bridges reach its gRPC port over TLS (certificate not verified).
    The right keys receive the commands; a wrong secret is refused, backs off and shows as down."""
    venv_python("grpc-python")
    up = RocketliteProcess(ephemeral=True, extra_args=[
        "--set", "security.enabled=true", "--set", "security.access_key=edgeAK",
        "--set", "security.secret_key=edgeSK"]).start()
    edge = None
    try:
        host, port = up.addr("grpc")
        cfg = write_config(tmp_path / "edge.toml", f"grpcs://{host}:{port}", pull_topics=["signedcmds"],
                           local_topic_prefix="cloud_", access_key="edgeAK", secret_key="edgeSK", tls_verify=False)
        write_config(cfg, f"grpcs://{host}:{port}", name="bad", append=True, pull_topics=["refusedcmds"],
                     access_key="edgeAK", secret_key="wrong", tls_verify=False)
        edge = RocketliteProcess(ephemeral=True, extra_args=["--config", str(cfg)]).start()
        ids = produce(tmp_path, up, "signedcmds", 0, 6, "edgeAK", "edgeSK")
        wait_for(lambda: {r.properties.get("UNIQ_KEY") for r in local_records(edge, "cloud_signedcmds")} == set(ids),
                 what="signed commands on the edge")
        assert metric(edge, "rocketlite_bridge_upstream_up", bridge="cloud") == 1
        wait_for(lambda: metric(edge, "rocketlite_bridge_retries_total", bridge="bad") >= 2, what="bad retries")
        assert metric(edge, "rocketlite_bridge_upstream_up", bridge="bad") == 0
        assert local_records(edge, "refusedcmds") == []
    finally:
        if edge is not None:
            edge.stop()
        up.stop()


def test_grpc_upstream_restarted_mid_drain(tmp_path: Path) -> None:
    """The upstream (persistent) stops while the edge is draining a burst and comes back on the same
    ports: what was received but not acknowledged is redelivered; all arrive, exactly once."""
    up = RocketliteProcess(tmp_path / "up").start()
    edge = None
    try:
        host, port = up.addr("grpc")
        cfg = write_config(tmp_path / "edge.toml", f"grpc://{host}:{port}", pull_topics=["commands"],
                           pull_invisible_ms=2000, batch_size=8)
        edge = RocketliteProcess(ephemeral=True, extra_args=["--config", str(cfg)]).start()
        burst = produce_remoting(up, "commands", 0, 300)

        def local_ids() -> set[str]:
            assert edge is not None
            return {r.properties.get("UNIQ_KEY") for r in local_records(edge, "commands")}

        wait_for(lambda: local_ids(), what="the burst starting to arrive")
        up.stop()
        up.start()
        wait_for(lambda: local_ids() >= set(burst), timeout=30, what="the burst after the upstream restart")
        wait_for(lambda: upstream_lag(up, "rocketlite-bridge-cloud") == 0, what="all acknowledged upstream")
        recs = local_records(edge, "commands")
        assert len(recs) == 300, f"{len(recs) - 300} duplicate(s)"
        check_local_order(edge, "commands", plain_below=0)
    finally:
        if edge is not None:
            edge.stop()
        up.stop()
