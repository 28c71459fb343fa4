#!/usr/bin/env bash
# Rollout benchmark: kiln's engine (`kiln bench rollout`) and transformers `generate` on the same
# SmolLM2-135M f32 weights, same prompts, same machine, in one run; prints both and the ratio.
#   bash benchmarks/rollout.sh [prompt_len] [new_tokens] [batches...]   (PYTHON=... for the peer)
# Defaults: 64-token prompts, 128 new tokens, batch 1 8 32 64, greedy, n = 1. N=8 adds a row
# with 8 samples per prompt on the kiln side (prompt prefilled once).
set -euo pipefail
cd "$(dirname "$0")/.."
PLEN=${1:-64}
NEW=${2:-128}
shift $(( $# > 2 ? 2 : $# ))
BATCHES=${*:-1 8 32 64}
PYTHON=${PYTHON:-python3}
THREADS=${THREADS:-$(nproc)}
cargo build --release -p kiln -q
KILN=${CARGO_TARGET_DIR:-target}/release/kiln
DIR=${KILN_BENCH_DIR:-$(mktemp -d)/smollm2-hf}
[ -f "$DIR/model.safetensors" ] || $KILN export --model smollm2 --out "$DIR"
echo "| batch | kiln new tok/s | peer new tok/s | ratio | kiln prefill tok/s | peer prefill tok/s | kiln RSS MiB | peer RSS MiB |"
echo "|---|---|---|---|---|---|---|---|"
for B in $BATCHES; do
  k=$(RAYON_NUM_THREADS=$THREADS $KILN bench rollout --model "$DIR" --batch "$B" --prompt-len "$PLEN" --new-tokens "$NEW" --json)
  p=$($PYTHON benchmarks/reference/generate_bench.py --model "$DIR" --batch "$B" --prompt-len "$PLEN" --new-tokens "$NEW" --threads "$THREADS" 2>/dev/null)
  $PYTHON - "$B" "$k" "$p" <<'PY'
import json, sys
b, k, p = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"| {b} | {k['new_tokens_per_s']:.1f} | {p['new_tokens_per_s']:.1f} | {k['new_tokens_per_s']/p['new_tokens_per_s']:.2f}x "
      f"| {k['prefill_tokens_per_s']:.1f} | {p['prefill_tokens_per_s']:.1f} | {k['peak_rss_mb']:.0f} | {p['peak_rss_mb']:.0f} |")
PY
done
if [ -n "${N:-}" ]; then
  RAYON_NUM_THREADS=$THREADS $KILN bench rollout --model "$DIR" --batch 4 --n "$N" --prompt-len "$PLEN" --new-tokens "$NEW"
fi
