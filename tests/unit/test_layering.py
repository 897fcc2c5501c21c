"""The architecture rule: the core, the storage interface and every protocol codec are pure.

They import none of trio, lmdb, hypercorn (nor sockets or asyncio); only server adapters, the app
and the LMDB store do. Checked two ways: by reading the sources (every import statement, including
ones inside functions) and by import-linter's contract in pyproject.toml.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "rocketlite"
FORBIDDEN = {"trio", "lmdb", "hypercorn", "asyncio", "socket", "anyio", "rocketlite.app", "rocketlite.runtime"}


def pure_modules() -> list[Path]:
    files = list((PKG / "core").rglob("*.py"))
    files += [PKG / "storage" / "base.py", PKG / "storage" / "memory.py"]
    if (PKG / "storage" / "records.py").exists():
        files.append(PKG / "storage" / "records.py")
    for proto in (PKG / "protocols").iterdir():
        if proto.is_dir():
            files += [p for p in proto.glob("*.py") if p.stem in ("codec", "session", "framing", "topics", "trie")]
    return sorted(files)


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", pure_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports_no_io_framework(path: Path) -> None:
    bad = {n for n in imported_names(path) if n.split(".")[0] in FORBIDDEN or n in FORBIDDEN}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_core_imports_no_protocol_module() -> None:
    for path in (PKG / "core").rglob("*.py"):
        bad = {n for n in imported_names(path) if n.startswith(("rocketlite.protocols", "rocketlite.storage.lmdb"))}
        assert not bad, f"{path} imports {sorted(bad)}"


def test_import_linter_contracts() -> None:
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter not installed")
    result = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
