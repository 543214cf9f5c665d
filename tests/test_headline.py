"""The answer's opening when its winner is no winner (metacompare.workflows.headline)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from metacompare.workflows import headline

from metacompare.training import timing
from tests.faults import cli
from tests.test_tune import one_thread  # noqa: F401 (autouse fixture)

SHOW, GAP = (lambda v: f"{100 * v:.2f}%"), (lambda v: f"{100 * v:.2f} points")


def pairs(**shifts: float) -> pd.DataFrame:
    """Per algorithm, 40 episodes whose score is the floor plus ``shift`` plus noise (seeded)."""
    rng = np.random.default_rng(0)
    rows = []
    for name, shift in shifts.items():
        floor = rng.uniform(0.2, 0.6, 40)
        rows.append(pd.DataFrame({"algorithm": name, "seed": 0, "episode": range(40), "floor": floor,
                                  "score": floor + shift + rng.normal(0, 0.05, 40)}))
    return pd.concat(rows, ignore_index=True)


def test_a_learner_above_its_floor_is_named_as_usual():
    tests = headline.floor_tests(pairs(maml=0.2, reptile=0.0), higher_is_better=True)
    assert tests["maml"].learned and not tests["reptile"].learned
    assert tests["maml"].n == 40 and abs(tests["maml"].difference - 0.2) < 0.03
    assert headline.opening("maml", tests, None, {"cpu_seconds": 30}, SHOW, GAP) is None


def test_nothing_learned_opens_the_answer_and_suggests_a_budget():
    tests = headline.floor_tests(pairs(reptile=-0.05, maml=0.0), higher_is_better=True)
    words = headline.opening("reptile", tests, None, {"cpu_seconds": 30}, SHOW, GAP)
    assert words.startswith("**Answer: no algorithm learned within this budget.**")
    assert "on 40 paired test episodes" in words and "--budget cpu:120" in words
    # the ladder's smallest budget where one did is named
    ladder = headline.opening("reptile", tests, None, {"work": 1e6}, SHOW, GAP,
                              learned_at={"work:62500": [], "work:125000": ["maml"], "work:250000": ["maml"]})
    assert "at the smaller budget work:125000, maml did" in ladder and "--budget work:4e+06" in ladder


def test_regression_floor_is_beaten_by_a_lower_error():
    mse = pairs(maml=-0.2)  # MSE 0.2 below the untrained network's
    assert headline.floor_tests(mse, higher_is_better=False)["maml"].learned
    assert not headline.floor_tests(mse, higher_is_better=True)["maml"].learned


def test_best_that_did_not_learn_while_another_did():
    tests = headline.floor_tests(pairs(reptile=0.0, maml=0.15), higher_is_better=True)
    words = headline.opening("reptile", tests, None, {"seconds": 60}, SHOW, GAP)
    assert "the best-scoring algorithm, reptile, did not learn" in words and "only maml beats its" in words
    assert "--budget 240" in words


def test_a_winner_no_better_than_pretraining_says_so():
    tests = headline.floor_tests(pairs(maml=0.2, pretrain=0.19), higher_is_better=True)
    row = pd.Series({"a": "maml", "b": "pretrain", "n": 40, "difference": 0.01, "difference_ci95": 0.02,
                     "t_p_holm": 0.4, "verdict": "no significant difference"})
    words = headline.opening("maml", tests, row, {"cpu_seconds": 300}, SHOW, GAP)
    assert words.startswith("**Answer: no meta-learner beats pre-training within this budget.**")
    assert "1.00 points ± 2.00 points" in words and "p = 0.4" in words
    assert headline.opening("maml", tests, row.copy().replace({"no significant difference": "maml beats pretrain"}),
                            {"cpu_seconds": 300}, SHOW, GAP) is None


def noise_table(path, classes: int = 20, rows: int = 12, features: int = 6):
    """Features with no relation to the labels: there is nothing to learn."""
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(rng.normal(size=(classes * rows, features)), columns=[f"f{i}" for i in range(features)])
    frame["label"] = np.repeat([f"c{i}" for i in range(classes)], rows)
    frame.to_csv(path, index=False)
    return path


def test_compare_at_a_budget_too_small_to_learn_says_no_algorithm_learned(tmp_path, capsys):
    path = noise_table(tmp_path / "noise.csv")
    code, out, err = cli(capsys, "compare", "--data", path, "--budget", "work:3000", "--no-tune", "--seeds", "1",
                         "--set", "test_episodes=40", "--set", "floor_episodes=30", "--set", "eval_episodes=5",
                         "--set", "eval_inner_steps=5",
                         "--results-dir", tmp_path / "r", "--no-progress")
    assert code == 0, err
    assert out.split("\n")[1].startswith("**Answer: no algorithm learned within this budget.**"), out
    assert "on 30 paired test episodes" in out and "--budget work:12000" in out
    assert "compare: 4 algorithms x 1 seed(s) = 4 runs at --budget work:3000" in err
    assert "compare: 4/4 runs done" in err and "their own wall times add up to" in err
    # the report splits each run's wall time (metacompare.training.timing), the parts adding up to the run's
    folder = tmp_path / "r" / "table_noise_compare_work3000" / "compare"
    split = pd.read_csv(folder / "time_split.csv")
    assert sorted(split["algorithm"]) == ["fomaml", "maml", "pretrain", "reptile"]
    parts = split[[f"{p}_s" for p in timing.PHASES]]
    assert np.allclose(parts.sum(axis=1), split["wall_s"], atol=0.5)
    assert "## Where the time went" in (folder / "report.md").read_text()


def test_the_no_learning_headline_names_the_smallest_rung_where_an_algorithm_learned():
    """The ladder's smaller rungs are tested against each run's floor on the same episodes: at half the
    budget maml's snapshot is well above its floor, at a quarter nothing is, at the full budget nothing
    is either; the headline says the budget is too small and names work:500 where maml did learn."""
    from metacompare.workflows.compare import learned_at

    episodes = range(30)
    floor = [0.4 + 0.01 * (e % 3) for e in episodes]
    against_floor = pd.DataFrame([{"algorithm": a, "seed": 0, "episode": e, "score": floor[e], "floor": floor[e]}
                                  for a in ("maml", "reptile") for e in episodes])
    stacked = pd.DataFrame([{"algorithm": a, "seed": 0, "rung": r, "fraction": f, "episode": float(e),
                             "score": floor[e] + (0.3 + 0.02 * (e % 5) if (a, f) == ("maml", 0.5) else 0.0)}
                            for a in ("maml", "reptile") for r, f in (("1/4", 0.25), ("1/2", 0.5)) for e in episodes])
    found = learned_at(stacked, against_floor, {"work": 1000.0}, higher=True)
    assert found == {"work:250": [], "work:500": ["maml"]}
    tests = headline.floor_tests(against_floor, True)
    words = headline.opening("maml", tests, None, {"work": 1000.0}, str, str, found)
    assert words.startswith("**Answer: no algorithm learned within this budget.**")
    assert "at the smaller budget work:500, maml did" in words
