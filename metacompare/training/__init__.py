"""Training one configuration: build, run in phases, checkpoints, budgets, scoring."""
