#!/usr/bin/env bash
# Fuzzes the HTTP API of `weir serve` with schemathesis, driven by the
# server's own GET /v1/openapi.json: no answer may be a 5xx, and every
# answer must match the document (status, content type, body schema).
# Bounded: a fixed number of examples per operation and a time budget, so
# the whole run stays under ~2 minutes. Run by scripts/test.sh after the
# tests; usable alone once the release binary is built.
#
# schemathesis (PyPI) goes into a venv of its own under ~/.cache/weir, like
# componentize-py in scripts/setup.sh; it is installed once and reused.
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
# Examples per API operation, and the run's time budget in seconds.
EXAMPLES="${WEIR_API_FUZZ_EXAMPLES:-25}"
BUDGET_S="${WEIR_API_FUZZ_SECONDS:-100}"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"

venv="${WEIR_API_FUZZ_VENV:-$HOME/.cache/weir/api-fuzz-venv}"
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
  if ! command -v python3 >/dev/null; then
    echo "error: python3 is missing (needed to install schemathesis for the API fuzz)" >&2
    exit 1
  fi
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

# WEIR_BIN: a weir binary to fuzz instead of building one.
weir="${WEIR_BIN:-}"
if [ -z "$weir" ]; then
  cargo build --release --workspace --bin weir --quiet
  weir="$CARGO_TARGET_DIR/release/weir"
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# A token, as a real deployment has: the fuzz then also covers the 401s.
token="fuzz-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
WEIR_TOKEN="$token" "$weir" serve --addr 127.0.0.1:0 --data-dir "$work/data" \
  2>"$work/serve.log" &
server_pid=$!
url=""
for _ in $(seq 1 300); do
  url="$(sed -n 's/^weir serve listening on \([^ ]*\).*/\1/p' "$work/serve.log" | head -n1)"
  [ -n "$url" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    cat "$work/serve.log" >&2
    echo "error: weir serve exited before listening" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$url" ]; then
  echo "error: weir serve did not start listening" >&2
  exit 1
fi

echo "fuzzing the API of $url (at most $EXAMPLES examples per operation, $BUDGET_S s)"
status=0
# Run from the work dir: schemathesis keeps its example database and
# reports under the current directory.
(
  cd "$work"
  "$venv/bin/schemathesis" run "$url/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "$EXAMPLES" \
    --max-time "$BUDGET_S" \
    --request-timeout 30 \
    --workers 1 \
    --seed 17 \
    --generation-database none \
    --suppress-health-check filter_too_much \
    --no-color
) || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- weir serve's log ---" >&2
  tail -n 50 "$work/serve.log" >&2
fi
exit "$status"
