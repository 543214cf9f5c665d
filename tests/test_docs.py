"""The documentation cannot drift from the code or the results: tables equal their results files, the
config reference lists every field, the CLI reference every option (no mkdocs needed)."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from doctools import doctables, reference
from metacompare.report import tables
from metacompare.cli import build_parser
from metacompare.errors import UserError
from metacompare.config.runconfig import RunConfig

ROOT = Path(__file__).resolve().parent.parent
ANSWER = "results/omniglot_minimal_machine_compare_cpu3600s/compare"


def test_every_table_in_readme_and_docs_equals_its_results_file():
    assert doctables.check(ROOT) == []
    assert len(doctables.blocks(ROOT / "README.md")) >= 1
    assert sum(len(doctables.blocks(p)) for p in doctables.doc_files(ROOT)) >= 20


@pytest.fixture
def answer_copy(tmp_path):
    """A repository in tmp_path with one compare folder and a README whose answer block is rendered."""
    source = ROOT / ANSWER
    target = tmp_path / ANSWER
    target.mkdir(parents=True)
    for name in ("algorithms.csv", "report.md", "pairwise_episodes.csv", "learning_curves.png"):
        shutil.copy(source / name, target / name)
    shutil.copy(source.parent / "runs.csv", target.parent / "runs.csv")
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n<!-- table: {ANSWER}/algorithms.csv answer=yes figure=learning_curves.png -->\n"
                      f"<!-- end -->\n\ntext\n\n<!-- table: {ANSWER}/pairwise_episodes.csv -->\n<!-- end -->\n")
    assert doctables.write(tmp_path, [readme]) == [readme]
    assert doctables.check(tmp_path, [readme]) == []
    return tmp_path, readme


def test_an_edited_results_file_is_reported_as_drift(answer_copy):
    root, readme = answer_copy
    text = readme.read_text()
    assert "| **maml** | **96.06% ± 0.63** | 1,000 episodes, 1 seed | 45.02% | 8,474 | 3,600 |" in text
    csv = root / ANSWER / "algorithms.csv"
    csv.write_text(csv.read_text().replace("8474.0", "8475.0"))  # maml's iterations
    problems = doctables.check(root, [readme])
    assert len(problems) == 1
    assert "README.md:3" in problems[0] and f"{ANSWER}/algorithms.csv" in problems[0]
    assert "8,474" in problems[0] and "8,475" in problems[0]
    doctables.write(root, [readme])
    assert doctables.check(root, [readme]) == []
    assert "| 8,475 |" in readme.read_text() and "text\n" in readme.read_text()  # prose outside kept


def test_a_hand_edited_number_in_the_page_is_reported(answer_copy):
    root, readme = answer_copy
    readme.write_text(readme.read_text().replace("-0.96 ± 0.55", "-0.97 ± 0.55"))
    problems = doctables.check(root, [readme])
    assert len(problems) == 1 and "pairwise_episodes.csv" in problems[0] and "-0.97" in problems[0]


def test_a_changed_episode_interval_in_runs_csv_is_drift_too(answer_copy):
    """One seed: the interval shown is over the test episodes, read from runs.csv."""
    root, readme = answer_copy
    runs = root / ANSWER / ".." / "runs.csv"
    runs.write_text(runs.read_text().replace("0.006463777820499099", "0.007463777820499099"))  # fomaml
    (problem,) = doctables.check(root, [readme])
    assert "95.10% ± 0.65" in problem and "95.10% ± 0.75" in problem


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    head = "\n".join(lines[:40])
    assert "./dev run configs/sine.yaml" in head and "./dev test" in head
    answer = [b for b in doctables.blocks(ROOT / "README.md") if "compare/algorithms.csv" in b.spec]
    assert len(answer) == 1  # the lead swaps the recorded answer by editing this one marker line


def test_formatting_rules():
    assert doctables.fmt(0.96060000216, "%.2f") == "96.06%"
    assert doctables.fmt(0.0096, "~.2f") == "0.96"
    assert doctables.fmt(float("nan")) == "n/a"
    assert doctables.fmt(8474.0) == "8,474"
    assert doctables.fmt(4.5e12, ".3f") == "4.50e+12"


def test_pivot_marks_diverged_cells_and_orders_unlimited_last(tmp_path):
    (tmp_path / "t.csv").write_text("algorithm,num_tasks,test_loss_mean,diverged\n"
                                    "maml,-1,0.5,0\nmaml,10,nan,1\nmaml,100,0.25,0\n")
    text = doctables.render("t.csv columns=test_loss_mean:.2f pivot=algorithm,num_tasks", tmp_path, tmp_path / "p.md")
    assert "| algorithm \\ num_tasks | 10 | 100 | unlimited |" in text
    assert "| maml | diverged | 0.25 | 0.50 |" in text


def test_bad_markers_are_one_line_errors(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    page = tmp_path / "p.md"
    with pytest.raises(UserError, match="no column c"):
        doctables.render("t.csv columns=a,c", tmp_path, page)
    with pytest.raises(UserError, match="does not exist"):
        doctables.render("missing.csv columns=a", tmp_path, page)
    with pytest.raises(UserError, match="not key=value"):
        doctables.render("t.csv columns", tmp_path, page)
    page.write_text("<!-- table: t.csv columns=a -->\nno end\n")
    with pytest.raises(UserError, match="without a following"):
        doctables.blocks(page)


def test_figures_link_from_docs_pages_through_the_mounted_results(tmp_path):
    (tmp_path / "docs" / "guide").mkdir(parents=True)
    assert tables._link(tmp_path, "results/x/a.png", tmp_path / "README.md") == "results/x/a.png"
    assert tables._link(tmp_path, "results/x/a.png", tmp_path / "docs" / "p.md") == "results/x/a.png"
    assert tables._link(tmp_path, "results/x/a.png", tmp_path / "docs" / "guide" / "p.md") == "../results/x/a.png"


def _dotted_fields(cls: type, prefix: str = "") -> list[str]:
    """Every field of cls and of the dataclasses it holds, dotted, independently of doctools.reference."""
    names, hints = [], typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        names.append(prefix + f.name)
        inner = [a for a in (hints[f.name], *typing.get_args(hints[f.name])) if dataclasses.is_dataclass(a)]
        if inner:
            names += _dotted_fields(inner[0], f"{prefix}{f.name}.")
    return names


def test_config_reference_lists_every_field_with_type_default_and_meaning():
    text = reference.config_reference()
    names = _dotted_fields(RunConfig)
    assert len(names) > 60 and "omniglot.split" in names and "common_evaluation.lr" in names
    lines = {line.split(" | ")[0].strip("| [`]").split("`]")[0]: line for line in text.splitlines()
             if line.startswith("| `") or line.startswith("| [`")}
    assert sorted(lines) == sorted(names)
    assert reference.undocumented() == []
    assert "| `inner_lr` | `float` | `0.01` | Step size of the task adaptation" in text
    assert "| `budget.cpu_seconds` | `float | None` | `null` |" in text
    assert "| `omniglot.sources` | `tuple[str, ...]` | `[\"images_background\", \"images_evaluation\"]` |" in text


def test_field_docs_name_only_fields_that_exist():
    """A renamed or removed field must not leave its meaning behind."""
    from doctools.field_docs import FIELD_DOCS

    assert sorted(set(FIELD_DOCS) - set(_dotted_fields(RunConfig))) == []


@dataclass(frozen=True)
class _Section:
    depth: int = 3  # how deep it goes


@dataclass(frozen=True)
class _Probe:
    zz_commented: int = 1  # a trailing comment is a meaning
    # a comment right above
    # over two lines
    zz_above: str = "x"
    zz_metadata: float = field(default=0.5, metadata={"doc": "from metadata"})
    zz_bare: bool = False
    zz_section: _Section = field(default_factory=_Section)


def test_a_new_field_gets_its_meaning_from_its_comment_or_fails():
    rows = {r.name: r for r in reference.rows(_Probe)}
    assert rows["zz_commented"].doc == "a trailing comment is a meaning"
    assert rows["zz_above"].doc == "a comment right above over two lines"
    assert rows["zz_metadata"].doc == "from metadata"
    assert rows["zz_section.depth"].doc == "how deep it goes" and rows["zz_section"].default == "(section)"
    assert reference.undocumented(_Probe) == ["zz_bare", "zz_section"]


def test_cli_reference_lists_every_command_and_option():
    text = reference.cli_reference()
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert {"run", "compare", "sweep", "bench", "report", "tune", "evaluate"} <= set(commands)
    for name, sub in commands.items():
        section = text.split(f"## `{name}`\n", 1)[1].split("\n## ", 1)[0]
        for action in sub._actions:
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}`" in section, (name, option)
    assert "| `--budget` `SECONDS|cpu:SECONDS|work:N` | required |" in text
    assert "```\nmetacompare list [options]\n```" in text and "```\nmetacompare compare CONFIG [options]\n```" in text


def test_mkdocs_nav_names_existing_pages():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = []

    def walk(node):
        if isinstance(node, str):
            pages.append(node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(config["nav"])
    generated = {"reference/config.md", "reference/cli.md"}
    assert generated <= set(pages)
    assert [p for p in pages if p not in generated and not (ROOT / "docs" / p).is_file()] == []
    assert config["strict"] is True and "docs/hooks.py" in config["hooks"]


def test_readme_links_point_at_files_of_the_repository():
    """The strict docs build checks the pages' links; the README is outside docs/, so check it here."""
    import re

    text = (ROOT / "README.md").read_text()
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)]+)\)", text) if "://" not in t]
    assert len(targets) >= 15
    assert [t for t in targets if not (ROOT / t).exists()] == []


def test_check_and_write_from_the_command_line(answer_copy, capsys):
    root, readme = answer_copy
    assert doctables.main(["--check", "--root", str(root)]) == 0
    csv = root / ANSWER / "algorithms.csv"
    csv.write_text(csv.read_text().replace("0.9606000021696091", "0.9706000021696091"))
    assert doctables.main(["--check", "--root", str(root)]) == 1
    assert "97.06%" in capsys.readouterr().err
    assert doctables.main(["--write", "--root", str(root)]) == 0
    assert doctables.main(["--check", "--root", str(root)]) == 0
    assert "**97.06% ± 0.63**" in readme.read_text()


# Words from inside the project that a reader of the docs cannot know, and paths of the machines the
# project was built on. Every page of the site and the README is for users (the developer pages,
# architecture and contributing, are read by users extending metacompare too), so none is exempt;
# history.md included, since it is where a reader learns why a recorded number changed.
INTERNAL = {
    r"\bseed's\b": "name the source by what it is: 'the Reptile tutorial article', 'its sample MLP'",
    r"\bseed document": "name the source by what it is: 'the Reptile tutorial article'",
    r"\bsource document": "name the source by what it is: 'the Reptile tutorial article'",
    r"\bthe outline\b|\boutline's\b": "say what the question is, not where the project found it",
    r"\bsessions?\b": "say what happened on which machine, not in which working session",
    r"\blent to\b": "name the machine, not how it was had",
    r"/tmp/": "a temporary folder of one machine: use a path relative to the project, or DIR",
    r"\.\./shared": "a folder beside this checkout on one machine: name the data and how to get it",
    r"/work/": "a path of one machine: use a path relative to the project",
    r"\bissue #?\d+": "the project's issue numbers mean nothing to a reader: name the thing itself",
}


def test_user_docs_hold_no_internal_words_or_machine_paths():
    import re

    pages = {str(p.relative_to(ROOT)): p.read_text() for p in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]}
    assert len(pages) >= 30
    # The references the site generates from the code are user docs too.
    pages["reference/config.md (generated)"] = reference.config_reference()
    pages["reference/cli.md (generated)"] = reference.cli_reference()
    hits = []
    for name, text in sorted(pages.items()):
        for number, line in enumerate(text.splitlines(), 1):
            for pattern, fix in INTERNAL.items():
                if re.search(pattern, line, re.IGNORECASE):
                    hits.append(f"{name}:{number}: {line.strip()[:80]!r}: {fix}")
    assert hits == []


def test_the_internal_word_check_catches_what_it_is_for():
    import re

    caught = ["the seed's MLP", "the outline's question 9.4", "another session's processes",
              "unzip -d /tmp/h22", "../shared/data/omniglot", "an H200, lent to one session", "(issue 22)"]
    fine = ["each seed's mean", "3 seeds", "seed 2 ran on a slower host", "learn2learn issues 291, 341"]
    assert all(any(re.search(p, s, re.IGNORECASE) for p in INTERNAL) for s in caught)
    assert [s for s in fine if any(re.search(p, s, re.IGNORECASE) for p in INTERNAL)] == ["each seed's mean"]


def _command(page: str, start: str) -> list[str]:
    """The arguments of the one command line of ``page`` that starts with ``start``, comment dropped."""
    import shlex

    lines = [line for line in (ROOT / page).read_text().splitlines() if line.startswith(start)]
    assert len(lines) == 1, (page, start, lines)
    return shlex.split(lines[0].split("#")[0])


def _first_run(omniglot_root: Path, tmp_path: Path, capsys):
    """Run the quick start's and the README's Omniglot download line into ``tmp_path`` (from a local copy
    of the dataset's files); return the config its run line reads."""
    from metacompare.config.loading import load_experiment
    from tests.faults import cli, file_server

    for page in ("README.md", "docs/quickstart.md"):
        download = _command(page, "./dev download omniglot")
        run = _command(page, "./dev run configs/omniglot_minimal.yaml")
        root = download[download.index("--root") + 1]
        assert f"data_root={root}" in run and "--results-dir" in run  # the clone's recorded runs stay
        sources = download[download.index("--sources") + 1:]
    cfg = load_experiment(ROOT / "configs/omniglot_minimal.yaml", [f"data_root={tmp_path / root}"])[0]
    assert sources == list(cfg.omniglot.sources)
    argv = [tmp_path / root if a == root else a for a in download[1:]]
    with file_server(omniglot_root) as url:
        code, out, err = cli(capsys, *argv, "--url", url)
    assert code == 0, err  # MD5-checked against the checksums metacompare ships
    assert sorted(p.name for p in (tmp_path / root).iterdir()) == sorted(f"{s}.zip" for s in sources)
    return cfg


def test_the_omniglot_first_run_download_fetches_what_the_config_reads(omniglot_root, tmp_path, capsys):
    """The download line fetches exactly the zips configs/omniglot_minimal.yaml reads, into the folder
    the run line points data_root at."""
    _first_run(omniglot_root, tmp_path, capsys)


@pytest.mark.slow
def test_the_omniglot_first_run_config_loads_its_splits_from_the_download(omniglot_root, tmp_path, capsys):
    from metacompare.data import omniglot_splits

    splits = omniglot_splits(_first_run(omniglot_root, tmp_path, capsys))
    assert len(splits["test"]) == 62 * 20  # 62 test characters of 20 drawings


def test_tensorboard_commands_name_the_program_the_environment_installs():
    """TensorBoard is installed into the environment (.venv/bin), not onto the PATH."""
    import re
    import sys

    commands = [line for page in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
                for line in page.read_text().splitlines() if re.search(r"\btensorboard --logdir", line)]
    assert len(commands) >= 2
    assert [c for c in commands if ".venv/bin/tensorboard --logdir" not in c] == []
    assert (Path(sys.executable).parent / "tensorboard").is_file()  # the venv running the tests installs it
