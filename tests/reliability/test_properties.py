"""Property-based tests: for random small architectures and inputs, the invariants hold.

hypothesis draws a config (depth, widths, heads, patch grid, prefix tokens, readout, norm type,
qk-norm, gated MLP, RoPE, layer-norm treatment) and images; every example must satisfy:

- the decomposition into layers sums to the model's output; heads plus attention biases sum to
  each attention layer; tokens sum to the heads; the joint head-token terms sum to the heads;
- ``run_with_cache`` returns ``model(x)`` (to float64 rounding: hooks switch fused kernels off);
- every hook point fires once per forward;
- a random timm ViT (depth, widths, heads, sizes, class token, registers, pooling, prefix
  position embeddings, qk-norm, layer scale, head) converts exactly (parity with the source).
"""

from __future__ import annotations

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from support.tiny import tiny_model  # noqa: E402

TOL = 1e-9  # float64 throughout


@st.composite
def architectures(draw) -> dict:
    """Keyword overrides of ``HookedViTConfig.tiny`` for one random, valid architecture."""
    n_heads = draw(st.sampled_from([1, 2, 4]))
    d_head = draw(st.sampled_from([2, 4, 6]))
    readout = draw(st.sampled_from(["cls", "avg", "cls_dist", "map"]))
    class_token = readout in ("cls", "cls_dist") or draw(st.booleans())
    rope = draw(st.sampled_from([None, "half", "interleaved"]))
    gated = draw(st.booleans())
    return dict(
        n_layers=draw(st.integers(1, 3)),
        d_model=n_heads * d_head,
        n_heads=n_heads,
        d_mlp=draw(st.sampled_from([8, 12])),
        d_embed=draw(st.integers(3, 9)),
        image_size=(4 * draw(st.integers(1, 3)), 4 * draw(st.integers(1, 3))),
        patch_size=4,
        class_token=class_token,
        dist_token=readout == "cls_dist",
        n_registers=draw(st.integers(0, 2)),
        readout=readout,
        norm_type=draw(st.sampled_from(["LN", "RMS"])),
        qk_norm=draw(st.booleans()),
        gated_mlp=gated,
        act_fn="silu" if gated else draw(st.sampled_from(["gelu", "quick_gelu"])),
        rope=rope,
        dtype=torch.float64,
    )


def _model(arch: dict, seed: int):
    return tiny_model(seed=seed, std=0.3, **arch)


PROPERTY_SETTINGS = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(
    arch=architectures(),
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 3),
    ln_mode=st.sampled_from(["center", "split"]),
)
def test_decompositions_sum_to_the_output(arch, seed, batch, ln_mode):
    model = _model(arch, seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, *model.cfg.image_size, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        plain = model(x)
        out, cache = model.run_with_cache(x)
    scale = max(1.0, out.abs().max().item())
    torch.testing.assert_close(out, plain, rtol=0, atol=TOL * scale)
    terms, labels = cache.decompose_layers(ln_mode=ln_mode)
    torch.testing.assert_close(terms.sum(0), out, rtol=0, atol=TOL * scale)
    heads = cache.decompose_heads(ln_mode=ln_mode)
    bias = cache.attention_bias_terms(ln_mode=ln_mode)
    n_layers = model.cfg.n_layers
    attn = torch.stack([terms[labels.index(f"L{i}_attn")] for i in range(n_layers)], 1)
    torch.testing.assert_close(heads.sum(2) + bias, attn, rtol=0, atol=TOL * scale)
    tokens = cache.decompose_tokens(ln_mode=ln_mode)
    assert tokens.shape[1] == model.cfg.n_pos == len(cache.token_names())
    torch.testing.assert_close(tokens.sum(1), heads.sum((1, 2)), rtol=0, atol=TOL * scale)
    joint = cache.decompose_heads_tokens(layers=[-1], ln_mode=ln_mode)
    torch.testing.assert_close(joint.sum(3)[:, 0], heads[:, -1], rtol=0, atol=TOL * scale)


@PROPERTY_SETTINGS
@given(arch=architectures(), seed=st.integers(0, 2**16))
def test_every_hook_point_fires_once(arch, seed):
    model = _model(arch, seed)
    x = torch.randn(2, 3, *model.cfg.image_size, dtype=torch.float64)
    calls: dict[str, int] = {}

    def count(tensor, hook):
        calls[hook.name] = calls.get(hook.name, 0) + 1

    with torch.no_grad():
        model.run_with_hooks(x, fwd_hooks=[(lambda name: True, count)])
    assert calls == dict.fromkeys(model.hook_dict, 1)


@st.composite
def timm_vits(draw) -> dict:
    """``timm.create_model("vit_tiny_patch16_224", **kwargs)`` overrides for a random plain ViT:
    depth, width, heads, image and patch size, class token, registers, pooling, position
    embeddings on the prefix or not, qk-norm, layer scale, classifier head."""
    n_heads = draw(st.sampled_from([1, 2, 4]))
    class_token = draw(st.booleans())
    pools = ["token", "avg", "map"] if class_token else ["avg", "map"]
    pool = draw(st.sampled_from(pools))
    # timm's MAP head leaves the prefix tokens out unless told otherwise; HookedViT's attends to
    # every token (the other layout is refused with a clear error, tested in tests/parity).
    prefix = {"pool_include_prefix": True} if pool == "map" else {}
    return dict(
        **prefix,
        depth=draw(st.integers(1, 3)),
        embed_dim=n_heads * draw(st.sampled_from([4, 8])),
        num_heads=n_heads,
        img_size=8 * draw(st.integers(1, 3)),
        patch_size=8,
        class_token=class_token,
        reg_tokens=draw(st.integers(0, 2)),
        global_pool=pool,
        no_embed_class=draw(st.booleans()),
        qk_norm=draw(st.booleans()),
        init_values=draw(st.sampled_from([None, 0.1])),
        num_classes=draw(st.sampled_from([0, 5])),
        mlp_ratio=2.0,
    )


@PROPERTY_SETTINGS
@given(kwargs=timm_vits(), seed=st.integers(0, 2**16))
def test_random_timm_vits_convert_exactly(kwargs, seed):
    """Parity with the source model: a random timm ViT and its HookedViT give the same output,
    and the converted model's decomposition sums to it."""
    from support.arch_timm import make_timm_model

    import vision_lens as vl

    source = make_timm_model("vit_tiny_patch16_224", kwargs, torch.float64, seed=seed)
    model = vl.HookedViT.from_timm(source)
    size = (kwargs["img_size"], kwargs["img_size"])
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with torch.no_grad():
        ref = source(x)
        out, cache = model.run_with_cache(x)
    scale = max(1.0, ref.abs().max().item())
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-10 * scale)
    terms = cache.decompose_layers().terms
    torch.testing.assert_close(terms.sum(0), out, rtol=0, atol=TOL * scale)
