"""gRPC load for the crash harness with the official rocketmq-python-client (run in its venv).

    python grpc_producer.py ENDPOINT TOPIC TAG N

N threads share one Producer and send bodies ``TAG-<thread>-<seq>``; each acknowledged send is
printed as ``A <body> <message id>``. A thread stops at its first error. Written for rocketlite.
"""

from __future__ import annotations

import sys
import threading

from rocketmq import ClientConfiguration, Credentials, Message, Producer

lock = threading.Lock()


def out(line: str) -> None:
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main(endpoint: str, topic: str, tag: str, n: str) -> None:
    p = Producer(ClientConfiguration(endpoint, Credentials(), request_timeout=5), (topic,))
    p.startup()

    def run(i: int) -> None:
        seq = 0
        while True:
            body = f"{tag}-{i}-{seq}"
            m = Message()
            m.topic = topic
            m.body = body.encode()
            m.tag = "crash"
            try:
                r = p.send(m)
            except Exception:  # noqa: BLE001 - any failure ends this producer
                return
            out(f"A {body} {r.message_id}")
            seq += 1

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(int(n))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main(*sys.argv[1:])
