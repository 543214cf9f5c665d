"""``metacompare inspect PATH``: what a folder or table holds, the split it would get, the tasks it serves.

Reads the index (no image is decoded; a few files' headers give the image sizes and whether they are
grey), so it is as quick on 100,000 files as indexing them; ``verify`` decodes every image to find
the corrupt ones. Anything a run could not use is a DataError (exit status 2, one line).
"""

from __future__ import annotations

from pathlib import Path

from metacompare.workflows.data_defaults import _fractions, base_config, check_ways
from metacompare.data.source import source_of


def inspect(path: str | Path, form: str | None = None, label_column: str = "label", text_column: str = "text",
            ways: int = 5, shots: int = 1, query: int = 1, verify: bool = False, overrides=()) -> str:
    """The report as text; raises DataError where the data cannot serve ``ways``-way ``shots``-shot tasks."""
    from metacompare.config.loading import expand

    check_ways(ways)
    raw = base_config(path, form, label_column, text_column)
    form = source_of(raw["dataset"])
    raw["model"] = form.network_for("maml", 1)["model"]
    cfg = expand({**raw, "ways": ways, "shots": shots, "query": query, "test_query": query}, overrides, source="inspect")[0]
    source = form.load(cfg)
    if not any(o.split("=")[0].strip() in ("user_data.validation_fraction", "user_data.test_fraction")
               for o in overrides):
        validation, test = _fractions(source, ways)
        cfg = expand({**raw, "ways": ways, "shots": shots, "query": query, "test_query": query,
                      "user_data": {**raw["user_data"], "validation_fraction": validation, "test_fraction": test}},
                     overrides, source="inspect")[0]
    lines = form.report(cfg, source, verify)
    lines.append(f"  {ways}-way {shots}-shot with {query} quer{'y' if query == 1 else 'ies'} per class: fits; "
                 f"next: metacompare compare --data {source.path} --ways {ways} --shots {shots} --budget cpu:300")
    return "\n".join(lines)
