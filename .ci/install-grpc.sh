#!/usr/bin/env bash
# gRPC (RocketMQ 5.x) interop clients (idempotent):
#  - PyPI rocketmq-python-client 5.1.2 (module `rocketmq`, grpcio underneath) in .interop/venv-grpc-python
#  - npm rocketmq-client-nodejs 1.0.8 (@grpc/grpc-js underneath) under .interop/node-grpc
# grpcio (the benchmark's C-core echo baseline) is a test dependency of rocketlite itself.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
mkdir -p .interop

if ! [ -x .interop/venv-grpc-python/bin/python ] || \
   ! .interop/venv-grpc-python/bin/python -c "import rocketmq" >/dev/null 2>&1; then
  if ! python3 -m venv .interop/venv-grpc-python; then
    # Debian's system python needs the venv module from a package
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    rm -rf .interop/venv-grpc-python
    python3 -m venv .interop/venv-grpc-python
  fi
  .interop/venv-grpc-python/bin/pip install -q --disable-pip-version-check "rocketmq-python-client==5.1.2"
fi

if ! [ -d .interop/node-grpc/node_modules/rocketmq-client-nodejs ]; then
  mkdir -p .interop/node-grpc
  cd .interop/node-grpc
  [ -f package.json ] || echo '{"name":"rocketlite-grpc-interop","private":true}' > package.json
  npm install --silent --no-audit --no-fund rocketmq-client-nodejs@1.0.8 >/dev/null
  cd "$REPO"
fi
echo "grpc clients ready"
