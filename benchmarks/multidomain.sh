#!/usr/bin/env bash
# The multi-domain comparison of docs/optim.md: the four multidomain-* recipes (summed gradients,
# global PCGrad, MGS, sequential phases) over several seeds, then a table of held-out accuracy per
# domain (mean and spread over seeds).
#
#   bash benchmarks/multidomain.sh [out_dir] [seeds...]      (default: runs/multidomain, 1 2 3)
#
# The four recipes share their SFT stage (same seed, same demonstrations), so each seed's SFT
# runs once, in the mixed run, and its result (<run>/sft) is copied into the other runs, which
# then start RL from it exactly as if they had trained it themselves (a run reloads
# <run>/sft/policy.bpk when it exists).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/multidomain}
shift || true
seeds=("$@")
[ ${#seeds[@]} -eq 0 ] && seeds=(1 2 3)
mkdir -p "$out"
# A private copy of the binary: rebuilding kiln while the runs go on cannot change them.
cargo build --release -p kiln
cp "${CARGO_TARGET_DIR:-target}/release/kiln" "$out/kiln"
kiln=$out/kiln
for seed in "${seeds[@]}"; do
  for r in mixed pcgrad mgs sequential; do
    dir=$out/$r-seed$seed
    if [ -f "$dir/final/model.safetensors" ]; then continue; fi
    if [ "$r" != mixed ] && [ ! -f "$dir/sft/policy.bpk" ]; then
      mkdir -p "$dir" && cp -r "$out/mixed-seed$seed/sft" "$dir/"
    fi
    echo "== multidomain-$r seed $seed -> $dir"
    "$kiln" train "recipes/multidomain-$r.toml" --run-dir "$dir" --set "seed=$seed" \
      > "$dir.log" 2>&1 || { echo "failed: see $dir.log"; exit 1; }
  done
done
python3 benchmarks/multidomain_table.py "$out" "${seeds[@]}"
