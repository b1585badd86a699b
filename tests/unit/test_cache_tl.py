"""TransformerLens' inherited cache methods with vision semantics (vision_lens/cache_tl.py): each
one against a direct computation on a tiny model, or refused with a message naming what to use."""

from __future__ import annotations

import pytest
import torch
from support.tiny import random_images, tiny_model
from transformer_lens import ActivationCache as TLActivationCache

import vision_lens as vl
from vision_lens.cache_tl import TransformerLensMethods

ATOL = 1e-5
# A class-token readout, patch averaging without a class token, attention pooling, DeiT's two
# heads, and a final RMSNorm after pooling.
READOUTS = {
    "cls": dict(),
    "avg-no-cls": dict(readout="avg", class_token=False, n_registers=1),
    "map": dict(readout="map", class_token=False),
    "cls_dist+heads": dict(dist_token=True, readout="cls_dist", dist_head=True, proj_bias=True),
    "avg+fc_norm+rms": dict(readout="avg", final_ln_after_pool=True, norm_type="RMS"),
}

# Every public method ActivationCache inherits from TransformerLens, with the test(s) below.
TL_METHODS = {
    "accumulated_resid": "test_accumulated_resid*",
    "apply_ln_to_stack": "test_apply_ln_to_stack*",
    "apply_slice_to_batch_dim": "cache.py (test_caching, test_hooked_vit)",
    "compute_head_results": "test_compute_head_results",
    "compute_ssm_effective_attention": "test_ssm_methods",
    "compute_ssm_state": "test_ssm_methods",
    "decompose_resid": "test_decompose_resid*",
    "get_full_resid_decomposition": "test_full_resid_decomposition*",
    "get_neuron_results": "test_neuron_results*",
    "items": "test_mapping_methods",
    "keys": "test_mapping_methods",
    "logit_attrs": "test_logit_attrs*",
    "logit_lens": "test_logit_lens_refused",
    "remove_batch_dim": "cache.py (test_caching)",
    "ssm_layers": "test_ssm_methods",
    "stack_activation": "test_stack_activation",
    "stack_head_results": "test_stack_head_results*",
    "stack_neuron_results": "test_stack_neuron_results*",
    "to": "cache.py (test_caching)",
    "toggle_autodiff": "test_toggle_autodiff",
    "values": "test_mapping_methods",
}


def _run(**overrides):
    model = tiny_model(**overrides)
    with torch.no_grad():
        out, cache = model.run_with_cache(random_images(3))
    return model, out, cache


@pytest.fixture(scope="module")
def cls_run():
    return _run()


def _centred(x, model):
    return x - x.mean(-1, keepdim=True) if model.cfg.norm_type == "LN" else x


def _readout_extra(cache):
    """The readout's constant (and attention-pooling MLP): the output minus the readout of the
    final residual stream."""
    terms, labels = cache.decompose_layers()
    keep = [i for i, label in enumerate(labels) if label in ("bias", "readout_mlp")]
    return terms[keep].sum(0)


def test_every_inherited_public_method_is_covered():
    inherited = {
        name
        for name in dir(TLActivationCache)
        if not name.startswith("_") and callable(getattr(TLActivationCache, name))
    }
    assert inherited <= set(TL_METHODS), sorted(inherited - set(TL_METHODS))


# ---------------------------------------------------------------- accumulated_resid


def test_accumulated_resid_is_the_residual_stream(cls_run):
    model, _, cache = cls_run
    stack, labels = cache.accumulated_resid(return_labels=True, incl_mid=True)
    assert labels == ["0_pre", "0_mid", "1_pre", "1_mid", "final_post"]
    direct = [cache["resid_pre", 0], cache["resid_mid", 0], cache["resid_pre", 1]]
    direct += [cache["resid_mid", 1], cache["resid_post", 1]]
    torch.testing.assert_close(stack, torch.stack(direct))


@pytest.mark.parametrize("kind", ["cls", "avg-no-cls", "cls_dist+heads"])
def test_accumulated_resid_final_ln_then_readout_is_the_output(kind):
    model, out, cache = _run(**READOUTS[kind])
    with torch.no_grad():
        final = cache.accumulated_resid(apply_ln=True)[-1]  # ln_final per position
        torch.testing.assert_close(final, model.ln_final(cache["resid_post", -1]))
        rows = final[:, model.readout.query_positions]
        pooled = rows if model.readout.dist_head else rows.mean(1)
        projected = model.readout.project(pooled, model.W_proj, model.b_proj)
    torch.testing.assert_close(projected, out, atol=ATOL, rtol=0)


def test_accumulated_resid_apply_ln_at_a_block_uses_its_ln1_scale(cls_run):
    model, _, cache = cls_run
    stack = cache.accumulated_resid(layer=1, apply_ln=True)
    direct = torch.stack([cache["resid_pre", 0], cache["resid_pre", 1]])
    direct = _centred(direct, model) / cache["blocks.1.ln1.hook_scale"]
    torch.testing.assert_close(stack, direct)


def test_accumulated_resid_final_ln_after_pool_is_refused():
    _, _, cache = _run(**READOUTS["avg+fc_norm+rms"])
    with pytest.raises(ValueError, match="apply_readout_to_stack"):
        cache.accumulated_resid(apply_ln=True)


# ---------------------------------------------------------------- decompose_resid


@pytest.mark.parametrize(
    "layer,mlp_input,target",
    [
        (0, False, "resid_pre"),
        (1, False, "resid_pre"),
        (1, True, "resid_mid"),
        (None, False, "resid_post"),
    ],
)
def test_decompose_resid_sums_to_the_stream(cls_run, layer, mlp_input, target):
    model, _, cache = cls_run
    stack, labels = cache.decompose_resid(layer, mlp_input=mlp_input, return_labels=True)
    assert labels[0] == "embed"
    torch.testing.assert_close(stack[0], cache["blocks.0.hook_resid_pre"])
    at = model.cfg.n_layers - 1 if layer is None else layer
    torch.testing.assert_close(stack.sum(0), cache[target, at], atol=ATOL, rtol=0)


def test_decompose_resid_embed_is_after_ln_pre(cls_run):
    _, _, cache = cls_run  # hook_embed + hook_pos_embed is not what the blocks add to
    embed = cache.decompose_resid(layer=0)[0]
    assert not torch.allclose(embed, cache["hook_embed"] + cache["hook_pos_embed"], atol=1e-3)


def test_decompose_resid_modes_and_pos_slice(cls_run):
    model, _, cache = cls_run
    _, labels = cache.decompose_resid(mode="attn", return_labels=True)
    assert labels == ["embed", "0_attn_out", "1_attn_out"]
    stack, labels = cache.decompose_resid(mode="mlp", incl_embeds=False, return_labels=True)
    assert labels == ["0_mlp_out", "1_mlp_out"]
    torch.testing.assert_close(stack, torch.stack([cache["mlp_out", 0], cache["mlp_out", 1]]))
    patches = model.readout.patch_positions
    sliced = cache.decompose_resid(pos_slice=patches)
    torch.testing.assert_close(sliced, cache.decompose_resid()[:, :, patches])
    with pytest.raises(ValueError, match="incl_embeds"):
        cache.decompose_resid(layer=0, incl_embeds=False)


def test_decompose_resid_apply_ln(cls_run):
    model, _, cache = cls_run
    stack = cache.decompose_resid(layer=1, mlp_input=True, apply_ln=True)
    raw = cache.decompose_resid(layer=1, mlp_input=True)
    torch.testing.assert_close(stack, _centred(raw, model) / cache["blocks.1.ln2.hook_scale"])


# ---------------------------------------------------------------- apply_ln_to_stack


@pytest.mark.parametrize("kind", ["cls", "avg-no-cls"])
def test_apply_ln_to_stack_final_norm_per_position(kind):
    model, _, cache = _run(**READOUTS[kind], norm_type="RMS" if kind == "cls" else "LN")
    stack = cache.decompose_resid()
    direct = _centred(stack, model) / cache["ln_final.hook_scale"]
    torch.testing.assert_close(cache.apply_ln_to_stack(stack), direct)
    # times the norm's weight plus its bias, the terms sum to ln_final of the stream
    normed = cache.apply_ln_to_stack(stack).sum(0) * model.ln_final.w
    if model.ln_final.bias is not None:  # RMSNorm has none
        normed = normed + model.ln_final.bias
    with torch.no_grad():
        torch.testing.assert_close(
            normed, model.ln_final(cache["resid_post", -1]), atol=ATOL, rtol=0
        )


def test_apply_ln_to_stack_pos_slice_and_batch_slice(cls_run):
    model, _, cache = cls_run
    stack = cache.decompose_resid(pos_slice=0)  # the class token: [component, batch, d_model]
    got = cache.apply_ln_to_stack(stack, pos_slice=0, batch_slice=[0, 2])
    direct = _centred(stack[:, [0, 2]], model) / cache["ln_final.hook_scale"][[0, 2], 0]
    torch.testing.assert_close(got, direct)


def test_apply_ln_to_stack_refuses_other_positions():
    model = tiny_model()
    with torch.no_grad():
        _, full = model.run_with_cache(random_images(2))
        _, lean = model.run_with_decomposition_cache(random_images(2))
    stack = full.decompose_resid()  # every position; the lean cache has the class token's scale
    with pytest.raises(ValueError, match="positions"):
        lean.apply_ln_to_stack(stack)
    with pytest.raises(ValueError, match="pos_slice"):
        full.apply_ln_to_stack(stack[:, :, :1])  # sliced stack, no pos_slice given
    rows = lean.apply_ln_to_stack(stack[:, :, :1])  # the rows it holds work
    torch.testing.assert_close(rows, full.apply_ln_to_stack(stack)[:, :, :1])


def test_apply_ln_to_stack_after_pool_is_refused():
    _, _, cache = _run(**READOUTS["avg+fc_norm+rms"])
    with pytest.raises(ValueError, match="final_ln_after_pool.*apply_readout_to_stack"):
        cache.apply_ln_to_stack(cache.decompose_resid())
    block = cache.apply_ln_to_stack(cache.decompose_resid(layer=1), layer=1)  # blocks still work
    assert block.shape[0] == 3


def test_apply_ln_to_stack_recompute_refuses_a_stale_cache():
    model, _, cache = _run()
    with torch.no_grad():
        model.ln_final.w.mul_(2)
    with pytest.raises(vl.StaleCacheError):
        cache.apply_ln_to_stack(cache.accumulated_resid(), recompute_ln=True)


# ---------------------------------------------------------------- readout and logit_attrs


@pytest.mark.parametrize("kind", list(READOUTS))
def test_apply_readout_to_stack_is_decompose_layers(kind):
    model, out, cache = _run(**READOUTS[kind])
    stack = cache.decompose_resid()
    terms = cache.apply_readout_to_stack(stack)
    layers = cache.decompose_layers()
    keep = [i for i, label in enumerate(layers.labels) if label not in ("bias", "readout_mlp")]
    torch.testing.assert_close(terms, layers.terms[keep], atol=ATOL, rtol=0)
    torch.testing.assert_close(terms.sum(0) + _readout_extra(cache), out, atol=ATOL, rtol=0)
    rows = stack[:, :, model.readout.query_positions]  # the readout's rows alone
    torch.testing.assert_close(cache.apply_readout_to_stack(rows), terms)


def test_apply_readout_to_stack_heads_are_decompose_heads(cls_run):
    model, _, cache = cls_run
    heads = cache.apply_readout_to_stack(cache.stack_head_results())  # [L * H, batch, d_embed]
    cfg = model.cfg
    heads = heads.reshape(cfg.n_layers, cfg.n_heads, *heads.shape[1:]).permute(2, 0, 1, 3)
    torch.testing.assert_close(heads, cache.decompose_heads(), atol=ATOL, rtol=0)


def test_apply_readout_to_stack_positions_and_batchless(cls_run):
    model, _, cache = cls_run
    stack = cache.decompose_resid()
    terms = cache.apply_readout_to_stack(stack)
    torch.testing.assert_close(cache.apply_readout_to_stack(stack[:, :, 0], pos_slice=0), terms)
    with pytest.raises(ValueError, match="readout reads positions"):
        cache.apply_readout_to_stack(stack[:, :, 1:], pos_slice=slice(1, None))
    with pytest.raises(ValueError, match="all 5 positions"):
        cache.apply_readout_to_stack(stack[:, :, 1:3])
    one = cache.apply_slice_to_batch_dim(1).apply_readout_to_stack(stack[:, 1], has_batch_dim=False)
    torch.testing.assert_close(one, terms[:, 1])


@pytest.mark.parametrize("kind", ["cls", "avg-no-cls", "map"])
def test_logit_attrs_is_the_readout_dotted_with_directions(kind):
    model, _, cache = _run(**READOUTS[kind])
    texts = torch.randn(4, model.cfg.d_embed, generator=torch.Generator().manual_seed(1))
    stack = cache.decompose_resid()
    layers = cache.decompose_layers()
    direct = layers.terms[: stack.shape[0]] @ texts.T  # embed, attn and mlp terms
    torch.testing.assert_close(cache.logit_attrs(stack, texts), direct, atol=ATOL, rtol=0)
    torch.testing.assert_close(cache.logit_attrs(stack, texts[0]), direct[..., 0])
    diff = cache.logit_attrs(stack, texts[:2], incorrect_directions=texts[2:])
    torch.testing.assert_close(diff, direct[..., :2] - direct[..., 2:], atol=ATOL, rtol=0)


def test_logit_attrs_refuses_tokens_and_batch_slice(cls_run):
    _, _, cache = cls_run
    stack = cache.decompose_resid()
    for tokens in (3, "dog", torch.tensor([1, 2])):
        with pytest.raises(TypeError, match="no vocabulary.*directions"):
            cache.logit_attrs(stack, tokens)
    with pytest.raises(ValueError, match="d_embed"):
        cache.logit_attrs(stack, torch.randn(2, 7))
    with pytest.raises(ValueError, match="apply_slice_to_batch_dim"):
        cache.logit_attrs(stack, torch.randn(16), batch_slice=[0])


def test_logit_lens_refused(cls_run):
    _, _, cache = cls_run
    with pytest.raises(NotImplementedError, match="accumulated_resid.*apply_readout_to_stack"):
        cache.logit_lens()


# ---------------------------------------------------------------- heads


def test_stack_head_results_sum_to_attention(cls_run):
    model, _, cache = cls_run
    stack, labels = cache.stack_head_results(return_labels=True, incl_remainder=True)
    assert labels[:5] == ["L0H0", "L0H1", "L0H2", "L0H3", "L1H0"] and labels[-1] == "remainder"
    H = model.cfg.n_heads
    for layer in range(model.cfg.n_layers):
        heads = stack[layer * H : (layer + 1) * H].sum(0) + model.blocks[layer].attn.b_O
        torch.testing.assert_close(heads, cache["attn_out", layer], atol=ATOL, rtol=0)
    torch.testing.assert_close(stack.sum(0), cache["resid_post", -1], atol=ATOL, rtol=0)


def test_stack_head_results_apply_ln_and_pos_slice(cls_run):
    model, _, cache = cls_run
    got = cache.stack_head_results(layer=1, pos_slice=0, apply_ln=True)
    raw = torch.stack([cache["result", 0][:, 0, h] for h in range(model.cfg.n_heads)])
    direct = _centred(raw, model) / cache["blocks.1.ln1.hook_scale"][:, 0]
    torch.testing.assert_close(got, direct)


def test_stack_head_results_decomposition_cache_is_refused():
    model = tiny_model()
    with torch.no_grad():
        _, lean = model.run_with_decomposition_cache(random_images(2))
    with pytest.raises(vl.IncompleteCacheError, match="decompose_heads"):
        lean.stack_head_results()


def test_compute_head_results():
    model = tiny_model()
    with torch.no_grad():
        _, cache = model.run_with_cache(random_images(2), names_filter=lambda n: "hook_z" in n)
    assert "blocks.0.attn.hook_result" not in cache.cache_dict
    cache.compute_head_results()
    for layer in range(model.cfg.n_layers):
        W_O = model.blocks[layer].attn.W_O
        direct = torch.einsum("bphe,hed->bphd", cache["z", layer], W_O)
        torch.testing.assert_close(cache["result", layer], direct)


# ---------------------------------------------------------------- neurons


def test_neuron_results_sum_to_the_mlp(cls_run):
    model, _, cache = cls_run
    mlp = model.blocks[0].mlp
    neurons = cache.get_neuron_results(0)
    torch.testing.assert_close(neurons, cache["post", 0][..., None] * mlp.W_out)
    torch.testing.assert_close(neurons.sum(-2) + mlp.b_out, cache["mlp_out", 0], atol=ATOL, rtol=0)
    direction = torch.randn(model.cfg.d_model)
    torch.testing.assert_close(
        cache.get_neuron_results(0, neuron_slice=[3, 5], project_output_onto=direction),
        neurons[..., [3, 5], :] @ direction,
    )


def test_stack_neuron_results_remainder_and_fused_ln(cls_run):
    model, _, cache = cls_run
    stack, labels = cache.stack_neuron_results(1, return_labels=True, incl_remainder=True)
    assert labels[0] == "L0N0" and labels[-1] == "remainder"
    torch.testing.assert_close(stack.sum(0), cache["resid_pre", 1], atol=ATOL, rtol=0)
    project = torch.randn(model.cfg.d_model, 3)
    fused = cache.stack_neuron_results(2, apply_ln=True, project_output_onto=project)
    plain = cache.apply_ln_to_stack(cache.stack_neuron_results(2)) @ project
    torch.testing.assert_close(fused, plain, atol=ATOL, rtol=0)


def test_stack_neuron_results_fused_ln_refused_for_mlp_norm():
    model, _, cache = _run(mlp_norm=True)
    with pytest.raises(NotImplementedError, match="mlp_norm.*expand_neurons=False"):
        cache.stack_neuron_results(1, apply_ln=True, project_output_onto=torch.randn(32))


def test_neuron_results_refused_for_mlp_norm():
    _, _, cache = _run(mlp_norm=True)
    with pytest.raises(NotImplementedError, match="mlp_norm"):
        cache.get_neuron_results(0)


def test_neuron_results_mixin_refuses_mlp_norm():
    _, _, cache = _run(mlp_norm=True)
    for method in (
        TransformerLensMethods.get_neuron_results,
        TransformerLensMethods.stack_neuron_results,
    ):
        with pytest.raises(NotImplementedError, match="mlp_norm"):
            method(cache, 1)


# ---------------------------------------------------------------- full decomposition


@pytest.mark.parametrize(
    "layer,mlp_input,target",
    [(0, False, "resid_pre"), (1, True, "resid_mid"), (None, False, "resid_post")],
)
@pytest.mark.parametrize("expand_neurons", [True, False])
def test_full_resid_decomposition_sums_to_the_stream(
    cls_run, layer, mlp_input, target, expand_neurons
):
    model, _, cache = cls_run
    stack, labels = cache.get_full_resid_decomposition(
        layer, mlp_input=mlp_input, expand_neurons=expand_neurons, return_labels=True
    )
    assert labels[-2:] == ["embed", "bias"] and len(labels) == stack.shape[0]
    at = model.cfg.n_layers - 1 if layer is None else layer
    torch.testing.assert_close(stack.sum(0), cache[target, at], atol=1e-4, rtol=0)


def test_full_resid_decomposition_ln_projection_and_readout(cls_run):
    model, out, cache = cls_run
    stack = cache.get_full_resid_decomposition()
    project = torch.randn(model.cfg.d_model, 2)
    got = cache.get_full_resid_decomposition(apply_ln=True, project_output_onto=project)
    torch.testing.assert_close(got, cache.apply_ln_to_stack(stack) @ project)
    terms = cache.apply_readout_to_stack(stack)
    torch.testing.assert_close(terms.sum(0) + _readout_extra(cache), out, atol=ATOL, rtol=0)


def test_full_resid_decomposition_mlp_norm():
    model, _, cache = _run(mlp_norm=True)
    with pytest.raises(NotImplementedError, match="expand_neurons=False"):
        cache.get_full_resid_decomposition()
    stack = cache.get_full_resid_decomposition(expand_neurons=False)
    torch.testing.assert_close(stack.sum(0), cache["resid_post", -1], atol=1e-4, rtol=0)


def test_full_resid_decomposition_refuses_a_stale_cache():
    model, _, cache = _run()
    with torch.no_grad():
        model.blocks[0].attn.b_O.add_(1)
    with pytest.raises(vl.StaleCacheError):
        cache.get_full_resid_decomposition()


# ---------------------------------------------------------------- the rest


def test_stack_activation(cls_run):
    _, _, cache = cls_run
    torch.testing.assert_close(
        cache.stack_activation("pattern"), torch.stack([cache["pattern", 0], cache["pattern", 1]])
    )
    assert cache.stack_activation("resid_pre", layer=1).shape[0] == 1


def test_mapping_methods(cls_run):
    _, _, cache = cls_run
    keys = list(cache.keys())
    assert "blocks.0.attn.hook_pattern" in keys and len(keys) == len(cache)
    assert [name for name, _ in cache.items()] == keys
    for (name, tensor), value in zip(cache.items(), cache.values(), strict=True):
        assert tensor is value and torch.equal(tensor, cache[name])


def test_toggle_autodiff(cls_run):
    _, _, cache = cls_run
    before = torch.is_grad_enabled()
    try:
        cache.toggle_autodiff(False)
        assert not torch.is_grad_enabled()
    finally:
        torch.set_grad_enabled(before)


def test_ssm_methods(cls_run):
    _, _, cache = cls_run
    assert cache.ssm_layers() == []
    with pytest.raises(NotImplementedError, match="pattern"):
        cache.compute_ssm_effective_attention()
    with pytest.raises(NotImplementedError, match="resid_post"):
        cache.compute_ssm_state()
