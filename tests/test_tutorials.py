"""The tutorials run: every code block marked ``<!-- run -->`` in docs/tutorials/*.md is executed here,
in page order, and every block marked ``<!-- output -->`` must match what the block before it printed.

A page cannot drift from the code: change a command's output and its tutorial fails. Bash blocks may
hold ``metacompare ...`` commands (run in this process through the command line's ``main``, exit status 0
required) and ``cat FILE``; python blocks run in one namespace per page, as cells of a notebook. Shown
output is compared line by line, in order, with every number read as ``#`` (timings and scores differ from
machine to machine, the words and the layout do not); ``…`` in a shown line stands for any text.

The pages follow one another in one folder, as a reader would: the report page reads the folder the image
folder page made, the Python page reuses its finished runs.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from metacompare.algorithms import ALGORITHMS
from metacompare.cli import main

PAGES = Path(__file__).resolve().parent.parent / "docs" / "tutorials"
ORDER = ("image-folder.md", "reading-a-report.md", "python-api.md")  # each page starts where the last ended
RUN, OUTPUT = "<!-- run -->", "<!-- output -->"
NUMBER = re.compile(r"\d[\d,]*(\.\d+)?(e[+-]?\d+)?")


@dataclass
class Block:
    kind: str      # "run" or "output"
    language: str  # bash, python, text
    code: str
    line: int      # 1-based line of the opening fence


def blocks(text: str) -> list[Block]:
    """The marked fenced blocks of a page; a marker not followed by a fence is an error."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.strip() not in (RUN, OUTPUT):
            continue
        fence = i + 1
        assert fence < len(lines) and lines[fence].startswith("```"), f"line {i + 1}: {line.strip()} without a code block"
        end = next(j for j in range(fence + 1, len(lines)) if lines[j].startswith("```"))
        found.append(Block("run" if line.strip() == RUN else "output", lines[fence][3:].strip(),
                           "\n".join(lines[fence + 1:end]), fence + 1))
    return found


def commands(code: str) -> list[str]:
    """A bash block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\s*\\\n\s*", " ", code)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def run_bash(code: str, where: str) -> str:
    out = io.StringIO()
    for command in commands(code):
        words = shlex.split(command)
        if words[0] == "cat":
            out.write("".join(Path(name).read_text(encoding="utf-8") for name in words[1:]))
            continue
        assert words[0] == "metacompare", f"{where}: only metacompare and cat commands run here, not {command!r}"
        err = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code_ = main(words[1:])
        assert code_ == 0, f"{where}: `{command}` exited {code_}: {err.getvalue()[-2000:]}"
    return out.getvalue()


def run_python(code: str, namespace: dict, where: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, where, "exec"), namespace)  # noqa: S102  (the page's own code)
    return out.getvalue()


def shape(line: str) -> str:
    return " ".join(NUMBER.sub("#", line).split())  # numbers as #, any run of spaces as one


def matches(shown: str, printed: str) -> str | None:
    """None when every non-blank shown line appears among the printed lines, in order (numbers as ``#``,
    ``…`` as any text); else the first shown line that does not."""
    have = [shape(line) for line in printed.splitlines()]
    at = 0
    for line in filter(str.strip, shown.splitlines()):
        want = re.compile(".*".join(re.escape(part) for part in shape(line).split("…")))
        hit = next((i for i in range(at, len(have)) if want.fullmatch(have[i])), None)
        if hit is None:
            return line
        at = hit + 1
    return None


def run_page(name: str) -> list[tuple[Block, str]]:
    """Run a page's blocks in the current folder; returns each run block with what it printed."""
    page = PAGES / name
    namespace: dict = {"__name__": "__tutorial__"}
    ran: list[tuple[Block, str]] = []
    for block in blocks(page.read_text(encoding="utf-8")):
        where = f"{page.name}:{block.line}"
        if block.kind == "output":
            assert ran, f"{where}: an output block before any run block"
            missing = matches(block.code, ran[-1][1])
            assert missing is None, f"{where}: shown output line {missing!r} is not what the block printed:\n{ran[-1][1]}"
            continue
        assert block.language in ("bash", "python"), f"{where}: a run block must be bash or python"
        printed = run_bash(block.code, where) if block.language == "bash" else run_python(block.code, namespace, where)
        ran.append((block, printed))
    return ran


@pytest.fixture(scope="module")
def reader(tmp_path_factory):
    """One folder for the three pages, run in order on first need, as a reader goes through them."""
    folder = tmp_path_factory.mktemp("tutorials")
    done: dict[str, list] = {}
    registered = dict(ALGORITHMS)

    def read(name: str) -> list[tuple[Block, str]]:
        for page in ORDER[:ORDER.index(name) + 1]:
            if page not in done:
                with contextlib.chdir(folder):
                    done[page] = run_page(page)
        return done[name]
    yield read
    for added in set(ALGORITHMS) - set(registered):  # the Python page registers its own algorithm
        del ALGORITHMS[added]


# ------------------------------------------------------------------------------------ the checker itself
def test_marked_blocks_are_found_and_output_is_compared_by_shape():
    page = f"text\n{RUN}\n```bash\nmetacompare list \\\n  --x 1\n# note\n```\n{OUTPUT}\n```text\nA 1.5 s\n```\n```bash\nnot run\n```\n"
    found = blocks(page)
    assert [(b.kind, b.language, b.line) for b in found] == [("run", "bash", 3), ("output", "text", 9)]
    assert commands(found[0].code) == ["metacompare list --x 1"]
    assert matches("A 2 s\nlast: …!", "x\nA 17.25 s\nlast: anything!\n") is None
    assert matches("A 2 s\nB", "B\nA 1 s\n") == "B"  # out of order
    assert matches("A 2 min", "A 2 s") == "A 2 min"


def test_every_tutorial_has_run_blocks_and_is_in_the_order():
    assert sorted(p.name for p in PAGES.glob("*.md")) == sorted(ORDER)
    for name in ORDER:
        kinds = [b.kind for b in blocks((PAGES / name).read_text(encoding="utf-8"))]
        assert kinds.count("run") >= 2 and "output" in kinds, name


# ------------------------------------------------------------------------------------ the pages
@pytest.mark.slow  # 33 s: trains on an unpacked image folder; the other tutorials run by default
def test_image_folder_tutorial_runs(reader):
    ran = reader("image-folder.md")
    printed = "".join(out for _, out in ran)
    assert "**Answer: " in printed and "untrained network" in printed


def test_reading_a_report_tutorial_runs(reader):
    ran = reader("reading-a-report.md")
    assert any("Paired comparisons" in out for _, out in ran)


def test_python_api_tutorial_runs(reader):
    ran = reader("python-api.md")
    assert all(block.language == "python" for block, _ in ran)
    assert any("joint" in block.code and out.startswith("True ") for block, out in ran)  # its own algorithm trained
