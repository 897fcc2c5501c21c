#!/usr/bin/env bash
# Installs the real RocketMQ remoting clients the interop tests use (REMOTING.md section 12).
# Idempotent: each client is skipped when already present.
#   .interop/node/remoting/node_modules/ali-ons      npm ali-ons 3.12.0 (pure JS)
#   .interop/venv-rocketmq044/                       PyPI rocketmq 0.4.4 (bundles an early librocketmq)
#   .interop/venv-rocketmq-cpp21/                    PyPI rocketmq-client-python 2.0.0 + librocketmq 2.1.0
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
INTEROP="${ROCKETLITE_INTEROP_DIR:-$REPO/.interop}"
mkdir -p "$INTEROP"
export PIP_DISABLE_PIP_VERSION_CHECK=1

# -- ali-ons ---------------------------------------------------------------------------------
NODE_DIR="$INTEROP/node/remoting"
if [ ! -f "$NODE_DIR/node_modules/ali-ons/package.json" ]; then
  mkdir -p "$NODE_DIR"
  [ -f "$NODE_DIR/package.json" ] || echo '{"name":"rocketlite-remoting-interop","private":true}' > "$NODE_DIR/package.json"
  (cd "$NODE_DIR" && npm install --no-audit --no-fund --loglevel=error ali-ons@3.12.0)
fi

# -- PyPI rocketmq 0.4.4 ---------------------------------------------------------------------
V044="$INTEROP/venv-rocketmq044"
if ! "$V044/bin/python" -c "import rocketmq.client" 2>/dev/null; then
  python3 -m venv "$V044"
  "$V044/bin/pip" install -q rocketmq==0.4.4
fi

# -- PyPI rocketmq-client-python 2.0.0 with librocketmq 2.1.0 --------------------------------
V21="$INTEROP/venv-rocketmq-cpp21"
if [ ! -f "$V21/.librocketmq-2.1.0" ]; then
  python3 -m venv "$V21"
  "$V21/bin/pip" install -q rocketmq-client-python==2.0.0
  TMP="$(mktemp -d)"
  "$V21/bin/pip" download -q --no-deps --no-binary :all: -d "$TMP" rocketmq-python-cvs==2.1.0.3
  (cd "$TMP" && for f in *.tar.gz; do tar xzf "$f"; done)
  SO="$(find "$TMP" -name librocketmq.so | head -n1)"
  [ -n "$SO" ] || { echo "librocketmq.so not found in rocketmq-python-cvs sdist" >&2; exit 1; }
  PKG="$("$V21/bin/python" -c 'import os, importlib.util as u; print(os.path.dirname(u.find_spec("rocketmq").origin))')"
  cp "$SO" "$PKG/librocketmq.so"
  rm -rf "$TMP"
  "$V21/bin/python" -c "from rocketmq.client import Producer, PushConsumer, TransactionMQProducer"
  touch "$V21/.librocketmq-2.1.0"
fi
echo "remoting interop clients ready under $INTEROP"
