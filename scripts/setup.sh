#!/usr/bin/env bash
# Installs what building and testing Weir needs, idempotently: the
# wasm32-wasip2 target (rust-toolchain.toml names it too, for rustup to
# fetch on first use) and the formatting/lint components.
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
