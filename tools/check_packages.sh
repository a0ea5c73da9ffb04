#!/usr/bin/env bash
# Checks what tools/package.sh made in DIR (default target/packages): every file it lists
# in DIR/SHA256SUMS matches; each SDK archive is listed, extracted, its own SHA256SUMS
# checked, and it holds the header, README.txt, LICENSE and its libraries, stripped
# (`file` says so for the shared library or DLL; the static library has no debug
# sections); the jar holds the binding's classes and one native library per JNA resource
# folder; the NuGet package its nuspec, Hnapi.dll and runtimes/<rid>/native/. Every library
# is checked to hold the client side only (tools/client_only.sh), and each stripped shared
# library to be within its size budget (size_budget below; the README's Packages table).
#
#   tools/check_packages.sh [DIR]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=tools/lib.sh
source tools/lib.sh
dir=$(cd "${1:-target/packages}" && pwd)
fail() { echo "FAILED: $*" >&2; exit 1; }
# size_budget TARGET: the most bytes its stripped shared library may have (README, Packages).
size_budget() {
  case "$1" in
    x86_64-unknown-linux-gnu) echo 4200000 ;;
    i686-unknown-linux-gnu) echo 4250000 ;;
    powerpc64-unknown-linux-gnu) echo 5100000 ;;
    x86_64-pc-windows-gnu) echo 3800000 ;;
    i686-pc-windows-gnu) echo 3800000 ;;
    *) echo "check_packages: no size budget for $1" >&2; exit 1 ;;
  esac
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "--> $dir/SHA256SUMS"
(cd "$dir" && sha256sum -c SHA256SUMS)
mapfile -t files < <(awk '{print $2}' "$dir/SHA256SUMS")
for f in "${files[@]}"; do
  case "$f" in
    hnapi-*.tar.gz | hnapi-*.zip)
      name=${f%.tar.gz}; name=${name%.zip}
      t=${name#hnapi-*-}
      echo "--> $f ($t)"
      mkdir -p "$work/$name"
      if [[ "$f" == *.zip ]]; then
        unzip -l "$dir/$f"
        (cd "$work" && unzip -q "$dir/$f")
      else
        tar -tvzf "$dir/$f"
        tar -C "$work" -xzf "$dir/$f"
      fi
      sdk=$work/$name
      (cd "$sdk" && sha256sum -c --quiet SHA256SUMS) || fail "$f: its SHA256SUMS"
      for need in include/hnapi.h README.txt LICENSE bindings/dotnet/Hnapi.cs bindings/dotnet/Hnapi.csproj \
        bindings/java/src/ca/bc/hnsecure/hnapi/HnapiLibrary.java examples/c/send.c; do
        [ -s "$sdk/$need" ] || fail "$f has no $need"
      done
      if [[ "$t" == *-windows-* ]]; then
        shared=$sdk/bin/hnapi.dll
        for need in lib/libhnapi.dll.a lib/hnapi.def; do [ -s "$sdk/$need" ] || fail "$f has no $need"; done
        grep -q "lib /def:hnapi.def" "$sdk/lib/hnapi.def" || fail "$f: hnapi.def without its MSVC note"
      else
        shared=$sdk/lib/libhnapi.so
        [ -s "$sdk/lib/pkgconfig/hnapi.pc" ] || fail "$f has no lib/pkgconfig/hnapi.pc"
        grep -q '^prefix=${pcfiledir}/../..$' "$sdk/lib/pkgconfig/hnapi.pc" || fail "$f: hnapi.pc's prefix is not relative"
        [ -s "$sdk/lib/libhnapi.a" ] || fail "$f has no lib/libhnapi.a"
        if "$(cross_tool "$t" objdump)" -h "$sdk/lib/libhnapi.a" | grep -q '\.debug_'; then
          fail "$f: lib/libhnapi.a has debug sections"
        fi
      fi
      [ -s "$shared" ] || fail "$f has no ${shared#"$sdk"/}"
      desc=$(file -b "$shared")
      echo "${shared#"$sdk"/}: $desc"
      [[ "$desc" == *stripped* && "$desc" != *"not stripped"* ]] || fail "$f: ${shared#"$sdk"/} is not stripped"
      # The client side only, and within the README's size budget.
      client_only=("$shared")
      [ -s "$sdk/lib/libhnapi.a" ] && client_only+=("$sdk/lib/libhnapi.a")
      bash tools/client_only.sh "${client_only[@]}" || fail "$f: its library holds server parts"
      size=$(wc -c <"$shared")
      budget=$(size_budget "$t")
      echo "${shared#"$sdk"/}: $size bytes, budget $budget"
      [ "$size" -le "$budget" ] || fail "$f: ${shared#"$sdk"/} is $size bytes, over its budget of $budget (README, Packages)"
      ;;
    hnapi-*.jar)
      echo "--> $f"
      jar --list --file "$dir/$f" >"$work/jar.txt"
      grep -q '^ca/bc/hnsecure/hnapi/HnapiLibrary.class$' "$work/jar.txt" || fail "$f has no binding classes"
      grep -E '^(linux|win32)-[a-z0-9-]+/(libhnapi\.so|hnapi\.dll)$' "$work/jar.txt" || fail "$f has no native library"
      ;;
    Hnapi.*.nupkg)
      echo "--> $f"
      unzip -l "$dir/$f" >"$work/nupkg.txt"
      cat "$work/nupkg.txt"
      for need in Hnapi.nuspec '\[Content_Types\].xml' _rels/.rels lib/net6.0/Hnapi.dll; do
        grep -q " $need\$" "$work/nupkg.txt" || fail "$f has no $need"
      done
      grep -Eq ' runtimes/(win-x64|win-x86|linux-x64)/native/(hnapi\.dll|libhnapi\.so)$' "$work/nupkg.txt" || fail "$f has no native library"
      ;;
  esac
done
echo "--> packages: ${#files[@]} checked"
