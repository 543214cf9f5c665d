#!/bin/bash
# The 3-seed Omniglot answer (experiments/compare_omniglot_minimal_seeds.yaml), breadth-first: every
# algorithm's seed s before any seed s + 1, then the compare report over every seed finished so far
# (that call only reads finished runs). It spans sessions: rerun it and it resumes finished and
# checkpointed runs (the run ids are those of --seeds 3). Run from a clean tree so the results record it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
ARGS=(experiments/compare_omniglot_minimal_seeds.yaml --budget cpu:3600 --no-tune --procs 2)
for s in 0 1 2; do
  "$PY" -m metacompare compare "${ARGS[@]}" --seeds 1 --set seed=$s --set "algorithm=[reptile, maml, pretrain, fomaml]"
  "$PY" -m metacompare compare "${ARGS[@]}" --seeds $((s + 1)) --no-progress
done
