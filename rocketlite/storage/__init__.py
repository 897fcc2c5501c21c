"""Storage: one commit log, its indexes and small keyed tables, behind one narrow interface.

Two implementations pass the same contract suite (tests/unit/test_storage_contract.py):
:class:`~rocketlite.storage.memory.MemoryStore` and :class:`~rocketlite.storage.lmdb_store.LmdbStore`.
Storage knows no domain rule: it stores what it is given, indexes it by queue, key and id, and
keeps named tables that the core uses for offsets, timers, transactions, POP and sessions.
"""

# rocketlite.core (whose broker imports rocketlite.storage.base) must be initialised before
# storage.base imports rocketlite.core.message, or `import rocketlite.storage` first is circular.
import rocketlite.core  # noqa: F401,E402  isort: skip
from rocketlite.storage.base import AppendResult, IndexEntry, Store, WriteBatch

__all__ = ["AppendResult", "IndexEntry", "Store", "WriteBatch", "open_store"]


def open_store(data_dir: str | None, *, flush: str = "async", **options: object) -> Store:
    """Open the LMDB store in ``data_dir``, or a memory store when ``data_dir`` is None."""
    if data_dir is None:
        from rocketlite.storage.memory import MemoryStore

        return MemoryStore()
    from rocketlite.storage.lmdb_store import LmdbStore

    return LmdbStore(data_dir, flush=flush, **options)  # type: ignore[arg-type]
