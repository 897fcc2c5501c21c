"""Start a real rocketlite process for a test and stop it by its PID.

    with RocketliteProcess(tmp_path) as srv:
        srv.addr("remoting")   # ("127.0.0.1", 43121)

Ports are picked here, free and *below the kernel's ephemeral range*, so that a restart can bind the
same ports again: a port from the ephemeral range (what port 0 gives) may meanwhile become the source
port of some client's outgoing connection, and then the restarted broker fails with EADDRINUSE.
Each pytest-xdist worker picks from its own slice of that range. The process prints one READY line
with what it bound, which is parsed here. ``restart()`` keeps the data directory and the ports.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PORT_NAMES = ("remoting", "broker", "grpc", "mqtt", "http")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_ports(n: int, rng: random.Random | None = None) -> list[int]:
    """``n`` distinct free ports outside the ephemeral range, from this xdist worker's slice.

    Every port ``p`` also has ``p - 2`` free (the remoting VIP port sits two below the broker port).
    """
    rng = rng or random.Random()
    lo, hi = 12000, min(_ephemeral_low(), 65536)
    if hi - lo < 2000:  # an unusual kernel setting: fall back to any free port
        lo, hi = 1024, hi
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    wid = int((os.environ.get("PYTEST_XDIST_WORKER", "gw0") or "gw0").lstrip("gw") or 0) % workers
    span = (hi - lo) // workers
    lo, hi = lo + wid * span, lo + (wid + 1) * span
    out: list[int] = []
    for _ in range(2000):
        p = rng.randrange(lo + 2, hi)
        if any(abs(p - q) <= 2 for q in out):
            continue
        if _port_free(p) and _port_free(p - 2):
            out.append(p)
            if len(out) == n:
                return out
    raise RuntimeError(f"no {n} free ports in {lo}..{hi}")


class RocketliteProcess:
    def __init__(
        self,
        data_dir: Path | str | None = None,
        *,
        ephemeral: bool = False,
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 20.0,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.ephemeral = ephemeral or data_dir is None
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.addresses: dict[str, tuple[str, int]] = {}
        self.ready_line = ""
        self.ready_seconds = 0.0
        self.ports: dict[str, int] = {}

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "rocketlite", "serve", "--host", "127.0.0.1", "--log-level", "warning"]
        for name in ("remoting", "broker", "grpc", "mqtt", "http"):
            cmd += [f"--{name}-port", str(self.ports.get(name, 0))]
        if self.ephemeral:
            cmd.append("--ephemeral")
        else:
            assert self.data_dir is not None
            cmd += ["--data-dir", str(self.data_dir)]
        return cmd + self.extra_args

    def start(self) -> "RocketliteProcess":
        if self.ports:  # a restart: the same ports again
            return self._start()
        for attempt in range(3):  # a picked port may be taken by someone else before the broker binds it
            self.ports = dict(zip(PORT_NAMES, pick_ports(len(PORT_NAMES))))
            try:
                return self._start()
            except RuntimeError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start(self) -> "RocketliteProcess":
        env = {**os.environ, **self.env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=None, stdin=subprocess.DEVNULL, env=env, cwd=REPO
        )
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        buf = b""
        deadline = t0 + self.timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                self.kill()
                raise TimeoutError(f"rocketlite printed no READY line in {self.timeout}s: {buf!r}")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                code = self.proc.wait()
                raise RuntimeError(f"rocketlite exited with {code} before READY: {buf!r}")
            buf += chunk
        sel.close()
        self.ready_seconds = time.monotonic() - t0
        self.ready_line = buf.split(b"\n", 1)[0].decode()
        assert self.ready_line.startswith("READY"), self.ready_line
        self.addresses = parse_ready(self.ready_line)
        # keep the same ports on restart so clients can reconnect
        for name, (_, port) in self.addresses.items():
            self.ports[name] = port
        return self

    def addr(self, name: str) -> tuple[str, int]:
        return self.addresses[name]

    def endpoint(self, name: str) -> str:
        host, port = self.addresses[name]
        return f"{host}:{port}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> "RocketliteProcess":
        self.stop()
        return self.start()

    def __enter__(self) -> "RocketliteProcess":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def parse_ready(line: str) -> dict[str, tuple[str, int]]:
    out = {}
    for part in line.split()[1:]:
        name, _, hostport = part.partition("=")
        host, _, port = hostport.rpartition(":")
        out[name] = (host, int(port))
    return out
