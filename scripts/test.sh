#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up, format, lints, tests.
# Build products go to a cache outside the clone so repeat runs are fast
# (set CARGO_TARGET_DIR to choose another place).
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

scripts/setup.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --release -- -D warnings
# Release: the end-to-end tests push millions of events through the engine.
cargo test --workspace --release
