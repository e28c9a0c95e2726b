#!/usr/bin/env bash
# Bounded fuzzing (issue 9): every cargo-fuzz target in fuzz/ for FUZZ_SECONDS seconds each
# (default 20), starting from the committed seed corpus. Called by .ci/run after the tests.
#
# The machine has one stable toolchain and no nightly can be fetched. cargo-fuzz passes
# -Zsanitizer=address (and the stable -Cpasses=sancov-module/-Cllvm-args coverage flags), which
# stable rustc (1.95 here) accepts with RUSTC_BOOTSTRAP=1: `cargo fuzz build -O` and
# `cargo fuzz run` then work as on nightly (tested: ~64,000 runs/s on the flag target). The
# first build compiles every dependency with ASan into fuzz/target (about 15 min on the 2-core
# build machine; later runs reuse it). FUZZ_SANITIZER=none skips ASan. New inputs go to a temporary corpus directory;
# fuzz/corpus/<target>/ (the committed seeds) is only read. A crash or a failed property
# exits non-zero and leaves the input in fuzz/artifacts/<target>/.
#
# Usage: scripts/fuzz.sh [TARGET...]      (default: all; `cargo fuzz list` names them)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SECONDS_EACH=${FUZZ_SECONDS:-20}
SANITIZER=${FUZZ_SANITIZER:-address}
CARGO_FUZZ_VERSION=0.13.2

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io" >&2
    cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

export RUSTC_BOOTSTRAP=1
cd fuzz
if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

start=$(date +%s)
cargo fuzz build --release --sanitizer "$SANITIZER"
echo "fuzz: built ${#targets[@]} targets in $(($(date +%s) - start)) s" >&2

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/$t"
    echo "fuzz: $t for ${SECONDS_EACH}s" >&2
    if ! cargo fuzz run --release --sanitizer "$SANITIZER" "$t" "$work/$t" "corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -max_len=8192 -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 2>"$work/$t.log"; then
        tail -n 40 "$work/$t.log" >&2
        failed+=("$t")
    else
        grep -E '^stat::(number_of_executed_units|new_units_added)' "$work/$t.log" |
            sed "s/^/fuzz: $t /" >&2 || true
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, ${SECONDS_EACH}s each, no crash" >&2
