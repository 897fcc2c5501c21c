"""Hostile input over real sockets: mutated frames for every protocol port of a running rocketlite.

Each mutated input goes on its own TCP connection: the bytes, then EOF (half close), then we read
until the server closes or a deadline passes. Outcomes per protocol:

* ``closed``   the server closed the connection (possibly after an error response);
* ``answered`` the server answered (an error or, for a harmless mutation, a normal response) and closed;
* ``open``     neither within the deadline (counted; a server may legitimately wait for a frame's rest,
  but after EOF it should let go, so these are reported);
* ``refused``  the connection could not be made (must stay 0: the listener is alive).

Meanwhile a *canary* keeps normal traffic going (remoting sends + HTTP /health) and counts failures.
Used by tests/reliability/test_hostile_input.py (a few thousand per protocol) and
benchmarks/soak_hostile.py (100k per protocol).
"""

from __future__ import annotations

import random
import struct
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import trio

from rocketlite.protocols.remoting.codec import SERIALIZE_ROCKETMQ, RemotingCommand, encode_command, encode_properties

# -- seeds: well-formed first flights of each protocol -------------------------------------------------


def _remoting_seeds() -> list[bytes]:
    out = []
    props = encode_properties({"TAGS": "a", "KEYS": "k", "UNIQ_KEY": "0A0B"})
    for ser in (0, SERIALIZE_ROCKETMQ):
        send = RemotingCommand(code=310, opaque=1, ext={"a": "PG", "b": "HostileT", "c": "TBW102", "d": "4", "e": "0",
                                                       "f": "0", "g": "0", "h": "0", "i": props, "j": "0", "k": "false"},
                               body=b"hello", serialize=ser)
        route = RemotingCommand(code=105, opaque=2, ext={"topic": "HostileT"}, serialize=ser)
        pull = RemotingCommand(code=11, opaque=3, ext={"consumerGroup": "G", "topic": "HostileT", "queueId": "0",
                                                      "queueOffset": "0", "maxMsgNums": "32", "sysFlag": "2",
                                                      "commitOffset": "0", "suspendTimeoutMillis": "1000",
                                                      "subscription": "*", "subVersion": "0"}, serialize=ser)
        hb = RemotingCommand(code=34, opaque=4, body=b'{"clientID":"x","producerDataSet":[{"groupName":"PG"}],'
                             b'"consumerDataSet":[]}', serialize=ser)
        batch = RemotingCommand(code=320, opaque=5, ext=dict(send.ext, m="true"), body=b"\x00" * 40, serialize=ser)
        out += [encode_command(c) for c in (send, route, pull, hb, batch)]
        out.append(encode_command(route) + encode_command(send))
    return out


def _mqtt_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def _mqtt_frame(first: int, body: bytes) -> bytes:
    n, out = len(body), bytearray()
    while True:
        d, n = n % 128, n // 128
        out.append(d | (0x80 if n else 0))
        if not n:
            break
    return bytes((first,)) + bytes(out) + body


def _mqtt_seeds() -> list[bytes]:
    out = []
    for version in (4, 5):
        props = b"\x00" if version == 5 else b""
        connect = _mqtt_frame(0x10, _mqtt_str("MQTT") + bytes((version, 0xC6)) + struct.pack(">H", 30) + props
                              + _mqtt_str("hostile") + (b"\x00" if version == 5 else b"") + _mqtt_str("will/t")
                              + _mqtt_str("bye") + _mqtt_str("user") + _mqtt_str("pw"))
        plain = _mqtt_frame(0x10, _mqtt_str("MQTT") + bytes((version, 0x02)) + struct.pack(">H", 30) + props
                            + _mqtt_str("hostile2"))
        pub0 = _mqtt_frame(0x30, _mqtt_str("h/t") + props + b"payload")
        pub1 = _mqtt_frame(0x32, _mqtt_str("h/t/1") + struct.pack(">H", 1) + props + b"payload")
        pub2 = _mqtt_frame(0x35, _mqtt_str("h/t/2") + struct.pack(">H", 2) + props + b"payload")
        sub = _mqtt_frame(0x82, struct.pack(">H", 3) + props + _mqtt_str("h/#") + b"\x01" + _mqtt_str("+/x") + b"\x02")
        unsub = _mqtt_frame(0xA2, struct.pack(">H", 4) + props + _mqtt_str("h/#"))
        rel = _mqtt_frame(0x62, struct.pack(">H", 2))
        ping, disc = b"\xc0\x00", b"\xe0\x00"
        out += [connect, plain + pub0 + pub1 + pub2 + rel, plain + sub + unsub + ping, connect + pub1 + disc,
                plain + ping]
    return out


def _grpc_seeds() -> list[bytes]:
    import h2.config
    import h2.connection

    from rocketlite.protocols.grpc import messaging_pb2 as pb
    from rocketlite.protocols.grpc.codec import frame_message

    route = pb.QueryRouteRequest()
    route.topic.name = "HostileG"
    send = pb.SendMessageRequest()
    m = send.messages.add()
    m.topic.name = "HostileG"
    m.body = b"hostile"
    m.system_properties.message_id = "01HOSTILE"
    m.system_properties.tag = "t"
    calls = [("QueryRoute", route.SerializeToString()), ("SendMessage", send.SerializeToString()),
             ("Heartbeat", b""), ("Telemetry", b"\x0a\x00")]
    out = []
    for name, payload in calls:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path",
                                f"/apache.rocketmq.v2.MessagingService/{name}"), (":authority", "localhost"),
                                ("content-type", "application/grpc"), ("te", "trailers"),
                                ("x-mq-client-id", "hostile"), ("grpc-timeout", "2S")])
        conn.send_data(sid, frame_message(payload), end_stream=True)
        conn.ping(b"12345678")
        out.append(conn.data_to_send())
    return out


def _http_seeds() -> list[bytes]:
    body = b'{"topic":"HostileH","body":"x","tags":"t"}'
    return [
        b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/topics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /api/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\n\r\n" + body,
        b"GET /api/messages?topic=HostileH&count=5 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/topics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"10\r\n{\"name\":\"HostH\"}\r\n0\r\n\r\n",
        b"GET /mqtt HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Protocol: mqtt\r\n\r\n\x82\x8e\x00\x00\x00\x00\x10\x0c\x00\x04MQTT\x04\x02\x00\x1e\x00\x00",
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    ]


SEEDS: dict[str, Callable[[], list[bytes]]] = {
    "remoting": _remoting_seeds, "mqtt": _mqtt_seeds, "grpc": _grpc_seeds, "http": _http_seeds,
}

EXTREMES = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x80\x00\x00\x00", b"\x00\x00\xff\xff",
            b"\xff\xff\xff\x7f"]


def mutate(seed: bytes, rng: random.Random) -> bytes:
    """One of several structure-blind mutations (repeated 1-3 times)."""
    data = bytearray(seed)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(9)
        n = len(data)
        if op == 0 and n:  # bit flips
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(n)
                data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # random bytes overwrite
            i = rng.randrange(n)
            for j in range(i, min(n, i + rng.randint(1, 16))):
                data[j] = rng.randrange(256)
        elif op == 2 and n:  # truncate
            del data[rng.randrange(n):]
        elif op == 3:  # insert garbage
            i = rng.randrange(n + 1)
            data[i:i] = rng.randbytes(rng.randint(1, 64))
        elif op == 4 and n >= 4:  # extreme 32-bit value (lengths!)
            i = rng.randrange(n - 3)
            data[i:i + 4] = rng.choice(EXTREMES)
        elif op == 5 and n:  # duplicate a chunk
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 256))
            data[j:j] = data[i:j] * rng.randint(1, 8)
        elif op == 6:  # pure noise
            data = bytearray(rng.randbytes(rng.choice([1, 2, 4, 9, 64, 1024, 70000])))
        elif op == 7 and n:  # extreme byte (flags, varints)
            data[rng.randrange(n)] = rng.choice([0x00, 0x7F, 0x80, 0xFF])
        elif op == 8 and n:  # delete a slice
            i = rng.randrange(n)
            del data[i:i + rng.randint(1, 32)]
    # nothing-then-EOF is not tried: Hypercorn holds such an idle connection for its keep-alive
    # timeout (75 s) before closing, which the harness would count as "open"
    return bytes(data) or bytes((rng.randrange(256),))


@dataclass
class HostileReport:
    protocol: str
    tried: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    canary_ok: int = 0
    canary_failed: int = 0
    canary_errors: list[str] = field(default_factory=list)
    canary_max_s: float = 0.0
    seconds: float = 0.0

    def summary(self) -> str:
        return (f"{self.protocol}: frames={self.tried} {dict(self.outcomes)} canary ok={self.canary_ok} "
                f"failed={self.canary_failed} max_latency={self.canary_max_s:.2f}s in {self.seconds:.1f}s")


async def _one(addr: tuple[str, int], data: bytes, deadline: float, rep: HostileReport) -> None:
    try:
        stream = await trio.open_tcp_stream(*addr)
    except OSError:
        rep.outcomes["refused"] += 1
        return
    got = 0
    outcome = "open"
    try:
        with trio.move_on_after(deadline):
            try:
                await stream.send_all(data)
                await stream.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # the server closed on us mid-send: also a closed connection
            while True:
                try:
                    chunk = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    chunk = b""
                if not chunk:
                    outcome = "answered" if got else "closed"
                    break
                got += len(chunk)
                if got > 1 << 20:
                    outcome = "answered"
                    break
    finally:
        rep.outcomes[outcome] += 1
        await stream.aclose()


async def _canary(remoting: tuple[str, int], http: tuple[str, int], rep: HostileReport, stop: trio.Event) -> None:
    from rocketlite.protocols.remoting.client import RemotingClient

    async with RemotingClient.connect(*remoting) as c:
        while not stop.is_set():
            t0 = trio.current_time()
            try:
                with trio.fail_after(10):
                    r = await c.send_message("HostileCanary", b"canary", group="canary-pg", timeout=10)
                    ok = r.code == 0
                    s = await trio.open_tcp_stream(*http)
                    try:
                        await s.send_all(b"GET /health HTTP/1.1\r\nHost: c\r\nConnection: close\r\n\r\n")
                        head = await s.receive_some(4096)
                        ok = ok and head.startswith(b"HTTP/1.1 200")
                    finally:
                        await s.aclose()
            except (trio.TooSlowError, OSError, ConnectionError) as exc:
                ok = False
                rep.canary_errors.append(repr(exc))
            rep.canary_max_s = max(rep.canary_max_s, trio.current_time() - t0)
            if ok:
                rep.canary_ok += 1
            else:
                rep.canary_failed += 1
            await trio.sleep(0.05)


async def run_hostile(addresses: dict[str, tuple[str, int]], protocol: str, count: int, *, seed: int = 0,
                      concurrency: int = 32, deadline: float = 3.0,
                      progress: Callable[[HostileReport], None] | None = None) -> HostileReport:
    rng = random.Random(seed)
    seeds = SEEDS[protocol]()
    rep = HostileReport(protocol)
    addr = addresses[protocol]
    t0 = trio.current_time()
    stop = trio.Event()
    limit = trio.CapacityLimiter(concurrency)

    async def worker(data: bytes) -> None:
        async with limit:
            await _one(addr, data, deadline, rep)

    async with trio.open_nursery() as canary_nursery:
        canary_nursery.start_soon(_canary, addresses["remoting"], addresses["http"], rep, stop)
        async with trio.open_nursery() as nursery:
            for i in range(count):
                base = rng.choice(seeds)
                data = mutate(base, rng)
                await limit.acquire_on_behalf_of(i)  # keep at most `concurrency` in flight
                limit.release_on_behalf_of(i)
                nursery.start_soon(worker, data)
                rep.tried += 1
                if progress is not None and rep.tried % 10000 == 0:
                    progress(rep)
        stop.set()
    rep.seconds = trio.current_time() - t0
    return rep
