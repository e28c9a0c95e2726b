# Helpers shared by scripts/test.sh and scripts/demo.sh. Source it; do not run it.
# shellcheck shell=bash

die() {
    echo "${0##*/}: $*" >&2
    exit 1
}

# require_root WHY: exit 1 with a clear message unless running as root.
require_root() {
    [ "$(id -u)" -eq 0 ] || die "must be run as root: $1. Try: sudo $0"
}

# ensure_packages PKG...: install the Debian packages among PKG that are not installed yet.
# When all are present it does nothing, needs no network and no root, so it is cheap to
# run every time. apt-get update runs only when something has to be installed.
ensure_packages() {
    local pkg missing=()
    for pkg in "$@"; do
        if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]; then
            missing+=("$pkg")
        fi
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 ||
        die "missing packages (${missing[*]}) and no apt-get: this needs Debian or Ubuntu"
    [ "$(id -u)" -eq 0 ] || die "missing packages (${missing[*]}); installing them needs root"
    echo "Installing missing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q "${missing[@]}"
}

# ensure_cargo: make sure cargo is on PATH (root's PATH under sudo often lacks rustup's).
ensure_cargo() {
    command -v cargo >/dev/null 2>&1 && return 0
    if [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
        PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
        export PATH
        return 0
    fi
    die "cargo not found: install Rust with rustup (https://rustup.rs), then re-run"
}

# ensure_octodns: OctoDNS (pinned) in a venv under ~/.cache, for tests/dns.rs, which runs
# its octodns-validate on the exported zones. Installs only when missing (needs PyPI then)
# and exports DIRHOST_OCTODNS_VALIDATE, so the test uses it and fails rather than skip.
OCTODNS_VERSION=1.22.0
ensure_octodns() {
    local venv="${XDG_CACHE_HOME:-$HOME/.cache}/dirhost-test/octodns-$OCTODNS_VERSION"
    if [ ! -x "$venv/bin/octodns-validate" ]; then
        echo "Installing octodns $OCTODNS_VERSION into $venv" >&2
        rm -rf "$venv"
        /usr/bin/python3 -m venv "$venv" || die "python3 -m venv failed (is python3-venv installed?)"
        "$venv/bin/pip" install -q --disable-pip-version-check "octodns==$OCTODNS_VERSION" ||
            die "pip install octodns==$OCTODNS_VERSION failed"
    fi
    export DIRHOST_OCTODNS_VALIDATE="$venv/bin/octodns-validate"
}

# system_fingerprint: path, type, mode, owner and content hash of every entry under the
# system directories dirhost manages in production (and /srv), sorted. Timestamps are left
# out: a directory's mtime changes when a file is created and removed again.
system_fingerprint() {
    local d
    for d in /etc/apache2 /etc/exim4 /etc/dovecot /etc/php /etc/dirhost /srv /var/lib/dirhost; do
        [ -e "$d" ] || { echo "absent $d"; continue; }
        find "$d" -printf '%p %y %m %U:%G %l\n' 2>/dev/null
        find "$d" -type f -exec md5sum {} + 2>/dev/null
    done | LC_ALL=C sort
}
