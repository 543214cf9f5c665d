#!/bin/bash
# The Omniglot answer at every budget (experiments/compare_omniglot_minimal_ladder.yaml): 4 algorithms x 3
# seeds at 3,600 CPU-seconds each, two runs at a time, each run's snapshots at 1/16 ... 1/2 of its budget
# scored on the same test episodes. About 6.5 hours of the 2-core machine: it spans sittings. Run it from
# a clean tree (the results record the commit); stopped (Ctrl-C, SIGTERM, the end of a sitting), it keeps
# finished runs and checkpoints the others, and the same command resumes it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
"$PY" -m metacompare compare experiments/compare_omniglot_minimal_ladder.yaml --budget cpu:3600 --no-tune \
  --seeds 3 --workers 2 "$@"
