"""A real RocketMQ client for the console test: librocketmq via PyPI ``rocketmq`` 0.4.4.

Runs inside .interop/venv-rocketmq044 (installed by .ci/install-remoting.sh).
usage: python rmq_client.py produce|consume '<json config>'   {nameSrv, topic, group, n}
Prints JSON lines; leaves with os._exit (librocketmq may crash in its shutdown).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from rocketmq import client as rmq

mode, cfg = sys.argv[1], json.loads(sys.argv[2])


def out(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def watchdog() -> None:
    time.sleep(cfg.get("timeoutS", 30))
    out({"event": "timeout"})
    os._exit(3)


threading.Thread(target=watchdog, daemon=True).start()


def ns(obj: object) -> None:
    if hasattr(obj, "set_name_server_address"):
        obj.set_name_server_address(cfg["nameSrv"])
    else:
        obj.set_namesrv_addr(cfg["nameSrv"])


def produce() -> None:
    p = rmq.Producer(cfg["group"])
    ns(p)
    p.start()
    ids = []
    for i in range(cfg["n"]):
        m = rmq.Message(cfg["topic"])
        m.set_keys(f"order-{i}")
        m.set_tags("created")
        m.set_body(json.dumps({"order": i, "amount": round(9.5 + i, 2), "currency": "EUR"}))
        m.set_property("channel", "web")
        for attempt in range(3):  # a loaded CI machine can miss librocketmq's 3 s send timeout
            try:
                r = p.send_sync(m)
                break
            except Exception:
                if attempt == 2:
                    raise
                time.sleep(0.5)
        ids.append(r.msg_id)
    out({"event": "produced", "ids": ids})


def consume() -> None:
    got = []
    done = threading.Event()
    lock = threading.Lock()

    def on_message(msg: object) -> None:
        with lock:
            got.append(msg.body.decode())  # type: ignore[attr-defined]
            if len(got) >= cfg["n"]:
                done.set()
        time.sleep(cfg.get("delayS", 0))  # a slow consumer, so the lag visibly drops

    c = rmq.PushConsumer(cfg["group"])
    ns(c)
    c.set_thread_count(1)
    c.subscribe(cfg["topic"], on_message, "*")
    c.start()
    out({"event": "started"})
    done.wait()
    out({"event": "consumed", "n": len(got)})
    time.sleep(cfg.get("holdS", 60))  # keep pulling (and committing offsets) until killed


try:
    produce() if mode == "produce" else consume()
    out({"event": "done"})
    os._exit(0)
except BaseException as exc:
    out({"event": "error", "message": repr(exc)})
    os._exit(2)
