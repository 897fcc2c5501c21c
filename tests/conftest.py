from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.support.server import RocketliteProcess


@pytest.fixture
def rocketlite_process(tmp_path: Path) -> Iterator[RocketliteProcess]:
    """A real rocketlite process on free ports with its own data directory."""
    srv = RocketliteProcess(tmp_path / "data")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
