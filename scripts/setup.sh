#!/usr/bin/env bash
# Installs what building and testing Weir needs, idempotently: the
# wasm32-wasip2 target (rust-toolchain.toml names it too, for rustup to
# fetch on first use), the formatting/lint components, and libclang (for
# the RocksDB bindings).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null; then
  echo "error: cargo is not installed; see https://rustup.rs" >&2
  exit 1
fi
if command -v rustup >/dev/null; then
  installed=$(rustup target list --installed)
  grep -qx wasm32-wasip2 <<<"$installed" || rustup target add wasm32-wasip2
  components=$(rustup component list --installed)
  grep -q '^rustfmt' <<<"$components" || rustup component add rustfmt
  grep -q '^clippy' <<<"$components" || rustup component add clippy
fi

# The RocksDB state backend (librocksdb-sys) generates its bindings with
# bindgen, which needs libclang at build time; it compiles RocksDB itself
# with the C++ compiler.
# (libclang-cpp, which some images carry, is not libclang.)
if ! compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null &&
  ! compgen -G '/usr/lib/*/libclang-[0-9]*.so*' >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if command -v apt-get >/dev/null; then
    $sudo apt-get install -y --no-install-recommends libclang-dev ||
      { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends libclang-dev; }
  else
    echo "error: libclang is missing (needed to build RocksDB); install your distribution's libclang package" >&2
    exit 1
  fi
fi
if ! command -v c++ >/dev/null; then
  echo "error: a C++ compiler is missing (needed to build RocksDB); install g++" >&2
  exit 1
fi
