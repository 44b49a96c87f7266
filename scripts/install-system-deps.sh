#!/usr/bin/env bash
# Installs the system programs the test suite needs, each only when it is missing:
# redis-server, redis-sentinel, memcached, the PostgreSQL server, valgrind, pkg-config, g++ and gcc's
# sanitizer runtimes.
#
# Idempotent and non-interactive (safe in CI with no standard input). Uses apt-get;
# runs it through sudo only when not root and sudo exists. The test servers are
# started by the testkit crate on free loopback ports, so this script keeps package
# post-install scripts from starting system services (policy-rc.d) where it can.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        echo "install-system-deps: not root and sudo is missing; install the packages by hand" >&2
    fi
fi

APT_UPDATED=0
POLICY_RC_CREATED=0
POLICY_RC=/usr/sbin/policy-rc.d

cleanup() {
    if [ "$POLICY_RC_CREATED" -eq 1 ]; then
        "${SUDO[@]}" rm -f "$POLICY_RC" || true
    fi
}
trap cleanup EXIT

# Keeps services (e.g. a PostgreSQL cluster on 5432) from being started by the
# packages' post-install scripts. Only a policy-rc.d we created is removed later.
block_service_start() {
    if [ ! -e "$POLICY_RC" ] && [ "$POLICY_RC_CREATED" -eq 0 ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY_RC" >/dev/null
        "${SUDO[@]}" chmod 755 "$POLICY_RC"
        POLICY_RC_CREATED=1
    fi
}

apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-system-deps: apt-get not found; install $* with your package manager" >&2
        return 1
    fi
    block_service_start
    if [ "$APT_UPDATED" -eq 0 ]; then
        "${SUDO[@]}" apt-get update -q </dev/null
        APT_UPDATED=1
    fi
    "${SUDO[@]}" apt-get install -y -q --no-install-recommends "$@" </dev/null
}

have_postgres() {
    if command -v postgres >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        return 0
    fi
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        if [ -x "$dir/postgres" ] && [ -x "$dir/initdb" ]; then
            return 0
        fi
    done
    return 1
}

have_cmd() {
    command -v "$1" >/dev/null 2>&1
}

# ensure NAME PACKAGE CHECK-COMMAND...
ensure() {
    local name=$1 package=$2
    shift 2
    if "$@"; then
        echo "$name: found"
    else
        apt_install "$package"
        if "$@"; then
            echo "$name: installed ($package)"
        else
            echo "$name: installing $package did not provide it" >&2
            return 1
        fi
    fi
}

ensure redis-server redis-server have_cmd redis-server
# The Sentinel tests (testkit falls back to `redis-server --sentinel` without it).
ensure redis-sentinel redis-sentinel have_cmd redis-sentinel
ensure openssl openssl have_cmd openssl  # certificates for the redis:// TLS test
ensure memcached memcached have_cmd memcached
ensure postgresql postgresql have_postgres
ensure valgrind valgrind have_cmd valgrind
ensure pkg-config pkg-config have_cmd pkg-config
ensure g++ g++ have_cmd g++  # the C++ check of polycache.h

# gcc's AddressSanitizer, UBSan and ThreadSanitizer runtimes (libasan, libubsan, libtsan),
# which the C tests link; Debian's gcc pulls them in through libgcc-N-dev.
have_sanitizers() {
    local dir
    dir=$(mktemp -d)
    printf 'int main(void) { return 0; }\n' >"$dir/t.c"
    cc -fsanitize=address,undefined "$dir/t.c" -o "$dir/a" 2>/dev/null &&
        cc -fsanitize=thread "$dir/t.c" -o "$dir/t" 2>/dev/null
    local ok=$?
    rm -rf "$dir"
    return $ok
}
ensure sanitizers gcc have_sanitizers

have_libmemcached() {
    [ -f /usr/include/libmemcached/memcached.h ] || [ -f /usr/include/libmemcached-1.0/memcached.h ]
}
# pylibmc (a peer of the memcached benchmark and interop test) compiles against it where
# PyPI has no wheel for the running Python.
ensure libmemcached-dev libmemcached-dev have_libmemcached
