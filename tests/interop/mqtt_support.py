"""Helpers for the MQTT interop tests: run a client scenario in its own process."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from tests.support.server import RocketliteProcess

CLIENTS = Path(__file__).parent / "mqtt_clients"


def prefix() -> str:
    return "t" + uuid.uuid4().hex[:10]


def run(cmd: Sequence[str], timeout: float = 20) -> str:
    p = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0 and "OK" in p.stdout, f"{cmd[-3:]} exit {p.returncode}\n{p.stdout}\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def mqtt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RocketliteProcess]:
    """One rocketlite process for a module's MQTT tests (they use distinct topics and ids)."""
    srv = RocketliteProcess(tmp_path_factory.mktemp("mqtt") / "data")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
