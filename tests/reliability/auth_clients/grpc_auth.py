"""Send one message and receive it with the official rocketmq-python-client 5.x using an
AccessKey/SecretKey; prints one JSON line {"ok": bool, "error": str}. Written for rocketlite.

usage: python grpc_auth.py ENDPOINT TOPIC GROUP ACCESS_KEY SECRET_KEY
"""

from __future__ import annotations

import json
import os
import sys

from rocketmq import ClientConfiguration, Credentials, FilterExpression, Message, Producer, SimpleConsumer

endpoint, topic, group, ak, sk = sys.argv[1:6]


def out(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
    os._exit(0)


def config() -> ClientConfiguration:
    return ClientConfiguration(endpoint, Credentials(ak, sk), request_timeout=3)


try:
    p = Producer(config(), (topic,))
    p.startup()
    m = Message()
    m.topic = topic
    m.body = b"auth-check"
    m.tag = "auth"
    r = p.send(m)
    c = SimpleConsumer(config(), group, {topic: FilterExpression("*")}, await_duration=2)
    c.startup()
    got = []
    for _ in range(5):
        for msg in c.receive(16, 15):
            got.append(msg.body)
            c.ack(msg)
        if got:
            break
    out({"ok": b"auth-check" in got, "error": "" if got else "nothing received", "id": r.message_id})
except Exception as exc:  # noqa: BLE001 - reported, the test checks it
    out({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
