"""Runs one docs/testing.md example in a client's own venv against a running rocketlite.

    <venv python> doc_runner.py <file with the example> <external spec> [--no-shutdown-crash]

The example's ``test_*`` functions get an :class:`~rocketlite.testing.ExternalRocketlite` as
their ``rocketlite`` argument (the same surface as the pytest fixture), reset before each.
The client venvs do not have rocketlite installed; its pure modules are imported from the repo.
"""

from __future__ import annotations

import os
import runpy
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from rocketlite.testing._external import ExternalRocketlite  # noqa: E402


def main() -> None:
    path, spec, *flags = sys.argv[1:]
    if "--no-shutdown-crash" in flags:
        # librocketmq 2.1 may SIGSEGV in PushConsumer.shutdown() after the work is done (see the
        # docs); the process ends with os._exit below, so skipping shutdown loses nothing.
        from rocketmq import client

        client.PushConsumer.shutdown = lambda self: None  # type: ignore[method-assign]
    rl = ExternalRocketlite(spec)
    code = 0
    for name, fn in runpy.run_path(path).items():
        if name.startswith("test_") and callable(fn):
            rl.reset()
            try:
                fn(rl)
                print("PASS", name, flush=True)
            except BaseException:
                traceback.print_exc()
                print("FAIL", name, flush=True)
                code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
