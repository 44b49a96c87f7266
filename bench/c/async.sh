#!/usr/bin/env bash
# Non-blocking get throughput with 256 operations in flight (one thread, an epoll loop over a
# polycache_queue) against blocking gets from 8 threads, on redis:// (a server started on a
# free loopback port by testkit's with-servers); release build. Prints calls/s and the ratio.
# Usage: bash bench/c/async.sh [N]   (default 200,000 gets per round)
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-target}
n=${1:-200000}

cargo build -p polycache-ffi --release --lib
cargo build -p polycache-testkit --bin with-servers
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cc -std=c11 -O2 -Wall -Wextra -Werror -pedantic -Iinclude bench/c/bench_async.c \
    "$target_dir/release/libpolycache.a" -lpthread -ldl -lm -o "$build/bench_async"
# shellcheck disable=SC2016 # expanded by the inner shell, where with-servers set it
"$target_dir/debug/with-servers" sh -c '"$0" "$POLYCACHE_TEST_REDIS_URL" "$1"' "$build/bench_async" "$n"
