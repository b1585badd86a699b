"""The code's shape, checked: what ARCHITECTURE.md promises and review would otherwise police.

The layer contract itself (who may import whom) is import-linter's job (`lint-imports`, run by
`.ci/run`, contract in pyproject.toml); here: no module reaches into another's private names, and
modules stay small enough to read in one sitting.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "vision_lens"
MODULES = sorted(PACKAGE.rglob("*.py"))

# Modules allowed past MAX_LINES, each one concept that would not read better split.
MAX_LINES = 600
LONG_MODULES = {
    # One source's converter each: the weight mapping of every family that source has.
    "loading/timm.py": "timm converter",
    "loading/hf.py": "Hugging Face converter",
    "loading/open_clip.py": "open_clip converter",
    # One class each, whose methods share private state: the model (construction from every
    # source, forward, caching, TransformerLens weight views) and the cache (its decompositions,
    # with the math in the module docstring).
    "hooked_vit.py": "HookedViT",
    "cache.py": "ActivationCache",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private_imports(source: str, name: str, is_package: bool = False) -> list[str]:
    """Imports in module ``name`` of a private name (``from vision_lens.x import _y``), or of a
    private module (``vision_lens.loading._common``) from outside the package that owns it."""
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        if not (node.module or "").startswith("vision_lens"):
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                found.append(f"{name}:{node.lineno} imports {node.module}.{alias.name}")
        if any(part.startswith("_") for part in node.module.split(".")):
            owner = node.module.rpartition(".")[0]
            if node.module != "vision_lens._version" and not package.startswith(owner):
                found.append(f"{name}:{node.lineno} imports private module {node.module}")
    return found


def test_modules_found():
    assert len(MODULES) > 40  # a wrong PACKAGE path would make the tests below vacuous


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_private_names_of_another(path):
    found = _private_imports(path.read_text(), _module_name(path), path.name == "__init__.py")
    assert found == []


def test_private_import_check_catches_violations():
    name = "vision_lens.analysis.baselines"
    assert _private_imports("from vision_lens.analysis.segmentation import _check\n", name)
    assert _private_imports("from vision_lens.loading._common import is_identity\n", name)
    # Inside the owning package a private module is fine; so are public names and dunders.
    assert not _private_imports(
        "from vision_lens.loading._common import is_identity\n", "vision_lens.loading.timm"
    )
    assert not _private_imports("from vision_lens.analysis.segmentation import segment\n", name)
    assert not _private_imports("from vision_lens._version import __version__\n", name)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_readable(path):
    relative = path.relative_to(PACKAGE).as_posix()
    n_lines = len(path.read_text().splitlines())
    if relative in LONG_MODULES:
        assert n_lines <= 1.5 * MAX_LINES, f"{relative} grew to {n_lines} lines"
    else:
        assert n_lines <= MAX_LINES, (
            f"{relative} has {n_lines} lines (> {MAX_LINES}): split it by concern, or list it in "
            "LONG_MODULES with the one concept it holds."
        )


def test_tests_import_helpers_as_support():
    """``.ci/run`` runs plain ``pytest``, which does not put the repository root on sys.path:
    ``from tests.support...`` works under ``python -m pytest`` only. Helpers are ``support.*``."""
    root = Path(__file__).resolve().parents[1]
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if re.search(r"^\s*(from|import) tests\.", path.read_text(encoding="utf-8"), re.M)
    ]
    assert offenders == []
