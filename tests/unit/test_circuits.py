"""Circuits: OV/QK factored matrices and composition scores against literal loops, activation
patching against literal hooked runs and planted structure, figures, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from support.tiny import random_images, tiny_model

from vision_lens.analysis import (
    PatchingScores,
    all_composition_scores,
    ov_circuit,
    patch_activations,
    qk_circuit,
)
from vision_lens.errors import InputWarning
from vision_lens.plot import composition_heatmap, patching_heatmap


def test_circuits_are_the_weight_products():
    model = tiny_model(n_layers=3).eval()
    ov, qk = ov_circuit(model), qk_circuit(model)
    cfg = model.cfg
    assert ov.shape == qk.shape == (3, cfg.n_heads, cfg.d_model, cfg.d_model)
    for layer in range(3):
        attn = model.blocks[layer].attn
        for head in range(cfg.n_heads):
            torch.testing.assert_close(ov.AB[layer, head], attn.W_V[head] @ attn.W_O[head])
            torch.testing.assert_close(qk.AB[layer, head], attn.W_Q[head] @ attn.W_K[head].T)


def _literal_scores(model, mode: str) -> torch.Tensor:
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    W_Q, W_K, W_V, W_O = (w.detach().double() for w in (model.W_Q, model.W_K, model.W_V, model.W_O))
    out = torch.zeros(n_layers, n_heads, n_layers, n_heads, dtype=torch.float64)
    for l1 in range(n_layers):
        for h1 in range(n_heads):
            left = W_V[l1, h1] @ W_O[l1, h1]
            for l2 in range(l1 + 1, n_layers):
                for h2 in range(n_heads):
                    qk = W_Q[l2, h2] @ W_K[l2, h2].T
                    right = {"Q": qk, "K": qk.T, "V": W_V[l2, h2] @ W_O[l2, h2]}[mode]
                    out[l1, h1, l2, h2] = (left @ right).norm() / (left.norm() * right.norm())
    return out


@pytest.mark.parametrize("mode", ["Q", "K", "V"])
def test_composition_scores_match_a_literal_loop(mode):
    model = tiny_model(n_layers=3).eval()
    scores = all_composition_scores(model, mode)
    assert scores.shape == (3, model.cfg.n_heads, 3, model.cfg.n_heads)
    torch.testing.assert_close(scores.double(), _literal_scores(model, mode), rtol=1e-4, atol=1e-6)


def test_planted_orthogonal_heads_do_not_compose():
    """L0H0 writes only into dims 0..3, which L1H1's values, queries and keys ignore."""
    model = tiny_model().eval()
    with torch.no_grad():
        model.blocks[0].attn.W_O[0][:, 4:] = 0
        for weight in (
            model.blocks[1].attn.W_V,
            model.blocks[1].attn.W_Q,
            model.blocks[1].attn.W_K,
        ):
            weight[1][:4] = 0
    for mode in "QKV":
        scores = all_composition_scores(model, mode)
        assert scores[0, 0, 1, 1] < 1e-6  # zero up to the factored computation's rounding
        assert (scores[0, 1:, 1] > 0.01).all() and (scores[0, 0, 1, [0, 2, 3]] > 0.01).all()


def test_qk_circuit_warns_for_qk_norm_and_bad_mode():
    model = tiny_model(qk_norm=True).eval()
    with pytest.warns(InputWarning, match="qk-norm"):
        qk_circuit(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        all_composition_scores(model, "V")  # V-composition does not involve QK
    with pytest.raises(ValueError, match="'Q', 'K' or 'V'"):
        all_composition_scores(model, "O")


def _metric(direction):
    return lambda out: (out @ direction).mean()


def _pair(model):
    clean, corrupted = random_images(2, seed=0), random_images(2, seed=1)
    direction = model(clean).mean(0) - model(corrupted).mean(0)
    return clean, corrupted, _metric(direction)


def test_patching_matches_literal_hooked_runs():
    model = tiny_model(std=0.2).eval()
    clean, corrupted, metric = _pair(model)
    result = patch_activations(model, clean, corrupted, metric, ["resid_pre", "z"], heads=None)
    assert result.axis_names == ["hook", "position"]
    assert result.hook_names == [
        "blocks.0.hook_resid_pre",
        "blocks.1.hook_resid_pre",
        "blocks.0.attn.hook_z",
        "blocks.1.attn.hook_z",
    ]
    _, cache = model.run_with_cache(clean)
    for i, name in enumerate(result.hook_names):
        for pos in range(model.cfg.n_pos):

            def hook(act, hook, pos=pos, name=name):
                act = act.clone()
                act[:, pos] = cache[name][:, pos]
                return act

            out = model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)])
            assert result.scores[i, pos].item() == pytest.approx(metric(out).item(), abs=1e-6)
    assert result.clean == pytest.approx(metric(model(clean)).item())
    assert result.corrupted == pytest.approx(metric(model(corrupted)).item())


def test_patching_per_head_and_position_matches_literal_runs():
    model = tiny_model(std=0.2).eval()
    clean, corrupted, metric = _pair(model)
    result = patch_activations(
        model, clean, corrupted, metric, "blocks.1.attn.hook_result", [0, -1], heads=[1, 3]
    )
    assert (
        result.scores.shape == (1, 2, 2) and result.positions == [0, 4] and result.heads == [1, 3]
    )
    _, cache = model.run_with_cache(clean)
    clean_act = cache["blocks.1.attn.hook_result"]
    for j, head in enumerate([1, 3]):
        for k, pos in enumerate([0, 4]):

            def hook(act, hook, head=head, pos=pos):
                act = act.clone()
                act[:, pos, head] = clean_act[:, pos, head]
                return act

            out = model.run_with_hooks(corrupted, fwd_hooks=[("blocks.1.attn.hook_result", hook)])
            assert result.scores[0, j, k].item() == pytest.approx(metric(out).item(), abs=1e-6)


def test_planted_structure():
    model = tiny_model(std=0.2).eval()
    with torch.no_grad():
        model.blocks[1].attn.W_O[2] = 0  # head L1H2 writes nothing
    clean, corrupted, metric = _pair(model)
    # The class-token readout reads only position 0 of the last residual stream.
    last = patch_activations(model, clean, corrupted, metric, "blocks.1.hook_resid_post")
    assert last.scores[0, 0].item() == pytest.approx(last.clean, abs=1e-6)
    torch.testing.assert_close(last.scores[0, 1:], torch.full((4,), last.corrupted))
    torch.testing.assert_close(
        last.recovered()[0], torch.tensor([1.0, 0, 0, 0, 0]), atol=1e-5, rtol=0
    )
    # Patching the whole input of block 0 restores the clean run.
    first = patch_activations(model, clean, corrupted, metric, "blocks.0.hook_resid_pre", "all")
    assert first.scores.shape == (1,) and first.scores[0].item() == pytest.approx(
        first.clean, abs=1e-5
    )
    # A head that writes nothing has no effect, at any position.
    heads = patch_activations(model, clean, corrupted, metric, "z", "all", "each", layers=[1])
    assert heads.scores.shape == (1, 4)
    # (equal up to rounding: a hook on z switches attention from the fused kernel to explicit)
    assert heads.scores[0, 2].item() == pytest.approx(heads.corrupted, abs=1e-5)
    assert ((heads.scores[0, [0, 1, 3]] - heads.corrupted).abs() > 1e-3).all()


def test_patching_errors():
    model = tiny_model().eval()
    clean, corrupted, metric = _pair(model)
    with pytest.raises(ValueError, match="pairs"):
        patch_activations(model, clean, random_images(3), metric)
    with pytest.raises(ValueError, match="no hook point.*Closest"):
        patch_activations(model, clean, corrupted, metric, "blocks.0.hook_resid_prex")
    with pytest.raises(ValueError, match="no hook point"):
        patch_activations(model, clean, corrupted, metric, "resid_middle")
    with pytest.raises(ValueError, match="no head axis"):
        patch_activations(model, clean, corrupted, metric, "resid_pre", heads="each")
    with pytest.raises(ValueError, match="positions='all'"):
        patch_activations(model, clean, corrupted, metric, "pattern", heads="each")
    with pytest.raises(ValueError, match="positions='all'"):
        patch_activations(model, clean, corrupted, metric, "hook_pooled")
    with pytest.raises(ValueError, match="scalar"):
        patch_activations(model, clean, corrupted, lambda out: out.sum(-1), "resid_pre", "all")
    with pytest.raises(IndexError, match="Position 9"):
        patch_activations(model, clean, corrupted, metric, positions=[9])
    with pytest.raises(IndexError, match="Head 4"):
        patch_activations(model, clean, corrupted, metric, "z", heads=[4])
    with pytest.raises(IndexError, match="Layer 2"):
        patch_activations(model, clean, corrupted, metric, "z", layers=[2])
    with pytest.raises(TypeError, match="metric"):
        patch_activations(model, clean, corrupted, "logit diff")
    with pytest.raises(ValueError, match="same hook twice"):
        patch_activations(model, clean, corrupted, metric, ["resid_pre", "blocks.0.hook_resid_pre"])
    # Patterns patched per head, whole: the head axis is axis 1 there.
    result = patch_activations(model, clean, corrupted, metric, "pattern", "all", "each")
    assert result.scores.shape == (2, 4)
    same = PatchingScores(torch.zeros(1), ["x"], None, None, clean=1.0, corrupted=1.0)
    with pytest.raises(ZeroDivisionError):
        same.recovered()


def test_figures():
    model = tiny_model().eval()
    scores = all_composition_scores(model, "K")
    fig = composition_heatmap(scores, mode="K")
    assert fig.data[0].z.shape == (8, 8) and fig.data[0].y[5] == "L1H1"
    assert "K-composition" in fig.layout.title.text
    with pytest.raises(ValueError, match="same layers and heads"):
        composition_heatmap(np.zeros((2, 4, 3, 4)))

    clean, corrupted, metric = _pair(model)
    result = patch_activations(model, clean, corrupted, metric, "resid_pre")
    fig = patching_heatmap(result)
    assert list(fig.data[0].y) == ["L0 resid_pre", "L1 resid_pre"]
    assert list(fig.data[0].x) == ["P0", "P1", "P2", "P3", "P4"]
    np.testing.assert_allclose(fig.data[0].z, result.recovered().numpy(), rtol=1e-6)
    fig = patching_heatmap(result, recovered=False, x_labels=model.readout.position_names())
    np.testing.assert_allclose(fig.data[0].z, result.scores.numpy(), rtol=1e-6)
    assert fig.data[0].x[0] == "cls"
    heads = patch_activations(model, clean, corrupted, metric, "z", "all", "each")
    assert list(patching_heatmap(heads).data[0].x) == ["H0", "H1", "H2", "H3"]
    three = patch_activations(model, clean, corrupted, metric, "z", [0], "each", layers=[0])
    with pytest.raises(ValueError, match="needs two"):
        patching_heatmap(three)
    with pytest.raises(ValueError, match="x_labels"):
        patching_heatmap(result, x_labels=["a"])


def test_model_ov_and_qk_properties_equal_the_circuit_functions():
    import vision_lens as vl
    from vision_lens.analysis.circuits import ov_circuit, qk_circuit

    model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
    assert torch.allclose(model.OV.AB, ov_circuit(model).AB)
    assert torch.allclose(model.QK.AB, qk_circuit(model).AB)
    head = model.blocks[1].attn
    assert torch.allclose(model.OV.AB[1, 2], head.W_V[2] @ head.W_O[2], atol=1e-6)
