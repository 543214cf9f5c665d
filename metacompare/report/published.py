"""Published few-shot test accuracies, the one table the report's reference marks come from.

Omniglot: the papers train on 1200 characters x 4 rotations (not our alphabet splits). Nichol,
Achiam & Schulman 2018 ("On First-Order Meta-Learning Algorithms", arXiv:1803.02999) give Omniglot in
Table 2 (with MAML from Finn et al. and their own first-order MAML runs) and mini-ImageNet in Table 1;
Finn, Abbeel & Levine 2017 (ICML) give MAML on Omniglot (Table 1, top) and MAML and first-order MAML on
mini-ImageNet (Table 1, bottom). ``evaluation`` says how the query set was scored: ``transductive``
(as one batch, BatchNorm on its statistics, as both papers' code) or ``non_transductive``.
``backbone`` says which network: those papers' 4-block conv nets (``conv4``), or ResNet-12, for which
the marks are MetaOptNet's (Lee et al. 2019, CVPR, Table 1), a method metacompare does not implement:
a run on ``model: resnet12`` is never marked with a conv net's number.
"""

from __future__ import annotations

import math
import pandas as pd

from metacompare.report.metric import num

FINN = "Finn et al. 2017, Table 1"
NICHOL_OMNIGLOT = "Nichol et al. 2018, Table 2"
NICHOL_MINI = "Nichol et al. 2018, Table 1"
ANTONIOU = "Antoniou et al. 2019, Table 1"  # "How to train your MAML" (MAML++), ICLR; its ± is not copied here
LEE = "Lee et al. 2019, Table 1"
T, N = "transductive", "non_transductive"

# dataset, ways, shots, algorithm, evaluation, accuracy %, ± (95% CI as published), source
_ROWS = [
    ("omniglot", 5, 1, "maml", T, 98.7, 0.4, FINN), ("omniglot", 5, 5, "maml", T, 99.9, 0.1, FINN),
    ("omniglot", 20, 1, "maml", T, 95.8, 0.3, FINN), ("omniglot", 20, 5, "maml", T, 98.9, 0.2, FINN),
    ("omniglot", 5, 1, "fomaml", T, 98.3, 0.5, NICHOL_OMNIGLOT),
    ("omniglot", 5, 5, "fomaml", T, 99.2, 0.2, NICHOL_OMNIGLOT),
    ("omniglot", 20, 1, "fomaml", T, 89.4, 0.5, NICHOL_OMNIGLOT),
    ("omniglot", 20, 5, "fomaml", T, 97.9, 0.1, NICHOL_OMNIGLOT),
    ("omniglot", 5, 1, "reptile", T, 97.68, 0.04, NICHOL_OMNIGLOT),
    ("omniglot", 5, 5, "reptile", T, 99.48, 0.06, NICHOL_OMNIGLOT),
    ("omniglot", 20, 1, "reptile", T, 89.43, 0.14, NICHOL_OMNIGLOT),
    ("omniglot", 20, 5, "reptile", T, 97.12, 0.32, NICHOL_OMNIGLOT),
    ("omniglot", 5, 1, "reptile", N, 95.39, 0.09, NICHOL_OMNIGLOT),
    ("omniglot", 5, 5, "reptile", N, 98.90, 0.10, NICHOL_OMNIGLOT),
    ("omniglot", 20, 1, "reptile", N, 88.14, 0.15, NICHOL_OMNIGLOT),
    ("omniglot", 20, 5, "reptile", N, 96.65, 0.33, NICHOL_OMNIGLOT),
    ("omniglot", 5, 1, "maml++", T, 99.47, math.nan, ANTONIOU),
    ("miniimagenet", 5, 1, "maml", T, 48.70, 1.84, FINN), ("miniimagenet", 5, 5, "maml", T, 63.11, 0.92, FINN),
    ("miniimagenet", 5, 1, "fomaml", T, 48.07, 1.75, FINN), ("miniimagenet", 5, 5, "fomaml", T, 63.15, 0.91, FINN),
    ("miniimagenet", 5, 1, "reptile", T, 49.97, 0.32, NICHOL_MINI),
    ("miniimagenet", 5, 5, "reptile", T, 65.99, 0.58, NICHOL_MINI),
    ("miniimagenet", 5, 1, "reptile", N, 47.07, 0.26, NICHOL_MINI),
    ("miniimagenet", 5, 5, "reptile", N, 62.74, 0.37, NICHOL_MINI),
]
# The same fields for ResNet-12 (trained on the training split only; BatchNorm on running statistics).
_RESNET12_ROWS = [
    ("miniimagenet", 5, 1, "metaoptnet_svm", N, 62.64, 0.61, LEE),
    ("miniimagenet", 5, 5, "metaoptnet_svm", N, 78.63, 0.46, LEE),
]
PUBLISHED = pd.DataFrame([(*r, "conv4") for r in _ROWS] + [(*r, "resnet12") for r in _RESNET12_ROWS],
                         columns=["dataset", "ways", "shots", "algorithm", "evaluation", "accuracy", "ci95", "source",
                                  "backbone"])

# The transductive numbers as (dataset, ways, shots) -> algorithm -> (accuracy, source), for callers
# that look one up by key.
PUBLISHED_ACCURACY: dict[tuple[str, int, int], dict[str, tuple[float, str]]] = {}
for _r in PUBLISHED[(PUBLISHED["evaluation"] == T) & (PUBLISHED["backbone"] == "conv4")].itertuples():
    PUBLISHED_ACCURACY.setdefault((_r.dataset, _r.ways, _r.shots), {})[_r.algorithm] = (_r.accuracy, _r.source)


def published(row: pd.Series | dict) -> tuple[float, str] | None:
    """The paper's accuracy and source for this algorithm, dataset, ways, shots, evaluation mode and
    backbone (``model: resnet12`` or a conv net)."""
    evaluation = str(row.get("evaluation", T))
    backbone = "resnet12" if str(row.get("model")) == "resnet12" else "conv4"
    ways, shots = num(row.get("ways")), num(row.get("shots"))
    if not (math.isfinite(ways) and math.isfinite(shots)):
        return None
    match = PUBLISHED[(PUBLISHED["dataset"] == str(row.get("dataset"))) & (PUBLISHED["ways"] == int(ways))
                      & (PUBLISHED["shots"] == int(shots)) & (PUBLISHED["algorithm"] == str(row.get("algorithm")))
                      & (PUBLISHED["evaluation"] == (T if evaluation == "nan" else evaluation))
                      & (PUBLISHED["backbone"] == backbone)]
    return None if match.empty else (float(match["accuracy"].iloc[0]), str(match["source"].iloc[0]))


def reference_note(rows: list) -> str:
    """The caption sentence naming the published numbers drawn as marks, and why they are context only."""
    marks = [(r["algorithm"], *published(r)) for r in rows if published(r) is not None]
    if not marks:
        return ""
    sources = "; ".join(f"{a} {v:g}% ({s})" for a, v, s in marks)
    small = any("small" in str(r.get("omniglot.sources", "")) for r in rows)
    dataset = ("these runs use the reduced 'minimal' Omniglot splits and few iterations, so the marks are "
               "context, not a target" if small else
               "the marks are context: they need the papers' full training budget")
    return f" Reference marks: published test accuracy for the same ways/shots: {sources}; {dataset}."
