# Shared by test.sh and the scripts in tools/ (sourced, not run): installing Debian
# packages when they are missing, and the linkers, C compilers and binutils of the cross
# targets.
#
#   source "$root/tools/lib.sh"
#   apt_install gcc pkg-config          # only what is not installed yet
#   cross_env                           # exports the cargo linker/CC/AR variables
#   cross_tool TARGET strip             # e.g. i686-linux-gnu-strip
# shellcheck shell=bash

# apt_install PACKAGE...: installs the Debian packages that are not installed yet (a
# package may name its architecture, e.g. wine32:i386). Does nothing without apt-get.
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 0
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

# rustup_targets TARGET...: adds the rustup targets that are not installed yet.
rustup_targets() {
  command -v rustup >/dev/null 2>&1 || return 0
  local installed t
  installed=$(rustup target list --installed)
  for t in "$@"; do
    grep -qx "$t" <<<"$installed" || rustup target add "$t"
  done
}

# The targets hnapi is built for, and the GNU tool prefix of each (empty: the host's).
HNAPI_TARGETS=(x86_64-unknown-linux-gnu i686-unknown-linux-gnu powerpc64-unknown-linux-gnu
  x86_64-pc-windows-gnu i686-pc-windows-gnu)
cross_prefix() {
  case "$1" in
    x86_64-unknown-linux-gnu) echo "" ;;
    i686-unknown-linux-gnu) echo "i686-linux-gnu-" ;;
    powerpc64-unknown-linux-gnu) echo "powerpc64-linux-gnu-" ;;
    x86_64-pc-windows-gnu) echo "x86_64-w64-mingw32-" ;;
    i686-pc-windows-gnu) echo "i686-w64-mingw32-" ;;
    *) echo "unknown target: $1" >&2; return 1 ;;
  esac
}
# cross_tool TARGET TOOL: the GNU tool (gcc, strip, objdump, ar, ...) for TARGET.
cross_tool() { echo "$(cross_prefix "$1")$2"; }
# cross_debs TARGET: the Debian packages that give TARGET's C compiler, linker and binutils.
cross_debs() {
  case "$1" in
    x86_64-unknown-linux-gnu) echo "gcc libc6-dev binutils" ;;
    i686-unknown-linux-gnu) echo "gcc-i686-linux-gnu libc6-dev-i386-cross" ;;
    powerpc64-unknown-linux-gnu) echo "gcc-powerpc64-linux-gnu libc6-dev-ppc64-cross" ;;
    x86_64-pc-windows-gnu) echo "gcc-mingw-w64-x86-64" ;;
    i686-pc-windows-gnu) echo "gcc-mingw-w64-i686" ;;
  esac
}

# cross_env: the linker, C compiler (ring's C code) and archiver cargo uses for each cross
# target. Runners (qemu, Wine) are the callers' business.
cross_env() {
  export CARGO_TARGET_POWERPC64_UNKNOWN_LINUX_GNU_LINKER=powerpc64-linux-gnu-gcc
  export CC_powerpc64_unknown_linux_gnu=powerpc64-linux-gnu-gcc
  export AR_powerpc64_unknown_linux_gnu=powerpc64-linux-gnu-ar
  export CARGO_TARGET_I686_UNKNOWN_LINUX_GNU_LINKER=i686-linux-gnu-gcc
  export CC_i686_unknown_linux_gnu=i686-linux-gnu-gcc
  export AR_i686_unknown_linux_gnu=i686-linux-gnu-ar
  export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
  export CARGO_TARGET_I686_PC_WINDOWS_GNU_LINKER=i686-w64-mingw32-gcc
}

# vendor_cargo TARGET CARGO_ARGS...: runs `cargo CARGO_ARGS... --target TARGET` the way
# the vendor library of TARGET is built (tools/package.sh ships it, tools/windows.sh tests
# it: the same command, so the second finds it built). On Linux targets that is plain
# cargo. On the windows-gnu targets rustc leaves function sections off (its target
# specification says so), so the linker can only drop whole codegen units and the DLL
# carried code nothing calls (the registration's certificate parsers, the relay daemon):
# 6.5 MB against 3.9 MB for the Linux library of the same code. Here the DLL is built
# with function sections (`-Z function-sections`, let through by RUSTC_BOOTSTRAP on this
# stable toolchain for this build only), one fat-LTO unit (so the standard library's
# unused code goes too) and linked by rustup's rust-lld (GNU ld's --gc-sections keeps the
# sections on PE): 3.5 MB. The README's Packages section gives the figures.
vendor_cargo() {
  local t=$1
  shift
  if ! is_windows_target "$t"; then
    CARGO_INCREMENTAL=0 cargo "$@" --target "$t"
    return
  fi
  local arch=${t%%-*} lld
  lld="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/rust-lld"
  [ -x "$lld" ] || { echo "vendor_cargo: no rust-lld at $lld (rustup installs it with the toolchain)" >&2; return 1; }
  local gcc_lib
  gcc_lib=$(dirname "$("$arch-w64-mingw32-gcc" -print-libgcc-file-name)")
  local var
  var=CARGO_TARGET_$(echo "$t" | tr 'a-z-' 'A-Z_')_LINKER
  env "$var=$lld" RUSTC_BOOTSTRAP=1 CARGO_INCREMENTAL=0 \
    CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
    RUSTFLAGS="${RUSTFLAGS:-} -Z function-sections=yes -C linker-flavor=ld.lld -C link-self-contained=yes -C link-arg=-L/usr/$arch-w64-mingw32/lib -C link-arg=-L$gcc_lib" \
    cargo "$@" --target "$t"
}
is_windows_target() { case "$1" in *-windows-*) return 0 ;; *) return 1 ;; esac; }
