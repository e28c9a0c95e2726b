#!/usr/bin/env bash
# The install test: the .deb installed into a clean Debian bookworm made by debootstrap, as an
# admin would use it. Slow (a few minutes, mostly apt), so it is not part of scripts/test.sh.
#
#   scripts/install-test.sh [DEB]   default: the newest $CARGO_TARGET_DIR/package/*_amd64.deb
#                                   (run scripts/package.sh first)
#
# In a chroot under /tmp (no services start: policy-rc.d says no), it checks: apt installs the
# package with its dependencies; dirhost --version; the unit (enabled, Type=notify), the
# conffile, completions and man pages; Apache modules; an admin's dovecot local.conf is backed
# up and kept; an edited conffile survives reinstalling; `dirhost apply --dry-run` and then a
# real `dirhost apply` (Apache's real config test) on a sample /srv, the latter under the
# unit's read-only file system layout; remove keeps sites and state, and Apache's config stays
# valid; purge removes dirhost's generated files and state and leaves /srv exactly as it was.
#
# Environment: DIRHOST_MIRROR (default: the host's bookworm mirror from apt),
# DIRHOST_KEEP_CHROOT=1 (keep it for inspection; nothing stays mounted either way),
# DIRHOST_DEBOOTSTRAP_CACHE (default /var/cache/dirhost-debootstrap: downloaded .debs are reused).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

require_root "debootstrap and chroot need root"
ensure_packages debootstrap

DEB=${1:-}
if [ -z "$DEB" ]; then
    DEB=$(ls -t "${CARGO_TARGET_DIR:-target}"/package/dirhost_*_"$(dpkg --print-architecture)".deb 2>/dev/null | head -n 1 || true)
    [ -n "$DEB" ] || die "no .deb found: run scripts/package.sh first, or pass the .deb"
fi
[ -f "$DEB" ] || die "$DEB: no such file"
DEB=$(readlink -f "$DEB")

apt_uri() { # SUITE: the host's mirror for it, from apt's own view of its sources
    apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(IDENTIFIER)' 2>/dev/null |
        awk -v s="$1" '$2 == s && $3 == "Packages" { print $1; exit }'
}
MIRROR=${DIRHOST_MIRROR:-$(apt_uri bookworm)}
MIRROR=${MIRROR:-http://deb.debian.org/debian/}
SECURITY=$(apt_uri bookworm-security)
CACHE=${DIRHOST_DEBOOTSTRAP_CACHE:-/var/cache/dirhost-debootstrap}

START=$(date +%s)
C=$(mktemp -d /tmp/dirhost-install-test.XXXXXX)
chmod 0755 "$C" # a root file system: apt's _apt user must be able to enter it
PASSED=0

# Unmounts everything under the chroot (deepest first), then deletes it. It never deletes
# while anything is still mounted there.
cleanup() {
    local m
    for m in $(awk -v c="$C" '$2 == c || index($2, c "/") == 1 { print $2 }' /proc/mounts | sort -r); do
        umount "$m" 2>/dev/null || umount -l "$m" || true
    done
    if awk -v c="$C" '$2 == c || index($2, c "/") == 1 { found = 1 } END { exit !found }' /proc/mounts; then
        echo "install-test: something is still mounted under $C; not deleting it" >&2
        return
    fi
    if [ "${DIRHOST_KEEP_CHROOT:-}" = 1 ]; then
        echo "install-test: kept $C" >&2
    else
        rm -rf --one-file-system "$C"
    fi
}
trap cleanup EXIT

step() { printf '\n==> [%3ds] %s\n' "$(($(date +%s) - START))" "$*" >&2; }
ok() {
    PASSED=$((PASSED + 1))
    echo "ok: $*" >&2
}
fail() { die "FAILED: $*"; }
in_chroot() { chroot "$C" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }
# Every entry under /srv with owner, mode, size, mtime and (for files) a content hash.
srv_snapshot() {
    in_chroot sh -c 'find /srv -printf "%p %U:%G %m %s %T@ %l\n" | sort
        find /srv -type f -exec md5sum {} + | sort'
}
check() { # DESCRIPTION COMMAND...: COMMAND runs inside the chroot and must succeed
    local what=$1
    shift
    in_chroot sh -c "$*" >/dev/null 2>&1 || fail "$what  (check: $*)"
    ok "$what"
}

step "debootstrap bookworm (minbase) from $MIRROR into $C"
mkdir -p "$CACHE"
debootstrap --variant=minbase --cache-dir="$CACHE" bookworm "$C" "$MIRROR" >"$C.debootstrap.log" 2>&1 ||
    { tail -n 30 "$C.debootstrap.log" >&2; rm -f "$C.debootstrap.log"; fail "debootstrap"; }
rm -f "$C.debootstrap.log"
mount -t proc proc "$C/proc"
# No daemon may start inside the chroot.
printf '#!/bin/sh\nexit 101\n' >"$C/usr/sbin/policy-rc.d"
chmod 0755 "$C/usr/sbin/policy-rc.d"
{
    echo "deb $MIRROR bookworm main"
    [ -n "$SECURITY" ] && echo "deb $SECURITY bookworm-security main"
} >"$C/etc/apt/sources.list"
# Like a fresh server's hostname; dirhost's default vhost uses it.
echo "host.example.test" >"$C/etc/hostname"

step "an admin's own Dovecot setting, before dirhost arrives"
mkdir -p "$C/etc/dovecot"
printf '# my own dovecot setting\nmail_max_userip_connections = 20\n' >"$C/etc/dovecot/local.conf"

step "apt-get install $(basename "$DEB") (with its dependencies and recommends)"
cp "$DEB" "$C/tmp/"
in_chroot apt-get update -q >/dev/null
in_chroot apt-get install -y -q "/tmp/$(basename "$DEB")" >"$C/tmp/install.log" 2>&1 ||
    { grep -v '^\(Get\|Selecting\|Preparing\|Unpacking\|(Reading\)' "$C/tmp/install.log" | tail -n 80 >&2; fail "apt-get install"; }
grep '^dirhost:' "$C/tmp/install.log" >&2 || true
ok "installed with: $(in_chroot dpkg-query -W -f='${Depends}' dirhost)"

step "what the package installed"
version=$(in_chroot dirhost --version)
echo "$version" >&2
[ "$version" = "dirhost $(dpkg-deb -f "$DEB" Version)" ] || fail "dirhost --version says '$version'"
ok "dirhost --version"
unit=$(in_chroot sh -c 'ls /lib/systemd/system/dirhost.service /usr/lib/systemd/system/dirhost.service 2>/dev/null | head -n 1')
[ -n "$unit" ] || fail "no dirhost.service installed"
check "unit $unit is Type=notify with a watchdog" "grep -qx Type=notify $unit && grep -q '^WatchdogSec=' $unit"
check "unit enabled (multi-user.target.wants)" "test -L /etc/systemd/system/multi-user.target.wants/dirhost.service"
check "/etc/dirhost/dirhost.toml is a conffile" "dpkg-query -W -f='\${Conffiles}' dirhost | grep -q ' /etc/dirhost/dirhost.toml '"
check "bash completion" "grep -q dirhost /usr/share/bash-completion/completions/dirhost"
check "zsh completion" "grep -q '#compdef dirhost' /usr/share/zsh/vendor-completions/_dirhost"
check "fish completion" "grep -q 'complete -c dirhost' /usr/share/fish/vendor_completions.d/dirhost.fish"
check "man page dirhost(1)" "zcat /usr/share/man/man1/dirhost.1.gz | grep -q '^.TH dirhost 1'"
check "man page dirhost-apply(1)" "test -f /usr/share/man/man1/dirhost-apply.1.gz"
check "/srv and /var/lib/dirhost exist" "test -d /srv && test -d /var/lib/dirhost"
for mod in rewrite headers alias ssl cgid remoteip proxy_fcgi; do
    check "Apache module $mod enabled" "a2query -q -m $mod"
done
check "Debian's untouched 000-default site disabled" "! test -e /etc/apache2/sites-enabled/000-default.conf"
check "the admin's dovecot local.conf kept, with a copy" \
    "grep -q 'my own dovecot setting' /etc/dovecot/local.conf && cmp -s /etc/dovecot/local.conf /etc/dovecot/local.conf.pre-dirhost"
check "PHP-FPM (a Recommends) installed too" "ls /usr/sbin/php-fpm*"

step "an admin edits the conffile; reinstalling keeps the edit"
# Services cannot be reloaded in a chroot without systemd: reloads become `true`. The config
# tests stay real (apache2ctl configtest, exim4 -bV, doveconf, php-fpm -t).
cat >>"$C/etc/dirhost/dirhost.toml" <<'EOF'

# install-test: no running services in this chroot
[commands]
apache_reload = ["true"]
exim_reload = ["true"]
dovecot_reload = ["true"]
php_reload = ["true"]
EOF
# The admin also switches an Apache module off; the upgrade must not switch it back on.
in_chroot a2dismod -q -f cgid >/dev/null
in_chroot dpkg -i "/tmp/$(basename "$DEB")" >"$C/tmp/reinstall.log" 2>&1 ||
    { cat "$C/tmp/reinstall.log" >&2; fail "reinstall"; }
check "edited conffile survived reinstalling" "grep -q 'install-test: no running services' /etc/dirhost/dirhost.toml"
check "module the admin disabled stayed off" "a2query -q -m cgid; test \$? -eq 32"
in_chroot a2enmod -q cgid >/dev/null
php_fpm=$(in_chroot sh -c 'dpkg-query -W -f="\${Package}\n" "php*-fpm" | grep -x "php[0-9][0-9.]*-fpm" | head -n 1')
in_chroot apt-get install --reinstall -y -q "$php_fpm" >"$C/tmp/php.log" 2>&1 || { cat "$C/tmp/php.log" >&2; fail "reinstall $php_fpm"; }
grep -q '^Processing triggers for dirhost' "$C/tmp/php.log" || fail "installing $php_fpm did not trigger dirhost"
ok "installing $php_fpm triggers dirhost (which try-restarts the daemon)"

step "a sample /srv: example.test (alice, uid 1000) with an alias and a mailbox"
in_chroot useradd -m -u 1000 -s /bin/bash alice
in_chroot sh -c '
    set -e
    mkdir -p /srv/example.test/public/htdocs /srv/example.test/config /srv/example.test/mailboxes/bob
    echo "<h1>example.test</h1>" > /srv/example.test/public/htdocs/index.html
    echo "secret-password" > /srv/example.test/mailboxes/bob/password
    ln -s example.test /srv/example.org
    chown -R alice:alice /srv/example.test
    chown -h alice:alice /srv/example.org
'

step "dirhost apply --dry-run"
in_chroot dirhost apply --dry-run | tee "$C/tmp/dry-run.txt" >&2
grep -q 'would write /etc/apache2/sites-available/example.test.conf' "$C/tmp/dry-run.txt" ||
    fail "dry run does not plan example.test's vhost"
check "dry run changed nothing" "! test -e /etc/apache2/sites-available/example.test.conf"
ok "dirhost apply --dry-run"

step "dirhost apply, under the unit's sandbox (read-only except ReadWritePaths, no new privileges)"
# What dirhost.service sets up, rebuilt from the installed unit: a private mount namespace
# (gone when the command exits, so nothing stays mounted) with the chroot read-only and its
# ReadWritePaths writable (ProtectSystem=strict), empty /home and /root (ProtectHome=yes), a
# private /tmp (PrivateTmp=yes); then NoNewPrivileges=yes and the CapabilityBoundingSet. The
# config tests that dirhost runs (apache2ctl configtest, exim4 -bV, doveconf, php-fpm -t) run
# inside it, as they would under systemd.
rw_paths=$(sed -n 's/^ReadWritePaths=//p' "$C$unit" | tr ' ' '\n' | sed 's/^-//')
drop_caps=$(sed -n 's/^CapabilityBoundingSet=~//p' "$C$unit" | tr 'A-Z' 'a-z' |
    sed 's/cap_/-/g; s/ /,/g')
grep -qx 'NoNewPrivileges=yes' "$C$unit" || fail "the unit no longer sets NoNewPrivileges=yes; update this test"
# shellcheck disable=SC2016,SC2086 # $1… expand in the inner shell; rw_paths is a word list
unshare --mount --propagation private sh -ec '
    C=$1 drop=$2; shift 2
    mount --bind "$C" "$C"
    mount -o remount,bind,ro "$C"
    for p in "$@"; do
        [ -d "$C$p" ] || continue
        mount --bind "$C$p" "$C$p"
        mount -o remount,bind,rw "$C$p"
    done
    mount -t tmpfs -o mode=0755 tmpfs "$C/tmp"
    mount -t tmpfs -o ro,mode=0000 tmpfs "$C/home"
    mount -t tmpfs -o ro,mode=0000 tmpfs "$C/root"
    mount -t proc proc "$C/proc"
    exec setpriv --no-new-privs ${drop:+--bounding-set "$drop"} \
        chroot "$C" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 \
        /usr/bin/dirhost apply
' sh "$C" "$drop_caps" $rw_paths | tee "$C/tmp/apply.txt" >&2 || fail "dirhost apply (see above)"
check "vhost written" "grep -q 'ServerName example.test' /etc/apache2/sites-available/example.test.conf"
check "vhost enabled" "test -L /etc/apache2/sites-enabled/example.test.conf"
check "alias served by the same vhost" "grep -q 'ServerAlias example.org' /etc/apache2/sites-available/example.test.conf"
check "shared conf enabled" "test -L /etc/apache2/conf-enabled/dirhost.conf"
check "Apache accepts the whole configuration" "apache2ctl configtest"
check "Exim configuration written" "head -n 3 /etc/exim4/exim4.conf | grep -q dirhost"
check "the admin's hand-written dovecot local.conf left alone" "grep -q 'my own dovecot setting' /etc/dovecot/local.conf"
grep -q '^kept /etc/dovecot/local.conf' "$C/tmp/apply.txt" || fail "apply did not report keeping local.conf"
ok "apply reported the kept local.conf"

step "apt-get remove: sites, state and configs stay; Apache's config stays valid"
in_chroot apt-get remove -y -q dirhost >"$C/tmp/remove.log" 2>&1 || { cat "$C/tmp/remove.log" >&2; fail "remove"; }
check "binary gone" "! test -e /usr/bin/dirhost"
check "shared conf (pipes logs to dirhost) disabled" "! test -e /etc/apache2/conf-enabled/dirhost.conf"
check "vhost still enabled" "test -L /etc/apache2/sites-enabled/example.test.conf"
check "state kept" "test -d /var/lib/dirhost"
check "000-default back" "test -L /etc/apache2/sites-enabled/000-default.conf"
check "Apache config valid after remove" "apache2ctl configtest"

step "apt-get purge: dirhost's files go, /srv stays exactly as it was"
srv_before=$(srv_snapshot)
in_chroot apt-get purge -y -q dirhost >"$C/tmp/purge.log" 2>&1 || { cat "$C/tmp/purge.log" >&2; fail "purge"; }
grep '^dirhost:' "$C/tmp/purge.log" >&2 || true
[ "$srv_before" = "$(srv_snapshot)" ] || fail "purge changed /srv"
ok "/srv identical before and after purge ($(echo "$srv_before" | wc -l) entries: names, owners, modes, sizes, mtimes, content)"
check "/srv/example.test content intact" "grep -q '<h1>example.test</h1>' /srv/example.test/public/htdocs/index.html && test -L /srv/example.org && test -f /srv/example.test/mailboxes/bob/password"
check "state removed" "! test -e /var/lib/dirhost"
check "conffile removed" "! test -e /etc/dirhost/dirhost.toml"
check "generated vhost removed" "! test -e /etc/apache2/sites-available/example.test.conf && ! test -L /etc/apache2/sites-enabled/example.test.conf"
check "generated shared conf removed" "! test -e /etc/apache2/conf-available/dirhost.conf"
check "generated exim4.conf removed" "! test -e /etc/exim4/exim4.conf"
check "the admin's local.conf still there" "grep -q 'my own dovecot setting' /etc/dovecot/local.conf"
check "Apache config valid after purge" "apache2ctl configtest"
check "unit gone and disabled" "! test -e $unit && ! test -e /etc/systemd/system/multi-user.target.wants/dirhost.service"

step "PASSED: $PASSED checks in $(($(date +%s) - START)) s"
