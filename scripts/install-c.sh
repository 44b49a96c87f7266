#!/usr/bin/env bash
# Installs the C library: `make install PREFIX=/usr/local` (also DESTDIR for packagers).
#
#   $PREFIX/lib/libpolycache.so.X.Y.Z   the shared library, soname libpolycache.so.<abi>
#   $PREFIX/lib/libpolycache.so.<abi>   -> libpolycache.so.X.Y.Z (what programs load)
#   $PREFIX/lib/libpolycache.so         -> libpolycache.so.<abi> (what -lpolycache links)
#   $PREFIX/lib/libpolycache.a          the static library
#   $PREFIX/include/polycache.h
#   $PREFIX/lib/pkgconfig/polycache.pc  for `cc app.c $(pkg-config --cflags --libs polycache)`
#
# Usage: bash scripts/install-c.sh PREFIX [release|debug]   (default release)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
prefix=${1:?usage: install-c.sh PREFIX [release|debug]}
profile=${2:-release}
destdir=${DESTDIR:-}
target_dir=${CARGO_TARGET_DIR:-$root/target}

case "$profile" in
    release) cargo build --release -p polycache-ffi --lib ;;
    debug) cargo build -p polycache-ffi --lib ;;
    *) echo "install-c.sh: profile must be release or debug, not $profile" >&2; exit 2 ;;
esac
built="$target_dir/$profile"

# The version and the soname the library was linked with (ffi/build.rs sets it).
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
soname=$(readelf -d "$built/libpolycache.so" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
if [[ -z "$version" || "$soname" != libpolycache.so.* ]]; then
    echo "install-c.sh: could not read the version ($version) or soname ($soname)" >&2
    exit 1
fi

libdir="$destdir$prefix/lib"
includedir="$destdir$prefix/include"
pcdir="$libdir/pkgconfig"
install -d "$libdir" "$includedir" "$pcdir"
install -m 0755 "$built/libpolycache.so" "$libdir/libpolycache.so.$version"
if [[ "$soname" != "libpolycache.so.$version" ]]; then
    ln -sfn "libpolycache.so.$version" "$libdir/$soname"
fi
ln -sfn "$soname" "$libdir/libpolycache.so"
install -m 0644 "$built/libpolycache.a" "$libdir/libpolycache.a"
install -m 0644 include/polycache.h "$includedir/polycache.h"
# Libs.private: what the static library needs beyond libc (rustc --print native-static-libs).
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$version|" ffi/polycache.pc.in >"$pcdir/polycache.pc"
chmod 0644 "$pcdir/polycache.pc"
echo "installed libpolycache $version ($soname) into $destdir$prefix"
