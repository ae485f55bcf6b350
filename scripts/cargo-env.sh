# Sourced by scripts/weir, scripts/test.sh and scripts/fuzz.sh: every build
# of Weir goes to one target directory outside the clone, so that the
# README's two commands share one build (set CARGO_TARGET_DIR to choose
# another place).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weir/target}"
