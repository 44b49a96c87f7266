#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for FUZZ_SECONDS each (default 60), or only the targets
# named as arguments. Installs the pinned cargo-fuzz into target/tools on first use (a few
# minutes, once); it runs on the stable toolchain with RUSTC_BOOTSTRAP=1 (for -Zsanitizer).
# New inputs go to target/fuzz/corpus/<target> (seeded from fuzz/corpus/<target>, which
# stays small); crashes go to target/fuzz/artifacts/<target>/ and fail the run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
TOOLS="$TARGET_DIR/tools"
CARGO_FUZZ_VERSION=0.13.2
SECONDS_EACH="${FUZZ_SECONDS:-60}"

if ! "$TOOLS/bin/cargo-fuzz" --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS (once)"
    CARGO_TARGET_DIR="$TOOLS/build" cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" \
        --locked --root "$TOOLS" </dev/null
fi
export PATH="$TOOLS/bin:$PATH"
export RUSTC_BOOTSTRAP=1

cd "$ROOT"
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
WORK="$TARGET_DIR/fuzz"
cargo fuzz build --fuzz-dir fuzz --target-dir "$WORK/build" </dev/null

# The file and URL targets write in polycache-fuzz-* sandboxes under TMPDIR.
SANDBOX_TMP="$(mktemp -d)"
trap 'rm -rf "$SANDBOX_TMP"' EXIT
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$WORK/corpus/$t" "$WORK/artifacts/$t"
    echo "fuzz: $t for ${SECONDS_EACH}s"
    if ! TMPDIR="$SANDBOX_TMP" cargo fuzz run --fuzz-dir fuzz --target-dir "$WORK/build" "$t" \
        "$WORK/corpus/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_EACH" -artifact_prefix="$WORK/artifacts/$t/" \
        -print_final_stats=1 </dev/null >"$WORK/$t.log" 2>&1; then
        failed+=("$t")
        tail -40 "$WORK/$t.log"
    fi
    grep -E "^stat::(number_of_executed_units|new_units_added)" "$WORK/$t.log" | tr '\n' ' '
    echo
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (reproducers in $WORK/artifacts/)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${SECONDS_EACH}s each without a failure"
