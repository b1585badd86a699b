"""A griffe extension for the API reference (mkdocs.yml loads it): reads vision_lens docstrings
written with a few Sphinx habits as mkdocstrings' Google style expects them.

* ``:class:`X``` / ``:func:`` / ``:meth:`` / ``:mod:`` / ``:attr:`` / ``:data:`` roles become
  cross-references ``[`X`][canonical.path]`` when the target is documented in the reference,
  else inline code ``X`` (``~a.b.C`` shows ``C``). Names resolve as Sphinx would: absolute,
  then relative to the enclosing class, module and package, then to ``vision_lens``.
* An ``Example:`` section is read as ``Examples:`` (doctests render as code blocks).
* A paragraph ending in ``::`` (reStructuredText literal block) ends in ``:``; the indented
  block after it is already a Markdown code block.
* Module attributes documented with ``#:`` comments above them get those comments as docstring.

Lines are never added or removed, so griffe's warnings keep pointing at the right source line.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import AliasResolutionError, CyclicAliasError, Docstring, Extension, Module, Object

PACKAGE = "vision_lens"

_ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|attr|data|obj|exc|const):`(~?)([^`<>]+)`")
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$")
_LITERAL = re.compile(r"(\S)::\s*$")


class SphinxDocstrings(Extension):
    """Rewrites the docstrings of :data:`PACKAGE` once the whole package is loaded."""

    def on_package(self, *, pkg: Module, **kwargs: Any) -> None:
        if pkg.name != PACKAGE:
            return
        objects = list(_walk(pkg))
        for obj in objects:  # first, so that roles can see which attributes are documented
            if obj.is_attribute and obj.docstring is None:
                _comment_docstring(obj)
        for obj in objects:
            if obj.docstring is not None:
                obj.docstring.value = _rewrite(obj.docstring.value, obj, pkg)

    # griffe < 2 names this event on_package_loaded; the rewrite is idempotent.
    on_package_loaded = on_package


def _walk(obj: Object):
    yield obj
    for member in list(obj.members.values()):
        if member.is_alias:
            continue
        if member.is_module or member.is_class:
            yield from _walk(member)
        else:
            yield member


def _comment_docstring(attr: Object) -> None:
    """``#:`` comment lines right above a module or class attribute become its docstring."""
    if attr.lineno is None or attr.parent is None:
        return
    try:
        lines = attr.lines_collection[attr.filepath]
    except (KeyError, ValueError, TypeError):
        return
    comments: list[str] = []
    index = attr.lineno - 2
    while index >= 0 and lines[index].strip().startswith("#:"):
        comments.insert(0, lines[index].strip()[2:].strip())
        index -= 1
    if comments:
        attr.docstring = Docstring(
            "\n".join(comments),
            lineno=index + 2,
            endlineno=attr.lineno - 1,
            parent=attr,
        )


def _rewrite(text: str, obj: Object, pkg: Module) -> str:
    out = []
    for line in text.split("\n"):
        line = _EXAMPLE.sub(r"\1Examples:", line)
        line = _LITERAL.sub(r"\1:", line)
        line = _ROLE.sub(lambda m: _reference(m, obj, pkg), line)
        out.append(line)
    return "\n".join(out)


def _reference(match: re.Match, obj: Object, pkg: Module) -> str:
    _, short, target = match.groups()
    target = target.strip().removesuffix("()")
    shown = target.rsplit(".", 1)[-1] if short else target
    found = _resolve(target, obj, pkg)
    if found is None:
        return f"`{shown}`"
    return f"[`{shown}`][{found}]"


def _resolve(target: str, obj: Object, pkg: Module) -> str | None:
    """Canonical path of a documented object the name refers to, or None."""
    scopes: list[Object] = []
    scope: Object | None = obj
    while scope is not None:
        scopes.append(scope)
        scope = scope.parent
    for scope in scopes:
        path = target
        if scope is pkg and target.startswith(PACKAGE + "."):
            path = target[len(PACKAGE) + 1 :]
        elif scope is pkg and target == PACKAGE:
            return PACKAGE
        try:
            found = scope[path]
            if found.is_alias:
                found = found.final_target
        except (KeyError, ValueError, AliasResolutionError, CyclicAliasError):
            continue
        return found.path if _documented(found) else None
    return None


def _documented(obj: Object) -> bool:
    """Whether the reference renders the object (public, with a docstring, in vision_lens)."""
    if not obj.path.startswith(PACKAGE) or any(p.startswith("_") for p in obj.path.split(".")):
        return False
    return obj.is_module or obj.is_class or obj.docstring is not None
