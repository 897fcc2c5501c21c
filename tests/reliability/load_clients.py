"""Load generators for the crash harness, each run as its own process.

    python load_clients.py remoting HOST:PORT TOPIC TAG N            # N pipelined-free producers (own client)
    python load_clients.py offsets HOST:PORT GROUP TOPIC START       # commits START, START+1, ... to queue 0
    python load_clients.py mqtt HOST:PORT QOS TAG N                  # N paho publishers at QOS (1 or 2)

Every acknowledged message is printed as ``A <body>`` (flushed) *after* its acknowledgement came
back; every acknowledged offset commit as ``O <offset>``. A producer never retries: on the first
error (the broker was killed) it stops, so a body that was printed was acknowledged exactly once.
The harness kills these processes at the end of a round; whatever was printed counts.
"""

from __future__ import annotations

import sys
import threading


def out(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def remoting(endpoint: str, topic: str, tag: str, n: str) -> None:
    import trio

    from rocketlite.protocols.remoting.client import RemotingClient

    host, _, port = endpoint.rpartition(":")

    async def producer(i: int) -> None:
        try:
            async with RemotingClient.connect(host, int(port)) as c:
                seq = 0
                while True:
                    body = f"{tag}-{i}-{seq}"
                    r = await c.send_message(topic, body.encode(), group="crash-pg", timeout=10)
                    if r.code != 0:
                        out(f"E {r.code} {r.remark}")
                        return
                    out(f"A {body}")
                    seq += 1
        except (OSError, ConnectionError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            return

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for i in range(int(n)):
                nursery.start_soon(producer, i)

    trio.run(main)


def offsets(endpoint: str, group: str, topic: str, start: str) -> None:
    import trio

    from rocketlite.protocols.remoting.client import RemotingClient

    host, _, port = endpoint.rpartition(":")

    async def main() -> None:
        try:
            async with RemotingClient.connect(host, int(port)) as c:
                off = int(start)
                while True:
                    r = await c.request(15, consumerGroup=group, topic=topic, queueId=0, commitOffset=off, timeout=10)
                    if r.code != 0:
                        return
                    out(f"O {off}")
                    off += 1
        except (OSError, ConnectionError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            return

    trio.run(main)


def mqtt(endpoint: str, qos: str, tag: str, n: str) -> None:
    import paho.mqtt.client as paho

    host, _, port = endpoint.rpartition(":")

    def publisher(i: int) -> None:
        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"{tag}-{i}", clean_session=True,
                        protocol=paho.MQTTv311)
        gone = threading.Event()
        c.on_disconnect = lambda *a: gone.set()
        try:
            c.connect(host, int(port), keepalive=30)
        except OSError:
            return
        c.loop_start()
        try:
            seq = 0
            while not gone.is_set():
                body = f"{tag}-{i}-{seq}"
                info = c.publish(f"crash/{tag}/{i}", body.encode(), qos=int(qos))
                info.wait_for_publish(10)
                if not info.is_published() or gone.is_set():
                    return
                out(f"A {body}")
                seq += 1
        except (RuntimeError, ValueError, OSError):
            return
        finally:
            c.loop_stop()

    threads = [threading.Thread(target=publisher, args=(i,), daemon=True) for i in range(int(n))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    {"remoting": remoting, "offsets": offsets, "mqtt": mqtt}[sys.argv[1]](*sys.argv[2:])
