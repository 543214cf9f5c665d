"""Class-disjoint (and group-disjoint) splits of a user's data, their checks, and their record.

The split depends on the class names, the two fractions and ``split_seed`` alone: units (groups where
the folder has two levels, else classes) are sorted, shuffled with ``random.Random(split_seed)`` and
dealt to test, then validation, each unit taken while it brings the split nearer its share of the
classes; the rest meta-train.
Every algorithm and every later run therefore sees the same classes in the same split. A run writes
the split into its folder (``splits.json``) and the data's digest beside its experiment
(``data_index.json``); a run whose data no longer has that digest is refused.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

from metacompare.errors import DataError
from metacompare.config.runconfig import RunConfig

SPLITS = ("train", "validation", "test")
RECORD = "data_index.json"


def split_classes(classes: list[str], groups: list[str], validation_fraction: float, test_fraction: float,
                  seed: int) -> dict[str, list[int]]:
    """Class ids per split; ``validation`` is empty when ``validation_fraction`` is 0 (validate on train)."""
    units: dict[str, list[int]] = {}
    for c, (name, group) in enumerate(zip(classes, groups)):
        units.setdefault(group or name, []).append(c)
    order = sorted(units)
    random.Random(seed).shuffle(order)
    free = dict.fromkeys(order)  # insertion-ordered; O(1) removal

    def deal(fraction: float) -> list[int]:
        """Units in shuffled order, each taken while it brings the split closer to its share of classes."""
        target, taken = max(1, round(fraction * len(classes))), []
        for unit in list(free):
            size = len(units[unit])
            if not taken or abs(len(taken) + size - target) < abs(len(taken) - target):
                taken += units[unit]
                del free[unit]
        return taken

    test = deal(test_fraction)
    validation = deal(validation_fraction) if validation_fraction > 0 else []
    train = [c for unit in free for c in units[unit]]
    return {"train": sorted(train), "validation": sorted(validation), "test": sorted(test)}


def check_split(cfg: RunConfig, where: str, classes: list[str], per_class: list[int],
                split: dict[str, list[int]], grouped: bool) -> None:
    """Ways, shots and queries against the split, before anything trains; the first misfit is named."""
    fix_split = ("lower ways, or change user_data.test_fraction / validation_fraction (validation_fraction: 0 "
                 "validates on the training classes); `metacompare inspect` shows the split")
    if not split["train"]:
        raise DataError(f"{where}: the test and validation splits take every {'group' if grouped else 'class'} "
                        f"and leave none to meta-train on; {fix_split}")
    for name in SPLITS:
        ids = split[name] or split["train"]
        if len(ids) < cfg.ways:
            raise DataError(f"{where}: the {name} split has {len(ids)} classes, fewer than ways = {cfg.ways}; {fix_split}")
        shots, query = (cfg.training_shots, cfg.query) if name == "train" else (cfg.shots, cfg.evaluation_query)
        small = [c for c in ids if per_class[c] < shots + query]
        if small:
            c = min(small, key=lambda k: per_class[k])
            more = f" (and {len(small) - 1} more)" if len(small) > 1 else ""
            knobs = "train_shots, query" if name == "train" else "shots, test_query"
            raise DataError(f"{where}: class '{classes[c]}' ({name} split) has {per_class[c]} example"
                            f"{'s' if per_class[c] != 1 else ''}{more}, fewer than a task takes (shots {shots} + "
                            f"query {query}); add examples, lower {knobs}, or remove the class")


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=1, ensure_ascii=True) + "\n")
    os.replace(temporary, path)


def write_record(record: dict[str, Any], run_folder: Path) -> None:
    """``splits.json`` into the run folder; the data's digest into ``<experiment>/data_index.json``, or,
    where that exists with another digest, a DataError: the data changed since the experiment began."""
    index = Path(run_folder).parent / RECORD
    if index.is_file():
        try:
            recorded = json.loads(index.read_text())
        except (OSError, ValueError) as err:
            raise DataError(f"{index}: unreadable ({err}); delete it to start the record again") from None
        if recorded.get("digest") != record["digest"]:
            raise DataError(f"{record['root']}: changed since {index} was recorded (digest "
                            f"{str(recorded.get('digest'))[:12]} -> {record['digest'][:12]}); restore it, or record "
                            f"the new data as a new experiment (--set experiment=NAME or --results-dir DIR)")
    else:
        _write_json(index, {k: record[k] for k in ("form", "root", "digest", "examples")})
    _write_json(Path(run_folder) / "splits.json", record)
