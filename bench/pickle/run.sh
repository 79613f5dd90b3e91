#!/usr/bin/env bash
# Pickle scanning throughput: needle (release build) vs picklescan, same inputs, side by side.
# Run from the repository root:   bench/pickle/run.sh [TARGET_MB]
# Needs python3 (stdlib) and network access to PyPI once (picklescan goes into a venv in /tmp).
set -euo pipefail
MB="${1:-300}"
WORK="${NEEDLE_BENCH_DIR:-/tmp/needle-bench-pickle}"
VENV="${NEEDLE_BENCH_VENV:-/tmp/needle-bench-venv}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

# The analysers `needle inspect` runs on one file, without the rest of the binary (set
# NEEDLE_BIN=target/release/needle to time the full `needle inspect` instead).
if [ -n "${NEEDLE_BIN:-}" ]; then
  NEEDLE=("$NEEDLE_BIN" inspect)
else
  cargo build --release -p needle-artifact --example scan_artifact >&2
  NEEDLE=("$TARGET_DIR/release/examples/scan_artifact")
fi

if [ ! -x "$VENV/bin/picklescan" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet picklescan
fi

if [ ! -f "$WORK/big.pkl" ] || [ ! -f "$WORK/.mb-$MB" ]; then
  rm -f "$WORK"/.mb-*
  python3 bench/pickle/make_big.py "$WORK" "$MB" >&2
  touch "$WORK/.mb-$MB"
fi

# Seconds (wall) of the best of N runs of a command; its exit status is ignored (findings => 1).
best_of() {
  local n="$1"; shift
  local best=""
  for _ in $(seq "$n"); do
    local s e t
    s=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || true
    e=$(date +%s.%N)
    t=$(echo "$e - $s" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best="$t"; fi
  done
  echo "$best"
}

printf '%-12s %10s %12s %14s %14s %8s\n' input MB needle_s picklescan_s needle_MB/s ratio
for f in big.pkl big-zip.pt; do
  path="$WORK/$f"
  size=$(stat -c %s "$path")
  mb=$(echo "$size / 1048576" | bc -l)
  # warm the page cache so both read from memory
  cat "$path" >/dev/null
  tn=$(best_of 3 "${NEEDLE[@]}" "$path")
  tp=$(best_of 1 "$VENV/bin/picklescan" --path "$path")
  printf '%-12s %10.1f %12.3f %14.3f %14.1f %8.1fx\n' "$f" "$mb" "$tn" "$tp" "$(echo "$mb / $tn" | bc -l)" "$(echo "$tp / $tn" | bc -l)"
done
echo "picklescan $("$VENV/bin/pip" show picklescan 2>/dev/null | awk '/^Version/{print $2}'); needle: ${NEEDLE[*]}"
