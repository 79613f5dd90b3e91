#!/usr/bin/env bash
# Scans every organism of a built zoo three times (the full scanner given the model alone; the
# full scanner with --base, the organism's declared base; the published pipeline alone with
# --published-only) and writes the results tables: all into $OUT/tables.md, and each into its
# marked region of docs/scan-results.md, if that file has one for this zoo folder's name and
# mode (zoo-out, zoo-heldout, zoo-heldout2). MODES picks a subset.
#
#   needle zoo build zoo/standard.toml --out zoo-out     # first (about an hour on 2 vCPUs)
#   bench/scan/run.sh [ZOO_DIR]                          # then (default zoo-out)
#
# The scanner is given only each organism's model folder; organism.json (the ground truth) is
# read afterwards, by the table script, never by the scan.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
ZOO=${1:-$ROOT/zoo-out}
OUT=${OUT:-$ROOT/target-bench-scan}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# NEEDLE=path/to/needle uses that binary instead of building one.
if [ -z "${NEEDLE:-}" ]; then
  (cd "$ROOT" && cargo build --release -q -p needle)
  NEEDLE=$CARGO_TARGET_DIR/release/needle
fi
mkdir -p "$OUT"
MODES=${MODES:-full base published}
for dir in "$ZOO"/*/; do
  name=$(basename "$dir")
  [ -f "$dir/organism.json" ] || continue
  for mode in $MODES; do
    flag=()
    case $mode in
      published) flag=(--published-only) ;;
      # The declared base only (what a model card's base_model names), never the ground truth.
      base) flag=(--base "$ZOO/bases/$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["base"])' "$dir/organism.json")") ;;
    esac
    echo "scan $name ($mode)" >&2
    set +e
    "$NEEDLE" scan "$dir/model" "${flag[@]}" --format json --output "$OUT/$name.$mode.json" 2>"$OUT/$name.$mode.log"
    rc=$?
    set -e
    echo "$rc" > "$OUT/$name.$mode.rc"
  done
done
# Every table goes to $OUT/tables.md; each also replaces its own marked region of
# docs/scan-results.md (zoo folder name and mode), leaving the text around it as it is.
python3 "$ROOT/bench/scan/table.py" "$ZOO" "$OUT" --splice "$ROOT/docs/scan-results.md"
