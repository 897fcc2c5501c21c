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


class Collect(MessageListener):
    def __init__(self, fail=False):
        self.lock = threading.Lock()
        self.got = []
        self.fail = fail

    def consume(self, message):
        with self.lock:
            self.got.append((message.message_id, message.body.decode(), message.delivery_attempt, time.time()))
        return ConsumeResult.FAILURE if self.fail else ConsumeResult.SUCCESS


def wait_for(pred, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def push(endpoint, topic, group, count="5"):
    count = int(count)
    p = start_producer(endpoint, topic)
    ids = [p.send(new_message(topic, f"push-{i}")).message_id for i in range(count)]
    listener = Collect()
    c = PushConsumer(config(endpoint), group, listener, {topic: FilterExpression("*")})
    c.startup()
    wait_for(lambda: len({g[0] for g in listener.got}) >= count, 15)
    out(event="received", ids=[g[0] for g in listener.got], bodies=[g[1] for g in listener.got])
    c.shutdown()
    p.shutdown()
    assert set(ids) <= {g[0] for g in listener.got}


def fifo(endpoint, topic, group, per_group="5"):
    per_group = int(per_group)
    groups = ["ga", "gb", "gc"]
    p = start_producer(endpoint, topic)
    for i in range(per_group):
        for g in groups:
            p.send(new_message(topic, f"{g}-{i}", group=g))
    c = SimpleConsumer(config(endpoint), group, {topic: FilterExpression("*")}, await_duration=2)
    c.startup()
    order = {g: [] for g in groups}
    end = time.time() + 15
    held_back = True
    while sum(map(len, order.values())) < per_group * len(groups) and time.time() < end:
        batch = c.receive(32, 15)
        seen = [m.message_group for m in batch]
        # one receive never hands out two messages of one group (the next waits for the ack)
        held_back = held_back and len(seen) == len(set(seen))
        for m in batch:
            order[m.message_group].append(int(m.body.decode().split("-")[1]))
        for m in batch:
            c.ack(m)
    out(event="received", order=order, held_back=held_back)
    c.shutdown()
    p.shutdown()
    assert all(order[g] == list(range(per_group)) for g in groups), order
    assert held_back


def fifo_push(endpoint, topic, group, per_group="5"):
    per_group = int(per_group)
    groups = ["pa", "pb", "pc"]
    p = start_producer(endpoint, topic)
    for i in range(per_group):
        for g in groups:
            p.send(new_message(topic, f"{g}-{i}", group=g))
    listener = Collect()
    c = PushConsumer(config(endpoint), group, listener, {topic: FilterExpression("*")})
    c.startup()
    wait_for(lambda: len(listener.got) >= per_group * len(groups), 15)
    order = {g: [] for g in groups}
    for _, body, _, _ in listener.got:
        g, i = body.split("-")
        order[g].append(int(i))
    out(event="received", order=order)
    c.shutdown()
    p.shutdown()
    assert all(order[g] == list(range(per_group)) for g in groups), order


def sql(endpoint, topic, group):
    from rocketmq.grpc_protocol import FilterType

    p = start_producer(endpoint, topic)
    for i in range(6):
        p.send(new_message(topic, f"s-{i}", tag="even" if i % 2 == 0 else "odd", props={"n": str(i)}))
    c = SimpleConsumer(config(endpoint), group, {topic: FilterExpression("n > 2 AND TAGS = 'odd'", FilterType.SQL)},
                       await_duration=2)
    c.startup()
    got = receive_until(c, 2, 8)
    later = receive_until(c, 1, 2)
    bodies = sorted(m.body.decode() for m in got + later)
    out(event="received", bodies=bodies)
    c.shutdown()
    p.shutdown()
    assert bodies == ["s-3", "s-5"], bodies


def delay(endpoint, topic, group, seconds="3"):
    seconds = float(seconds)
    p = start_producer(endpoint, topic)
    c = SimpleConsumer(config(endpoint), group, {topic: FilterExpression("*")}, await_duration=2)
    c.startup()
    sent_at = time.time()
    due = int(sent_at + seconds)
    m = new_message(topic, "later")
    m.delivery_timestamp = due
    r = p.send(m)
    p.send(new_message(topic, "now"))
    arrivals = []
    end = time.time() + seconds + 10
    while len(arrivals) < 2 and time.time() < end:
        for x in c.receive(32, 15):
            arrivals.append((x.body.decode(), time.time(), x.delivery_timestamp))
            c.ack(x)
    out(event="received", arrivals=arrivals, due=due, sent_at=sent_at, recall_handle=getattr(r, "recall_handle", None))
    c.shutdown()
    p.shutdown()
    assert [a[0] for a in arrivals] == ["now", "later"], arrivals
    assert arrivals[1][1] >= due - 0.05, (arrivals, due)


class Checker(TransactionChecker):
    def __init__(self, answer=TransactionResolution.COMMIT):
        self.answer = answer
        self.checked = []

    def check(self, message):
        self.checked.append(message.message_id)
        out(event="checked", id=message.message_id, body=message.body.decode())
        return self.answer


def tx(endpoint, topic, group):
    checker = Checker(TransactionResolution.ROLLBACK)
    p = start_producer(endpoint, topic, checker=checker)
    c = SimpleConsumer(config(endpoint), group, {topic: FilterExpression("*")}, await_duration=2)
    c.startup()
    t1 = p.begin_transaction()
    r1 = p.send(new_message(topic, "committed"), t1)
    t2 = p.begin_transaction()
    r2 = p.send(new_message(topic, "rolled-back"), t2)
    # nothing visible before the resolution
    early = [m.body.decode() for m in c.receive(32, 15)]
    t1.commit()
    t2.rollback()
    got = receive_until(c, 1, 8)
    later = receive_until(c, 1, 3)
    bodies = early + [m.body.decode() for m in got + later]
    out(event="received", bodies=bodies, ids=[r1.message_id, r2.message_id])
    c.shutdown()
    p.shutdown()
    assert bodies == ["committed"], bodies


def orphan(endpoint, topic, group):
    checker = Checker(TransactionResolution.COMMIT)
    p = start_producer(endpoint, topic, checker=checker)
    c = SimpleConsumer(config(endpoint), group, {topic: FilterExpression("*")}, await_duration=2)
    c.startup()
    t = p.begin_transaction()
    r = p.send(new_message(topic, "orphan"), t)
    # never commit: the server asks this producer over Telemetry, the checker commits
    got = receive_until(c, 1, 25)
    out(event="received", bodies=[m.body.decode() for m in got], checked=checker.checked, id=r.message_id)
    c.shutdown()
    p.shutdown()
    assert [m.body.decode() for m in got] == ["orphan"] and r.message_id in checker.checked


def dlq(endpoint, topic, group):
    p = start_producer(endpoint, topic)
    r = p.send(new_message(topic, "poison"))
    listener = Collect(fail=True)
    c = PushConsumer(config(endpoint), group, listener, {topic: FilterExpression("*")})
    c.startup()
    dlq_topic = "%DLQ%" + group
    reader = SimpleConsumer(config(endpoint), group + "-dlq-reader", {dlq_topic: FilterExpression("*")},
                            await_duration=2)
    reader.startup()
    dead = receive_until(reader, 1, 25)
    out(event="received", attempts=[g[2] for g in listener.got], dead=[m.message_id for m in dead], id=r.message_id)
    c.shutdown()
    reader.shutdown()
    p.shutdown()
    assert [m.message_id for m in dead] == [r.message_id]
    assert len(listener.got) >= 2


def restart(endpoint, topic, group):
    """Receive 4, ack 2, wait for the test to restart rocketlite, then ack the other 2 with the old handles."""
    p = start_producer(endpoint, topic)
    for i in range(4):
        p.send(new_message(topic, f"r-{i}"))
    p.shutdown()
    c = SimpleConsumer(config(endpoint), group, {topic: FilterExpression("*")}, await_duration=2)
    c.startup()
    got = receive_until(c, 4, 10, invisible=30, ack=False)
    got.sort(key=lambda m: m.body)
    c.ack(got[0])
    c.ack(got[1])
    out(event="restart-now", bodies=[m.body.decode() for m in got])
    sys.stdin.readline()
    acked = []
    end = time.time() + 15
    for m in got[2:]:
        while True:
            try:
                c.ack(m)
                acked.append(m.body.decode())
                break
            except Exception as exc:  # the channel may still be reconnecting
                if time.time() > end:
                    raise
                out(event="retry-ack", error=str(exc)[:200])
                time.sleep(0.3)
    again = [m.body.decode() for m in c.receive(32, 2)]
    out(event="after-restart", acked=acked, again=again)
    c.shutdown()
    assert acked == ["r-2", "r-3"] and again == []


def produce(endpoint, topic, count="5", prefix="g"):
    p = start_producer(endpoint, topic)
    sent = []
    for i in range(int(count)):
        r = p.send(new_message(topic, f"{prefix}-{i}", tag="TagA", keys=f"key-{i}", props={"origin": "grpc"}))
        sent.append({"id": r.message_id, "body": f"{prefix}-{i}"})
    out(event="produced", sent=sent)
    p.shutdown()


def consume(endpoint, topic, group, count="5"):
    c = SimpleConsumer(config(endpoint), group, {topic: FilterExpression("*")}, await_duration=2)
    c.startup()
    got = receive_until(c, int(count), 15)
    out(event="consumed", got=[{"id": m.message_id, "body": m.body.decode(), "tag": m.tag, "keys": sorted(m.keys or []),
                                "props": m.properties} for m in got])
    c.shutdown()


def main():
    scenario, *args = sys.argv[1:]
    globals()[scenario](*args)
    out(event="done")


if __name__ == "__main__":
    main()
