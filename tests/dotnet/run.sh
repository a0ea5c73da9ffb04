#!/usr/bin/env bash
# run.sh — builds and runs the .NET bindings' tests and example against a running sandbox.
#
#   tests/dotnet/run.sh NUPKG|LIBDIR CLIENT_TOML SERVER_TOML [PANIC_LIBDIR]
#
# NUPKG is Hnapi.VERSION.nupkg from tools/package.sh: it is extracted, the programs are
# compiled against its lib/net6.0/Hnapi.dll, and its runtimes/linux-x64/native/libhnapi.so
# is copied beside them, as .NET's restore and publish put a package's native asset for the
# app's RID; they run with no LD_LIBRARY_PATH, and Mono's log must show that library loaded.
# Or LIBDIR, which holds libhnapi.so (target/debug or target/release); CLIENT_TOML and SERVER_TOML
# are those `hnsecure sandbox` printed. Needs Mono's C# compiler and runtime (Debian:
# apt-get install -y --no-install-recommends mono-mcs). Compiles with mcs, warnings as
# errors, into a temporary folder (the README's C# snippet too, as written); checks that
# the binding's code table is the header's; runs tests/dotnet/HnapiTests.cs and
# examples/dotnet/Send.cs (whose output must hold an AA). PANIC_LIBDIR, when given, holds a
# libhnapi.so built with the test-only feature `test-panic`: the tests' --panic-case then
# runs in a process of its own with that library and HNAPI_TEST_PANIC=hnapi_send_receive.
# Exit status 0 when everything passed.
set -euo pipefail

if [ "$#" -ne 3 ] && [ "$#" -ne 4 ]; then
  echo "usage: $0 LIBDIR CLIENT_TOML SERVER_TOML [PANIC_LIBDIR]" >&2
  exit 2
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
nupkg=""
libdir=""
if [[ "$1" == *.nupkg ]]; then
  nupkg=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
else
  libdir=$(cd "$1" && pwd)
fi
client_toml=$2
server_toml=$3
panic_libdir=""
if [ "$#" -eq 4 ]; then
  panic_libdir=$(cd "$4" && pwd)
fi

step() { printf '\n--> %s\n' "$*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

for tool in mcs mono; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing (apt-get install -y --no-install-recommends mono-mcs)"
done
if [ -n "$nupkg" ]; then
  [ -f "$nupkg" ] || fail "no package at $nupkg"
else
  [ -e "$libdir/libhnapi.so" ] || [ -e "$libdir/libhnapi.dylib" ] || fail "no libhnapi in $libdir (cargo build first)"
fi
[ -f "$client_toml" ] || fail "no client configuration at $client_toml"
[ -f "$server_toml" ] || fail "no server configuration at $server_toml"
if [ -n "$panic_libdir" ]; then
  [ -e "$panic_libdir/libhnapi.so" ] || [ -e "$panic_libdir/libhnapi.dylib" ] || fail "no libhnapi in $panic_libdir"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/hnapi-dotnet.XXXXXX")
trap 'rm -rf "$work"' EXIT

binding=$root/bindings/dotnet/Hnapi.cs

step "the binding's HnetRtrn table against include/hnapi.h"
codes() { grep -oE '^\s*HNET_RTRN_[A-Z_]+ = -?[0-9]+,' "$1" | tr -d ' \t' | sort; }
codes "$root/include/hnapi.h" >"$work/header.codes"
codes "$binding" >"$work/binding.codes"
[ -s "$work/header.codes" ] || fail "no codes found in include/hnapi.h"
if ! diff -u "$work/header.codes" "$work/binding.codes"; then
  fail "bindings/dotnet/Hnapi.cs's HnetRtrn differs from include/hnapi.h (- header, + binding)"
fi
echo "$(wc -l <"$work/header.codes") codes, the same in both"

uses=("$binding")
if [ -n "$nupkg" ]; then
  step "the package: $nupkg"
  mkdir -p "$work/pkg"
  (cd "$work/pkg" && unzip -q "$nupkg")
  for f in Hnapi.nuspec '[Content_Types].xml' _rels/.rels lib/net6.0/Hnapi.dll runtimes/linux-x64/native/libhnapi.so; do
    [ -f "$work/pkg/$f" ] || fail "the package has no $f"
  done
  # What restore + build/publish leave in the app's folder for RID linux-x64: the
  # package's assembly and its native asset side by side.
  cp "$work/pkg/lib/net6.0/Hnapi.dll" "$work/pkg/runtimes/linux-x64/native/libhnapi.so" "$work/"
  uses=("-r:$work/Hnapi.dll")
fi

step "mcs -warnaserror+: binding + tests/dotnet/HnapiTests.cs"
mcs -warnaserror+ -nologo -out:"$work/HnapiTests.exe" "$root/tests/dotnet/HnapiTests.cs" "${uses[@]}"

step "mcs -warnaserror+: binding + examples/dotnet/Send.cs"
mcs -warnaserror+ -nologo -out:"$work/Send.exe" "$root/examples/dotnet/Send.cs" "${uses[@]}"

step "mcs -warnaserror+: binding + the README's C# snippet, as written"
"$root/tools/readme_snippet.sh" "$root/README.md" '### C# (.NET 6+, or Mono)' csharp >"$work/Readme.cs" \
  || fail "no C# snippet to compile"
mcs -warnaserror+ -nologo -out:"$work/Readme.exe" "$work/Readme.cs" "${uses[@]}"

outer_library_path=${LD_LIBRARY_PATH:-}
if [ -n "$nupkg" ]; then
  unset LD_LIBRARY_PATH
  outer_library_path=""
  if ldconfig -p 2>/dev/null | grep -q libhnapi; then fail "a libhnapi is installed system-wide: Mono could load it instead of the package's"; fi
  step "Mono loads the package's libhnapi.so from beside the program"
  MONO_LOG_LEVEL=debug MONO_LOG_MASK=dll timeout 120 mono "$work/Send.exe" "$client_toml" "$root/tests/data/v5_2_5_4_request.hl7" >"$work/load.log" 2>&1 || true
  grep -E "DllImport (loaded|attempting).*hnapi" "$work/load.log" | head -5 || true
  grep -q "DllImport loaded library '$work/libhnapi.so'" "$work/load.log" ||
    fail "Mono did not load $work/libhnapi.so (see its log above)"
else
  export LD_LIBRARY_PATH="$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

step "mono HnapiTests.exe $client_toml $server_toml"
# The time limit also catches a process that would not exit (see the last lines of the tests).
status=0
timeout 300 mono "$work/HnapiTests.exe" "$client_toml" "$server_toml" || status=$?
[ "$status" -eq 124 ] && fail "the tests did not end within 300 s"
[ "$status" -eq 0 ] || fail "the tests (exit status $status)"

if [ -n "$panic_libdir" ]; then
  step "HNAPI_TEST_PANIC=hnapi_send_receive mono HnapiTests.exe --panic-case $client_toml (the library in $panic_libdir)"
  status=0
  # The panic's own report on stderr is expected; a backtrace of it would only be noise.
  panic_exe=$work/HnapiTests.exe
  if [ -n "$nupkg" ]; then
    # The test-panic library beside a copy of the program, as the package's is beside it.
    mkdir -p "$work/panic"
    cp "$work/HnapiTests.exe" "$work/Hnapi.dll" "$panic_libdir/libhnapi.so" "$work/panic/"
    panic_exe=$work/panic/HnapiTests.exe
  fi
  HNAPI_TEST_PANIC=hnapi_send_receive RUST_BACKTRACE=0 LD_LIBRARY_PATH="$panic_libdir${outer_library_path:+:$outer_library_path}" \
    timeout 120 mono "$panic_exe" --panic-case "$client_toml" || status=$?
  [ "$status" -eq 124 ] && fail "the panic case did not end within 120 s"
  [ "$status" -eq 0 ] || fail "the panic case (exit status $status)"
fi

request=$root/tests/data/v5_2_5_4_request.hl7
step "mono Send.exe $client_toml $request"
status=0
timeout 120 mono "$work/Send.exe" "$client_toml" "$request" >"$work/send.out" || status=$?
cat "$work/send.out"
[ "$status" -eq 0 ] || fail "the example (exit status $status)"
grep -q 'MSA|AA|' "$work/send.out" || fail "the example's answer has no MSA|AA|"

step ".NET bindings: all passed"
