"""Processes and options: one test (or a few) per class of failure, each named after the class it guards.

Classes: a relaunch that multiplies (option prefixes, workers that launch), a ``--procs`` run checked
only in its workers or stopped with a traceback, an option and a ``--set`` that disagree, settings that
nothing reads (and refusals whose suggested fix is refused), ``bench`` finding an unusable folder late
or measuring emulated bfloat16 for minutes, and raw Python warnings on the console.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from metacompare.workflows import bench

from metacompare.engines import distributed

from metacompare.models import precision
from metacompare.algorithms import ALGORITHMS
from metacompare.cli import OPTION_FIELDS, build_parser, main
from metacompare.config.loading import ConfigError, expand
from metacompare.config.validation import OPTIONAL_FIELDS, READ_ONLY_WITH
from tests.faults import CHILD_ENV, ROOT, cli, sine_config, wait_for, write_config

# The arguments each command needs before an option can be looked at.
REQUIRED = {"run": ["c.yaml"], "compare": ["c.yaml", "--budget", "1"], "tune": ["t.yaml"], "sweep": ["s.yaml"],
            "evaluate": ["run", "--lake-runs", "d"], "report": ["r"], "download": ["omniglot"], "inspect": ["p"],
            "bench": [], "list": []}


def commands() -> dict:
    return build_parser().parse_args(["list"]).commands


# ------------------------------------------------------------- a relaunch that multiplies
@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_relaunch_class_no_command_takes_an_option_by_a_prefix(command):
    """Class: a prefix of an option (``--proc 2``) is taken as the option by argparse but not by the
    code that reads the command line back. No command of the CLI accepts any option's prefix."""
    parser = build_parser()
    options = [o for a in commands()[command]._actions for o in a.option_strings if o.startswith("--")]
    assert command == "list" or options
    for option in options:
        prefix = option[:-1]
        if prefix in options or len(prefix) < 3:
            continue
        _, extras = parser.parse_known_args([command, *REQUIRED[command], prefix, "2"])
        assert prefix in extras, f"{command} {prefix} was taken as {option}"


def test_relaunch_class_a_prefix_of_procs_is_refused_by_the_real_command(tmp_path):
    """Class: relaunch without end. ``run CONFIG --proc 2`` (which relaunched recursively) is one line, exit 2."""
    config = write_config(tmp_path / "tiny.yaml", sine_config())
    done = subprocess.run([sys.executable, "-m", "metacompare", "run", str(config), "--proc", "2", "--results-dir",
                           str(tmp_path / "r")], cwd=ROOT, env=CHILD_ENV, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unrecognized arguments: --proc 2" in done.stderr
    assert not (tmp_path / "r").exists()


def test_relaunch_class_workers_get_a_command_line_rebuilt_from_the_checked_config(tmp_path, capsys, monkeypatch):
    """Class: relaunch without end. The workers' command line comes from the parsed, checked config,
    one launch per run, with no ``--procs`` whatever the launcher's own spelling."""
    launched = []

    def launch(argv, procs):
        launched.append((argv, procs, yaml.safe_load(Path(argv[1]).read_text())))
        return 0

    monkeypatch.setattr(distributed, "launch", launch)
    config = write_config(tmp_path / "tiny.yaml", sine_config(algorithm=["fomaml", "maml"]))
    code, _, err = cli(capsys, "run", config, "--procs=2", "--results-dir", tmp_path / "r", "--set", "iterations=4",
                       "--force", "--no-progress", "--no-report")
    assert code == 0, err
    assert [(a[0], a[2:], p) for a, p, _ in launched] == [
        ("run", ["--results-dir", str(tmp_path / "r"), "--no-report", "--no-progress", "--force"],
         2)] * 2
    assert [c["algorithm"] for _, _, c in launched] == ["fomaml", "maml"]
    assert all(c["iterations"] == 4 and c["results_dir"] == str(tmp_path / "r") for _, _, c in launched)


def test_relaunch_class_a_worker_never_launches(tmp_path, capsys, monkeypatch):
    """Class: relaunch without end. Inside a multi-process group (torchrun's marker) ``--procs`` is
    refused before any process starts."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "someone-elses")
    no_processes(monkeypatch)
    config = write_config(tmp_path / "tiny.yaml", sine_config())
    code, _, err = cli(capsys, "run", config, "--procs", "2", "--results-dir", tmp_path / "r", "--no-progress")
    assert code == 2 and "already one of a multi-process run's workers" in err and err.count("\n") == 1


def processes_of(marker: str) -> dict[int, tuple[int, bool]]:
    """Live processes whose command line holds ``marker``: pid -> (parent pid, whether it is a torchrun)."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            command = (proc / "cmdline").read_bytes()
            if marker.encode() in command:
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                found[int(proc.name)] = (parent, b"--nproc-per-node" in command)
        except (OSError, IndexError, ValueError):
            pass
    return found


@pytest.mark.slow  # torch starts in four processes: 60-100 s on two shared cores
def test_relaunch_class_a_real_two_process_run_has_two_workers_and_ends(tmp_path):
    """Class: relaunch without end. A real ``run --procs 2`` starts one torchrun and exactly two workers, ends."""
    config = write_config(tmp_path / "tiny.yaml", sine_config(iterations=4, eval_interval=2))
    job = subprocess.Popen([sys.executable, "-m", "metacompare", "run", str(config), "--procs", "2", "--results-dir",
                            str(tmp_path / "r"), "--no-progress", "--no-report"], cwd=ROOT, env=CHILD_ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen: dict[int, tuple[int, bool]] = {}
    deadline = time.monotonic() + 300
    while job.poll() is None and time.monotonic() < deadline:
        seen.update(processes_of(str(tmp_path)))
        time.sleep(0.05)
    if job.poll() is None:
        job.kill()
    out, err = job.communicate(timeout=60)
    assert job.returncode == 0, err
    torchruns = [pid for pid, (_, torchrun) in seen.items() if torchrun]
    assert len(torchruns) == 1 and seen[torchruns[0]][0] == job.pid, seen  # one torchrun, the launcher's
    workers = [pid for pid, (parent, _) in seen.items() if parent == torchruns[0]]
    assert len(workers) == 2, seen  # (a worker's short-lived forks, e.g. for git, are its own children)
    summary = json.loads(next((tmp_path / "r").glob("tiny/*/summary.json")).read_text())
    assert summary["processes"] == 2 and out.count("test MSE") == 1


# ------------------------------------------------- a --procs run checked in its launcher, stopped cleanly
def intercept_torchrun(monkeypatch, replacement=None) -> None:
    """torchrun's start answered by ``replacement(command)`` (default: the test fails); git runs as usual."""
    real = subprocess.Popen

    def popen(command, *args, **kwargs):
        if "--nproc-per-node" not in command:
            return real(command, *args, **kwargs)
        return replacement(command) if replacement else pytest.fail(f"a process was started: {command}")
    monkeypatch.setattr(subprocess, "Popen", popen)


def no_processes(monkeypatch) -> None:
    intercept_torchrun(monkeypatch)


@pytest.mark.parametrize("changes, needle", [
    ({"per_algorithm": {"maml": {"meta_batch_size": 1}}}, "meta_batch_size: 1 tasks cannot be shared by 2 processes"),
    ({"inner_lr": "fast"}, "inner_lr: expected a number"),
    ({"algorithm": ["fomaml", "mamml"]}, "did you mean 'maml'"),
])
def test_launcher_validation_class_a_bad_config_is_one_line_before_any_process(tmp_path, capsys, monkeypatch,
                                                                               changes, needle):
    """Class: ``run --procs N`` checked nothing before starting workers. Every config of the command is
    checked in the launcher (the second one's refusal too), as one line, exit 2, nothing started."""
    no_processes(monkeypatch)
    config = write_config(tmp_path / "tiny.yaml", sine_config(**{"algorithm": ["fomaml", "maml"], **changes}))
    code, _, err = cli(capsys, "run", config, "--procs", "2", "--results-dir", tmp_path / "r", "--no-progress")
    assert code == 2 and err.count("\n") == 1 and needle in err and "Traceback" not in err


class FakeTorchrun:
    """A torchrun that is stopped: ``wait`` meets a Ctrl-C (``sigint``) or a SIGTERM to the launcher."""

    def __init__(self, stop: int):
        self.stop, self.sent, self.returncode = stop, [], None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def send_signal(self, signum):
        self.sent.append(signum)

    def wait(self):
        if not self.sent:
            if self.stop == signal.SIGINT:
                raise KeyboardInterrupt
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None)  # as the kernel would call it
        return 128 + self.sent[0]


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C", "SIGTERM"])
def test_launcher_validation_class_a_stopped_procs_run_ends_in_130_and_one_line(tmp_path, capsys, monkeypatch, stop):
    """Class: a stopped ``--procs`` run ended in torchrun's traceback and exit 1. The stop is passed to
    torchrun once; the launcher ends as a one-process run does: exit 130, one line."""
    fake = FakeTorchrun(stop)
    intercept_torchrun(monkeypatch, lambda command: fake)
    config = write_config(tmp_path / "tiny.yaml", sine_config())
    code, _, err = cli(capsys, "run", config, "--procs", "2", "--results-dir", tmp_path / "r", "--no-progress")
    assert code == 130 and fake.sent == [stop]
    assert err == "metacompare: interrupted; progress is checkpointed, rerun the same command to resume\n"


def test_launcher_validation_class_torchrun_ends_in_a_status_not_a_traceback(monkeypatch):
    """Class: stopped or failed ``--procs`` runs. torchrun's stop and a worker's failure are exit statuses."""
    import torch.distributed.run as torch_run
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    def stopped(argv):
        raise SignalException("stop", signal.SIGINT)

    def failed(argv):
        raise ChildFailedError("metacompare", {1: ProcessFailure(1, 11, 2, "<N/A>")})

    for main_, status in ((stopped, 130), (failed, 2), (lambda argv: None, 0)):
        monkeypatch.setattr(torch_run, "main", main_)
        assert distributed.torchrun(["--nproc-per-node", "2"]) == status


def test_launcher_validation_class_a_worker_leaves_lines_to_rank_0_and_stops_to_its_launcher(tmp_path, capsys,
                                                                                             monkeypatch):
    """Class: each error printed once per worker. Of ``--procs`` workers, rank 1 prints no error and
    none a stop line (its launcher does); a process not started by the launcher prints its own."""
    config = write_config(tmp_path / "tiny.yaml", sine_config(inner_lr="fast"))
    monkeypatch.setenv("RANK", "1")
    assert cli(capsys, "run", config, "--no-progress")[2].count("inner_lr") == 1  # torchrun by hand
    monkeypatch.setenv(distributed.LAUNCHED, "1")
    assert cli(capsys, "run", config, "--no-progress")[1:] == ("", "")
    monkeypatch.setenv("RANK", "0")
    assert cli(capsys, "run", config, "--no-progress")[2].count("inner_lr") == 1
    monkeypatch.setattr("metacompare.config.loading.load_experiment", lambda *a: (_ for _ in ()).throw(KeyboardInterrupt))
    assert cli(capsys, "run", config, "--no-progress") == (130, "", "")


@pytest.mark.slow  # a real two-process run to its first checkpoint: 60-100 s on two shared cores
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["Ctrl-C-to-the-group", "SIGTERM"])
def test_launcher_validation_class_a_real_stopped_procs_run(tmp_path, stop):
    """Class: a stopped ``--procs`` run. Real: exit 130, one line, no traceback, a checkpoint, no worker left."""
    config = write_config(tmp_path / "tiny.yaml", sine_config(iterations=10**6, eval_interval=10**6,
                                                              checkpoint_interval=10))
    job = subprocess.Popen([sys.executable, "-m", "metacompare", "run", str(config), "--procs", "2", "--results-dir",
                            str(tmp_path / "r"), "--no-progress", "--no-report"], cwd=ROOT, env=CHILD_ENV,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert wait_for(lambda: list((tmp_path / "r").glob("tiny/*/checkpoint.pt")), timeout=300)
    if stop == signal.SIGTERM:
        job.send_signal(stop)
    else:
        os.killpg(job.pid, stop)  # Ctrl-C in a terminal: the whole foreground process group
    _, err = job.communicate(timeout=120)
    assert job.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines() == ["metacompare: interrupted; progress is checkpointed, rerun the same "
                                        "command to resume"]
    assert wait_for(lambda: not processes_of(str(tmp_path)), timeout=60)


# ------------------------------------------------------------- an option and a --set that disagree
VALUES = {"data": "elsewhere", "form": "table", "label_column": "y", "text_column": "words", "ways": "3", "shots": "2",
          "query": "2", "results_dir": "out", "device": "cuda:1", "steps": "3", "budget": "10"}


def conflicts() -> list[tuple[str, str, str]]:
    """Every (command, option, field) where an option of the command sets a config field."""
    found = []
    for command, parser in commands().items():
        dests = {a.dest for a in parser._actions}
        if "set" in dests:
            found += [(command, dest, field) for dest, fields in OPTION_FIELDS.items() if dest in dests
                      for field in fields]
    return found


@pytest.mark.parametrize("command, dest, field", conflicts(), ids=lambda v: str(v))
def test_option_conflict_class_an_option_and_a_set_of_its_field_are_refused(tmp_path, capsys, monkeypatch,
                                                                            command, dest, field):
    """Class: an option and a ``--set`` of the same field, one named on the console, the other trained.
    Every such pair of every command is refused before anything runs or is written."""
    no_processes(monkeypatch)
    monkeypatch.chdir(tmp_path)  # where a --data config or results would be written
    option = "--" + dest.replace("_", "-")
    argv = [command, *REQUIRED[command], option, VALUES[dest], "--set", f"{field}=other"]
    argv = [a if a != "c.yaml" or dest != "data" else None for a in argv]  # --data replaces the config
    code, _, err = cli(capsys, *[a for a in argv if a is not None])
    assert code == 2 and err.count("\n") == 1, err
    assert f"--set {field}=other: {option} {VALUES[dest]} already decides {field}" in err
    assert not list(tmp_path.iterdir())


def test_option_conflict_class_agreeing_values_and_other_fields_pass():
    """Class: option against ``--set``. The same value twice, or another field, is no conflict."""
    from metacompare.config.loading import refuse_set_twice

    refuse_set_twice({"--ways": (("ways",), 3)}, ["ways=3", "shots=2"])
    with pytest.raises(ConfigError, match="--ways 3 already decides ways"):
        refuse_set_twice({"--ways": (("ways",), 3)}, ["ways=4"])
    with pytest.raises(ConfigError, match="already decides user_data.root"):  # a whole section covers its fields
        refuse_set_twice({"--data": (("user_data.root",), "x")}, ["user_data={root: y}"])


# ------------------------------------------------------------------------ settings nothing reads
OMNIGLOT = {"dataset": "omniglot", "model": "conv4", "ways": 5, "shots": 1, "query": 1}
SAMPLES = {"inner_state": {"inner_optimizer": "adam", "inner_state": "carry"},
           "inner_chains": {"inner_optimizer": "adam", "inner_state": "carry", "inner_chains": 2},
           "mamlpp": {"mamlpp": {"multi_step_loss": True}}, "batch_tasks": {"batch_tasks": True},
           "task_chunk": {"batch_tasks": True, "task_chunk": 2}, "vmap": {"vmap": True}}


def test_unread_option_class_declarations_match_the_code():
    """Class: accepted settings with no effect. ``task_chunk`` is declared only by algorithms that also
    declare ``batch_tasks`` (it chunks the task-batched engine); every declared field is an optional one.
    (That a declared engine runs the plug-in, and equals the looped one, is tests/test_contract.py's.)"""
    for name, cls in ALGORITHMS.items():
        assert "task_chunk" not in cls.uses or "batch_tasks" in cls.uses, name
        assert set(cls.uses) <= set(OPTIONAL_FIELDS), name
    assert set(SAMPLES) == set(OPTIONAL_FIELDS)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@pytest.mark.parametrize("field", OPTIONAL_FIELDS)
def test_unread_option_class_an_algorithm_refuses_what_it_does_not_read(name, field):
    """Class: accepted settings with no effect (some changing the run id). Over the registry: a field
    the algorithm reads is kept; one it does not is refused, naming the field."""
    raw = sine_config(algorithm=name, **SAMPLES[field])
    if name.startswith("naive_reptile") and field == "mamlpp":
        raw["inner_steps"] = 1
    unread = [f for f in OPTIONAL_FIELDS if f in SAMPLES[field] and f not in ALGORITHMS[name].uses]
    if not unread:
        cfg, default = expand(raw)[0], expand(sine_config(algorithm=name))[0]
        assert all(getattr(cfg, f) != getattr(default, f) for f in SAMPLES[field] if f in OPTIONAL_FIELDS)
    else:
        with pytest.raises(ConfigError, match=f"{unread[0]}: {re.escape(name)} ignores it"):
            expand(raw)


READ_UNDER = [
    ("task_chunk", {"algorithm": "maml", "task_chunk": 2}, {"algorithm": "maml", "task_chunk": 2, "batch_tasks": True}),
    ("inner_betas", {"inner_betas": [0.0, 0.999]}, {"inner_betas": [0.0, 0.999], "inner_optimizer": "adam"}),
    ("memory_format", {"memory_format": "channels_last"},
     {"memory_format": "channels_last", **OMNIGLOT}),
    ("filters", {"filters": 32}, {"filters": 32, **OMNIGLOT}),
]


@pytest.mark.parametrize("field, unread, read", READ_UNDER)
def test_unread_option_class_a_field_needs_the_setting_it_is_read_under(field, unread, read):
    """Class: accepted settings with no effect. Every field of READ_ONLY_WITH without its setting is refused."""
    assert {f for f, _, _ in READ_UNDER} == set(READ_ONLY_WITH)  # a field added there is tested here
    with pytest.raises(ConfigError, match=f"{field}: read only with"):
        expand(sine_config(**unread))
    assert expand(sine_config(**read))[0].to_dict()[field] == read[field]


BAD = [*({"algorithm": name, **SAMPLES[field]} for name in sorted(ALGORITHMS) for field in SAMPLES),
       {"algorithm": "maml", "task_chunk": 2}, {"inner_betas": [0.0, 0.999]}, {"memory_format": "channels_last"},
       {"filters": 32}, {"filters": 32, "model": "resnet12", **{k: v for k, v in OMNIGLOT.items() if k != "model"}},
       {"algorithm": "reptile", "inner_state": "carry"}, {"algorithm": "reptile", "inner_chains": 2},
       {"algorithm": "reptile", "inner_optimizer": "adam", "inner_state": "carry", "inner_chains": 5},
       {"batch_tasks": True, "backend": "learn2learn"}, {"algorithm": "fomaml", "mamlpp": {"first_order_fraction": 0.5}},
       {"mamlpp": {"learned_inner_lr": True}, "inner_optimizer": "adam"},
       {"mamlpp": {"multi_step_loss": True}, "compile": True}, {"mamlpp": {"multi_step_loss": True}, "backend": "higher"},
       {"resnet12": {"dropblock_rate": 0.1}}, {"resnet12": {"dropblock_rate": 0.1}, **OMNIGLOT}, {"ways": 2},
       {"inner_optimizer": "sgd", "inner_state": "carry"},
       {"backend": "learn2learn", "inner_optimizer": "adam"}, {"experiment": ""}, {"budget": {"cpu_seconds": -1}}]


def suggested_fixes(message: str) -> list[tuple[str, str]]:
    """The ``field: value`` pairs a refusal suggests after its 'set' (each an alternative fix)."""
    parts = re.split(r"[;,] (?:[^;]*? )??set ", message, maxsplit=1)
    return re.findall(r"([a-z_][a-z_0-9.]*): (\[[^\]]*\]|[^\s,;()'\"]+)", parts[1]) if len(parts) == 2 else []


def test_unread_option_class_every_suggested_fix_is_accepted():
    """Class: refusal messages whose suggested fix is itself refused. Each refusal above gets each
    ``set field: value`` it suggests, alone: the config is then accepted, or refused for another field
    (a second setting of the case), never for the suggested one and never again the same way."""
    tried = 0
    for changes in BAD:
        raw = sine_config(**changes)
        try:
            expand(raw)
            continue  # a setting the algorithm reads (BAD holds every sample for every algorithm)
        except ConfigError as refused:
            refusal = str(refused)
        for field, value in suggested_fixes(refusal):
            tried += 1
            try:
                expand(raw, [f"{field}={value}"])
            except ConfigError as err:
                again = str(err).removeprefix("config: ")
                assert not again.startswith((f"{field}:", f"{field}.")) and str(err) != refusal, \
                    f"{changes}: '{refusal}' suggests {field}: {value}, which is refused: {err}"
    assert tried >= 40


# ------------------------------------------------------------------------------------------ bench
def test_bench_class_an_unusable_output_folder_is_refused_before_the_race(tmp_path, capsys, monkeypatch):
    """Class: bench found an unusable ``--out`` only after the whole race. Checked first, one line, exit 2."""
    monkeypatch.setattr(bench, "race", lambda *a, **k: pytest.fail("raced before checking --out"))
    monkeypatch.setattr(bench, "matmul_peaks", lambda *a, **k: pytest.fail("measured before checking --out"))
    (tmp_path / "a_file").write_text("")
    code, _, err = cli(capsys, "bench", "--quick", "--no-progress", "--out", tmp_path / "a_file" / "bench")
    assert code == 2 and err.startswith("metacompare: error: --out: cannot write to") and err.count("\n") == 1


@pytest.mark.parametrize("native", [True, False], ids=["native", "emulated"])
def test_bench_class_emulated_bfloat16_is_measured_small_and_said(monkeypatch, native):
    """Class: minutes spent measuring an emulated bfloat16 matmul peak. Without native bfloat16 its
    peak is taken on 512x512 matrices (about 2 s here, not 12 minutes), and the console says so."""
    sizes = []
    monkeypatch.setattr(precision, "native_bfloat16", lambda device="cpu": native)
    monkeypatch.setattr(bench, "matmul_peak", lambda dtype, size, device="cpu": sizes.append((str(dtype), size)) or 1.0)
    peaks, note = bench.matmul_peaks(2048)
    assert sizes == [("torch.float32", 2048), ("torch.bfloat16", 2048 if native else 512)]
    assert ("no native bfloat16" in note) != native and set(peaks) == {"float32", "bfloat16"}


def test_bench_class_this_hosts_bfloat16_is_judged_by_its_cpu():
    """Class: emulated bfloat16. The judgement follows torch's CPU dispatch level (AVX2 here: emulated)."""
    import torch

    assert precision.native_bfloat16("cpu") == (torch.backends.cpu.get_cpu_capability() == "AVX512")


# ---------------------------------------------------------------------------------------- warnings
def test_warning_class_a_warning_is_one_line_once_naming_the_users_file(tmp_path, capsys):
    """Class: raw Python warnings on the console (twice, with source lines, without the file's name).
    The config is validated twice here (file, then --results-dir); its warning is printed once, on one line."""
    config = write_config(tmp_path / "bf16.yaml", sine_config(algorithm="maml", inner_steps=2, precision="bfloat16",
                                                             iterations=2, eval_interval=2, test_episodes=2))
    code, _, err = cli(capsys, "run", config, "--results-dir", tmp_path / "r", "--no-progress", "--no-report")
    assert code == 0, err
    lines = [line for line in err.splitlines() if "warning" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("metacompare: warning: precision: bfloat16 with maml")
    assert lines[0].endswith(f"({config})") and "warnings.warn" not in err


def test_warning_class_a_procs_run_prints_its_config_warning_once(tmp_path, capsys, monkeypatch):
    """Class (still short): under ``--procs`` the launcher and then the workers' writer each loaded the
    config and printed its warning, so it appeared twice. The workers inherit the lines already printed
    (here the worker command runs in this process, as torchrun would start it)."""
    from metacompare.cli import WARNED, main
    from metacompare.engines import distributed

    inherited = []

    def worker(argv, procs):
        inherited.append(os.environ.get(WARNED, ""))
        return main(argv)

    monkeypatch.setattr(distributed, "launch", worker)
    config = write_config(tmp_path / "bf16.yaml", sine_config(algorithm="maml", inner_steps=2, precision="bfloat16",
                                                             iterations=2, eval_interval=2, test_episodes=2))
    code, _, err = cli(capsys, "run", config, "--procs", "2", "--results-dir", tmp_path / "r", "--no-progress",
                       "--no-report")
    assert code == 0, err
    lines = [line for line in err.splitlines() if "warning" in line.lower()]
    assert len(lines) == 1 and "precision: bfloat16 with maml" in lines[0] and "bfloat16 with maml" in inherited[0]
    assert WARNED not in os.environ  # the next command in this process warns again


def test_budget_class_a_budget_beyond_three_years_is_a_typo(capsys):
    """Class: ``--budget cpu:1e30`` was accepted and announced an estimate of 1.4e27 hours."""
    code, _, err = cli(capsys, "compare", "configs/sine.yaml", "--budget", "cpu:1e30", "--no-tune")
    assert code == 2 and "--budget cpu:1e30: at most 1e+08 CPU seconds (about 3 years)" in err


def test_target_class_an_accuracy_target_above_one_is_refused_before_training(tmp_path, capsys):
    """Class: ``--target 2`` on a classification comparison trained everything, then reported every
    algorithm "not within" a target of 200%. Accuracy targets are fractions; refused before any run."""
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(48, 3)), columns=["a", "b", "c"])
    frame["label"] = [f"c{i // 4}" for i in range(48)]
    frame.to_csv(data := tmp_path / "t.csv", index=False)
    code, _, err = cli(capsys, "compare", "--data", data, "--budget", "cpu:1", "--no-tune", "--seeds", "1",
                       "--target", "2", "--results-dir", tmp_path / "r")
    assert code == 2 and "--target 2: an accuracy target is a fraction from 0 to 1" in err, err
    assert not list((tmp_path / "r").rglob("summary.json"))


def test_ways_class_one_way_classification_of_own_data_is_refused(tmp_path, capsys):
    """Class: ``--ways 1`` on the user's own data ran and reported 100% for every algorithm and its
    untrained network alike; refused by run, compare and inspect before anything is trained."""
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(48, 3)), columns=["a", "b", "c"])
    frame["label"] = [f"c{i // 4}" for i in range(48)]
    frame.to_csv(data := tmp_path / "t.csv", index=False)
    for argv in (("run", "--data", data, "--ways", "1", "--results-dir", tmp_path / "r"),
                 ("compare", "--data", data, "--ways", "1", "--budget", "cpu:1", "--results-dir", tmp_path / "r"),
                 ("inspect", data, "--ways", "1")):
        code, _, err = cli(capsys, *argv)
        assert code == 2 and "--ways 1: 1-way classification has nothing to tell apart; use 2 or more" in err, err
    assert not (tmp_path / "r").exists()


def test_warning_class_a_tune_space_bound_does_not_warn_about_a_run_nobody_asked_for(tmp_path, capsys):
    """Class: compare --no-tune on a bfloat16 MAML config warned twice, the second time about
    inner_steps=5, the default tune space's upper bound, checked for validity but never run."""
    config = write_config(tmp_path / "bf16.yaml", sine_config(algorithm="maml", inner_steps=2, precision="bfloat16",
                                                             eval_interval=2, test_episodes=2))
    code, _, err = cli(capsys, "compare", config, "--budget", "work:200", "--no-tune", "--seeds", "1",
                       "--results-dir", tmp_path / "r", "--no-progress")
    lines = [line for line in err.splitlines() if "warning" in line.lower()]
    assert code == 0 and len(lines) == 1 and "inner_steps=2" in lines[0], err
