"""MQTT.js (npm mqtt) over TCP and WebSocket, MQTT 3.1.1 and 5, against rocketlite."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.interop.mqtt_support import CLIENTS, mqtt_server, prefix  # noqa: F401
from tests.support.interop import INTEROP, require

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("transport", ["tcp", "ws"])
@pytest.mark.parametrize("version", [4, 5])
def test_mqttjs(mqtt_server, transport, version):  # noqa: F811
    """QoS 0/1/2 round trips, retained, will, persistent session, wildcards, shared (one node process)."""
    name = "roundtrip,retained,will,persist,wildcards,shared"
    modules = require(INTEROP / "node-mqtt" / "node_modules" / "mqtt", "MQTT.js (npm mqtt)").parent
    node = require("node", "node")
    if transport == "tcp":
        host, port = mqtt_server.addr("mqtt")
        url = f"mqtt://{host}:{port}"
    else:
        host, port = mqtt_server.addr("http")
        url = f"ws://{host}:{port}/mqtt"
    env = {**os.environ, "MQTTJS_MODULES": str(modules)}
    p = subprocess.run([str(node), str(CLIENTS / "mqttjs_scenarios.js"), url, str(version), name, prefix()],
                       capture_output=True, text=True, timeout=20, env=env)
    assert p.returncode == 0 and "OK" in p.stdout, p.stdout + p.stderr
