"""Drives the librocketmq-based Python clients against rocketlite: PyPI ``rocketmq`` 0.4.4 and
``rocketmq-client-python`` 2.0.0 (+ librocketmq 2.1.0). Both provide the ``rocketmq`` module with
slightly different APIs, so this script adapts. One scenario per run, JSON lines on stdout.

usage: python cpp_client.py '<json config>'   {scenario, nameSrv, topic, group, n, ...}

librocketmq may crash during shutdown(), so the script ends with os._exit after reporting.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from rocketmq import client as rmq

cfg = json.loads(sys.argv[1])
V2 = hasattr(rmq, "TransactionMQProducer")  # rocketmq-client-python 2.x


def out(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def finish(code: int = 0) -> None:
    sys.stdout.flush()
    os._exit(code)


def watchdog() -> None:
    time.sleep(cfg.get("timeoutS", 18))
    out({"event": "timeout", "what": cfg["scenario"]})
    finish(3)


threading.Thread(target=watchdog, daemon=True).start()


def text(v: object) -> object:
    return v.decode() if isinstance(v, bytes) else v


def set_ns(obj: object) -> None:
    if hasattr(obj, "set_name_server_address"):
        obj.set_name_server_address(cfg["nameSrv"])
    else:
        obj.set_namesrv_addr(cfg["nameSrv"])


def message(i: int, **kw: object) -> "rmq.Message":
    m = rmq.Message(cfg["topic"])
    m.set_keys(f"key-{i}")
    m.set_tags(cfg.get("tag", "TagA"))
    m.set_body(kw.get("body") or f"{cfg.get('prefix', 'm')}-{i}")
    m.set_property("myprop", "v")
    if kw.get("delay"):
        m.set_delay_time_level(int(kw["delay"]))  # type: ignore[arg-type]
    return m


def producer(orderly: bool = False) -> "rmq.Producer":
    p = rmq.Producer(cfg["group"] + "_P", orderly=True) if (V2 and orderly) else rmq.Producer(cfg["group"] + "_P")
    set_ns(p)
    p.start()
    return p


def send_sync_first_route(p: "rmq.Producer", m: "rmq.Message", first: bool) -> "rmq.SendResult":
    """send_sync; the first send of a fresh client may fail its route fetch when librocketmq's 3 s
    NameServer timeout runs out on a heavily loaded CI box: retry that one a few times, as an
    application would, and say so in the event stream."""
    for attempt in range(3):
        try:
            return p.send_sync(m)
        except Exception as exc:  # librocketmq raises its own exception classes
            if not first or "No route info" not in str(exc) or attempt == 2:
                raise
            out({"event": "route-retry", "error": str(exc)})
            time.sleep(1.0)
    raise AssertionError("unreachable")


def produce(n: int, orderly_keys: int = 0, delay: int = 0) -> None:
    p = producer(orderly=bool(orderly_keys))
    sent = []
    for i in range(n):
        key = f"k{i % orderly_keys}" if orderly_keys else ""
        body = f"{key}:{i}" if orderly_keys else None
        m = message(i, body=body, delay=delay)
        t_before = int(time.time() * 1000)  # a delay counts from the send, not from its answer
        if orderly_keys:
            if V2:
                r = p.send_orderly_with_sharding_key(m, key)
            else:
                r = p.send_orderly(m, sum(key.encode()))
        else:
            r = send_sync_first_route(p, m, first=(i == 0))
        sent.append({"body": body or f"{cfg.get('prefix', 'm')}-{i}", "status": int(r.status), "msgId": r.msg_id,
                     "t": t_before})
    out({"event": "produced", "sent": sent})


def consume(n: int, *, orderly: bool = False, fail_first: bool = False) -> None:
    got: list[dict] = []
    attempts: dict[str, int] = {}
    done = threading.Event()
    lock = threading.Lock()

    def on_message(msg: object) -> object:
        body = msg.body.decode()  # type: ignore[attr-defined]
        with lock:
            attempts[body] = attempts.get(body, 0) + 1
            if fail_first and attempts[body] == 1:
                out({"event": "fail", "body": body})
                return rmq.ConsumeStatus.RECONSUME_LATER
            got.append({"body": body, "queue": msg.queue_id, "offset": msg.queue_offset,  # type: ignore[attr-defined]
                        "reconsumeTimes": msg.reconsume_times, "t": int(time.time() * 1000),  # type: ignore[attr-defined]
                        "prop": text(msg.get_property("myprop")), "topic": text(msg.topic)})  # type: ignore[attr-defined]
            if len(got) >= n:
                done.set()
        return rmq.ConsumeStatus.CONSUME_SUCCESS if V2 else None

    c = rmq.PushConsumer(cfg["group"], orderly=orderly)
    set_ns(c)
    c.set_thread_count(1)
    c.subscribe(cfg["topic"], on_message, cfg.get("tag", "*"))
    c.start()
    if cfg.get("produceAfterStart"):
        produce(cfg["produceAfterStart"], delay=cfg.get("delayLevel", 0))
    done.wait()
    with lock:
        out({"event": "consumed", "got": list(got)})
    time.sleep(cfg.get("settleS", 0))  # let the offset persist task run (restart scenario)


def stream() -> None:
    """Print every message as it arrives until the test ends the process (rebalance scenario)."""
    lock = threading.Lock()

    def on_message(msg: object) -> object:
        with lock:
            out({"event": "msg", "body": text(msg.body), "queue": msg.queue_id})  # type: ignore[attr-defined]
        return rmq.ConsumeStatus.CONSUME_SUCCESS if V2 else None

    c = rmq.PushConsumer(cfg["group"])
    set_ns(c)
    c.set_thread_count(1)
    c.subscribe(cfg["topic"], on_message, "*")
    c.start()
    out({"event": "started"})
    threading.Event().wait()


def transactions() -> None:
    """Send three transactional messages: commit, rollback, unknown (resolved by check-back)."""
    checked = threading.Event()

    def check(msg: object) -> object:
        out({"event": "check", "body": text(msg.body)})  # type: ignore[attr-defined]
        checked.set()
        return rmq.TransactionStatus.COMMIT

    def local(msg: object, user_args: object) -> object:
        body = msg.body.decode()  # type: ignore[attr-defined]
        if body.startswith("commit"):
            return rmq.TransactionStatus.COMMIT
        if body.startswith("rollback"):
            return rmq.TransactionStatus.ROLLBACK
        return rmq.TransactionStatus.UNKNOWN

    p = rmq.TransactionMQProducer(cfg["group"] + "_TP", check)
    set_ns(p)
    p.start()
    results = []
    for i, body in enumerate(("commit-1", "rollback-1", "unknown-1")):
        m = message(i, body=body)
        r = p.send_message_in_transaction(m, local)
        results.append({"body": body, "status": int(r.status), "msgId": r.msg_id})
    out({"event": "sent", "results": results})
    checked.wait()
    out({"event": "checked"})
    time.sleep(0.5)  # give END_TRANSACTION (from the check) time to reach the broker


if __name__ == "__main__":
    try:
        sc = cfg["scenario"]
        if sc == "produce":
            produce(cfg["n"], delay=cfg.get("delayLevel", 0))
        elif sc == "produce_orderly":
            produce(cfg["n"], orderly_keys=cfg.get("keys", 3))
        elif sc == "consume":
            consume(cfg["n"])
        elif sc == "consume_orderly":
            consume(cfg["n"], orderly=True)
        elif sc == "retry":
            consume(cfg["n"], fail_first=True)
        elif sc == "stream":
            stream()
        elif sc == "transaction":
            transactions()
        else:
            raise SystemExit(f"unknown scenario {sc}")
        out({"event": "done"})
        finish(0)
    except BaseException as exc:  # report, then leave without librocketmq's shutdown
        out({"event": "error", "message": repr(exc)})
        finish(2)
