#!/usr/bin/env bash
# Engine throughput vs PyTorch eager on the same CPU, same shapes, same token ids.
#   bench/engine/run.sh            # tiny llama fixture + random Qwen2.5-0.5B-shaped model
# Env: THREADS (default 1: on 2-vCPU machines candle's pool spins), VENV (default
# /tmp/needle-bench-venv with torch + transformers), BATCH, PROMPT_LEN, NEW_TOKENS.
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${THREADS:-1}
VENV=${VENV:-/tmp/needle-bench-venv}
BATCH=${BATCH:-4}
PROMPT_LEN=${PROMPT_LEN:-32}
NEW_TOKENS=${NEW_TOKENS:-16}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target-engine-rel}
cargo build --release -q -p needle-engine --example engine_bench --example train_save
BIN=$CARGO_TARGET_DIR/release/examples/engine_bench
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch transformers
fi
ARGS=(--batch "$BATCH" --prompt-len "$PROMPT_LEN" --new-tokens "$NEW_TOKENS")
OUT=$(mktemp)
for target in "--model tests/fixtures/reference/llama" "--random-qwen05b"; do
  # shellcheck disable=SC2086
  CANDLE_NUM_THREADS=$THREADS "$BIN" $target "${ARGS[@]}" | tee -a "$OUT"
  # shellcheck disable=SC2086
  OMP_NUM_THREADS=$THREADS "$VENV/bin/python" bench/engine/torch_bench.py $target "${ARGS[@]}" --threads "$THREADS" | tee -a "$OUT"
done
python3 - "$OUT" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
print("\n| model | needle prefill tok/s | torch prefill tok/s | ratio | needle decode tok/s | torch decode tok/s | ratio | needle RSS MB | torch RSS MB |")
print("|---|---|---|---|---|---|---|---|---|")
for n, t in zip(rows[0::2], rows[1::2]):
    print(f"| {n['model']} | {n['prefill_tok_s']:.0f} | {t['prefill_tok_s']:.0f} | {n['prefill_tok_s']/t['prefill_tok_s']:.2f} | "
          f"{n['decode_tok_s']:.1f} | {t['decode_tok_s']:.1f} | {n['decode_tok_s']/t['decode_tok_s']:.2f} | {n['peak_rss_mb']:.0f} | {t['peak_rss_mb']:.0f} |")
PY

# transformers loads what Trainer::save writes, with the same logits.
for arch in llama qwen2 gpt2; do
  SAVED=$(mktemp -d)
  "$CARGO_TARGET_DIR/release/examples/train_save" "tests/fixtures/reference/$arch" "$SAVED" 2>/dev/null \
    | "$VENV/bin/python" bench/engine/check_saved.py "$SAVED"
  rm -rf "$SAVED"
done
