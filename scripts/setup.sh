#!/usr/bin/env bash
# Installs what building and testing Weir needs, idempotently: the
# wasm32-wasip2 target (rust-toolchain.toml names it too, for rustup to
# fetch on first use), the formatting/lint components, and libclang (for
# the RocksDB bindings), componentize-py in a venv of its own (Python
# plugins build with it; see docs/python.md) and componentize-js in a
# directory of its own (JavaScript plugins; see docs/js.md), and the tansu
# Kafka-protocol broker the Kafka tests run against (scripts/kafka.sh).
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
# The Kafka connectors (rdkafka) build the bundled librdkafka with its
# ./configure and make; zlib it finds on the system or builds itself.
if ! command -v make >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if command -v apt-get >/dev/null; then
    $sudo apt-get install -y --no-install-recommends make ||
      { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends make; }
  else
    echo "error: make is missing (needed to build librdkafka); install make" >&2
    exit 1
  fi
fi
# librdkafka is built with TLS and SASL (rdkafka's `ssl` and `gssapi`
# features, docs/kafka.md): it compiles against the system's OpenSSL and
# Cyrus SASL headers, found with pkg-config.
kafka_dev=()
command -v pkg-config >/dev/null || kafka_dev+=(pkg-config)
[ -e /usr/include/openssl/ssl.h ] || kafka_dev+=(libssl-dev)
[ -e /usr/include/sasl/sasl.h ] || kafka_dev+=(libsasl2-dev)
if [ ${#kafka_dev[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if command -v apt-get >/dev/null; then
    $sudo apt-get install -y --no-install-recommends "${kafka_dev[@]}" ||
      { $sudo apt-get update && $sudo apt-get install -y --no-install-recommends "${kafka_dev[@]}"; }
  else
    echo "error: ${kafka_dev[*]} missing (needed to build librdkafka with TLS and SASL); install your distribution's OpenSSL and Cyrus SASL development packages and pkg-config" >&2
    exit 1
  fi
fi

# Python plugins (docs/python.md) are built with componentize-py, which
# bundles a wasm CPython. It goes into a venv of its own (no global pip
# install, no sudo); `weir plugin build` looks for it there, then on PATH.
COMPONENTIZE_PY_VERSION=0.17.2
py_venv="${WEIR_PY_VENV:-$HOME/.cache/weir/py-venv}"
if [ "$("$py_venv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $COMPONENTIZE_PY_VERSION" ]; then
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
scripts/kafka.sh install
