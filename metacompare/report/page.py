"""The report as pages: ``report.md`` (Markdown) and ``report.html`` (one self-contained page)."""

from __future__ import annotations

import html
import re

from metacompare.report.experiment import Experiment, Section

CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.45}"
       "table{border-collapse:collapse;font-size:0.85em}td,th{border:1px solid #bbb;padding:3px 7px}"
       "th{background:#eee}img{max-width:100%}figcaption,.caption{font-style:italic;color:#444}")


def markdown_table(rows: list[list[str]]) -> str:
    escape = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(escape, rows[0])) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(map(escape, r)) + " |" for r in rows[1:]]
    return "\n".join(lines)


def markdown(exp: Experiment, intro: str, sections: list[Section]) -> str:
    parts = [f"# Report: {exp.name}", "", intro, ""]
    for s in sections:
        parts += [f"## {s.title}", "", s.sentence, ""]
        if s.figure:
            parts += [f"![{s.title}]({s.figure}.png)", "", f"*{s.caption}* ([SVG]({s.figure}.svg))", ""]
        if s.table:
            parts += [f"*{s.caption}*", "", markdown_table(s.table), ""]
    return "\n".join(parts)


def _e(text: str) -> str:
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(str(text)))


def _html_section(s: Section) -> list[str]:
    body = [f"<h2>{_e(s.title)}</h2>", f"<p>{_e(s.sentence)}</p>"]
    if s.figure:
        body += [f'<figure><img src="{_e(s.figure)}.png" alt="{_e(s.title)}">'
                 f"<figcaption>{_e(s.caption)}</figcaption></figure>"]
    if s.table:
        head = "".join(f"<th>{_e(c)}</th>" for c in s.table[0])
        cells = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in s.table[1:])
        body += [f"<p class='caption'>{_e(s.caption)}</p><table><tr>{head}</tr>{cells}</table>"]
    return body


def html_page(exp: Experiment, intro: str, sections: list[Section]) -> str:
    body = [f"<h1>Report: {_e(exp.name)}</h1>", f"<p>{_e(intro)}</p>"]
    for s in sections:
        body += _html_section(s)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Report: {_e(exp.name)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")
