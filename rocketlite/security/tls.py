"""TLS for the byte-stream front-ends (remoting, MQTT), sniffed per connection like the gRPC port.

A connection whose first byte is 0x16 (a TLS handshake record) gets a TLS session; anything else
is served in plaintext as before (a remoting frame starts with a length byte, an MQTT CONNECT with
0x10). The certificate comes from ``[security] tls_cert_file``/``tls_key_file``; when empty, a
self-signed one is made at startup (fine for tests, not for production).
"""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
from typing import Any

import trio

SNIFF_TIMEOUT_S = 10.0


def ssl_context(cert_file: str = "", key_file: str = "", alpn: list[str] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file or None)
        return ctx
    cpath, kpath, tmp = self_signed_files()
    try:
        ctx.load_cert_chain(cpath, kpath)
    finally:
        tmp.cleanup()
    return ctx


def self_signed_files() -> tuple[str, str, tempfile.TemporaryDirectory[str]]:
    """A fresh self-signed certificate and key as files (caller cleans ``tmp`` up)."""
    from rocketlite.protocols.grpc.tls import self_signed_pem

    cert_pem, key_pem = self_signed_pem()
    tmp = tempfile.TemporaryDirectory(prefix="rocketlite-tls-")
    cpath = os.path.join(tmp.name, "cert.pem")
    kpath = os.path.join(tmp.name, "key.pem")
    with open(cpath, "wb") as f:
        f.write(cert_pem)
    fd = os.open(kpath, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    return cpath, kpath, tmp


def context_for(settings: Any, frontend: str) -> ssl.SSLContext | None:
    """The TLS context of a front-end when ``[<frontend>] tls = true`` (None otherwise)."""
    if not settings.get(frontend, "tls", False):
        return None
    return ssl_context(str(settings.get("security", "tls_cert_file", "") or ""),
                       str(settings.get("security", "tls_key_file", "") or ""))


class TlsSocketStream(trio.abc.Stream):
    """A trio.SSLStream that still answers ``.socket`` and ``setsockopt`` like the TCP stream under it."""

    def __init__(self, tcp: trio.SocketStream, ctx: ssl.SSLContext) -> None:
        self.tcp = tcp
        self.ssl = trio.SSLStream(tcp, ctx, server_side=True)
        self.socket = tcp.socket

    def setsockopt(self, *args: Any) -> None:
        self.tcp.setsockopt(*args)

    async def do_handshake(self) -> None:
        await self.ssl.do_handshake()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.ssl.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.ssl.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.ssl.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.tcp.send_eof()

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.ssl)


async def tls_or_plain(stream: trio.SocketStream, ctx: ssl.SSLContext | None) -> trio.abc.Stream | None:
    """The stream to serve: TLS (handshake done) when the peer starts one, else ``stream`` itself.

    None when the peer sent nothing in time, closed, or failed the handshake (the caller closes)."""
    if ctx is None:
        return stream
    try:
        with trio.move_on_after(SNIFF_TIMEOUT_S):
            first = await stream.socket.recv(1, socket.MSG_PEEK)
            if not first:
                return None
            if first[0] != 0x16:
                return stream
            tls = TlsSocketStream(stream, ctx)
            await tls.do_handshake()
            return tls
    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
        return None
    return None
