"""Every open_clip image tower that is a transformer over patches converts exactly.

Rows (:mod:`arch_open_clip`) are small random-weight towers: open_clip ``VisionTransformer`` s
(class-token and average pooling, final LayerNorm before or after pooling, qk-norm and head-scale
custom blocks) and ``TimmModel`` s (SigLIP, SigLIP2, EVA01, CLIP ViTs in timm, Perception Encoder
with rotary position embeddings, with open_clip's linear head folded into the projection). A walk
over ``open_clip.list_pretrained()`` checks which pretrained models convert.
"""

from __future__ import annotations

import collections

import open_clip
import pytest
import torch
from open_clip.model import _build_vision_tower
from support.arch_open_clip import (
    OPEN_CLIP_ROWS,
    build_tower,
    estimated_vision_params,
    images,
    is_transformer_over_patches,
    tower_image_size,
)

import vision_lens as vl
from vision_lens.loading.open_clip import (
    check_open_clip_config,
    config_unsupported_reason,
    unsupported_reason,
)

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
LABELS = [row[0] for row in OPEN_CLIP_ROWS]
ROWS = {row[0]: row for row in OPEN_CLIP_ROWS}

# Transformer-over-patches towers in open_clip's pretrained list that do not convert, and why.
EXPECTED_REFUSED = {
    "coca_": "attentional pooler",  # CoCa: 256-query attention pool, LayerNorm after pooling
    # EVA02-E-14(-plus): post-norm blocks.
    "EVA02-E-": "EvaBlockPostNorm",
    # EVA02-B/L: a norm over all heads' concatenated outputs before the attention projection
    # (scale_attn_inner) mixes the heads, so the per-head decomposition would not be exact.
    "EVA02-": "scale_attn_inner",
}


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().double() - b.detach().double()).abs().max().item()


@pytest.fixture(scope="module", params=[torch.float32, torch.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


@pytest.mark.parametrize("label", LABELS)
@torch.no_grad()
def test_tower_matches_open_clip_and_decomposes(label, dtype):
    _, name, overrides = ROWS[label]
    tower = build_tower(name, dtype=dtype, **overrides)
    x = images(2, tower_image_size(tower), seed=3, dtype=dtype)
    ref = tower(x)
    model = vl.HookedViT.from_open_clip_model(tower)
    assert model.cfg.dtype == dtype
    out, cache = model.run_with_cache(x)
    scale = max(1.0, ref.abs().max().item())
    tol = TOL[dtype] * scale
    assert ref.std() > 0.05
    assert _err(out, ref) <= tol, label
    assert _err(model(x), ref) <= tol
    for ln_mode in ("center", "split"):
        terms, labels = cache.decompose_layers(ln_mode=ln_mode)
        assert terms.shape[0] == len(labels)
        assert _err(terms.sum(0), out) <= 10 * tol, (label, ln_mode)


@pytest.mark.parametrize(
    "label, expected",
    [
        ("ViT-L-14-CLIPA (avg, ln after pool, no ln_pre)", dict(readout="avg", ln_pre=False)),
        ("ViT-L-14-CLIPA (avg, ln after pool, no ln_pre)", dict(final_ln_after_pool=True)),
        ("avg, ln before pool", dict(readout="avg", final_ln_after_pool=False)),
        ("qk_norm (custom block)", dict(qk_norm=True)),
        ("ViT-B-16-quickgelu", dict(act_fn="quick_gelu")),
        ("eps 1e-6, tanh GELU, non-square", dict(eps=1e-6, act_fn="gelu_tanh")),
        ("ViT-B-16-SigLIP (timm MAP)", dict(readout="map", class_token=False)),
        ("SigLIP + open_clip linear proj with bias", dict(proj_bias=True, d_embed=768)),
        ("EVA01-g-14 (timm Eva, head in trunk)", dict(proj_bias=True, d_embed=1024)),
        (
            "PE-Core-T-16-384 (timm Eva, RoPE, MAP)",
            dict(rope="interleaved", rope_per_head=False, readout="map", ln_pre=True),
        ),
        (
            "EVA02-B-16 trunk without scale_attn_inner (RoPE, SwiGLU + MLP norm)",
            dict(rope="interleaved", gated_mlp=True, mlp_norm=True, act_fn="silu"),
        ),
    ],
)
def test_config_reads_the_tower(label, expected):
    _, name, overrides = ROWS[label]
    cfg = vl.HookedViT.from_open_clip_model(build_tower(name, **overrides)).cfg
    assert {key: getattr(cfg, key) for key in expected} == expected


@pytest.mark.parametrize(
    "overrides, phrase",
    [
        ({"scaled_cosine_attn": True}, "scaled cosine"),
        ({"scale_attn": True}, "post-attention LayerNorm"),
        ({"scale_attn_inner": True}, "inner LayerNorm"),
        ({"scale_fc": True}, "MLPs have an inner LayerNorm"),
        ({"attentional_pool": True}, "attentional pooler"),
        ({"attentional_pool": True, "attn_pooler_queries": 1}, "attentional pooler"),
        ({"pool_type": "none"}, "pool_type='none'"),
    ],
)
def test_non_plain_native_towers_are_refused(overrides, phrase):
    tower = build_tower("ViT-B-32", perturb=False, layers=1, width=64, image_size=32, **overrides)
    with pytest.raises(vl.UnsupportedModelError, match=phrase):
        vl.HookedViT.from_open_clip_model(tower)


@pytest.mark.parametrize(
    "name, overrides, phrase",
    [
        ("convnext_base", dict(timm_model_kwargs=dict(depths=(1, 1, 1, 1))), "ConvNeXt"),
        ("MobileCLIP-S1", {}, "FastVit"),
        ("ViTamin-S", dict(timm_model_kwargs=dict(depth=1)), "hybrid"),
        ("MobileCLIP-B", dict(timm_model_kwargs=dict(depth=1)), "hybrid"),
        ("EVA02-B-16", dict(timm_model_kwargs=dict(depth=1)), "mixes the heads"),
        ("EVA02-E-14", dict(timm_model_kwargs=dict(depth=1, embed_dim=64)), "post-norm"),
        (
            "ViT-B-16-SigLIP",
            dict(timm_proj="mlp", timm_model_kwargs=dict(depth=1, embed_dim=64, num_heads=2)),
            "MLP",
        ),
    ],
)
def test_conv_hybrid_and_head_mixing_timm_towers_are_refused(name, overrides, phrase):
    tower = build_tower(name, perturb=False, **overrides)
    with pytest.raises(vl.UnsupportedModelError, match=phrase) as info:
        vl.HookedViT.from_open_clip_model(tower)
    assert "Cannot convert open_clip model" in str(info.value)
    if not overrides.get("timm_proj"):
        with pytest.raises(vl.UnsupportedModelError, match=phrase):
            check_open_clip_config(name)


def test_timm_tower_conversion_is_not_shared_with_open_clip():
    _, name, overrides = ROWS["ViT-B-16-SigLIP (timm MAP)"]
    tower = build_tower(name, **overrides)
    model = vl.HookedViT.from_open_clip_model(tower)
    x = images(1, tower_image_size(tower))
    before = model(x)
    with torch.no_grad():
        for p in tower.parameters():
            p.zero_()
    assert torch.equal(model(x), before)


def _walk() -> dict:
    """Classify every (name, tag) of open_clip.list_pretrained()."""
    pairs = open_clip.list_pretrained()
    names = sorted({name for name, _ in pairs})
    tags = collections.Counter(name for name, _ in pairs)
    info = {}
    for name in names:
        vision = open_clip.get_model_config(name)["vision_cfg"]
        info[name] = dict(
            tags=tags[name],
            transformer=is_transformer_over_patches(vision),
            reason=config_unsupported_reason(name),
        )
    return info


def test_walk_open_clip_pretrained_list(capsys):
    info = _walk()
    total = sum(v["tags"] for v in info.values())
    transformer = {n: v for n, v in info.items() if v["transformer"]}
    convertible = {n: v for n, v in transformer.items() if v["reason"] is None}
    n_transformer = sum(v["tags"] for v in transformer.values())
    n_convertible = sum(v["tags"] for v in convertible.values())
    # Convolutional and hybrid towers are all refused.
    for name, v in info.items():
        if not v["transformer"]:
            assert v["reason"] is not None, name
    # The transformer towers that are refused are exactly the known ones, for the known reasons.
    for name, v in transformer.items():
        if v["reason"] is None:
            continue
        prefix = next((p for p in EXPECTED_REFUSED if name.startswith(p)), None)
        assert prefix is not None, (name, v["reason"])
        assert EXPECTED_REFUSED[prefix] in v["reason"], (name, v["reason"])
    assert total == len(open_clip.list_pretrained())
    # 135 of 144 with open_clip 3.3: every one but EVA02 x5 and CoCa x4.
    assert n_convertible >= 135, (n_convertible, n_transformer)
    with capsys.disabled():
        print(
            f"\nopen_clip pretrained pairs: {total}; transformer-over-patches: {n_transformer}; "
            f"convertible: {n_convertible}"
        )


def test_native_config_check_agrees_with_the_built_tower():
    """For every native open_clip tower in the pretrained list, the config-only verdict equals
    the verdict on the tower built on the meta device (no memory, no weights)."""
    for name in sorted({name for name, _ in open_clip.list_pretrained()}):
        cfg = open_clip.get_model_config(name)
        vision = cfg["vision_cfg"]
        if vision.get("timm_model_name"):
            continue  # the config check itself builds timm towers on the meta device
        with torch.device("meta"):
            tower = _build_vision_tower(
                cfg["embed_dim"], vision, quick_gelu=cfg.get("quick_gelu", False)
            )
        assert (config_unsupported_reason(name) is None) == (unsupported_reason(tower) is None), (
            name
        )


@pytest.mark.slow
@torch.no_grad()
def test_small_pretrained_towers_convert_at_full_size():
    """Build every convertible native tower of up to ViT-B size from the pretrained list (random
    weights, image tower only: text towers of some need Hugging Face downloads) and compare."""
    seen = set()
    for name, v in _walk().items():
        cfg = open_clip.get_model_config(name)
        vision = cfg["vision_cfg"]
        key = (repr(vision), cfg["embed_dim"], cfg.get("quick_gelu", False))
        if v["reason"] is not None or key in seen or estimated_vision_params(vision) > 1e8:
            continue
        seen.add(key)
        torch.manual_seed(0)
        tower = _build_vision_tower(
            cfg["embed_dim"], vision, quick_gelu=cfg.get("quick_gelu", False)
        ).eval()
        model = vl.HookedViT.from_open_clip_model(tower)
        x = images(1, tower_image_size(tower))
        ref = tower(x)
        assert _err(model(x), ref) <= 1e-5 * max(1.0, ref.abs().max().item()), name
    assert len(seen) >= 4
