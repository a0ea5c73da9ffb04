#!/usr/bin/env bash
# Builds and runs the Java bindings' test and example against a running sandbox.
#
#   tests/java/run.sh JAR|LIBDIR CLIENT_TOML SERVER_TOML [PANIC_LIBDIR]
#
# JAR is hnapi-VERSION.jar from tools/package.sh: the binding's classes and the native
# library come from it alone (JNA's class-path resource, e.g. linux-x86-64/libhnapi.so), with
# no jna.library.path, and the example's run checks that JNA loaded it from the jar. Or
# LIBDIR, a folder with libhnapi.so (target/debug or target/release): then the binding is
# compiled from bindings/java/src and found with -Djna.library.path. CLIENT_TOML and SERVER_TOML
# are the sandbox's (`hnsecure sandbox --dir DIR --port 0` prints them). Needs Java 17+
# (javac) and JNA (Debian: libjna-java, /usr/share/java/jna.jar; or set JNA_JAR).
# Compiles with -Xlint:all -Werror into a temporary folder (the README's Java snippet too,
# as written), runs tests/java/HnapiTest (which also compares HnetRtrn.java with
# include/hnapi.h) and examples/java/Send (whose answer must contain MSA|AA|).
# PANIC_LIBDIR, when given, holds a libhnapi.so built with the test-only feature
# `test-panic`: HnapiTest --panic-case then runs in a JVM of its own with that library and
# HNAPI_TEST_PANIC=hnapi_send_receive. Exits non-zero on any failure.
#
# The JVM that runs them (javac is always the one on PATH: class files are portable):
#   JAVA=PATH       the java to run (default: java on PATH), e.g. a 32-bit JVM
#   JAVA_OPTS=...   extra JVM options, split on spaces (e.g. where a 32-bit JNA's
#                   libjnidispatch is: -Djna.nosys=false -Djava.library.path=DIR)
#   HNAPI_JAVA_BITS=32|64  HnapiTest then checks that the JVM is of that size
# tools/cross.sh runs them so with a 32-bit JVM and an i686 libhnapi.so.
set -euo pipefail

if [ "$#" -ne 3 ] && [ "$#" -ne 4 ]; then
  echo "usage: $0 LIBDIR CLIENT_TOML SERVER_TOML [PANIC_LIBDIR]" >&2
  exit 2
fi
jar=""
libdir=""
if [[ "$1" == *.jar ]]; then
  jar=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
else
  libdir=$(cd "$1" && pwd)
fi
client_toml=$2
server_toml=$3
panic_libdir=""
if [ "$#" -eq 4 ]; then
  panic_libdir=$(cd "$4" && pwd)
  [ -e "$panic_libdir/libhnapi.so" ] || { echo "missing: $panic_libdir/libhnapi.so" >&2; exit 1; }
fi
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
jna=${JNA_JAR:-/usr/share/java/jna.jar}
java=${JAVA:-java}
# shellcheck disable=SC2206
java_opts=(${JAVA_OPTS:-})
[ -z "${HNAPI_JAVA_BITS:-}" ] || java_opts+=("-Dhnapi.bits=$HNAPI_JAVA_BITS")

step() { printf '\n--> %s\n' "$*"; }

if [ -n "$jar" ]; then
  lib_check=$jar
  # From the jar alone: nothing on the loader's path may hold a libhnapi.
  case ":${LD_LIBRARY_PATH:-}:" in *hnapi*|*/target/*) echo "LD_LIBRARY_PATH must not point at a libhnapi when testing the jar: $LD_LIBRARY_PATH" >&2; exit 1 ;; esac
  if ldconfig -p 2>/dev/null | grep -q libhnapi; then echo "a libhnapi is installed system-wide: JNA would load it before the jar's" >&2; exit 1; fi
else
  lib_check=$libdir/libhnapi.so
fi
for f in "$lib_check" "$client_toml" "$server_toml" "$jna"; do
  [ -e "$f" ] || { echo "missing: $f" >&2; exit 1; }
done
command -v javac >/dev/null || { echo "javac is missing (Debian: openjdk-17-jdk-headless)" >&2; exit 1; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [ -n "$jar" ]; then
  # The binding is the jar's; compiled against it, run with it, no library path.
  bindings=()
  cp_extra=$jar:$jna
  lib_opts=()
else
  bindings=("$root"/bindings/java/src/ca/bc/hnsecure/hnapi/*.java)
  cp_extra=$jna
  lib_opts=("-Djna.library.path=$libdir")
fi

step "javac bindings + test (-Xlint:all -Werror)"
javac -Xlint:all -Werror -encoding UTF-8 -cp "$cp_extra" -d "$out/test" "${bindings[@]}" "$root/tests/java/HnapiTest.java"

step "javac bindings + example (-Xlint:all -Werror)"
javac -Xlint:all -Werror -encoding UTF-8 -cp "$cp_extra" -d "$out/example" "${bindings[@]}" "$root/examples/java/Send.java"

step "javac bindings + the README's Java snippet, as written (-Xlint:all -Werror)"
mkdir -p "$out/readme-src"
"$root/tools/readme_snippet.sh" "$root/README.md" '### Java (JNA)' java >"$out/readme-src/Readme.java"
javac -Xlint:all -Werror -encoding UTF-8 -cp "$cp_extra" -d "$out/readme" "${bindings[@]}" "$out/readme-src/Readme.java"

java_run() {
  local classes=$1
  shift
  "$java" "${java_opts[@]}" -cp "$classes:$cp_extra" "${lib_opts[@]}" "$@"
}

# The test runs under LC_ALL=C, where Java's default charset is ASCII: the bindings must
# still pass strings as UTF-8. (Not when a path is not ASCII: Java could not name it then.)
locale_env=(env LC_ALL=C LANG=C)
if LC_ALL=C grep -q '[^ -~]' <<<"$root$libdir$client_toml$server_toml"; then
  locale_env=(env)
fi
step "${locale_env[*]} $java HnapiTest $client_toml $server_toml"
"${locale_env[@]}" "$java" "${java_opts[@]}" -cp "$out/test:$cp_extra" "${lib_opts[@]}" -Dhnapi.header="$root/include/hnapi.h" \
  HnapiTest "$client_toml" "$server_toml"

if [ -n "$panic_libdir" ]; then
  step "HNAPI_TEST_PANIC=hnapi_send_receive java HnapiTest --panic-case $client_toml (the library in $panic_libdir)"
  # The panic's own report on stderr is expected; a backtrace of it would only be noise.
  HNAPI_TEST_PANIC=hnapi_send_receive RUST_BACKTRACE=0 "$java" "${java_opts[@]}" -cp "$out/test:$cp_extra" -Djna.library.path="$panic_libdir" \
    HnapiTest --panic-case "$client_toml"
fi

step "$java Send $client_toml tests/data/v5_2_5_4_request.hl7"
debug_load=()
[ -z "$jar" ] || debug_load=(-Djna.debug_load=true)
if ! answer=$(java_run "$out/example" "${debug_load[@]}" Send "$client_toml" "$root/tests/data/v5_2_5_4_request.hl7" 2>"$out/send.err"); then
  cat "$out/send.err" >&2
  echo "Send failed" >&2
  exit 1
fi
printf '%s\n' "$answer"
if [ -n "$jar" ]; then
  # JNA says where it found the library: the jar's resource, nowhere else.
  if ! grep -q "Found library resource at jar:file:$jar!/" "$out/send.err"; then
    echo "JNA did not load libhnapi from $jar:" >&2
    grep -i "hnapi" "$out/send.err" >&2 || cat "$out/send.err" >&2
    exit 1
  fi
  grep "Found library resource at" "$out/send.err"
fi
if ! grep -q 'MSA|AA|' <<<"$answer"; then
  echo "Send's answer has no MSA|AA|" >&2
  exit 1
fi

step "java bindings: all passed"
