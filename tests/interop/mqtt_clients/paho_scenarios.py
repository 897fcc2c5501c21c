"""MQTT scenarios driven by the real paho-mqtt client (run in its own process by the interop tests).

    python paho_scenarios.py HOST PORT VERSION SCENARIO PREFIX

VERSION is 4 (3.1.1) or 5; PREFIX keeps topics and client ids of parallel tests apart. Prints
``OK`` on success; any failure raises (non-zero exit, traceback on stderr).
"""

from __future__ import annotations

import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

HOST, PORT, VERSION, SCENARIO, PREFIX = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
PROTO = mqtt.MQTTv5 if VERSION == 5 else mqtt.MQTTv311
TIMEOUT = 8


class Box:
    def __init__(self) -> None:
        self.msgs: list[mqtt.MQTTMessage] = []
        self.cond = threading.Condition()
        self.connack: tuple[bool, int] | None = None

    def wait(self, n: int, timeout: float = TIMEOUT) -> list[mqtt.MQTTMessage]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.msgs) >= n, timeout)
            return list(self.msgs)


def client(cid: str, *, clean: bool = True, will: tuple[str, bytes, int] | None = None, expiry: int | None = None) -> tuple[mqtt.Client, Box]:
    box = Box()
    kw = {"clean_session": clean} if VERSION != 5 else {}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{PREFIX}-{cid}", protocol=PROTO, **kw)

    def on_message(_c, _u, m):
        with box.cond:
            box.msgs.append(m)
            box.cond.notify_all()

    ready = threading.Event()

    def on_connect(_c, _u, flags, rc, _p=None):
        box.connack = (bool(flags.session_present), int(rc.value) if hasattr(rc, "value") else int(rc))
        ready.set()

    c.on_message = on_message
    c.on_connect = on_connect
    if will:
        c.will_set(will[0], will[1], will[2])
    if VERSION == 5:
        props = Properties(PacketTypes.CONNECT)
        if expiry is not None:
            props.SessionExpiryInterval = expiry
        c.connect(HOST, PORT, keepalive=30, clean_start=clean, properties=props)
    else:
        c.connect(HOST, PORT, keepalive=30)
    c.loop_start()
    assert ready.wait(TIMEOUT), "no CONNACK"
    assert box.connack and box.connack[1] == 0, box.connack
    return c, box


def subscribe(c: mqtt.Client, flt: str, qos: int) -> None:
    done = threading.Event()
    c.on_subscribe = lambda *a: done.set()
    c.subscribe(flt, qos)
    assert done.wait(TIMEOUT), "no SUBACK"


def publish(c: mqtt.Client, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
    info = c.publish(topic, payload, qos, retain)
    info.wait_for_publish(TIMEOUT)
    assert info.is_published()


def stop(c: mqtt.Client) -> None:
    c.disconnect()
    c.loop_stop()


def t(name: str) -> str:
    return f"{PREFIX}/{name}"


def roundtrip() -> None:
    sub, box = client("sub")
    subscribe(sub, t("#"), 2)
    pub, _ = client("pub")
    for qos in (0, 1, 2):
        publish(pub, t(f"q{qos}/x"), b"payload-%d" % qos, qos)
    got = box.wait(3)
    assert sorted((m.topic, m.payload, m.qos) for m in got) == [
        (t(f"q{q}/x"), b"payload-%d" % q, q) for q in (0, 1, 2)], got
    # 200 QoS 1 messages arrive once and in order
    for i in range(200):
        pub.publish(t("burst"), b"%d" % i, 1)
    got = box.wait(203)
    burst = [m.payload for m in got if m.topic == t("burst")]
    assert burst == [b"%d" % i for i in range(200)], burst[:5]
    stop(pub)
    stop(sub)


def retained() -> None:
    pub, _ = client("pub")
    publish(pub, t("r/b"), b"keep-b", 0, retain=True)
    publish(pub, t("r/a"), b"keep-a", 1, retain=True)  # its PUBACK also orders the QoS 0 one before
    sub, box = client("sub1")
    subscribe(sub, t("r/+"), 1)
    got = box.wait(2)
    assert sorted((m.topic, m.payload, m.retain) for m in got) == [(t("r/a"), b"keep-a", True), (t("r/b"), b"keep-b", True)], got
    publish(pub, t("r/a"), b"", 1, retain=True)  # clear
    sub2, box2 = client("sub2")
    subscribe(sub2, t("r/#"), 1)
    got = box2.wait(1)
    time.sleep(0.3)  # nothing more may come: a clear is not retained
    assert [(m.topic, m.payload) for m in box2.msgs] == [(t("r/b"), b"keep-b")], box2.msgs
    for c in (pub, sub, sub2):
        stop(c)


def will_holder() -> None:
    """Connect with a will and wait to be killed (the test kills this process)."""
    c, _ = client("dying", will=(t("will"), b"died", 1))
    print("CONNECTED", flush=True)
    time.sleep(60)


def will_watch() -> None:
    sub, box = client("watch")
    subscribe(sub, t("will"), 1)
    print("SUBSCRIBED", flush=True)
    got = box.wait(1, timeout=15)
    assert [(m.topic, m.payload) for m in got] == [(t("will"), b"died")], got
    stop(sub)


def persist_subscribe() -> None:
    c, box = client("durable", clean=False, expiry=3600)
    subscribe(c, t("p/#"), 2)
    stop(c)


def persist_publish() -> None:
    pub, _ = client("pub-offline")
    for i in range(3):
        publish(pub, t(f"p/{i}"), b"offline-%d" % i, 1 + i % 2)
    stop(pub)


def persist_receive() -> None:
    c, box = client("durable", clean=False, expiry=3600)
    assert box.connack and box.connack[0], "session not present"
    got = box.wait(3)
    assert sorted(m.payload for m in got) == [b"offline-0", b"offline-1", b"offline-2"], [m.payload for m in got]
    stop(c)


def persist() -> None:
    persist_subscribe()
    persist_publish()
    persist_receive()


def wildcards() -> None:
    sub, box = client("wsub")
    subscribe(sub, t("w/+/x"), 1)
    subscribe(sub, t("w/a/#"), 1)
    pub, _ = client("wpub")
    for topic in ("w/a/x", "w/b/x", "w/b/y", "w/a", "w/a/b/c", "w/c/x/d"):
        publish(pub, t(topic), topic.encode(), 1)
    publish(pub, t("end"), b"", 1)
    got = box.wait(4)
    time.sleep(0.3)
    assert sorted(m.payload for m in box.msgs) == [b"w/a", b"w/a/b/c", b"w/a/x", b"w/b/x"], box.msgs
    stop(pub)
    stop(sub)


def shared() -> None:
    a, box_a = client("sa")
    b, box_b = client("sb")
    subscribe(a, f"$share/g/{t('s/#')}", 1)
    subscribe(b, f"$share/g/{t('s/#')}", 1)
    pub, _ = client("spub")
    for i in range(10):
        publish(pub, t("s/x"), b"%d" % i, 1)
    deadline = time.time() + TIMEOUT
    while len(box_a.msgs) + len(box_b.msgs) < 10 and time.time() < deadline:
        time.sleep(0.05)
    got = sorted(int(m.payload) for m in box_a.msgs + box_b.msgs)
    assert got == list(range(10)), got
    assert box_a.msgs and box_b.msgs, "not shared"
    for c in (a, b, pub):
        stop(c)


def cross_sub() -> None:
    """Subscribe to the RocketMQ topic PREFIX (and below), print what arrives as JSON."""
    import json

    sub, box = client("cross")
    subscribe(sub, f"{PREFIX}/#", 1)
    print("SUBSCRIBED", flush=True)
    got = box.wait(4, timeout=30)
    props = []
    for m in got:
        up = getattr(m.properties, "UserProperty", None) if VERSION == 5 else None
        props.append(dict(up or []))
    print(json.dumps([{"topic": m.topic, "payload": m.payload.decode(), "qos": m.qos, "props": p}
                      for m, p in zip(got, props)]), flush=True)
    stop(sub)


def cross_pub() -> None:
    pub, _ = client("crosspub")
    for i in range(4):
        if VERSION == 5:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("origin", "mqtt")]
            info = pub.publish(f"{PREFIX}/x/y", b"mqtt-%d" % i, 1, properties=props)
        else:
            info = pub.publish(f"{PREFIX}/x/y", b"mqtt-%d" % i, 1)
        info.wait_for_publish(TIMEOUT)
    stop(pub)


globals()[SCENARIO]()
print("OK", flush=True)
