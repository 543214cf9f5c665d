"""The recorded sine comparison at 30 CPU-minutes per run (results/sine_compare_cpu1800s/).

    python -m metacompare compare experiments/compare_sine.yaml --budget cpu:1800 \
        --chosen results/sine_compare_cpu300s/tune/search.yaml --seeds 1
trains seed 0 of each algorithm at the settings tuned for the 300-second comparison. Reptile's seed 0
diverged there (non-finite loss at iteration 8,817, as at 300 seconds), so Reptile alone got a second
seed (the same command with ``--set algorithm=reptile --set seed=1``). This script writes the report
over exactly those runs (it trains only what is missing): python experiments/report_sine_cpu1800s.py
"""

from metacompare.training import budget

from metacompare.workflows import tune
from metacompare.workflows.compare import read_chosen, write_report
from metacompare.config.loading import with_overrides
from metacompare.training.runner import train_and_evaluate

SPEC, CHOSEN, BUDGET = "experiments/compare_sine.yaml", "results/sine_compare_cpu300s/tune/search.yaml", "cpu:1800"
SEEDS = {"fomaml": 1, "maml": 1, "reptile": 2}

if __name__ == "__main__":
    bound = budget.parse_budget(BUDGET)
    configs, spec = tune.load(SPEC)
    configs = [with_overrides(c, experiment=f"{c.experiment}_compare_{budget.label(bound)}") for c in configs]
    if spec.trial_budget is None:  # as compare does: a trial's budget is a quarter of the run's
        spec.trial_budget = {kind: amount / 4 for kind, amount in bound.items()}
    source = read_chosen(CHOSEN, configs)
    finals = [final for cfg in configs
              for final in tune.final_configs([cfg], source["chosen"], SEEDS[cfg.algorithm], bound, spec.evaluations)]
    summaries = [train_and_evaluate(c, progress=False) for c in finals]
    print(f"report: {write_report(finals, summaries, bound, source['chosen'], spec, source)}")
