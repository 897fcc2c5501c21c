"""Direct I/O on a plain TCP socket under a Trio stream (the remoting and MQTT adapters).

Trio's stream calls pass through the scheduler on every call, even when the socket is ready;
for small requests that costs more than the request itself. These helpers call the socket
directly and wait in Trio only when it would block.
"""

from __future__ import annotations

import socket

import trio


async def send_all(sock: socket.socket, data: bytes) -> None:
    """All of ``data`` onto the non-blocking ``sock``; yields to Trio only when its buffer is full."""
    try:
        sent = sock.send(data)
    except BlockingIOError:
        sent = 0
    if sent == len(data):
        return
    with memoryview(data) as view:
        while sent < len(data):
            await trio.lowlevel.wait_writable(sock)
            try:
                sent += sock.send(view[sent:])
            except BlockingIOError:
                pass
