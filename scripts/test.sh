#!/usr/bin/env bash
# The test command: installs the Debian packages the system tests drive (only the missing
# ones), then runs every test target. Extra arguments go to `cargo test`, e.g.
#   scripts/test.sh sandbox            # only tests whose name contains "sandbox"
#   scripts/test.sh -- --nocapture
# Runs as root: the tests start Apache as root (workers as www-data, as in production),
# create sites owned by arbitrary uids, and the mail tests need root for exim.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

require_root "the system tests run Apache, Exim and Dovecot as root and chown files to other users"
ensure_packages apache2 apache2-utils exim4-daemon-heavy dovecot-imapd dovecot-pop3d \
    pebble swaks curl openssl ca-certificates
ensure_cargo
# The tests start (and stop) their own private servers on loopback ports; nothing to start here.
exec cargo test --all-targets --locked "$@" 2>&1
