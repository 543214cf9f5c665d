"""The config and command-line references of the documentation, generated from the code itself.

The docs build (``docs/hooks.py``) writes ``reference/config.md`` from the dataclasses of
:mod:`metacompare.config.runconfig` and ``reference/cli.md`` from :func:`metacompare.cli.build_parser`, so a
field or option added to the code appears in the docs without anyone editing them, and a field with
no meaning (:func:`undocumented`) fails the build and ``tests/test_docs.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import json
import tokenize
import typing
from dataclasses import MISSING, dataclass
from types import UnionType
from typing import Any

from doctools.field_docs import FIELD_DOCS
from metacompare.config.runconfig import RunConfig


@dataclass(frozen=True)
class FieldRow:
    """One config field of the reference: its dotted name, type, default and meaning ('' if none)."""

    name: str
    type: str
    default: str
    doc: str
    section: type | None  # the dataclass this field holds, if it is a section


def _section_type(hint: Any) -> type | None:
    """The dataclass a field holds (``EvalProcedure | None`` -> EvalProcedure), else None."""
    if dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, UnionType):
        inner = [a for a in typing.get_args(hint) if dataclasses.is_dataclass(a)]
        return inner[0] if len(inner) == 1 else None
    return None


def source_comments(cls: type) -> dict[str, str]:
    """Field name -> its comment in the class source: the comment on the field's line, else the
    comment lines right above it (the convention runconfig.py's fields follow)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    found = {}
    lines = source.splitlines()
    for number, line in enumerate(lines, start=1):
        name = line.strip().split(":", 1)[0]
        if name not in names or ":" not in line or line.lstrip().startswith("#"):
            continue
        if number in comments and not lines[number - 1].lstrip().startswith("#"):
            found[name] = comments[number]
            continue
        above, k = [], number - 1
        while k in comments and lines[k - 1].lstrip().startswith("#"):
            above.insert(0, comments[k])
            k -= 1
        if above:
            found[name] = " ".join(above)
    return found


def field_doc(cls: type, f: dataclasses.Field, dotted: str) -> str:
    """A field's meaning: its ``metadata["doc"]``, else :data:`FIELD_DOCS`, else its
    source comment."""
    return (f.metadata.get("doc") or FIELD_DOCS.get(dotted)
            or source_comments(cls).get(f.name, "")).strip()


def _default(f: dataclasses.Field) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _shown(value: Any) -> str:
    """A default as a config file writes it (YAML/JSON flow style)."""
    if value is MISSING:
        return "(required)"
    if dataclasses.is_dataclass(value):
        return "(section)"
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)


def rows(cls: type = RunConfig, prefix: str = "") -> list[FieldRow]:
    """Every field of ``cls`` and, after each section field, the fields of its section, dotted."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        dotted = prefix + f.name
        section = _section_type(hints[f.name])
        out.append(FieldRow(dotted, str(f.type), _shown(_default(f)), field_doc(cls, f, dotted), section))
        if section is not None:
            out.extend(rows(section, dotted + "."))
    return out


def undocumented(cls: type = RunConfig) -> list[str]:
    """Dotted names of the fields with no meaning anywhere (metadata, FIELD_DOCS, a comment)."""
    return [row.name for row in rows(cls) if not row.doc]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_reference() -> str:
    """docs/reference/config.md: one table for RunConfig's own fields, one per section."""
    every = rows()
    tables: dict[str, list[FieldRow]] = {"": []}
    for row in every:
        tables.setdefault(row.name.rpartition(".")[0], []).append(row)
    out = ["# Config reference\n",
           "Every field of a run config (`metacompare/config/runconfig.py`), generated from the dataclasses when the "
           "documentation is built, so it cannot fall behind the code. Set a field in a YAML config "
           "(sections as nested mappings) or on the command line with `--set name=value` "
           "(`--set omniglot.rotations=false`). Unknown fields and ill-typed values are one-line errors "
           "(exit status 2) naming the field. Meanings come from `doctools/field_docs.py`, a field's "
           "`metadata={\"doc\": ...}`, or its comment in `runconfig.py`.\n"]
    for section, members in tables.items():
        title = "## Run fields" if not section else f"## `{section}`"
        owner = next((r.section for r in every if r.name == section), None)
        intro = ""
        if owner is not None and owner.__doc__:
            intro = " ".join(line.strip() for line in inspect.cleandoc(owner.__doc__).splitlines()) + "\n\n"
        out.append(f"{title}\n\n{intro}| field | type | default | meaning |\n|---|---|---|---|")
        for row in members:
            name = f"[`{row.name}`](#{row.name.replace('.', '')})" if row.section else f"`{row.name}`"
            # Python-Markdown's tables leave a pipe inside a code span alone (`float | None`)
            out.append(f"| {name} | `{row.type}` | `{row.default}` | {_cell(row.doc)} |")
        out.append("")
    return "\n".join(out) + "\n"


# ---- the command line ---------------------------------------------------------------------------------


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public accessor for its subparsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option_row(action: argparse.Action) -> str | None:
    if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
        return None
    if action.option_strings:
        names = ", ".join(f"`{o}`" for o in action.option_strings)
        if action.nargs != 0:
            metavar = action.metavar or (("{" + ",".join(map(str, action.choices)) + "}") if action.choices
                                         else action.dest.upper())
            names += f" `{metavar}`" + (" ..." if action.nargs in ("+", "*") else "")
    else:
        names = f"`{action.metavar or action.dest}`" + (" ..." if action.nargs in ("+", "*") else "")
    default = action.default
    shown = "" if default in (None, argparse.SUPPRESS, False, []) or not action.option_strings else (
        " ".join(map(str, default)) if isinstance(default, list) else str(default))
    if action.required and action.option_strings:
        shown = "required"
    choices = f" Choices: {', '.join(f'`{c}`' for c in action.choices)}." if action.choices and action.option_strings \
        else ""
    return f"| {names} | {_cell(shown)} | {_cell((action.help or '') + choices)} |"


def cli_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """docs/reference/cli.md: every subcommand of ``metacompare`` with its arguments and options."""
    if parser is None:
        from metacompare.cli import build_parser
        parser = build_parser()
    out = ["# Command-line reference\n",
           f"`metacompare` (also `python -m metacompare`, and `./dev` in a checkout): {parser.description} "
           "Generated from the argument parser (`metacompare/cli_options.py`) when the documentation is built. "
           "`metacompare COMMAND --help` prints the same.\n",
           "| global option | default | meaning |\n|---|---|---|"]
    out += [r for r in map(_option_row, parser._actions) if r]
    out.append("")
    for name, sub in _subcommands(parser).items():
        positionals = " ".join((a.metavar or a.dest).upper() if a.metavar is None else a.metavar
                               for a in sub._actions if not a.option_strings and a.dest != "help")
        usage = " ".join(filter(None, ["metacompare", name, positionals, "[options]"]))
        out.append(f"## `{name}`\n\n{sub.description or ''}\n\n```\n{usage}\n```\n")
        out.append("| argument | default | meaning |\n|---|---|---|")
        out += [r for r in map(_option_row, sub._actions) if r]
        out.append("")
    return "\n".join(out) + "\n"
