#!/usr/bin/env bash
# Forward-pass benchmark: kiln and PyTorch/transformers on the same SmolLM2-135M f32 weights,
# same tokens, same machine, in one run; prints both and the ratio.
#   bash benchmarks/forward.sh [batch] [seq]      (PYTHON=... to pick the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
BATCH=${1:-8}
SEQ=${2:-256}
PYTHON=${PYTHON:-python3}
THREADS=${THREADS:-$(nproc)}
cargo build --release -p kiln -q
KILN=${CARGO_TARGET_DIR:-target}/release/kiln
DIR=${KILN_BENCH_DIR:-$(mktemp -d)/smollm2-hf}
[ -f "$DIR/model.safetensors" ] || $KILN export --model smollm2 --out "$DIR"
kiln_json=$(RAYON_NUM_THREADS=$THREADS $KILN bench forward --model "$DIR" --batch "$BATCH" --seq "$SEQ" --json)
peer_json=$($PYTHON benchmarks/reference/forward_bench.py --model "$DIR" --batch "$BATCH" --seq "$SEQ" --threads "$THREADS")
$PYTHON - "$kiln_json" "$peer_json" <<'PY'
import json, sys
k, p = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"| forward {k['batch']}x{k['seq']} | tokens/s | peak RSS MiB |")
print("|---|---|---|")
print(f"| kiln | {k['tokens_per_s']:.1f} | {k['peak_rss_mb']:.0f} |")
print(f"| transformers {p['torch']} ({p['threads']} threads) | {p['tokens_per_s']:.1f} | {p['peak_rss_mb']:.0f} |")
print(f"| ratio kiln/peer | {k['tokens_per_s']/p['tokens_per_s']:.2f}x | {k['peak_rss_mb']/p['peak_rss_mb']:.2f}x |")
PY
