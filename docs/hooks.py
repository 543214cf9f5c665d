"""MkDocs hooks (``hooks:`` in mkdocs.yml): generated pages, results files, and the drift check.

- ``reference/config.md`` and ``reference/cli.md`` are generated from the code at every build
  (:mod:`doctools.reference`); nothing generated is committed. A config field without a meaning is a
  warning, which ``mkdocs build --strict`` turns into a failure.
- The committed figures and ``report.html`` pages under ``results/`` are added to the site at the same
  paths, so pages link to them as ``results/...`` (they live outside ``docs/``).
- Every results table in a page (``<!-- table: ... -->`` blocks, :mod:`doctools.doctables`) must equal
  what its results file renders to; a stale one is a warning, so the strict build fails on it.
- Every figure in a page becomes a link to the image itself (``class="mc-zoom"``): a click opens it full
  size (``assets/zoom.js`` shows it over the page; without JavaScript the browser opens the file).
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's metacompare, not whichever one the venv installed

from mkdocs.structure.files import File  # noqa: E402

from doctools import doctables, reference  # noqa: E402

log = logging.getLogger("mkdocs.hooks.metacompare")
ASSETS = ("results/*/report/*.png", "results/*/report/report.html", "results/*/compare/*.png",
          "results/bench*/*.png", "results/bench*/*/*.png")


def on_files(files, config):
    missing = reference.undocumented()
    if missing:
        log.warning("config fields without a meaning (add them to doctools/field_docs.py, or a "
                    "metadata={'doc': ...} or comment in runconfig.py): %s", ", ".join(missing))
    files.append(File.generated(config, "reference/config.md", content=reference.config_reference()))
    files.append(File.generated(config, "reference/cli.md", content=reference.cli_reference()))
    for pattern in ASSETS:
        for path in sorted(ROOT.glob(pattern)):
            files.append(File.generated(config, path.relative_to(ROOT).as_posix(), abs_src_path=str(path)))
    return files


def on_page_markdown(markdown, page, config, files):
    source = page.file.abs_src_path
    if source and Path(source).is_file():
        for problem in doctables.check(ROOT, [Path(source)]):
            log.warning(problem)
    return markdown


FIGURE = re.compile(r'<img\b[^>]*\bsrc="(?P<src>[^"]+\.(?:png|svg|jpe?g|gif))"[^>]*>')


def _inside_link(html: str, at: int) -> bool:
    return html.rfind("<a ", 0, at) > html.rfind("</a>", 0, at)


def on_page_content(html, page, config, files):
    """Wrap each figure that no link holds yet in a link to the image (click to zoom)."""
    def wrap(match):
        if _inside_link(html, match.start()):
            return match[0]
        return f'<a class="mc-zoom" href="{match["src"]}">{match[0]}</a>'
    return FIGURE.sub(wrap, html)
