"""Offset reset scenarios for the official rocketmq-python-client 5.1.2 (its own venv).

    python py_reset.py <simple|push> <endpoint> <topic> <group> <count>

Produces <count> messages, consumes (and acknowledges) them all, prints {"event": "reset-now"}
and waits for a line on stdin (the test resets the group's offsets meanwhile), then expects the
same running consumer to receive all of them again. JSON lines on stdout; exit 0 when done.
Written for rocketlite's interop tests (issue #7).
"""

from __future__ import annotations

import json
import sys
import threading
import time

from rocketmq import (
    ClientConfiguration,
    ConsumeResult,
    Credentials,
    FilterExpression,
    Message,
    MessageListener,
    Producer,
    PushConsumer,
    SimpleConsumer,
)


def out(**kw):
    print(json.dumps(kw), flush=True)


def config(endpoint):
    return ClientConfiguration(endpoint, Credentials(), request_timeout=3)


def produce(endpoint, topic, count):
    p = Producer(config(endpoint), (topic,))
    p.startup()
    for i in range(count):
        m = Message()
        m.topic = topic
        m.body = f"r-{i}".encode()
        m.tag = "t"
        p.send(m)
    p.shutdown()


def receive(c, want, deadline_s):
    got = []
    end = time.time() + deadline_s
    while len(got) < want and time.time() < end:
        for m in c.receive(32, 15):
            got.append(m.body.decode())
            c.ack(m)
    return got


def simple(endpoint, topic, group, count):
    count = int(count)
    produce(endpoint, topic, count)
    c = SimpleConsumer(config(endpoint), group, {topic: FilterExpression("*")}, await_duration=2)
    c.startup()
    first = receive(c, count, 20)
    out(event="reset-now", first=sorted(first))
    sys.stdin.readline()
    again = receive(c, count, 20)
    out(event="after-reset", again=sorted(again))
    c.shutdown()


class Collect(MessageListener):
    def __init__(self):
        self.lock = threading.Lock()
        self.got = []

    def consume(self, message):
        with self.lock:
            self.got.append(message.body.decode())
        return ConsumeResult.SUCCESS


def wait_for(pred, timeout):
    end = time.time() + timeout
    while time.time() < end and not pred():
        time.sleep(0.05)


def push(endpoint, topic, group, count):
    count = int(count)
    produce(endpoint, topic, count)
    listener = Collect()
    c = PushConsumer(config(endpoint), group, listener, {topic: FilterExpression("*")})
    c.startup()
    wait_for(lambda: len(listener.got) >= count, 20)
    with listener.lock:
        first = list(listener.got)
    out(event="reset-now", first=sorted(first))
    sys.stdin.readline()
    wait_for(lambda: len(listener.got) >= 2 * count, 20)
    time.sleep(0.5)  # nothing more than twice each
    with listener.lock:
        again = listener.got[len(first):]
    out(event="after-reset", again=sorted(again))
    c.shutdown()


if __name__ == "__main__":
    scenario, *args = sys.argv[1:]
    globals()[scenario](*args)
    out(event="done")
