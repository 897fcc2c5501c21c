"""The process: READY line, ports, clean shutdown."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

from tests.support.server import RocketliteProcess


def test_ready_line_names_bound_listeners_and_sigterm_exits_zero(tmp_path: Path) -> None:
    srv = RocketliteProcess(tmp_path / "d").start()
    try:
        assert srv.ready_line.startswith("READY ")
        assert srv.addresses, srv.ready_line
        for name, (host, port) in srv.addresses.items():
            assert port > 0, name
            with socket.create_connection((host, port), timeout=5):
                pass
    finally:
        assert srv.stop(signal.SIGTERM) == 0
    assert (tmp_path / "d").is_dir()


def test_sigint_exits_zero_ephemeral() -> None:
    srv = RocketliteProcess(ephemeral=True).start()
    assert srv.stop(signal.SIGINT) == 0


def test_a_bad_broker_setting_is_a_clear_error_before_anything_starts() -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "rocketlite", "serve", "--ephemeral", "--set",
                        "broker.message_delay_level=1s bogus"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "READY" not in r.stdout
    assert "bad delay level 'bogus'" in r.stderr and "Traceback" not in r.stderr
