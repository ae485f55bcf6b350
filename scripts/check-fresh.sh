#!/usr/bin/env bash
# Checks that a machine with only a Rust toolchain can build Weir with the
# project's own files: that everything the build needs from the system is
# installed by `scripts/setup.sh --build-only`, which the README's first
# command (scripts/weir) runs. scripts/test.sh runs it after the set-up.
#
# 1. The lock file against the set-up: every -sys crate in Cargo.lock has
#    its system needs in SYS_NEEDS below (a new one fails until it is
#    added), crates built with bindgen need libclang and with cmake need
#    cmake, and every need so found is one setup.sh installs
#    (`--list-build-needs`).
# 2. The README's first command is a script that runs the build part of the
#    set-up, and it and scripts/test.sh build into one target directory.
# 3. A fresh machine, simulated: in a private mount namespace, each need is
#    hidden (its executables, libraries and headers covered by /dev/null or
#    an empty directory; the wasm target taken off rustup's list) and HOME
#    is an empty directory; `setup.sh --build-only --dry-run` must report
#    every need missing, and outside the namespace none (the set-up ran).
#
# What this does not prove: that the Debian packages install (apt does that
# on the real machine, which CI then builds on), that another distribution
# names them alike, or needs that no -sys crate declares in Cargo.lock
# (what a build script looks for on its own). Step 3 needs root and
# `unshare -m`; without them it is skipped, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

failed=0
fail() {
  echo "check-fresh: FAIL: $*" >&2
  failed=1
}

# What each -sys crate of the lock file needs from a Linux system to build,
# in setup.sh's names. Empty: pure Rust, or not built on Linux.
declare -A SYS_NEEDS=(
  [bzip2-sys]="cc"
  [clang-sys]="libclang"
  [core-foundation-sys]=""
  [js-sys]=""
  [libmimalloc-sys]="cc"
  [librocksdb-sys]="cc c++ libclang"
  [libz-sys]="cc"
  [linux-raw-sys]=""
  [lz4-sys]="cc"
  [openssl-sys]="cc pkg-config libssl"
  [rdkafka-sys]="cc make pkg-config"
  [sasl2-sys]="cc pkg-config libsasl2"
  [windows-sys]=""
  [zstd-sys]="cc"
)

# --- 1. The lock file against the set-up.
# Every Rust program links with cc; plugins compile to wasm32-wasip2.
needed="cc wasm32-wasip2"
for crate in $(sed -n 's/^name = "\(.*-sys\)"$/\1/p' Cargo.lock | sort -u); do
  if [ -z "${SYS_NEEDS[$crate]+set}" ]; then
    fail "Cargo.lock has $crate, which SYS_NEEDS in $0 does not know: add what it needs to build there and to scripts/setup.sh"
    continue
  fi
  needed="$needed ${SYS_NEEDS[$crate]}"
done
# Build-time tools named by the dependencies of any crate: "crate tool" pairs.
builders=$(awk '
  /^\[\[package\]\]/ { name = "" }
  /^name = / { gsub(/"/, "", $3); name = $3 }
  /^ "(bindgen|cmake)[ "]/ { tool = $1; gsub(/[",]/, "", tool); print name, tool }
' Cargo.lock | sort -u)
while read -r crate tool; do
  [ -n "$crate" ] || continue
  case "$tool" in
    bindgen) needed="$needed libclang" ;;
    cmake) needed="$needed cmake" ;;
  esac
done <<<"$builders"
provided=$(scripts/setup.sh --list-build-needs)
needed=$(tr ' ' '\n' <<<"$needed" | sed '/^$/d' | sort -u)
for need in $needed; do
  grep -qx -- "$need" <<<"$provided" ||
    fail "the build needs $need, which scripts/setup.sh --build-only does not install"
done
echo "check-fresh: the build needs $(echo $needed | tr ' ' ','); scripts/setup.sh installs each"

# --- 2. The README's first command, and one target directory.
first=$(awk '/^## Two commands/ { section = 1 } section && /^```sh/ { getline; print; exit }' README.md)
script=${first%% *}
if [ -z "$first" ]; then
  fail "README.md has no sh block under '## Two commands'"
elif [ ! -x "$script" ] || ! grep -q 'setup.sh --build-only' "$script"; then
  fail "the README's first command ($first) is not a script of this clone that runs scripts/setup.sh --build-only"
fi
for s in scripts/weir scripts/test.sh; do
  grep -q '^source .*scripts/cargo-env.sh' "$s" ||
    fail "$s does not take its target directory from scripts/cargo-env.sh"
done
echo "check-fresh: the README's first command is '$first'; it and scripts/test.sh share scripts/cargo-env.sh's target directory"

# ... and one build: every unit (crate, features, profile, and the same of
# all its dependencies) that scripts/weir's build compiles is one the test
# build needs as it is, so neither compiles anything twice. Read from
# cargo's unit graphs (an unstable output, hence RUSTC_BOOTSTRAP; nothing
# is built).
first_build=$(grep '^cargo build ' scripts/weir | sed 's/ --manifest-path "[^"]*"//')
unit_graph() {
  RUSTC_BOOTSTRAP=1 cargo "$@" -Z unstable-options --unit-graph 2>/dev/null
}
if [ -z "$first_build" ]; then
  fail "scripts/weir has no 'cargo build' line to compare with the test build"
elif ! command -v python3 >/dev/null; then
  echo "check-fresh: skipped comparing the two builds (no python3)"
else
  # shellcheck disable=SC2086
  unit_graph ${first_build#cargo } >"${TMPDIR:-/tmp}/weir-first.json" &&
    unit_graph test --workspace --release --no-run >"${TMPDIR:-/tmp}/weir-test.json" ||
    fail "cargo could not print the unit graphs of the two builds"
  rebuilt=$(python3 - "${TMPDIR:-/tmp}/weir-first.json" "${TMPDIR:-/tmp}/weir-test.json" <<'PY'
import json, sys

def deep_keys(path):
    units = json.load(open(path))["units"]
    memo = {}
    def key(i):
        if i not in memo:
            u = units[i]
            own = (u["pkg_id"], u["target"]["name"], tuple(u["target"]["kind"]), u["mode"],
                   tuple(sorted(u["features"])), u.get("platform"),
                   json.dumps(u["profile"], sort_keys=True))
            memo[i] = hash((own, tuple(sorted(key(d["index"]) for d in u["dependencies"]))))
        return memo[i]
    return [(key(i), units[i]["pkg_id"]) for i in range(len(units))]

test = {k for k, _ in deep_keys(sys.argv[2])}
print(" ".join(sorted({p.split("#")[-1] for k, p in deep_keys(sys.argv[1]) if k not in test})))
PY
)
  rm -f "${TMPDIR:-/tmp}/weir-first.json" "${TMPDIR:-/tmp}/weir-test.json"
  if [ -n "$rebuilt" ]; then
    fail "the test build compiles again what '$first_build' compiled, differently: $rebuilt"
  else
    echo "check-fresh: '$first_build' compiles nothing the test build would compile again"
  fi
fi

# --- 3. A fresh machine, simulated.
# Run inside the namespace: hides need $1 from setup.sh's probes.
hide() {
  local f d sysroot
  case "$1" in
    cc | c++ | make | pkg-config)
      f=$(command -v "$1") && mount --bind /dev/null "$f"
      ;;
    libclang)
      for f in /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*/libclang-[0-9]*.so* \
        /usr/lib/*/libclang.so* /usr/lib/libclang.so*; do
        [ -f "$f" ] && mount --bind /dev/null "$f"
      done
      ;;
    libssl | libsasl2)
      [ "$1" = libssl ] && d=openssl || d=sasl
      for f in /usr/include/$d /usr/local/include/$d /usr/include/*/$d; do
        [ -d "$f" ] && mount -t tmpfs none "$f"
      done
      ;;
    wasm32-wasip2)
      # rustup lists a toolchain's targets from multirust-config.toml.
      sysroot=$(rustc --print sysroot)
      f="$sysroot/lib/rustlib/multirust-config.toml"
      awk -v RS= -v ORS='\n\n' '!/target = "wasm32-wasip2"/' "$f" >"$2/multirust-config.toml"
      mount --bind "$2/multirust-config.toml" "$f"
      grep -vx 'rust-std-wasm32-wasip2' "$sysroot/lib/rustlib/components" >"$2/components"
      mount --bind "$2/components" "$sysroot/lib/rustlib/components"
      d="$sysroot/lib/rustlib/wasm32-wasip2"
      if [ -d "$d" ]; then mount -t tmpfs none "$d"; fi
      ;;
    *) return 1 ;;
  esac
  return 0
}

if [ "$(id -u)" -ne 0 ] || ! command -v unshare >/dev/null || ! unshare -m true 2>/dev/null; then
  echo "check-fresh: skipped the fresh-machine simulation (it needs root and unshare -m)"
else
  scratch=$(mktemp -d)
  trap 'rm -rf "$scratch"' EXIT
  mkdir "$scratch/home"
  # rustup and cargo keep their homes; everything else sees an empty HOME.
  export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
  simulated=$(unshare -m --propagation private bash -c '
    set -e
    '"$(declare -f hide)"'
    for need in '"$(echo $provided)"'; do
      hide "$need" "'"$scratch"'" || { echo "cannot-hide: $need"; continue; }
    done
    HOME="'"$scratch/home"'" scripts/setup.sh --build-only --dry-run
  ' 2>&1) || fail "setup.sh --build-only --dry-run failed on the simulated fresh machine: $simulated"
  for need in $provided; do
    if grep -qx "cannot-hide: $need" <<<"$simulated"; then
      fail "$0 does not know how to hide $need: add it to hide()"
    elif ! grep -q "^missing: $need (" <<<"$simulated"; then
      fail "with $need hidden, scripts/setup.sh --build-only does not see it missing:"$'\n'"$simulated"
    fi
  done
  echo "check-fresh: with all of them hidden and an empty HOME, setup.sh --build-only finds each missing:"
  sed 's/^/  /' <<<"$simulated"
  here=$(scripts/setup.sh --build-only --dry-run)
  [ "$here" = "nothing missing for the build" ] ||
    fail "on this machine, after the set-up, setup.sh --build-only still finds: $here"
fi

if [ "$failed" -ne 0 ]; then
  exit 1
fi
echo "check-fresh: passed"
