"""Task datasets on learn2learn, one registered plug-in per kind of data.

A config's ``dataset`` names a :class:`~metacompare.data.source.DataSource` in :data:`SOURCES`: sine
waves (:mod:`.sine`), Omniglot (:mod:`.omniglot`), mini-ImageNet (:mod:`.miniimagenet`), MNIST and
scikit-learn's digits (:mod:`.digits`), and a user's own image folder, table or texts (:mod:`.folder`,
:mod:`.table`, :mod:`.text`, sharing :mod:`.user`). Each is imported here, which registers it; a new
source registers itself the same way (:func:`register`). :func:`build_tasks` (:mod:`.tasks`) draws a
config's seeded training tasks and fixed evaluation episodes from its source's datasets.
"""

from __future__ import annotations

# Registered in the order the docs and `dataset`'s choices list them.
from metacompare.data import sine, omniglot, miniimagenet, digits, folder, table, text  # noqa: F401, I001
from metacompare.data.omniglot import (OMNIGLOT_SOURCES, OmniglotCharacters, load_omniglot, omniglot_help,
                                       omniglot_splits, select_alphabets)
from metacompare.data.sine import SineWaves
from metacompare.data.source import SOURCES, DataSource, register, source_of, unregister
from metacompare.data.tasks import (Task, TaskSampler, TaskSplits, build_tasks, stream_seed,
                                    train_class_episodes_seed)
from metacompare.errors import DataError

__all__ = ["DataError", "DataSource", "OMNIGLOT_SOURCES", "OmniglotCharacters", "SOURCES", "SineWaves", "Task",
           "TaskSampler", "TaskSplits", "build_tasks", "describe", "load_omniglot", "omniglot_help",
           "omniglot_splits", "register", "select_alphabets", "source_of", "stream_seed",
           "train_class_episodes_seed", "unregister"]


def describe(cfg) -> str:
    """What ``cfg``'s data holds, as ``inspect`` prints it (its source's :meth:`~DataSource.describe`)."""
    return "\n".join(source_of(cfg).describe(cfg))
