#!/usr/bin/env bash
# Installs the tools some integration tests drive, from Debian's packages and the npm
# registry: Chromium and a Japanese font (the console's browser walk, tests/it/console.rs,
# through playwright-core pinned by tests/console/package-lock.json, which downloads no
# browser) and promtool (the alert rules' unit tests, tests/it/deploy.rs); and, from
# crates.io, mdbook (the book in docs/, built by tests/it/docs.rs).
# Idempotent: .ci/run calls it, and the tests call it when a tool is missing.
set -euo pipefail
cd "$(dirname "$0")"
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
updated=""
install() { # [--no-install-recommends] package...
  [ -n "$updated" ] || { $sudo apt-get update -qq; updated=1; }
  echo "installing $* from Debian's packages"
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}
browser=()
command -v chromium >/dev/null 2>&1 || browser+=(chromium)
[ -d /usr/share/fonts/opentype/ipafont-gothic ] || browser+=(fonts-ipafont-gothic)
[ ${#browser[@]} -eq 0 ] || install "${browser[@]}"
# The prometheus package for its promtool only: its service is not started here.
command -v promtool >/dev/null 2>&1 || install --no-install-recommends prometheus
if [ ! -f console/node_modules/playwright-core/package.json ]; then
  echo "installing playwright-core"
  (cd console && npm ci --no-audit --no-fund --loglevel=error)
fi
# mdbook, pinned, without its default features (serve, watch and search: `mdbook build`
# needs none of them); cargo install puts it in cargo's bin directory.
mdbook_version=0.5.4
mdbook="${CARGO_HOME:-$HOME/.cargo}/bin/mdbook"
[ -x "$mdbook" ] || mdbook=mdbook
if [ "$("$mdbook" --version 2>/dev/null)" != "mdbook v$mdbook_version" ]; then
  echo "installing mdbook $mdbook_version with cargo install (a few minutes)"
  "${CARGO:-cargo}" install mdbook --locked --version "$mdbook_version" --no-default-features --quiet
fi
