"""compare: equal budgets for every algorithm, and a report that opens with the answer."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from metacompare import compare
from metacompare.cli import main
from tests.test_tune import TINY, one_thread  # noqa: F401 (autouse fixture)

# What metacompare.report.stats.pairwise returns (its own tests check the numbers): one row per pair.
STUB = pd.DataFrame([{"a": "fomaml", "b": "reptile", "over": "episode", "n": 6, "mean_a": 2.0, "mean_b": 3.0,
                      "difference": -1.0, "difference_ci95": 0.5, "t_p": 0.001, "wilcoxon_p": 0.03,
                      "t_p_holm": 0.001, "wilcoxon_p_holm": 0.03, "verdict": "fomaml beats reptile"}])


@pytest.fixture
def stub_stats(monkeypatch):
    """The paired statistics are another module's job: stand in for it and record what it was given."""
    calls = []

    def paired(scores, over, higher_is_better):
        calls.append((scores.copy(), over, higher_is_better))
        return STUB.assign(over=over)

    monkeypatch.setattr(compare, "paired_table", paired)
    return calls


def test_compare_trains_everyone_under_the_same_work_budget_and_answers_first(tmp_path, stub_stats, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "results_dir": str(tmp_path / "results")}))
    # fomaml: (3*5 + 3*5) x 2 tasks = 60 per iteration, reptile: 3*10*2 x 2 = 120: 10 and 5 iterations in 600
    code = main(["compare", str(config), "--budget", "work:600", "--no-tune", "--seeds", "2", "--no-progress"])
    assert code == 0
    folder = tmp_path / "results" / "tiny_compare_work600"
    runs = pd.read_csv(folder / "runs.csv")
    assert sorted(zip(runs["algorithm"], runs["seed"], runs["iterations_done"])) == [
        ("fomaml", 0, 10), ("fomaml", 1, 10), ("reptile", 0, 5), ("reptile", 1, 5)]
    table = pd.read_csv(folder / "compare" / "algorithms.csv").set_index("algorithm")
    assert table.loc["fomaml", "work"] == 600 and table.loc["reptile", "work"] == 600
    scores, over, higher = stub_stats[0]
    assert over == "episode" and higher is False  # sine: lower MSE is better
    assert len(scores) == 2 * 2 * 3 and set(scores.columns) >= {"algorithm", "seed", "episode", "score"}
    run = runs[(runs["algorithm"] == "fomaml") & (runs["seed"] == 1)]["run_id"].item()
    episodes = pd.read_csv(folder / run / "episodes.csv")
    mine = scores[(scores["algorithm"] == "fomaml") & (scores["seed"] == 1)].sort_values("episode")
    assert mine["score"].tolist() == episodes["test_loss"].tolist()
    report = (folder / "compare" / "report.md").read_text()
    answer = report.split("\n\n")[1]
    best = table["score"].idxmin()
    assert answer.startswith(f"**Answer: {best}.**") and "600 example-passes" in answer
    assert "fomaml beats reptile" in answer and "p = 0.001" in answer
    assert "## Paired comparisons over test episodes" in report
    assert (folder / "compare" / "learning_curves.png").stat().st_size > 0
    assert answer in capsys.readouterr().out


def test_the_answer_without_paired_statistics_says_so():
    table = pd.DataFrame([{"algorithm": "maml", "finished": 3, "score": 0.9, "score_ci95": 0.01, "floor": 0.2,
                           "iterations_done": 100, "train_seconds": 60, "work": 1e6},
                          {"algorithm": "reptile", "finished": 3, "score": 0.8, "score_ci95": 0.02, "floor": 0.2,
                           "iterations_done": 300, "train_seconds": 60, "work": 1e6}])
    text = compare.answer(table, None, None, True, "test accuracy", {"seconds": 60}, percent=True)
    assert text.startswith("**Answer: maml.**") and "90.00% ± 1.00 points" in text
    assert "60 training seconds" in text and "Next is reptile at 80.00%" in text
    assert "paired statistics are not available" in text


def test_a_budget_no_run_finished_in_is_reported_not_hidden():
    table = pd.DataFrame([{"algorithm": "maml", "finished": 0, "score": math.nan}])
    assert compare.answer(table, None, None, True, "test accuracy", {"work": 1}, True).startswith("**Answer: none.**")


def test_a_bad_budget_is_a_one_line_error(tmp_path, capsys):
    assert main(["compare", "configs/sine.yaml", "--budget", "flops:1"]) == 2
    assert "--budget flops:1" in capsys.readouterr().err
