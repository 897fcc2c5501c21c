"""Scenarios for the official rocketmq-python-client 5.1.2, run in its own venv.

    python py_client.py <scenario> <endpoint> <topic> <group> [extra...]

Prints one JSON object per line ({"event": ...}); exits 0 when the scenario's own checks pass.
Written for rocketlite's interop tests.
"""

from __future__ import annotations

import json
import sys
import threading
import time

from rocketmq import (ClientConfiguration, ConsumeResult, Credentials, FilterExpression, Message, MessageListener,
                      Producer, PushConsumer, SimpleConsumer, TransactionChecker, TransactionResolution)


def out(**kw):
    print(json.dumps(kw), flush=True)


def config(endpoint):
    return ClientConfiguration(endpoint, Credentials(), request_timeout=3)


def new_message(topic, body, tag="t", keys=None, group=None, delay_s=None, props=None):
    m = Message()
    m.topic = topic
    m.body = body.encode() if isinstance(body, str) else body
    m.tag = tag
    if keys:
        m.keys = keys
    if group:
        m.message_group = group
    if delay_s is not None:
        # 5.1.2 copies delivery_timestamp into Timestamp.seconds: pass epoch seconds
        m.delivery_timestamp = int(time.time() + delay_s)
    for k, v in (props or {}).items():
        m.add_property(k, v)
    return m


def start_producer(endpoint, topic, checker=None, tls=False):
    p = Producer(config(endpoint), (topic,), checker=checker, tls_enable=tls)
    p.startup()
    return p


def receive_until(consumer, n, deadline_s, invisible=15, ack=True):
    got = []
    end = time.time() + deadline_s
    while len(got) < n and time.time() < end:
        for m in consumer.receive(32, invisible):
            got.append(m)
            if ack:
                consumer.ack(m)
    return got


def simple(endpoint, topic, group, count="5", tls="0"):
    count = int(count)
    tls = tls == "1"
    p = start_producer(endpoint, topic, tls=tls)
    ids = []
    for i in range(count):
        r = p.send(new_message(topic, f"hello-{i}", keys="k%d" % i, props={"n": str(i)}))
        ids.append(r.message_id)
    out(event="sent", ids=ids)
    c = SimpleConsumer(config(endpoint), group, {topic: FilterExpression("*")}, await_duration=2, tls_enable=tls)
    c.startup()
    got = receive_until(c, count, 15)
    out(event="received", ids=[m.message_id for m in got], bodies=[m.body.decode() for m in got],
        props=[m.properties for m in got], attempts=[m.delivery_attempt for m in got])
    p.shutdown()
    c.shutdown()
    assert sorted(ids) == sorted(m.message_id for m in got), (ids, got)


def main():
    scenario, *args = sys.argv[1:]
    globals()[scenario](*args)
    out(event="done")


if __name__ == "__main__":
    main()
