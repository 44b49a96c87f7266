#!/usr/bin/env bash
# The C test command (`make test-c`):
#
# 1. builds libpolycache (debug) and compiles every C test program and example with
#    -std=c11 -Wall -Wextra -Werror -pedantic (the examples of docs/c-api.md too), twice: plainly, and with AddressSanitizer +
#    UndefinedBehaviorSanitizer on the C side (gcc -fsanitize=address,undefined; the Rust
#    library is not instrumented, but ASan's allocator and leak checker see every malloc
#    and free, Rust's included);
# 2. checks that polycache.h compiles as C++ (g++ -Wall -Wextra -Werror, included twice)
#    and that libpolycache.so exports every function the header declares;
# 3. runs the plain programs under valgrind (definite and indirect leaks are errors) and the
#    sanitized ones with leak detection on and every UBSan report fatal;
# 4. runs tests/c/test_threads.c (8 threads on one handle) and tests/c/test_queue.c under
#    ThreadSanitizer, short form (`make tsan` runs 8 x 1,000,000 operations);
# 5. installs the library into a temporary PREFIX with scripts/install-c.sh and builds
#    examples/c/quickstart.c with `cc $(pkg-config --cflags --libs polycache)` against the
#    installed copy, shared and static, and runs both.
#
# tests/c/test_queue.c needs a Redis and a Memcached, tests/c/test_structures.c,
# tests/c/test_starts.c and tests/c/test_tiered.c a Redis: they run under testkit's
# `with-servers`, which starts both on free loopback ports, passes their URLs in
# POLYCACHE_TEST_REDIS_URL and POLYCACHE_TEST_MEMCACHED_URL, and stops them when the program
# exits; for tests/c/test_tiered.c also a Redis Cluster (`with-servers --cluster`,
# POLYCACHE_TEST_REDIS_CLUSTER_URL).
#
# The programs link the shared library just built (target/debug/libpolycache.so), found at
# run time through an rpath to a directory that names it by its soname, as an installed
# copy is named; linking the 200 MB debug archive into each of them takes half a minute
# apiece on a busy machine. The static library is linked by step 5.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target}
lib_dir="$CARGO_TARGET_DIR/debug"

step() { printf '== %s\n' "$*"; }

step "cargo build -p polycache-ffi -p polycache-testkit"
cargo build -p polycache-ffi -p polycache-testkit
with_servers="$lib_dir/with-servers"

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT

so_dir="$build/lib"
mkdir -p "$so_dir"
soname=$(readelf -d "$lib_dir/libpolycache.so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
ln -s "$lib_dir/libpolycache.so" "$so_dir/${soname:?libpolycache.so has no soname}"

cflags=(-std=c11 -Wall -Wextra -Werror -pedantic -g -Iinclude -Itests/c)
sanitize=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
libs=(-L"$lib_dir" -lpolycache -Wl,-rpath,"$so_dir" -lpthread)
tests=(test_cache test_caches test_backend test_job test_threads test_queue test_structures test_keys test_lock test_starts test_metrics test_tags test_tiered test_options)
examples=(quickstart walkthrough)

for t in "${tests[@]}"; do
    step "cc tests/c/$t.c (plain, and -fsanitize=address,undefined)"
    cc "${cflags[@]}" "tests/c/$t.c" "${libs[@]}" -o "$build/$t"
    cc "${cflags[@]}" "${sanitize[@]}" "tests/c/$t.c" "${libs[@]}" -o "$build/$t.asan"
done
for e in "${examples[@]}"; do
    step "cc examples/c/$e.c (plain, and -fsanitize=address,undefined)"
    cc "${cflags[@]}" "examples/c/$e.c" "${libs[@]}" -o "$build/$e"
    cc "${cflags[@]}" "${sanitize[@]}" "examples/c/$e.c" "${libs[@]}" -o "$build/$e.asan"
done
step "cc the examples of docs/c-api.md (plain, and -fsanitize=address,undefined)"
python3 tests/c/doc_examples.py "$build/doc_examples.c"
cc "${cflags[@]}" "$build/doc_examples.c" "${libs[@]}" -o "$build/doc_examples"
cc "${cflags[@]}" "${sanitize[@]}" "$build/doc_examples.c" "${libs[@]}" -o "$build/doc_examples.asan"
examples+=(doc_examples)
step "g++ -fsyntax-only tests/c/include_twice.cpp"
g++ -std=c++11 -Wall -Wextra -Werror -pedantic -fsyntax-only -Iinclude tests/c/include_twice.cpp

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

# Operations per thread in test_threads: fewer under valgrind, which runs one thread at a time.
threads_ops() {
    case "$1" in
        valgrind) echo 2000 ;;
        *) echo 20000 ;;
    esac
}

# What runs before program $1: testkit's with-servers for the one that needs servers.
servers_for() {
    [[ "$1" == test_queue || "$1" == test_structures || "$1" == test_starts || "$1" == test_tags || "$1" == test_tiered ]] && echo "$with_servers"
    # test_tiered also tracks a Redis Cluster (POLYCACHE_TEST_REDIS_CLUSTER_URL).
    [[ "$1" == test_tiered ]] && echo "--cluster"
    return 0
}

if command -v valgrind >/dev/null 2>&1; then
    # Only definite and indirect leaks count: the core keeps a few process-wide tables
    # (named memory:// stores, the refresh pool) that valgrind reports as "possibly lost"
    # through hashbrown's interior pointers.
    valgrind=(valgrind -q --leak-check=full --show-leak-kinds=definite,indirect
              --errors-for-leak-kinds=definite,indirect --error-exitcode=1)
    for p in "${examples[@]}" "${tests[@]}"; do
        step "valgrind $p"
        args=()
        [[ "$p" == test_threads ]] && args=("$(threads_ops valgrind)")
        mapfile -t pre < <(servers_for "$p")
        "${pre[@]}" "${valgrind[@]}" "$build/$p" "${args[@]}"
    done
else
    echo "valgrind is not installed (scripts/install-system-deps.sh installs it): skipping the valgrind runs" >&2
fi

# detect_leaks: LeakSanitizer at exit. abort_on_error: a report fails the run.
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for p in "${examples[@]}" "${tests[@]}"; do
    step "AddressSanitizer + UBSan: $p"
    args=()
    [[ "$p" == test_threads ]] && args=("$(threads_ops asan)")
    mapfile -t pre < <(servers_for "$p")
    "${pre[@]}" "$build/$p.asan" "${args[@]}"
done

step "ThreadSanitizer: test_threads $(threads_ops tsan), test_queue"
bash tests/c/tsan.sh "$(threads_ops tsan)"

step "make install into a temporary PREFIX; build examples/c/quickstart.c with pkg-config"
prefix="$build/prefix"
bash scripts/install-c.sh "$prefix" debug
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
# shellcheck disable=SC2046 # pkg-config's output is a list of flags
cc -std=c11 -Wall -Wextra -Werror examples/c/quickstart.c $(pkg-config --cflags --libs polycache) \
    -o "$build/quickstart.shared"
needed=$(readelf -d "$build/quickstart.shared" | sed -n 's/.*Shared library: \[\(libpolycache[^]]*\)\].*/\1/p')
if [[ "$needed" != "$soname" || ! -e "$prefix/lib/$soname" ]]; then
    echo "the example needs '$needed'; the installed soname is '$soname'" >&2
    exit 1
fi
echo "linked against $needed"
LD_LIBRARY_PATH="$prefix/lib" "$build/quickstart.shared" >/dev/null
# Static: the archive plus what Libs.private lists.
private=$(pkg-config --static --libs polycache | tr ' ' '\n' | grep -v -e '^-lpolycache$' -e '^-L' | tr '\n' ' ')
# shellcheck disable=SC2086,SC2046
cc -std=c11 -Wall -Wextra -Werror examples/c/quickstart.c $(pkg-config --cflags polycache) \
    "$(pkg-config --variable=libdir polycache)/libpolycache.a" $private -o "$build/quickstart.static"
"$build/quickstart.static" >/dev/null
echo "the installed copy works, shared and static"
step "C tests passed"
