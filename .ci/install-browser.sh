#!/usr/bin/env bash
# Headless browser for the web-console test (tests/browser/): Debian's chromium, driven by
# Playwright for Python using that executable (we never run `playwright install`). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [ -x /usr/bin/chromium ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
PY=${PYTHON:-python3}
if ! "$PY" -c "import playwright" >/dev/null 2>&1; then
  "$PY" -m pip install -q --disable-pip-version-check "playwright>=1.40"
fi
