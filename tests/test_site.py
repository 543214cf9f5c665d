"""The built documentation site works opened from disk (file://), not only served: every internal link
and image of every page resolves to a file (a link to a folder opens a folder listing from disk, so it
fails here), every #fragment names an id of its page, search is there, and the API page shows no raw
Sphinx roles. The walk over the real site is slow (it builds the site unless CI's ``./dev docs`` just
did); the checker itself is tested on small pages in the default suite."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.test_report_browser import CHROMIUM, chromium

ROOT = Path(__file__).resolve().parent.parent
BUILT = ROOT / "build" / "site"


class _Page(HTMLParser):
    """The links (href, src) and the ids of one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[tuple[str, str]] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        for name in ("href", "src"):
            if attrs.get(name) is not None:
                self.links.append((tag, attrs[name]))


@cache
def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8", errors="replace"))
    return page


def broken_links(site: Path) -> list[str]:
    """Every internal link or image of every page under ``site`` that a browser opening the pages from
    disk could not follow: a missing file, a folder (from disk that is a listing, not a page) or a
    fragment that names no id of its target page. External links (http:, mailto:, data:) are not
    followed. ``404.html`` is left out: only a web server shows it (for a missing address), so its links
    are absolute, from the server's root."""
    problems = []
    for html in sorted(set(site.rglob("*.html")) - {site / "404.html"}):
        for tag, link in _parse(html).links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith("//"):
                continue
            target = (html.parent / unquote(parts.path)).resolve() if parts.path else html
            where = f"{html.relative_to(site)}: <{tag}> {link}"
            if parts.path.endswith("/") or target.is_dir():
                problems.append(f"{where}: a folder (a listing when opened from disk)")
            elif not target.is_file():
                problems.append(f"{where}: no such file")
            elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in _parse(target).ids:
                problems.append(f"{where}: no id '{parts.fragment}' in {target.name}")
    return problems


# ------------------------------------------------------------------------------ the checker, on small pages
def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_the_checker_accepts_files_and_fragments_that_exist(tmp_path):
    _write(tmp_path / "index.html", '<a href="guide/run.html#top">run</a><img src="img/a.png">'
                                    '<a href="#here" id="here">x</a><a href="https://example.org/">out</a>')
    _write(tmp_path / "guide" / "run.html", '<h1 id="top">Run</h1><a href="../index.html">home</a>')
    _write(tmp_path / "img" / "a.png", "png")
    assert broken_links(tmp_path) == []


def test_the_checker_refuses_folders_missing_files_and_unknown_fragments(tmp_path):
    _write(tmp_path / "index.html", '<a href="guide/">a folder</a><a href="guide">the same folder</a>'
                                    '<img src="img/missing.png"><a href="guide/run.html#nowhere">x</a>'
                                    '<script src="js/gone.js"></script>')
    _write(tmp_path / "guide" / "run.html", '<h1 id="top">Run</h1>')
    problems = broken_links(tmp_path)
    assert len(problems) == 5, problems
    assert sum("a folder" in p for p in problems) == 2
    assert any("img/missing.png: no such file" in p for p in problems)
    assert any("js/gone.js: no such file" in p for p in problems)
    assert any("no id 'nowhere' in run.html" in p for p in problems)


# ------------------------------------------------------------------------------ the real site
def _fresh(site: Path) -> bool:
    """True when ``site`` was built after every docs source last changed."""
    index = site / "index.html"
    if not index.is_file():
        return False
    sources = [ROOT / "mkdocs.yml", ROOT / "README.md", *(p for p in (ROOT / "docs").rglob("*") if p.is_file())]
    return index.stat().st_mtime >= max(p.stat().st_mtime for p in sources)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """CI's freshly built build/site, or a strict build of this checkout into a temporary folder."""
    if _fresh(BUILT):
        return BUILT
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must check the built site: run ./dev docs before the slow suite")
        pytest.skip("mkdocs is not installed (./dev docs installs it)")
    out = tmp_path_factory.mktemp("site")
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=600,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert build.returncode == 0, build.stderr[-3000:]
    return out


@pytest.mark.slow
def test_every_internal_link_and_image_of_the_site_resolves_from_disk(site):
    pages = list(site.rglob("*.html"))
    assert len(pages) >= 30
    assert broken_links(site) == []


@pytest.mark.slow
def test_the_site_has_plain_html_links_search_and_no_font_cdn(site):
    index = (site / "index.html").read_text()
    assert 'href="choose.html"' in index and 'href="guide/run.html"' in index
    assert (site / "search" / "search_index.js").is_file()  # the offline plugin's index, no fetch() needed
    assert '<script src="assets/iframe-worker.js">' in index  # search's Worker, from disk
    assert "fonts.googleapis.com" not in index and "unpkg.com" not in index  # nothing from a CDN


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_search_finds_pages_in_a_browser_opened_from_disk(site, tmp_path):
    """Headless Chromium opens a page by its file:// address with ?q=, as a reader's search does."""
    dom = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom",
                   (site / "guide" / "run.html").as_uri() + "?q=reptile")
    found = re.search(r"(\d+) matching documents", dom)
    assert found and int(found.group(1)) >= 10, dom[-2000:]
    results = re.findall(r'<a href="([^"]+)" class="md-search-result__link"', dom)
    assert (site / "faq.html").as_uri() + "#how-do-reptile-and-maml-differ" in results
    assert [r for r in results if not urlsplit(r).path.endswith(".html")] == []  # pages, never folders


@pytest.mark.slow
def test_the_api_page_links_its_cross_references_and_shows_no_raw_roles(site):
    api = (site / "reference" / "api.html").read_text()
    for role in (":class:`", ":mod:`", ":meth:`", ":func:`", ":attr:`", ":data:`"):
        assert role not in api
    assert 'href="#metacompare.config.runconfig.RunConfig"' in api  # :class:`~metacompare.config.runconfig.RunConfig`
    assert api.count('class="autorefs autorefs-internal"') >= 20


@pytest.mark.slow
def test_figures_open_full_size_on_a_click(site):
    page = (site / "recorded-results.html").read_text()
    assert '<a class="mc-zoom" href="results/omniglot_minimal_seeds_compare_cpu3600s/compare/learning_curves.png">' in page
    assert (site / "assets" / "zoom.js").is_file() and (site / "assets" / "metacompare.css").is_file()


ZOOM_PROBE = ("<script>window.addEventListener('load', () => { document.querySelector('a.mc-zoom img').click();"
              " const shown = document.querySelector('.mc-lightbox img');"
              " document.body.setAttribute('data-zoom', shown ? shown.getAttribute('src') : 'none'); });</script>")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_a_click_on_a_figure_shows_it_full_size_over_the_page(site, tmp_path):
    page = site / "recorded-results.html"
    probe = site / "_zoom_probe.html"
    probe.write_text(page.read_text().replace("</body>", ZOOM_PROBE + "</body>"))
    try:
        dom = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    finally:
        probe.unlink()
    assert 'data-zoom="results/omniglot_minimal_seeds_compare_cpu3600s/compare/learning_curves.png"' in dom
