#!/usr/bin/env bash
# Makes what a vendor takes as it is: per target an SDK archive, one Java jar holding the
# native libraries of every target built, and a NuGet package for .NET.
#
#   tools/package.sh [--target T]... [--out DIR] [--jar-only]
#
#   --target T   one of x86_64-unknown-linux-gnu, i686-unknown-linux-gnu,
#                powerpc64-unknown-linux-gnu, x86_64-pc-windows-gnu, i686-pc-windows-gnu
#                (repeat for several; default: all five)
#   --out DIR    where the packages go (default: target/packages)
#   --jar-only   build the libraries and make the jar only (the tests' fast path)
#
# Into DIR:
#   hnapi-VERSION-TARGET.tar.gz (Linux) / .zip (Windows): include/hnapi.h; the library
#     stripped (Linux: lib/libhnapi.so, lib/libhnapi.a and lib/pkgconfig/hnapi.pc, whose
#     prefix is where the archive is extracted, through ${pcfiledir}; Windows:
#     bin/hnapi.dll, lib/libhnapi.dll.a, lib/hnapi.def for MSVC's lib /def:); the bindings
#     (bindings/java, bindings/dotnet); the examples (examples/c, examples/dotnet,
#     examples/java); README.txt; LICENSE; SHA256SUMS (of every file in the archive).
#   hnapi-VERSION.jar: the Java binding's classes, and the native libraries under JNA's
#     resource names (linux-x86-64/, linux-x86/, linux-ppc64/, win32-x86-64/, win32-x86/),
#     for the targets built.
#   Hnapi.VERSION.nupkg: Hnapi.dll (the C# binding, compiled by Mono's mcs) under
#     lib/net6.0/, and runtimes/{win-x64,win-x86,linux-x64}/native/ for the targets built;
#     runtimes/ beside it is the same tree unpacked, which bindings/dotnet/Hnapi.csproj packs
#     when `dotnet pack` runs on a machine with the .NET SDK.
#   SHA256SUMS: of the files above.
#
# Each library is built with `cargo build --release --locked --lib --no-default-features
# --target T` (vendor_cargo in tools/lib.sh: on Windows with function sections, fat LTO
# and rust-lld) into target/T/release/ (a target of its own each, as tools/cross.sh and
# tools/windows.sh keep them): a second run, or a run after those scripts, rebuilds
# nothing. Installs what it needs when it is missing (rustup targets; Debian's cross
# compilers and binutils, zip, a JDK, JNA, Mono's mcs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)
# shellcheck source=tools/lib.sh
source tools/lib.sh

usage() { echo "usage: tools/package.sh [--target T]... [--out DIR] [--jar-only]" >&2; exit 2; }
targets=()
out=$root/target/packages
jar_only=0
while [ "$#" -gt 0 ]; do
  case "$1" in
    --target) [ "$#" -ge 2 ] || usage; targets+=("$2"); shift 2 ;;
    --out) [ "$#" -ge 2 ] || usage; out=$2; shift 2 ;;
    --jar-only) jar_only=1; shift ;;
    *) usage ;;
  esac
done
[ "${#targets[@]}" -gt 0 ] || targets=("${HNAPI_TARGETS[@]}")
for t in "${targets[@]}"; do
  cross_prefix "$t" >/dev/null || usage
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
started=$SECONDS
step() { printf '\n==> package: %s\n' "$*"; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
license=$(sed -n 's/^license = "\(.*\)"/\1/p' Cargo.toml | head -1)
# Archive entries get the last commit's time, so that the same tree packs to the same bytes.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}

is_windows() { [[ "$1" == *-windows-* ]]; }
# JNA's resource folder (com.sun.jna.Platform.RESOURCE_PREFIX) and .NET's RID of a target.
jna_prefix() {
  case "$1" in
    x86_64-unknown-linux-gnu) echo linux-x86-64 ;;
    i686-unknown-linux-gnu) echo linux-x86 ;;
    powerpc64-unknown-linux-gnu) echo linux-ppc64 ;;
    x86_64-pc-windows-gnu) echo win32-x86-64 ;;
    i686-pc-windows-gnu) echo win32-x86 ;;
  esac
}
# linux-ppc64 has no .NET runtime (Microsoft builds none for big-endian POWER), so no RID;
# i686 Linux has none either (linux-x86 is not a supported .NET runtime).
dotnet_rid() {
  case "$1" in
    x86_64-unknown-linux-gnu) echo linux-x64 ;;
    x86_64-pc-windows-gnu) echo win-x64 ;;
    i686-pc-windows-gnu) echo win-x86 ;;
    *) echo "" ;;
  esac
}
native_name() { if is_windows "$1"; then echo hnapi.dll; else echo libhnapi.so; fi; }

step "toolchain"
rustup_targets "${targets[@]}"
debs=(python3 file)
for t in "${targets[@]}"; do
  # shellcheck disable=SC2207
  debs+=($(cross_debs "$t"))
done
[ "$jar_only" = 1 ] || debs+=(zip mono-mcs)
apt_install "${debs[@]}" libjna-java
command -v javac >/dev/null 2>&1 || apt_install openjdk-17-jdk-headless
cross_env
jna=${JNA_JAR:-/usr/share/java/jna.jar}

# mkzip OUT DIR [--folder]: a zip of DIR's contents (names relative to DIR, sorted, with
# the time of SOURCE_DATE_EPOCH), as NuGet expects it; with --folder the names start with
# DIR's own name, as an SDK archive extracts into one folder (like the .tar.gz ones).
# Python's zipfile, so that no zip program is needed.
mkzip() {
  python3 - "$@" <<'PY'
import os, sys, time, zipfile
out, top = sys.argv[1], sys.argv[2]
base = os.path.dirname(os.path.abspath(top)) if sys.argv[3:] == ["--folder"] else top
stamp = time.gmtime(max(int(os.environ.get("SOURCE_DATE_EPOCH", "0")), 315532800))[:6]
names = []
for d, _, files in os.walk(top):
    names += [os.path.relpath(os.path.join(d, f), base) for f in files]
with zipfile.ZipFile(out + ".tmp", "w", zipfile.ZIP_DEFLATED) as z:
    for n in sorted(names):
        info = zipfile.ZipInfo(n.replace(os.sep, "/"), stamp)
        info.compress_type = zipfile.ZIP_DEFLATED
        mode = os.stat(os.path.join(base, n)).st_mode
        info.external_attr = (mode & 0o777 | 0o100000) << 16
        with open(os.path.join(base, n), "rb") as f:
            z.writestr(info, f.read())
os.replace(out + ".tmp", out)
PY
}

# Libs.private for hnapi.pc: what a static link of libhnapi.a needs besides it. The libraries
# the dependencies' build scripts ask to link (cargo's JSON messages), then those the
# target's std needs (rustc prints them for an empty static library). Computed so, not with
# `cargo rustc -- --print native-static-libs`, which would change the library's fingerprint
# and rebuild it for every later plain build.
static_libs() { # TARGET BUILD_JSON
  local t=$1 json=$2 tmp
  tmp=$(mktemp -d)
  echo "" | rustc --edition 2021 --crate-type staticlib --crate-name empty --target "$t" \
    --print native-static-libs -o "$tmp/libempty.a" - 2>"$tmp/err" || { cat "$tmp/err" >&2; rm -rf "$tmp"; return 1; }
  python3 - "$json" "$(sed -n 's/.*native-static-libs: //p' "$tmp/err" | tail -1)" <<'PY'
import json, sys
libs = []
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "build-script-executed":
        continue
    for lib in m.get("linked_libs", []):
        kind, _, name = lib.rpartition("=")
        if kind.split(":")[0] in ("", "dylib") and "-l" + name not in libs:
            libs.append("-l" + name)
print(" ".join(libs + sys.argv[2].split()))
PY
  rm -rf "$tmp"
}

# build TARGET: the release library of TARGET; sets `rel` (its folder) and `json`.
build() {
  local t=$1
  rel=$root/target/$t/release
  json=$root/target/$t/hnapi-build.json
  mkdir -p "$root/target/$t"
  local t0=$SECONDS
  # The exact command the vendor library is built with (no default features: the
  # client-side library only, when the crate has such features).
  # (on Windows with function sections, fat LTO and rust-lld: vendor_cargo in tools/lib.sh).
  vendor_cargo "$t" build --release --locked --lib --no-default-features \
    --message-format=json-diagnostic-rendered-ansi >"$json"
  [ -e "$rel/$(native_name "$t")" ] || { echo "cargo made no $rel/$(native_name "$t")" >&2; exit 1; }
  echo "$t: built in $((SECONDS - t0)) s"
}

stage=$out/.stage
rm -rf "$stage"
mkdir -p "$stage/jar"
trap 'rm -rf "$stage"' EXIT
artifacts=()

step "libraries and SDK archives: ${targets[*]}"
for t in "${targets[@]}"; do
  build "$t"
  strip_=$(cross_tool "$t" strip)
  # The jar's and the NuGet package's copy: stripped of everything but the exports.
  mkdir -p "$stage/jar/$(jna_prefix "$t")"
  native=$stage/jar/$(jna_prefix "$t")/$(native_name "$t")
  cp "$rel/$(native_name "$t")" "$native"
  "$strip_" --strip-all "$native"
  rid=$(dotnet_rid "$t")
  if [ -n "$rid" ]; then
    mkdir -p "$stage/nuget/runtimes/$rid/native"
    cp "$native" "$stage/nuget/runtimes/$rid/native/"
  fi
  [ "$jar_only" = 1 ] && continue

  name=hnapi-$version-$t
  sdk=$stage/$name
  mkdir -p "$sdk/include" "$sdk/lib" "$sdk/bindings" "$sdk/examples"
  cp include/hnapi.h "$sdk/include/"
  if is_windows "$t"; then
    mkdir -p "$sdk/bin"
    cp "$native" "$sdk/bin/hnapi.dll"
    cp "$rel/libhnapi.dll.a" include/hnapi.def "$sdk/lib/"
  else
    cp "$native" "$sdk/lib/libhnapi.so"
    cp "$rel/libhnapi.a" "$sdk/lib/libhnapi.a"
    # Debug information out; the symbols stay (a static library is linked through them).
    "$strip_" --strip-debug "$sdk/lib/libhnapi.a"
    mkdir -p "$sdk/lib/pkgconfig"
    cat >"$sdk/lib/pkgconfig/hnapi.pc" <<PC
# Wherever this archive is extracted: pkg-config sets pcfiledir to this file's folder.
prefix=\${pcfiledir}/../..
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: hnapi
Description: hnsecure's C library: send and receive healthnetBC HL7 v2 messages securely
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lhnapi
Libs.private: $(static_libs "$t" "$json")
PC
  fi
  cp -r bindings/java bindings/dotnet "$sdk/bindings/"
  cp -r examples/c examples/dotnet examples/java "$sdk/examples/"
  cp LICENSE "$sdk/LICENSE"
  arch=${t%%-*}
  if is_windows "$t"; then
    machine=x64; [ "$arch" = i686 ] && machine=x86
    gcc_=$(cross_tool "$t" gcc)
    cat >"$sdk/README.txt" <<TXT
hnapi $version for $t (Windows, $([ "$arch" = i686 ] && echo 32 || echo 64)-bit)
==================================================

hnapi is hnsecure's C library: a client sends healthnetBC HL7 v2 requests to a gateway
and gets their answers; a server application receives the requests routed to it.
Licence: $license (LICENSE). SHA256SUMS: sha256sum -c SHA256SUMS.

  include/hnapi.h       the C header (its opening comment is the ABI contract)
  bin/hnapi.dll         the library (stripped); ship it beside your program
  lib/libhnapi.dll.a    the import library, for mingw-w64 (gcc, clang)
  lib/hnapi.def         the exported functions, for MSVC
  bindings/dotnet       Hnapi.cs and Hnapi.csproj (the C# binding, .NET 6+)
  bindings/java         the Java binding's sources (JNA)
  examples/             C, C# and Java examples

The DLL's bitness must match the process: this one is for $([ "$arch" = i686 ] && echo "32-bit (x86)" || echo "64-bit (x64)") processes.

C, mingw-w64:
  $gcc_ app.c -Iinclude -Llib -lhnapi -o app.exe
C, MSVC (make an import library from the .def first):
  lib /def:lib\\hnapi.def /machine:$machine /out:lib\\hnapi.lib
  cl app.c /Iinclude lib\\hnapi.lib
Then put bin\\hnapi.dll beside app.exe.

C#: add bindings/dotnet/Hnapi.cs to the project (or reference the NuGet package Hnapi,
which carries hnapi.dll for win-x64 and win-x86), and copy bin\\hnapi.dll to the
output folder. [DllImport("hnapi")] finds it there.

Java: take hnapi-$version.jar (the native libraries of every platform inside) and JNA's
jar on the class path; nothing else. Or compile bindings/java/src with the application
and run with -Djna.library.path=<the folder of hnapi.dll>.
TXT
  else
    cc_=$(cross_tool "$t" gcc)
    cat >"$sdk/README.txt" <<TXT
hnapi $version for $t (Linux)
==================================================

hnapi is hnsecure's C library: a client sends healthnetBC HL7 v2 requests to a gateway
and gets their answers; a server application receives the requests routed to it.
Licence: $license (LICENSE). SHA256SUMS: sha256sum -c SHA256SUMS.

  include/hnapi.h            the C header (its opening comment is the ABI contract)
  lib/libhnapi.so            the shared library (stripped)
  lib/libhnapi.a             the static library (debug information stripped)
  lib/pkgconfig/hnapi.pc     pkg-config file; works wherever this folder is extracted
  bindings/dotnet            Hnapi.cs and Hnapi.csproj (the C# binding, .NET 6+ or Mono)
  bindings/java              the Java binding's sources (JNA)
  examples/                  C, C# and Java examples

C, shared (from this folder; or set PKG_CONFIG_PATH to it from anywhere):
  export PKG_CONFIG_PATH=\$PWD/lib/pkgconfig
  $cc_ app.c \$(pkg-config --cflags --libs hnapi) -o app
  LD_LIBRARY_PATH=\$PWD/lib ./app      (or install lib/libhnapi.so where the loader looks)
C, static:
  $cc_ app.c \$(pkg-config --cflags hnapi) lib/libhnapi.a \\
    \$(pkg-config --static --libs-only-l hnapi | sed 's/-lhnapi//') -o app

C#: add bindings/dotnet/Hnapi.cs to the project$([ "$t" = x86_64-unknown-linux-gnu ] && echo " (or reference the NuGet package Hnapi,
which carries libhnapi.so for linux-x64)"); [DllImport("hnapi")] finds lib/libhnapi.so
beside the program or on LD_LIBRARY_PATH.

Java: take hnapi-$version.jar (the native libraries of every platform inside) and JNA's
jar on the class path; nothing else. Or compile bindings/java/src with the application
and run with -Djna.library.path=\$PWD/lib.
TXT
  fi
  (cd "$sdk" && find . -type f ! -name SHA256SUMS -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum >SHA256SUMS)
  if is_windows "$t"; then
    archive=$name.zip
    (cd "$stage" && mkzip "$out/$archive" "$name" --folder)
  else
    archive=$name.tar.gz
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
      -C "$stage" -cf - "$name" | gzip -n >"$out/$archive"
  fi
  artifacts+=("$archive")
  echo "$archive: $(du -h "$out/$archive" | cut -f1)"
done

step "the Java jar: the binding's classes and the native libraries under JNA's resource names"
jar=hnapi-$version.jar
javac --release 17 -Xlint:all -Werror -encoding UTF-8 -cp "$jna" -d "$stage/jar" \
  bindings/java/src/ca/bc/hnsecure/hnapi/*.java
printf 'Automatic-Module-Name: ca.bc.hnsecure.hnapi\nImplementation-Title: hnapi\nImplementation-Version: %s\n' \
  "$version" >"$stage/manifest"
rm -f "$out/$jar"
jar --create --file "$out/$jar" --manifest "$stage/manifest" --date="$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)" \
  -C "$stage/jar" .
artifacts+=("$jar")
jar --list --file "$out/$jar" | grep -E '(\.so|\.dll)$'

if [ "$jar_only" = 0 ] && [ ! -d "$stage/nuget/runtimes" ]; then
  echo "no NuGet package: none of the targets built has a .NET runtime identifier"
elif [ "$jar_only" = 0 ]; then
  step "the NuGet package: Hnapi.dll and runtimes/<rid>/native/"
  nuget=$stage/nuget
  mkdir -p "$nuget/lib/net6.0" "$nuget/_rels"
  mcs -warnaserror+ -nologo -optimize+ -target:library -out:"$nuget/lib/net6.0/Hnapi.dll" bindings/dotnet/Hnapi.cs
  cat >"$nuget/Hnapi.nuspec" <<XML
<?xml version="1.0" encoding="utf-8"?>
<package xmlns="http://schemas.microsoft.com/packaging/2013/05/nuspec.xsd">
  <metadata>
    <id>Hnapi</id>
    <version>$version</version>
    <authors>hnsecure</authors>
    <license type="expression">$license</license>
    <description>The .NET binding of hnapi (hnsecure's C library): send and receive healthnetBC HL7 v2 messages securely. Carries the native library for $(cd "$nuget/runtimes" && ls | paste -sd, | sed 's/,/, /g').</description>
    <dependencies>
      <group targetFramework="net6.0" />
    </dependencies>
  </metadata>
</package>
XML
  cat >"$nuget/[Content_Types].xml" <<'XML'
<?xml version="1.0" encoding="utf-8"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">
  <Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml" />
  <Default Extension="nuspec" ContentType="application/octet" />
  <Default Extension="dll" ContentType="application/octet" />
  <Default Extension="so" ContentType="application/octet" />
</Types>
XML
  cat >"$nuget/_rels/.rels" <<'XML'
<?xml version="1.0" encoding="utf-8"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">
  <Relationship Type="http://schemas.microsoft.com/packaging/2010/07/manifest" Target="/Hnapi.nuspec" Id="R0" />
</Relationships>
XML
  nupkg=Hnapi.$version.nupkg
  mkzip "$out/$nupkg" "$nuget"
  artifacts+=("$nupkg")
  # The native tree unpacked, for Hnapi.csproj's `dotnet pack`.
  rm -rf "$out/runtimes"
  cp -r "$nuget/runtimes" "$out/runtimes"
  unzip -l "$out/$nupkg"
fi

(cd "$out" && sha256sum "${artifacts[@]}" >SHA256SUMS)
step "done in $((SECONDS - started)) s: $out"
(cd "$out" && ls -l "${artifacts[@]}" SHA256SUMS)
