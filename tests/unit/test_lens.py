"""The embedding lens: the last stage is the model's output, every stage matches a literal readout
of the cached residual stream, planted structure, the patch lens per token, figures, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.tiny import FEATURE_CONFIGS, random_images, tiny_model

from vision_lens.analysis import (
    embedding_lens,
    lens_accuracy,
    lens_stage_names,
    patch_lens,
    zero_shot_accuracy,
)
from vision_lens.plot import lens_accuracy_chart, patch_lens_grid


def _literal_cls_readout(model, resid: torch.Tensor) -> torch.Tensor:
    """LayerNorm of the class token written out, then the projection (a class-token model)."""
    x = resid[:, 0]
    ln = model.ln_final
    normed = (x - x.mean(-1, keepdim=True)) / (
        x.var(-1, unbiased=False, keepdim=True) + ln.eps
    ).sqrt()
    out = (normed * ln.w + ln.b) @ model.W_proj
    return out if model.b_proj is None else out + model.b_proj


@pytest.mark.parametrize("name", list(FEATURE_CONFIGS))
def test_last_stage_is_the_models_output(name):
    model = tiny_model(**FEATURE_CONFIGS[name]).eval()
    images = random_images(3)
    lens = embedding_lens(model, images)
    assert lens.shape == (model.cfg.n_layers + 1, 3, model.cfg.d_embed)
    torch.testing.assert_close(lens[-1], model(images), rtol=1e-6, atol=1e-6)


def test_every_stage_matches_a_literal_readout_of_the_cache():
    model = tiny_model(std=0.2).eval()
    images = random_images(4)
    directions = torch.randn(6, model.cfg.d_embed, generator=torch.Generator().manual_seed(1))
    scores = embedding_lens(model, images, directions)
    _, cache = model.run_with_cache(images)
    hooks = ["blocks.0.hook_resid_pre"] + [
        f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)
    ]
    assert lens_stage_names(model) == ["embed", "L0", "L1"]
    for stage, hook in enumerate(hooks):
        expected = _literal_cls_readout(model, cache[hook]) @ directions.T
        torch.testing.assert_close(scores[stage], expected, rtol=1e-5, atol=1e-5)


def test_dead_late_block_leaves_the_lens_unchanged():
    """Planted: block 1 writes nothing, so the residual stream (and the lens) after it is the
    one after block 0, while stage 0 and stage 1 differ."""
    model = tiny_model(std=0.2).eval()
    block = model.blocks[1]
    with torch.no_grad():
        block.attn.W_O[:] = 0
        block.attn.b_O.zero_()
        block.mlp.W_out[:] = 0
        block.mlp.b_out.zero_()
    assert model.W_O[1].abs().max() == 0 and model.W_out[1].abs().max() == 0
    lens = embedding_lens(model, random_images(3))
    torch.testing.assert_close(lens[2], lens[1], rtol=0, atol=0)
    assert not torch.allclose(lens[0], lens[1])


def test_batches_and_unit_output():
    model = tiny_model().eval()
    images = random_images(5)
    whole = embedding_lens(model, images)
    torch.testing.assert_close(embedding_lens(model, images, batch_size=2), whole)
    unit = embedding_lens(model, images, unit_output=True)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(3, 5))
    torch.testing.assert_close(unit, whole / whole.norm(dim=-1, keepdim=True))


def test_lens_accuracy_matches_a_loop_over_stages():
    model = tiny_model(std=0.2).eval()
    images = random_images(8)
    classes = torch.randn(4, model.cfg.d_embed, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    accuracy = lens_accuracy(model, images, classes, labels, batch_size=3)
    lens = embedding_lens(model, images)
    expected = [zero_shot_accuracy(stage, classes, labels) for stage in lens]
    torch.testing.assert_close(accuracy, torch.tensor(expected))
    own = (model(images) @ classes.T).argmax(-1)  # the model's own predictions
    assert lens_accuracy(model, images, classes, own)[-1].item() == 1.0


def test_patch_lens_per_token_literal():
    model = tiny_model(std=0.2).eval()
    images = random_images(2)
    directions = torch.randn(3, model.cfg.d_embed, generator=torch.Generator().manual_seed(3))
    _, cache = model.run_with_cache(images)
    for layer, hook in [(0, "blocks.0.hook_resid_post"), ("embed", "blocks.0.hook_resid_pre")]:
        maps = patch_lens(model, images, directions, layer=layer)
        assert maps.shape == (2, model.cfg.n_pos, 3)
        resid = cache[hook]
        for pos in range(model.cfg.n_pos):
            expected = _literal_cls_readout(model, resid[:, pos : pos + 1]) @ directions.T
            torch.testing.assert_close(maps[:, pos], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(patch_lens(model, images)[:, 0], model(images), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", list(FEATURE_CONFIGS))
def test_patch_lens_is_the_readout_of_a_stream_filled_with_the_token(name):
    """Every readout kind: a token's map is what the readout makes of a residual stream in which
    every position holds that token."""
    model = tiny_model(std=0.2, **FEATURE_CONFIGS[name]).eval()
    images = random_images(2)
    maps = patch_lens(model, images, layer=-1)
    _, cache = model.run_with_cache(images)
    resid = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"]
    with torch.no_grad():
        for pos in range(model.cfg.n_pos):
            filled = resid[:, pos : pos + 1].expand(-1, model.cfg.n_pos, -1)
            pooled = model.readout.pool(filled, model.ln_final)
            expected = model.readout.project(pooled, model.W_proj, model.b_proj)
            torch.testing.assert_close(maps[:, pos], expected, rtol=1e-4, atol=1e-5)


def test_bad_input_is_refused():
    model = tiny_model().eval()
    images = random_images(2)
    d = model.cfg.d_embed
    with pytest.raises(ValueError, match="width"):
        embedding_lens(model, images, torch.randn(3, d + 1))
    with pytest.raises(ValueError, match=r"directions\[None\]"):
        embedding_lens(model, images, torch.randn(d))
    with pytest.raises(TypeError, match="directions must be a tensor"):
        embedding_lens(model, images, [[0.0] * d])
    with pytest.raises(ValueError, match="NaN"):
        embedding_lens(model, images, torch.full((2, d), float("nan")))
    with pytest.raises(ValueError, match="pixels"):
        embedding_lens(model, random_images(2, height=8))
    with pytest.raises(ValueError, match="one class index per image"):
        lens_accuracy(model, images, torch.randn(3, d), [0, 1, 2])
    with pytest.raises(ValueError, match=r"0\.\.2"):
        lens_accuracy(model, images, torch.randn(3, d), [0, 3])
    with pytest.raises(TypeError, match="integer"):
        lens_accuracy(model, images, torch.randn(3, d), torch.tensor([0.0, 1.0]))
    with pytest.raises(IndexError, match="does not exist"):
        patch_lens(model, images, layer=5)
    with pytest.raises(ValueError, match="'embed'"):
        patch_lens(model, images, layer="ln_final")
    with pytest.raises(ValueError, match="one layer"):
        patch_lens(model, images, layer=[0, 1])


def test_figures():
    fig = lens_accuracy_chart({"a": [0.1, 0.5, 0.9], "b": torch.tensor([0.2, 0.2, 0.4])})
    assert [t.name for t in fig.data] == ["a", "b"]
    assert list(fig.data[0].x) == ["embed", "L0", "L1"]
    with pytest.raises(ValueError, match="different lengths"):
        lens_accuracy_chart({"a": [0.1, 0.5], "b": [0.2, 0.2, 0.4]})
    with pytest.raises(ValueError, match="stage_names"):
        lens_accuracy_chart([0.1, 0.5], stage_names=["embed"])

    model = tiny_model().eval()
    images = random_images(2)
    maps = patch_lens(model, images, torch.randn(3, model.cfg.d_embed))
    pixels = [np.zeros((16, 16, 3), np.uint8)] * 2
    fig = patch_lens_grid(pixels, maps, ["a", "b", "c"], n_prefix=model.cfg.n_prefix)
    heat = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat) == 6
    np.testing.assert_allclose(heat[1].z, maps[0, 1:, 1].reshape(2, 2).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="n_prefix"):
        patch_lens_grid(pixels, maps, ["a", "b", "c"])  # 5 positions do not fill a square
    with pytest.raises(ValueError, match="texts"):
        patch_lens_grid(pixels, maps, ["a", "b"], n_prefix=1)
