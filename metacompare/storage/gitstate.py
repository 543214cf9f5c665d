"""The git state of metacompare's source tree, and the one guard against recording results from
uncommitted code.

*Recorded* results are those written into the ``results/`` folder of the same git work tree as the
code: a study that will be committed. :func:`guard` refuses those from a dirty tree unless the user
allows it (``--allow-dirty``, or ``METACOMPARE_ALLOW_DIRTY=1`` in the environment), in which case every
summary says ``dirty: true`` and the report carries a warning line. Results written anywhere else
(tests, scratch folders) are never refused, only marked. Every command that records results (run,
sweep, tune, compare, bench) meets the guard in one place, :func:`metacompare.storage.results.check_writable`,
before it trains or races.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from metacompare.errors import UserError

SOURCE = Path(__file__).resolve().parents[1]  # the code whose provenance is recorded: the package
RESULTS = "results"                           # the recorded-results folder at the work tree's top
SHOWN = 5                                     # changed paths named in messages
ALLOW_DIRTY = "METACOMPARE_ALLOW_DIRTY"       # "1": record from a dirty tree, marked; worker processes inherit it


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


@contextlib.contextmanager
def dirty_allowed(allow: bool) -> Iterator[None]:
    """Within: :func:`guard` allows a dirty tree when ``allow`` (else as the environment says), in this
    process and in the worker processes it starts, which inherit :data:`ALLOW_DIRTY`."""
    previous = os.environ.get(ALLOW_DIRTY)
    if allow:
        os.environ[ALLOW_DIRTY] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ALLOW_DIRTY, None)
        else:
            os.environ[ALLOW_DIRTY] = previous


_warned: set[Path] = set()  # work trees this process has warned about: one line, not one per run


def guard(directories: Iterable[Path], allow_dirty: bool | None = None, state: TreeState | None = None,
          option: str = "--results-dir") -> TreeState:
    """Refuse to record results from a dirty tree (UserError), or warn on stderr (once per process and
    work tree) when allowed; ``allow_dirty`` None: as :data:`ALLOW_DIRTY` says; ``option``: the one
    that chose the folder. Returns the tree's state."""
    state = state or tree_state()
    recorded = [Path(d) for d in directories if is_recorded(d, state)]
    if not state.dirty or not recorded:
        return state
    if not (os.environ.get(ALLOW_DIRTY) == "1" if allow_dirty is None else allow_dirty):
        raise UserError(f"{recorded[0]}: refusing to record results from a source tree with uncommitted "
                        f"changes ({', '.join(state.changed[:SHOWN])}{', ...' if len(state.changed) > SHOWN else ''}); "
                        f"commit them first, write elsewhere with {option}, or pass --allow-dirty "
                        f"({ALLOW_DIRTY}=1; the results are then marked dirty)")
    if state.root not in _warned:
        _warned.add(state.root)
        print(f"metacompare: WARNING: recording into {recorded[0]} from a dirty tree: results will be "
              f"{dirty_message(state)}", file=sys.stderr)
    return state
