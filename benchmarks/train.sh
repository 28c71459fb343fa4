#!/usr/bin/env bash
# Training-step benchmark: one GRPO update (`kiln bench train`: forward, chunked log-probs,
# clipped PPO loss, backward, global-norm clip, AdamW) and the same step in PyTorch/transformers,
# on the same SmolLM2-135M f32 weights, same rows, same machine, in one run; prints both and the
# ratio.
#   bash benchmarks/train.sh [batch] [seq]      (PYTHON=... to pick the interpreter)
# Rows are a 64-token prompt (PROMPT_LEN=...) and seq - 64 response tokens; STEPS=3 timed steps
# after one warm-up, the median reported; THREADS=2 threads on each side.
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH=${1:-8}
SEQ=${2:-320}
PLEN=${PROMPT_LEN:-64}
STEPS=${STEPS:-3}
PYTHON=${PYTHON:-python3}
THREADS=${THREADS:-2}
cargo build --release -p kiln -q
KILN=${CARGO_TARGET_DIR:-target}/release/kiln
DIR=${KILN_BENCH_DIR:-$(mktemp -d)/smollm2-hf}
[ -f "$DIR/model.safetensors" ] || $KILN export --model smollm2 --out "$DIR"
kiln_json=$($KILN bench train --model "$DIR" --batch "$BATCH" --seq "$SEQ" --prompt-len "$PLEN" --steps "$STEPS" --threads "$THREADS" --json)
peer_json=$($PYTHON benchmarks/reference/train_bench.py --model "$DIR" --batch "$BATCH" --seq "$SEQ" --prompt-len "$PLEN" --steps "$STEPS" --threads "$THREADS" --json)
$PYTHON - "$kiln_json" "$peer_json" <<'PY'
import json, sys
k, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"| train step {k['batch']}x{k['seq']} | tokens/s | s/step | forward+backward s | optimizer s | peak RSS MiB |")
print("|---|---|---|---|---|---|")
print(f"| kiln | {k['tokens_per_s']:.1f} | {k['step_s']:.2f} | {k['backward_s']:.2f} | {k['optimizer_s']:.2f} | {k['peak_rss_mb']:.0f} |")
print(f"| torch {p['torch']} ({p['threads']} threads) | {p['tokens_per_s']:.1f} | {p['step_s']:.2f} | {p['backward_s']:.2f} | {p['optimizer_s']:.2f} | {p['peak_rss_mb']:.0f} |")
print(f"| ratio kiln/peer | {k['tokens_per_s']/p['tokens_per_s']:.2f}x | {k['step_s']/p['step_s']:.2f}x | {k['backward_s']/p['backward_s']:.2f}x | {k['optimizer_s']/p['optimizer_s']:.2f}x | {k['peak_rss_mb']/p['peak_rss_mb']:.2f}x |")
PY
