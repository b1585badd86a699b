"""The issue-17 proof (``scripts/shapes_beyond_clip.py``) on the shipped shapes ViT and its
CompAlign, and the script that fits that CompAlign (``scripts/train_shapes_compalign.py``).

The published run's configuration (``docs/results/beyond_clip.md``) except for fewer segmentation
scenes (100 instead of 300); about 20 s. The assertions are the conclusions that run found, with
margins.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import vision_lens as vl
from vision_lens.shapes.pretrained_vit import shapes_vit_compalign_path, shapes_vit_weights_path

ROOT = Path(__file__).resolve().parents[2]
PROPERTIES = ("color", "shape", "position")

pytestmark = pytest.mark.skipif(
    not (shapes_vit_weights_path().is_file() and shapes_vit_compalign_path().is_dir()),
    reason="shipped shapes ViT or its CompAlign missing",
)


@pytest.fixture(autouse=True)
def _keep_threads():
    """The scripts' ``main`` sets torch's thread count; give the next tests theirs back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _script(name: str):
    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def proof():
    script = _script("shapes_beyond_clip")
    out = script.run(n_eval=1000, n_score=1000, n_seg=100, k=3, n_random=20)
    out |= {"date": "test"}
    return script, out


def test_alignment_quality(proof):
    _, out = proof
    a = out["alignment"]
    assert a["decomposition_max_gap"] < 1e-4
    assert a["cosine"] >= 0.8, a
    for p in PROPERTIES:
        assert a["zero_shot"][p]["aligned_sum"] >= 0.85, (p, a["zero_shot"])


def test_scoring_names_each_property(proof):
    _, out = proof
    s = out["scoring"]
    tops = {p: {c for c, _ in s["top"][p][:3]} for p in PROPERTIES}
    for p in PROPERTIES:
        # some component scores clearly more for p than for either other property
        assert s["top_specific"][p][0][1] > 0.1, (p, s["top_specific"][p])
        assert s["own_property_first"][p], (p, s["top_specific"][p])
    assert not tops["color"] & tops["shape"], tops  # colour and shape live in different heads


def test_ablating_top_components_hurts_their_property(proof):
    _, out = proof
    props = out["ablation"]["properties"]
    for mode in ("own_head", "zero_shot"):  # the ViT's own head, and through the CLIP's texts
        for p in ("color", "shape"):  # own drop largest, and beyond random
            rec = props[p][mode]
            assert rec["own_drop_exceeds_random"] and rec["own_drop_largest"], (p, mode, rec)
            assert rec["drop"][p] > rec["random_mean_drop"][p] + 0.03, (p, mode, rec)
        # Position (full run: -6.8 points own head, -6.6 zero-shot; random 0.0-0.3): beyond
        # random, but its heads (L1H0, L2H0, L1H2) feed shape too, which drops about as much.
        rec = props["position"][mode]
        assert rec["drop"]["position"] > rec["random_mean_drop"]["position"] + 0.03, (mode, rec)
        assert rec["drop"]["color"] < 0.03, (mode, rec)


def test_retrieval_by_colour_components(proof):
    _, out = proof
    prec = out["retrieval"]["precision"]
    assert prec["top3_color_components"] >= 0.8, prec
    assert prec["top3_color_components"] > prec["top3_shape_components"] + 0.3, prec
    assert prec["all_components"] >= 0.9, prec


def test_segmentation_beats_raw_attention(proof):
    _, out = proof
    seg = out["segmentation"]
    assert seg["compalign"]["miou"] > seg["raw_attention"]["miou"], seg
    assert seg["compalign"]["map"] > seg["raw_attention"]["map"], seg


def test_report_renders(proof):
    script, out = proof
    md = script.markdown(out | {"seconds": 0})
    assert "## 5. Segmentation" in md and out["scoring"]["top"]["color"][0][0] in md


def test_compalign_script_writes_a_loadable_aligner(tmp_path):
    script = _script("train_shapes_compalign")
    argv = ["--out", str(tmp_path), "--n-train", "300", "--n-test", "100", "--epochs", "1"]
    assert script.main([*argv, "--threads", "1", "--no-progress"]) == 0
    aligner = vl.CompAlign.load(tmp_path)
    shipped = vl.CompAlign.load(shapes_vit_compalign_path())
    assert aligner.ids == shipped.ids and aligner.weight.shape == shipped.weight.shape
    record = json.loads((tmp_path / "alignment.json").read_text())
    assert record["n_train"] == 300 and 0 < record["evaluation"]["cosine"] <= 1
    assert set(record["evaluation"]["zero_shot"]) == set(PROPERTIES)
    assert not torch.equal(aligner.weight, vl.CompAlign(aligner.ids, 128, 128).weight)
