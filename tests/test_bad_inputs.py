"""The bad-input catalogue: every mistake a user can make gets one clear line, never a traceback.

Each case runs the real CLI and checks the contract of ``metacompare.errors.UserError``: exit status
2, exactly one line on stderr (``metacompare: error: ...``) that names the field or file and says what
to do, no traceback, and the working folder unchanged: no run folder, no temporary or partial file.
Data is generated (a fake Omniglot zip of random drawings); downloads go to servers on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import zipfile

import pytest
import torch

from metacompare.algorithms.base import MetaAlgorithm
from metacompare.config.loading import ConfigError
from metacompare.data import build_tasks
from metacompare.data.download import download_omniglot
from tests.faults import (cli, cli_process, closed_port_url, file_server, leftovers, md5, omniglot_config,
                          omniglot_zip, one_torch_thread, silent_server, sine_config, snapshot, write_config)

one_thread = pytest.fixture(autouse=True)(one_torch_thread)


def refused(capsys, tmp_path, needles: tuple[str, ...], *argv: str) -> str:
    """Run the CLI on inputs already in ``tmp_path``; assert the one-line refusal; return it."""
    before = snapshot(tmp_path)
    code, out, err = cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("metacompare: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    after = snapshot(tmp_path)
    if argv[0] == "download":  # the download folder may be created; no file may appear in it
        after = {k: v for k, v in after.items() if k in before or v != "/"}
    assert after == before, "the failed command changed files"
    assert leftovers(tmp_path) == []
    return lines[0]


def run_args(config, tmp_path, *extra: str) -> list[str]:
    return ["run", str(config), "--results-dir", str(tmp_path / "results"), "--no-progress", "--no-report", *extra]


# ------------------------------------------------------------------------------- config files
RAW_FILES = {
    "yaml_syntax_error": ("iterations: [1, 2\nshots: 5\n", ("cfg.yaml", "YAML syntax error at line", "fix the file")),
    "yaml_tab_indent": ("omniglot:\n\trotations: false\n", ("cfg.yaml", "YAML syntax error", "fix the file")),
    "empty_file": ("", ("cfg.yaml", "empty", "configs/sine.yaml")),
    "only_comments": ("# nothing here\n", ("cfg.yaml", "empty", "set at least")),
    "top_level_list": ("- maml\n- reptile\n", ("cfg.yaml", "expected a mapping", "got a list")),
    "top_level_scalar": ("maml\n", ("cfg.yaml", "expected a mapping", "got a str")),
    "duplicate_field": ("dataset: sine\ninner_lr: 0.1\ninner_lr: 0.2\n",
                        ("cfg.yaml", "'inner_lr' is set twice", "line 3")),
}


@pytest.mark.parametrize("case", sorted(RAW_FILES))
def test_malformed_config_file(case, tmp_path, capsys):
    text, needles = RAW_FILES[case]
    config = tmp_path / "cfg.yaml"
    config.write_text(text)
    refused(capsys, tmp_path, needles, *run_args(config, tmp_path))


def test_binary_config_file(tmp_path, capsys):
    config = tmp_path / "cfg.yaml"
    config.write_bytes(b"\xff\xfe\x00\x89PNG garbage")
    refused(capsys, tmp_path, ("cfg.yaml", "is not UTF-8 text"), *run_args(config, tmp_path))


def test_missing_config_file(tmp_path, capsys):
    refused(capsys, tmp_path, ("nope.yaml", "no such config file", "configs/"),
            *run_args(tmp_path / "nope.yaml", tmp_path))


def test_config_path_is_a_folder(tmp_path, capsys):
    refused(capsys, tmp_path, ("is a folder, not a file",), *run_args(tmp_path, tmp_path))


# --------------------------------------------------------------------------------- field values
GPU = torch.cuda.is_available()
FIELDS = {
    # unknown names, with the closest known one suggested
    "unknown_field": ({"inner_lrr": 0.1}, ("unknown field 'inner_lrr'", "did you mean 'inner_lr'")),
    "unknown_nested_field": ({"omniglot": {"rotaions": False}},
                             ("unknown field 'omniglot.rotaions'", "did you mean 'rotations'")),
    # wrong types
    "text_for_int": ({"iterations": "ten"}, ("iterations: expected a whole number", "'ten'")),
    "fraction_for_int": ({"shots": 2.5}, ("shots: expected a whole number",)),
    "text_for_float": ({"inner_lr": "fast"}, ("inner_lr: expected a number",)),
    "bool_for_float": ({"outer_lr": True}, ("outer_lr: expected a number",)),
    "number_for_bool": ({"omniglot": {"rotations": 3}}, ("omniglot.rotations: expected true or false",)),
    "scalar_for_section": ({"omniglot": 5}, ("omniglot: expected a mapping of fields",)),
    "mapping_for_list": ({"omniglot": {"sources": {"a": 1}}}, ("omniglot.sources: expected a list",)),
    "number_for_text": ({"model": 4}, ("model: expected text",)),
    # out of range
    "negative_inner_lr": ({"inner_lr": -0.1}, ("inner_lr: must be a positive finite number", "-0.1")),
    "zero_inner_lr": ({"inner_lr": 0}, ("inner_lr: must be a positive finite number",)),
    "zero_outer_lr": ({"outer_lr": 0.0}, ("outer_lr: must be a positive finite number",)),
    "infinite_outer_lr": ({"outer_lr": float("inf")}, ("outer_lr: must be a positive finite number",)),
    "nan_inner_lr": ({"inner_lr": float("nan")}, ("inner_lr: must be a positive finite number",)),
    "zero_inner_steps": ({"inner_steps": 0}, ("inner_steps: must be a positive whole number",)),
    "negative_iterations": ({"iterations": -5}, ("iterations: must be a positive whole number", "-5")),
    "zero_shots": ({"shots": 0}, ("shots: must be a positive whole number",)),
    "zero_query": ({"query": 0}, ("query: must be a positive whole number",)),
    "zero_ways": ({"ways": 0}, ("ways: must be a positive whole number",)),
    "negative_ways": ({"ways": -5, "dataset": "omniglot", "model": "conv4"}, ("ways: must be a positive",)),
    "zero_meta_batch": ({"meta_batch_size": 0}, ("meta_batch_size: must be a positive whole number",)),
    "zero_checkpoint_interval": ({"checkpoint_interval": 0}, ("checkpoint_interval: must be a positive",)),
    "zero_eval_episodes": ({"eval_episodes": 0}, ("eval_episodes: must be a positive",)),
    "zero_num_tasks": ({"num_tasks": 0}, ("num_tasks:", "-1 for unlimited")),
    "negative_num_tasks": ({"num_tasks": -3}, ("num_tasks:", "got -3")),
    "negative_seed": ({"seed": -1}, ("seed: must be a whole number from 0 to 2**32 - 1", "got -1")),
    "huge_eval_seed": ({"eval_seed": 2**40}, ("eval_seed: must be a whole number from 0",)),
    "small_image": ({"omniglot": {"image_size": 4}}, ("omniglot.image_size: must be 8 to 512",)),
    "conv4_too_small_image": ({"dataset": "omniglot", "model": "conv4", "ways": 2, "omniglot": {"image_size": 12}},
                              ("omniglot.image_size: conv4", "needs at least 16", "conv4_strided")),
    "no_sources": ({"omniglot": {"sources": []}}, ("omniglot.sources: the list is empty",)),
    # model: resnet12's section (metacompare.models.resnet12)
    "resnet12_three_widths": ({"dataset": "omniglot", "model": "resnet12", "ways": 2, "resnet12": {"widths": [8, 16, 32]}},
                              ("resnet12.widths: expected the 4 blocks' channels", "[64, 160, 320, 640]")),
    "resnet12_dropblock_rate_one": ({"dataset": "omniglot", "model": "resnet12", "ways": 2,
                                     "resnet12": {"dropblock_rate": 1.0}}, ("resnet12.dropblock_rate: must be in [0, 1)",)),
    "resnet12_unknown_field": ({"dataset": "omniglot", "model": "resnet12", "ways": 2, "resnet12": {"width": [8]}},
                               ("unknown field 'resnet12.width'", "did you mean 'widths'")),
    "resnet12_section_for_conv4": ({"dataset": "omniglot", "model": "conv4", "ways": 2, "resnet12": {"widths": [8] * 4}},
                                   ("resnet12: only model: resnet12 reads this section",)),
    # unknown choices
    "unknown_algorithm": ({"algorithm": "mamll"},
                          ("algorithm: unknown 'mamll'", "did you mean 'maml'", "choose one of")),
    "unknown_backend": ({"backend": "hihger"}, ("backend: unknown 'hihger'", "did you mean 'higher'")),
    "unknown_dataset": ({"dataset": "omniglott"}, ("dataset: unknown 'omniglott'", "did you mean 'omniglot'")),
    "unknown_model": ({"model": "conv5"}, ("model: unknown 'conv5'", "choose one of")),
    "unknown_optimizer": ({"outer_optimizer": "adamw"}, ("outer_optimizer: unknown 'adamw'", "did you mean 'adam'")),
    "unknown_precision": ({"precision": "float16"}, ("precision: unknown 'float16'", "choose one of")),
    "unknown_device": ({"device": "gpu"}, ("device: unknown 'gpu'", "use cpu, cuda or cuda:N")),
    "empty_algorithm_list": ({"algorithm": []}, ("algorithm: the list is empty", "algorithm: [maml]")),
    "nested_algorithm_list": ({"algorithm": [["maml"]]}, ("algorithm: expected a name or a list of names",)),
    # combinations that cannot work
    "reptile_on_higher": ({"algorithm": "reptile", "backend": "higher"},
                          ("backend: reptile cannot run on 'higher'", "set backend to one of")),
    "conv_model_for_sine": ({"model": "conv4"}, ("model: sine regression uses the 'mlp' model",)),
    "ways_for_sine": ({"ways": 5}, ("ways: sine regression tasks have one function", "set ways: 1")),
    "mlp_for_omniglot": ({"dataset": "omniglot", "ways": 5}, ("model: omniglot needs a conv model",)),
    "experiment_with_slash": ({"experiment": "a/b"}, ("experiment: must be a non-empty name without '/'",)),
    "experiment_dotdot": ({"experiment": ".."}, ("experiment: must be a non-empty name",)),
    "per_algorithm_typo": ({"per_algorithm": {"reptil": {"inner_steps": 5}}},
                           ("per_algorithm: unknown algorithm 'reptil'", "did you mean 'reptile'")),
    "per_algorithm_not_mapping": ({"per_algorithm": {"fomaml": 5}},
                                  ("per_algorithm.fomaml: expected a mapping of fields",)),
    "per_algorithm_bad_field": ({"per_algorithm": {"fomaml": {"inner_stpes": 2}}},
                                ("unknown field 'inner_stpes'", "did you mean 'inner_steps'")),
    "cuda_without_gpu": ({"device": "cuda"},
                         ("device: 'cuda' asked for but no CUDA GPU is visible", "set device: cpu")),
}


@pytest.mark.parametrize("case", sorted(FIELDS))
def test_bad_field_value(case, tmp_path, capsys):
    changes, needles = FIELDS[case]
    if case == "cuda_without_gpu" and GPU:
        pytest.skip("a GPU is visible here")
    config = write_config(tmp_path / "cfg.yaml", {**sine_config(), **changes})
    refused(capsys, tmp_path, ("cfg.yaml", *needles), *run_args(config, tmp_path))


# ------------------------------------------------------------------------------------ --set
SETS = {
    "set_without_equals": (["inner_lr0.1"], ("--set inner_lr0.1: expected key=value", "--set inner_lr=0.1")),
    "set_unknown_key": (["inner_lrr=0.1"], ("unknown field 'inner_lrr'", "did you mean 'inner_lr'")),
    "set_unknown_nested_key": (["omniglot.foo=1"], ("unknown field 'omniglot.foo'", "known fields:")),
    "set_into_a_value": (["iterations.x=5"], ("--set iterations.x: 'iterations' is not a section",)),
    "set_wrong_type": (["iterations=abc"], ("iterations: expected a whole number", "'abc'")),
    "set_negative": (["inner_steps=-1"], ("inner_steps: must be a positive whole number",)),
}


@pytest.mark.parametrize("case", sorted(SETS))
def test_bad_set_override(case, tmp_path, capsys):
    sets, needles = SETS[case]
    config = write_config(tmp_path / "cfg.yaml", sine_config())
    extra = [a for s in sets for a in ("--set", s)]
    refused(capsys, tmp_path, needles, *run_args(config, tmp_path, *extra))


def test_results_dir_flag_is_validated_too(tmp_path, capsys):
    config = write_config(tmp_path / "cfg.yaml", sine_config())
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    refused(capsys, tmp_path, ("results_dir: cannot write to", "a_file", "--results-dir"),
            "run", str(config), "--results-dir", str(blocker / "results"), "--no-progress")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permissions")
def test_read_only_results_dir(tmp_path, capsys):
    config = write_config(tmp_path / "cfg.yaml", sine_config())
    locked_dir = tmp_path / "ro"
    locked_dir.mkdir()
    locked_dir.chmod(0o555)
    try:
        refused(capsys, tmp_path, ("results_dir: cannot write to", "--results-dir"),
                "run", str(config), "--results-dir", str(locked_dir), "--no-progress")
    finally:
        locked_dir.chmod(0o755)


# ------------------------------------------------------------------------------------- data
@pytest.fixture
def fake_root(tmp_path):
    root = tmp_path / "data"
    omniglot_zip(root / "images_background_small1.zip")
    return root


def _omniglot(tmp_path, root, **changes) -> str:
    cfg = omniglot_config(root)
    for key, value in changes.items():
        if key == "omniglot":
            cfg["omniglot"] = {**cfg["omniglot"], **value}
        else:
            cfg[key] = value
    return str(write_config(tmp_path / "cfg.yaml", cfg))


def test_fake_omniglot_config_itself_runs(tmp_path, fake_root, capsys):
    """The baseline the data cases perturb: without the perturbation the run succeeds."""
    code, out, err = cli(capsys, *run_args(_omniglot(tmp_path, fake_root), tmp_path))
    assert code == 0, err
    assert "test accuracy" in out


def test_missing_data_directory(tmp_path, capsys):
    line = refused(capsys, tmp_path, ("images_background_small1.zip", "metacompare download omniglot"),
                   *run_args(_omniglot(tmp_path, tmp_path / "nowhere"), tmp_path))
    assert str(tmp_path / "nowhere") in line


def test_data_root_is_a_file(tmp_path, capsys):
    (tmp_path / "plain.txt").write_text("x")
    refused(capsys, tmp_path, ("not found", "set data_root"),
            *run_args(_omniglot(tmp_path, tmp_path / "plain.txt"), tmp_path))


def test_zip_that_is_not_a_zip(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    (root / "images_background_small1.zip").write_bytes(os.urandom(2000))
    refused(capsys, tmp_path, ("images_background_small1.zip", "corrupt or truncated zip", "delete it"),
            *run_args(_omniglot(tmp_path, root), tmp_path))


def test_truncated_zip(tmp_path, capsys):
    root = tmp_path / "data"
    whole = omniglot_zip(tmp_path / "whole" / "images_background_small1.zip").read_bytes()
    root.mkdir()
    (root / "images_background_small1.zip").write_bytes(whole[: len(whole) // 2])
    refused(capsys, tmp_path, ("images_background_small1.zip", "corrupt or truncated zip"),
            *run_args(_omniglot(tmp_path, root), tmp_path))


def test_zip_with_a_damaged_member(tmp_path, capsys):
    """The central directory is intact but a member's compressed bytes are not (CRC or inflate error)."""
    root = tmp_path / "data"
    path = omniglot_zip(root / "images_background_small1.zip")
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.infolist()[5]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start, start + info.compress_size):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    refused(capsys, tmp_path, ("images_background_small1.zip", "corrupt or truncated zip"),
            *run_args(_omniglot(tmp_path, root), tmp_path))


def test_zip_holding_a_broken_image(tmp_path, capsys):
    root = tmp_path / "data"
    path = omniglot_zip(root / "images_background_small1.zip")
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr("images_background_small1/Alpha0/character01/9999_99.png", b"not a png")
    refused(capsys, tmp_path, ("unreadable image in Alpha0/character01", "re-download"),
            *run_args(_omniglot(tmp_path, root), tmp_path))


def test_zip_in_the_wrong_layout(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    with zipfile.ZipFile(root / "images_background_small1.zip", "w") as zf:
        zf.writestr("readme.txt", "no images here")
    refused(capsys, tmp_path, ("holds no images laid out as", "<source>/<Alphabet>/<character>/<drawer>.png"),
            *run_args(_omniglot(tmp_path, root), tmp_path))


def test_ways_larger_than_the_classes_of_a_split(tmp_path, fake_root, capsys):
    refused(capsys, tmp_path, ("ways: 4 exceeds the 3 classes of the validation split", "lower ways"),
            *run_args(_omniglot(tmp_path, fake_root, ways=4), tmp_path))


def test_shots_plus_query_larger_than_the_images_per_class(tmp_path, fake_root, capsys):
    refused(capsys, tmp_path, ("shots + query: 3 + 2 exceeds the 4 examples per class", "lower shots or query"),
            *run_args(_omniglot(tmp_path, fake_root, shots=3, query=2), tmp_path))


def test_alphabets_overlapping_between_splits(tmp_path, fake_root, capsys):
    refused(capsys, tmp_path, ("train and test splits share alphabets ['Alpha1']", "make the alphabet lists disjoint"),
            *run_args(_omniglot(tmp_path, fake_root, omniglot={"test_alphabets": ["Alpha1"]}), tmp_path))


def test_unknown_alphabet(tmp_path, fake_root, capsys):
    refused(capsys, tmp_path, ("omniglot.test_alphabets: 'Greek' matches no alphabet", "available: Alpha0"),
            *run_args(_omniglot(tmp_path, fake_root, omniglot={"test_alphabets": ["Greek"]}), tmp_path))


def test_unknown_omniglot_source(tmp_path, fake_root, capsys):
    refused(capsys, tmp_path, ("omniglot.sources: unknown source 'images_backgrnd'", "choose from"),
            *run_args(_omniglot(tmp_path, fake_root, omniglot={"sources": ["images_backgrnd"]}), tmp_path))


def test_a_split_left_without_alphabets(tmp_path, fake_root, capsys):
    refused(capsys, tmp_path, ("the train split holds no characters", "omniglot.train_alphabets"),
            *run_args(_omniglot(tmp_path, fake_root, omniglot={"train_alphabets": None, "validation_alphabets": [],
                                                                "test_alphabets": ["images_background_small1/*"]}),
                      tmp_path))


# ----------------------------------------------------------------------------------- resume
def _interrupted_run(tmp_path, capsys, monkeypatch, config) -> tuple[str, list]:
    """Run ``config`` until SIGINT arrives in its first iteration; return its run folder's contents."""
    original = MetaAlgorithm.meta_train_step

    def interrupted(self, tasks):
        os.kill(os.getpid(), signal.SIGINT)  # handled after this iteration: checkpoint, then stop
        return original(self, tasks)

    monkeypatch.setattr(MetaAlgorithm, "meta_train_step", interrupted)
    code, _, err = cli(capsys, *run_args(config, tmp_path))
    monkeypatch.setattr(MetaAlgorithm, "meta_train_step", original)
    assert code == 130, err
    [folder] = (tmp_path / "results" / "tiny").glob("fomaml-*")
    assert (folder / "checkpoint.pt").is_file()
    return folder


def test_resuming_with_a_changed_config(tmp_path, capsys, monkeypatch):
    """A checkpoint under another configuration (a run folder copied or renamed by hand) is refused."""
    folder = _interrupted_run(tmp_path, capsys, monkeypatch, write_config(tmp_path / "a.yaml", sine_config()))
    changed = write_config(tmp_path / "cfg.yaml", sine_config(inner_lr=0.02))
    from metacompare.config.loading import load_experiment

    folder.rename(folder.with_name(load_experiment(changed)[0].run_id()))
    refused(capsys, tmp_path, ("checkpoint.pt", "different config (fields differ: inner_lr)",
                               "delete the run folder"), *run_args(changed, tmp_path))


def test_resuming_from_a_corrupt_checkpoint(tmp_path, capsys, monkeypatch):
    config = write_config(tmp_path / "cfg.yaml", sine_config())
    folder = _interrupted_run(tmp_path, capsys, monkeypatch, config)
    (folder / "checkpoint.pt").write_bytes(b"\x00" * 100)
    refused(capsys, tmp_path, ("checkpoint.pt: unreadable checkpoint", "delete it"),
            *run_args(config, tmp_path))


# --------------------------------------------------------------------------------- downloads
def download_args(root, url, *extra) -> list[str]:
    return ["download", "omniglot", "--root", str(root), "--url", url, "--sources", "images_background", *extra]


def test_download_fetches_checks_and_the_zip_loads(tmp_path):
    served = tmp_path / "server"
    omniglot_zip(served / "images_background.zip", source="images_background")
    root = tmp_path / "data"
    with file_server(served) as url:
        [path] = download_omniglot(root, ["images_background"], base_url=url, timeout=5,
                                   checksums={"images_background": md5(served / "images_background.zip")})
    assert path == root / "images_background.zip" and md5(path) == md5(served / "images_background.zip")
    assert leftovers(root) == []
    from metacompare.config.loading import expand

    cfg = expand(omniglot_config(root, omniglot={"sources": ["images_background"], "rotations": False,
                                                  "image_size": 12, "train_alphabets": ["Alpha0", "Alpha1"],
                                                  "validation_alphabets": ["Alpha2"], "test_alphabets": ["Alpha3"],
                                                  "download": False}))[0]
    tasks = build_tasks(cfg)
    assert tasks.train.num_classes == 6 and len(tasks.test) == 2
    assert tuple(tasks.test[0].support_x.shape) == (2, 1, 12, 12)


def test_download_md5_mismatch(tmp_path, capsys):
    served = tmp_path / "server"
    omniglot_zip(served / "images_background.zip", source="images_background")
    with file_server(served) as url:
        refused(capsys, tmp_path, ("images_background.zip: MD5 mismatch", "68d2efa1b9178cc56df9314c21c6e718",
                                   "discarded"), *download_args(tmp_path / "data", url))
    assert not (tmp_path / "data" / "images_background.zip").exists()


def test_download_server_refuses(tmp_path, capsys):
    refused(capsys, tmp_path, ("download failed", "refused", "fetch the file by hand"),
            *download_args(tmp_path / "data", closed_port_url(), "--timeout", "5"))


def test_download_server_hangs(tmp_path, capsys):
    import time

    with silent_server() as url:
        began = time.monotonic()
        refused(capsys, tmp_path, ("download failed", "timed out"),
                *download_args(tmp_path / "data", url, "--timeout", "0.5"))
        assert time.monotonic() - began < 10


def test_download_file_not_on_server(tmp_path, capsys):
    (tmp_path / "server").mkdir()
    with file_server(tmp_path / "server") as url:
        refused(capsys, tmp_path, ("images_background.zip: download failed (HTTP 404",),
                *download_args(tmp_path / "data", url))


def test_download_bad_url(tmp_path, capsys):
    refused(capsys, tmp_path, ("--url: cannot fetch notaurl/images_background.zip", "http(s)://"),
            *download_args(tmp_path / "data", "notaurl"))


def test_download_non_positive_timeout(tmp_path, capsys):
    refused(capsys, tmp_path, ("--timeout: must be from 0.001 to 86400, got 0",),
            *download_args(tmp_path / "data", closed_port_url(), "--timeout", "0"))


def test_download_unknown_source(tmp_path, capsys):
    refused(capsys, tmp_path, ("omniglot source 'images_foo' has no published checksum", "downloadable:"),
            "download", "omniglot", "--root", str(tmp_path / "data"), "--sources", "images_foo")


def test_download_root_is_a_file(tmp_path, capsys):
    (tmp_path / "plain.txt").write_text("x")
    refused(capsys, tmp_path, ("--root: cannot create the folder", "plain.txt"),
            *download_args(tmp_path / "plain.txt" / "data", closed_port_url()))


# ------------------------------------------------------------------------------- --debug
def test_debug_shows_the_exception_instead(tmp_path):
    config = write_config(tmp_path / "cfg.yaml", sine_config(inner_lr=-1))
    from metacompare.cli import main

    with pytest.raises(ConfigError, match="inner_lr: must be a positive finite number"):
        main(["--debug", "run", str(config), "--results-dir", str(tmp_path / "r")])


@pytest.mark.slow  # a real child process: about 19 s on a 2-core machine
def test_traceback_only_with_debug_in_a_real_process(tmp_path):
    config = write_config(tmp_path / "cfg.yaml", sine_config(algorithm="mamll"))
    plain = cli_process("run", config, "--results-dir", tmp_path / "r")
    debug = cli_process("--debug", "run", config, "--results-dir", tmp_path / "r")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [
        f"metacompare: error: {config}: algorithm: unknown 'mamll' (did you mean 'maml'?); "
        f"choose one of {', '.join(sorted(__import__('metacompare.algorithms', fromlist=['x']).ALGORITHMS))}"]
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------ numeric options
NUMERIC_OPTIONS = {  # every numeric option of every subcommand, and its accepted range
    ("sweep", "--workers"): "1 to 256", ("evaluate", "--steps"): "0 to 100000",
    ("bench", "--steps"): "1 to 1000", ("bench", "--ways"): "1 to 100", ("bench", "--shots"): "1 to 100",
    ("bench", "--query"): "1 to 100", ("bench", "--meta-batch"): "1 to 1024", ("bench", "--repeats"): "1 to 1000",
    ("bench", "--threads"): "0 to 1024", ("download", "--timeout"): "0.001 to 86400",
}
REQUIRED = {"sweep": ["s.yaml"], "evaluate": ["run", "--lake-runs", "lake"], "bench": [], "download": ["omniglot"]}


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e12", "99999999999", "two"])
@pytest.mark.parametrize("command,option", sorted(NUMERIC_OPTIONS))
def test_numeric_options_are_range_checked(command, option, value, tmp_path, capsys):
    if value == "-1" and option == "--steps" and command == "evaluate":
        value = "-2"
    line = refused(capsys, tmp_path, (f"argument {option}",), command, *REQUIRED[command], option, value)
    expected = "expected a whole number" if "." not in NUMERIC_OPTIONS[command, option] else "expected a number"
    assert f"must be from {NUMERIC_OPTIONS[command, option]}" in line or expected in line


@pytest.mark.parametrize("field,value,needle", [
    ("filters", 10**6, "filters: at most 4,096 (more would exhaust memory)"),
    ("test_episodes", 10**7, "test_episodes: at most 100,000"),
    ("shots", 2000, "shots: at most 1,000"),
    ("meta_batch_size", 9000, "ways * (shots + query) * meta_batch_size = 1,800,000 examples"),
    ("iterations", 10**12, "iterations: at most 1,000,000,000"),
    ("inner_lr", ".inf", "inner_lr: must be a positive finite number"),
    ("outer_lr", ".nan", "outer_lr: must be a positive finite number"),
    ("ways", ".inf", "ways: expected a whole number"),
    ("omniglot.image_size", 100000, "omniglot.image_size: must be 8 to 512"),
    ("test_inner_steps", "[1, 10000000]", "test_inner_steps: each at most 100,000"),
])
def test_config_numbers_have_upper_bounds(field, value, needle, tmp_path, capsys):
    config = write_config(tmp_path / "cfg.yaml", sine_config(shots=100, query=100))
    refused(capsys, tmp_path, (needle,), *run_args(config, tmp_path, "--set", f"{field}={value}"))


def test_a_setting_the_algorithm_ignores_is_one_line(tmp_path, capsys):
    config = write_config(tmp_path / "cfg.yaml", sine_config(algorithm="fomaml", inner_optimizer="adam",
                                                             inner_state="carry"))
    refused(capsys, tmp_path, ("inner_state: fomaml ignores it", "only reptile reads it", "per_algorithm"),
            *run_args(config, tmp_path))


def test_download_to_a_full_disk_is_one_line_and_leaves_no_part_file(tmp_path, capsys, monkeypatch):
    import builtins

    real_open = builtins.open

    def full(path, mode="r", *args, **kwargs):
        if str(path).endswith(".part") and "w" in mode:
            raise OSError(28, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "images_background.zip").write_bytes(b"zip")
    with file_server(tmp_path / "srv") as url:
        monkeypatch.setattr(builtins, "open", full)
        code, _, err = cli(capsys, *download_args(tmp_path / "data", url))
    assert code == 2 and err.count("\n") == 1 and "No space left on device" in err and "rerun" in err
    assert leftovers(tmp_path) == []
