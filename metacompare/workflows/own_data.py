"""A run or a compare on the user's own folder or table, with no config file: the default config for
that data (:func:`metacompare.workflows.data_defaults.data_config`), written where the results will lie so that
it can be read, edited and rerun."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metacompare.training import budget as budgets
from metacompare.workflows.data_defaults import data_config, write_config


def config_file(data: str | Path, *, form: str | None = None, ways: int = 5, shots: int = 1,
                label_column: str = "label", text_column: str = "text", procs: int = 1,
                results_dir: str | Path | None = None, compare_budget: str | None = None) -> tuple[Path, dict[str, Any]]:
    """The default config for ``data``, written to ``<results>/<experiment>/data_config.yaml``, or for a
    compare under ``compare_budget`` to ``<results>/<experiment>_compare_<budget>/data_config.yaml``
    (the compare's own folder); ``procs``: the processes each compared run trains on. Returns the file
    and the config it holds."""
    raw = data_config(data, form, ways, shots, label_column, text_column, procs=procs)
    folder = raw["experiment"]
    if compare_budget is not None:
        folder += f"_compare_{budgets.label(budgets.parse_budget(compare_budget))}"
    return write_config(raw, Path(results_dir or "results") / folder / "data_config.yaml"), raw
