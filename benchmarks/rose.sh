#!/usr/bin/env bash
# The GRPO-vs-ROSE comparison of docs/optim.md at CPU scale: tiny-countdown-grpo and its ROSE
# twin tiny-countdown-rose over several seeds, then a table (held-out greedy accuracy, pass@8,
# response length, tokens generated and seconds per step).
#
#   bash benchmarks/rose.sh [out_dir] [seeds...]      (default: runs/rose, 1 2 3)
#
# The twins share their SFT stage (same seed, same demonstrations): it runs once per seed, in the
# GRPO run, and its result (<run>/sft) is copied into the ROSE run, which reloads it.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/rose}
shift || true
seeds=("$@")
[ ${#seeds[@]} -eq 0 ] && seeds=(1 2 3)
mkdir -p "$out"
# A private copy of the binary: rebuilding kiln while the runs go on cannot change them.
cargo build --release -p kiln
cp "${CARGO_TARGET_DIR:-target}/release/kiln" "$out/kiln"
kiln=$out/kiln
for seed in "${seeds[@]}"; do
  for r in grpo rose; do
    dir=$out/$r-seed$seed
    if [ -f "$dir/final/model.safetensors" ]; then continue; fi
    if [ "$r" = rose ] && [ ! -f "$dir/sft/policy.bpk" ]; then
      mkdir -p "$dir" && cp -r "$out/grpo-seed$seed/sft" "$dir/"
    fi
    echo "== tiny-countdown-$r seed $seed -> $dir"
    "$kiln" train "recipes/tiny-countdown-$r.toml" --run-dir "$dir" --set "seed=$seed" \
      > "$dir.log" 2>&1 || { echo "failed: see $dir.log"; exit 1; }
  done
done
python3 benchmarks/rose_table.py "$out" "${seeds[@]}"
