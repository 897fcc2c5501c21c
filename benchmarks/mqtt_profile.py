"""Profile the MQTT hot path in one process: publisher -> broker.send -> fan-out -> subscriber.

    python benchmarks/mqtt_profile.py [--qos 0] [--messages 20000] [--lmdb] [--profile]

Clients are sans-IO (our codec) over Trio memory streams, so no sockets or other processes are
involved; it prints messages per wall second and per CPU second (the latter is what matters on a
loaded machine), and with --profile the top functions by own time (cProfile). A second figure,
``broker.send`` alone with the same messages, separates the core + storage cost from MQTT's.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rocketlite.core.broker import Broker  # noqa: E402
from rocketlite.protocols.mqtt import codec as C  # noqa: E402
from rocketlite.protocols.mqtt.manager import MqttManager, MqttSettings  # noqa: E402
from rocketlite.protocols.mqtt.mapping import message_from_publish  # noqa: E402
from rocketlite.protocols.mqtt.server import MqttConnection  # noqa: E402
from rocketlite.runtime import TrioRuntime  # noqa: E402
from rocketlite.storage.memory import MemoryStore  # noqa: E402


async def open_store(lmdb: bool):  # type: ignore[no-untyped-def]
    if lmdb:
        from rocketlite.storage.lmdb_store import LmdbStore

        st = LmdbStore(tempfile.mkdtemp(prefix="rl-mqtt-prof-"), flush="async")
    else:
        st = MemoryStore()
    await st.open()
    return st


async def mqtt_path(qos: int, n: int, lmdb: bool) -> None:
    async with trio.open_nursery() as nursery:
        broker = Broker(await open_store(lmdb), TrioRuntime(nursery))
        await broker.start()
        manager = MqttManager(broker, MqttSettings())

        def client() -> trio.testing.MemoryStream:
            a, b = trio.testing.memory_stream_pair()
            conn = MqttConnection(manager, "mem", b.send_all)
            nursery.start_soon(conn.run, b.receive_some)
            return a

        sub, pub = client(), client()
        sdec, pdec = C.Decoder(version=4, server=False), C.Decoder(version=4, server=False)
        await sub.send_all(C.encode(C.Connect("sub"), 4) + C.encode(C.Subscribe(1, [C.Subscription("t/1", qos)]), 4))
        await pub.send_all(C.encode(C.Connect("pub"), 4))
        got = 0
        while got < 2:
            got += len(sdec.feed(await sub.receive_some()))
        while not pdec.feed(await pub.receive_some()):
            pass
        msgs = [C.encode_publish(C.Publish("t/1", b"x" * 100, qos, False, False, i % 65535 + 1), 4) for i in range(n)]
        send_lock = trio.Lock()

        async def publish() -> None:
            for i in range(0, n, 50):
                async with send_lock:
                    await pub.send_all(b"".join(msgs[i:i + 50]))

        async def pub_acks() -> None:
            while True:
                for p in pdec.feed(await pub.receive_some()):
                    if p.type == C.PUBREC:
                        async with send_lock:
                            await pub.send_all(C.encode(C.Ack(C.PUBREL, p.packet_id), 4))

        t0, c0 = time.perf_counter(), time.process_time()
        nursery.start_soon(publish)
        if qos:
            nursery.start_soon(pub_acks)
        got = 0
        while got < n:
            acks = bytearray()
            for p in sdec.feed(await sub.receive_some()):
                if p.type == C.PUBLISH:
                    got += 1
                    if p.qos == 1:
                        acks += C.encode(C.Ack(C.PUBACK, p.packet_id), 4)
                    elif p.qos == 2:
                        acks += C.encode(C.Ack(C.PUBREC, p.packet_id), 4)
                elif p.type == C.PUBREL:
                    acks += C.encode(C.Ack(C.PUBCOMP, p.packet_id), 4)
            if acks:
                await sub.send_all(bytes(acks))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(f"MQTT QoS {qos}, {'LMDB' if lmdb else 'memory'}: {n / wall:,.0f} msg/s wall, {n / cpu:,.0f} msg per CPU second "
              f"({cpu / n * 1e6:.1f} us/msg, clients' codec included)")
        nursery.cancel_scope.cancel()


async def core_only(n: int, lmdb: bool) -> None:
    async with trio.open_nursery() as nursery:
        broker = Broker(await open_store(lmdb), TrioRuntime(nursery))
        await broker.start()
        c0 = time.process_time()
        for _ in range(0, n, 50):
            await broker.send([message_from_publish("t/1", b"x" * 100, 0, False, {}, "c") for _ in range(50)])
        cpu = time.process_time() - c0
        print(f"broker.send alone ({'LMDB' if lmdb else 'memory'}, batches of 50): {n / cpu:,.0f} msg per CPU second "
              f"({cpu / n * 1e6:.1f} us/msg)")
        nursery.cancel_scope.cancel()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qos", type=int, default=0)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--lmdb", action="store_true")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    if a.profile:
        prof = cProfile.Profile()
        prof.runcall(trio.run, mqtt_path, a.qos, a.messages, a.lmdb)
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    else:
        trio.run(mqtt_path, a.qos, a.messages, a.lmdb)
    trio.run(core_only, a.messages, a.lmdb)


if __name__ == "__main__":
    main()
