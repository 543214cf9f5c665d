"""Griffe extension (mkdocs.yml, mkdocstrings' ``extensions:``): Sphinx roles in docstrings become links.

The package's docstrings name other objects the Sphinx way (``:class:`RunConfig```, ``:mod:`metacompare.algorithms.inner```,
``:meth:`task_gradient```). mkdocstrings renders Markdown, where those roles would show as raw text; this
rewrites each one into an autorefs cross-reference, with the name resolved in the scope of the object whose
docstring holds it (so ``:meth:`task_gradient``` inside ``MetaAlgorithm`` points at
``metacompare.algorithms.base.MetaAlgorithm.task_gradient``). A reference is *optional*: when its target is
not on any page of the site, it renders as plain code rather than failing the strict build.
"""

from __future__ import annotations

import html
import re

import griffe

# :role:`target`, :role:`~target` (show the last part only) and :role:`title <target>`.
ROLE = re.compile(r":(?:py:)?(?:class|mod|meth|func|attr|data|exc|obj|const):`(?P<body>[^`]+)`")


def _paths(obj: griffe.Object) -> list[str]:
    """Every module, class, function and attribute path of the package ``obj`` belongs to."""
    found, stack = [], [obj.package]
    while stack:
        node = stack.pop()
        found.append(node.path)
        stack += [m for m in node.members.values() if not m.is_alias]
    return found


def _resolve(obj: griffe.Object, name: str) -> str:
    """The full dotted path of ``name`` as seen from ``obj``'s docstring (``name`` itself if unknown):
    the scope's own names and imports first, else the one object of the package whose path ends so."""
    if name.startswith("metacompare.") or name == "metacompare":
        return name
    head, _, rest = name.partition(".")
    scope = obj if obj.is_module or obj.is_class else obj.parent
    try:
        full = scope.resolve(head)
        return f"{full}.{rest}" if rest else full
    except (griffe.NameResolutionError, AttributeError):
        pass
    candidates = [path for path in _paths(obj) if path.endswith("." + name)]
    return candidates[0] if len(candidates) == 1 else name


def crossref(obj: griffe.Object, match: re.Match) -> str:
    """The autorefs tag for one role: a link where the target is documented, plain code where not."""
    body = match["body"].strip()
    explicit = re.fullmatch(r"(?P<title>.+?)\s*<(?P<target>[^>]+)>", body)
    if explicit:
        title, target = explicit["title"], explicit["target"]
    else:
        target = body.lstrip("~")
        title = target.rsplit(".", 1)[-1] if body.startswith("~") else target
    identifier = _resolve(obj, target)
    return (f'<autoref identifier="{html.escape(identifier)}" optional>'
            f"<code>{html.escape(title)}</code></autoref>")


def rewrite(obj: griffe.Object, text: str) -> str:
    return ROLE.sub(lambda m: crossref(obj, m), text)


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None and ":" in obj.docstring.value:
            obj.docstring.value = rewrite(obj, obj.docstring.value)
