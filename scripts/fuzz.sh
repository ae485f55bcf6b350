#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (libFuzzer), each for a fixed time.
# Not part of scripts/test.sh or CI: run it by hand.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# SECONDS per target (default 60, or $WEIR_FUZZ_SECONDS); the targets are
# spec (TOML and JSON specs, parsed and validated), batch_result (a plugin's
# packed changes, as the host decodes them), json_field (the JSON pointer
# scanner that reads keys and event times) and checkpoint (a checkpoint's
# manifest, state and timer files, restored). What each checks is in
# host/src/fuzzing.rs.
#
# cargo-fuzz is installed once into ~/.cache/weir/cargo-fuzz. The targets
# are built on the stable toolchain without a sanitizer (`--sanitizer
# none`: libFuzzer's coverage instrumentation and Rust's own checks, debug
# assertions and overflow checks included; stable has no sanitizers).
# WEIR_FUZZ_SANITIZER=address builds with AddressSanitizer on a nightly
# toolchain, if rustup has one. The build (its own target directory,
# ~/.cache/weir/fuzz-target, so it never waits on the main build's lock)
# takes about as long as Weir's own the first time. Corpora grow in
# ~/.cache/weir/fuzz/corpus/TARGET, starting from fuzz/seeds/TARGET; a
# crash is written to ~/.cache/weir/fuzz/artifacts/TARGET/ and the script
# exits non-zero: turn it into a regression test beside the code it breaks.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${WEIR_FUZZ_SECONDS:-60}"
if [[ "${1:-}" =~ ^[0-9]+$ ]]; then
  seconds="$1"
  shift
fi
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(spec batch_result json_field checkpoint)

CARGO_FUZZ_VERSION=0.13.2
cache="$HOME/.cache/weir"
cargo_fuzz="$cache/cargo-fuzz/bin/cargo-fuzz"
if [ "$("$cargo_fuzz" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION into $cache/cargo-fuzz" >&2
  CARGO_TARGET_DIR="$cache/cargo-fuzz/build" cargo install --locked --root "$cache/cargo-fuzz" \
    --version "$CARGO_FUZZ_VERSION" cargo-fuzz
  rm -rf "$cache/cargo-fuzz/build"
fi
# The build needs what Weir's does (RocksDB, librdkafka), and libFuzzer is C++.
scripts/setup.sh --build-only

sanitizer="${WEIR_FUZZ_SANITIZER:-none}"
toolchain=()
if [ "$sanitizer" != none ]; then
  rustup toolchain list | grep -q '^nightly' ||
    { echo "fuzz.sh: WEIR_FUZZ_SANITIZER=$sanitizer needs a nightly toolchain (rustup toolchain install nightly)" >&2; exit 1; }
  toolchain=(+nightly)
fi
build_args=(--sanitizer "$sanitizer" --codegen-units 16 --target-dir "$cache/fuzz-target")

export PATH="$cache/cargo-fuzz/bin:$PATH"
# The same versions of every dependency as Weir's own build.
cp Cargo.lock fuzz/Cargo.lock
# RocksDB's C++ is most of the build's time (about 340 files): link the
# library Weir's own build compiled (same librocksdb-sys, same lock file)
# when there is one, rather than compile it a second time.
# shellcheck source=scripts/cargo-env.sh
source scripts/cargo-env.sh
rocksdb_lib=$(ls -t "$CARGO_TARGET_DIR"/release/build/librocksdb-sys-*/out/librocksdb.a 2>/dev/null | head -1 || true)
if [ -n "$rocksdb_lib" ] && [ -z "${ROCKSDB_LIB_DIR:-}" ]; then
  export ROCKSDB_LIB_DIR="${rocksdb_lib%/*}" ROCKSDB_STATIC=1
fi
cd fuzz
# One build of every target, then each binary is run as it is: `cargo fuzz
# run` would first build again whenever the tree changed in between.
cargo "${toolchain[@]}" fuzz build "${build_args[@]}"
bin_dir="$cache/fuzz-target/$(rustc -vV | sed -n 's/^host: //p')/release"

# The checkpoint target writes (and fsyncs) a few small files per input:
# in memory, where there is a memory file system.
[ -d /dev/shm ] && [ -w /dev/shm ] && export TMPDIR=/dev/shm

crashed=()
for target in "${targets[@]}"; do
  corpus="$cache/fuzz/corpus/$target"
  artifacts="$cache/fuzz/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  echo "fuzz.sh: $target for ${seconds}s (corpus $corpus)" >&2
  # The seeds are read, never written; new inputs go to the corpus.
  if "$bin_dir/$target" "$corpus" "seeds/$target" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 2>"$cache/fuzz/$target.log"; then
    echo "fuzz.sh: $target: no crash; $(grep -E '^stat::number_of_executed_units' "$cache/fuzz/$target.log" | awk '{print $2}') runs, corpus of $(find "$corpus" -type f | wc -l) inputs" >&2
  else
    crashed+=("$target")
    tail -40 "$cache/fuzz/$target.log" >&2
    echo "fuzz.sh: $target CRASHED; the input is in $artifacts/ (log: $cache/fuzz/$target.log)" >&2
  fi
done

if [ ${#crashed[@]} -gt 0 ]; then
  echo "fuzz.sh: crashes in ${crashed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no crash"
