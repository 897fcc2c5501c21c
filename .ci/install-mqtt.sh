#!/usr/bin/env bash
# MQTT interop peers and benchmark baselines (idempotent):
#  - Debian mosquitto-clients (mosquitto_pub/sub) and mosquitto (benchmark baseline, 127.0.0.1 only)
#  - amqtt (client for interop, broker for the benchmark) in its own venv .interop/venv-amqtt
#  - MQTT.js (npm mqtt) under .interop/node-mqtt
# paho-mqtt is a test dependency of rocketlite itself (pyproject [test]).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
mkdir -p .interop

if ! command -v mosquitto_pub >/dev/null 2>&1 || ! [ -x /usr/sbin/mosquitto ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends mosquitto-clients mosquitto >/dev/null
  # the Debian package may start a system broker on 1883; we only want the binary
  (systemctl disable --now mosquitto >/dev/null 2>&1 || service mosquitto stop >/dev/null 2>&1 || true)
fi

if ! [ -x .interop/venv-amqtt/bin/python ] || ! .interop/venv-amqtt/bin/python -c "import amqtt" >/dev/null 2>&1; then
  python3 -m venv .interop/venv-amqtt
  .interop/venv-amqtt/bin/pip install -q --disable-pip-version-check "amqtt==0.12.*" || \
    .interop/venv-amqtt/bin/pip install -q --disable-pip-version-check amqtt
fi

if ! [ -d .interop/node-mqtt/node_modules/mqtt ]; then
  mkdir -p .interop/node-mqtt
  cd .interop/node-mqtt
  [ -f package.json ] || echo '{"name":"rocketlite-mqtt-interop","private":true}' > package.json
  npm install --silent --no-audit --no-fund mqtt@5 >/dev/null
  cd "$REPO"
fi
echo "mqtt peers ready"
