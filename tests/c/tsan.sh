#!/usr/bin/env bash
# Runs tests/c/test_threads.c (8 threads x N mixed operations on one shared handle) and
# tests/c/test_queue.c (non-blocking calls: threads starting operations on one queue, an
# epoll loop against Redis and Memcached started by testkit's `with-servers`) under
# ThreadSanitizer. Usage: bash tests/c/tsan.sh [N]   (`make tsan` passes 1000000)
#
# What it checks: the C side is instrumented (gcc -fsanitize=thread) and links libpolycache.so,
# which is not (stable Rust cannot build an instrumented std). TSan therefore sees every
# access the C program makes -- the bytes of the values polycache hands out, the buffers it
# fills, the handle shared by the 8 threads -- and reports a race among them. It cannot see
# polycache's own synchronisation (Rust's futex-based locks and atomics), so the one
# suppression, `called_from_lib:libpolycache.so` (tests/c/tsan.supp), tells it not to check
# the memory calls made inside the library (its memcpy, malloc, realloc, free): unchecked,
# those are reported as races with each other although a Rust lock orders them. Races
# inside the Rust code are ruled out by Rust's type system (the handle is `Sync`), not here.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
profile=${POLYCACHE_PROFILE:-debug}
n=${1:-20000}

if [[ "$profile" == release ]]; then
    cargo build --release -p polycache-ffi --lib
else
    cargo build -p polycache-ffi --lib
fi
cargo build -p polycache-testkit --bin with-servers
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
# The program loads the library by its soname (ffi/build.rs), as an installed copy is named.
so="$CARGO_TARGET_DIR/$profile/libpolycache.so"
soname=$(readelf -d "$so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
ln -s "$so" "$build/${soname:-libpolycache.so}"
for t in test_threads test_queue; do
    cc -std=c11 -Wall -Wextra -Werror -pedantic -g -O1 -fsanitize=thread -Iinclude -Itests/c \
        "tests/c/$t.c" -L"$CARGO_TARGET_DIR/$profile" -lpolycache -Wl,-rpath,"$build" -lpthread \
        -o "$build/$t.tsan"
done
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 suppressions=$root/tests/c/tsan.supp"
"$build/test_threads.tsan" "$n"
"$CARGO_TARGET_DIR/debug/with-servers" "$build/test_queue.tsan"
