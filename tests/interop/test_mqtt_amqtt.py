"""amqtt's asyncio client (MQTT 3.1.1, its own venv) against rocketlite, over TCP and WebSocket."""

from __future__ import annotations

import pytest

from tests.interop.mqtt_support import CLIENTS, mqtt_server, prefix, run  # noqa: F401
from tests.support.interop import venv_python

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("name", ["roundtrip", "retained", "will", "persist", "wildcards"])
def test_amqtt(mqtt_server, name):  # noqa: F811
    py = venv_python("amqtt")
    host, port = mqtt_server.addr("mqtt")
    run([str(py), str(CLIENTS / "amqtt_scenarios.py"), f"mqtt://{host}:{port}", name, prefix()])


def test_amqtt_websocket(mqtt_server):  # noqa: F811
    py = venv_python("amqtt")
    host, port = mqtt_server.addr("http")
    run([str(py), str(CLIENTS / "amqtt_scenarios.py"), f"ws://{host}:{port}/mqtt", "roundtrip", prefix()])
