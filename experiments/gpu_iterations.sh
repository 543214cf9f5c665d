#!/usr/bin/env bash
# How many meta-iterations each algorithm needs on omniglot_minimal, measured on a lent GPU, where
# iterations are cheap (issue 11: is the 95% target a question of budget or of protocol?). Runs the
# configs/omniglot_minimal.yaml protocols side by side, each for at most LIMIT seconds, validating every
# 1,000 iterations; also two outer-rate variants for FOMAML and MAML (Adam from 0.002 annealed to 0).
#   bash experiments/gpu_iterations.sh OUT_DIR [LIMIT_S] [PYTHON]
set -uo pipefail
out=${1:?usage: gpu_iterations.sh OUT_DIR [LIMIT_S] [PYTHON]}
limit=${2:-480}
py=${3:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
common=(--set device=cuda --set eval_interval=1000 --set eval_episodes=300 --set checkpoint_interval=1000
        --set test_episodes=1000 --set common_evaluation=null --results-dir "$out/runs" --allow-dirty --no-progress)
launch() {  # name, then --set overrides
  local name=$1; shift
  timeout "$limit" "$py" -m metacompare run configs/omniglot_minimal.yaml --set experiment="$name" \
    "${common[@]}" "$@" > "$out/$name.log" 2>&1 &
}
launch fomaml_paper --set algorithm=fomaml --set batch_tasks=true --set iterations=100000
launch fomaml_anneal --set algorithm=fomaml --set batch_tasks=true --set iterations=8000 \
  --set outer_lr=0.002 --set outer_lr_final=0
launch maml_paper --set algorithm=maml --set batch_tasks=true --set iterations=100000
launch maml_anneal --set algorithm=maml --set batch_tasks=true --set iterations=8000 \
  --set outer_lr=0.002 --set outer_lr_final=0
launch reptile_paper --set algorithm=reptile --set iterations=100000
launch reptile_8000 --set algorithm=reptile --set iterations=8000
wait
nvidia-smi --query-gpu=name,memory.total --format=csv > "$out/gpu.txt"
for m in "$out"/runs/*/*/metrics.csv; do  # flat copies: a device's output folder has a depth limit
  name=$(basename "$(dirname "$(dirname "$m")")")
  cp "$m" "$out/$name.metrics.csv"
  echo "$name: $(tail -n 1 "$m" | cut -d, -f1,2) (iteration, wall seconds)"
done
rm -rf "$out/runs"
