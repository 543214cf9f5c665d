#!/usr/bin/env bash
# Behaviour-preservation check (issue 10): short seeded CPU runs of every algorithm on sine and on a
# cut-down omniglot_minimal, test scores as JSON lines. Run it on two checkouts and diff the files:
#   git worktree add /tmp/before REV1; git worktree add /tmp/after REV2
#   bash experiments/equivalence.sh /tmp/before before.jsonl; bash experiments/equivalence.sh /tmp/after after.jsonl
#   diff before.jsonl after.jsonl && echo bitwise identical
# Omniglot data is read from <checkout>/../shared/data/omniglot. Algorithms without a paper protocol in
# omniglot_minimal (anil, metasgd, pretrain, scratch) run there on model conv4.
set -uo pipefail
cd "${1:?usage: equivalence.sh CHECKOUT OUT.jsonl}"; out=$(realpath -m "${2:?usage: equivalence.sh CHECKOUT OUT.jsonl}"); : > "$out"
for a in reptile fomaml maml anil metasgd pretrain scratch; do
  OMP_NUM_THREADS=1 PYTHONPATH=$PWD python - "$a" "$out" <<'PY'
import json, sys, tempfile, torch
torch.set_num_threads(1)
from metacompare.config.loading import load_experiment
from metacompare.training.runner import train_and_evaluate
algorithm, out = sys.argv[1], sys.argv[2]
model = [] if algorithm in ("reptile", "fomaml", "maml") else ["model=conv4"]
runs = [("configs/sine.yaml", ["iterations=30", "eval_interval=15", "test_episodes=50", "eval_episodes=10"]),
        ("configs/omniglot_minimal.yaml", ["iterations=6", "eval_interval=3", "test_episodes=20", "eval_episodes=5",
                                           "meta_batch_size=4", "filters=16", *model])]
with tempfile.TemporaryDirectory() as results:
    for path, changes in runs:
        for cfg in load_experiment(path, [f"algorithm={algorithm}", f"results_dir={results}", *changes]):
            s = train_and_evaluate(cfg, progress=False, force=True)
            with open(out, "a") as f:
                f.write(json.dumps({"config": path, "algorithm": algorithm, "test_loss": s["test_loss_mean"],
                                    "test_accuracy": s["test_accuracy_mean"]}) + "\n")
PY
done
