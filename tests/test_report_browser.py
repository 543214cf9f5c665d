"""report.html in a real headless Chromium (Debian package `chromium`): every figure loads, no link is
broken, and a screenshot is saved (issue 14). Skipped, with the reason, where Chromium is not installed."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from metacompare.report import write_report
from tests.report_runs import add_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")]
PROBE = ("<script>window.addEventListener('load', () => document.body.setAttribute('data-images', JSON.stringify("
         "[...document.images].map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0]))));</script>")


def chromium(profile: Path, *args: str) -> str:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


def images_loaded(report_dir: Path, profile: Path) -> list[list]:
    """[src, loaded] for every <img> of report.html, as the browser saw them after the load event."""
    probe = report_dir / "_probe.html"
    probe.write_text((report_dir / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    dom = chromium(profile, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri())
    probe.unlink()
    found = re.search(r'data-images="([^"]*)"', dom)
    assert found, "the page never finished loading"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    exp = tmp_path_factory.mktemp("browser") / "omni"
    for seed, accuracy in ((0, 0.9), (1, 0.94)):
        add_run(exp, algorithm="maml", seed=seed, accuracy=accuracy, curve=[(10, 0.5), (20, 0.9)])
    add_run(exp, algorithm="maml", num_tasks=10, accuracy=0.6, curve=[(10, 0.5)])
    add_run(exp, algorithm="reptile", accuracy=0.8, curve=[(10, 0.4), (20, 0.8)])
    add_run(exp, algorithm="reptile", num_tasks=10, accuracy=0.5, curve=[(10, 0.4)])
    add_run(exp, algorithm="scratch", accuracy=0.4, curve=[(10, 0.3)])
    return write_report(exp).parent


def test_every_figure_of_report_html_loads_in_chromium(report_dir, tmp_path):
    page = (report_dir / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 4  # learning curves, task counts, baselines, cost
    seen = images_loaded(report_dir, tmp_path / "profile")
    assert [s for s, _ in seen] == sources
    assert all(ok for _, ok in seen), seen
    links = re.findall(r'(?:href|src)="([^"#]+)"', page) + re.findall(r"\]\(([^)]+)\)", (report_dir / "report.md").read_text())
    assert links and all((report_dir / link).is_file() for link in links), links


def test_the_probe_sees_a_broken_image(report_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(report_dir, broken)
    (broken / "cost.png").unlink()
    seen = dict(images_loaded(broken, tmp_path / "profile"))
    assert seen["cost.png"] is False and seen["learning_curves.png"] is True


def test_screenshot_of_report_html(report_dir, tmp_path):
    shot = tmp_path / "report.png"
    chromium(tmp_path / "profile", "--window-size=1200,3000", "--virtual-time-budget=10000",
             f"--screenshot={shot}", (report_dir / "report.html").as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    print(f"screenshot: {shot}")
