"""The notebooks are generated from scripts/make_notebooks.py, stored without outputs, and run
top to bottom on the shipped shapes model (as a user on a fresh install would run them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"


def _make_notebooks():
    spec = importlib.util.spec_from_file_location(
        "make_notebooks", ROOT / "scripts/make_notebooks.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MAKE = _make_notebooks()


def test_notebooks_match_their_source_and_have_no_outputs():
    assert MAKE.stale() == [], "run: python scripts/make_notebooks.py"


def test_stale_detects_an_edited_notebook(tmp_path):
    for name in MAKE.NOTEBOOKS:
        (tmp_path / name).write_text(MAKE.render(name), encoding="utf-8")
    assert MAKE.stale(tmp_path) == []
    first = next(iter(MAKE.NOTEBOOKS))
    (tmp_path / first).write_text(MAKE.render(first).replace("vision_lens", "vl_x"), "utf-8")
    (tmp_path / "extra.ipynb").write_text("{}", encoding="utf-8")
    problems = MAKE.stale(tmp_path)
    assert any(first in p for p in problems) and any("extra.ipynb" in p for p in problems)


@pytest.mark.parametrize("name", sorted(MAKE.NOTEBOOKS))
def test_notebook_runs_top_to_bottom(name):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    client.execute()  # raises CellExecutionError, with the failing cell, on any error
    errors = [
        out
        for cell in notebook.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors
    # Every code cell ran (an early exit would leave later cells without an execution count).
    assert all(c.execution_count for c in notebook.cells if c.cell_type == "code" and c.source)
