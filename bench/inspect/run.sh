#!/usr/bin/env bash
# Benchmark: `needle inspect` on a folder holding a 4 GiB (sparse) safetensors file vs a 4 MiB
# one. Only the header is read, so the two times must be about equal. Release build.
#
#   bench/inspect/run.sh            # uses hyperfine when installed, else a date +%s%N loop
#   RUNS=20 bench/inspect/run.sh
#   NEEDLE_BIN=/path/to/needle bench/inspect/run.sh     # a binary built already
#   PIPELINE_BIN=path/to/examples/inspect bench/inspect/run.sh   # that example, built already
#   BENCH_PIPELINE=1 bench/inspect/run.sh               # the library pipeline alone
#                                                       # (needle-artifact's `inspect` example,
#                                                       # no engine to build)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${RUNS:-10}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
if [ -n "${NEEDLE_BIN:-}" ]; then
  BIN="$NEEDLE_BIN"; CMD="$BIN inspect"
elif [ -n "${PIPELINE_BIN:-}" ]; then
  BIN="$PIPELINE_BIN"; CMD="$BIN"
elif [ -n "${BENCH_PIPELINE:-}" ]; then
  cargo build --release -p needle-artifact --example inspect --quiet
  BIN="$TARGET_DIR/release/examples/inspect"; CMD="$BIN"
else
  cargo build --release -p needle --quiet
  BIN="$TARGET_DIR/release/needle"; CMD="$BIN inspect"
fi
echo "binary: $BIN"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# A valid safetensors file of one U8 tensor of `bytes` bytes; the data is a sparse hole.
make_st() { # path bytes
  python3 - "$1" "$2" <<'PY'
import json, struct, sys
path, n = sys.argv[1], int(sys.argv[2])
h = json.dumps({"__metadata__": {"format": "pt"}, "model.embed_tokens.weight": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
PY
  local hdr; hdr=$(stat -c %s "$1")
  truncate -s $((hdr + $2)) "$1"
}
mkdir -p "$WORK/small" "$WORK/big"
make_st "$WORK/small/model.safetensors" $((4 * 1024 * 1024))
make_st "$WORK/big/model.safetensors" $((4 * 1024 * 1024 * 1024))
echo "files: $(stat -c '%s %n' "$WORK"/small/model.safetensors "$WORK"/big/model.safetensors | tr '\n' ' ')"
echo "disk used by the 4 GiB file: $(du -k "$WORK/big/model.safetensors" | cut -f1) KiB (sparse)"
$CMD "$WORK/big" | head -5 || true

if command -v hyperfine >/dev/null; then
  hyperfine -N -i --warmup 3 --runs "$RUNS" --export-json "$WORK/h.json" \
    -n small-4MiB "$CMD $WORK/small" -n big-4GiB "$CMD $WORK/big"
  python3 - "$WORK/h.json" <<'PY'
import json, sys
r = {x["command"]: x["mean"] for x in json.load(open(sys.argv[1]))["results"]}
s, b = r["small-4MiB"], r["big-4GiB"]
print(f"small {s*1e3:.2f} ms, big {b*1e3:.2f} ms, ratio big/small {b/s:.3f}")
PY
else
  mean_ms() { # dir
    local total=0 t0 t1
    for _ in $(seq "$RUNS"); do
      t0=$(date +%s%N); $CMD "$1" >/dev/null 2>&1 || true; t1=$(date +%s%N)
      total=$((total + t1 - t0))
    done
    echo "scale=3; $total / $RUNS / 1000000" | bc
  }
  s=$(mean_ms "$WORK/small"); b=$(mean_ms "$WORK/big")
  echo "small $s ms, big $b ms (mean of $RUNS), ratio big/small $(echo "scale=3; $b / $s" | bc)"
fi
