"""Small blocking helpers the remoting interop tests use to look at the broker directly."""

from __future__ import annotations

import json
import socket
from typing import Any

from rocketlite.protocols.remoting.codec import FrameDecoder, RemotingCommand, encode_command
from tests.support.server import RocketliteProcess


def request(addr: tuple[str, int], code: int, ext: dict[str, Any] | None = None, body: bytes = b"",
            timeout: float = 5.0) -> RemotingCommand:
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(encode_command(RemotingCommand(code=code, opaque=1, ext={k: str(v) for k, v in (ext or {}).items()},
                                                 body=body)))
        dec = FrameDecoder()
        while True:
            data = s.recv(65536)
            if not data:
                raise ConnectionError("closed")
            dec.feed(data)
            cmd = dec.next_command()
            if cmd is not None:
                return cmd


def route(srv: RocketliteProcess, topic: str) -> dict[str, Any]:
    resp = request(srv.addr("remoting"), 105, {"topic": topic}, timeout=5)
    assert resp.code == 0, resp
    return json.loads(resp.body)


def total_messages(srv: RocketliteProcess, topic: str) -> int:
    """Sum of max offsets over the topic's queues (messages ever visible in it)."""
    r = route(srv, topic)
    n = r["queueDatas"][0]["readQueueNums"]
    total = 0
    for q in range(n):
        resp = request(srv.addr("remoting"), 30, {"topic": topic, "queueId": q})
        assert resp.code == 0, resp
        total += int(resp.ext["offset"])
    return total
