"""Remoting produce/consume throughput beside the storage figure (see rocketlite/protocols/remoting/bench.py)."""

import sys

from rocketlite.protocols.remoting.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
