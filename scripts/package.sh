#!/usr/bin/env bash
# Builds the Debian package and checks it with lintian.
#
#   scripts/package.sh              amd64 (the build host's arch) .deb with dpkg-buildpackage,
#                                   then lintian (fails on any lintian error)
#   scripts/package.sh --cargo-deb  also the same package with cargo-deb (quick builds)
#   scripts/package.sh --cross      also arm64 and armhf (ARMv7) binaries with rustup targets
#                                   and Debian's cross gcc, smoke-tested under qemu-user, and
#                                   packaged with cargo-deb
#
# Output: $CARGO_TARGET_DIR/package/ (CARGO_TARGET_DIR defaults to ./target). The source is
# copied to $CARGO_TARGET_DIR/package/src/ first, so the build leaves nothing in the checkout
# and dpkg-buildpackage's ../ is ours. Installs the Debian packages it needs (only missing
# ones; that needs root). ARMv6 (Pi Zero/1) is not built here: see README.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

CROSS=false
CARGO_DEB=false
for arg in "$@"; do
    case "$arg" in
        --cross) CROSS=true ;;
        --cargo-deb) CARGO_DEB=true ;;
        -h | --help)
            sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done
$CROSS && CARGO_DEB=true

ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$CARGO_TARGET_DIR" in /*) ;; *) CARGO_TARGET_DIR=$ROOT/$CARGO_TARGET_DIR ;; esac
OUT=$CARGO_TARGET_DIR/package
CARGO_DEB_ROOT=${CARGO_DEB_ROOT:-/tmp/cargo-deb}

step() { printf '\n==> %s\n' "$*" >&2; }

ensure_packages debhelper dpkg-dev fakeroot build-essential lintian
ensure_cargo

# Debian's own cargo is too old for our crates; rustup's (or bookworm-security's cargo-web).
cargo_version=$(cargo --version | awk '{ print $2 }')
if ! printf '1.88.0\n%s\n' "${cargo_version%%-*}" | sort -V -C; then
    die "cargo $cargo_version is too old: dirhost needs 1.88 or newer (rustup, or bookworm-security's cargo-web)"
fi
# Build-Depends names bookworm-security's cargo-web/rustc-web; with any other cargo on PATH
# (rustup's), the build profile pkg.dirhost.rustup drops them.
PROFILE_ARGS=()
if [ "$(dpkg-query -W -f='${Status}' cargo-web 2>/dev/null)" != "install ok installed" ]; then
    PROFILE_ARGS=(--build-profiles=pkg.dirhost.rustup)
fi

VERSION=$(dpkg-parsechangelog -l debian/changelog -S Version)
SRC=$OUT/src/dirhost-$VERSION

step "copying the source to $SRC"
mkdir -p "$OUT/src"
rm -rf "$SRC"
mkdir -p "$SRC"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked and new files, as they are in the working tree (not ignored ones, not target/).
    git ls-files -z --cached --others --exclude-standard |
        tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$SRC"
else
    tar --exclude=./target --exclude=./.git -cf - . | tar -xf - -C "$SRC"
fi
rm -rf "$SRC/debian/generated"

step "dpkg-buildpackage -us -uc -b ${PROFILE_ARGS[*]} (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
rm -f "$OUT"/src/*.deb "$OUT"/src/*.changes "$OUT"/src/*.buildinfo
start=$(date +%s)
(cd "$SRC" && dpkg-buildpackage -us -uc -b "${PROFILE_ARGS[@]}")
echo "dpkg-buildpackage took $(($(date +%s) - start)) s" >&2
rm -f "$OUT"/*.deb "$OUT"/*.changes "$OUT"/*.buildinfo
mv "$OUT"/src/*.deb "$OUT"/src/*.changes "$OUT"/src/*.buildinfo "$OUT"/
ARCH=$(dpkg --print-architecture)
DEB=$OUT/dirhost_${VERSION}_${ARCH}.deb
[ -f "$DEB" ] || die "expected $DEB"

step "lintian (errors fail the build; warnings and notes are listed)"
lintian --fail-on error --display-info --tag-display-limit 0 "$OUT"/dirhost_"${VERSION}"_"${ARCH}".changes
echo "lintian: no errors" >&2

# cargo-deb reads the same debian/ files; completions and man pages must exist beforehand.
install_cargo_deb() {
    if [ -x "$CARGO_DEB_ROOT/bin/cargo-deb" ]; then
        return 0
    fi
    step "installing cargo-deb into $CARGO_DEB_ROOT"
    cargo install cargo-deb --locked --root "$CARGO_DEB_ROOT" --target-dir "$CARGO_DEB_ROOT/build"
}

generate_docs() { # BIN: completions, man pages and changelog.gz into $SRC/debian/generated
    local bin=$1 gen=$SRC/debian/generated
    mkdir -p "$gen/completions" "$gen/man"
    gzip -9n <"$SRC/debian/changelog" >"$gen/changelog.gz"
    "$bin" completions bash >"$gen/completions/dirhost"
    "$bin" completions zsh >"$gen/completions/_dirhost"
    "$bin" completions fish >"$gen/completions/dirhost.fish"
    "$bin" manpages --dir "$gen/man"
}

cargo_deb() { # [cargo-deb args...]
    (cd "$SRC" && "$CARGO_DEB_ROOT/bin/cargo-deb" --no-build --output "$OUT/cargo-deb/" "$@")
}

if $CARGO_DEB; then
    install_cargo_deb
    step "cargo deb ($ARCH)"
    generate_docs "$CARGO_TARGET_DIR/release/dirhost"
    cargo_deb
fi

# A tiny world for `dirhost apply --dry-run` under qemu: one site owned by uid 1000, every
# path inside DIR, every service command `true`.
write_sample() { # DIR BIN
    local dir=$1 bin=$2
    rm -rf "$dir"
    mkdir -p "$dir/srv/example.test/public/htdocs" "$dir/srv/example.test/config" \
        "$dir/state" "$dir/etc/apache2/sites-available" "$dir/etc/apache2/sites-enabled" \
        "$dir/etc/apache2/conf-available" "$dir/etc/apache2/conf-enabled" \
        "$dir/etc/exim4" "$dir/etc/dovecot" "$dir/etc/templates" "$dir/etc/php/pool.d"
    echo '<h1>example.test</h1>' >"$dir/srv/example.test/public/htdocs/index.html"
    touch "$dir/srv/example.test/config/mandatory-ssl"
    ln -s example.test "$dir/srv/www.example.test"
    chown -R 1000:1000 "$dir/srv/example.test"
    chown -h 1000:1000 "$dir/srv/www.example.test"
    cat >"$dir/dirhost.toml" <<EOF
[paths]
srv = "$dir/srv"
state = "$dir/state"
apache = "$dir/etc/apache2"
exim = "$dir/etc/exim4"
dovecot = "$dir/etc/dovecot"
templates = "$dir/etc/templates"
skel = "$dir/etc/skel"

[commands]
apache_test = ["true"]
apache_reload = ["true"]
exim_test = ["true"]
exim_reload = ["true"]
dovecot_test = ["true"]
dovecot_reload = ["true"]
php_test = ["true"]
php_reload = ["true"]
dirhost = "$bin"

[web]
hostname = "host.example.test"

[php]
enabled = false
pool_dir = "$dir/etc/php/pool.d"
EOF
}

if $CROSS; then
    require_root "the cross smoke test makes a sample site owned by uid 1000, on a tmpfs"
    # The samples live on a tmpfs: under qemu-user a 32-bit guest's readdir() receives the
    # host kernel's 64-bit ext4 directory offsets and fails with EOVERFLOW, which real ARM
    # hardware (native or compat syscalls) does not do. tmpfs offsets are small.
    SAMPLES=$OUT/qemu-samples
    mkdir -p "$SAMPLES"
    mountpoint -q "$SAMPLES" || mount -t tmpfs -o size=64m,mode=0755 tmpfs "$SAMPLES"
    trap 'umount "$SAMPLES" 2>/dev/null || true' EXIT
    # rust target : Debian arch : GNU triplet : qemu binary
    for spec in aarch64-unknown-linux-gnu:arm64:aarch64-linux-gnu:qemu-aarch64-static \
        armv7-unknown-linux-gnueabihf:armhf:arm-linux-gnueabihf:qemu-arm-static; do
        IFS=: read -r target debarch gnu qemu <<<"$spec"
        step "cross: $target ($debarch)"
        ensure_packages "gcc-$gnu" "libc6-dev-$debarch-cross" qemu-user-static
        rustup target list --installed | grep -qx "$target" || rustup target add "$target"
        var=$(echo "$target" | tr 'a-z-' 'A-Z_')
        export "CARGO_TARGET_${var}_LINKER=$gnu-gcc"
        start=$(date +%s)
        (cd "$SRC" && cargo build --release --locked --target "$target")
        echo "cargo build --target $target took $(($(date +%s) - start)) s" >&2
        bin=$CARGO_TARGET_DIR/$target/release/dirhost
        file "$bin" 2>/dev/null || true

        step "qemu smoke test: $qemu -L /usr/$gnu dirhost"
        run=("$qemu" -L "/usr/$gnu" "$bin")
        "${run[@]}" --version
        sample=$SAMPLES/$debarch
        write_sample "$sample" "$bin"
        "${run[@]}" --config "$sample/dirhost.toml" apply --dry-run
        "${run[@]}" --config "$sample/dirhost.toml" web list --json
        # Apply for real (tests and reloads are `true`) and check the rendered vhost.
        "${run[@]}" --config "$sample/dirhost.toml" apply
        vhost=$sample/etc/apache2/sites-available/example.test.conf
        sed -n '1,/^<\/VirtualHost>/p' "$vhost"
        grep -q 'ServerName example.test' "$vhost"
        grep -q 'ServerAlias www.example.test' "$vhost"
        grep -q 'RewriteRule .*https://' "$vhost" # config/mandatory-ssl: redirect to HTTPS
        echo "qemu $debarch: --version, apply --dry-run, web list and apply work" >&2

        step "cargo deb --target $target"
        cargo_deb --target "$target"
        deb=$(ls -t "$OUT"/cargo-deb/dirhost_*_"$debarch".deb | head -n 1)
        dpkg-deb -f "$deb" Package Version Architecture Depends
        [ "$(dpkg-deb -f "$deb" Architecture)" = "$debarch" ] || die "$deb: wrong Architecture"
        lintian --display-info --tag-display-limit 0 "$deb" || true
    done
fi

if $CROSS; then
    umount "$SAMPLES"
    trap - EXIT
fi

step "done"
ls -l "$OUT"/*.deb "$OUT"/cargo-deb/*.deb 2>/dev/null || true
