"""Neuron analyses: direct effects sum to the MLP term, second-order effects against a literal
loop, sparse text decomposition on planted structure, running top-k against brute force."""

from __future__ import annotations

import pytest
import torch
from support.tiny import FEATURE_CONFIGS, random_images, tiny_model

from vision_lens.analysis import (
    mlp_bias_effect,
    neuron_direct_effects,
    neuron_second_order_effects,
    sparse_text_decomposition,
    top_activating_images,
)
from vision_lens.errors import IncompleteCacheError

LITERAL_CONFIGS = ["cls", "avg+fc_norm+rms", "map+qk_norm+gated+registers", "cls_dist+heads"]


def _cache(name: str = "cls", n_layers: int = 3, n: int = 2):
    # std=0.1: effects of order one (the default init makes second-order effects ~1e-6).
    model = tiny_model(seed=1, std=0.1, n_layers=n_layers, **FEATURE_CONFIGS[name])
    _, cache = model.run_with_cache(random_images(n, seed=2))
    return model, cache


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    """Max abs error at most ``tol`` of the expected tensor's largest entry."""
    scale = expected.abs().max()
    assert scale > 0
    error = (actual - expected).abs().max()
    assert error <= tol * scale, f"error {error:.3g}, relative {error / scale:.3g}"


def _literal_readout(model, cache, b: int, r: torch.Tensor) -> torch.Tensor:
    """The frozen readout of a residual-stream term ``r`` [pos, d_model] of image ``b``, centred
    over d_model first (centre mode), written out per readout kind."""
    cfg, ln = model.cfg, model.ln_final
    gamma, P = ln.w.detach(), model.W_proj.detach()
    scale = cache["ln_final.hook_scale"][b]

    def normed(x, sigma):
        if ln.centers:
            x = x - x.mean()
        return gamma * x / sigma

    if cfg.readout == "cls":
        return normed(r[0], scale[0]) @ P
    if cfg.readout == "cls_dist":
        W_dist = model.readout.W_dist.detach()
        return (normed(r[0], scale[0]) @ P + normed(r[1], scale[1]) @ W_dist) / 2
    patches = range(model.readout.patch_positions.start, cfg.n_pos)
    if cfg.readout == "avg" and cfg.final_ln_after_pool:
        return normed(sum(r[q] for q in patches) / len(patches), scale.reshape(())) @ P
    assert cfg.readout == "map"
    attn, pattern = model.readout.attn, cache["readout.attn.hook_pattern"][b]
    out = 0
    for g in range(attn.n_heads):
        for q in range(cfg.n_pos):
            x = normed(r[q], scale[q]) @ attn.W_V[g].detach() @ attn.W_O[g].detach() @ P
            out = out + pattern[g, 0, q] * x
    return out


def _literal_second_order(model, cache, layer: int, neurons: list[int]) -> torch.Tensor:
    """Token by token, head by head, layer by layer."""
    cfg = model.cfg
    post = cache[f"blocks.{layer}.mlp.hook_post"]
    W_out = model.blocks[layer].mlp.W_out.detach()
    batch = post.shape[0]
    out = torch.zeros(batch, len(neurons), cfg.d_embed)
    for b in range(batch):
        for slot, n in enumerate(neurons):
            r = torch.zeros(cfg.n_pos, cfg.d_model)
            for later in range(layer + 1, cfg.n_layers):
                block = model.blocks[later]
                pattern = cache[f"blocks.{later}.attn.hook_pattern"][b]
                scale = cache[f"blocks.{later}.ln1.hook_scale"][b]
                for t in range(cfg.n_pos):
                    u = post[b, t, n] * W_out[n]
                    if block.ln1.centers:
                        u = u - u.mean()
                    x = block.ln1.w.detach() * u / scale[t]
                    for h in range(cfg.n_heads):
                        head_out = x @ block.attn.W_V[h].detach() @ block.attn.W_O[h].detach()
                        for q in range(model.readout.query_positions.start, cfg.n_pos):
                            if q < model.readout.query_positions.stop:
                                r[q] += pattern[h, q, t] * head_out
            out[b, slot] = _literal_readout(model, cache, b, r)
    return out


@pytest.mark.parametrize("name", list(FEATURE_CONFIGS))
@pytest.mark.parametrize("ln_mode", ["center", "split"])
def test_direct_effects_sum_to_the_mlp_term(name, ln_mode):
    model, cache = _cache(name, n_layers=2)
    terms, labels = cache.decompose_layers(ln_mode=ln_mode)
    for layer in range(2):
        effects = neuron_direct_effects(cache, layer, ln_mode=ln_mode, chunk_size=24)
        assert effects.shape == (2, model.cfg.d_mlp, model.cfg.d_embed)
        total = effects.sum(1) + mlp_bias_effect(cache, layer, ln_mode=ln_mode)
        _close(total, terms[labels.index(f"L{layer}_mlp")])


def test_direct_effect_of_one_neuron_literally():
    model, cache = _cache("cls")
    n, layer = 5, 1
    effects = neuron_direct_effects(cache, layer, neurons=[n])
    for b in range(2):
        r = torch.zeros(model.cfg.n_pos, model.cfg.d_model)
        r[0] = cache[f"blocks.{layer}.mlp.hook_post"][b, 0, n] * model.W_out[layer, n]
        _close(effects[b, 0], _literal_readout(model, cache, b, r.detach()))


def test_direct_effects_directions_subsets_and_unit_output():
    model, cache = _cache("map+qk_norm+gated+registers")
    full = neuron_direct_effects(cache, -1)
    dirs = torch.randn(3, model.cfg.d_embed, generator=torch.Generator().manual_seed(0))
    _close(neuron_direct_effects(cache, -1, directions=dirs, chunk_size=5), full @ dirs.T)
    _close(neuron_direct_effects(cache, 2, neurons=[7, -1, 0]), full[:, [7, 63, 0]])
    embed_norm = cache["hook_image_embed"].norm(dim=-1)
    _close(neuron_direct_effects(cache, -1, unit_output=True), full / embed_norm[:, None, None])


@pytest.mark.parametrize("name", LITERAL_CONFIGS)
def test_second_order_matches_a_literal_loop(name):
    model, cache = _cache(name)
    neurons = [0, 17, 40]
    with torch.no_grad():
        expected = _literal_second_order(model, cache, 0, neurons)
    got = neuron_second_order_effects(cache, 0, neurons=neurons, chunk_size=2)
    _close(got, expected)


def test_second_order_directions_chunks_and_last_layer():
    model, cache = _cache("avg+fc_norm+rms")
    full = neuron_second_order_effects(cache, 1)
    assert full.shape == (2, model.cfg.d_mlp, model.cfg.d_embed)
    _close(neuron_second_order_effects(cache, 1, chunk_size=7), full)
    dirs = torch.randn(4, model.cfg.d_embed, generator=torch.Generator().manual_seed(0))
    _close(neuron_second_order_effects(cache, 1, directions=dirs), full @ dirs.T)
    _close(neuron_second_order_effects(cache, 1, neurons=[3, 9]), full[:, [3, 9]])
    assert neuron_second_order_effects(cache, -1).abs().max() == 0


def test_planted_text_combination_is_recovered():
    g = torch.Generator().manual_seed(0)
    pool = torch.randn(200, 64, generator=g)
    texts = [f"text {i}" for i in range(200)]
    result = sparse_text_decomposition(0.7 * pool[3] + 0.3 * pool[8], pool, texts, n_terms=5)
    assert result.indices[:2].tolist() == [3, 8]
    assert result.texts[:2] == ["text 3", "text 8"]
    assert result.weights[0] > result.weights[1] > 0 and (result.weights >= 0).all()
    assert result.cosine > 0.9
    exact = sparse_text_decomposition(
        0.7 * pool[3] + 0.3 * pool[8], pool, texts, l1=1e-4, center_pool=False
    )
    assert exact.indices[:2].tolist() == [3, 8] and exact.cosine > 0.999
    ratio = exact.weights[0] / exact.weights[1]
    expected = (0.7 * pool[3].norm()) / (0.3 * pool[8].norm())
    assert ratio == pytest.approx(float(expected), rel=1e-2)


def test_sparse_text_decomposition_refuses_bad_input():
    pool, texts = torch.randn(5, 8), list("abcde")
    with pytest.raises(ValueError, match="non-empty"):
        sparse_text_decomposition(torch.randn(8), torch.zeros(0, 8), [])
    with pytest.raises(ValueError, match="NaN"):
        sparse_text_decomposition(torch.full((8,), float("nan")), pool, texts)
    with pytest.raises(ValueError, match="width"):
        sparse_text_decomposition(torch.randn(7), pool, texts)
    with pytest.raises(ValueError, match="4 texts"):
        sparse_text_decomposition(torch.randn(8), pool, texts[:4])


def test_top_activating_images_match_brute_force():
    model = tiny_model(seed=3)
    images = random_images(11, seed=4)
    neurons = [2, 30, 63]
    _, cache = model.run_with_cache(images)
    post = cache["blocks.1.mlp.hook_post"][..., neurons]
    for reduce, scores in (("max", post.amax(1)), ("mean", post.mean(1)), ("cls", post[:, 0])):
        top = top_activating_images(
            model, images, 1, neurons, k=4, batch_size=3, reduce=reduce, progress=False
        )
        values, indices = scores.T.topk(4, dim=1)
        torch.testing.assert_close(top.values, values)
        assert torch.equal(top.indices, indices) and top.neurons == neurons and top.layer == 1
    batches = [(images[:5], None), (images[5:], None)]  # an iterable of (images, labels)
    again = top_activating_images(model, batches, -1, neurons, k=20, progress=False)
    values, indices = post.amax(1).T.sort(dim=1, descending=True)
    torch.testing.assert_close(again.values, values)  # k > N: every image, sorted
    assert torch.equal(again.indices, indices)


def test_clear_errors():
    model, cache = _cache("cls", n_layers=2)
    with pytest.raises(IndexError, match="Layer 5 does not exist"):
        neuron_direct_effects(cache, 5)
    with pytest.raises(TypeError, match="layer must be one int"):
        neuron_second_order_effects(cache, "0")
    with pytest.raises(IndexError, match="Neuron 64 does not exist"):
        neuron_direct_effects(cache, 0, neurons=[64])
    with pytest.raises(ValueError, match=r"shape \[k, 16\]"):
        neuron_direct_effects(cache, 0, directions=torch.randn(2, 15))
    with pytest.raises(ValueError, match="NaN"):
        neuron_second_order_effects(cache, 0, directions=torch.full((1, 16), float("nan")))
    with pytest.raises(ValueError, match="ln_mode"):
        neuron_direct_effects(cache, 0, ln_mode="centre")
    _, lean = model.run_with_decomposition_cache(random_images(1))
    with pytest.raises(IncompleteCacheError, match="mlp.hook_post"):
        neuron_direct_effects(lean, 0)
    with pytest.raises(ValueError, match="class token"):
        no_cls = tiny_model(**FEATURE_CONFIGS["map+qk_norm+gated+registers"])
        top_activating_images(no_cls, random_images(2), 0, [0], reduce="cls", progress=False)


def test_counts_must_be_positive_ints():
    _, cache = _cache("cls", n_layers=2)
    with pytest.raises(ValueError, match="chunk_size"):
        neuron_direct_effects(cache, 0, chunk_size=0)
    with pytest.raises(ValueError, match="n_terms"):
        sparse_text_decomposition(torch.randn(8), torch.randn(5, 8), list("abcde"), n_terms=0)
    with pytest.raises(ValueError, match=r"\bk must"):
        top_activating_images(tiny_model(), random_images(2), 0, [0], k=2.5, progress=False)
