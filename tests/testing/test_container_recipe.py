"""The testcontainers recipe of docs/testing.md, without Docker: a port "mapping" in front of a
rocketlite process, and POST /advertise so remoting routes name the mapped port.

A tiny TCP forwarder plays Docker's port mapping. A real remoting client (librocketmq) is
given only the mapped NameServer address; it can reach the broker through the mapped broker
port only if the route data it receives names that port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from rocketlite.testing import ExternalRocketlite
from tests.support.interop import INTEROP, require
from tests.support.server import RocketliteProcess


class Forwarder:
    """Listen on a random port, pipe every connection to ``target``; count connections."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.threads: list[threading.Thread] = []
        self.open: list[socket.socket] = []
        self._spawn(self._accept)

    def _spawn(self, fn, *args) -> None:  # type: ignore[no-untyped-def]
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(self.target)
            self.open += [client, upstream]
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()
        for s in self.open:
            s.close()
        for t in self.threads:
            t.join(5)


PRODUCER = """
import os, sys
from rocketmq.client import Message, Producer
p = Producer("recipe-producer")
p.set_name_server_address(sys.argv[1])
p.start()
m = Message("orders")
m.set_keys("order-1")
m.set_body("through the mapped port")
print(p.send_sync(m).status, flush=True)
os._exit(0)   # librocketmq may crash in shutdown(); the send is what matters here
"""


@pytest.mark.interop
def test_remoting_client_reaches_the_broker_through_the_advertised_mapped_port(tmp_path: Path) -> None:
    python = require(INTEROP / "venv-rocketmq-cpp21" / "bin" / "python", "client venv venv-rocketmq-cpp21")
    srv = RocketliteProcess(ephemeral=True, extra_args=["--set", "testing.enabled=true", "--set", "testing.port=0"])
    with srv:
        ext = ExternalRocketlite(srv.ready_line)
        namesrv_map = Forwarder(srv.addr("remoting"))
        broker_port = _broker_port(srv)
        broker_map = Forwarder(("127.0.0.1", broker_port))
        try:
            assert ext.advertise("127.0.0.1", broker_map.port) == f"127.0.0.1:{broker_map.port}"
            script = tmp_path / "produce.py"
            script.write_text(PRODUCER)
            (tmp_path / "home").mkdir()
            proc = subprocess.run(
                [str(python), str(script), f"127.0.0.1:{namesrv_map.port}"], capture_output=True, text=True,
                timeout=60, env={**os.environ, "HOME": str(tmp_path / "home")},
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert broker_map.connections >= 1, "the client never used the advertised (mapped) broker port"
            (msg,) = ext.peek("orders")
            assert msg.body == b"through the mapped port" and msg.keys == "order-1"
        finally:
            namesrv_map.close()
            broker_map.close()


def _broker_port(srv: RocketliteProcess) -> int:
    """The broker role's port: the process was started with --broker-port 0, so ask the route."""
    import json
    import urllib.request

    state = json.loads(urllib.request.urlopen(f"http://{srv.endpoint('testing')}/").read())
    return int(state["remoting_ports"]["broker"])
