"""Each figure's data step, a pure function of the loaded experiment, checked against numbers worked out
by hand; bands and axes stay within the score's range ([0, 100] for accuracy, >= 0 for errors)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PolyCollection

from metacompare.storage import results
from metacompare.config.loading import reported_accuracy
from metacompare.report import analyse, published, write_report
from metacompare.report.draw import style
from metacompare.report.figures import adaptation_steps, baselines, cost, heatmap, learning_curves, pairwise
from metacompare.report.figures import sensitivity, task_counts
from metacompare.report.metric import ACCURACY, MSE
from tests.report_runs import T1, add_run

T2 = 4.302652729749464  # Student-t 0.975 quantile, 2 degrees of freedom (tables: 4.303)


def build(root, **fields):
    """maml: 2 seeds (90%, 94%) and num_tasks=10 (80%); reptile 88% ± 50 and, with 10 tasks, 2% ± 5; pretrain."""
    exp = root / "omni"
    ids = {"maml0": add_run(exp, algorithm="maml", seed=0, accuracy=0.90, seconds=0.4,
                            curve=[(10, 0.5), (20, 0.7), (30, 0.9)], **fields).run_id(),
           "maml1": add_run(exp, algorithm="maml", seed=1, accuracy=0.94, seconds=0.6,
                            curve=[(10, 0.6), (20, 0.8), (30, 0.95)], **fields).run_id(),
           "reptile": add_run(exp, algorithm="reptile", accuracy=0.88, ci=0.5, seconds=0.2, curve=[(10, 0.3)],
                              **fields).run_id(),
           "pretrain": add_run(exp, algorithm="pretrain", accuracy=0.70, seconds=0.1, **fields).run_id()}
    add_run(exp, algorithm="maml", num_tasks=10, accuracy=0.80, ci=0.02, seconds=0.5, **fields)
    add_run(exp, algorithm="reptile", num_tasks=10, accuracy=0.02, ci=0.05, seconds=0.2, **fields)
    return exp, ids


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    exp, ids = build(tmp_path_factory.mktemp("figures"))
    return analyse(exp), ids


def test_learning_curve_data_averages_seeds_and_clips_the_band_to_0_100(omni):
    exp, _ = omni
    frame = learning_curves.data(exp)
    maml = frame[frame["algorithm"] == "maml"]
    assert list(maml["iteration"]) == [10, 20, 30] and list(maml["mean"]) == pytest.approx([55.0, 75.0, 92.5])
    # two seeds 10, 10 and 5 points apart: CI = T1 * 10 / sqrt(2) / sqrt(2) = 5 * T1, then 2.5 * T1
    assert list(maml["ci95"]) == pytest.approx([5 * T1, 5 * T1, 2.5 * T1])
    assert list(maml["low"]) == pytest.approx([0.0, 75 - 5 * T1, 92.5 - 2.5 * T1])  # 55 - 63.5 clipped to 0
    assert list(maml["high"]) == [100.0, 100.0, 100.0]                            # 92.5 + 31.8 clipped to 100
    reptile = frame[frame["algorithm"] == "reptile"].iloc[0]  # one seed: its validation CI over episodes
    assert (reptile["mean"], reptile["low"], reptile["high"]) == pytest.approx((30.0, 25.0, 35.0))
    assert set(frame["algorithm"]) == {"maml", "reptile"}  # pretrain logged no curve
    assert frame.loc[frame["algorithm"] == "maml", "published"].iloc[0] == 98.7


def test_task_count_data_places_unlimited_at_ten_times_the_largest_count(omni):
    exp, _ = omni
    frame = task_counts.data(exp).set_index(["algorithm", "n"])
    assert sorted(frame.index) == [("maml", -1.0), ("maml", 10.0), ("reptile", -1.0), ("reptile", 10.0)]
    assert frame.loc[("maml", -1), "position"] == 100.0 and frame.loc[("maml", 10), "position"] == 10.0
    assert frame.loc[("maml", -1), ["mean", "ci95"]].tolist() == pytest.approx([92.0, 2 * T1])
    assert frame.loc[("reptile", -1), ["low", "high"]].tolist() == pytest.approx([38.0, 100.0])  # 88 ± 50
    assert frame.loc[("reptile", 10), ["low", "high"]].tolist() == pytest.approx([0.0, 7.0])     # 2 ± 5
    assert frame.loc[("reptile", -1), "published"] == 97.68


def test_baseline_data_has_one_row_per_algorithm_with_its_published_mark(omni):
    exp, _ = omni
    frame = baselines.data(exp)
    assert list(frame["algorithm"]) == ["reptile", "maml", "pretrain"]
    assert list(frame["label"]) == ["reptile (num_tasks=unlimited)", "maml (num_tasks=unlimited)", "pretrain"]
    assert list(frame["baseline"]) == [False, False, True]
    assert list(frame["mean"]) == pytest.approx([88.0, 92.0, 70.0])
    assert list(frame["high"]) == pytest.approx([100.0, 100.0, 71.0])
    assert frame["published"].tolist()[:2] == [97.68, 98.7] and math.isnan(frame["published"].iloc[2])


def test_cost_data_averages_the_runs_doing_the_same_work(omni):
    exp, _ = omni
    frame = cost.data(exp).set_index("algorithm")
    # maml: 0.4, 0.6 and (10 tasks: same work) 0.5 s; CI = t(2 df) * 0.1 / sqrt(3)
    assert frame.loc["maml", "runs"] == 3 and frame.loc["maml", "seconds_per_iteration"] == pytest.approx(0.5)
    assert frame.loc["maml", "seconds_per_iteration_ci95"] == pytest.approx(T2 * 0.1 / math.sqrt(3))
    assert frame.loc["reptile", ["seconds_per_iteration", "seconds_per_iteration_ci95"]].tolist() == [0.2, 0.0]
    pretrain = frame.loc["pretrain"]  # one run: undefined CI, no error bar
    assert math.isnan(pretrain["seconds_per_iteration_ci95"])
    assert (pretrain["seconds_per_iteration_low"], pretrain["seconds_per_iteration_high"]) == (0.1, 0.1)


def test_published_numbers_cite_the_right_tables():
    row = {"dataset": "omniglot", "ways": 5, "shots": 1, "evaluation": "transductive"}
    assert published({**row, "algorithm": "fomaml"}) == (98.3, "Nichol et al. 2018, Table 2")
    assert published({**row, "algorithm": "reptile"}) == (97.68, "Nichol et al. 2018, Table 2")
    assert published({**row, "algorithm": "maml"}) == (98.7, "Finn et al. 2017, Table 1")
    assert published({**row, "algorithm": "reptile", "evaluation": "non_transductive"})[0] == 95.39
    assert published({**row, "algorithm": "maml", "evaluation": "non_transductive"}) is None
    mini = {**row, "dataset": "miniimagenet", "algorithm": "reptile"}
    assert published(mini) == (49.97, "Nichol et al. 2018, Table 1")
    # a ResNet-12 run is never marked with a conv net's number; MetaOptNet's are ResNet-12's own
    assert published({**mini, "model": "conv4_nichol"}) == (49.97, "Nichol et al. 2018, Table 1")
    assert published({**mini, "model": "resnet12"}) is None
    svm = {**mini, "algorithm": "metaoptnet_svm", "evaluation": "non_transductive", "shots": 5}
    assert published({**svm, "model": "resnet12"}) == (78.63, "Lee et al. 2019, Table 1")
    assert published(svm) is None


def test_paper_configs_quote_the_published_table():
    """The configs' `# reported_accuracy:` comments and report/published.py must not drift apart."""
    for path in sorted((Path(__file__).resolve().parents[1] / "configs" / "papers").glob("*.yaml")):
        # a prefix names a variant (mamlpp_), a suffix the backbone (_resnet12)
        dataset, ways, shots, model = re.search(r"([a-z]+)_(\d+)way_(\d+)shot(?:_(resnet12))?$", path.stem).groups()
        evaluation = "non_transductive" if model else "transductive"  # MetaOptNet's marks: running statistics
        for algorithm, value in reported_accuracy(path).items():
            mark = published({"dataset": dataset, "ways": ways, "shots": shots, "algorithm": algorithm,
                              "model": model, "evaluation": evaluation})
            assert mark is not None and mark[0] == value, (path.name, algorithm)


def test_y_limits_pad_the_bands_and_stay_in_range():
    assert style.y_limits([20, 30], [90, 100], ACCURACY) == pytest.approx((16.0, 100.0))  # pad 5% of 80
    assert style.y_limits([2, 30], [60], ACCURACY) == pytest.approx((0.0, 62.9))
    assert style.y_limits([0.1], [0.5], MSE) == pytest.approx((0.08, 0.52))
    assert style.y_limits([float("nan")], [1.0], MSE) is None


def _drawn_y(fig) -> np.ndarray:
    """Every y of the bands (PolyCollection) and error bars (LineCollection) drawn in a figure."""
    ys = []
    for ax in fig.axes:
        for artist in ax.collections:
            if isinstance(artist, PolyCollection):
                ys += [p.vertices[:, 1] for p in artist.get_paths()]
            elif isinstance(artist, LineCollection):
                ys += [np.asarray(s)[:, 1] for s in artist.get_segments()]
    return np.concatenate(ys)


@pytest.mark.parametrize("module", [learning_curves, task_counts, baselines], ids=lambda m: m.__name__)
def test_drawn_bands_and_axes_stay_within_0_and_100(omni, module):
    exp, _ = omni
    with style.styled():
        fig = module.draw(module.data(exp), exp)
    ys = _drawn_y(fig)
    assert ys.size and ys.min() >= 0.0 and ys.max() <= 100.0
    for ax in fig.axes[:2 if module is learning_curves else 1]:
        bottom, top = ax.get_ylim()
        assert 0.0 <= bottom < top <= 100.0


def test_adaptation_step_data_clips_error_bands_at_zero(tmp_path):
    exp = tmp_path / "sine"
    for seed, scores in {0: {1: 1.0, 5: 0.6}, 1: {1: 1.2, 5: 0.8}}.items():
        cfg = add_run(exp, experiment="sine", dataset="sine", model="mlp", ways=1, shots=5, algorithm="maml",
                      seed=seed, accuracy=scores[5], test_inner_steps=[1, 5])
        path = exp / cfg.run_id() / "summary.json"
        payload = json.loads(path.read_text())
        payload["test_by_inner_steps"] = {str(s): {"loss_mean": v, "loss_ci95": 0.1} for s, v in scores.items()}
        results.save_json(path, payload)
    frame = adaptation_steps.data(analyse(exp))
    # seeds 0.2 apart: mean 1.1 and 0.7, CI = T1 * 0.2/sqrt(2)/sqrt(2) = 0.1 * T1 = 1.27 > mean: low clipped to 0
    assert list(frame["steps"]) == [1, 5] and list(frame["mean"]) == pytest.approx([1.1, 0.7])
    assert list(frame["low"]) == [0.0, 0.0] and list(frame["high"]) == pytest.approx([1.1 + 0.1 * T1, 0.7 + 0.1 * T1])


def test_learning_rate_grid_data_marks_why_a_cell_has_no_score(tmp_path):
    exp = tmp_path / "grid"
    add_run(exp, algorithm="maml", inner_lr=0.4, outer_lr=0.001, accuracy=0.9)
    add_run(exp, algorithm="maml", inner_lr=0.1, outer_lr=0.001, accuracy=0.8)
    add_run(exp, algorithm="maml", inner_lr=0.4, outer_lr=0.01, accuracy=0.7)
    add_run(exp, algorithm="maml", inner_lr=0.1, outer_lr=0.01, status="diverged")
    analysis = analyse(exp)
    grid = heatmap.data(analysis).set_index(["inner", "outer"])
    assert grid.loc[(0.4, 0.001), "score_mean"] == pytest.approx(90.0)
    assert grid.loc[(0.1, 0.01), "reason"] == "diverged" and math.isnan(grid.loc[(0.1, 0.01), "score_mean"])
    assert sensitivity.fields(analysis) == ["inner_lr", "outer_lr"]
    curve = sensitivity.data(analysis, "inner_lr")  # outer_lr fixed at the best setting's 0.001 (a tie)
    assert list(curve["x"]) == [0.1, 0.4] and list(curve["mean"]) == pytest.approx([80.0, 90.0])
    assert set(curve["fixed"]) == {"outer_lr=0.001"}


def write_episodes(run_dir, accuracies, prefix="test_"):
    """episodes.csv as the runner writes it (with the untrained floor's columns first)."""
    columns = ["episode", "floor_loss", "floor_accuracy", f"{prefix}loss", f"{prefix}accuracy"]
    results.write_csv(run_dir / "episodes.csv", [dict(zip(columns, (e, 1.6, 0.2, 1.0 - a, a)))
                                                 for e, a in enumerate(accuracies)], columns)


def test_paired_section_compares_per_episode_scores_and_notes_a_broken_file(tmp_path):
    exp, ids = build(tmp_path, test_episodes=4)  # as many as each episodes.csv holds
    write_episodes(exp / ids["maml0"], [1.0, 0.8, 1.0, 0.8])
    write_episodes(exp / ids["maml1"], [1.0, 1.0, 0.8, 1.0], prefix="")  # plain accuracy/loss columns are read too
    write_episodes(exp / ids["reptile"], [0.6, 0.5, 0.6, 0.3])  # seed 0 only: pairs with maml's seed 0 (differences 0.3-0.5)
    (exp / ids["pretrain"] / "episodes.csv").write_text("not,a\nscore,file\n")
    analysis = analyse(exp)
    table = pairwise.data(analysis)
    assert list(table["over"]) == ["episode"] and list(table[["a", "b"]].itertuples(index=False, name=None)) == [
        ("reptile", "maml")]
    row = table.iloc[0]
    assert row["n"] == 4 and row["difference"] == pytest.approx(-40.0) and row["verdict"] == "maml beats reptile"
    write_report(exp)
    saved = pd.read_csv(exp / "report" / "pairwise.csv")
    assert saved[["a", "b", "over", "n", "verdict"]].values.tolist() == [["reptile", "maml", "episode", 4,
                                                                         "maml beats reptile"]]
    section = pairwise.section(analysis)
    assert f"{ids['pretrain']}/episodes.csv is unreadable" in section.sentence
    assert section.table[1][:5] == ["reptile", "maml", "episodes", "4", "-40.00 ± 12.99"]


def test_paired_section_without_episode_files_says_so(omni):
    exp, _ = omni
    section = pairwise.section(exp)
    assert section.sentence.startswith("Per-episode scores (episodes.csv in each run folder) are not in these runs")
    assert section.table is None  # maml alone has two seeds: nothing to pair over seeds either


def test_bench_chart_uses_the_shared_style(tmp_path):
    from matplotlib.colors import to_hex

    from metacompare.workflows.bench import plot

    bars = (("learn2learn maml", "learn2learn", 5.0), ("metacompare maml", "metacompare", 8.0))
    rows = [{"model": "conv4", "inner_steps": 1, "implementation": name, "library": library, "tasks_per_s": speed}
            for name, library, speed in bars]
    fig = plot(rows, tmp_path / "bench.png")
    bars = fig.axes[0].patches
    assert [to_hex(b.get_facecolor()) for b in bars] == [style.LIBRARY_COLORS["learn2learn"], style.PALETTE[0]]
    assert [b.get_width() for b in bars] == [5.0, 8.0]
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
