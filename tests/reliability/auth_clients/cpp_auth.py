"""Send one message with the librocketmq-based Python client (rocketmq 0.4.4 / 2.0.0) using an
AccessKey/SecretKey; prints one JSON line {"ok": bool, "error": str}. Written for rocketlite.

usage: python cpp_auth.py NAMESRV TOPIC ACCESS_KEY SECRET_KEY
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from rocketmq import client as rmq

ns, topic, ak, sk = sys.argv[1:5]


def out(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
    os._exit(0)  # librocketmq may crash in shutdown()


def watchdog() -> None:
    time.sleep(25)
    out({"ok": False, "error": "timeout"})


threading.Thread(target=watchdog, daemon=True).start()
p = rmq.Producer(f"PID_auth_{os.getpid()}", timeout=4000)
if hasattr(p, "set_name_server_address"):
    p.set_name_server_address(ns)
else:
    p.set_namesrv_addr(ns)
p.set_session_credentials(ak, sk, "ALIYUN")
try:
    p.start()
    m = rmq.Message(topic)
    m.set_body("auth-check")
    m.set_tags("auth")
    r = p.send_sync(m)
    status = getattr(r, "status", None)
    out({"ok": int(getattr(status, "value", status) or 0) == 0, "error": "", "status": str(status)})
except Exception as exc:  # noqa: BLE001 - reported, the test checks it
    out({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
