#!/usr/bin/env bash
# Times the same loop through Rust (polycache::Cache) and through the C API, in release
# builds, and prints ns per call and the C/Rust ratio. C get_into is compared with Rust get.
# Usage: bash bench/c/run.sh [N]   (default 5,000,000 calls per op)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-target}
n=${1:-5000000}

cargo build -p polycache-ffi --release --lib --example bench_get
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cc -std=c11 -O2 -Wall -Wextra -Werror -pedantic -Iinclude bench/c/bench_get.c \
    "$target_dir/release/libpolycache.a" -lpthread -ldl -lm -o "$build/bench_get"

# Alternate the two programs and keep each op's best, so that load from other processes on
# the machine weighs on both sides alike.
rust="" c=""
for _ in 1 2 3; do
    rust+=$("$target_dir/release/examples/bench_get" "$n")$'\n'
    c+=$("$build/bench_get" "$n")$'\n'
done

echo "N=$n calls per op, best of 3 runs x 3 rounds; C get_into is compared with Rust get"
awk -v rust="$rust" -v c="$c" '
function best(text, into,    lines, f, i) {
    split(text, lines, "\n")
    for (i in lines) {
        if (split(lines[i], f, " ") == 2 && (!(f[1] in into) || f[2] + 0 < into[f[1]] + 0)) into[f[1]] = f[2]
    }
}
BEGIN {
    best(rust, r); best(c, cn)
    printf "%-10s %8s %8s %7s\n", "op", "rust_ns", "c_ns", "c/rust"
    n = split("get get_into set", ops, " ")
    for (i = 1; i <= n; i++) {
        op = ops[i]; base = (op == "get_into") ? r["get"] : r[op]
        printf "%-10s %8.1f %8.1f %6.2fx\n", op, base, cn[op], cn[op] / base
    }
}'
