"""A minimal Trio remoting client: requests matched to responses by opaque, pipelined.

Not a RocketMQ client library; it exists for rocketlite's own tests and the remoting benchmark
(load generation). Interop is proven with real third-party clients (tests/interop).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
from typing import Any

import trio

from rocketlite.protocols.remoting.codec import (
    FLAG_ONEWAY,
    SERIALIZE_JSON,
    FrameDecoder,
    RemotingCommand,
    encode_command,
    encode_properties,
)


class RemotingClient:
    """Use as ``async with RemotingClient.connect(host, port) as c: resp = await c.request(105, topic="T")``."""

    def __init__(self, stream: trio.abc.Stream, *, language: str = "JAVA", version: int = 401,
                 serialize: int = SERIALIZE_JSON, raw: socket.socket | None = None) -> None:
        self.stream = stream
        self.raw = raw  # the plain socket under ``stream``: I/O without a Trio round trip per call
        self.language = language
        self.version = version
        self.serialize = serialize
        self._opaque = itertools.count(1)
        self._waiting: dict[int, tuple[trio.Event, list[RemotingCommand]]] = {}
        self._out: list[bytes] = []
        self._flushing = False
        self.incoming_send, self.incoming = trio.open_memory_channel[RemotingCommand](1000)
        self.closed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._reads = 0

    @classmethod
    def connect(cls, host: str, port: int, **kw: Any) -> "_Connected":
        return _Connected(host, port, kw)

    async def _reader(self) -> None:
        dec = FrameDecoder()
        try:
            while True:
                try:
                    data = await self._receive()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    break
                if not data:
                    break
                dec.feed(data)
                for cmd in dec:
                    if cmd.is_response:
                        w = self._waiting.get(cmd.opaque)
                        if w is not None:
                            w[1].append(cmd)
                            w[0].set()
                    else:
                        try:
                            self.incoming_send.send_nowait(cmd)
                        except trio.WouldBlock:
                            pass
        finally:
            self.closed.set()
            for ev, _ in self._waiting.values():
                ev.set()

    async def _receive(self) -> bytes:
        raw = self.raw
        if raw is None:
            return await self.stream.receive_some(65536)
        self._reads += 1
        if self._reads >= 16:  # let the other tasks run now and then
            self._reads = 0
            await trio.lowlevel.checkpoint()
        while True:
            try:
                return raw.recv(65536)
            except BlockingIOError:
                self._reads = 0
                await trio.lowlevel.wait_readable(raw)

    async def send(self, cmd: RemotingCommand) -> None:
        """Queue a frame; concurrent senders' frames go out together in one write."""
        self._out.append(encode_command(cmd))
        if self._flushing:
            return
        self._flushing = True
        try:
            while self._out:
                chunk = self._out[0] if len(self._out) == 1 else b"".join(self._out)
                self._out.clear()
                if self.raw is None:
                    await self.stream.send_all(chunk)
                    continue
                try:
                    sent = self.raw.send(chunk)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    raise trio.BrokenResourceError(str(exc)) from exc
                with memoryview(chunk) as view:
                    while sent < len(chunk):
                        await trio.lowlevel.wait_writable(self.raw)
                        try:
                            sent += self.raw.send(view[sent:])
                        except BlockingIOError:
                            pass
                        except OSError as exc:
                            raise trio.BrokenResourceError(str(exc)) from exc
        finally:
            self._flushing = False

    def command(self, code: int, ext: dict[str, Any] | None = None, body: bytes = b"", *, oneway: bool = False,
                **fields: Any) -> RemotingCommand:
        merged = {**(ext or {}), **fields}
        return RemotingCommand(
            code=code, opaque=next(self._opaque), flag=FLAG_ONEWAY if oneway else 0,
            ext={k: _s(v) for k, v in merged.items() if v is not None}, body=body,
            language=self.language, version=self.version, serialize=self.serialize,
        )

    async def request(self, code: int, ext: dict[str, Any] | None = None, body: bytes = b"", *,
                      timeout: float = 30.0, **fields: Any) -> RemotingCommand:
        cmd = self.command(code, ext, body, **fields)
        return await self.roundtrip(cmd, timeout=timeout)

    async def roundtrip(self, cmd: RemotingCommand, *, timeout: float = 30.0) -> RemotingCommand:
        ev = trio.Event()
        slot: list[RemotingCommand] = []
        self._waiting[cmd.opaque] = (ev, slot)
        try:
            await self.send(cmd)
            with trio.fail_after(timeout):
                await ev.wait()
        finally:
            self._waiting.pop(cmd.opaque, None)
        if not slot:
            raise ConnectionError("connection closed before the response")
        return slot[0]

    async def oneway(self, code: int, ext: dict[str, Any] | None = None, body: bytes = b"", **fields: Any) -> None:
        await self.send(self.command(code, ext, body, oneway=True, **fields))

    # -- conveniences ----------------------------------------------------------------------
    async def send_message(self, topic: str, body: bytes, *, group: str = "PG", queue_id: int = -1,
                           tags: str = "", keys: str = "", properties: dict[str, str] | None = None,
                           sys_flag: int = 0, v2: bool = True, timeout: float = 30.0) -> RemotingCommand:
        props = dict(properties or {})
        if tags:
            props["TAGS"] = tags
        if keys:
            props["KEYS"] = keys
        if v2:
            ext = {"a": group, "b": topic, "c": "TBW102", "d": 4, "e": queue_id, "f": sys_flag, "g": 0, "h": 0,
                   "i": encode_properties(props), "j": 0, "k": False}
            return await self.request(310, ext, body, timeout=timeout)
        ext = {"producerGroup": group, "topic": topic, "defaultTopic": "TBW102", "defaultTopicQueueNums": 4,
               "queueId": queue_id, "sysFlag": sys_flag, "bornTimestamp": 0, "flag": 0,
               "properties": encode_properties(props), "reconsumeTimes": 0, "unitMode": False}
        return await self.request(10, ext, body, timeout=timeout)

    async def heartbeat(self, client_id: str, *, consumer_group: str | None = None, producer_group: str | None = None,
                        subscriptions: dict[str, str] | None = None) -> RemotingCommand:
        data: dict[str, Any] = {"clientID": client_id, "producerDataSet": [], "consumerDataSet": []}
        if producer_group:
            data["producerDataSet"].append({"groupName": producer_group})
        if consumer_group:
            data["consumerDataSet"].append({
                "groupName": consumer_group, "consumeType": "CONSUME_PASSIVELY", "messageModel": "CLUSTERING",
                "consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET", "unitMode": False,
                "subscriptionDataSet": [{"topic": t, "subString": e, "subVersion": 1}
                                        for t, e in (subscriptions or {}).items()],
            })
        return await self.request(34, body=json.dumps(data).encode())


def _s(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


async def _connect(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket (first address that answers)."""
    error: OSError | None = None
    for family, type_, proto, _, addr in await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            try:
                sock.connect(addr)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err)) from None
            return sock
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    raise error or OSError(f"cannot connect to {host}:{port}")


class _Connected:
    def __init__(self, host: str, port: int, kw: dict[str, Any]) -> None:
        self.host, self.port, self.kw = host, port, kw
        self._nursery_cm: Any = None
        self.client: RemotingClient | None = None

    async def __aenter__(self) -> RemotingClient:
        sock = await _connect(self.host, self.port)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        self.client = RemotingClient(stream, raw=sock, **self.kw)
        self._nursery_cm = trio.open_nursery()
        nursery = await self._nursery_cm.__aenter__()
        nursery.start_soon(self.client._reader)
        self.client._nursery = nursery
        return self.client

    async def __aexit__(self, *exc: Any) -> bool:
        assert self.client is not None
        self.client._nursery.cancel_scope.cancel()  # type: ignore[union-attr]
        try:
            # the body's own exception is not handed to the reader's nursery, so it propagates
            # unwrapped (a ConnectionError stays a ConnectionError, not an ExceptionGroup)
            await self._nursery_cm.__aexit__(None, None, None)
        finally:
            await self.client.stream.aclose()
        return False
