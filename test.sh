#!/usr/bin/env bash
# The one test command of hnsecure: on a fresh Debian or Ubuntu machine it installs what
# it needs when it is missing, then runs every check. CI runs it through .ci/run.
#
#   ./test.sh            everything
#
# Steps: rustfmt and clippy components, formatting, clippy (warnings are errors), and
# the whole test suite (unit, Volume 5 examples, property tests, CLI, fuzz regressions,
# doc examples).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

step() { printf '\n==> %s\n' "$*"; }
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
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

step "toolchain"
if ! have cargo; then
  echo "cargo is missing: install Rust with rustup (https://rustup.rs), then run ./test.sh again" >&2
  exit 1
fi
if have apt-get; then
  apt_install gcc libc6-dev pkg-config
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

step "cargo test"
cargo test --locked

step "all checks passed"
