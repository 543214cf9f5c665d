"""The budget ladder: one compare scores every algorithm at B/16 ... B from snapshots of its runs."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import yaml

from metacompare import files

from metacompare.training import ladder
from metacompare.cli import main
from metacompare.config.loading import load_experiment, with_overrides
from metacompare.report import budgets
from metacompare.training.runner import run_dir, train_and_evaluate
from tests.test_tune import TINY, one_thread  # noqa: F401 (autouse fixture)

# Work per iteration (metacompare.training.budget): fomaml (3*5 + 3*5) x 2 tasks = 60, reptile 3*10*2 x 2 = 120.
PER_ITERATION = {"fomaml": 60, "reptile": 120}
BUDGET = 2400


def tiny(tmp_path, **fields):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY, "results_dir": str(tmp_path / "results"), **fields}))
    return config


def ladder_config(tmp_path, algorithm: str, work: float, rungs: int = 5, **fields):
    cfg = next(c for c in load_experiment(str(tiny(tmp_path, **fields))) if c.algorithm == algorithm)
    return with_overrides(cfg, iterations=10**9, budget={"work": work}, budget_rungs=rungs)


def rung_scores(cfg) -> pd.DataFrame:
    return pd.read_csv(run_dir(cfg) / "rungs.csv", float_precision="round_trip")


def test_compare_writes_the_ladder_with_the_runs_own_score_at_the_top(tmp_path, capsys):
    code = main(["compare", str(tiny(tmp_path)), "--budget", f"work:{BUDGET}", "--no-tune", "--seeds", "1",
                 "--no-progress"])
    assert code == 0
    folder = tmp_path / "results" / f"tiny_compare_work{BUDGET}"
    table = pd.read_csv(folder / "compare" / "budgets.csv", float_precision="round_trip")
    assert sorted(table["budget"].unique()) == [BUDGET / 16, BUDGET / 8, BUDGET / 4, BUDGET / 2, BUDGET]
    for algorithm, per in PER_ITERATION.items():
        mine = table[table["algorithm"] == algorithm].sort_values("budget")
        # each snapshot where a run of its own under that work budget stops: floor(budget / work per iteration)
        assert mine["iterations"].tolist() == [BUDGET * f // per for f in (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1)]
        assert (mine["work"] == mine["iterations"] * per).all()
        summary = json.loads(next((folder / "").glob(f"{algorithm}-*/summary.json")).read_text())
        assert mine["score"].iloc[-1] == summary["test_loss_mean"]  # the top rung is the run itself, exactly
        assert set(mine["floor"]) == {summary["floor_loss_mean"]}
        assert len(pd.read_csv(folder / summary["run_id"] / "rungs.csv")) == 5 * 3  # 5 rungs x 3 test episodes
        assert len(list((folder / summary["run_id"] / "snapshots").glob("*.pt"))) == 4
    for budget, rung in table.groupby("budget"):  # one best per rung, the others tested against it
        assert (rung["verdict"] == budgets.BEST).sum() == 1
        assert rung.loc[rung["verdict"] != budgets.BEST, "p_holm"].between(0, 1).all()
    assert (folder / "compare" / "budgets.png").stat().st_size > 0 and (folder / "compare" / "budgets.svg").is_file()
    answer = (folder / "compare" / "report.md").read_text().split("\n\n")[1]
    assert "Best at every budget" in answer and "Time to target" in answer
    assert "## The answer at every budget" in (folder / "compare" / "report.md").read_text()
    # asked again for fewer rungs: the finished runs' snapshots at those rungs only; for more: the ones they hold, said
    command = ["compare", str(tiny(tmp_path)), "--budget", f"work:{BUDGET}", "--no-tune", "--seeds", "1", "--no-progress"]
    capsys.readouterr()
    assert main([*command, "--rungs", "3"]) == 0 and "warning" not in capsys.readouterr().err
    table = pd.read_csv(folder / "compare" / "budgets.csv", float_precision="round_trip")
    assert sorted(table["budget"].unique()) == [BUDGET / 4, BUDGET / 2, BUDGET]
    assert main([*command, "--rungs", "6"]) == 0
    assert "finished runs in" in (err := capsys.readouterr().err) and "hold no snapshot at 1/32 of the budget" in err
    table = pd.read_csv(folder / "compare" / "budgets.csv", float_precision="round_trip")
    assert sorted(table["budget"].unique()) == [BUDGET / 16, BUDGET / 8, BUDGET / 4, BUDGET / 2, BUDGET]


def test_a_snapshot_is_the_run_of_its_own_when_no_schedule_follows_the_budget(tmp_path):
    """fomaml's outer Adam has a constant step: its B/4 snapshot is exactly a run trained for B/4. Reptile's
    meta-step annealed to 0 over the budget is only a quarter down at the B/4 snapshot, so that differs."""
    for algorithm, fields, same in (("fomaml", {}, True),
                                    ("reptile", {"per_algorithm": {"reptile": {**TINY["per_algorithm"]["reptile"],
                                                                               "outer_lr_final": 0.0}}}, False)):
        longer = ladder_config(tmp_path, algorithm, BUDGET, **fields)
        train_and_evaluate(longer, progress=False)
        own = with_overrides(longer, budget={"work": BUDGET / 4}, budget_rungs=0)
        summary = train_and_evaluate(own, progress=False)
        snapshot = rung_scores(longer).query("rung == '1/4'")
        assert snapshot["iteration"].iloc[0] == summary["iterations_done"]
        episodes = pd.read_csv(run_dir(own) / "episodes.csv", float_precision="round_trip")
        assert (snapshot["test_loss"].tolist() == episodes["test_loss"].tolist()) is same


def test_scoring_the_snapshots_leaves_the_final_weights_in_model_pt(tmp_path):
    """model.pt (what `evaluate` reads) holds the run's last weights, as without the ladder."""
    import torch

    with_ladder = ladder_config(tmp_path, "fomaml", 600)
    without = with_overrides(with_ladder, budget_rungs=0, results_dir=str(tmp_path / "plain"))
    weights = []
    for cfg in (with_ladder, without):
        train_and_evaluate(cfg, progress=False)
        weights.append(torch.load(run_dir(cfg) / "model.pt", weights_only=True)["algorithm"]["model"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    first = torch.load(run_dir(with_ladder) / "snapshots" / "budget_1-16.pt", weights_only=True)["model"]
    assert not all(torch.equal(first[k], weights[0][k]) for k in first)  # the snapshots are other weights


def test_an_interrupted_run_keeps_its_snapshots_and_ends_with_the_uninterrupted_ladder(tmp_path, monkeypatch):
    """Stopped between checkpoints after two rungs were taken: the rerun resumes from the checkpoint
    before them, retakes them on the same iterations, and writes the ladder of a run never stopped."""
    from metacompare.algorithms.base import MetaAlgorithm

    fresh = ladder_config(tmp_path, "fomaml", BUDGET)
    train_and_evaluate(fresh, progress=False)
    stopped = with_overrides(fresh, results_dir=str(tmp_path / "stopped"), checkpoint_interval=4)
    original, calls = MetaAlgorithm.meta_train_step, []

    def step(self, tasks):
        calls.append(1)
        if len(calls) == 7:  # after iteration 6: rungs at 2 and 5 taken, last checkpoint at 4
            raise KeyboardInterrupt("killed")
        return original(self, tasks)

    monkeypatch.setattr(MetaAlgorithm, "meta_train_step", step)
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(stopped, progress=False)
    folder = run_dir(stopped)
    assert sorted(p.name for p in (folder / "snapshots").iterdir()) == ["budget_1-16.pt", "budget_1-8.pt"]
    monkeypatch.setattr(MetaAlgorithm, "meta_train_step", original)
    train_and_evaluate(stopped, progress=False)
    kept = ["rung", "fraction", "iteration", "work", "episode", "test_loss"]
    assert rung_scores(stopped)[kept].equals(rung_scores(fresh)[kept])
    assert sorted(p.name for p in (folder / "snapshots").glob("*.pt")) == [
        "budget_1-16.pt", "budget_1-2.pt", "budget_1-4.pt", "budget_1-8.pt"]


def test_a_rung_below_one_iteration_is_the_untrained_network(tmp_path):
    """At B/16 = 50 example-passes fomaml (60 per iteration) would not train at all on its own: the
    snapshot is the initial weights, so that rung scores the floor."""
    cfg = ladder_config(tmp_path, "fomaml", 800)
    train_and_evaluate(cfg, progress=False)
    first = rung_scores(cfg).query("rung == '1/16'")
    floor = pd.read_csv(run_dir(cfg) / "episodes.csv", float_precision="round_trip")["floor_loss"]
    assert first["iteration"].iloc[0] == 0 and first["test_loss"].tolist() == floor.tolist()


LADDER = pd.DataFrame([  # accuracy; pretrain leads early, maml overtakes at 900 CPU-s
    {"budget": b, "algorithm": a, "score": s, "verdict": v}
    for b, rows in {225: [("pretrain", 0.80, budgets.BEST), ("maml", 0.70, "pretrain beats maml")],
                    450: [("pretrain", 0.85, budgets.BEST), ("maml", 0.84, "no significant difference")],
                    900: [("maml", 0.90, budgets.BEST), ("pretrain", 0.86, "maml beats pretrain")],
                    1800: [("maml", 0.95, budgets.BEST), ("pretrain", 0.87, "maml beats pretrain")]}.items()
    for a, s, v in rows])


def test_the_words_name_the_winner_changes_and_the_time_to_target():
    text = budgets.winner_words(LADDER, "cpu_seconds")
    assert text == ("Best at every budget (snapshots of the same runs, on the same test episodes): pretrain from 225 "
                    "to 450 CPU-s; maml from 900 to 1,800 CPU-s; the winner changes at 900 CPU-s. The best is not "
                    "significantly ahead of every other algorithm at 450 CPU-s.")
    # target: 95% of the best final score, 0.95 * 0.95 = 90.25%: maml first reaches it at 1,800, pretrain never
    times = budgets.time_to_target(LADDER, 0.9025, True)
    assert times["maml"] == 1800.0 and math.isnan(times["pretrain"])
    assert budgets.target_words(LADDER, "cpu_seconds", True) == (
        "Time to target (accuracy ≥ 90.25%, 95% of the best final score; the smallest budget that reaches it): "
        "maml 1,800 CPU-s, pretrain not within 1,800 CPU-s.")
    assert budgets.target_words(LADDER, "cpu_seconds", True, target=0.85).endswith(
        "pretrain 450 CPU-s, maml 900 CPU-s.")
    steady = LADDER[LADDER["algorithm"] == "maml"].assign(verdict=budgets.BEST)
    assert budgets.winner_words(steady, "work").endswith("maml from 225 to 1,800 example-passes; the winner never "
                                                         "changes.")


def test_verdicts_are_paired_over_episodes_and_holm_corrected_within_a_rung():
    """Three algorithms, one rung: b trails the best, a, by 0.1 to 0.107 on every episode (significant),
    c is 0.002 behind on average with noise ten times that (not); the two p-values are Holm-adjusted together."""
    rows = []
    for episode, noise in enumerate([0.01, -0.01, 0.02, -0.02, 0.0, 0.0, 0.01, -0.01]):  # mean 0
        a = 0.902 + noise
        for name, score in (("a", a), ("b", a - 0.1 - 0.001 * episode), ("c", 0.9 - noise)):
            rows.append({"algorithm": name, "seed": 0, "rung": "1", "fraction": 1.0, "iteration": 10,
                         "train_seconds": 1.0, "train_cpu_seconds": 1.0, "work": 100.0, "episode": episode,
                         "score": score})
    table = budgets.table(pd.DataFrame(rows), {"a": 0.2, "b": 0.2, "c": 0.2}, {"cpu_seconds": 60}, True).set_index(
        "algorithm")
    assert table.loc["a", "verdict"] == budgets.BEST and table.loc["b", "verdict"] == "a beats b"
    assert table.loc["c", "verdict"] == "no significant difference"
    assert table.loc["b", "difference_from_best"] == pytest.approx(-0.1035, abs=1e-9)
    raw = [ladder_p(rows, "b"), ladder_p(rows, "c")]
    assert table.loc[["b", "c"], "p_holm"].tolist() == pytest.approx(list(budgets.holm(raw)))
    assert table.loc["a", "interval_over"] == "test episodes" and table.loc["a", "budget"] == 60


def ladder_p(rows, other):
    from metacompare.report.stats import paired_test

    frame = pd.DataFrame(rows)
    return paired_test(frame[frame.algorithm == "a"]["score"].to_numpy(),
                       frame[frame.algorithm == other]["score"].to_numpy())["t_p"]


def test_a_damaged_rungs_file_is_one_clear_error(tmp_path):
    (tmp_path / "rungs.csv").write_text("rung,fraction\n1/2,0.5\n")
    with pytest.raises(files.FileProblem, match="rungs.csv: lacks the column"):
        ladder.read(tmp_path, "test_loss", {})


def test_rungs_outside_one_to_sixteen_are_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["compare", "configs/sine.yaml", "--budget", "work:100", "--rungs", "0"])
    assert stop.value.code == 2 and "argument --rungs: must be from 1 to 16, got 0" in capsys.readouterr().err


def test_runs_without_snapshots_are_named_and_one_rung_says_nothing_more():
    """Runs finished before they kept snapshots give the full budget only: the words say which."""
    partial = pd.concat([LADDER, pd.DataFrame([{"budget": 1800, "algorithm": "reptile", "score": 0.5,
                                                "verdict": "maml beats reptile"}])])
    assert budgets.winner_words(partial, "seconds").endswith(
        "Not scored below 1,800 s: reptile (runs finished without snapshots; delete them to retrain with the ladder).")
    top = LADDER[LADDER["budget"] == 1800]
    assert budgets.winner_words(top, "seconds") == "" and budgets.target_words(top, "seconds", True) == ""


def test_snapshots_are_scored_by_the_algorithm_s_own_procedure_only(tmp_path):
    """A config's common procedure is scored at the full budget (the top rung) and not at the snapshots,
    whose own-procedure scores are those of the run without the common procedure."""
    common = {"optimizer": "sgd", "lr": 0.1, "steps": 2}
    with_common = ladder_config(tmp_path, "fomaml", 600, common_evaluation=common)
    train_and_evaluate(with_common, progress=False)
    without = with_overrides(with_common, common_evaluation=None, results_dir=str(tmp_path / "plain"))
    train_and_evaluate(without, progress=False)
    rungs, plain = rung_scores(with_common), rung_scores(without)
    snapshots, top = rungs[rungs["rung"] != "1"], rungs[rungs["rung"] == "1"]
    assert len(snapshots) == 4 * 3 and snapshots["test_common_loss"].isna().all()
    assert top["test_common_loss"].notna().all()
    mine = plain[plain["rung"] != "1"]
    assert snapshots["test_loss"].tolist() == mine["test_loss"].tolist()


def test_the_recorded_omniglot_ladder_is_the_3_seed_study_with_snapshots_and_one_serial_reptile_chain():
    """experiments/compare_omniglot_minimal_ladder.yaml: the recorded 3-seed study's settings, 5 rungs
    scored on 300 shared episodes, Reptile as supervised-reptile runs it (one chain), the fit every 10th."""
    from metacompare.workflows import tune

    ladder_runs, _ = tune.load("experiments/compare_omniglot_minimal_ladder.yaml", ())
    seeds_runs, _ = tune.load("experiments/compare_omniglot_minimal_seeds.yaml", ())
    assert sorted(c.algorithm for c in ladder_runs) == ["fomaml", "maml", "pretrain", "reptile"]
    assert {(c.budget_rungs, c.floor_episodes, c.fit_interval, c.test_episodes) for c in ladder_runs} == {(5, 300, 10, 1000)}
    by_name = {c.algorithm: c for c in seeds_runs}
    for cfg in ladder_runs:
        same = {"inner_chains": 1} if cfg.algorithm == "reptile" else {}
        expected = with_overrides(by_name[cfg.algorithm], budget_rungs=5, floor_episodes=300, fit_interval=10,
                                  experiment=cfg.experiment, **same)
        assert cfg.identity() == expected.identity()
