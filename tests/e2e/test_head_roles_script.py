"""The issue-6 proof script (``scripts/shapes_head_roles.py``) end to end on the shipped model.

It takes about 20 s on two CPU cores; the numbers it writes to ``docs/results`` come from the
same code, so this test keeps the published report reproducible.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from vision_lens.shapes.pretrained import shapes_weights_path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location(
        "shapes_head_roles", ROOT / "scripts" / "shapes_head_roles.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not shapes_weights_path().exists(), reason="shipped shapes weights missing")
def test_head_roles_script_on_shipped_model(tmp_path):
    out = _script().main(["--out", str(tmp_path / "roles")])
    written = json.loads((tmp_path / "roles.json").read_text())
    assert written["config"] == {"n_layers": 6, "n_heads": 4, "d_embed": 128}
    assert len(written["roles"]) == 24
    assert set(out["single_head_ablation"]) == set(written["roles"])
    # The shipped model is accurate before any ablation (the quality gate of issue 5).
    assert written["base_accuracy"]["color"] > 0.95
    assert written["base_accuracy"]["shape"] > 0.9
    # Ablating the heads of a role hurts its own attribute more than random heads do.
    for role in written["role_ablation"].values():
        assert role["own_task_drop_exceeds_random"], role
    # Attribute subspaces name colour heads, and ablating them hurts colour most, beyond random.
    colour = written["subspace"]["role_ablation"]["color"]
    assert colour["own_task_drop_largest"] and colour["own_task_drop_exceeds_random"], colour
    assert len(written["subspace"]["fractions"]) == 24
    # Background heads found by TextSpan remove part of the spurious cue of a classifier fit
    # on the 95%-correlated train split: worst-group accuracy rises, more than for random heads.
    probe = written["spurious"]["classifiers"]["train-split class means"]
    assert probe["after"]["worst"] > probe["before"]["worst"]
    assert probe["after"]["worst"] > probe["best_random"]["worst"]
    md = (tmp_path / "roles.md").read_text()
    assert "## 3. Spurious cue" in md and "## 1b. Attribute subspaces" in md and "L0H0" in md


def test_head_roles_script_smoke(tmp_path):
    """The pipeline on a tiny random CLIP: runs without the shipped weights."""
    out = _script().main(["--smoke", "--out", str(tmp_path / "smoke")])
    assert (tmp_path / "smoke.json").exists() and (tmp_path / "smoke.md").exists()
    assert out["settings"]["smoke"] is True
