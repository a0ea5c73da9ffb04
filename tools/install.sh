#!/usr/bin/env bash
# Installs libhnapi for C/C++ builds: the shared and static libraries, include/hnapi.h,
# and a pkg-config file, hnapi.pc.
#
#   tools/install.sh [--debug] PREFIX
#
# then:  cc app.c $(PKG_CONFIG_PATH=PREFIX/lib/pkgconfig pkg-config --cflags --libs hnapi)
#   or, statically:  pkg-config --cflags --libs --static hnapi  (and link libhnapi.a)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

profile=release
if [ "${1:-}" = "--debug" ]; then
  profile=debug
  shift
fi
prefix=${1:?usage: tools/install.sh [--debug] PREFIX}
# The vendor library: the client side only, without the gateway, HNGard or their stores
# (the `server` feature, which the hnsecure program needs).
cargo_flags=(--locked --lib --no-default-features)
[ "$profile" = release ] && cargo_flags+=(--release)

cargo build "${cargo_flags[@]}"
# The system libraries a static link of libhnapi.a needs, as rustc reports them.
static_libs=$(cargo rustc "${cargo_flags[@]}" --crate-type staticlib -- --print native-static-libs 2>&1 \
  | sed -n 's/.*native-static-libs: //p' | tail -1)

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
mkdir -p "$prefix/lib/pkgconfig" "$prefix/include"
install -m 0644 include/hnapi.h "$prefix/include/hnapi.h"
install -m 0755 "target/$profile/libhnapi.so" "$prefix/lib/libhnapi.so"
install -m 0644 "target/$profile/libhnapi.a" "$prefix/lib/libhnapi.a"
cat > "$prefix/lib/pkgconfig/hnapi.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: hnapi
Description: hnsecure's C library: send and receive healthnetBC HL7 v2 messages securely
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lhnapi
Libs.private: ${static_libs}
PC
echo "installed libhnapi $version ($profile) in $prefix"
