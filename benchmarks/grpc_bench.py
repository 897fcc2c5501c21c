"""gRPC front-end benchmark (same as ``rocketlite bench grpc``): SendMessage calls/s and received
messages/s with 1 and 16 calls in flight, next to a grpcio C-core server echoing the same payload.

    python benchmarks/grpc_bench.py [--seconds 5] [--body 1024] [--inflight 1,16] [--target host:port]
"""

import sys

from rocketlite.protocols.grpc.bench import main

if __name__ == "__main__":
    sys.exit(main())
