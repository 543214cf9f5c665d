"""compare: equal budgets for every algorithm, and a report that opens with the answer."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml

from metacompare.workflows import compare, tune
from metacompare.cli import main
from metacompare.errors import UserError
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
    # the best named first, or (10 iterations: no better than untrained) the honest opening that names it
    assert answer.startswith((f"**Answer: {best}.**", "**Answer: no algorithm learned within this budget.**"))
    assert f"{best} scores best" in answer or answer.startswith(f"**Answer: {best}.**")
    assert "600 example-passes" in answer
    assert "fomaml beats reptile" in answer and "p = 0.001" in answer
    assert "## Paired comparisons over test episodes" in report
    # the tables as the docs render them: a titled score column with its interval, no raw float dump
    assert "| algorithm | test MSE (95% CI) | interval over | untrained floor | iterations | training s |" in report
    assert "| fomaml − reptile | episode (6) |" in report and "nan" not in report and "score_ci95" not in report
    assert (folder / "compare" / "learning_curves.png").stat().st_size > 0
    assert answer in capsys.readouterr().out


@pytest.mark.slow
def test_procs_splits_what_the_maths_allows_and_keeps_the_rest_on_one_process(tmp_path, stub_stats, capsys):
    """``--procs 2``: FOMAML's meta-batch is shared by two processes and gives the one-process numbers;
    Reptile with a carried Adam state cannot be split, so it trains here, on one, and says why."""
    carry = {"reptile": {**TINY["per_algorithm"]["reptile"], "inner_optimizer": "adam", "inner_state": "carry"}}
    scores = {}
    for procs in (1, 2):
        config = tmp_path / f"tiny{procs}.yaml"
        config.write_text(yaml.safe_dump({**TINY, "results_dir": str(tmp_path / f"results{procs}"),
                                          "precision": "float64", "per_algorithm": carry}))
        assert main(["compare", str(config), "--budget", "work:600", "--no-tune", "--seeds", "1", "--no-progress",
                     "--procs", str(procs)]) == 0
        folder = tmp_path / f"results{procs}" / "tiny_compare_work600"
        summaries = [json.loads(path.read_text()) for path in folder.glob("*/summary.json")]
        scores[procs] = {s["algorithm"]: s for s in summaries}
    assert scores[2]["fomaml"]["processes"] == 2 and scores[2]["reptile"]["processes"] == 1
    assert scores[1]["fomaml"]["processes"] == 1
    assert "reptile: one process (inner_state: carry" in capsys.readouterr().err
    for algorithm in ("fomaml", "reptile"):  # the same runs, sums taken in another order
        one, two = scores[1][algorithm], scores[2][algorithm]
        assert two["iterations_done"] == one["iterations_done"] > 0
        assert two["test_loss_mean"] == pytest.approx(one["test_loss_mean"], rel=1e-9)


def test_the_answer_without_paired_statistics_says_so():
    table = pd.DataFrame([{"algorithm": "maml", "finished": 3, "score": 0.9, "score_ci95": 0.01, "floor": 0.2,
                           "iterations_done": 100, "train_seconds": 60, "work": 1e6},
                          {"algorithm": "reptile", "finished": 3, "score": 0.8, "score_ci95": 0.02, "floor": 0.2,
                           "iterations_done": 300, "train_seconds": 60, "work": 1e6}])
    text = compare.answer(table, None, None, True, "test accuracy", {"seconds": 60}, percent=True)
    assert text.startswith("**Answer: maml.**") and "90.00% ± 1.00 points" in text
    assert "60 training seconds" in text and "Next is reptile at 80.00%" in text
    assert "paired statistics are not available" in text


def test_one_seed_is_said_in_words_not_as_a_nan_interval():
    table = pd.DataFrame([{"algorithm": "fomaml", "seeds": 1, "finished": 1, "score": 0.9232, "score_ci95": math.nan,
                           "floor": 0.4502, "iterations_done": 5628, "train_seconds": 4225, "work": 5.4e6},
                          {"algorithm": "reptile", "seeds": 1, "finished": 1, "score": 0.9044, "score_ci95": math.nan,
                           "floor": 0.3174, "iterations_done": 7657, "train_seconds": 4360, "work": 5.7e6}])
    seeds = STUB.assign(a="fomaml", n=1, over="seed", verdict="too few pairs to test", t_p_holm=math.nan)
    text = compare.answer(table, STUB, seeds, True, "test accuracy", {"seconds": 60}, True)
    assert "reaches test accuracy 92.32% (1 seed: no spread across seeds; untrained network: 45.02%)" in text
    assert "Next is reptile at 90.44% (1 seed: no spread across seeds; 7657 iterations)." in text
    assert "Across seeds: one seed each, so training noise is not tested" in text and "nan" not in text


def test_a_budget_no_run_finished_in_is_reported_not_hidden():
    table = pd.DataFrame([{"algorithm": "maml", "finished": 0, "score": math.nan}])
    assert compare.answer(table, None, None, True, "test accuracy", {"work": 1}, True).startswith("**Answer: none.**")


def test_a_bad_budget_is_a_one_line_error(tmp_path, capsys):
    assert main(["compare", "configs/sine.yaml", "--budget", "flops:1"]) == 2
    assert "--budget flops:1" in capsys.readouterr().err


CHOSEN = {"fomaml": {"inner_lr": 0.05, "meta_batch_size": 1}, "reptile": {"inner_lr": 0.02, "outer_lr": 0.5}}


def tiny_config(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "results_dir": str(tmp_path / "results")}))
    return config


def record(tmp_path, **fields):
    """A tune record as metacompare.workflows.tune.write_record writes it (only the keys --chosen reads)."""
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump({"trials_per_algorithm": 8, "trial_budget": {"work": 40.0}, **fields}))
    return path


def test_chosen_settings_from_an_earlier_tune_are_what_the_final_runs_use(tmp_path, stub_stats):
    path = record(tmp_path, chosen={**CHOSEN, "maml": {"inner_lr": 0.3}})  # maml: not in this config, ignored
    code = main(["compare", str(tiny_config(tmp_path)), "--budget", "work:600", "--chosen", str(path),
                 "--seeds", "1", "--no-progress"])
    assert code == 0
    folder = tmp_path / "results" / "tiny_compare_work600"
    assert not (folder / "tune").exists()  # nothing was tuned
    runs = pd.read_csv(folder / "runs.csv").set_index("algorithm")
    for algorithm, setting in CHOSEN.items():
        config = yaml.safe_load((folder / runs.loc[algorithm, "run_id"] / "config.yaml").read_text())
        assert {k: config[k] for k in setting} == setting
    # fomaml with 1 task: (3*5 + 3*5) = 30 example-passes per iteration -> 20 in 600; reptile (2 tasks,
    # 2 inner steps on 10 examples: 3*10*2 x 2 = 120) -> 5
    assert runs.loc["fomaml", "iterations_done"] == 20 and runs.loc["reptile", "iterations_done"] == 5
    report = (folder / "compare" / "report.md").read_text()
    assert f"read from `{path}` (8 trials per algorithm, each under {{'work': 40.0}})" in report
    # this comparison's trials would get a quarter of work:600 = 150: the record was tuned at another budget
    assert "tuned at another budget" in report and "{'work': 150.0}" in report
    assert "inner_lr=0.05, meta_batch_size=1" in report
    # one seed each: no interval, said in words in the answer and in the table, never "± nan"
    assert "nan" not in report and report.split("\n\n")[1].count("(1 seed: no spread across seeds;") == 2
    assert report.count(" episodes, 1 seed | ") == 2  # the interval over that run's test episodes


def test_chosen_at_the_same_trial_budget_is_not_called_another_budget(tmp_path):
    configs, spec = tune.load(tiny_config(tmp_path))
    spec.trial_budget = {"work": 40.0}
    source = compare.read_chosen(record(tmp_path, chosen=CHOSEN), configs)
    assert source["chosen"] == CHOSEN
    assert "another budget" not in compare._source_words(source, spec)


@pytest.mark.parametrize("fields, words", [
    (None, "does not exist"),
    ({"space": {}}, "has no 'chosen:' mapping"),
    ({"chosen": {"fomaml": CHOSEN["fomaml"]}}, "'chosen' has no settings for reptile (it has fomaml)"),
    ({"chosen": {**CHOSEN, "reptile": {"inner_lr": -1.0}}}, "chosen.reptile:"),
])
def test_a_bad_chosen_file_is_a_one_line_error_naming_it(tmp_path, capsys, fields, words):
    path = record(tmp_path, **fields) if fields is not None else tmp_path / "missing.yaml"
    code = main(["compare", str(tiny_config(tmp_path)), "--budget", "work:600", "--chosen", str(path), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"--chosen {path}" in err and words in err
    assert not (tmp_path / "results").exists()  # refused before any run


def test_chosen_and_no_tune_together_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "configs/sine.yaml", "--budget", "work:1", "--no-tune", "--chosen", "x.yaml"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "not allowed with argument" in err
    with pytest.raises(UserError, match="--chosen and --no-tune conflict"):
        compare.compare("configs/sine.yaml", "work:1", tuned=False, chosen_file="x.yaml")


def test_learning_curves_name_every_algorithm_even_when_its_first_seed_has_no_curve(tmp_path, monkeypatch):
    """A run that diverged before its first validation has no curve; the algorithm's next seed carries
    the legend entry (it once went missing)."""
    from matplotlib.figure import Figure

    from metacompare.config.loading import RunConfig

    def metrics(values):
        return pd.DataFrame({"iteration": [10, 20], "train_cpu_seconds": [1.0, 2.0], "work": [5, 10],
                             **({"val_loss_mean": values} if values else {})})
    runs = {("fomaml", 0): metrics([0.5, 0.4]), ("reptile", 0): metrics(None), ("reptile", 1): metrics([0.9, 0.7])}
    configs = [RunConfig(algorithm=a, dataset="sine", model="mlp", ways=1, shots=5, query=5, seed=s) for a, s in runs]
    for cfg in configs:
        (tmp_path / f"{cfg.algorithm}{cfg.seed}").mkdir()
        runs[cfg.algorithm, cfg.seed].to_csv(tmp_path / f"{cfg.algorithm}{cfg.seed}" / "metrics.csv", index=False)
    monkeypatch.setattr(compare, "run_dir", lambda cfg: tmp_path / f"{cfg.algorithm}{cfg.seed}")
    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kw: saved.append(fig))
    assert compare.learning_curves(configs, tmp_path / "curves.png", seconds="train_cpu_seconds")
    (fig,) = saved
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["fomaml", "reptile"]


def test_the_plan_counts_what_a_resumed_run_has_left_from_its_checkpoint(tmp_path):
    """A comparison resumed after a stop announces the training its runs have left, not all of it."""
    import torch

    from metacompare.config.loading import expand, with_overrides
    from metacompare.training.runner import run_dir

    base = expand({**TINY, "results_dir": str(tmp_path)})[0]
    cfg, wall = (with_overrides(base, budget=bound) for bound in ({"cpu_seconds": 300}, {"seconds": 480}))
    assert compare._left(cfg) == 1.0  # not begun
    for each in (cfg, wall):
        run_dir(each).mkdir(parents=True)
        torch.save({"extra": {"budget": {"train_cpu_seconds": 225.0, "train_seconds": 240.0}}},
                   run_dir(each) / "checkpoint.pt")
    assert compare._left(cfg) == pytest.approx(0.25) and compare._left(wall) == pytest.approx(0.5)
    (run_dir(cfg) / "checkpoint.pt").write_bytes(b"damaged")
    assert compare._left(cfg) == 1.0  # only an estimate; the run itself names the damage
    (run_dir(cfg) / "summary.json").write_text("{}")
    assert compare._left(cfg) == 0.0


def test_a_rerun_plan_counts_the_finished_runs_of_a_file_that_sets_evaluations(tmp_path, capsys):
    """The plan's runs lacked the tune section's ``evaluations`` (part of the run id), so a rerun of such
    a comparison announced every run again instead of "already finished"."""
    from tests.test_tune import SPACE, write

    command = ["compare", str(write(tmp_path, SPACE)), "--budget", "work:600", "--no-tune", "--seeds", "1",
               "--no-progress"]
    assert main(command) == 0
    capsys.readouterr()
    assert main(command) == 0
    assert "2 run(s) already finished" in capsys.readouterr().err


def test_the_budget_in_words_is_singular_for_one():
    from metacompare.workflows.compare_answer import budget_words

    assert [budget_words(b) for b in ({"cpu_seconds": 1}, {"cpu_seconds": 300}, {"seconds": 1}, {"work": 2e6})] == [
        "1 training second of CPU time", "300 training seconds of CPU time", "1 training second",
        "2,000,000 example-passes of work"]
