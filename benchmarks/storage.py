"""Storage benchmark (same as ``rocketlite bench storage``; run from a checkout).

    python benchmarks/storage.py                 # the full table (about a minute)
    python benchmarks/storage.py --quick --broker
    python benchmarks/storage.py --json > storage.json

Options: ``python benchmarks/storage.py --help``.
"""

from __future__ import annotations

import sys

from rocketlite.bench import storage_main

if __name__ == "__main__":
    sys.exit(storage_main(sys.argv[1:]))
