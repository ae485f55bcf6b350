#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up, format, lints, tests.
# Build products go to a cache outside the clone so repeat runs are fast
# (set CARGO_TARGET_DIR to choose another place).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/cargo-env.sh
source scripts/cargo-env.sh
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

scripts/setup.sh
# Every tool the build needs is installed by scripts/setup.sh, also on a
# machine that has none of them.
scripts/check-fresh.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets --release -- -D warnings
# The HTTP API fuzzed against its own OpenAPI document (schemathesis, a
# bounded number of examples; about 2 minutes).
scripts/api-fuzz.sh
# Release: the end-to-end tests push millions of events through the engine.
# Last, so the run closes on cargo test's own summary lines.
cargo test --workspace --release
