#!/usr/bin/env bash
# Side-by-side timings on one machine (release build):
#   1. single-core SHA-256: `needle manifest --hash sha256` (1 thread) vs `sha256sum`
#   2. BLAKE3: `needle manifest --hash blake3` vs `b3sum` (both single- and all-threads)
#   3. `needle sign` + `needle verify` vs `model_signing sign key` + `model_signing verify key`
#      (PyPI; file serialization, SHA-256: the reference CLI's defaults) on a folder of FOLDER_GB.
# Environment: FILE_GB (default 3), FOLDER_GB (default 4), BENCH_DIR (default target-bench-sign).
# Every timing is the best of RUNS (default 2) runs with a warm page cache, so it measures
# hashing, not the disk. Check free space first: FILE_GB + FOLDER_GB are written.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
FILE_GB=${FILE_GB:-3}
FOLDER_GB=${FOLDER_GB:-4}
RUNS=${RUNS:-2}
WORK=${BENCH_DIR:-$ROOT/target-bench-sign}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$WORK"
df -h "$WORK" | tail -1

(cd "$ROOT" && cargo build --release -q -p needle)
NEEDLE=$CARGO_TARGET_DIR/release/needle

best() { # best wall time in seconds of RUNS runs of "$@"
  local best=""
  for _ in $(seq "$RUNS"); do
    local s e t
    s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N)
    t=$(echo "$e - $s" | bc -l)
    if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
  done
  printf '%.2f' "$best"
}
ratio() { printf '%.2f' "$(echo "$1 / $2" | bc -l)"; }

BIG=$WORK/big.bin
if [ ! -f "$BIG" ] || [ "$(stat -c %s "$BIG")" -ne $((FILE_GB * 1024 * 1024 * 1024)) ]; then
  echo "generating $BIG ($FILE_GB GiB)"
  head -c $((FILE_GB * 1024 * 1024 * 1024)) /dev/urandom > "$BIG"
fi
MODEL=$WORK/model
if [ ! -d "$MODEL" ]; then
  echo "generating $MODEL ($FOLDER_GB GiB in 8 files + small files)"
  mkdir -p "$MODEL"
  for i in $(seq 1 8); do
    head -c $((FOLDER_GB * 1024 * 1024 * 1024 / 8)) /dev/urandom > "$MODEL/model-0000$i-of-00008.safetensors"
  done
  echo '{"model_type":"llama"}' > "$MODEL/config.json"
  echo '{}' > "$MODEL/tokenizer_config.json"
fi
cat "$BIG" > /dev/null; cat "$MODEL"/* > /dev/null   # warm the page cache

echo "== hashing one ${FILE_GB} GiB file (nproc=$(nproc))"
T_SHA=$(best sha256sum "$BIG")
T_NSHA=$(RAYON_NUM_THREADS=1 best "$NEEDLE" manifest "$BIG" --hash sha256)
echo "sha256  1 thread: sha256sum ${T_SHA}s  needle ${T_NSHA}s  (needle/sha256sum time ratio $(ratio "$T_NSHA" "$T_SHA"))"
if command -v b3sum >/dev/null; then
  T_B3=$(best b3sum --num-threads 1 "$BIG")
  T_NB3=$(RAYON_NUM_THREADS=1 best "$NEEDLE" manifest "$BIG" --hash blake3)
  echo "blake3  1 thread: b3sum ${T_B3}s  needle ${T_NB3}s  (ratio $(ratio "$T_NB3" "$T_B3"))"
  T_B3M=$(best b3sum "$BIG")
  T_NB3M=$(best "$NEEDLE" manifest "$BIG" --hash blake3)
  echo "blake3  all threads: b3sum ${T_B3M}s  needle ${T_NB3M}s  (ratio $(ratio "$T_NB3M" "$T_B3M"))"
else
  echo "blake3: b3sum not installed (apt-get install b3sum); skipped"
fi

echo "== sign + verify a ${FOLDER_GB} GiB folder (files, sha256)"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/key.pem" 2>/dev/null
openssl pkey -in "$WORK/key.pem" -pubout -out "$WORK/pub.pem"
T_NS=$(best "$NEEDLE" sign "$MODEL" --key "$WORK/key.pem" --signature "$WORK/needle.sig")
T_NV=$(best "$NEEDLE" verify "$MODEL" --key "$WORK/pub.pem" --signature "$WORK/needle.sig")
echo "needle        sign ${T_NS}s  verify ${T_NV}s"
VENV=$WORK/venv
if [ ! -x "$VENV/bin/model_signing" ]; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q model_signing pyOpenSSL || echo "model_signing unavailable"
fi
if [ -x "$VENV/bin/model_signing" ]; then
  T_MS=$(best "$VENV/bin/model_signing" sign key "$MODEL" --private_key "$WORK/key.pem" --signature "$WORK/ref.sig")
  T_MV=$(best "$VENV/bin/model_signing" verify key "$MODEL" --public_key "$WORK/pub.pem" --signature "$WORK/ref.sig")
  echo "model_signing sign ${T_MS}s  verify ${T_MV}s"
  echo "speed-up (model_signing time / needle time): sign $(ratio "$T_MS" "$T_NS")x  verify $(ratio "$T_MV" "$T_NV")x"
  # Cross-check: each verifies the other's signature.
  "$NEEDLE" verify "$MODEL" --key "$WORK/pub.pem" --signature "$WORK/ref.sig" >/dev/null && echo "needle verifies model_signing's signature: ok"
  "$VENV/bin/model_signing" verify key "$MODEL" --public_key "$WORK/pub.pem" --signature "$WORK/needle.sig" >/dev/null 2>&1 \
    && echo "model_signing verifies needle's signature: ok"
fi

echo "== peak memory (max RSS) of needle sign: one ${FILE_GB} GiB file vs the ${FOLDER_GB} GiB folder vs a 1 MiB file"
SMALL=$WORK/small; mkdir -p "$SMALL"; head -c 1048576 /dev/urandom > "$SMALL/model.safetensors"
rss() { /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null | tail -1; }
echo "needle sign 1 MiB:          $(rss "$NEEDLE" sign "$SMALL" --key "$WORK/key.pem" --signature "$WORK/s.sig") KiB"
echo "needle sign ${FILE_GB} GiB file:    $(rss "$NEEDLE" sign "$BIG" --key "$WORK/key.pem" --signature "$WORK/b.sig") KiB (page-cache mapped pages count toward RSS while hashed)"
echo "needle sign ${FOLDER_GB} GiB folder: $(rss "$NEEDLE" sign "$MODEL" --key "$WORK/key.pem" --signature "$WORK/m.sig") KiB"
