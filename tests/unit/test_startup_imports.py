"""What ``rocketlite serve`` imports before READY (issue #2: time from spawn to READY).

Imports are most of the start-up cost, so modules that serve does not need must stay out of its
import graph. Checked in a fresh interpreter; not timed.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.server import REPO

# Imported by the serve path only when configured or used: CLI-only verbs (admin client, bench,
# quick produce/consume), certificate generation (on the first TLS handshake / when TLS is on),
# bridges (only with [[bridges]]), the gRPC service (first gRPC connection), and libraries the
# HTTP front-end no longer uses.
MUST_NOT_IMPORT = [
    "rocketlite.admin.client", "rocketlite.admin.cli", "rocketlite.admin.quick", "rocketlite.bench",
    "rocketlite.bridge.service", "rocketlite.protocols.grpc.bench", "rocketlite.protocols.remoting.bench",
    "cryptography", "hypercorn", "wsproto", "h2",
    # the gRPC messaging service and protobuf: imported on the first gRPC connection
    "rocketlite.protocols.grpc.server", "rocketlite.protocols.grpc.codec", "rocketlite.protocols.grpc.service",
    "rocketlite.protocols.grpc.messaging_pb2", "google.protobuf", "hpack",
    "uuid", "statistics", "secrets", "mimetypes",
]

PROBE = """
import json, sys
from rocketlite.cli import build_parser, settings_from_args
args = build_parser("serve").parse_args(["serve", "--ephemeral"])
settings = settings_from_args(args)
import rocketlite.app
from rocketlite.frontends import FRONTENDS, load_frontend
for name, _ in FRONTENDS:
    load_frontend(name)
import rocketlite.protocols.http.app  # the admin app, imported when the HTTP front-end starts
print(json.dumps(sorted(sys.modules)))
"""


def test_serve_imports_nothing_it_does_not_need() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert "rocketlite.protocols.grpc.frontend" in loaded and "rocketlite.protocols.http.app" in loaded
    bad = sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in MUST_NOT_IMPORT))
    assert not bad, f"serve imports {bad}: import them where they are used"
