"""The paper-protocol configs in configs/papers/ load, validate and say what they reproduce."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from metacompare.config.loading import load_experiment, reported_accuracy

PAPERS = Path(__file__).resolve().parents[1] / "configs" / "papers"
RESNET12 = sorted(PAPERS.glob("*_resnet12.yaml"))  # the same settings on ResNet-12 (issue 25), tested below
SETTINGS = {"omniglot_5way_1shot", "omniglot_5way_5shot", "omniglot_20way_1shot", "omniglot_20way_5shot",
            "miniimagenet_5way_1shot", "miniimagenet_5way_5shot"}
# The three-algorithm (Reptile, FOMAML, MAML) files; others (mamlpp_*) have tests of their own.
FILES = sorted(p for p in PAPERS.glob("*.yaml") if p.stem in SETTINGS)


def test_every_setting_has_a_file():
    assert {p.stem for p in FILES} == SETTINGS
    assert {p.stem for p in RESNET12} == {"miniimagenet_5way_1shot_resnet12", "miniimagenet_5way_5shot_resnet12"}


@pytest.mark.parametrize("path", RESNET12, ids=lambda p: p.stem)
def test_resnet12_configs_are_the_conv_protocols_on_metaoptnets_network(path):
    """MetaOptNet's ResNet-12 (widths, DropBlock 0.1 / 5); each algorithm keeps its conv4 config's protocol
    except the network and, at 1 shot, MAML's inner loss (the mean, as the file says); MetaOptNet-SVM's
    Table 1 number as the reference mark, quoted in the prose."""
    configs = {c.algorithm: c for c in load_experiment(path)}
    assert list(configs) == ["reptile", "fomaml", "maml", "pretrain"]
    conv = {c.algorithm: c for c in load_experiment(PAPERS / path.name.replace("_resnet12", ""))}
    for name, cfg in configs.items():
        assert cfg.model == "resnet12" and cfg.experiment == f"paper_{path.stem}"
        assert (cfg.resnet12.widths, cfg.resnet12.dropblock_rate, cfg.resnet12.dropblock_size) == ((64, 160, 320, 640), 0.1, 5)
        if name == "pretrain":
            continue
        changed = {k for k, v in cfg.to_dict().items() if conv[name].to_dict()[k] != v}
        allowed = {"model", "resnet12", "experiment", "filters"} | ({"inner_loss"} if cfg.shots == 1 and name != "reptile" else set())
        assert changed <= allowed, (name, changed - allowed)
    assert configs["fomaml"].to_dict() | {"algorithm": "maml"} == configs["maml"].to_dict()
    text = path.read_text()
    assert "Lee, Maji, Ravichandran & Soatto 2019" in text and "Table 1" in text
    numbers = reported_accuracy(path)
    assert numbers == {"metaoptnet_svm": {1: 62.64, 5: 78.63}[configs["maml"].shots]}
    assert f"{numbers['metaoptnet_svm']:.2f}" in text.split("# reported_accuracy:")[0]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_config_validates_with_one_run_per_algorithm(path):
    configs = load_experiment(path)
    assert [c.algorithm for c in configs] == ["reptile", "fomaml", "maml"]
    dataset, ways, shots = re.fullmatch(r"(\w+?)_(\d+)way_(\d+)shot", path.stem).groups()
    for cfg in configs:
        assert (cfg.dataset, cfg.ways, cfg.shots) == (dataset, int(ways), int(shots))
        assert cfg.evaluation == "transductive"  # the setting every reported number below was measured in
        assert cfg.experiment == f"paper_{path.stem}"
    reptile, fomaml, maml = configs
    assert fomaml.to_dict() | {"algorithm": "maml"} == maml.to_dict()  # first-order MAML: MAML's settings
    # supervised-reptile: Adam with beta1 0 and state kept across tasks, mini-batches, annealed meta-step
    assert (reptile.inner_optimizer, reptile.inner_betas[0], reptile.inner_state) == ("adam", 0.0, "carry")
    assert (reptile.outer_optimizer, reptile.outer_lr, reptile.outer_lr_final) == ("sgd", 1.0, 0.0)
    assert reptile.inner_batch_size > 0 and reptile.inner_loss == "sum" and reptile.model == "conv4_nichol"
    # cbfinn/maml: his loss (sum / K), so the published α is used verbatim; his network
    assert (maml.inner_loss, maml.model) == ("sum_over_shots", "conv4_finn")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_config_cites_its_sources_and_reported_numbers(path):
    text = path.read_text()
    assert "Finn, Abbeel & Levine 2017" in text and "Nichol, Achiam & Schulman 2018" in text
    assert "cannot express" not in text  # every protocol difference is now a config field
    assert text.count("# reported_accuracy:") == 1
    numbers = reported_accuracy(path)
    assert set(numbers) == {"reptile", "fomaml", "maml"}
    for algorithm, value in numbers.items():
        assert f"{value:.2f}".rstrip("0").rstrip(".") in text.split("# reported_accuracy:")[0], \
            f"{path.name}: {algorithm}'s {value} is not in the cited prose"


def test_settings_match_the_papers():
    """Spot checks of the numbers that differ between settings (Finn et al. 2017, appendix A.1)."""
    by_name = {p.stem: {c.algorithm: c for c in load_experiment(p)} for p in FILES}
    maml_5way, maml_20way = by_name["omniglot_5way_1shot"]["maml"], by_name["omniglot_20way_1shot"]["maml"]
    assert (maml_5way.inner_lr, maml_5way.inner_steps, maml_5way.eval_inner_steps, maml_5way.meta_batch_size) == (0.4, 1, 3, 32)
    assert (maml_20way.inner_lr, maml_20way.inner_steps, maml_20way.eval_inner_steps, maml_20way.meta_batch_size) == (0.1, 5, 5, 16)
    assert (maml_5way.model, maml_5way.filters, maml_5way.query, maml_5way.evaluation_query) == ("conv4_finn", 64, 1, 1)
    mini1, mini5 = by_name["miniimagenet_5way_1shot"]["maml"], by_name["miniimagenet_5way_5shot"]["maml"]
    assert (mini1.model, mini1.filters, mini1.query, mini1.inner_lr, mini1.inner_steps) == ("conv4_finn", 32, 15, 0.01, 5)
    assert (mini1.meta_batch_size, mini5.meta_batch_size, mini1.iterations) == (4, 2, 60000)
    reptile = by_name["omniglot_5way_1shot"]["reptile"]
    assert (reptile.train_shots, reptile.query, reptile.inner_batch_size) == (10, 0, 10)  # --train-shots 10 --inner-batch 10
    assert (reptile.inner_lr, reptile.inner_steps, reptile.eval_inner_steps, reptile.meta_batch_size) == (0.001, 5, 50, 5)
    assert (reptile.eval_inner_batch_size, reptile.iterations) == (5, 100000)
    mini_reptile = by_name["miniimagenet_5way_1shot"]["reptile"]
    assert (mini_reptile.train_shots, mini_reptile.inner_steps, mini_reptile.inner_batch_size) == (15, 8, 10)
    twenty = by_name["omniglot_20way_1shot"]["reptile"]
    assert (twenty.inner_lr, twenty.inner_steps, twenty.inner_batch_size, twenty.eval_inner_batch_size) == (0.0005, 10, 20, 10)
    # Omniglot split by character, as both papers do (Finn et al.'s recipe for the comparison)
    oc = maml_5way.omniglot
    assert (oc.split, oc.split_seed, oc.train_characters, oc.validation_characters, oc.rotation) == \
        ("characters", 1, 1100, 100, "per_task")


def test_reported_accuracy_reads_the_comment_line(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("# reported_accuracy: {maml: 48.70, reptile: 49.97}\nalgorithm: maml\n")
    assert reported_accuracy(path) == {"maml": 48.7, "reptile": 49.97}
    path.write_text("algorithm: maml\n")
    assert reported_accuracy(path) == {}
