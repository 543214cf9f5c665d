"""Tables and figures of an experiment, made from its result files alone.

``write_report(results/<experiment>)`` reads ``runs.csv`` and each run's ``config.yaml``,
``metrics.csv``, ``summary.json`` and ``episodes.csv`` (a failed run may have none; a diverged run has no
test score) and writes ``report/``: ``table.csv``/``table.md``, PNG+SVG figures, ``report.md`` and
``report.html``, atomically.

Modules: ``load`` (files to DataFrames), ``experiment`` (settings and their scores), ``stats`` (intervals
and paired tests, scipy.stats), ``select`` (best settings, sweep slices), ``curves``, ``figures/`` (one
module per figure: a pure ``data`` step returning a DataFrame, ``draw`` and ``prose``), ``draw/style``
(the shared matplotlib look), ``page`` (Markdown and HTML), ``published`` (papers' numbers), ``write``.
"""

from metacompare.report.curves import learning_curve, scores_by_steps
from metacompare.report.experiment import Experiment, Section, analyse
from metacompare.report.published import PUBLISHED, PUBLISHED_ACCURACY, published
from metacompare.report.write import report, write_report

__all__ = ["Experiment", "Section", "analyse", "learning_curve", "scores_by_steps", "PUBLISHED", "PUBLISHED_ACCURACY",
           "published", "report", "write_report"]
