#!/usr/bin/env bash
# Installs what the console's browser test (tests/it/console.rs) drives: Debian's
# Chromium, and playwright-core pinned by package-lock.json (it downloads no browser).
# Idempotent: .ci/run calls it, and the test calls it when either is missing.
set -euo pipefail
cd "$(dirname "$0")"
# A Japanese font too, so that kintone's field names show in the screenshots.
if ! command -v chromium >/dev/null 2>&1 || [ ! -d /usr/share/fonts/opentype/ipafont-gothic ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing Debian's chromium and fonts-ipafont-gothic"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium fonts-ipafont-gothic >/dev/null
fi
if [ ! -f node_modules/playwright-core/package.json ]; then
  echo "installing playwright-core"
  npm ci --no-audit --no-fund --loglevel=error
fi
