"""Provenance: which code and which installed packages made a result, and what a result answered for.

A run folder gets the exact commit of the source tree (``git rev-parse HEAD``, plus ``+dirty`` when
tracked files outside ``results/`` have uncommitted changes) and ``environment.txt``, the installed
distributions at ``pip freeze`` level read with :mod:`importlib.metadata`. Changes under ``results/``
do not count as dirty: a sweep rewrites the committed ``runs.csv`` while it runs, and that must not
mark its own later runs as made from modified code.

The git state of the code and the guard that refuses recording results from uncommitted code live
in :mod:`metacompare.storage.gitstate`; their names are reachable from here too.

What a result answered for is checked here too: :func:`check_answer` refuses a finished run read back
for other settings or other data (its recorded digest), and :func:`episode_identity` is the one
definition of which evaluation episodes a run is scored on, which every comparison checks before
training (:func:`check_same_episodes`) and the report before pairing.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any, Iterable

from metacompare.errors import UserError
from metacompare.storage.gitstate import (ALLOW_DIRTY, RESULTS, SHOWN, SOURCE, TreeState, dirty_allowed,  # noqa: F401
                                          dirty_message, guard, is_recorded, tree_state)


def environment_lines() -> list[str]:
    """``name==version`` for every installed distribution, sorted by name, like ``pip freeze``."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found.setdefault(name.lower().replace("_", "-"), f"{name}=={dist.version}")
    return [found[key] for key in sorted(found)]


def environment_text() -> str:
    head = [f"# python {platform.python_version()} ({sys.executable}) on {platform.platform()}",
            "# installed distributions (importlib.metadata, pip-freeze format)"]
    return "\n".join(head + environment_lines()) + "\n"


def version_text() -> str:
    """``metacompare <version>``, with the commit of the code when it lies in a git work tree."""
    try:
        version = importlib.metadata.version("metacompare")
    except importlib.metadata.PackageNotFoundError:
        version = "(not installed: version unknown)"
    state = tree_state()
    return f"metacompare {version}" + (f" (commit {state.label()})" if state.commit else "")


PLACEMENT = "METACOMPARE_PLACEMENT"  # where the runs started now train, in words (set by compare)


def note_placement(extra: dict[str, Any]) -> None:
    """Add where this session of a run trains to its checkpointed ``extra``: the summary's ``placements``
    lists every one, so that a report on the run says where it trained, resumed or not."""
    where = os.environ.get(PLACEMENT)
    if where and where not in extra.setdefault("placements", []):
        extra["placements"].append(where)


def record(run_dir: Path, state: TreeState | None = None) -> dict[str, Any]:
    """Write ``environment.txt`` into ``run_dir``; return the provenance fields of its summary."""
    from metacompare.storage.results import atomic_write  # late: results calls back into this module

    state = state or tree_state()
    atomic_write(Path(run_dir) / "environment.txt", environment_text())
    fields: dict[str, Any] = {"git_commit": state.label(), "dirty": state.dirty, "environment": "environment.txt"}
    if state.dirty:
        fields["dirty_files"] = list(state.changed)
        fields["warning"] = dirty_message(state)
    return fields


def report_warning(commits: Iterable[Any]) -> str:
    """A warning line for a report whose runs include ones made from dirty trees ('' when none)."""
    commits = [str(c) for c in commits]
    dirty = sum(c.endswith("+dirty") for c in commits)
    if not dirty:
        return ""
    return (f"WARNING: {dirty} of {len(commits)} runs were made from a source tree with uncommitted changes "
            f"(git_commit ends in +dirty): their exact code cannot be checked out.")


# ------------------------------------------------------------------ what a finished run answered for
def digested(dataset: str | None) -> bool:
    """Whether runs of ``dataset`` record a digest of its data (a user's own data; its source says)."""
    from metacompare.data import SOURCES

    source = SOURCES.get(str(dataset))
    return source is not None and source.content_digest


def data_digest(dataset: str, root: str | Path) -> str:
    """The digest a run of ``dataset`` records for the data at ``root`` now (names, sizes and times of
    its files, :mod:`metacompare.data.index`): cheap, it opens no image."""
    from metacompare.data import source_of

    return source_of(dataset).digest(Path(root))


def recorded_data(summary: dict[str, Any], run_folder: Path) -> dict[str, Any] | None:
    """The data a finished run answered for: its summary's ``data`` record, or for a run made before
    summaries held one, the digest in its ``splits.json``; None where neither exists (built-in data)."""
    from metacompare import files

    data = summary.get("data")
    if isinstance(data, dict) and data.get("digest"):
        return data
    splits = Path(run_folder) / "splits.json"
    if splits.is_file():
        record = files.read_json(splits, "delete the run folder to redo the run", required={"digest": str})
        return {"root": record.get("root", "?"), "digest": record["digest"]}
    return None


def check_answer(summary: dict[str, Any], cfg, run_folder: Path) -> None:
    """Refuse to hand back a finished run as the answer for ``cfg`` when it answered another question:
    its settings (the config's identity) or its data (the digest) differ from what ``cfg`` asks now.
    Every read of a finished run as an answer (run, compare, tune, sweep) passes here."""
    from metacompare.config.runconfig import identity_of

    run_folder = Path(run_folder)
    theirs, ours = identity_of(summary["config"]), cfg.identity()
    if theirs != ours or summary["run_id"] != cfg.run_id():
        changed = sorted(k for k in set(ours) | set(theirs) if theirs.get(k) != ours.get(k)) or ["run_id"]
        raise UserError(f"{run_folder / 'summary.json'}: written for other settings than this run's (fields "
                        f"differ: {', '.join(changed[:SHOWN])}); delete the folder {run_folder} to redo the run")
    if not digested(cfg.dataset):
        return
    recorded = recorded_data(summary, run_folder)
    now = data_digest(cfg.dataset, cfg.user_data.root)
    if recorded is not None and recorded["digest"] != now:
        raise UserError(f"{cfg.user_data.root}: not the data the finished run {run_folder} answered for "
                        f"({recorded['root']}, digest {recorded['digest'][:12]}; now {now[:12]}): the data changed "
                        f"or another folder has this experiment's name; record it as a new experiment "
                        f"(--set experiment=NAME), or delete {run_folder.parent} to redo this one on it")


# ------------------------------------------------------------------ which test episodes a run is scored on
def episode_identity(config: dict[str, Any], data: str | None = None) -> dict[str, Any]:
    """Everything that fixes a run's evaluation episodes (:func:`metacompare.data.build_tasks`) and how
    they are scored: the data (``data``, its digest where known, else where it lies), its split, ways,
    shots and test query per class, the numbers of test and validation episodes, ``eval_seed`` and
    the evaluation mode. Runs compared or paired per episode must agree on all of it."""
    from metacompare.data import SOURCES, DataSource

    dataset = config.get("dataset")
    shots, query = config.get("shots"), config.get("test_query") or config.get("query")
    out: dict[str, Any] = {"dataset": dataset, "ways": config.get("ways"), "shots": shots, "test_query": query,
                           "test_episodes": config.get("test_episodes"), "eval_seed": config.get("eval_seed"),
                           "eval_episodes": config.get("eval_episodes"), "evaluation": config.get("evaluation")}
    return {**out, **SOURCES.get(str(dataset), DataSource()).episode_fields(config, data)}


def episode_difference(first: dict[str, Any], other: dict[str, Any]) -> str:
    """The first field in which two :func:`episode_identity` values differ, as ``field A against B``
    ('' when they agree)."""
    for key in list(first) + [k for k in other if k not in first]:
        if first.get(key) != other.get(key):
            return f"{key} {other.get(key)!r} against {first.get(key)!r}"
    return ""


def check_same_episodes(configs: list, where: str = "") -> None:
    """Before anything trains: every run compared must be tested on the very episodes of the first, or
    the paired comparison (and the ranking) would set scores of different tasks side by side. A
    ConfigError names the algorithm and the field."""
    from metacompare.errors import ConfigError

    if not configs:
        return
    first = episode_identity(configs[0].to_dict())
    for cfg in configs[1:]:
        difference = episode_difference(first, episode_identity(cfg.to_dict()))
        if difference:
            raise ConfigError(f"{where}{cfg.algorithm} (seed {cfg.seed}) would be tested on other episodes than "
                              f"{configs[0].algorithm}: {difference}; every algorithm compared must share it: "
                              f"remove it from the per-algorithm settings, the tune space or the --chosen record")
