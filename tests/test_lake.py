"""Lake's one-shot runs: reading the challenge's folder format and scoring a trained 20-way model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from metacompare.algorithms import build_algorithm
from metacompare.cli import main
from metacompare.config.loading import expand
from metacompare.data import DataError, load_omniglot
from metacompare.errors import UserError
from metacompare.data.lake_runs import load_image, read_run, read_runs
from metacompare.workflows.lake import evaluate_checkpoint
from metacompare.models import build_model


def drawing(seed: int, size: int = 105) -> Image.Image:
    """A random 'character': black blobs on white, like the challenge's 105x105 PNGs."""
    coarse = np.random.default_rng(seed).random((7, 7)) < 0.3
    pixels = np.where(np.kron(coarse, np.ones((15, 15))) > 0, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels[:size, :size], mode="L")


def write_run(root, number: int, shown: list[int], said: list[int], seed: int) -> None:
    """``runNN``: class k is drawing(seed + k); item i shows class shown[i], class_labels.txt says said[i]."""
    run = root / f"run{number:02d}"
    (run / "training").mkdir(parents=True)
    (run / "test").mkdir()
    lines = []
    for k in range(20):
        drawing(seed + k).save(run / "training" / f"class{k + 1:02d}.png")
    for i, (s, t) in enumerate(zip(shown, said)):
        drawing(seed + s).save(run / "test" / f"item{i + 1:02d}.png")
        lines.append(f"{run.name}/test/item{i + 1:02d}.png {run.name}/training/class{t + 1:02d}.png")
    (run / "class_labels.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def lake_runs(tmp_path):
    """run01: every item a copy of its class (0 errors for a model that fits its support set);
    run02: the same images, but 5 of the 20 labels name another class (exactly 5 errors)."""
    root = tmp_path / "all_runs"
    order = list(np.random.default_rng(0).permutation(20))
    write_run(root, 1, order, order, seed=100)
    wrong = order[:5][1:] + order[:1] + order[5:]  # items 1-5 labelled with a rotated set of classes
    write_run(root, 2, order, wrong, seed=200)
    return root


def save_model(path, ways: int = 20, dataset: str = "omniglot", **changes):
    raw = dict(dataset=dataset, model="conv4_strided", ways=ways, shots=1, query=1, filters=8, inner_lr=0.5,
               eval_inner_steps=15, omniglot={"image_size": 28})
    cfg = expand({**raw, **changes})[0]
    model = build_model(cfg)
    torch.save({"config": cfg.to_dict(), "algorithm": build_algorithm(model, cfg).state_dict()}, path)
    return path


def test_run_folder_is_read_with_labels_from_class_labels_txt(lake_runs):
    task = read_run(lake_runs / "run02", image_size=28)
    assert task.support_x.shape == (20, 1, 28, 28) and task.query_x.shape == (20, 1, 28, 28)
    assert task.support_y.tolist() == list(range(20))
    order = [int(v) for v in np.random.default_rng(0).permutation(20)]
    assert task.query_y.tolist() == order[1:5] + order[:1] + order[5:]
    # item i is a copy of the training image of class order[i]
    for i, shown in enumerate(order):
        torch.testing.assert_close(task.query_x[i], task.support_x[shown])


def test_images_get_the_same_preprocessing_as_the_training_data(tmp_path):
    folder = tmp_path / "images_background" / "Alphabet" / "character01"
    folder.mkdir(parents=True)
    drawing(7).save(folder / "0101_01.png")
    drawing(7).save(tmp_path / "item.png")
    trained_on = load_omniglot(str(tmp_path), ("images_background",), 28)
    (pixels,) = trained_on.values()
    torch.testing.assert_close(load_image(tmp_path / "item.png", 28), pixels[0], rtol=0, atol=0)
    assert 0.2 < pixels.mean() < 0.5  # ink is 1, paper is 0


def test_error_rates_per_run_and_overall(lake_runs, tmp_path):
    weights = save_model(tmp_path / "model.pt")
    result = evaluate_checkpoint(weights, lake_runs)
    assert [(r.run, r.errors, r.items) for r in result.runs] == [("run01", 0, 20), ("run02", 5, 20)]
    assert result.error_rate == pytest.approx(5 / 40)
    assert result.steps == 15 and result.evaluation == "transductive"


def test_cli_prints_runs_overall_and_the_published_references(lake_runs, tmp_path, capsys):
    weights = save_model(tmp_path / "model.pt")
    assert main(["evaluate", str(weights), "--lake-runs", str(lake_runs), "--steps", "15"]) == 0
    out = capsys.readouterr().out
    assert "run01: error   0.0% (0/20)" in out and "run02: error  25.0% (5/20)" in out
    assert "overall error 12.5% (5/40)" in out
    assert "people        4.5%" in out and "BPL           3.3%" in out


def test_a_five_way_model_is_refused(lake_runs, tmp_path, capsys):
    weights = save_model(tmp_path / "model.pt", ways=5)
    with pytest.raises(UserError, match="classifies 5 ways, but Lake's runs are 20-way"):
        evaluate_checkpoint(weights, lake_runs)
    assert main(["evaluate", str(weights), "--lake-runs", str(lake_runs)]) == 2
    assert "20-way" in capsys.readouterr().err


def test_bad_inputs_name_the_problem(lake_runs, tmp_path):
    with pytest.raises(UserError, match="neither model.pt nor checkpoint.pt"):
        evaluate_checkpoint(tmp_path, lake_runs)
    weights = save_model(tmp_path / "model.pt")
    with pytest.raises(DataError, match="no runNN folders"):
        evaluate_checkpoint(weights, tmp_path / "nowhere")
    (lake_runs / "run01" / "class_labels.txt").write_text("run01/test/item01.png run01/training/class99.png\n")
    with pytest.raises(DataError, match=r"class_labels.txt, line 1"):
        read_runs(lake_runs, 28)


def test_runner_saves_final_weights_that_evaluate_reads(lake_runs, tmp_path):
    """A tiny 20-way run on a generated Omniglot folder, then `evaluate RUN_FOLDER`."""
    from metacompare.training.runner import run_dir, train_and_evaluate

    for alphabet in ("Train", "Valid", "Test"):
        for c in range(5):  # 5 characters x 4 rotations = 20 classes per split
            folder = tmp_path / "omni" / "images_background" / alphabet / f"character{c:02d}"
            folder.mkdir(parents=True)
            for d in range(2):
                drawing(1000 * ("Train", "Valid", "Test").index(alphabet) + 10 * c + d).save(folder / f"{c:02d}_{d}.png")
    cfg = expand(dict(algorithm="fomaml", dataset="omniglot", data_root=str(tmp_path / "omni"), model="conv4",
                      filters=8, ways=20, shots=1, query=1, meta_batch_size=2, iterations=2, eval_interval=2,
                      eval_episodes=1, test_episodes=1, eval_inner_steps=1, results_dir=str(tmp_path / "results"),
                      omniglot=dict(sources=["images_background"], image_size=28, download=False,
                                    train_alphabets=["Train"], validation_alphabets=["Valid"],
                                    test_alphabets=["Test"])))[0]
    train_and_evaluate(cfg, progress=False)
    assert (run_dir(cfg) / "model.pt").is_file() and not (run_dir(cfg) / "checkpoint.pt").exists()
    result = evaluate_checkpoint(run_dir(cfg), lake_runs, steps=2)
    assert len(result.runs) == 2 and result.algorithm == "fomaml" and result.steps == 2
    assert all(0 <= r.errors <= 20 for r in result.runs)
