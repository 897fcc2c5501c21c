#!/usr/bin/env bash
# Regenerate rocketlite/protocols/grpc/messaging_pb2.py from our own .proto (needs grpcio-tools:
# pip install -e '.[dev]'). Only message classes are generated: rocketlite serves the service
# on h2 itself, so no *_pb2_grpc.py stubs are needed.
set -euo pipefail
cd "$(dirname "$0")/.."
PKG=rocketlite/protocols/grpc
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
python3 -m grpc_tools.protoc -I "$PKG/proto" --python_out="$OUT" --pyi_out="$OUT" \
  "$PKG/proto/apache/rocketmq/v2/messaging.proto"
# flatten into the package as messaging_pb2.py (its imports are only google.protobuf ones)
cp "$OUT/apache/rocketmq/v2/messaging_pb2.py" "$PKG/messaging_pb2.py"
cp "$OUT/apache/rocketmq/v2/messaging_pb2.pyi" "$PKG/messaging_pb2.pyi"
echo "generated $PKG/messaging_pb2.py"
