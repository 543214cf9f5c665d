"""experiments/commits_agree.py: the comparison it makes of two commits' runs, its refusals, and one
tiny sine case trained at HEAD twice (which must agree to the last bit)."""

from __future__ import annotations

import csv
import importlib.util
import math
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("commits_agree", ROOT / "experiments" / "commits_agree.py")
agree = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(agree)


def weights(**changes) -> dict[str, torch.Tensor]:
    base = {"model.0.weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "model.0.bias": torch.tensor([0.5, -0.5]),
            "optimizer.step": torch.tensor(3.0)}
    return {**base, **changes}


def test_equal_weights_differ_by_zero():
    assert agree.weight_diff(weights(), weights()) == (0.0, "")


def test_a_changed_tensor_is_reported_with_its_largest_difference():
    changed = weights(**{"model.0.weight": torch.tensor([[1.0, 2.0], [3.0, 4.25]])})
    worst, note = agree.weight_diff(weights(), changed)
    assert worst == 0.25
    assert note == "model.0.weight 0.25"


def test_a_difference_within_the_tolerance_is_not_named():
    nudged = weights(**{"model.0.bias": torch.tensor([0.5, -0.5 + 5e-7])})
    worst, note = agree.weight_diff(weights(), nudged)
    assert 0 < worst <= agree.TOLERANCE and note == ""


def test_a_missing_or_reshaped_tensor_cannot_agree():
    old = weights()
    new = {key: value for key, value in old.items() if key != "optimizer.step"}
    new["model.0.bias"] = torch.tensor([0.5, -0.5, 0.0])
    worst, note = agree.weight_diff(old, new)
    assert worst == math.inf
    assert note == "optimizer.step only at old; model.0.bias shape (2,) -> (3,)"


def test_files_without_tensors_cannot_agree():
    assert agree.weight_diff({}, {}) == (math.inf, "no tensors at either")


def test_nan_at_both_commits_is_equal_at_one_is_not():
    nan = float("nan")
    assert agree.weight_diff(weights(x=torch.tensor([nan])), weights(x=torch.tensor([nan])))[0] == 0.0
    assert agree.weight_diff(weights(x=torch.tensor([nan])), weights(x=torch.tensor([1.0])))[0] == math.inf
    assert agree.weight_diff(weights(x=torch.tensor([math.inf])), weights(x=torch.tensor([math.inf])))[0] == 0.0
    assert agree.score_gap({"test_loss_mean": 1.5, "test_accuracy_mean": nan},
                           {"test_loss_mean": 1.5, "test_accuracy_mean": nan}) == 0.0
    assert agree.score_gap({"test_loss_mean": 1.5}, {"test_loss_mean": 1.25}) == 0.25
    assert agree.score_gap({"test_loss_mean": 1.5}, {"test_loss_mean": nan}) == math.inf


@pytest.mark.parametrize("states, verdict", [(("refused", "ok"), "new only"), (("ok", "refused"), "old only"),
                                             (("refused", "refused"), "refused at both"),
                                             (("failed", "ok"), "FAILED")])
def test_a_case_one_commit_cannot_run_is_listed_not_compared(tmp_path, states, verdict):
    (tmp_path / "summary.json").write_text('{"test_loss_mean": 1.0}')
    outcome = {"ok": {"status": "ok", "dir": tmp_path}, "refused": {"status": "refused", "message": "exit 2: no"},
               "failed": {"status": "failed", "message": "exit 1: boom"}}
    row = agree.compare(("sine", "vmap", "maml"), dict(outcome[states[0]]), dict(outcome[states[1]]))
    assert row["verdict"] == verdict
    assert (verdict in agree.FAILING) == (verdict in ("old only", "FAILED"))


def train_refused(tmp_path, monkeypatch, algorithms: list[str], refusing: str, message: str):
    """train_group over ``algorithms`` with an ``invoke`` that refuses (exit 2, ``message``) every run
    holding ``refusing``: ({algorithm: status}, the algorithm lists it was called with)."""
    calls = []

    def invoke(tree, out, group, names, omniglot):
        calls.append(names)
        if refusing in names:
            return 2, message, {}
        return 0, "", {name: out for name in names}

    monkeypatch.setattr(agree, "invoke", invoke)
    group = ("sine", "some engine", algorithms, [], [])
    found = agree.train_group(tmp_path, tmp_path / "g", group, {name: name for name in algorithms}, tmp_path)
    return {name: outcome["status"] for name, outcome in found.items()}, calls


def test_a_refusal_naming_no_algorithm_refuses_the_whole_group(tmp_path, monkeypatch):
    message = "metacompare: error: unknown field 'engine'; known fields: algorithm, mamlpp, batch_tasks"
    statuses, calls = train_refused(tmp_path, monkeypatch, ["fomaml", "maml"], "maml", message)
    assert statuses == {"fomaml": "refused", "maml": "refused"}
    assert calls == [["fomaml", "maml"]]  # "mamlpp" names no algorithm: no run one by one


def test_a_refusal_naming_one_algorithm_runs_the_others_alone(tmp_path, monkeypatch):
    message = "metacompare: error: batch_tasks: anil ignores it (only fomaml reads it)"
    statuses, calls = train_refused(tmp_path, monkeypatch, ["anil", "fomaml"], "anil", message)
    assert statuses == {"anil": "refused", "fomaml": "ok"}
    assert calls == [["anil", "fomaml"], ["anil"], ["fomaml"]]


def test_what_is_not_a_commit_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="'no-such-commit' is not a commit"):
        agree.main(["no-such-commit", "HEAD", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


@pytest.mark.slow  # 11 s: trains through the CLI from an exported tree
def test_head_against_itself_agrees_to_the_last_bit(tmp_path):
    """One tiny sine MAML run trained at HEAD's committed tree twice, through the command line."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert agree.main(["HEAD", "HEAD", "--only", "maml", "--engines", "sine/looped", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / f"{head[:7]}_{head[:7]}.csv")))
    assert [(row["case"], row["verdict"]) for row in rows] == [("sine/looped/maml", "agree")]
    assert float(rows[0]["max_weight_diff"]) == 0.0 and float(rows[0]["score_diff"]) == 0.0
    assert rows[0]["old_commit"] == rows[0]["new_commit"] == head
    assert 0 < float(rows[0]["old_score"]) < 10  # a sine test MSE
    assert f"`{head}`" in (tmp_path / f"{head[:7]}_{head[:7]}.md").read_text()
