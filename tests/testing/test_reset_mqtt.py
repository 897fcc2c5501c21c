"""reset() reaches the MQTT front-end's state (through its reset hook): retained messages go."""

from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest

from rocketlite.testing import RocketliteServer

mqtt = pytest.importorskip("paho.mqtt.client")
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402


@pytest.fixture(scope="module")
def rl() -> Iterator[RocketliteServer]:
    with RocketliteServer(protocols=("mqtt",)) as srv:
        yield srv


def connect(rl: RocketliteServer, cid: str) -> Any:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid)
    c.connect(rl.mqtt_host, rl.mqtt_port)
    c.loop_start()
    return c


def retained_seen_by_new_subscriber(rl: RocketliteServer, cid: str) -> list[tuple[str, bytes]]:
    c = connect(rl, cid)
    got: list[tuple[str, bytes]] = []
    subscribed, fenced = threading.Event(), threading.Event()
    c.on_message = lambda cl, u, m: got.append((m.topic, m.payload)) if m.retain else None
    c.on_subscribe = lambda *a: subscribed.set()
    c.message_callback_add("status/fence", lambda *a: fenced.set())
    c.subscribe("status/#", qos=1)
    assert subscribed.wait(5)
    c.publish("status/fence", b"", qos=1)  # arrives after any retained message for the subscription
    assert fenced.wait(5)
    c.disconnect()
    c.loop_stop()
    return got


def test_reset_forgets_retained_messages(rl: RocketliteServer) -> None:
    p = connect(rl, "publisher")
    p.publish("status/a", b"up", qos=1, retain=True).wait_for_publish(5)
    p.disconnect()
    p.loop_stop()
    assert retained_seen_by_new_subscriber(rl, "s1") == [("status/a", b"up")]
    rl.reset()
    assert retained_seen_by_new_subscriber(rl, "s2") == []
    assert [m.body for m in rl.peek("status")] == [b""]  # only the second fence, sent after the reset
