"""Rotary position embeddings and the MLP hidden-layer norm: config, defaults, hooks, tables.

Parity with timm's RoPE models (EVA02, ``vit_*_rope*``, PE, DINOv3) is checked by the registry
rows in ``tests/test_parity.py``; these are the pieces around it.
"""

from __future__ import annotations

import pytest
import torch
from support.arch_timm import make_timm_model

import vision_lens as vl
from vision_lens.loading.timm import timm_to_hooked

SMALL = dict(n_layers=2, d_model=16, n_heads=2, d_mlp=32, d_embed=8, image_size=16, patch_size=8)


def _model(**kwargs) -> vl.HookedViT:
    return vl.HookedViT(vl.HookedViTConfig(**SMALL, **kwargs)).init_weights(seed=0, std=0.3)


def test_config_checks():
    with pytest.raises(ValueError, match="rope='sideways'"):
        vl.HookedViTConfig(**SMALL, rope="sideways")
    with pytest.raises(ValueError, match="even d_head"):
        vl.HookedViTConfig(**{**SMALL, "d_model": 6, "n_heads": 2}, rope="half")
    with pytest.raises(ValueError, match="rope_per_head"):
        vl.HookedViTConfig(**SMALL, rope_per_head=True)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_a_config_only_model_starts_at_the_identity_rotation(layout):
    """Tables start at cos = 1, sin = 0 (init_weights leaves buffers alone), so the model is the
    same function as without RoPE."""
    rope = _model(rope=layout, rope_per_head=True)
    plain = vl.HookedViT(rope.cfg.__class__(**SMALL))
    state = {k: v for k, v in rope.state_dict().items() if ".rope_" not in k}
    plain.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(rope(x), plain(x), rtol=0, atol=0)
    assert rope.blocks[0].attn.rope_cos.shape == (2, rope.cfg.n_pos, rope.cfg.d_head)


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_rotation_is_a_rotation_and_hooks_show_it(layout):
    model = _model(rope=layout)
    attn = model.blocks[0].attn
    angles = torch.rand(1, model.cfg.n_pos, model.cfg.d_head // 2) * 6
    # One angle per channel pair, laid out as the layout pairs the channels.
    angles = angles.repeat_interleave(2, -1) if layout == "interleaved" else angles.repeat(1, 1, 2)
    with torch.no_grad():
        attn.rope_cos.copy_(angles.cos())
        attn.rope_sin.copy_(angles.sin())
    x = torch.randn(2, 3, 16, 16)
    fused = model(x)
    out, cache = model.run_with_cache(x)
    torch.testing.assert_close(out, fused, rtol=1e-5, atol=1e-6)
    q, rot_q = cache["blocks.0.attn.hook_q"], cache["blocks.0.attn.hook_rot_q"]
    assert not torch.allclose(q, rot_q)
    # A rotation keeps every channel pair's length.
    torch.testing.assert_close(rot_q.norm(dim=-1), q.norm(dim=-1), rtol=1e-5, atol=1e-6)
    # Decomposition is untouched: it reads the pattern and the values only.
    terms, _ = cache.decompose_layers()
    torch.testing.assert_close(terms.sum(0), out, rtol=1e-4, atol=1e-5)


def test_readout_gets_neither_rope_nor_mlp_norm():
    model = _model(rope="interleaved", mlp_norm=True, readout="map")
    keys = set(model.state_dict())
    assert "blocks.1.attn.rope_cos" in keys and "blocks.1.mlp.ln.w" in keys
    assert not any(k.startswith("readout.") and (".rope_" in k or ".mlp.ln." in k) for k in keys)
    assert "blocks.0.mlp.ln.hook_scale" in model.hook_dict


def test_tables_are_timms_own():
    model = make_timm_model("vit_small_patch16_rope_mixed_224", dict(depth=2, img_size=48))
    cfg, sd, _ = timm_to_hooked(model)
    assert cfg.rope == "interleaved" and cfg.rope_per_head
    embed = model.rope.get_embed()  # [depth, head, patch, 2 * d_head]: [sin, cos]
    for layer in range(cfg.n_layers):
        cos, sin = sd[f"blocks.{layer}.attn.rope_cos"], sd[f"blocks.{layer}.attn.rope_sin"]
        assert cos.shape == (cfg.n_heads, cfg.n_pos, cfg.d_head)
        assert torch.equal(sin[:, cfg.n_prefix :], embed[layer, ..., : cfg.d_head])
        assert torch.equal(cos[:, cfg.n_prefix :], embed[layer, ..., cfg.d_head :])
        # timm does not rotate the prefix (class) token.
        assert bool((cos[:, : cfg.n_prefix] == 1).all() and (sin[:, : cfg.n_prefix] == 0).all())


def test_layouts_and_mlp_norm_are_read_from_the_modules():
    dinov3 = timm_to_hooked(make_timm_model("vit_small_patch16_dinov3", dict(depth=1))).cfg
    assert dinov3.rope == "half" and not dinov3.rope_per_head and dinov3.n_registers == 4
    small = dict(depth=1, img_size=28, embed_dim=64, num_heads=4)
    eva02 = timm_to_hooked(make_timm_model("eva02_base_patch14_224", small)).cfg
    assert eva02.rope == "interleaved" and eva02.mlp_norm and eva02.gated_mlp
    gqa = make_timm_model(
        "vit_small_patch16_rope_224",
        dict(depth=1, img_size=32, qkv_fused=False, num_kv_heads=2),
    )
    assert gqa.blocks[0].attn.num_kv_heads == 2
    assert timm_to_hooked(gqa).cfg.n_heads == 6
