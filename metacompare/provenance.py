"""Provenance: which code and which installed packages made a result, and refusing unrecorded code.

A run folder gets the exact commit of the source tree (``git rev-parse HEAD``, plus ``+dirty`` when
tracked files outside ``results/`` have uncommitted changes) and ``environment.txt``, the installed
distributions at ``pip freeze`` level read with :mod:`importlib.metadata`. Changes under ``results/``
do not count as dirty: a sweep rewrites the committed ``runs.csv`` while it runs, and that must not
mark its own later runs as made from modified code.

*Recorded* results are those written into the ``results/`` folder of the same git work tree as the
code: a study that will be committed. :func:`guard` refuses those from a dirty tree unless the user
allows it, in which case every summary says ``dirty: true`` and the report carries a warning line.
Results written anywhere else (tests, scratch folders) are never refused, only marked.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from metacompare.errors import UserError

SOURCE = Path(__file__).resolve().parent  # the code whose provenance is recorded
RESULTS = "results"                       # the recorded-results folder at the work tree's top
SHOWN = 5                                 # changed paths named in messages


@dataclass(frozen=True)
class TreeState:
    """The git state of the source tree: ``commit`` is None outside a git work tree."""

    root: Path | None
    commit: str | None
    changed: tuple[str, ...] = ()

    @property
    def dirty(self) -> bool:
        return bool(self.changed)

    def label(self) -> str:
        """``<sha>``, ``<sha>+dirty`` or ``unknown``: the form stored in ``runs.csv``'s git_commit."""
        if self.commit is None:
            return "unknown"
        return self.commit + ("+dirty" if self.dirty else "")


def _git(args: list[str], cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                          check=True).stdout


def tree_state(source: Path | None = None) -> TreeState:
    """Commit and changed tracked paths (outside ``results/``) of the work tree holding ``source``."""
    source = Path(source or SOURCE)
    try:
        root = Path(_git(["rev-parse", "--show-toplevel"], source).strip())
        commit = _git(["rev-parse", "HEAD"], source).strip()
        status = _git(["status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){RESULTS}"],
                      root)
    except (OSError, subprocess.SubprocessError):
        return TreeState(None, None)
    changed = tuple(line[3:] for line in status.splitlines() if line.strip())
    return TreeState(root, commit, changed)


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


def record(run_dir: Path, state: TreeState | None = None) -> dict[str, Any]:
    """Write ``environment.txt`` into ``run_dir``; return the provenance fields of its summary."""
    from metacompare.results import atomic_write  # late: results calls back into this module

    state = state or tree_state()
    atomic_write(Path(run_dir) / "environment.txt", environment_text())
    fields: dict[str, Any] = {"git_commit": state.label(), "dirty": state.dirty, "environment": "environment.txt"}
    if state.dirty:
        fields["dirty_files"] = list(state.changed)
        fields["warning"] = dirty_message(state)
    return fields


def dirty_message(state: TreeState) -> str:
    shown = ", ".join(state.changed[:SHOWN]) + (", ..." if len(state.changed) > SHOWN else "")
    return (f"made from a source tree with uncommitted changes ({len(state.changed)} file"
            f"{'s' * (len(state.changed) != 1)}: {shown}) on top of commit {state.commit}; "
            f"this result cannot be traced to committed code")


def is_recorded(directory: Path, state: TreeState) -> bool:
    """Whether ``directory`` lies in the ``results/`` folder of the code's own git work tree."""
    if state.root is None:
        return False
    return Path(directory).resolve().is_relative_to((state.root / RESULTS).resolve())


def guard(directories: Iterable[Path], allow_dirty: bool = False, state: TreeState | None = None) -> TreeState:
    """Refuse to record results from a dirty tree (UserError), or warn on stderr when allowed."""
    state = state or tree_state()
    recorded = [Path(d) for d in directories if is_recorded(d, state)]
    if not state.dirty or not recorded:
        return state
    if not allow_dirty:
        raise UserError(f"{recorded[0]}: refusing to record results from a source tree with uncommitted "
                        f"changes ({', '.join(state.changed[:SHOWN])}{', ...' if len(state.changed) > SHOWN else ''}); "
                        f"commit them first, write elsewhere with --results-dir, or pass --allow-dirty "
                        f"(the results are then marked dirty)")
    print(f"metacompare: WARNING: recording into {recorded[0]} from a dirty tree: results will be {dirty_message(state)}",
          file=sys.stderr)
    return state


def report_warning(commits: Iterable[Any]) -> str:
    """A warning line for a report whose runs include ones made from dirty trees ('' when none)."""
    commits = [str(c) for c in commits]
    dirty = sum(c.endswith("+dirty") for c in commits)
    if not dirty:
        return ""
    return (f"WARNING: {dirty} of {len(commits)} runs were made from a source tree with uncommitted changes "
            f"(git_commit ends in +dirty): their exact code cannot be checked out.")
