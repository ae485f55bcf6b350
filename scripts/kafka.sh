#!/usr/bin/env bash
# A Kafka-protocol broker on this machine, for Weir's Kafka tests and for
# trying the Kafka examples: tansu (a Kafka-API broker written in Rust, on
# crates.io), since these machines have neither Docker nor a JVM Kafka.
#
#   scripts/kafka.sh install     build tansu into the cache if it is missing
#   scripts/kafka.sh installed   exits 0 if it is there (install has nothing to do)
#   scripts/kafka.sh start [--port N] [--storage URL] [--dir DIR]
#                                run it on 127.0.0.1 in the background; prints
#                                the bootstrap address (127.0.0.1:PORT)
#   scripts/kafka.sh stop [--dir DIR]
#   scripts/kafka.sh status [--dir DIR]
#   scripts/kafka.sh topic NAME [PARTITIONS] [--dir DIR]
#                                create a topic on the running broker
#   scripts/kafka.sh path        prints the tansu binary's path
#
# Every command is idempotent: install does nothing when the binary is there,
# start does nothing (but print the address) when the broker runs, stop does
# nothing when it does not.
#
# The first install compiles tansu (~15 minutes on 2 cores); the binary is
# kept in $WEIR_TANSU_ROOT (default ~/.cache/weir/tansu), so that is paid
# once per machine. `--storage` defaults to memory (lost when it stops);
# `sqlite://FILE` keeps topics across restarts.
set -euo pipefail

TANSU_VERSION=0.6.0
root="${WEIR_TANSU_ROOT:-$HOME/.cache/weir/tansu}"
tansu="$root/bin/tansu"
state_dir="${WEIR_KAFKA_DIR:-$HOME/.cache/weir/kafka}"

die() {
  echo "kafka.sh: $*" >&2
  exit 1
}

installed_version() {
  "$tansu" --version 2>/dev/null | awk '{print $NF}'
}

# tansu 0.6.0's group coordinator never reassigns a member's partitions once
# that member stops heart-beating (it drops the member but keeps the group's
# old assignment), so a surviving Weir process would never take over from a
# killed one. The patch next to this script fixes that; the binary is built
# from tansu's published sources with it, and rebuilt when the patch changes.
patch_file="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tansu-group-rebalance.patch"
declare -A crate_sha256=(
  [tansu]=4fdd85473ec265140488cf8d55e82b844f5c051c8916fabdd4a71156ac053f6d
  [tansu-broker]=93c1e91b40c2a706dfdbe9a795c08c70918c874ad23f6e0e87564cc0a180e720
)

patch_sum() {
  sha256sum "$patch_file" | awk '{print $1}'
}

# Downloads crate $1 at TANSU_VERSION from crates.io into $2, checked
# against its known digest.
fetch_crate() {
  local name="$1" into="$2" file="$2/$1.crate"
  curl -fsSL --retry 3 -o "$file" \
    "https://static.crates.io/crates/$name/$name-$TANSU_VERSION.crate" \
    || die "could not download $name $TANSU_VERSION from crates.io"
  echo "${crate_sha256[$name]}  $file" | sha256sum --check --quiet \
    || die "$name-$TANSU_VERSION.crate does not have the expected sha256"
  tar -xzf "$file" -C "$into"
}

# Whether the patched tansu of this version is built (install then does nothing).
installed() {
  [ -x "$tansu" ] && [ "$(installed_version)" = "$TANSU_VERSION" ] \
    && [ "$(cat "$root/patch.sha256" 2>/dev/null)" = "$(patch_sum)" ]
}

install() {
  if installed; then
    return 0
  fi
  command -v cargo >/dev/null || die "cargo is not installed; see https://rustup.rs"
  echo "kafka.sh: building tansu $TANSU_VERSION (patched) into $root (the first time takes ~15 minutes)" >&2
  local src="$root/src"
  rm -rf "$src"
  mkdir -p "$src" "$root/bin"
  fetch_crate tansu "$src"
  fetch_crate tansu-broker "$src"
  (cd "$src/tansu-broker-$TANSU_VERSION" && git apply -p1 "$patch_file") \
    || die "could not apply $patch_file to tansu-broker $TANSU_VERSION"
  printf '\n[patch.crates-io]\ntansu-broker = { path = "../tansu-broker-%s" }\n' \
    "$TANSU_VERSION" >>"$src/tansu-$TANSU_VERSION/Cargo.toml"
  # A build directory of its own in the cache: an interrupted build resumes
  # where it stopped, and Weir's target directory is left alone. The crate's
  # own Cargo.lock pins every other dependency. Without the dynostore and
  # libsql features tansu has no storage engine.
  CARGO_TARGET_DIR="$root/build" cargo build --release \
    --manifest-path "$src/tansu-$TANSU_VERSION/Cargo.toml" \
    --features dynostore,libsql --bin tansu
  cp "$root/build/release/tansu" "$tansu.new"
  mv "$tansu.new" "$tansu"
  patch_sum >"$root/patch.sha256"
  rm -rf "$root/build" "$src"
}

# Whether something accepts TCP connections on 127.0.0.1:$1.
listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

running_pid() {
  local pid
  pid=$(cat "$state_dir/pid" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

start() {
  local port="" storage="memory://tansu/"
  while [ $# -gt 0 ]; do
    case "$1" in
      --port) port="$2"; shift 2 ;;
      --storage) storage="$2"; shift 2 ;;
      --dir) state_dir="$2"; shift 2 ;;
      *) die "start: unknown argument $1" ;;
    esac
  done
  if running_pid >/dev/null; then
    local running_port running_storage
    running_port=$(cat "$state_dir/port")
    running_storage=$(cat "$state_dir/storage" 2>/dev/null || echo "memory://tansu/")
    if { [ -n "$port" ] && [ "$port" != "$running_port" ]; } || [ "$storage" != "$running_storage" ]; then
      die "a broker already runs on 127.0.0.1:$running_port with $running_storage; stop it first (scripts/kafka.sh stop)"
    fi
    echo "127.0.0.1:$running_port"
    return 0
  fi
  [ -x "$tansu" ] || die "tansu is not installed; run: scripts/kafka.sh install"
  if [ -z "$port" ]; then
    port=9092
    while listening "$port"; do
      port=$((port + 1))
      [ "$port" -lt 9192 ] || die "no free port in 9092-9191; pass --port"
    done
  elif listening "$port"; then
    die "port $port is taken"
  fi
  mkdir -p "$state_dir"
  # setsid: the broker outlives this script and a terminal's hang-up.
  setsid "$tansu" broker \
    --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$storage" \
    >"$state_dir/tansu.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$state_dir/pid"
  echo "$port" >"$state_dir/port"
  echo "$storage" >"$state_dir/storage"
  local waited=0
  until listening "$port"; do
    kill -0 "$pid" 2>/dev/null || die "tansu exited at start; see $state_dir/tansu.log"
    [ "$waited" -lt 300 ] || die "tansu did not listen on 127.0.0.1:$port within 30 s"
    sleep 0.1
    waited=$((waited + 1))
  done
  echo "127.0.0.1:$port"
}

stop() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) state_dir="$2"; shift 2 ;;
      *) die "stop: unknown argument $1" ;;
    esac
  done
  local pid
  if pid=$(running_pid); then
    kill "$pid"
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  rm -f "$state_dir/pid" "$state_dir/port" "$state_dir/storage"
}

status() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) state_dir="$2"; shift 2 ;;
      *) die "status: unknown argument $1" ;;
    esac
  done
  if pid=$(running_pid); then
    echo "running: pid $pid on 127.0.0.1:$(cat "$state_dir/port")"
  else
    echo "stopped"
    return 1
  fi
}

topic() {
  local name="" partitions=1
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) state_dir="$2"; shift 2 ;;
      *)
        if [ -z "$name" ]; then name="$1"; else partitions="$1"; fi
        shift
        ;;
    esac
  done
  [ -n "$name" ] || die "topic: name the topic"
  running_pid >/dev/null || die "no broker is running; run: scripts/kafka.sh start"
  local broker="tcp://127.0.0.1:$(cat "$state_dir/port")"
  # Idempotent: a topic that is there already is left as it is.
  if "$tansu" topic list --broker "$broker" 2>/dev/null | grep -qF -- "\"name\":\"$name\""; then
    echo "topic $name exists"
    return 0
  fi
  "$tansu" topic create "$name" --partitions "$partitions" --broker "$broker" >/dev/null
  echo "created topic $name with $partitions partitions"
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
  install) install ;;
  installed) installed ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  status) status "$@" ;;
  topic) topic "$@" ;;
  path) echo "$tansu" ;;
  *) die "usage: scripts/kafka.sh install|start [--port N] [--storage URL] [--dir DIR]|stop [--dir DIR]|status|topic NAME [PARTITIONS]|path" ;;
esac
