#!/usr/bin/env bash
# Builds libpolycache (debug), compiles the C tests and the C quick start against it with
# warnings as errors, checks that polycache.h compiles as C++ and that the shared library
# exports every function the header declares, then runs the programs under valgrind.
#
# The programs link the static library (target/debug/libpolycache.a): the binary then holds
# exactly the code just built, needs no rpath or LD_LIBRARY_PATH, and valgrind sees one
# self-contained executable. The .so is checked separately (its exported symbols).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-target}
lib_dir="$target_dir/debug"

step() { printf '== %s\n' "$*"; }

step "cargo build -p polycache-ffi"
cargo build -p polycache-ffi

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT

cflags=(-std=c11 -Wall -Wextra -Werror -pedantic -g -Iinclude)
libs=("$lib_dir/libpolycache.a" -lpthread -ldl -lm)

step "cc tests/c/test_cache.c"
cc "${cflags[@]}" tests/c/test_cache.c "${libs[@]}" -o "$build/test_cache"
step "cc examples/c/quickstart.c"
cc "${cflags[@]}" examples/c/quickstart.c "${libs[@]}" -o "$build/quickstart"
step "c++ -fsyntax-only tests/c/include_twice.cpp"
c++ -std=c++11 -Wall -Wextra -Werror -pedantic -fsyntax-only -Iinclude tests/c/include_twice.cpp

step "libpolycache.so exports every function of polycache.h"
declared=$(grep -oE '\bpolycache_[a-z_]+\(' include/polycache.h | tr -d '(' | sort -u)
exported=$(nm -D --defined-only "$lib_dir/libpolycache.so" | awk '{print $3}' | grep '^polycache_' | sort -u)
missing=$(comm -23 <(printf '%s\n' "$declared") <(printf '%s\n' "$exported"))
if [[ -n "$missing" ]]; then
    echo "declared in include/polycache.h but not exported by libpolycache.so:" >&2
    echo "$missing" >&2
    exit 1
fi
echo "$(printf '%s\n' "$declared" | wc -l) functions"

run=()
if command -v valgrind >/dev/null 2>&1; then
    # Only definite and indirect leaks count: the core keeps a few process-wide tables
    # (named memory:// stores) that valgrind reports as "possibly lost" through hashbrown's
    # interior pointers.
    run=(valgrind -q --leak-check=full --show-leak-kinds=definite,indirect
         --errors-for-leak-kinds=definite,indirect --error-exitcode=1)
else
    echo "valgrind is not installed: running the C programs without the leak checker" >&2
fi

step "run examples/c/quickstart.c"
"${run[@]}" "$build/quickstart"
step "run tests/c/test_cache.c"
"${run[@]}" "$build/test_cache"
