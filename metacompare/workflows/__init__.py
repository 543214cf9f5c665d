"""Workflows: what a user runs end to end on top of single runs (compare, tune, sweep, bench)."""
