"""HookedViT against open_clip, and TransformerLens hook semantics.

Every open_clip tower here has random weights (nothing can be downloaded), with LayerNorms,
biases and layer-scale gammas randomised too (see ``oc_helpers.perturb_``) so that a conversion
that drops one of them fails. Big towers (ViT-H/g/bigG, 336 px) are ``@pytest.mark.slow``.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from support.arch_open_clip import CLIP_TOWERS, full_size
from support.oc_helpers import build_visual, free_memory, images, max_err, open_clip_block_outputs
from support.tiny import tiny_model

import vision_lens as vl

F32_TOL = 1e-5
F64_TOL = 1e-10

# Checked against open_clip in the default run (rows of support.arch_open_clip.FULL_SIZE).
ARCHS = full_size(
    *CLIP_TOWERS,
    "ViT-M-16-alt",
    "ViT-B-32-256",
    "ViT-B-32@160x256",
    "ViT-B-32+final_ln_after_pool",
    "ViT-B-32+no_ln_pre",
    "ViT-B-32+gelu_tanh",
    "ViT-B-32+eps1e-6",
    "ViT-B-32+ls0.1",
    "w256-hw32",
)

# float64 copies of these run only in the slow suite.
SLOW_FLOAT64 = ["ViT-L-14"]

SLOW_ARCHS = full_size("ViT-B-16@288", "ViT-L-14-336", "ViT-H-14", "ViT-g-14", "ViT-bigG-14")


# ---------------------------------------------------------------------------------- fixtures
class Arch(NamedTuple):
    label: str
    visual: torch.nn.Module  # open_clip VisionTransformer
    model: vl.HookedViT
    x: torch.Tensor
    ref: torch.Tensor  # open_clip's embedding of x
    block_outs: list[torch.Tensor]  # open_clip's residual stream after every block


_BUILT: dict[str, Arch] = {}


def _get_arch(label: str) -> Arch:
    """Built and run through open_clip once for the module (``arch`` and ``arch_f64`` select
    different subsets and pytest interleaves them, so builds are kept until the module ends)."""
    if label not in _BUILT:
        config, overrides, batch = ARCHS[label]
        visual = build_visual(config, **overrides)
        model = vl.HookedViT.from_open_clip_model(visual)
        x = images(batch, tuple(visual.image_size), seed=1)
        ref, block_outs = open_clip_block_outputs(visual, x)
        _BUILT[label] = Arch(label, visual, model, x, ref, block_outs)
    return _BUILT[label]


@pytest.fixture(scope="module", autouse=True)
def _drop_archs():
    yield
    _BUILT.clear()
    free_memory()


@pytest.fixture(scope="module", params=list(ARCHS))
def arch(request):
    """Every architecture of ARCHS."""
    return _get_arch(request.param)


@pytest.fixture(scope="module", params=[label for label in ARCHS if label not in SLOW_FLOAT64])
def arch_f64(request):
    """The architectures whose float64 copy runs in the default suite."""
    return _get_arch(request.param)


@pytest.fixture(scope="module")
def b32():
    """ViT-B-32 tower (random, perturbed) and its HookedViT, for the semantics tests."""
    visual = build_visual("ViT-B-32", seed=3)
    model = vl.HookedViT.from_open_clip_model(visual)
    return visual, model


@pytest.fixture(scope="module")
def x2():
    return images(2, 224, seed=5)


def tiny(n_layers: int = 2, **kw) -> vl.HookedViT:
    return tiny_model(n_layers=n_layers, std=0.2, **kw)


# ------------------------------------------------------------------- equivalence with open_clip
@torch.no_grad()
def test_output_matches_open_clip_float32(arch):
    out = arch.model(arch.x)
    assert out.shape == arch.ref.shape
    assert arch.ref.std() > 0.1, "degenerate reference: the comparison would be meaningless"
    err = max_err(out, arch.ref)
    print(f"{arch.label}: float32 max abs error {err:.2e}")
    assert err <= F32_TOL, f"{arch.label}: {err}"


@torch.no_grad()
def test_residual_stream_matches_open_clip(arch):
    model = arch.model
    out, cache = model.run_with_cache(arch.x, names_filter=lambda n: n.endswith("hook_resid_post"))
    assert len(arch.block_outs) == model.cfg.n_layers == len(cache)
    assert max_err(out, arch.ref) <= F32_TOL
    for layer, ref_resid in enumerate(arch.block_outs):
        ours = cache["resid_post", layer]
        assert ours.shape == ref_resid.shape
        # The residual stream grows with depth; compare relative to its size.
        tol = F32_TOL * max(1.0, ref_resid.abs().max().item())
        assert max_err(ours, ref_resid) <= tol, f"{arch.label} layer {layer}"


def _float64_error(visual, x) -> float:
    visual64 = copy.deepcopy(visual).double()
    model64 = vl.HookedViT.from_open_clip_model(visual64)
    assert model64.dtype == torch.float64 and model64.cfg.dtype == torch.float64
    x64 = x[:1].double()
    with torch.no_grad():
        err = max_err(model64(x64), visual64(x64))
    del visual64, model64
    free_memory()
    return err


def test_output_matches_open_clip_float64(arch_f64):
    arch = arch_f64
    err = _float64_error(arch.visual, arch.x)
    print(f"{arch.label}: float64 max abs error {err:.2e}")
    assert err <= F64_TOL, f"{arch.label}: {err}"


@pytest.mark.slow
@pytest.mark.parametrize("label", SLOW_FLOAT64)
def test_output_matches_open_clip_float64_slow(label):
    config, overrides, _ = ARCHS[label]
    visual = build_visual(config, **overrides)
    err = _float64_error(visual, images(1, tuple(visual.image_size), seed=1))
    print(f"{label}: float64 max abs error {err:.2e}")
    assert err <= F64_TOL, f"{label}: {err}"


def test_config_is_read_from_the_weights(arch):
    label, visual, model = arch.label, arch.visual, arch.model
    cfg = model.cfg
    first = visual.transformer.resblocks[0]
    assert cfg.n_layers == len(visual.transformer.resblocks)
    assert cfg.d_model == visual.conv1.out_channels
    assert cfg.n_heads == first.attn.num_heads
    assert cfg.d_head * cfg.n_heads == cfg.d_model
    assert cfg.d_mlp == first.mlp.c_fc.out_features
    assert cfg.d_embed == visual.proj.shape[1]
    assert cfg.image_size == tuple(visual.image_size)
    assert cfg.patch_size == tuple(visual.patch_size)
    assert cfg.eps == first.ln_1.eps
    assert cfg.ln_pre == (not isinstance(visual.ln_pre, torch.nn.Identity))
    expected_act = {
        "ViT-B-32-quickgelu": "quick_gelu",
        "ViT-B-32+gelu_tanh": "gelu_tanh",
    }.get(label, "gelu")
    assert cfg.act_fn == expected_act
    if label == "w256-hw32":
        assert (cfg.n_heads, cfg.d_head) == (8, 32)
    if label == "ViT-B-32+eps1e-6":
        assert cfg.eps == 1e-6
    if label == "ViT-B-32+no_ln_pre":
        assert not any(name.startswith("ln_pre") for name in model.hook_dict)


@pytest.mark.slow
@pytest.mark.parametrize("label", list(SLOW_ARCHS))
@torch.no_grad()
def test_big_towers_match_open_clip(label):
    """Large towers, batch 1, float32: output and every residual block."""
    config, overrides, batch = SLOW_ARCHS[label]
    free_memory()
    visual = build_visual(config, **overrides)
    # Share storage with open_clip where layouts agree, to halve peak memory (bigG is 7 GB).
    model = vl.HookedViT.from_open_clip_model(visual, model_name=label, copy=False)
    x = images(batch, tuple(visual.image_size), seed=1)
    ref, block_outs = open_clip_block_outputs(visual, x)
    err = max_err(model(x), ref)
    out, cache = model.run_with_cache(x, names_filter=lambda n: n.endswith("hook_resid_post"))
    resid_errs = [
        max_err(cache["resid_post", layer], r) / max(1.0, r.abs().max().item())
        for layer, r in enumerate(block_outs)
    ]
    err_cached = max_err(out, ref)
    print(
        f"{label}: float32 max abs error {err:.2e} (hooked path {err_cached:.2e}), "
        f"worst relative residual error {max(resid_errs):.2e}, |embed|max {ref.abs().max():.2f}"
    )
    del visual, model, cache, block_outs
    free_memory()
    assert err <= F32_TOL and err_cached <= F32_TOL
    assert max(resid_errs) <= F32_TOL


# ------------------------------------------------------------------------------ hook names
EXPECTED_BLOCK_HOOKS = [
    "attn.hook_attn_scores",
    "attn.hook_k",
    "attn.hook_pattern",
    "attn.hook_q",
    "attn.hook_result",
    "attn.hook_v",
    "attn.hook_z",
    "hook_attn_out",
    "hook_mlp_out",
    "hook_resid_mid",
    "hook_resid_post",
    "hook_resid_pre",
    "ln1.hook_normalized",
    "ln1.hook_scale",
    "ln2.hook_normalized",
    "ln2.hook_scale",
    "mlp.hook_post",
    "mlp.hook_pre",
]
EXPECTED_GLOBAL_HOOKS = [
    "hook_embed",
    "hook_image_embed",
    "hook_pooled",
    "hook_pos_embed",
    "ln_final.hook_normalized",
    "ln_final.hook_scale",
    "ln_pre.hook_normalized",
    "ln_pre.hook_scale",
]


def test_hook_names_are_exactly_those_of_the_design():
    model = tiny(n_layers=2)
    expected = EXPECTED_GLOBAL_HOOKS + [
        f"blocks.{layer}.{name}" for layer in range(2) for name in EXPECTED_BLOCK_HOOKS
    ]
    assert sorted(model.hook_dict) == sorted(expected)
    assert model.hook_names("hook_pattern") == [
        "blocks.0.attn.hook_pattern",
        "blocks.1.attn.hook_pattern",
    ]


def test_without_ln_pre_there_are_no_ln_pre_hooks():
    model = tiny(n_layers=1, ln_pre=False)
    assert not [n for n in model.hook_dict if n.startswith("ln_pre")]


@torch.no_grad()
def test_hook_shapes():
    model = tiny(n_layers=2)
    cfg = model.cfg
    b, p, h, dh, d = 3, cfg.n_pos, cfg.n_heads, cfg.d_head, cfg.d_model
    _, cache = model.run_with_cache(images(b, 16))
    assert len(cache) == len(model.hook_dict)
    expected = {
        "hook_embed": (b, p, d),
        "hook_pos_embed": (b, p, d),
        "ln_pre.hook_scale": (b, p, 1),
        "ln_pre.hook_normalized": (b, p, d),
        "ln_final.hook_scale": (b, p, 1),
        "ln_final.hook_normalized": (b, p, d),
        "hook_pooled": (b, d),
        "hook_image_embed": (b, cfg.d_embed),
    }
    for layer in range(2):
        pre = f"blocks.{layer}."
        expected |= {
            pre + "hook_resid_pre": (b, p, d),
            pre + "ln1.hook_scale": (b, p, 1),
            pre + "ln1.hook_normalized": (b, p, d),
            pre + "attn.hook_q": (b, p, h, dh),
            pre + "attn.hook_k": (b, p, h, dh),
            pre + "attn.hook_v": (b, p, h, dh),
            pre + "attn.hook_attn_scores": (b, h, p, p),
            pre + "attn.hook_pattern": (b, h, p, p),
            pre + "attn.hook_z": (b, p, h, dh),
            pre + "attn.hook_result": (b, p, h, d),
            pre + "hook_attn_out": (b, p, d),
            pre + "hook_resid_mid": (b, p, d),
            pre + "ln2.hook_scale": (b, p, 1),
            pre + "ln2.hook_normalized": (b, p, d),
            pre + "mlp.hook_pre": (b, p, cfg.d_mlp),
            pre + "mlp.hook_post": (b, p, cfg.d_mlp),
            pre + "hook_mlp_out": (b, p, d),
            pre + "hook_resid_post": (b, p, d),
        }
    assert {k: tuple(v.shape) for k, v in cache.items()} == expected


# ------------------------------------------------------------------------- hook semantics
@pytest.fixture(scope="module")
def b32_cache(b32, x2):
    _, model = b32
    with torch.no_grad():
        return model.run_with_cache(x2)


def test_cache_is_vision_lens_activation_cache(b32_cache, b32):
    _, cache = b32_cache
    _, model = b32
    assert isinstance(cache, vl.ActivationCache)
    assert len(cache) == len(model.hook_dict)
    assert torch.equal(cache["pattern", 1], cache["blocks.1.attn.hook_pattern"])
    last = model.cfg.n_layers - 1
    assert torch.equal(cache["resid_post", -1], cache[f"blocks.{last}.hook_resid_post"])
    assert torch.equal(cache["z", 0], cache["blocks.0.attn.hook_z"])


def test_result_sums_to_attn_out(b32_cache, b32):
    _, cache = b32_cache
    _, model = b32
    for layer in range(model.cfg.n_layers):
        result = cache["result", layer]
        recon = result.sum(dim=2) + model.blocks[layer].attn.b_O
        assert max_err(recon, cache["attn_out", layer]) <= 1e-5, layer


def test_residual_bookkeeping(b32_cache, b32):
    """resid_mid = resid_pre + attn_out, resid_post = resid_mid + mlp_out, layers chain."""
    _, cache = b32_cache
    _, model = b32
    for layer in range(model.cfg.n_layers):
        pre, mid, post = (cache[n, layer] for n in ("resid_pre", "resid_mid", "resid_post"))
        assert max_err(pre + cache["attn_out", layer], mid) <= 1e-5
        assert max_err(mid + cache["mlp_out", layer], post) <= 1e-5
        if layer:
            assert torch.equal(pre, cache["resid_post", layer - 1])


def test_pattern_is_softmax_of_scores_and_rows_sum_to_one(b32_cache, b32):
    _, cache = b32_cache
    _, model = b32
    for layer in (0, model.cfg.n_layers - 1):
        pattern = cache["pattern", layer]
        assert max_err(pattern.sum(-1), torch.ones_like(pattern[..., 0])) <= 1e-5
        assert max_err(pattern, cache["attn_scores", layer].softmax(-1)) <= 1e-6
        q, k = cache["q", layer], cache["k", layer]
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(model.cfg.d_head)
        assert max_err(scores, cache["attn_scores", layer]) <= 1e-4


def test_layer_norm_hooks(b32_cache, b32):
    """ln1.hook_normalized * w + b is what the attention sees; scale is the per-token std."""
    _, cache = b32_cache
    _, model = b32
    resid = cache["resid_pre", 3]
    scale = cache["blocks.3.ln1.hook_scale"]
    centred = resid - resid.mean(-1, keepdim=True)
    ref_scale = (centred.pow(2).mean(-1, keepdim=True) + model.cfg.eps).sqrt()
    assert max_err(scale, ref_scale) <= 1e-5
    assert max_err(cache["blocks.3.ln1.hook_normalized"], centred / ref_scale) <= 1e-5
    pooled = cache["ln_final.hook_normalized"][:, 0] * model.ln_final.w + model.ln_final.b
    assert max_err(pooled, cache["hook_pooled"]) <= 1e-5
    assert max_err(cache["hook_pooled"] @ model.W_proj, cache["hook_image_embed"]) <= 1e-5


@torch.no_grad()
def test_fast_path_equals_hooked_path(b32, b32_cache, x2):
    visual, model = b32
    out_cached, _ = b32_cache
    out_fast = model(x2)
    assert max_err(out_fast, out_cached) <= 1e-5
    assert max_err(out_fast, visual(x2)) <= 1e-5


@torch.no_grad()
def test_run_with_cache_names_filter(b32, x2):
    _, model = b32
    _, cache = model.run_with_cache(x2, names_filter="blocks.2.attn.hook_pattern")
    assert list(cache.keys()) == ["blocks.2.attn.hook_pattern"]
    names = ["hook_embed", "blocks.0.hook_resid_post", "ln_final.hook_scale"]
    _, cache = model.run_with_cache(x2, names_filter=names)
    assert sorted(cache.keys()) == sorted(names)
    _, cache = model.run_with_cache(x2, names_filter=lambda n: n.endswith("hook_z"))
    assert sorted(cache.keys()) == sorted(f"blocks.{i}.attn.hook_z" for i in range(12))
    with pytest.raises(ValueError, match="names_filter"):
        model.run_with_cache(x2, names_filter=3)
    # Hooks are gone afterwards.
    assert not any(hp.fwd_hooks or hp.bwd_hooks for hp in model.hook_points())


@torch.no_grad()
def test_run_with_cache_device_and_remove_batch_dim(b32):
    _, model = b32
    x1 = images(1, 224, seed=9)
    _, cache = model.run_with_cache(x1, names_filter=["hook_embed"], device="cpu")
    assert cache["hook_embed"].device.type == "cpu"
    _, cache = model.run_with_cache(x1, names_filter=["hook_embed"], device="meta")
    assert cache["hook_embed"].device.type == "meta"

    out, cache = model.run_with_cache(
        x1, names_filter=lambda n: n.startswith("blocks.0."), remove_batch_dim=True
    )
    p, h = model.cfg.n_pos, model.cfg.n_heads
    assert out.shape == (1, model.cfg.d_embed)
    assert cache.has_batch_dim is False
    assert cache["pattern", 0].shape == (h, p, p)
    assert cache["resid_post", 0].shape == (p, model.cfg.d_model)
    _, full = model.run_with_cache(x1, names_filter="blocks.0.attn.hook_pattern")
    assert max_err(cache["pattern", 0], full["pattern", 0][0]) <= 1e-6
    with pytest.raises(AssertionError, match="batch size 2"):
        model.run_with_cache(images(2, 224), remove_batch_dim=True)


@torch.no_grad()
def test_return_plain_dict(b32, x2):
    _, model = b32
    _, cache = model.run_with_cache(x2, names_filter="hook_pooled", return_cache_object=False)
    assert type(cache) is dict and list(cache) == ["hook_pooled"]


@torch.no_grad()
def _ablate_head_open_clip(visual, x, layer: int, head: int):
    """open_clip's forward with head ``head`` of block ``layer`` removed, computed from
    open_clip's modules and an attention written out by hand (independent of vision_lens)."""
    blocks = visual.transformer.resblocks
    resid = visual._embeds(x)
    for blk in blocks[:layer]:
        resid = blk(resid)
    blk = blocks[layer]
    b, p, d = resid.shape
    n_heads = blk.attn.num_heads
    dh = d // n_heads
    qkv = F.linear(blk.ln_1(resid), blk.attn.in_proj_weight, blk.attn.in_proj_bias)
    q, k, v = (t.reshape(b, p, n_heads, dh).transpose(1, 2) for t in qkv.split(d, dim=-1))
    attn = (q @ k.transpose(-1, -2) / math.sqrt(dh)).softmax(-1)
    z = attn @ v  # [b, h, p, dh]
    z[:, head] = 0
    attn_out = blk.attn.out_proj(z.transpose(1, 2).reshape(b, p, d))
    resid = resid + blk.ls_1(attn_out)
    resid = resid + blk.ls_2(blk.mlp(blk.ln_2(resid)))
    for blk in blocks[layer + 1 :]:
        resid = blk(resid)
    pooled, _ = visual._pool(resid)
    return pooled @ visual.proj


@pytest.mark.parametrize("hook", ["hook_z", "hook_result"])
@torch.no_grad()
def test_zero_ablating_a_head_matches_manual_recomputation(b32, x2, hook):
    visual, model = b32
    layer, head = 4, 7

    def zero_head(t, hook):
        t[:, :, head] = 0
        return t

    ablated = model.run_with_hooks(x2, fwd_hooks=[(f"blocks.{layer}.attn.{hook}", zero_head)])
    expected = _ablate_head_open_clip(visual, x2, layer, head)
    clean = visual(x2)
    assert max_err(expected, clean) > 1e-3, "ablation has no effect: the test would prove nothing"
    assert max_err(ablated, expected) <= 1e-5
    # Hooks were removed: the next run is clean again.
    assert max_err(model(x2), clean) <= 1e-5


@torch.no_grad()
def test_hooks_context_manager_adds_and_removes(b32, x2):
    _, model = b32
    seen = []
    name = "blocks.1.attn.hook_pattern"
    with model.hooks(fwd_hooks=[(name, lambda t, hook: seen.append(hook.name))]):
        assert len(model.hook_dict[name].fwd_hooks) == 1
        model(x2)
    assert seen == [name]
    assert not model.hook_dict[name].fwd_hooks
    assert not model.hook_dict[name]._forward_hooks
    model(x2)
    assert seen == [name]
    # Also removed when the body raises.
    with pytest.raises(RuntimeError, match="boom"):
        with model.hooks(fwd_hooks=[(name, lambda t, hook: None)]):
            raise RuntimeError("boom")
    assert not model.hook_dict[name]._forward_hooks


@torch.no_grad()
def test_editing_hook_changes_output_observing_hook_does_not(b32, x2):
    _, model = b32
    clean = model(x2)

    def sharpen(pattern, hook):
        return (pattern * 3).softmax(-1)

    edited = model.run_with_hooks(x2, fwd_hooks=[("blocks.5.attn.hook_pattern", sharpen)])
    assert max_err(edited, clean) > 1e-3

    observed = model.run_with_hooks(
        x2, fwd_hooks=[(lambda n: True, lambda t, hook: None)]
    )  # every hook point, returning None
    assert max_err(observed, clean) <= 1e-5

    # Hooks on the global hook points edit too.
    doubled = model.run_with_hooks(x2, fwd_hooks=[("hook_image_embed", lambda t, hook: 2 * t)])
    assert max_err(doubled, 2 * clean) <= 1e-6


@torch.no_grad()
def test_hook_result_is_only_built_when_hooked(b32, x2, monkeypatch):
    _, model = b32
    cfg = model.cfg
    shapes = []
    real_einsum = torch.einsum

    def spy(*args, **kwargs):
        out = real_einsum(*args, **kwargs)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch, "einsum", spy)
    result_shape = (x2.shape[0], cfg.n_pos, cfg.n_heads, cfg.d_model)
    calls = []
    hp = model.blocks[0].attn.hook_result
    monkeypatch.setattr(hp, "forward", lambda t: calls.append(1) or t)

    _, cache = model.run_with_cache(x2, names_filter="blocks.0.attn.hook_z")
    assert list(cache) == ["blocks.0.attn.hook_z"]
    assert shapes, "the explicit attention path did not run although hook_z was hooked"
    assert result_shape not in shapes
    assert not calls

    shapes.clear()
    _, cache = model.run_with_cache(x2, names_filter="blocks.0.attn.hook_result")
    assert result_shape in shapes and calls
    assert cache["result", 0].shape == result_shape


@torch.no_grad()
def test_no_hooks_takes_fused_path(b32, x2, monkeypatch):
    """Without hooks the attention never materialises the pattern."""
    _, model = b32
    shapes = []
    real_einsum = torch.einsum
    monkeypatch.setattr(torch, "einsum", lambda *a, **k: shapes.append(1) or real_einsum(*a, **k))
    model(x2)
    assert not shapes


def test_backward_hook_fires_on_attention_hook_point(b32, x2):
    """A backward hook alone switches to the explicit path and receives dLoss/dpattern."""
    _, model = b32
    name = "blocks.10.attn.hook_pattern"
    grads, kept = [], []

    def keep(t, hook):
        t.retain_grad()
        kept.append(t)

    with model.hooks(bwd_hooks=[(name, lambda g, hook: grads.append(g.detach().clone()))]):
        model(x2).pow(2).sum().backward()
    assert len(grads) == 1
    assert grads[0].shape == (2, model.cfg.n_heads, model.cfg.n_pos, model.cfg.n_pos)
    assert grads[0].abs().max() > 0

    model.zero_grad(set_to_none=True)
    with model.hooks(fwd_hooks=[(name, keep)]):
        model(x2).pow(2).sum().backward()
    assert max_err(grads[0], kept[0].grad) <= 1e-6
    model.zero_grad(set_to_none=True)


def test_backward_caching_hooks(b32, x2):
    """TransformerLens' add_caching_hooks(incl_bwd=True) records gradients of our hook points."""
    _, model = b32
    cache = model.add_caching_hooks(
        names_filter=lambda n: n in ("blocks.11.hook_resid_post", "blocks.11.attn.hook_result"),
        incl_bwd=True,
    )
    try:
        model(x2).sum().backward()
    finally:
        model.reset_hooks()
        model.zero_grad(set_to_none=True)
    grad = cache["blocks.11.hook_resid_post_grad"]
    assert grad.shape == (2, model.cfg.n_pos, model.cfg.d_model)
    # Only the class token reaches the embedding.
    assert grad[:, 1:].abs().max() == 0 and grad[:, 0].abs().max() > 0
    assert cache["blocks.11.attn.hook_result_grad"].shape[2] == model.cfg.n_heads


# ---------------------------------------------------------------------------- weights
def test_weight_property_shapes(b32):
    _, model = b32
    cfg = model.cfg
    L, h, d, dh, dm, de = (
        cfg.n_layers,
        cfg.n_heads,
        cfg.d_model,
        cfg.d_head,
        cfg.d_mlp,
        cfg.d_embed,
    )
    shapes = {
        "W_Q": (L, h, d, dh),
        "W_K": (L, h, d, dh),
        "W_V": (L, h, d, dh),
        "W_O": (L, h, dh, d),
        "b_Q": (L, h, dh),
        "b_K": (L, h, dh),
        "b_V": (L, h, dh),
        "b_O": (L, d),
        "W_in": (L, d, dm),
        "b_in": (L, dm),
        "W_out": (L, dm, d),
        "b_out": (L, d),
        "W_proj": (d, de),
        "W_E": (d, 3, *cfg.patch_size),
        "W_pos": (cfg.n_pos, d),
    }
    assert {k: tuple(getattr(model, k).shape) for k in shapes} == shapes


@pytest.fixture(scope="module")
def ls_tower():
    visual = build_visual("ViT-M-16-alt", seed=11)
    return visual, vl.HookedViT.from_open_clip_model(visual)


@pytest.mark.parametrize("which", ["b32", "ls_tower"])
def test_weight_values_match_open_clip(which, request):
    visual, model = request.getfixturevalue(which)
    d, dh = model.cfg.d_model, model.cfg.d_head
    W_Q, W_K, W_V, W_O = model.W_Q, model.W_K, model.W_V, model.W_O
    b_Q, b_V, b_O = model.b_Q, model.b_V, model.b_O
    W_in, W_out, b_out = model.W_in, model.W_out, model.b_out
    for layer in (0, model.cfg.n_layers - 1):
        blk = visual.transformer.resblocks[layer]
        w, bias = blk.attn.in_proj_weight, blk.attn.in_proj_bias
        ls_1 = getattr(blk.ls_1, "gamma", torch.ones(d))
        ls_2 = getattr(blk.ls_2, "gamma", torch.ones(d))
        for head in (0, model.cfg.n_heads - 1):
            rows = slice(head * dh, (head + 1) * dh)
            assert torch.equal(W_Q[layer, head], w[rows].T)
            assert torch.equal(W_K[layer, head], w[d:][rows].T)
            assert torch.equal(W_V[layer, head], w[2 * d :][rows].T)
            assert torch.equal(b_Q[layer, head], bias[rows])
            assert torch.equal(b_V[layer, head], bias[2 * d :][rows])
            expected_W_O = (blk.attn.out_proj.weight[:, rows] * ls_1[:, None]).T
            assert max_err(W_O[layer, head], expected_W_O) == 0
        assert max_err(b_O[layer], blk.attn.out_proj.bias * ls_1) == 0
        assert torch.equal(W_in[layer], blk.mlp.c_fc.weight.T)
        assert max_err(W_out[layer], (blk.mlp.c_proj.weight * ls_2[:, None]).T) == 0
        assert max_err(b_out[layer], blk.mlp.c_proj.bias * ls_2) == 0
    assert torch.equal(model.W_proj, visual.proj)
    assert torch.equal(model.W_pos, visual.positional_embedding)
    assert torch.equal(model.embed.cls_token, visual.class_embedding)
    assert torch.equal(model.W_E, visual.conv1.weight)


def test_layer_scale_is_really_folded(ls_tower):
    visual, model = ls_tower
    gamma = visual.transformer.resblocks[0].ls_1.gamma
    assert gamma.abs().min() < 0.3 and (gamma < 0).any(), "perturbation did not randomise gammas"
    raw = visual.transformer.resblocks[0].attn.out_proj.weight.T.reshape_as(model.W_O[0])
    assert max_err(model.W_O[0], raw) > 1e-2


def test_component_weight_views_edit_the_model():
    model = tiny(n_layers=1)
    attn = model.blocks[0].attn
    with torch.no_grad():
        attn.W_Q[1].zero_()
        attn.W_O[2].fill_(1.0)
    assert attn.qkv_weight[0, 1].abs().max() == 0
    assert torch.equal(attn.out_weight[:, 2 * attn.d_head : 3 * attn.d_head], torch.ones(32, 8))


def test_weights_are_copied_not_shared(b32):
    visual, _ = b32
    model = vl.HookedViT.from_open_clip_model(visual)
    before = visual.transformer.resblocks[0].attn.in_proj_weight.clone()
    with torch.no_grad():
        model.blocks[0].attn.qkv_weight.zero_()
    assert torch.equal(visual.transformer.resblocks[0].attn.in_proj_weight, before)


def test_double_and_float_keep_cfg_dtype_in_sync():
    model = tiny(n_layers=1)
    model.double()
    assert model.cfg.dtype == torch.float64 == model.dtype
    out = model(images(1, 16, dtype=torch.float64))
    assert out.dtype == torch.float64
    model.float()
    assert model.cfg.dtype == torch.float32
    model.to(torch.float64)
    assert model.cfg.dtype == torch.float64


# ------------------------------------------------------------------------- input validation
@pytest.mark.parametrize(
    "bad, error, phrase",
    [
        (lambda: torch.randn(2, 3, 32, 32), ValueError, "pixels but this model takes"),
        (lambda: torch.randn(3, 16, 16), ValueError, "add a batch dimension"),
        (lambda: torch.randn(2, 1, 16, 16), ValueError, r"\[batch, 3, 16, 16\]"),
        (lambda: torch.randn(3, 16), ValueError, r"\[batch, 3, 16, 16\]"),
        (lambda: torch.randint(0, 255, (2, 3, 16, 16)), TypeError, "float tensor"),
        (lambda: torch.randn(2, 3, 16, 16).tolist(), TypeError, "model.preprocess"),
        (lambda: None, TypeError, "got NoneType"),
    ],
    ids=["size", "3d", "channels", "2d", "integer", "list", "none"],
)
def test_input_validation(bad, error, phrase):
    model = tiny(n_layers=1)
    with pytest.raises(error, match=phrase):
        model(bad())
    with pytest.raises(error, match=phrase):
        model.run_with_cache(bad())
    assert not any(hp._forward_hooks for hp in model.hook_points())


def test_input_is_cast_to_model_dtype():
    model = tiny(n_layers=1)
    x = images(2, 16, dtype=torch.float64)
    assert model(x).dtype == torch.float32
    assert max_err(model(x), model(x.float())) == 0


# ----------------------------------------------------------------------------- config
def test_config_validation():
    base = dict(n_layers=1, d_model=64, n_heads=4, d_mlp=128, d_embed=16)
    with pytest.raises(ValueError, match="not divisible"):
        vl.HookedViTConfig(**{**base, "n_heads": 3}, image_size=32, patch_size=8)
    with pytest.raises(ValueError, match="not a multiple"):
        vl.HookedViTConfig(**base, image_size=30, patch_size=8)
    with pytest.raises(ValueError, match="not a multiple"):
        vl.HookedViTConfig(**base, image_size=(32, 36), patch_size=8)
    with pytest.raises(ValueError, match="act_fn"):
        vl.HookedViTConfig(**base, image_size=32, patch_size=8, act_fn="swish")
    with pytest.raises(ValueError, match="norm_type"):
        vl.HookedViTConfig(**base, image_size=32, patch_size=8, norm_type="batchnorm")
    with pytest.raises(ValueError, match="readout"):
        vl.HookedViTConfig(**base, image_size=32, patch_size=8, readout="max")
    with pytest.raises(ValueError, match="class token"):
        vl.HookedViTConfig(**base, image_size=32, patch_size=8, class_token=False)
    with pytest.raises(ValueError, match="distillation token"):
        vl.HookedViTConfig(**base, image_size=32, patch_size=8, readout="cls_dist")
    with pytest.raises(ValueError, match="final_ln_after_pool"):
        vl.HookedViTConfig(
            **base, image_size=32, patch_size=8, readout="map", final_ln_after_pool=True
        )
    regs = vl.HookedViTConfig(**base, image_size=32, patch_size=8, dist_token=True, n_registers=4)
    assert (regs.n_prefix, regs.n_pos) == (6, 22)
    cfg = vl.HookedViTConfig(**base, image_size=(32, 48), patch_size=8)
    assert (cfg.grid_size, cfg.n_patches, cfg.n_pos, cfg.d_head) == ((4, 6), 24, 25, 16)
    explicit = vl.HookedViTConfig(**{**base, "n_heads": 3}, d_head=16, image_size=32, patch_size=8)
    assert explicit.d_head == 16
