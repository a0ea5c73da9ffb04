#!/usr/bin/env bash
# The one test command of hnsecure: on a fresh Debian or Ubuntu machine it installs what
# it needs when it is missing, then runs every check. CI runs it through .ci/run.
#
#   ./test.sh            everything
#
# Steps: rustfmt and clippy components, formatting, clippy (warnings are errors), the
# dependency audit (cargo audit), the Python peers' virtual environment (python-hl7 and
# hl7apy, under target/), the Node peers (node-hl7-client and node-hl7-server, npm ci into
# target/node-peers), the whole Rust test suite (unit, Volume 5 examples, property
# tests, end to end over TLS, CLI, fuzz regressions, doc examples), then the C ABI: the header is what cbindgen makes,
# the C tests (with AddressSanitizer), a forced panic (a test-panic build), the C examples
# (shared, static, pkg-config), the C# and Java bindings' tests and examples, and the Rust
# example — all against a sandbox;
# then the client daemon with python-hl7's MLLP client and the C example in legacy mode
# (HL7Xfer); then tools/cross.sh: the C and Java tests against an i686 libhnapi, and the
# unit tests and loopback exchanges of a big-endian (powerpc64, qemu) build; then Windows,
# 64- and 32-bit, under Wine (tools/windows.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

# step NAME: starts a step; each step's duration is printed when the next one starts, and
# all of them in a table at the end (of a passing run, and of a failing one: the last row is
# the step that failed).
step_names=()
step_secs=()
step_current=""
step_started=$SECONDS
step_end() {
  [ -n "$step_current" ] || return 0
  local took=$((SECONDS - step_started))
  step_names+=("$step_current")
  step_secs+=("$took")
  printf '    (%d s)\n' "$took"
  step_current=""
}
step() {
  step_end
  step_current="$*"
  step_started=$SECONDS
  printf '\n==> %s\n' "$*"
}
durations() {
  step_end
  local i total=0
  printf '\n%6s  %s\n' "secs" "step"
  for i in "${!step_names[@]}"; do
    printf '%6d  %s\n' "${step_secs[$i]}" "${step_names[$i]}"
    total=$((total + step_secs[i]))
  done
  printf '%6d  %s\n' "$total" "in all"
}
trap durations EXIT
have() { command -v "$1" >/dev/null 2>&1; }

# apt_install PACKAGE...: installs the Debian packages that are not installed yet.
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  echo "installing: ${missing[*]}"
  # apt's and dpkg's progress go to a log, shown only when the install fails.
  local log
  log=$(mktemp)
  if ! { "${sudo[@]}" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
      "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

step "toolchain"
if ! have cargo; then
  echo "cargo is missing: install Rust with rustup (https://rustup.rs), then run ./test.sh again" >&2
  exit 1
fi
if have apt-get; then
  apt_install gcc libc6-dev pkg-config
  if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
    # The server binaries for the PostgreSQL store's tests, which start private servers of
    # their own (initdb in a temporary folder, a free port, as the user nobody); no default
    # cluster is wanted.
    sudo_=(); [ "$(id -u)" -eq 0 ] || sudo_=(sudo)
    "${sudo_[@]}" mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' | "${sudo_[@]}" tee /etc/postgresql-common/createcluster.d/hnsecure.conf >/dev/null
    apt_install postgresql
  fi
fi
if have rustup; then
  installed=$(rustup component list --installed 2>/dev/null || true)
  for component in rustfmt clippy; do
    grep -q "^$component" <<<"$installed" || rustup component add "$component"
  done
fi
cargo --version
rustc --version

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings
# The vendor library, and its unit tests, without the `server` feature.
cargo clippy --locked --lib --no-default-features -- -D warnings
cargo clippy --locked --lib --no-default-features --profile test -- -D warnings

step "dependency audit (cargo audit, RustSec advisories)"
# An advisory that no update fixes is ignored here with `--ignore ID` and a comment saying
# why; none is today. The database: the offline copy in shared/ beside the repository when
# it is there (CI puts it there too), else cargo audit's own fetch; with neither, skipped.
have cargo-audit || cargo install cargo-audit --locked || true
advisory_db="$(cd .. && pwd)/shared/advisory-db"
if ! have cargo-audit; then
  echo "dependency audit skipped: cargo-audit is not installed and could not be installed"
elif [ -d "$advisory_db" ]; then
  cargo audit --no-fetch --db "$advisory_db"
else
  audit_log=$(mktemp)
  if cargo audit 2>&1 | tee "$audit_log"; then
    :
  elif grep -q "Scanning" "$audit_log"; then
    # The database was there and the lock file was scanned: a real finding.
    rm -f "$audit_log"
    exit 1
  else
    echo "dependency audit skipped: no $advisory_db, and cargo audit could not fetch its database"
  fi
  rm -f "$audit_log"
fi

step "Python peers: a virtual environment with python-hl7 and hl7apy"
# Before the Rust tests: some start Python receivers from it (tests/common/differential.rs
# makes it the same way when it is missing). Pinned; keep the versions in step with it.
if have apt-get; then
  apt_install python3 python3-venv
fi
venv=target/python-hl7
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import hl7, hl7apy" 2>/dev/null ||
  "$venv/bin/python" -m pip install --quiet "hl7==0.4.5" "hl7apy==1.3.5"

step "Node peers: node-hl7-client 3.2.0 and node-hl7-server 2.5.0, under target/node-peers"
# Before the Rust tests: tests/interop.rs drives them with node (and makes this folder the
# same way when it is missing; without node it skips them loudly, or fails when CI or
# HNSECURE_REQUIRE_PEERS is set). Pinned by tests/node/package-lock.json. Debian's nodejs
# only when there is no node at all (a newer one, from NodeSource say, is kept). OpenSSL's
# s_client is driven by the same tests.
if have apt-get; then
  have node || apt_install nodejs npm
  have openssl || apt_install openssl
fi
if have node && have npm; then
  node --version
  mkdir -p target/node-peers
  cp tests/node/package.json tests/node/package-lock.json target/node-peers/
  npm ci --prefix target/node-peers --no-audit --no-fund
else
  echo "node is missing: tests/interop.rs will skip node-hl7-client and node-hl7-server"
fi

step "cargo test"
cargo test --locked

step "C ABI: the header is what cbindgen 0.29.4 makes"
if ! cbindgen --version 2>/dev/null | grep -q "0.29.4"; then
  cargo install cbindgen --locked --version 0.29.4
fi
work=$(mktemp -d)
sandbox_pid=""
relay_pid=""
cleanup() {
  if [ -n "$relay_pid" ]; then kill "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; fi
  if [ -n "$sandbox_pid" ]; then kill "$sandbox_pid" 2>/dev/null || true; wait "$sandbox_pid" 2>/dev/null || true; fi
  rm -rf "$work"
  durations
}
trap cleanup EXIT
cbindgen --quiet --config cbindgen.toml --crate hnsecure --output "$work/hnapi.h"
if ! cmp -s "$work/hnapi.h" include/hnapi.h; then
  echo "include/hnapi.h is stale; regenerate it:"
  echo "  cbindgen --quiet --config cbindgen.toml --crate hnsecure --output include/hnapi.h"
  diff -u include/hnapi.h "$work/hnapi.h" | head -40 || true
  exit 1
fi

step "C ABI: build the library, install it with hnapi.pc, start a sandbox"
if have apt-get; then
  apt_install pkg-config libasan8 mono-mcs libjna-java
  have javac || apt_install openjdk-17-jdk-headless
fi
bash tools/install.sh --debug "$work/prefix"
# What a vendor links holds the client side only: no gateway, HNGard, sandbox or SQLite.
bash tools/client_only.sh "$work/prefix/lib/libhnapi.so" "$work/prefix/lib/libhnapi.a"
cargo build --locked --bin hnsecure --examples
lib="$work/prefix/lib"
target/debug/hnsecure sandbox --dir "$work/sandbox" --port 0 --log-level warn > "$work/ready" &
sandbox_pid=$!
for _ in $(seq 1 300); do
  grep -q "^ready " "$work/ready" 2>/dev/null && break
  kill -0 "$sandbox_pid" 2>/dev/null || { echo "the sandbox did not start"; exit 1; }
  sleep 0.2
done
ready=$(head -1 "$work/ready")
echo "$ready"
client_toml=$(sed -n 's/.* client_config=\([^ ]*\).*/\1/p' <<<"$ready")
server_toml=$(sed -n 's/.* server_config=\([^ ]*\).*/\1/p' <<<"$ready")
[ -n "$client_toml" ] && [ -n "$server_toml" ] || { echo "no ready line from the sandbox"; exit 1; }

step "C ABI: C tests (-Wall -Wextra -Werror, AddressSanitizer)"
gcc -Wall -Wextra -Werror -std=c11 -g -fsanitize=address -fno-omit-frame-pointer \
  -Iinclude tests/c/test_hnapi.c -L"$lib" -lhnapi -lpthread -o "$work/test_hnapi"
LD_LIBRARY_PATH="$lib" "$work/test_hnapi" "$client_toml" "$server_toml"

step "C ABI: a panic inside the library gives HNET_RTRN_INTERNALERROR (a test-panic build)"
# The same library built with the test-only feature `test-panic`: the exported function
# named by HNAPI_TEST_PANIC panics inside its boundary (or, with "transaction", every
# transaction panics inside the library). Then the normal build again, so
# target/debug/libhnapi.so is never the test build.
cargo build --locked --lib --no-default-features --features test-panic
mkdir -p "$work/panic"
cp target/debug/libhnapi.so "$work/panic/libhnapi.so"
cargo build --locked --lib --no-default-features
gcc -Wall -Wextra -Werror -std=c11 -g -fsanitize=address -fno-omit-frame-pointer \
  -Iinclude tests/c/test_panic.c -L"$work/panic" -lhnapi -o "$work/test_panic"
for point in hnapi_set_log_callback hnapi_client_open hnapi_send_receive hnapi_send hnapi_receive \
  hnapi_client_close hnapi_server_open hnapi_server_wait_connected hnapi_server_receive \
  hnapi_server_respond hnapi_server_close transaction; do
  # A panic in a *_close leaves its handle unreleased, as it must: no leak check then.
  leaks=1; [[ "$point" == *_close ]] && leaks=0
  if ! ASAN_OPTIONS="detect_leaks=$leaks" HNAPI_TEST_PANIC=$point LD_LIBRARY_PATH="$work/panic" \
    "$work/test_panic" "$client_toml" "$server_toml" 2>"$work/panic.err"; then
    cat "$work/panic.err"
    exit 1
  fi
  # The library's panics go to its log, never to the host's standard error.
  if grep -q "panicked" "$work/panic.err"; then
    echo "a panic in $point was reported on standard error:"
    cat "$work/panic.err"
    exit 1
  fi
done

step "C ABI: C examples (shared, static, and through pkg-config)"
export PKG_CONFIG_PATH="$lib/pkgconfig"
# shellcheck disable=SC2046
gcc -Wall -Wextra -Werror -std=c11 examples/c/send.c $(pkg-config --cflags --libs hnapi) -o "$work/send"
# shellcheck disable=SC2046
gcc -Wall -Wextra -Werror -std=c11 examples/c/server.c $(pkg-config --cflags --libs hnapi) -o "$work/server"
# shellcheck disable=SC2046
gcc -Wall -Wextra -Werror -std=c11 examples/c/send.c $(pkg-config --cflags hnapi) "$lib/libhnapi.a" \
  $(pkg-config --static --libs hnapi | sed 's/-L[^ ]*//g; s/-lhnapi//') -o "$work/send-static"
if ldd "$work/send-static" | grep -q libhnapi; then echo "send-static links libhnapi dynamically"; exit 1; fi
LD_LIBRARY_PATH="$lib" "$work/send" "$client_toml" tests/data/v5_2_5_4_request.hl7 | tee "$work/send.out"
# shellcheck disable=SC2046
gcc -Wall -Wextra -Werror -std=c11 examples/c/footprint.c $(pkg-config --cflags --libs hnapi) -o "$work/footprint"
LD_LIBRARY_PATH="$lib" "$work/footprint" "$client_toml" | tee "$work/footprint.out"
grep -Eq '^after_first_transaction rss_kib=[0-9]+ threads=[0-9]+$' "$work/footprint.out"
grep -q "^MSA|AA|20010915000017|" "$work/send.out"
"$work/send-static" "$client_toml" tests/data/v5_2_5_5_request.hl7 | grep -q "^MSA|AA|19980915000020|"
LD_LIBRARY_PATH="$lib" "$work/server" "$server_toml" 1 > "$work/server.out" &
server_pid=$!
printf 'MSH|^~\\&|CEXAMPLE|BC00000098|HNAPI-DEMO|BC0003000|20261123120000||R03|CEXAMPLE1|D|2.3\rPID||9029274643^^^BC^PH\r' > "$work/demo.hl7"
for _ in $(seq 1 50); do
  LD_LIBRARY_PATH="$lib" "$work/send" "$client_toml" "$work/demo.hl7" > "$work/demo.out"
  grep -q "HNPS007E" "$work/demo.out" || break   # until the server example is connected
  sleep 0.2
done
cat "$work/demo.out"
grep -q "^MSA|AA|CEXAMPLE1|" "$work/demo.out"
wait "$server_pid"
grep -q "answered request 1" "$work/server.out"

step "C ABI: C# binding (mono)"
bash tests/dotnet/run.sh "$lib" "$client_toml" "$server_toml" "$work/panic"

step "C ABI: Java binding (JNA)"
bash tests/java/run.sh "$lib" "$client_toml" "$server_toml" "$work/panic"

step "Rust example"
cargo run --locked --quiet --example send -- "$client_toml" tests/data/v5_2_5_4_request.hl7 | tr '\r' '\n' | grep -q "^MSA|AA|"

step "load and scale programs, short runs (the README's figures come from their release builds)"
target/debug/examples/load --quick
target/debug/examples/scale --quick

step "client daemon: python-hl7's MLLP client, and the C example in legacy mode"
relay_toml="$(dirname "$client_toml")/relay.toml"
{ cat "$client_toml"; printf '\n[listen]\nhl7xfer = "127.0.0.1:0"\nmllp = "127.0.0.1:0"\n'; } > "$relay_toml"
target/debug/hnsecure client --config "$relay_toml" --log-level warn > "$work/relay-ready" &
relay_pid=$!
for _ in $(seq 1 100); do
  grep -q "^ready " "$work/relay-ready" 2>/dev/null && break
  kill -0 "$relay_pid" 2>/dev/null || { echo "the client daemon did not start"; exit 1; }
  sleep 0.1
done
relay_ready=$(head -1 "$work/relay-ready")
echo "$relay_ready"
mllp=$(sed -n 's/.* mllp=\([^ ]*\).*/\1/p' <<<"$relay_ready")
hl7xfer=$(sed -n 's/.* hl7xfer=\([^ ]*\).*/\1/p' <<<"$relay_ready")
"$venv/bin/python" tests/python/mllp_engine.py "${mllp%:*}" "${mllp##*:}" tests/data
printf 'facility = "BC00000098"\ntransport = "hl7xfer"\nhnclient = "%s"\n' "$hl7xfer" > "$work/legacy.toml"
LD_LIBRARY_PATH="$lib" "$work/send" "$work/legacy.toml" tests/data/v5_2_5_4_request.hl7 | grep -q "^MSA|AA|20010915000017|"
echo "C example in legacy mode: answered through hnsecure client"
kill -TERM "$relay_pid"
wait "$relay_pid"
relay_pid=""

step "32-bit (i686: C tests, Java in a 32-bit JVM) and big-endian (powerpc64 under qemu): tools/cross.sh"
bash tools/cross.sh

step "Windows, 64- and 32-bit: tools/windows.sh (mingw-w64 builds, tested under Wine)"
# Its own script: installs mingw-w64 and Wine when missing, builds hnapi.dll, the import
# library and hnsecure.exe for both targets, and runs the C tests, the C example,
# hnsecure.exe send and client, and cargo test --lib under Wine against a Linux sandbox.
bash tools/windows.sh

step "packages: tools/package.sh (five targets), checked, and the Java and C# tests from the jar and the NuGet package"
# The SDK archives, the jar and the NuGet package as a vendor takes them; the Windows
# libraries were built just now by tools/windows.sh with the same command, so only the
# Linux targets' release libraries are new here.
bash tools/package.sh
bash tools/check_packages.sh target/packages
pkg_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
bash tests/java/run.sh "target/packages/hnapi-$pkg_version.jar" "$client_toml" "$server_toml"
bash tests/dotnet/run.sh "target/packages/Hnapi.$pkg_version.nupkg" "$client_toml" "$server_toml"

step "Miri: the C ABI's unsafe code (cargo +nightly miri test --lib --no-default-features -- ffi::)"
# Miri needs a nightly toolchain, which rustup cannot fetch on every machine (CI's has only
# the stable one): where a nightly is installed, its miri and rust-src components are added
# and the FFI unit tests run under Miri; elsewhere this step says it was skipped.
if have rustup && rustup toolchain list | grep -q '^nightly'; then
  rustup component list --toolchain nightly --installed | grep -q '^miri' ||
    rustup component add --toolchain nightly miri rust-src
  MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}" \
    cargo +nightly miri test --locked --lib --no-default-features -- ffi::
else
  echo "Miri skipped: no nightly toolchain here (rustup toolchain install nightly, then run ./test.sh again)"
fi

step_end
echo
echo "==> all checks passed"
