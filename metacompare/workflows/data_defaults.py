"""The config ``run --data PATH`` and ``compare --data PATH`` use when no config file is given.

The form is detected (a folder: images; a table with a ``text`` column: texts; else vectors). The
algorithms run the protocols of the recorded Omniglot comparison (``configs/omniglot_minimal.yaml`` and
``experiments/compare_omniglot_minimal_pretrain.yaml``): Reptile as openai/supervised-reptile runs it,
FOMAML and MAML as cbfinn/maml does, and supervised pre-training (Chen et al. 2019's Baseline), with
the networks sized to the data; for vectors and texts, where Finn's step of 0.4 on a summed loss is
untested, MAML's inner loop takes SGD steps of 0.1 on the mean loss. The split fractions fall back to
validating on the training classes when the data has too few classes for three disjoint splits.
Every field can be overridden with ``--set``, or by writing the config out and editing it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import yaml

from metacompare import paths
from metacompare.data import splits
from metacompare.data.source import source_of
from metacompare.data.table import CSV_SUFFIXES, PARQUET_SUFFIXES, read_frame
from metacompare.errors import DataError

ALGORITHMS = ["reptile", "fomaml", "maml", "pretrain"]
# Scoring costs less than training (measured: experiments/time_to_answer.py): 50 episodes adapted at a time
# (metacompare.engines.batch_eval; not for texts, whose bag of embeddings has no grouped form), 50 validation
# episodes (they only pick the tested checkpoint), the floor and the training-task gap on the first 100
# test episodes (their intervals stated beside them); the test keeps all its episodes
EVAL_BATCH, EVAL_EPISODES, FLOOR_EPISODES = 50, 50, 100
FIT_INTERVAL = 10  # the logged training fit on every 10th iteration: it had cost Reptile and FOMAML 10-17% of training
FRACTIONS = ((0.2, 0.2), (0.0, 0.3), (0.0, 0.5))  # (validation, test): the first that serves the tasks
NAME_LENGTH = 100  # characters of the data's name in the experiment name: room for "_compare_<budget>"
REPTILE = {"train_shots": 10, "query": 0, "inner_optimizer": "adam", "inner_betas": [0.0, 0.999],
           "inner_state": "carry", "inner_lr": 0.001, "inner_steps": 5, "inner_batch_size": 10, "inner_loss": "sum",
           "meta_batch_size": 5, "outer_optimizer": "sgd", "outer_lr": 1.0, "outer_lr_final": 0.0,
           "eval_inner_steps": 50, "eval_inner_batch_size": 5}
MAML = {"query": 1, "inner_optimizer": "sgd", "inner_lr": 0.4, "inner_steps": 1, "inner_loss": "sum_over_shots",
        "meta_batch_size": 32, "outer_optimizer": "adam", "outer_lr": 0.001, "eval_inner_steps": 3}
PRETRAIN = {"query": 1, "meta_batch_size": 32, "outer_optimizer": "adam", "outer_lr": 0.001,
            "inner_optimizer": "sgd", "inner_lr": 0.1, "eval_inner_steps": 50}


def check_ways(ways: int) -> None:
    """Own data is classified: with one class every answer is right, before any training."""
    if ways < 2:
        raise DataError(f"--ways {ways}: {ways}-way classification has nothing to tell apart; use 2 or more")


def detect_form(path: str | Path, text_column: str = "text") -> str:
    """``folder`` for a directory; for a table, ``text`` when it has ``text_column``, else ``table``."""
    path = Path(path)
    paths.require_present(path, "no such file or folder", "give an image folder or a CSV/Parquet table")
    if path.is_dir():
        return "folder"
    if path.suffix.lower() not in CSV_SUFFIXES + PARQUET_SUFFIXES:
        raise DataError(f"{path}: neither a folder nor a .csv/.tsv/.parquet table; give one of those")
    return "text" if text_column in read_frame(path, header_only=True).columns else "table"


def experiment_name(path: str | Path, form: str) -> str:
    """``<form>_<the data's name>``, the name cut to :data:`NAME_LENGTH` characters (with a short hash of
    the whole, so two long names stay apart) so that the results folders named after it fit the
    system's limit on a name."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).resolve().stem).strip("_.") or "data"
    if len(stem) > NAME_LENGTH:
        stem = f"{stem[:NAME_LENGTH - 9]}_{hashlib.sha256(stem.encode()).hexdigest()[:8]}"
    return f"{form}_{stem}"


def base_config(path: str | Path, form: str | None = None, label_column: str = "label",
                text_column: str = "text") -> dict[str, Any]:
    """The data's part of a config: form and ``user_data``, with no tasks sized yet."""
    form = form or detect_form(path, text_column)
    return {"dataset": form, "user_data": {"root": str(path), "label_column": label_column, "text_column": text_column}}


def data_config(path: str | Path, form: str | None = None, ways: int = 5, shots: int = 1,
                label_column: str = "label", text_column: str = "text", procs: int = 1) -> dict[str, Any]:
    """A complete raw config (the mapping a YAML file would hold) for comparing on this data; ``procs``:
    the processes ``compare --procs`` gives each run, which Reptile's carried Adam state can use only as
    that many chains (``inner_chains``, :mod:`metacompare.engines.chains`)."""
    from metacompare.config.loading import expand

    check_ways(ways)
    raw = base_config(path, form, label_column, text_column)
    form = source_of(raw["dataset"])
    probe = expand({**raw, "model": form.network_for("maml", 1)["model"], "ways": ways, "shots": shots},
                   source="--data")[0]
    source = form.load(probe)
    fractions = _fractions(source, ways)
    raw["user_data"].update({"validation_fraction": fractions[0], "test_fraction": fractions[1]})
    probe = expand({**raw, "model": probe.model, "ways": ways, "shots": shots}, source="--data")[0]
    split = splits.split_classes(source.classes, source.groups, *fractions, probe.user_data.split_seed)
    smallest_train = min(source.per_class[c] for c in split["train"])
    channels = form.channels(probe, source)
    colour = channels == 3
    protocols = {"reptile": {**REPTILE, "train_shots": max(shots, min(10, smallest_train))},
                 "fomaml": MAML, "maml": MAML, "pretrain": PRETRAIN}
    per_algorithm = {name: {**form.network_for(name, channels), **protocol, **form.protocol_changes(name)}
                     for name, protocol in protocols.items()}
    if 1 < procs <= REPTILE["meta_batch_size"]:  # else Reptile would train on one process, the others on procs
        per_algorithm["reptile"]["inner_chains"] = procs
    return {"experiment": experiment_name(path, form.name), "algorithm": list(ALGORITHMS), **raw,
            "ways": ways, "shots": shots, "test_query": 1, "iterations": 500, "eval_interval": 100,
            "eval_episodes": EVAL_EPISODES, "test_episodes": 300 if colour else 600, "test_checkpoint": "best",
            "eval_batch": EVAL_BATCH if form.grouped_eval else 0, "floor_episodes": FLOOR_EPISODES,
            "fit_interval": FIT_INTERVAL,
            "checkpoint_interval": 500, "seed": 0, "per_algorithm": per_algorithm}


def _fractions(source, ways: int) -> tuple[float, float]:
    """The first (validation, test) fractions whose splits each hold at least ``ways`` classes."""
    for validation, test in FRACTIONS:
        split = splits.split_classes(source.classes, source.groups, validation, test, 0)
        sizes = [len(split[name] or split["train"]) for name in splits.SPLITS]
        if min(sizes) >= ways:
            return validation, test
    unit = "groups" if source.grouped else "classes"
    raise DataError(f"{source.path}: {len(source.classes)} classes are too few for {ways}-way tasks on disjoint "
                    f"meta-training and test {unit}; lower --ways (at most {len(source.classes) // 2}) or add classes")


def write_config(raw: dict[str, Any], path: Path) -> Path:
    """The generated config as a YAML file to read, edit and rerun with ``metacompare run|compare FILE``."""
    header = (f"# Generated by `metacompare --data {raw['user_data']['root']}` (metacompare.workflows.data_defaults);\n"
              f"# edit it and rerun with `metacompare compare {path} --budget ...` or `metacompare run {path}`.\n")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    except OSError as err:
        reason = paths.explain(err) or f"{path}: cannot be written ({err.strerror or err})"
        raise DataError(f"{reason} (the results folder; choose another with --results-dir)") from None
    return path
