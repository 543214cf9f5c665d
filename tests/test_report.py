"""The report: numbers in its tables worked out by hand from a small synthetic results folder."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from metacompare.storage import results
from metacompare.cli import main
from metacompare.report import PUBLISHED_ACCURACY, analyse, learning_curve, scores_by_steps, write_report
from metacompare.report.figures import pairwise
from tests.report_runs import PNG_MAGIC, T1, add_run


@pytest.fixture(scope="module")
def omniglot_report(tmp_path_factory):
    """A num_tasks x learning-rate study with baselines, a diverged and a failed setting."""
    exp = tmp_path_factory.mktemp("results") / "omni"
    curve = [(10, 0.5), (20, 0.7), (30, 0.9)]
    add_run(exp, algorithm="maml", seed=0, accuracy=0.90, curve=curve)
    add_run(exp, algorithm="maml", seed=1, accuracy=0.94, curve=[(10, 0.6), (20, 0.8), (30, 0.95)])
    add_run(exp, algorithm="maml", num_tasks=10, accuracy=0.80, ci=0.02, curve=curve)
    add_run(exp, algorithm="maml", inner_lr=0.1, accuracy=0.85, curve=curve)
    add_run(exp, algorithm="maml", inner_lr=0.1, outer_lr=0.01, accuracy=0.86, curve=curve)
    add_run(exp, algorithm="maml", outer_lr=0.01, status="diverged", curve=[(10, 0.4)])
    add_run(exp, algorithm="fomaml", accuracy=0.85, curve=curve, seconds=0.25)
    add_run(exp, algorithm="fomaml", num_tasks=10, status="diverged", curve=[(10, 0.3)], seconds=0.25)
    add_run(exp, algorithm="fomaml", num_tasks=100, accuracy=math.nan, curve=curve, seconds=0.25)  # NaN test score
    add_run(exp, algorithm="reptile", accuracy=0.88, curve=curve, seconds=0.2)
    add_run(exp, algorithm="reptile", num_tasks=10, status="failed", files=False)
    add_run(exp, algorithm="pretrain", accuracy=0.70, curve=curve, seconds=0.1)
    add_run(exp, algorithm="scratch", accuracy=0.50, curve=curve, seconds=0.1)
    return exp, write_report(exp)


def table(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def row_of(rows, **match):
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


def test_table_combines_seeds_and_falls_back_to_episode_ci(omniglot_report):
    exp, _ = omniglot_report
    rows = table(exp / "report" / "table.csv")
    both_seeds = row_of(rows, algorithm="maml", num_tasks="-1", inner_lr="0.4", outer_lr="0.001")
    # seed means 90 and 94: mean 92, CI t(0.975, 1 df) * std([90, 94], ddof=1) / sqrt(2) = 12.706 * 2
    assert float(both_seeds["test_accuracy_mean_pct"]) == pytest.approx(92.0)
    assert float(both_seeds["test_accuracy_ci95_pct"]) == pytest.approx(2 * T1)
    assert both_seeds["ci_over"] == "2 seeds" and both_seeds["finished"] == "2"
    one_seed = row_of(rows, algorithm="maml", num_tasks="10")
    assert float(one_seed["test_accuracy_mean_pct"]) == pytest.approx(80.0)
    assert float(one_seed["test_accuracy_ci95_pct"]) == pytest.approx(2.0)  # the run's own episode CI
    assert one_seed["ci_over"] == "100 episodes, 1 seed"
    failed = row_of(rows, algorithm="reptile", num_tasks="10")
    assert (failed["failed"], failed["finished"], failed["test_accuracy_mean_pct"]) == ("1", "0", "")
    assert float(row_of(rows, algorithm="fomaml", num_tasks="-1")["seconds_per_iteration"]) == 0.25
    assert len(rows) == 12  # 13 runs, the two maml seeds share a setting


def test_markdown_table_marks_diverged_and_failed_settings(omniglot_report):
    exp, _ = omniglot_report
    lines = (exp / "report" / "table.md").read_text().splitlines()
    assert lines[0].startswith("| algorithm | num_tasks | inner_lr | outer_lr | test accuracy % (mean ± 95% CI)")
    cells = {(c[1], c[2], c[3], c[4]): c for c in ([x.strip() for x in line.split("|")] for line in lines[2:])}
    assert cells[("fomaml", "10", "0.4", "0.001")][5] == "diverged"
    assert cells[("reptile", "10", "0.4", "0.001")][5] == "failed"
    assert cells[("fomaml", "100", "0.4", "0.001")][5] == "NaN test score"
    assert cells[("maml", "unlimited", "0.4", "0.01")][5] == "diverged"
    assert cells[("maml", "unlimited", "0.4", "0.001")][5:7] == ["92.00 ± 25.41", "2 seeds"]


def test_every_figure_is_a_png_and_svg_named_in_report_md_and_html(omniglot_report):
    exp, report_md = omniglot_report
    out = exp / "report"
    expected = ["learning_curves", "task_counts", "baselines", "sensitivity_heatmap", "sensitivity_inner_lr",
                "sensitivity_outer_lr", "cost"]
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(expected)
    text, page = report_md.read_text(), (out / "report.html").read_text()
    for stem in expected:
        assert (out / f"{stem}.png").read_bytes()[:8] == PNG_MAGIC
        assert (out / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
        assert f"({stem}.png)" in text and f'src="{stem}.png"' in page


def test_report_sentences_state_computed_facts(omniglot_report):
    text = omniglot_report[1].read_text()
    assert "The best setting is maml (num_tasks=unlimited, inner_lr=0.4, outer_lr=0.001) with test accuracy " \
           "92.00%, 4.00 points above the best other algorithm, reptile" in text
    assert "maml goes from 80.00% with 10 to 92.00% with unlimited tasks" in text
    assert "fomaml scores 85.00% with unlimited tasks (no score with 10, 100 tasks)" in text
    assert "maml is best at inner_lr=0.4, outer_lr=0.001 (92.00%); 1 of 4 cells have no score" in text
    assert "The best meta-learner, maml (92.00%), beats the best baseline, pretrain (70.00%), by 22.00 points" in text
    assert "Per meta-iteration, pretrain is fastest (0.1 s) and maml slowest (0.5 s, 5.0x as long)" in text
    assert "13 runs: 10 finished, 2 diverged, 1 failed" in text
    # 5-way 1-shot Omniglot has published numbers: marked, with their source
    assert PUBLISHED_ACCURACY[("omniglot", 5, 1)]["maml"] == (98.7, "Finn et al. 2017, Table 1")
    assert "maml 98.7% (Finn et al. 2017, Table 1)" in text


def test_learning_curve_averages_seeds_with_ci_across_them(omniglot_report):
    exp, _ = omniglot_report
    analysis = analyse(exp)
    group = analysis.groups[(analysis.groups["algorithm"] == "maml") & (analysis.groups["seeds"] == 2)].iloc[0]
    curve = learning_curve(analysis, group["run_ids"].split(";"))
    assert list(curve["iteration"]) == [10, 20, 30]
    assert list(curve["mean"]) == pytest.approx([55.0, 75.0, 92.5])
    # two seeds 10 points apart (in %): CI = 12.706 * 10/sqrt(2) / sqrt(2) = 63.53; 5 points apart: 31.765
    assert list(curve["ci95"]) == pytest.approx([T1 * 5, T1 * 5, T1 * 2.5])
    single = learning_curve(analysis, [group["run_ids"].split(";")[0]])
    assert list(single["ci95"]) == pytest.approx([5.0, 5.0, 5.0])  # the run's own validation CI


def test_single_sine_run_reports_mse_and_cli_reports_a_folder_of_experiments(tmp_path, capsys):
    sine = tmp_path / "sine"
    add_run(sine, experiment="sine", dataset="sine", model="mlp", ways=1, shots=5, query=10, algorithm="maml",
            accuracy=0.5, ci=0.1, curve=[(10, 1.5), (20, 0.9)])
    add_run(tmp_path / "omni", algorithm="reptile", accuracy=0.9, curve=[(10, 0.9)])
    assert main(["report", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"report: {tmp_path / 'omni' / 'report' / 'report.md'}",
                       f"report: {tmp_path / 'sine' / 'report' / 'report.md'}"]
    rows = table(sine / "report" / "table.csv")
    assert len(rows) == 1 and float(rows[0]["test_loss_mean"]) == 0.5 and rows[0]["ci_over"] == "100 episodes, 1 seed"
    assert sorted(p.stem for p in (sine / "report").glob("*.png")) == ["algorithms", "cost", "learning_curves"]
    assert "test MSE 0.500" in (sine / "report" / "report.md").read_text()


def test_report_of_a_folder_without_results_is_a_one_line_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "neither an experiment folder (with runs.csv) nor a folder of them" in capsys.readouterr().err


def test_run_ends_by_writing_the_experiments_report(tmp_path, capsys):
    config = Path(__file__).resolve().parents[1] / "configs" / "sine.yaml"
    tiny = ["--set", "algorithm=maml", "--set", "iterations=2", "--set", "eval_interval=1", "--set",
            "eval_episodes=2", "--set", "test_episodes=3", "--set", "meta_batch_size=2", "--no-progress"]
    assert main(["run", str(config), "--results-dir", str(tmp_path), *tiny]) == 0
    report_md = tmp_path / "sine" / "report" / "report.md"
    assert capsys.readouterr().out.splitlines()[-1] == f"report: {report_md}"
    assert "(learning_curves.png)" in report_md.read_text()


def test_runs_per_episode_scores_are_compared_in_pairs(tmp_path):
    """The runner's episodes.csv, read back by the report: both algorithms scored on the same 4 episodes."""
    config = Path(__file__).resolve().parents[1] / "configs" / "sine.yaml"
    tiny = ["--set", "algorithm=[reptile, fomaml]", "--set", "iterations=1", "--set", "eval_interval=1", "--set",
            "eval_episodes=1", "--set", "test_episodes=4", "--set", "meta_batch_size=1", "--no-progress",
            "--no-report"]
    assert main(["run", str(config), "--results-dir", str(tmp_path), *tiny]) == 0
    exp = analyse(tmp_path / "sine")
    assert sorted(exp.episodes.groupby("algorithm")["episode"].apply(list).items()) == [
        ("fomaml", [0, 1, 2, 3]), ("reptile", [0, 1, 2, 3])]
    row = pairwise.data(exp).iloc[0]
    assert (row["a"], row["b"], row["over"], row["n"]) == ("reptile", "fomaml", "episode", 4)
    scores = {a: list(g["score"]) for a, g in exp.episodes.groupby("algorithm")}
    assert row["difference"] == pytest.approx(sum(r - f for r, f in zip(scores["reptile"], scores["fomaml"])) / 4)


def test_experiment_whose_only_run_diverged_still_gets_a_report(tmp_path):
    add_run(tmp_path / "omni", algorithm="maml", status="diverged", curve=[(10, 0.2)])
    report_md = write_report(tmp_path / "omni")
    text = report_md.read_text()
    assert "No run has a test score. 1 run: 0 finished, 1 diverged, 0 failed." in text
    assert "| maml | diverged | – |" in text
    assert sorted(p.stem for p in report_md.parent.glob("*.png")) == ["cost"]


def test_adaptation_steps_figure_averages_seeds_per_step_count(tmp_path):
    """Per-step test scores (test_inner_steps) become one curve per algorithm and shots value."""
    exp = tmp_path / "sine"
    by_seed = {0: {1: 1.0, 5: 0.6}, 1: {1: 1.2, 5: 0.8}}
    for seed, scores in by_seed.items():
        cfg = add_run(exp, experiment="sine", dataset="sine", model="mlp", ways=1, shots=5, algorithm="maml",
                      seed=seed, accuracy=scores[5], test_inner_steps=[1, 5])
        summary_path = exp / cfg.run_id() / "summary.json"
        summary = json.loads(summary_path.read_text())
        summary["test_by_inner_steps"] = {str(s): {"loss_mean": v, "loss_ci95": 0.1} for s, v in scores.items()}
        results.save_json(summary_path, summary)
    add_run(exp, experiment="sine", dataset="sine", model="mlp", ways=1, shots=10, algorithm="maml",
            accuracy=0.5)  # no per-step scores: left out of the figure, not an error
    write_report(exp)
    report_md = (exp / "report" / "report.md").read_text()
    assert (exp / "report" / "adaptation_steps.png").read_bytes().startswith(PNG_MAGIC)
    # mean over the two seeds: 1.1 after 1 step, 0.7 after 5
    assert "shots=5: after 5 steps maml is best (0.700, from 1.100 after 1)" in report_md
    analysis = analyse(exp)
    row = analysis.groups[analysis.groups["shots"] == 5].iloc[0]
    assert scores_by_steps(analysis, row["run_ids"])[5] == pytest.approx((0.7, T1 * math.sqrt(0.02) / math.sqrt(2)))
    assert "shots=10" not in report_md.split(". Adaptation steps at test time")[1].split("![")[0]


def test_sections_are_numbered_in_order_and_a_rerun_rewrites_no_byte(omniglot_report):
    """Rewriting the report of unchanged results gives every file (Markdown, HTML, PNG, SVG) the same
    bytes: no date or version in the figures, fixed SVG ids; the headings number 1, 2, 3, ... with no gap."""
    exp, report_md = omniglot_report
    folder = report_md.parent
    before = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    assert {"learning_curves.svg", "learning_curves.png", "report.html"} <= set(before)
    headings = [line[3:] for line in report_md.read_text().splitlines() if line.startswith("## ")]
    assert [h.split(". ", 1)[0] for h in headings] == [str(n) for n in range(1, len(headings) + 1)]
    assert headings[0] == "1. Results table" and len(headings) >= 6
    write_report(exp)
    after = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    assert sorted(after) == sorted(before)
    assert [name for name in before if after[name] != before[name]] == []
