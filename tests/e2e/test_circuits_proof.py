"""The issue-19 circuits proof (``scripts/shapes_circuits.py``) on the shipped shapes CLIP.

A smaller configuration than the published run (``docs/results/circuits.md``): fewer scenes,
ablation of the top 50 neurons only, 3 random draws. The neuron selection uses the same 300
scenes as the published run, so the neurons are the same. About 20 s on two CPU cores. The
assertions are the conclusions the full run found, with margins.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from vision_lens.shapes.pretrained import shapes_weights_path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location(
        "shapes_circuits", ROOT / "scripts" / "shapes_circuits.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def proof():
    if not shapes_weights_path().exists():
        pytest.skip("shipped shapes weights missing")
    script = _script()
    out = script.run(n_lens=150, n_select=300, n_eval=100, n_pairs=24, ks=(50,), n_random=3)
    out |= {"model": "vision_lens.load_shapes_clip()", "date": "test"}
    return script, out


def test_lens_colour_and_position_before_shape(proof):
    _, out = proof
    lens = out["lens"]
    assert lens["stages"] == ["embed", "L0", "L1", "L2", "L3", "L4", "L5"]
    acc = lens["accuracy"]
    # Colour and position are readable from the class token after block 1 (full run: 94%, 98%),
    # not before it (50%, 39% after block 0); shape only at the output (34% after block 1).
    assert lens["first_decodable"]["color"] == "L1"
    assert lens["first_decodable"]["position"] == "L1"
    assert sorted(lens["first_among_color_shape_position"]) == ["color", "position"]
    assert acc["color"][2] > 0.88 and acc["position"][2] > 0.9
    assert acc["color"][1] < 0.7 and acc["position"][1] < 0.6
    assert lens["first_decodable"]["shape"] == "L5"
    assert acc["shape"][2] < 0.5 and acc["shape"][-1] > 0.93
    for attribute in ("color", "shape", "position"):  # the embedding alone is at chance
        assert acc[attribute][0] < 0.25


def test_neurons_texts_and_ablation(proof):
    _, out = proof
    found = out["neurons"]["attributes"]
    base = out["neurons"]["base"]
    assert base["color"]["accuracy"] > 0.97 and base["shape"]["accuracy"] > 0.9
    # The top colour and shape neurons (by second-order effect toward the true class) have texts
    # that name their attribute; all three are layer-0 neurons.
    assert found["color"]["texts_name"] == "color", found["color"]["top_texts"]
    assert found["shape"]["texts_name"] == "shape", found["shape"]["top_texts"]
    assert all(info["layer"] == 0 for info in found.values())
    # The colour and position neurons' scores are largest for their own attribute; the top
    # shape neuron (L0N243) pushes toward the true colour about as much as the true shape.
    for attribute in ("color", "position"):
        scores = found[attribute]["margin_score"]
        assert max(scores, key=scores.get) == attribute, (attribute, scores)
    shape_scores = found["shape"]["margin_score"]
    assert shape_scores["shape"] > 5 * shape_scores["position"]
    # Shape: ablating the top 50 shape neurons hurts shape, beyond random and beyond the other
    # attributes (full run: -15.0 points vs -0.2 for random neurons).
    shape = found["shape"]["ablation"]["50"]["accuracy"]
    assert shape["drop"]["shape"] > shape["random_mean_drop"]["shape"] + 0.04
    assert shape["own_drop_exceeds_random"] and shape["own_drop_largest"]
    # Colour and position are redundant: ablating their top 50 neurons leaves their accuracy
    # where it was; the colour neurons hurt shape instead (full run: -13.5 points).
    for attribute in ("color", "position"):
        entry = found[attribute]["ablation"]["50"]["accuracy"]
        assert abs(entry["drop"][attribute]) <= 0.02, (attribute, entry)
        assert not entry["own_drop_largest"]
    colour = found["color"]["ablation"]["50"]["accuracy"]
    assert colour["drop"]["shape"] > colour["drop"]["color"] + 0.04


def test_patching_localises_colour_in_block_1(proof):
    _, out = proof
    patching = out["patching"]
    rec = patching["recovered"]
    assert patching["clean_metric"] > 0.1 > -0.1 > patching["corrupted_metric"]
    cls = rec["class_token"]
    # Before block 0 the class token holds no colour; the object's patches hold all of it.
    assert abs(cls["resid_pre"][0]) < 0.02
    assert rec["object_patches"]["resid_pre"][0] > 0.98
    # Block 0 moves under half of it into the class token (full run 29%), block 1 most (69%).
    assert cls["resid_post"][0] < 0.45
    assert cls["resid_post"][1] > 0.55
    assert patching["colour_enters_class_token_in"] == "L1"
    assert cls["resid_post"][-1] == pytest.approx(1.0, abs=1e-4)
    # By the last block the patch tokens no longer carry the colour to the output.
    assert rec["all_patches"]["resid_pre"][-1] < 0.1
    assert rec["object_patches"]["resid_pre"][-1] < 0.05


def test_report_renders(proof):
    script, out = proof
    md = script.to_markdown(out)
    assert "## Conclusions" in md and "## 3. Activation patching" in md
    assert out["neurons"]["attributes"]["color"]["neuron"] in md
