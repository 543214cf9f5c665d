"""What a config or command can name (``metacompare list``), read from the registries, one line each.

Kept apart from the command line so that the catalogue is a plain library call (the CLI only prints it)
and so that the names always come from the registries themselves, never from a hand-kept list.
"""

from __future__ import annotations

import re
import sys

from metacompare import models
from metacompare.algorithms import ALGORITHMS
from metacompare.engines import ENGINES
from metacompare.algorithms.backends import BACKENDS, get_adapt
from metacompare.workflows.bench import IMPLEMENTATIONS
from metacompare.config.loading import CHOICES
from metacompare.storage.tracking import TRACKERS

# One line for the names that have no docstring of their own (a model with a builder function in
# metacompare.models is described by that function's docstring); the names come from the registries.
DESCRIPTIONS = {
    "sine": "sinusoid regression (Finn et al. 2017): amplitude U[0.1, 5], phase U[0, pi], x U[-5, 5]",
    "omniglot": "Omniglot characters (Lake et al. 2015): alphabet-disjoint splits, rotations as classes",
    "miniimagenet": "mini-ImageNet (Vinyals et al. 2016, Ravi & Larochelle splits), learn2learn's pickles",
    "folder": "your images: ROOT/<class>/ or ROOT/<group>/<class>/ (user_data.root; metacompare.data.user)",
    "table": "your feature vectors: a CSV/Parquet table with a label column (user_data.root, label_column)",
    "text": "your labelled texts: a CSV/Parquet table with text and label columns, hashed tokens",
    "conv4_strided": "conv4 with stride-2 convolutions and no pooling (the MAML and Reptile Omniglot code)",
}
LIST_WIDTH = 150  # characters of a docstring's first paragraph that `list` shows


def summary_of(obj) -> str:
    """The first paragraph of ``obj``'s own docstring, or its module's, on one line."""
    doc = obj.__doc__ or sys.modules[obj.__module__].__doc__ or "(no description)"
    text = " ".join(doc.strip().split("\n\n")[0].split()).replace("``", "`").rstrip(".")
    text = re.sub(r":\w+:`", "`", text)  # Sphinx roles (:meth:`x`) read as plain `x`
    return text if len(text) <= LIST_WIDTH else text[:LIST_WIDTH - 3].rstrip() + "..."


def catalogue() -> dict[str, list[tuple[str, str]]]:
    """Everything a config or command can name, read from the registries, one line each."""
    def described(name: str, code=None) -> tuple[str, str]:
        return name, summary_of(code) if callable(code) else DESCRIPTIONS.get(name, "(no description)")

    return {
        "algorithms (algorithm:)": [(n, f"{summary_of(c)} [backends: {', '.join(c.backends)}]")
                                    for n, c in sorted(ALGORITHMS.items())],
        "backends (backend:)": [described(n, get_adapt(n)) for n in BACKENDS],
        "datasets (dataset:)": [described(n) for n in CHOICES["dataset"]],
        "models (model:)": [described(n, getattr(models, n, None)) for n in CHOICES["model"]],
        "engines (batch_tasks: true, vmap: true, else looped)": [described(n, fn) for n, fn in ENGINES.items()],
        "trackers (tracker:)": list(TRACKERS.items()),
        "bench implementations (bench --implementations)": [
            (n, f"{i.algorithm} on {i.library}, fast path {i.fast_path}") for n, i in IMPLEMENTATIONS.items()],
    }


def listing() -> str:
    """The catalogue as ``metacompare list`` prints it: a header per section, a name and its line below."""
    lines = []
    for section, entries in catalogue().items():
        width = max(len(name) for name, _ in entries)
        lines += [f"{section}:", *(f"  {name:<{width}}  {text}" for name, text in entries)]
    return "\n".join(lines)
