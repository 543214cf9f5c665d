"""`report` is atomic: the new report is made in a folder beside the old one and renamed into place, so a
crash or Ctrl-C part-way leaves the previous report whole (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metacompare.cli import main
from metacompare.report import write
from metacompare.report.draw import style
from tests.report_runs import add_run


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def reported(tmp_path):
    exp = tmp_path / "omni"
    add_run(exp, algorithm="maml", accuracy=0.9, curve=[(10, 0.5), (20, 0.9)])
    add_run(exp, algorithm="reptile", accuracy=0.8, curve=[(10, 0.4), (20, 0.8)])
    write.write_report(exp)
    before = snapshot(exp / "report")
    assert {"report.md", "report.html", "table.csv", "learning_curves.png", "cost.svg"} <= set(before)
    add_run(exp, algorithm="fomaml", accuracy=0.85, curve=[(10, 0.45)])  # the next report would differ
    return exp, before


def leftovers(exp: Path) -> list[str]:
    return sorted(p.name for p in exp.iterdir() if p.name.startswith(".report.") and p.is_dir())


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupt_or_crash_while_drawing_keeps_the_previous_report_whole(reported, monkeypatch, error):
    exp, before = reported
    saved = []
    real_save = style.save

    def save_then_fail(fig, out, stem, **kwargs):
        if saved:  # the second figure: half a PNG, then the interrupt
            (Path(out) / f"{stem}.png").write_bytes(b"\x89PNG\r\n")
            raise error("stopped mid-way")
        saved.append(stem)
        return real_save(fig, out, stem, **kwargs)

    monkeypatch.setattr(style, "save", save_then_fail)
    with pytest.raises(error):
        write.write_report(exp)
    assert saved == ["learning_curves"]
    assert snapshot(exp / "report") == before  # every old file still there, byte for byte
    assert leftovers(exp) == []                # the half-made report is cleaned up


def test_cli_says_the_previous_report_is_kept_on_ctrl_c(reported, monkeypatch, capsys):
    exp, before = reported
    monkeypatch.setattr(write, "fill", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main(["report", str(exp)]) == 130
    assert "the previous report is left as it was" in capsys.readouterr().err
    assert snapshot(exp / "report") == before


def test_failed_rename_puts_the_old_report_back(reported, monkeypatch):
    exp, before = reported
    real_rename, calls = write.os.rename, []

    def rename(src, dst):
        calls.append(Path(src).name)
        if len(calls) == 2:  # old report moved aside; moving the new one in fails
            raise OSError("disk gone")
        real_rename(src, dst)

    monkeypatch.setattr(write.os, "rename", rename)
    with pytest.raises(OSError):
        write.write_report(exp)
    assert snapshot(exp / "report") == before and leftovers(exp) == []


def test_new_report_replaces_the_old_and_removes_a_killed_reports_folders(reported):
    exp, before = reported
    (exp / ".report.new-killed").mkdir()
    (exp / ".report.new-killed" / "cost.png").write_bytes(b"\x89PNG")
    (exp / "report" / "stale_figure.png").write_bytes(b"old")  # a figure that no longer applies
    write.write_report(exp)
    after = snapshot(exp / "report")
    assert "fomaml" in after["table.md"].decode() and "fomaml" not in before["table.md"].decode()
    assert "stale_figure.png" not in after and leftovers(exp) == []
    assert (exp / "report").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("content, says", [(b"", "is empty"), (b"\xff\xfe\x00broken", "UTF-8"),
                                           (b"a,b\n1,2\n", "lacks the column(s)")])
def test_broken_runs_csv_is_a_one_line_error(tmp_path, capsys, content, says):
    (tmp_path / "omni").mkdir()
    (tmp_path / "omni" / "runs.csv").write_bytes(content)
    assert main(["report", str(tmp_path / "omni")]) == 2
    err = capsys.readouterr().err
    assert says in err and str(tmp_path / "omni" / "runs.csv") in err and len(err.strip().splitlines()) == 1


def test_broken_run_config_does_not_stop_the_report(reported):
    exp, _ = reported
    next(exp.glob("maml-*/config.yaml")).write_text("{[broken")
    assert write.write_report(exp).is_file()


CHILD = """
import sys, time
from pathlib import Path
from metacompare.cli import main
from metacompare.report.draw import style
real_save = style.save
def save_then_wait(fig, out, stem, **kwargs):
    real_save(fig, out, stem, **kwargs)
    Path(sys.argv[2]).write_text(stem)  # one figure is written: tell the test, then wait for its Ctrl-C
    time.sleep(60)
style.save = save_then_wait
sys.exit(main(["report", sys.argv[1]]))
"""


@pytest.mark.slow
def test_real_ctrl_c_part_way_keeps_the_previous_report(reported, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    exp, before = reported
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(exp), str(ready)], env=env, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 120
    while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ready.exists(), child.stderr.read() if child.poll() is not None else "child never drew a figure"
    child.send_signal(signal.SIGINT)
    assert child.wait(timeout=60) == 130
    assert "the previous report is left as it was" in child.stderr.read()
    assert snapshot(exp / "report") == before and leftovers(exp) == []
