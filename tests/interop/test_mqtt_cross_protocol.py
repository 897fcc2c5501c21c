"""MQTT <-> RocketMQ across protocols: paho-mqtt on one side, the official RocketMQ 5 Python client (gRPC) on the other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.interop.grpc_support import event, run_scenario
from tests.interop.mqtt_support import CLIENTS, prefix, run
from tests.support.server import RocketliteProcess

pytestmark = pytest.mark.interop
PAHO = str(CLIENTS / "paho_scenarios.py")


def test_grpc_producer_to_mqtt_subscriber(rocketlite_process: RocketliteProcess, tmp_path: Path) -> None:
    topic = prefix()
    host, port = rocketlite_process.addr("mqtt")
    sub = subprocess.Popen([sys.executable, PAHO, host, str(port), "5", "cross_sub", topic],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert sub.stdout is not None
    assert sub.stdout.readline().strip() == "SUBSCRIBED"
    ev = run_scenario("python", rocketlite_process, "produce", topic, "4", "r", home=tmp_path / "py")
    sent = event(ev, "produced")["sent"]
    out, err = sub.communicate(timeout=30)
    assert sub.returncode == 0, err[-3000:]
    got = json.loads(out.splitlines()[0])
    assert sorted(g["payload"] for g in got) == sorted(s["body"] for s in sent)
    assert all(g["topic"] == topic and g["qos"] == 1 for g in got)
    assert all(g["props"].get("origin") == "grpc" and g["props"].get("TAGS") == "TagA" for g in got)


@pytest.mark.parametrize("version", [4, 5])
def test_mqtt_publisher_to_grpc_consumer(rocketlite_process: RocketliteProcess, tmp_path: Path, version: int) -> None:
    topic = prefix()
    host, port = rocketlite_process.addr("mqtt")
    run([sys.executable, PAHO, host, str(port), str(version), "cross_pub", topic])
    ev = run_scenario("python", rocketlite_process, "consume", topic, f"G_{topic}", "4", home=tmp_path / "py")
    got = event(ev, "consumed")["got"]
    assert sorted(g["body"] for g in got) == [f"mqtt-{i}" for i in range(4)]
    for g in got:
        assert g["props"]["originMqttTopic"] == f"{topic}/x/y"
        if version == 5:
            assert g["props"]["origin"] == "mqtt"
