"""The one reader module: every way a file read back can be broken gives one FileProblem naming it.

Hand-made cases for each reader, then property-based fuzzing (hypothesis): arbitrary bytes or
arbitrary YAML values as a config, and arbitrary text as a runs.csv, must either load or raise a
one-line UserError; no other exception, ever.
"""

from __future__ import annotations

import json
import pickle

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metacompare import files

from metacompare.storage import results
from metacompare.config.loading import expand, load_experiment
from metacompare.errors import UserError

FIX = "do the fix"


def problem(call, *needles: str) -> str:
    with pytest.raises(files.FileProblem) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# -------------------------------------------------------------------------------------- text
@pytest.mark.parametrize("content,needle", [
    (None, "is a folder, not a file"),
    (b"\xff\xfeabc", "is not UTF-8 text (bad byte at offset 0)"),
    (b"a: 1\x00\n", "holds NUL bytes"),
])
def test_text_that_cannot_be_text(tmp_path, content, needle):
    path = tmp_path / "f.yaml"
    path.mkdir() if content is None else path.write_bytes(content)
    problem(lambda: files.read_text(path, FIX), str(path), needle, FIX)
    problem(lambda: files.read_text(tmp_path / "absent", FIX), "absent: does not exist")


# ------------------------------------------------------------------------------- YAML and JSON
def read_yaml(path):
    return files.read_yaml(path, FIX)


def read_summary_json(path):
    return files.read_json(path, FIX, required={"run_id": str})


@pytest.mark.parametrize("reader,text,needle", [
    (read_yaml, "", "is empty"),
    (read_yaml, "# only a comment\n", "is empty"),
    (read_yaml, "- a\n- b\n", "got a list"),
    (read_yaml, "3\n", "got a int"),
    (read_yaml, "a: 1\nb: 2\na: 3\n", "line 3, column 1: field 'a' is set twice"),
    (read_yaml, "grid:\n  seed: [1]\n  seed: [2]\n", "field 'seed' is set twice"),  # nested mappings too
    (read_yaml, "1: x\n", "key 1 is not a name"),
    (read_yaml, "a: {[1, 2]: x}\n", "YAML syntax error"),
    (read_yaml, "a: [1, 2\n", "YAML syntax error at line 2"),
    (read_summary_json, "", "is empty"),
    (read_summary_json, '{"run_id": "a", "sta', "is not valid JSON (line 1, column"),
    (read_summary_json, "[1, 2]", "expected a JSON object, got a list"),
    (read_summary_json, '{"run_id": "a", "run_id": "b"}', "the key 'run_id' appears twice"),
    (read_summary_json, '{"status": "finished"}', "lacks the key 'run_id'"),
    (read_summary_json, '{"run_id": 3}', "'run_id' should be str, got 3"),
    (read_summary_json, '{"run_id": true}', "'run_id' should be str, got True"),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_yaml_and_json_refusals(tmp_path, reader, text, needle):
    path = tmp_path / "the_file"
    path.write_text(text)
    problem(lambda: reader(path), "the_file", needle)


def test_yaml_reader_keeps_good_files():
    assert files.parse_yaml("a: 1\nb: {c: [1, 2]}\n", "x", FIX) == {"a": 1, "b": {"c": [1, 2]}}


def test_summary_needs_a_known_status_and_its_config(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"run_id": "x", "status": "done", "config": {}}))
    with pytest.raises(files.FileProblem, match="status 'done' is not one of finished, diverged, failed"):
        results.read_summary(path)
    path.write_text(json.dumps({"run_id": "x", "status": "finished", "config": [], "test_loss_mean": float("nan")}))
    with pytest.raises(files.FileProblem, match="'config' should be dict"):
        results.read_summary(path)


# --------------------------------------------------------------------------------------- CSV
def write_runs(tmp_path, text: str):
    (tmp_path / "runs.csv").write_text(text)
    return lambda: results.read_runs(tmp_path)


@pytest.mark.parametrize("text,needle", [
    ("", "is empty (not even a header line)"),
    ("run_id,status\nmaml-1,finished,7\n", "line 2 has 3 values but the header has 2 columns"),
    ("run_id,status,seed\nmaml-1,finished\n", "line 2 has 2 values"),
    ("run_id,seed\nmaml-1,3\n", "lacks the column(s) status"),
    ("run_id,status,colour\nmaml-1,finished,red\n", "has unknown column(s) colour"),
    ("run_id,status,status\nmaml-1,finished,failed\n", "the column 'status' appears twice"),
    ("run_id,status,seed\nmaml-1,finished,three\n", "column 'seed' holds 'three', not a number"),
    ("run_id,status\nmaml-1,running\n", "line 2: run_id 'maml-1' with status 'running'"),
    ('run_id,status\n"maml-1,finished\n', "not CSV"),
])
def test_runs_table_refusals(tmp_path, text, needle):
    problem(write_runs(tmp_path, text), "runs.csv", needle, "move it aside")


def test_runs_table_reads_a_good_table_and_absent_is_empty(tmp_path):
    assert results.read_runs(tmp_path) == []
    rows = write_runs(tmp_path, "run_id,status,seed,test_loss_mean\nmaml-1,finished,3,nan\n\n")()
    assert rows == [{"run_id": "maml-1", "status": "finished", "seed": "3", "test_loss_mean": "nan"}]


# ------------------------------------------------------------------------------------- torch
class Payload:
    """Unpickling this would create a file: the classic code-execution checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_weights_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    torch.save({"config": {}, "algorithm": Payload(marker)}, evil)
    problem(lambda: files.load_torch(evil, FIX), "model.pt", "refused: it holds", "could run code")
    assert not marker.exists()
    with open(evil, "wb") as handle:  # a plain pickle, not torch's zip format
        pickle.dump({"x": Payload(marker)}, handle)
    problem(lambda: files.load_torch(evil, FIX), "model.pt")
    assert not marker.exists()


@pytest.mark.parametrize("content,needle", [
    (b"", "unreadable"), (b"\x00" * 64, "unreadable"), (None, "is a folder"),
])
def test_damaged_weights_files(tmp_path, content, needle):
    path = tmp_path / "checkpoint.pt"
    path.mkdir() if content is None else path.write_bytes(content)
    problem(lambda: files.load_torch(path, FIX), "checkpoint.pt", needle)


def test_truncated_and_foreign_weights_files(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"config": {"a": 1}, "algorithm": {"w": torch.ones(300)}}, path)
    assert files.load_torch(path, FIX, required=("config",))["config"] == {"a": 1}
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    problem(lambda: files.load_torch(path, FIX), "unreadable")
    torch.save([1, 2], path)
    problem(lambda: files.load_torch(path, FIX), "holds a list")
    torch.save({"weights": 1}, path)
    problem(lambda: files.load_torch(path, FIX, required=("config", "algorithm")), "lacks config, algorithm")


# --------------------------------------------------------------------------- property-based
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_as_a_config_load_or_give_one_line(tmp_path, data):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    try:
        load_experiment(path)
    except UserError as err:
        assert "\n" not in str(err) and str(path) in str(err)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=8))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=6), inner, max_size=3), max_leaves=6)
FIELDS = st.sampled_from(["algorithm", "dataset", "ways", "shots", "inner_lr", "outer_lr", "iterations",
                          "test_inner_steps", "omniglot", "per_algorithm", "filters", "inner_optimizer",
                          "precision", "seed", "num_tasks", "meta_batch_size", "backend", "bogus"])


@FUZZ
@given(st.dictionaries(FIELDS, VALUES, max_size=5))
def test_any_yaml_values_in_a_config_validate_or_give_one_config_error(raw):
    try:
        configs = expand(raw)
    except UserError as err:
        assert "\n" not in str(err)
        return
    for cfg in configs:  # what passes is in range
        assert 0 < cfg.inner_lr < float("inf") and 0 < cfg.ways <= 1000 and cfg.filters <= 4096


CSV_TEXT = st.lists(st.lists(st.sampled_from(["run_id", "status", "seed", "finished", "x", "1.5", "", '"',
                                              "a,b", "\n", "nan", "failed", "é"]), max_size=5), max_size=5)


@FUZZ
@given(CSV_TEXT)
def test_any_runs_table_reads_or_gives_one_line(tmp_path, lines):
    (tmp_path / "runs.csv").write_text("\n".join(",".join(cells) for cells in lines), encoding="utf-8")
    try:
        rows = results.read_runs(tmp_path)
    except UserError as err:
        assert "runs.csv" in str(err) and "move it aside" in str(err)
        return
    assert all(r["status"] in results.STATUSES and r["run_id"] for r in rows)


@FUZZ
@given(st.text(max_size=200))
def test_any_text_as_a_summary_reads_or_gives_one_line(tmp_path, text):
    path = tmp_path / "summary.json"
    path.write_text(text, encoding="utf-8")
    try:
        summary = results.read_summary(path)
    except UserError as err:
        assert "summary.json" in str(err) and "\n" not in str(err).split("; ")[-1]
        return
    assert isinstance(summary["config"], dict)


def test_yaml_dump_of_a_config_reads_back():
    """The strict reader accepts what metacompare itself writes (a run's config.yaml)."""
    from metacompare.config.loading import RunConfig, dump

    assert files.parse_yaml(dump(RunConfig()), "config.yaml", FIX) == yaml.safe_load(dump(RunConfig()))
