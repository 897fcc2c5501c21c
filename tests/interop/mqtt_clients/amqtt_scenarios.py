"""MQTT 3.1.1 scenarios driven by amqtt's asyncio client (run in the amqtt venv by the interop tests).

    python amqtt_scenarios.py URI SCENARIO PREFIX      (URI: mqtt://host:port or ws://host:port/mqtt)
"""

from __future__ import annotations

import asyncio
import sys

from amqtt.client import MQTTClient

URI, SCENARIO, PREFIX = sys.argv[1], sys.argv[2], sys.argv[3]


def t(name: str) -> str:
    return f"{PREFIX}/{name}"


async def client(cid: str, clean: bool = True, will: tuple[str, bytes, int] | None = None) -> MQTTClient:
    config: dict = {"auto_reconnect": False, "keep_alive": 30}
    if will:
        config["will"] = {"topic": will[0], "message": will[1].decode(), "qos": will[2], "retain": False}
    c = MQTTClient(client_id=f"{PREFIX}-{cid}", config=config)
    await c.connect(URI, cleansession=clean)
    return c


async def receive(c: MQTTClient, n: int, timeout: float = 8) -> list:
    out = []
    for _ in range(n):
        m = await asyncio.wait_for(c.deliver_message(), timeout)
        out.append(m)
    return out


async def roundtrip() -> None:
    sub = await client("sub")
    await sub.subscribe([(t("#"), 2)])
    pub = await client("pub")
    for q in (0, 1, 2):
        await pub.publish(t(f"q{q}"), b"m%d" % q, qos=q)
    got = sorted((m.topic, bytes(m.data), m.qos) for m in await receive(sub, 3))
    assert got == [(t(f"q{q}"), b"m%d" % q, q) for q in (0, 1, 2)], got
    await pub.disconnect()
    await sub.disconnect()


async def retained() -> None:
    pub = await client("pub")
    await pub.publish(t("r/a"), b"kept", qos=1, retain=True)
    sub = await client("sub")
    await sub.subscribe([(t("r/+"), 1)])
    (m,) = await receive(sub, 1)
    assert (m.topic, bytes(m.data)) == (t("r/a"), b"kept") and m.publish_packet.retain_flag, m
    await pub.disconnect()
    await sub.disconnect()


async def will() -> None:
    watch = await client("watch")
    await watch.subscribe([(t("will"), 1)])
    dying = await client("dying", will=(t("will"), b"gone", 1))
    # abrupt close: drop the transport without DISCONNECT
    writer = dying._handler.writer  # noqa: SLF001 - amqtt has no public abrupt close
    writer._writer.transport.abort()  # noqa: SLF001
    (m,) = await receive(watch, 1, timeout=10)
    assert bytes(m.data) == b"gone"
    await watch.disconnect()


async def persist() -> None:
    c = await client("durable", clean=False)
    await c.subscribe([(t("p/#"), 1)])
    await c.disconnect()
    pub = await client("pub")
    for i in range(3):
        await pub.publish(t(f"p/{i}"), b"off%d" % i, qos=1)
    await pub.disconnect()
    c = await client("durable", clean=False)
    got = [bytes(m.data) for m in await receive(c, 3)]
    assert got == [b"off0", b"off1", b"off2"], got
    await c.disconnect()


async def wildcards() -> None:
    sub = await client("sub")
    await sub.subscribe([(t("w/+/x"), 1), (t("w/a/#"), 1)])
    pub = await client("pub")
    for topic in ("w/a/x", "w/b/x", "w/b/y", "w/a", "w/a/b/c"):
        await pub.publish(t(topic), topic.encode(), qos=1)
    got = sorted(bytes(m.data) for m in await receive(sub, 4))
    assert got == [b"w/a", b"w/a/b/c", b"w/a/x", b"w/b/x"], got
    await pub.disconnect()
    await sub.disconnect()


asyncio.run(globals()[SCENARIO]())
print("OK", flush=True)
