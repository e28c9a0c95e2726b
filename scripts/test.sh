#!/usr/bin/env bash
# The test command: installs the Debian packages the system tests drive (only the missing
# ones), then runs every test target. Extra arguments go to `cargo test`, e.g.
#   scripts/test.sh sandbox            # only tests whose name contains "sandbox"
#   scripts/test.sh -- --nocapture
# Runs as root: the tests start Apache as root (workers as www-data, as in production),
# create sites owned by arbitrary uids, and the mail tests need root for exim. PHP tests run
# a private php-fpm master (php-fpm is Debian's metapackage for the default version; pkill
# from procps signals it by its pid file). The system's php-fpm service is never used.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

require_root "the system tests run Apache, Exim and Dovecot as root and chown files to other users"
ensure_packages apache2 apache2-utils exim4-daemon-heavy dovecot-imapd dovecot-pop3d \
    pebble swaks curl openssl ca-certificates \
    libnet-ssleay-perl libio-socket-ssl-perl python3-dkim \
    php-fpm procps \
    bind9-utils python3-venv \
    chromium chromium-driver goaccess
# Webmail (tests/webmail.rs): Debian's Roundcube with SQLite, driven by headless Chromium.
ensure_packages roundcube-core roundcube-sqlite3
ensure_octodns
ensure_cargo
# The tests start (and stop) their own private servers on loopback ports; nothing to start here.
# They must leave the machine as they found it: fingerprint the system configuration dirs that
# dirhost writes in production, before and after, and fail the run if anything changed (the
# one sanctioned exception, /etc/exim4/trusted_configs, must be restored by the tests too).
before=$(system_fingerprint)
status=0
# --no-fail-fast: one failing target must not hide the others' results.
cargo test --all-targets --locked --no-fail-fast "$@" 2>&1 || status=$?
after=$(system_fingerprint)
if [ "$before" != "$after" ]; then
    echo "scripts/test.sh: the tests changed files outside their temp roots:" >&2
    diff <(echo "$before") <(echo "$after") >&2 || true
    exit 1
fi
exit "$status"
