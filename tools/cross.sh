#!/usr/bin/env bash
# The 32-bit and big-endian checks of hnsecure (test.sh runs this near its end; it also
# runs alone). On Debian 12 it installs what it needs when it is missing, builds, runs
# everything below and exits non-zero on any failure.
#
#   tools/cross.sh
#
# Big-endian, powerpc64-unknown-linux-gnu (the AIX-class host) under qemu-ppc64:
#   1. the library's unit tests (`cargo test --lib`), the known-answer vectors among them
#      (envelope, frames, HL7Xfer: tests/data/envelope/kat.txt, tests/data/kat/*.txt);
#   2. `hnsecure send` (ppc64) and examples/c/send.c (built with powerpc64-linux-gnu-gcc
#      against the ppc64 libhnapi.so) against a native x86_64 sandbox on loopback;
#   3. the native `hnsecure send` against a ppc64 `hnsecure sandbox` (its gateway, HNGard
#      and simulator all big-endian) on loopback;
#   4. two integration tests: tests/envelope.rs and tests/cli_secure.rs (which runs the
#      ppc64 `hnsecure` gard, gate, sandbox and send as processes, through qemu).
#   Every answer is compared byte for byte with the one the all-native run gets for the
#   same request, after masking what is not deterministic: MSH-7 (the answer's time) and
#   MSH-10 (its control id) of each MSH segment, nothing else.
# 32-bit, i686-unknown-linux-gnu (native on an x86_64 kernel, no emulation):
#   5. the C tests (tests/c/test_hnapi.c, -Wall -Wextra -Werror, AddressSanitizer) against
#      the i686 libhnapi.so and the native sandbox;
#   6. the Java binding's tests (tests/java/run.sh) in a 32-bit JVM (openjdk-17 i386, with
#      JNA's i386 libjnidispatch) against the same library and sandbox.
#
# Environment: CROSS_SKIP_PPC64=1 or CROSS_SKIP_I686=1 leave a part out (for working on
# the other; CI runs both).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$(pwd)

step() { printf '\n==> cross: %s\n' "$*"; }
started=$SECONDS

# apt_install PACKAGE...: installs the Debian packages that are not installed yet (as
# test.sh's does).
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "installing: ${missing[*]}"
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

ppc64=powerpc64-unknown-linux-gnu
i686=i686-unknown-linux-gnu
do_ppc64=1; [ "${CROSS_SKIP_PPC64:-}" = 1 ] && do_ppc64=0
do_i686=1; [ "${CROSS_SKIP_I686:-}" = 1 ] && do_i686=0
sysroot_ppc64=/usr/powerpc64-linux-gnu
qemu=(qemu-ppc64 -L "$sysroot_ppc64")
jvm32=/usr/lib/jvm/java-17-openjdk-i386/bin/java
jna=${JNA_JAR:-/usr/share/java/jna.jar}
cross_dir=$root/target/cross

step "toolchain"
if command -v apt-get >/dev/null; then
  apt_install gcc libc6-dev python3 file libjna-java
  [ "$do_ppc64" = 1 ] && apt_install gcc-powerpc64-linux-gnu libc6-dev-ppc64-cross qemu-user
  if [ "$do_i686" = 1 ]; then
    apt_install gcc-i686-linux-gnu libc6-dev-i386-cross libasan8-i386-cross
    if ! dpkg --print-foreign-architectures | grep -qx i386; then
      sudo_=(); [ "$(id -u)" -eq 0 ] || sudo_=(sudo)
      "${sudo_[@]}" dpkg --add-architecture i386
      "${sudo_[@]}" apt-get update -qq
    fi
    # A 32-bit JVM beside the 64-bit one: both from the same source version (Multi-Arch:
    # same), so the 64-bit one is brought to the same version with it when it is older.
    if [ ! -x "$jvm32" ]; then
      apt_install openjdk-17-jre-headless:i386 openjdk-17-jre-headless openjdk-17-jdk-headless
    fi
    # The 32-bit AddressSanitizer runtime where the i386 loader finds it, and libffi for
    # JNA's i386 dispatch library.
    apt_install libasan8:i386 libffi8:i386
  fi
fi
if command -v rustup >/dev/null; then
  installed=$(rustup target list --installed)
  for t in $([ "$do_ppc64" = 1 ] && echo "$ppc64") $([ "$do_i686" = 1 ] && echo "$i686"); do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
  done
fi

# The cross builds keep no incremental state and no debug info: they are built to be run
# here, not debugged, and a debug build of this crate for another target is otherwise
# gigabytes of disk.
xcargo() { CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0 cargo "$@"; }
export CARGO_TARGET_POWERPC64_UNKNOWN_LINUX_GNU_LINKER=powerpc64-linux-gnu-gcc
export CC_powerpc64_unknown_linux_gnu=powerpc64-linux-gnu-gcc
export AR_powerpc64_unknown_linux_gnu=powerpc64-linux-gnu-ar
export CARGO_TARGET_POWERPC64_UNKNOWN_LINUX_GNU_RUNNER="qemu-ppc64 -L $sysroot_ppc64"
export CARGO_TARGET_I686_UNKNOWN_LINUX_GNU_LINKER=i686-linux-gnu-gcc
export CC_i686_unknown_linux_gnu=i686-linux-gnu-gcc
export AR_i686_unknown_linux_gnu=i686-linux-gnu-ar

work=$(mktemp -d)
pids=()
restore_bin=""
cleanup() {
  local pid
  if [ -n "$restore_bin" ] && [ -e "$restore_bin.ppc64" ]; then
    rm -f "$restore_bin"
    mv "$restore_bin.ppc64" "$restore_bin"
  fi
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# start_sandbox NAME COMMAND...: starts a sandbox (port 0) in $work/NAME; sets `ready`.
start_sandbox() {
  local name=$1
  shift
  "$@" sandbox --dir "$work/$name" --port 0 --log-level warn >"$work/$name.ready" 2>"$work/$name.err" &
  pids+=($!)
  local pid=$!
  for _ in $(seq 1 1200); do
    grep -q "^ready " "$work/$name.ready" 2>/dev/null && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/$name.err"; echo "the $name sandbox did not start" >&2; exit 1; }
    sleep 0.1
  done
  ready=$(head -1 "$work/$name.ready")
  [[ "$ready" == "ready "* ]] || { echo "the $name sandbox printed no ready line" >&2; exit 1; }
  echo "$name: $ready"
}
client_config() { sed -n 's/.* client_config=\([^ ]*\).*/\1/p' <<<"$1"; }
server_config() { sed -n 's/.* server_config=\([^ ]*\).*/\1/p' <<<"$1"; }

# mask FILE: the answer bytes with MSH-7 and MSH-10 of each MSH segment replaced by `*`
# (segments end in CR; answers or lines may be separated by LF). Nothing else changes.
mask() {
  python3 - "$1" <<'EOF'
import re, sys
data = open(sys.argv[1], "rb").read()
def one(m):
    fields = m.group(0).split(b"|")
    for i in (6, 9):  # fields[0] is "MSH", fields[1] the encoding characters = MSH-2
        if i < len(fields):
            fields[i] = b"*"
    return b"|".join(fields)
sys.stdout.buffer.write(re.sub(rb"MSH\|[^\r\n]*", one, data))
EOF
}

# same NAME EXPECTED GOT: the two answers equal once masked, and the expected one is an answer.
same() {
  local name=$1 expected=$2 got=$3
  mask "$expected" >"$expected.masked"
  mask "$got" >"$got.masked"
  grep -q "MSA|A" "$expected" || { echo "$name: the native run got no answer" >&2; cat "$expected" >&2; exit 1; }
  if ! cmp -s "$expected.masked" "$got.masked"; then
    echo "$name: the answers differ (MSH-7 and MSH-10 masked):" >&2
    diff <(tr '\r' '\n' <"$expected.masked") <(tr '\r' '\n' <"$got.masked") >&2 || true
    exit 1
  fi
  echo "$name: identical to the native run ($(wc -c <"$got") bytes; MSH-7 and MSH-10 masked)"
}

# The requests: four Volume 5 transactions and a loopback through HNSIM-ECHO whose
# answer carries every segment of the request back (bytes 0x80-0xFF in it included).
requests=(tests/data/v5_2_5_4_request.hl7 tests/data/v5_2_5_5_request.hl7 tests/data/v5_2_5_6_request.hl7)
printf 'MSH|^~\\&|CROSS|BC00000098|HNSIM-ECHO|BC0003000|20261202120000||R03|CROSS0001|D|2.3\rPID||9029274643^^^BC^PH\rNTE|||caf\xc3\xa9 \\T\\ 0123456789 \xff\xfe\rZZZ|%s\r' \
  "$(head -c 3000 /dev/zero | tr '\0' 'x')" >"$work/echo.hl7"
requests+=("$work/echo.hl7")

step "native x86_64: hnsecure and libhnapi (debug), the reference answers"
cargo build --locked --bin hnsecure --lib
native_bin=$root/target/debug/hnsecure
start_sandbox native "$native_bin"
native_ready=$ready
native_client=$(client_config "$native_ready")
native_server=$(server_config "$native_ready")
"$native_bin" send --config "$native_client" --concurrency 1 "${requests[@]}" >"$work/native-send.out"
gcc -Wall -Wextra -Werror -std=c11 -Iinclude examples/c/send.c -Ltarget/debug -lhnapi -o "$work/send-native"
for r in "${requests[@]}"; do
  LD_LIBRARY_PATH=target/debug "$work/send-native" "$native_client" "$r" >"$work/native-c-$(basename "$r").out"
done

if [ "$do_ppc64" = 1 ]; then
  step "big-endian: cargo test --target $ppc64 --lib (under qemu-ppc64)"
  t0=$SECONDS
  xcargo test --locked --target "$ppc64" --lib
  echo "ppc64 unit tests: $((SECONDS - t0)) s (build included)"

  step "big-endian: hnsecure, libhnapi and two integration tests for $ppc64"
  # One build for all three: a separate `cargo build --bin hnsecure --lib` resolves the
  # dependencies' features without the dev-dependencies, and the two builds would relink
  # each other's hnsecure every run.
  t0=$SECONDS
  xcargo test --locked --target "$ppc64" --test envelope --test cli_secure --no-run 2>&1 | tee "$work/no-run.log"
  mapfile -t test_exes < <(sed -n 's/^ *Executable .* (\(.*\))$/\1/p' "$work/no-run.log")
  [ "${#test_exes[@]}" -eq 2 ] || { echo "expected two test executables" >&2; exit 1; }
  # A test build makes the library only as the tests link it (rlib): the shared library
  # the C example loads needs a build of the library itself, the vendor's (client side
  # only, no `server` feature).
  xcargo build --locked --target "$ppc64" --lib --no-default-features
  be_dir=$root/target/$ppc64/debug
  file -L "$be_dir/libhnapi.so" | grep -q "64-bit MSB.*PowerPC" || { file -L "$be_dir/libhnapi.so"; exit 1; }
  file "$be_dir/hnsecure" | grep -q "64-bit MSB.*PowerPC" || { file "$be_dir/hnsecure"; exit 1; }
  echo "ppc64 build: $((SECONDS - t0)) s"

  step "big-endian client: ppc64 hnsecure send against the x86_64 sandbox"
  "${qemu[@]}" "$be_dir/hnsecure" send --config "$native_client" --concurrency 1 "${requests[@]}" >"$work/be-send.out"
  same "ppc64 hnsecure send -> x86_64 gateway" "$work/native-send.out" "$work/be-send.out"

  step "big-endian C: examples/c/send.c (powerpc64-linux-gnu-gcc, ppc64 libhnapi.so) against the x86_64 sandbox"
  powerpc64-linux-gnu-gcc -Wall -Wextra -Werror -std=c11 -Iinclude examples/c/send.c -L"$be_dir" -lhnapi -o "$work/send-be"
  file "$work/send-be" | grep -q "64-bit MSB.*PowerPC" || { file "$work/send-be"; exit 1; }
  for r in "${requests[@]}"; do
    n=$(basename "$r")
    LD_LIBRARY_PATH="$be_dir" "${qemu[@]}" "$work/send-be" "$native_client" "$r" >"$work/be-c-$n.out"
    same "ppc64 send.c $n -> x86_64 gateway" "$work/native-c-$n.out" "$work/be-c-$n.out"
  done

  step "big-endian gateway: the x86_64 hnsecure send against a ppc64 sandbox (gateway, HNGard, simulator)"
  t0=$SECONDS
  start_sandbox be "${qemu[@]}" "$be_dir/hnsecure"
  echo "ppc64 sandbox started in $((SECONDS - t0)) s"
  "$native_bin" send --config "$(client_config "$ready")" --concurrency 1 "${requests[@]}" >"$work/to-be.out"
  same "x86_64 hnsecure send -> ppc64 gateway" "$work/native-send.out" "$work/to-be.out"

  step "big-endian: integration tests envelope and cli_secure (the ppc64 hnsecure run as processes)"
  t0=$SECONDS
  # cli_secure spawns CARGO_BIN_EXE_hnsecure, a ppc64 program this kernel cannot start
  # (no binfmt_misc here, and qemu-user does not follow exec). For this run that path is
  # a script starting it under qemu; the program is put back afterwards (and by the exit
  # trap), so cargo's next build finds what it built.
  be_bin=$be_dir/hnsecure
  mv "$be_bin" "$be_bin.ppc64"
  restore_bin=$be_bin
  printf '#!/bin/sh\nexec qemu-ppc64 -L %s %s.ppc64 "$@"\n' "$sysroot_ppc64" "$be_bin" >"$be_bin"
  chmod +x "$be_bin"
  for exe in "${test_exes[@]}"; do
    "${qemu[@]}" "$exe"
  done
  rm "$be_bin"
  mv "$be_bin.ppc64" "$be_bin"
  restore_bin=""
  echo "ppc64 integration tests: $((SECONDS - t0)) s"
fi

if [ "$do_i686" = 1 ]; then
  step "32-bit: libhnapi for $i686"
  t0=$SECONDS
  xcargo build --locked --target "$i686" --lib --no-default-features
  lib32=$root/target/$i686/debug
  file -L "$lib32/libhnapi.so" | grep -q "32-bit LSB.*Intel 80386" || { file -L "$lib32/libhnapi.so"; exit 1; }
  echo "i686 build: $((SECONDS - t0)) s"

  step "32-bit C tests: tests/c/test_hnapi.c (i686-linux-gnu-gcc, AddressSanitizer)"
  i686-linux-gnu-gcc -Wall -Wextra -Werror -std=c11 -g -fsanitize=address -fno-omit-frame-pointer \
    -Iinclude tests/c/test_hnapi.c -L"$lib32" -lhnapi -lpthread -o "$work/test_hnapi32"
  file "$work/test_hnapi32" | grep -q "32-bit LSB" || { file "$work/test_hnapi32"; exit 1; }
  LD_LIBRARY_PATH="$lib32" "$work/test_hnapi32" "$native_client" "$native_server"

  step "32-bit C: examples/c/send.c (i686) gets the native run's answers"
  i686-linux-gnu-gcc -Wall -Wextra -Werror -std=c11 -Iinclude examples/c/send.c -L"$lib32" -lhnapi -o "$work/send32"
  for r in "${requests[@]}"; do
    n=$(basename "$r")
    LD_LIBRARY_PATH="$lib32" "$work/send32" "$native_client" "$r" >"$work/i686-c-$n.out"
    same "i686 send.c $n -> x86_64 gateway" "$work/native-c-$n.out" "$work/i686-c-$n.out"
  done

  step "32-bit Java: tests/java/run.sh in a 32-bit JVM"
  # Debian's JNA jar holds no native code: its dispatch library comes from libjna-jni,
  # which cannot be installed for two architectures at once. The i386 one is unpacked
  # from its package here instead, and found through java.library.path.
  jni32=$cross_dir/libjna-jni-i386
  jna_version=$(dpkg-query -W -f='${Version}' libjna-java)
  if [ ! -e "$jni32/$jna_version/usr/lib/i386-linux-gnu/jni/libjnidispatch.system.so" ]; then
    rm -rf "$jni32"
    mkdir -p "$jni32/download"
    (cd "$jni32/download" && apt-get download "libjna-jni:i386=$jna_version")
    dpkg-deb -x "$jni32"/download/libjna-jni_*_i386.deb "$jni32/$jna_version"
  fi
  JAVA=$jvm32 JNA_JAR=$jna HNAPI_JAVA_BITS=32 \
    JAVA_OPTS="-Djna.nosys=false -Djava.library.path=$jni32/$jna_version/usr/lib/i386-linux-gnu/jni" \
    bash tests/java/run.sh "$lib32" "$native_client" "$native_server"
fi

step "all cross checks passed ($((SECONDS - started)) s)"
