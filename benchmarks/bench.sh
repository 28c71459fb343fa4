#!/usr/bin/env bash
# Every speed benchmark, kiln beside PyTorch/transformers on the same SmolLM2-135M f32 weights,
# same inputs, same threads, same machine, in one run (`just bench`). Prints one Markdown table
# with the ratios and keeps the raw JSON of each side.
#   bash benchmarks/bench.sh            (PYTHON=... the peer's interpreter, THREADS=2,
#                                        BATCHES="1 8 32 64" the rollout batches,
#                                        REPEATS=3 runs of each rollout pair,
#                                        OUT=... the JSONL of results)
# Rows: forward 8x256 (logits), score 8x320 (log-probs without autodiff), rollouts of 128 new
# tokens after 64-token prompts (greedy) at each batch, and one GRPO update at 8x320.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
THREADS=${THREADS:-2}
BATCHES=${BATCHES:-1 8 32 64}
# Rollout speeds move by +-10% from run to run on a shared machine (either side): each rollout
# pair runs REPEATS times, kiln and the peer alternating, and the table shows medians.
REPEATS=${REPEATS:-3}
cargo build --release -p kiln -q
KILN=$(realpath "${CARGO_TARGET_DIR:-target}")/release/kiln
DIR=${KILN_BENCH_DIR:-$(mktemp -d)/smollm2-hf}
[ -f "$DIR/model.safetensors" ] || $KILN export --model smollm2 --out "$DIR"
OUT=${OUT:-runs/bench/bench-$(date +%Y%m%d-%H%M%S).jsonl}
mkdir -p "$(dirname "$OUT")"
: > "$OUT"
REF=benchmarks/reference
export RAYON_NUM_THREADS=$THREADS

# record NAME SIDE JSON: one line of $OUT.
record() { $PYTHON -c 'import json,sys; d=json.loads(sys.argv[3]); d["bench"]=sys.argv[1]; d["side"]=sys.argv[2]; print(json.dumps(d))' "$1" "$2" "$3" >> "$OUT"; }
# pair NAME "kiln args" "peer script + args": runs kiln, then the peer.
pair() {
  echo "running $1" >&2
  record "$1" kiln "$($KILN $2 --model "$DIR" --json)"
  # The peer's stderr (progress bars) goes to a log that is shown only if it fails.
  local log peer
  log=$(mktemp)
  if ! peer=$($PYTHON $3 --model "$DIR" --threads "$THREADS" 2>"$log"); then
    echo "the peer of '$1' failed ($PYTHON $3); its stderr:" >&2
    cat "$log" >&2
    exit 1
  fi
  record "$1" peer "$peer"
}

pair "forward 8x256" "bench forward --batch 8 --seq 256" "$REF/forward_bench.py --batch 8 --seq 256"
pair "score 8x320" "bench score --batch 8 --seq 320 --threads $THREADS" "$REF/score_bench.py --batch 8 --seq 320"
for B in $BATCHES; do
  for _ in $(seq "$REPEATS"); do
    pair "rollout b$B" "bench rollout --batch $B --prompt-len 64 --new-tokens 128" \
      "$REF/generate_bench.py --batch $B --prompt-len 64 --new-tokens 128"
  done
done
pair "train 8x320" "bench train --batch 8 --seq 320 --threads $THREADS" "$REF/train_bench.py --batch 8 --seq 320"
$PYTHON benchmarks/bench_table.py "$OUT"
echo "raw results: $OUT" >&2
