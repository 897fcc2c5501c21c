"""Locating the real third-party clients that .ci/install-*.sh put under .interop/.

A test that needs a client calls ``require(path_or_cmd, what)``: locally it skips when the
client is not installed; in CI (ROCKETLITE_REQUIRE_INTEROP=1) a missing client fails the test.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.support.server import REPO

INTEROP = Path(os.environ.get("ROCKETLITE_INTEROP_DIR", REPO / ".interop"))


def require(path: Path | str, what: str) -> Path:
    p = Path(path)
    found = p if p.is_absolute() or p.exists() else None
    if found is None:
        which = shutil.which(str(path))
        found = Path(which) if which else None
    if found is None or not found.exists():
        msg = f"{what} is not installed ({path}); run the matching .ci/install-*.sh"
        if os.environ.get("ROCKETLITE_REQUIRE_INTEROP") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return found


def venv_python(name: str) -> Path:
    """The python of the client venv .interop/venv-<name>."""
    return require(INTEROP / f"venv-{name}" / "bin" / "python", f"client venv {name}")


def node_modules() -> Path:
    return require(INTEROP / "node" / "node_modules", "npm interop clients")
