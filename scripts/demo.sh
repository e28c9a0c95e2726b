#!/usr/bin/env bash
# The demo: a private Apache on a loopback port serving a sample /srv tree that dirhost
# manages live. Installs apache2 if it is missing, builds dirhost, then runs
# `dirhost demo` with any extra arguments (pebble: HTTPS from a local ACME CA), e.g.
#   scripts/demo.sh --dir /tmp/dirhost-demo
# Nothing outside the demo dir is touched (the system Apache is neither used nor changed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ensure_packages apache2 pebble curl
ensure_cargo
cargo build --release --locked
exec target/release/dirhost demo "$@"
