#!/usr/bin/env bash
# Installs what building and testing Weir needs, idempotently, in two parts:
#
#   scripts/setup.sh --build-only   what building Weir needs (scripts/weir,
#                                   the README's first command, runs this)
#   scripts/setup.sh                that, then what the tests need
#
# The build: the wasm32-wasip2 target (rust-toolchain.toml names it too, for
# rustup to fetch on first use), C and C++ compilers, make, libclang,
# pkg-config and the OpenSSL and Cyrus SASL headers (BUILD_NEEDS below).
# The tests: the formatting/lint components, componentize-py in a venv of
# its own (Python plugins build with it; see docs/python.md), componentize-js
# in a directory of its own (JavaScript plugins; see docs/js.md), and the
# tansu Kafka-protocol broker the Kafka tests run against (scripts/kafka.sh).
# Each is installed only if its probe finds it missing; tools go to the
# system (apt) or to ~/.cache/weir, never into the clone.
#
#   --dry-run            install nothing: print `missing: NAME (how)` for
#                        each need that is missing
#   --list-build-needs   print the names of the build's needs, one a line
#                        (scripts/check-fresh.sh compares them with what the
#                        build's -sys crates need)
set -euo pipefail
cd "$(dirname "$0")/.."

build_only=false
dry_run=false
for arg in "$@"; do
  case "$arg" in
    --build-only) build_only=true ;;
    --dry-run) dry_run=true ;;
    --list-build-needs) list_needs=true ;;
    *) echo "setup.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

# Probes. A tool counts only as a regular executable file, a library or
# header only as a regular file (scripts/check-fresh.sh hides them by
# mounting /dev/null or an empty directory over them).
have_cmd() {
  local path
  path=$(command -v "$1" 2>/dev/null) && [ -f "$path" ] && [ -x "$path" ]
}
have_file() {
  local f
  for f in "$@"; do
    [ -f "$f" ] && return 0
  done
  return 1
}
# bindgen loads libclang at run time (rocksdb's `bindgen-runtime`), from the
# places clang-sys searches. (libclang-cpp, which some images carry, is not
# libclang.)
have_libclang() {
  have_file /usr/lib/llvm-*/lib/libclang.so* /usr/lib/*/libclang-[0-9]*.so* \
    /usr/lib/*/libclang.so* /usr/lib/libclang.so*
}
have_header() {
  have_file "/usr/include/$1" "/usr/local/include/$1" /usr/include/*/"$1"
}
have_wasm_target() {
  if command -v rustup >/dev/null; then
    rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2
  else
    [ -d "$(rustc --print sysroot)/lib/rustlib/wasm32-wasip2" ]
  fi
}

# What building Weir needs: name | Debian package | probe | why.
BUILD_NEEDS=(
  "cc|gcc|have_cmd cc|every Rust program links with it; lz4, zstd, bzip2, zlib, mimalloc and librdkafka are C"
  "c++|g++|have_cmd c++|the RocksDB state backend (librocksdb-sys) compiles RocksDB"
  "make|make|have_cmd make|the Kafka connectors (rdkafka) build the bundled librdkafka with ./configure and make"
  "libclang|libclang-dev|have_libclang|librocksdb-sys generates its bindings with bindgen, which loads libclang"
  "pkg-config|pkg-config|have_cmd pkg-config|librdkafka finds OpenSSL and Cyrus SASL with it"
  "libssl|libssl-dev|have_header openssl/ssl.h|librdkafka is built with TLS (rdkafka's ssl feature, docs/kafka.md)"
  "libsasl2|libsasl2-dev|have_header sasl/sasl.h|librdkafka is built with SASL (rdkafka's gssapi feature, docs/kafka.md)"
)

if [ "${list_needs:-false}" = true ]; then
  for need in "${BUILD_NEEDS[@]}"; do
    echo "${need%%|*}"
  done
  echo wasm32-wasip2
  exit 0
fi

if ! command -v cargo >/dev/null; then
  echo "error: cargo is not installed; see https://rustup.rs" >&2
  exit 1
fi

missing=0
# Reports a missing need (--dry-run), or says what is being installed.
report() {
  missing=$((missing + 1))
  if $dry_run; then
    echo "missing: $1 ($2)"
  else
    echo "setup.sh: installing $1 ($2)" >&2
  fi
}

if ! have_wasm_target; then
  report wasm32-wasip2 "rustup target add wasm32-wasip2; plugins compile to it"
  $dry_run || rustup target add wasm32-wasip2
fi

apt_packages=()
unmet=()
for need in "${BUILD_NEEDS[@]}"; do
  IFS='|' read -r name package probe why <<<"$need"
  if ! $probe; then
    report "$name" "Debian package $package: $why"
    apt_packages+=("$package")
    unmet+=("$name|$probe|$package")
  fi
done
if [ ${#apt_packages[@]} -gt 0 ] && ! $dry_run; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null ||
      { echo "error: ${apt_packages[*]} must be installed, as root (no sudo here)" >&2; exit 1; }
    sudo="sudo"
  fi
  if ! command -v apt-get >/dev/null; then
    echo "error: missing ${apt_packages[*]} (Debian's names; see above for what each is for): install your distribution's packages" >&2
    exit 1
  fi
  # One install for all: an old package list is refreshed only if needed.
  $sudo apt-get install -y --no-install-recommends "${apt_packages[@]}" ||
    { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends "${apt_packages[@]}"; }
  for entry in "${unmet[@]}"; do
    IFS='|' read -r name probe package <<<"$entry"
    $probe || { echo "error: $name is still missing after installing $package" >&2; exit 1; }
  done
fi

if $build_only; then
  $dry_run && [ "$missing" -eq 0 ] && echo "nothing missing for the build"
  exit 0
fi

# The tests: format and lint checks.
if command -v rustup >/dev/null; then
  components=$(rustup component list --installed)
  for component in rustfmt clippy; do
    if ! grep -q "^$component" <<<"$components"; then
      report "$component" "rustup component add $component"
      $dry_run || rustup component add "$component"
    fi
  done
fi

# Python plugins (docs/python.md) are built with componentize-py, which
# bundles a wasm CPython. It goes into a venv of its own (no global pip
# install, no sudo); `weir plugin build` looks for it there, then on PATH.
COMPONENTIZE_PY_VERSION=0.17.2
py_venv="${WEIR_PY_VENV:-$HOME/.cache/weir/py-venv}"
if [ "$("$py_venv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
  report componentize-py "pip install componentize-py==$COMPONENTIZE_PY_VERSION into $py_venv"
fi
if ! $dry_run && [ "$("$py_venv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
  if ! command -v python3 >/dev/null; then
    echo "error: python3 is missing (needed to install componentize-py for Python plugins)" >&2
    exit 1
  fi
  [ -x "$py_venv/bin/pip" ] || python3 -m venv "$py_venv"
  "$py_venv/bin/pip" install --quiet "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

# JavaScript plugins (docs/js.md) are built with componentize-js, which
# bundles a wasm SpiderMonkey (StarlingMonkey) and runs on Node.js. It goes
# into a directory of its own with `npm install --prefix` (no global
# install, no sudo); `weir plugin build` looks for it there, then on PATH.
COMPONENTIZE_JS_VERSION=0.23.0
js_tools="${WEIR_JS_DIR:-$HOME/.cache/weir/js-tools}"
if [ "$("$js_tools/node_modules/.bin/componentize-js" --version 2>/dev/null)" != "$COMPONENTIZE_JS_VERSION" ]; then
  report componentize-js "npm install @bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION into $js_tools"
fi
if ! $dry_run && [ "$("$js_tools/node_modules/.bin/componentize-js" --version 2>/dev/null)" != "$COMPONENTIZE_JS_VERSION" ]; then
  if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "error: node and npm are missing (needed to install componentize-js for JavaScript plugins)" >&2
    exit 1
  fi
  mkdir -p "$js_tools"
  npm install --prefix "$js_tools" --no-audit --no-fund --loglevel=error \
    "@bytecodealliance/componentize-js@$COMPONENTIZE_JS_VERSION"
fi

# The Kafka tests run against tansu, a Kafka-protocol broker on crates.io,
# built once into ~/.cache/weir/tansu (~15 minutes the first time).
if $dry_run; then
  scripts/kafka.sh installed >/dev/null || report tansu "scripts/kafka.sh install builds it (~15 minutes)"
  [ "$missing" -eq 0 ] && echo "nothing missing for the build and the tests"
  exit 0
fi
scripts/kafka.sh install
