"""The CLI explains itself: help with defaults everywhere, `list` from the registries, progress bars,
and the `metacompare` console script."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from metacompare import cli

from metacompare.storage import provenance
from metacompare.algorithms import ALGORITHMS
from metacompare.engines import ENGINES
from metacompare.algorithms.backends import BACKENDS
from metacompare.config.loading import CHOICES
from metacompare.storage.tracking import TRACKERS

ROOT = Path(__file__).resolve().parents[1]


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The options with a value: not --help and --version (which print and exit), nor the subcommands."""
    return [a for a in parser._actions if a.default is not argparse.SUPPRESS
            and not isinstance(a, argparse._SubParsersAction)]


@pytest.mark.parametrize("name", sorted(subcommands()) + ["(top level)"])
def test_every_option_of_every_subcommand_has_help_and_states_its_default(name):
    parser = cli.build_parser() if name == "(top level)" else subcommands()[name]
    formatter = parser._get_formatter()
    assert isinstance(formatter, cli.HelpFormatter) and parser.description
    for action in options(parser):
        assert action.help and action.help.strip(), f"{name} {action.dest}: no help"
        if action.option_strings:  # positionals are required: they have no default to state
            shown = formatter._get_help_string(action) % {"default": action.default}
            assert "default" in shown, f"{name} {action.option_strings[0]}: help does not state its default"
    parser.format_help()  # every help string renders (a stray % would raise here)


def test_every_subcommand_has_a_help_line_in_the_top_level_help():
    parser = cli.build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helped = {choice.dest: choice.help for choice in action._choices_actions}
    assert set(helped) == set(subcommands()) and all(helped.values())
    out = subprocess.run([sys.executable, "-m", "metacompare", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    for name, text in helped.items():
        assert name in out.stdout and text.split()[0] in out.stdout


def test_shared_flags_are_declared_once_and_no_parser_takes_a_prefix():
    """--set, --no-progress, --allow-dirty... come from one parent parser each: every command holds the
    very same option object, so its help and checks cannot drift apart."""
    parsers = subcommands()
    for flag, holders in {"--set": {"inspect", "run", "compare", "tune", "sweep", "evaluate"},
                          "--no-progress": {"run", "compare", "tune", "sweep", "report", "bench"},
                          "--allow-dirty": {"run", "compare", "tune", "sweep", "bench"},
                          "--results-dir": {"run", "compare", "tune", "sweep"},
                          "--workers": {"compare", "tune", "sweep"}}.items():
        found = {name: action for name, parser in parsers.items() for action in parser._actions
                 if flag in action.option_strings}
        assert set(found) == holders, flag
        assert len({id(action) for action in found.values()}) == 1, f"{flag} is declared more than once"
    assert all(not p.allow_abbrev for p in [cli.build_parser(), *parsers.values()])


def test_the_commands_come_in_the_order_a_user_meets_them():
    assert list(subcommands()) == ["inspect", "run", "compare", "tune", "sweep", "report", "evaluate", "bench",
                                   "list", "download"]


def test_version_names_the_package_version_and_the_commit(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out == f"metacompare {importlib.metadata.version('metacompare')} (commit {provenance.tree_state().label()})"


def test_the_top_level_help_names_every_registered_algorithm():
    text = " ".join(cli.build_parser().format_help().split())
    listed = text.split("algorithms: ")[1].split(".")[0].split(", ")
    assert listed == sorted(ALGORITHMS)


def test_defaults_are_appended_once_and_only_where_missing():
    bench = subcommands()["bench"].format_help()
    assert "tasks per meta-iteration (default: 32)" in bench
    run = " ".join(subcommands()["run"].format_help().split())
    assert "(default: the config's results_dir, results/)" in run and "(default: None)" not in run


def test_list_prints_every_registered_name_with_a_description(capsys):
    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    entries = {}
    for line in lines:
        if line.startswith("  "):
            name, _, text = line.strip().partition("  ")
            entries[name] = text.strip()
    expected = [*ALGORITHMS, *BACKENDS, *CHOICES["dataset"], *CHOICES["model"], *ENGINES, *TRACKERS]
    assert not [name for name in expected if name not in entries]
    assert all(entries.values())
    from_code = [*ALGORITHMS, *BACKENDS, *ENGINES, *TRACKERS, "mlp", "conv4"]  # docstrings and registries
    assert not [name for name in from_code if entries[name] == "(no description)"]
    maml = ALGORITHMS["maml"]
    doc = maml.__doc__ or sys.modules[maml.__module__].__doc__  # the plug-in's own words, first paragraph
    assert entries["maml"].startswith(" ".join(doc.split("\n\n")[0].split())[:40].replace("``", "`"))
    assert "backends: metacompare, learn2learn]" in entries["reptile"]
    assert "metacompare maml [bf16]" in entries
    headers = [line for line in lines if not line.startswith("  ")]
    assert [h.split(" (")[0] for h in headers] == ["algorithms", "backends", "datasets", "models", "engines",
                                                   "trackers", "bench implementations"]


def test_a_summary_is_the_first_paragraph_on_one_line_roles_plain_and_cut_at_the_width():
    from metacompare.workflows.catalogue import LIST_WIDTH, summary_of

    def short():
        """Uses :meth:`adapt` and ``x``.

        Second paragraph, not shown."""

    def long():
        pass

    long.__doc__ = "word " * 100
    assert summary_of(short) == "Uses `adapt` and `x`"
    cut = summary_of(long)
    assert len(cut) == LIST_WIDTH and cut == ("word " * 30)[:LIST_WIDTH - 3].rstrip() + "..."


def test_the_console_script_entry_point_is_the_cli():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert declared == {"metacompare": "metacompare.cli:main"}
    (entry,) = importlib.metadata.entry_points(group="console_scripts", name="metacompare")
    assert entry.value == "metacompare.cli:main" and entry.load() is cli.main
    with pytest.raises(SystemExit) as done:
        entry.load()(["--help"])
    assert done.value.code == 0
    script = Path(sys.executable).with_name("metacompare")
    if script.is_file():  # the installed script itself, as a user runs it
        out = subprocess.run([str(script), "list"], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0 and "reptile" in out.stdout


def test_report_shows_a_progress_bar_over_experiments(tmp_path, capsys):
    import shutil

    smallest = min((ROOT / "results").glob("sine_*/runs.csv"), key=lambda p: len(p.read_text())).parent
    for name in ("a", "b"):  # two recorded experiments: the bar counts them
        shutil.copytree(smallest, tmp_path / name, ignore=shutil.ignore_patterns("report", "*.pt", "events.*"))
    assert cli.main(["report", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "report: 100%" in captured.err and "2/2" in captured.err
    assert captured.out.count("report: ") == 2
    assert cli.main(["report", str(tmp_path / "a"), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_bench_shows_a_progress_bar_over_measured_steps(tmp_path, capsys):
    names = ["naive reptile loop", "metacompare reptile"]
    assert cli.main(["bench", "--quick", "--models", "conv4_strided", "--steps", "1", "--ways", "2", "--query", "1",
                     "--meta-batch", "2", "--repeats", "1", "--implementations", *names, "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert "bench: 100%" in err and "8/8" in err  # 2 implementations x (1 memory pass + 2 warm-ups + 1 repeat)
    recorded = json.loads((tmp_path / "b" / "provenance.json").read_text())  # which code made bench.csv
    assert recorded["environment"] == "environment.txt" and (tmp_path / "b" / "environment.txt").is_file()
    assert recorded["git_commit"] == provenance.tree_state().label()
