"""Hugging Face ``transformers`` towers converted to HookedViT reproduce the source exactly.

Random small models from ``arch_hf.HF_ROWS`` (no downloads): the converted HookedViT's output
and every block's residual stream match the ``transformers`` forward in float32 and float64;
``load_hf`` reads a ``save_pretrained`` directory; unsupported models are refused by name.
"""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from PIL import Image
from support.arch_hf import (
    HF_ROWS,
    TINY_TEXT,
    TINY_VISION,
    hf_reference,
    image_size,
    perturb_,
)

from vision_lens.loading.base import LoadedTower
from vision_lens.loading.hf import SUPPORTED_CLASSES, hf_to_hooked, load_hf
from vision_lens.loading.open_clip import UnsupportedModelError

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def _hooked(cfg, state_dict):
    from vision_lens.hooked_vit import HookedViT

    return HookedViT.from_loaded(LoadedTower(cfg, state_dict, None))


def _max_err(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """``(max |a - b|, allowed scale)``: errors are relative to ``max(1, |b|.max())``."""
    return (a - b).abs().max().item(), max(1.0, b.abs().max().item())


# The registry's tests/parity/test_parity.py runs these rows in the default suite.
@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("label,builder", HF_ROWS, ids=[label for label, _ in HF_ROWS])
def test_hf_parity(label, builder, dtype):
    source = builder().to(dtype)
    cfg, state_dict, preprocess = hf_to_hooked(source)
    assert preprocess is None
    assert cfg.dtype == dtype
    hooked = _hooked(cfg, state_dict)

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, *image_size(source), generator=gen, dtype=dtype)
    ref, hidden = hf_reference(source, x)
    with torch.no_grad():
        fused = hooked(x)  # nothing hooked: fused attention and norm kernels
        out, cache = hooked.run_with_cache(x)  # everything hooked: the explicit paths
    tol = TOLERANCE[dtype]
    assert out.shape == ref.shape
    for path, result in (("fused", fused), ("cached", out)):
        err, scale = _max_err(result, ref)
        assert err <= tol * scale, f"{label} {dtype} {path}: output max abs error {err:.3g}"
    assert len(hidden) == cfg.n_layers + 1
    for layer in range(cfg.n_layers):
        err, scale = _max_err(cache[f"blocks.{layer}.hook_resid_post"], hidden[layer + 1])
        assert err <= tol * scale, f"{label} {dtype}: block {layer} residual error {err:.3g}"


@pytest.mark.parametrize(
    "label", ["clip-vision-quickgelu", "siglip-vision", "vit-classifier", "deit-teacher"]
)
def test_hf_native_size_ignores_interpolate_pos_encoding(label):
    """At the native (square) size HF uses the stored position embeddings whether or not
    interpolate_pos_encoding is set, which is all HookedViT implements."""
    source = dict(HF_ROWS)[label]()
    x = torch.randn(1, 3, *image_size(source))
    with torch.no_grad():
        plain = source(pixel_values=x)
        interpolated = source(pixel_values=x, interpolate_pos_encoding=True)
    assert torch.equal(plain[0], interpolated[0])


def _config_summary(label: str) -> dict:
    source = dict(HF_ROWS)[label]()
    cfg = hf_to_hooked(source).cfg
    return {k: getattr(cfg, k) for k in _SUMMARY_KEYS}


_SUMMARY_KEYS = (
    "act_fn",
    "ln_pre",
    "final_ln_after_pool",
    "class_token",
    "dist_token",
    "n_registers",
    "patch_bias",
    "gated_mlp",
    "readout",
    "dist_head",
    "proj_bias",
    "eps",
)


@pytest.mark.parametrize(
    "label,expected",
    [
        ("clip-vision-quickgelu", dict(act_fn="quick_gelu", ln_pre=True, patch_bias=False)),
        ("clip-vision-proj-gelu", dict(act_fn="gelu", final_ln_after_pool=True)),
        ("siglip-vision", dict(act_fn="gelu_tanh", class_token=False, readout="map", eps=1e-6)),
        ("dinov2-swiglu", dict(act_fn="silu", gated_mlp=True, ln_pre=False, eps=1e-6)),
        ("dinov2-registers", dict(n_registers=4, class_token=True, patch_bias=True)),
        ("vit-classifier", dict(proj_bias=True, readout="cls", eps=1e-12)),
        ("deit-teacher", dict(dist_token=True, readout="cls_dist", dist_head=True)),
    ],
)
def test_hf_config_fields(label, expected):
    """The config flags are read off the model (not only correct in effect)."""
    summary = _config_summary(label)
    assert {k: summary[k] for k in expected} == expected


def test_registers_have_zero_position_rows():
    source = dict(HF_ROWS)["dinov2-registers"]()
    cfg, sd, _ = hf_to_hooked(source)
    pos = sd["embed.W_pos"]
    assert pos.shape == (cfg.n_pos, cfg.d_model)
    assert torch.equal(pos[1 : 1 + cfg.n_registers], torch.zeros(cfg.n_registers, cfg.d_model))
    stored = source.embeddings.position_embeddings[0]
    assert torch.equal(pos[0], stored[0]) and torch.equal(pos[1 + cfg.n_registers :], stored[1:])


def test_siglip_map_head_weights():
    source = dict(HF_ROWS)["siglip-vision"]()
    cfg, sd, _ = hf_to_hooked(source)
    head = source.head
    assert cfg.readout_n_heads == head.attention.num_heads
    assert cfg.readout_d_mlp == head.mlp.fc1.out_features
    assert torch.equal(sd["readout.latent"], head.probe.reshape(-1))
    assert torch.equal(sd["readout.attn.qkv_weight"].flatten(0, 2), head.attention.in_proj_weight)
    assert torch.equal(sd["W_proj"], torch.eye(cfg.d_model))


def test_load_hf_from_saved_directory(tmp_path):
    """save_pretrained (safetensors) + image processor -> load_hf: same weights, a preprocess."""
    source = dict(HF_ROWS)["clip-vision-proj-gelu"]()
    source.save_pretrained(tmp_path, safe_serialization=True)
    assert any(p.suffix == ".safetensors" for p in tmp_path.iterdir())
    tf.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(tmp_path)

    cfg, sd, preprocess = load_hf(tmp_path)
    expected_cfg, expected_sd, _ = hf_to_hooked(source)
    assert cfg.to_dict() | {"model_name": ""} == expected_cfg.to_dict() | {"model_name": ""}
    assert cfg.model_name == str(tmp_path)
    assert sd.keys() == expected_sd.keys()
    for key in sd:
        assert torch.equal(sd[key], expected_sd[key]), key

    pixels = preprocess(Image.new("RGB", (40, 50), color=(200, 30, 90)))
    assert pixels.shape == (3, 32, 32)
    hooked = _hooked(cfg, sd)
    with torch.no_grad():
        ref = source(pixel_values=pixels[None]).image_embeds
        err, scale = _max_err(hooked(pixels[None]), ref)
    assert err <= 1e-5 * scale


def test_load_hf_without_processor_and_pooler_kwarg(tmp_path):
    """A ViTModel saved with its tanh pooler is refused, and loads with add_pooling_layer=False;
    a directory without an image processor gives preprocess=None."""
    torch.manual_seed(0)
    perturb_(tf.ViTModel(tf.ViTConfig(**TINY_VISION))).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="add_pooling_layer=False"):
        load_hf(tmp_path)
    cfg, sd, preprocess = load_hf(tmp_path, add_pooling_layer=False)
    assert preprocess is None
    assert cfg.readout == "cls" and cfg.n_pos == 5
    source = tf.ViTModel.from_pretrained(tmp_path, add_pooling_layer=False).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = source(pixel_values=x).last_hidden_state[:, 0]
        err, scale = _max_err(_hooked(cfg, sd)(x), ref)
    assert err <= 1e-5 * scale


def test_load_hf_accepts_built_model():
    source = dict(HF_ROWS)["dinov2"]()
    cfg, sd, preprocess = load_hf(source)
    assert preprocess is None and cfg.n_layers == 2 and "blocks.1.mlp.in_weight" in sd


def _swin():
    return tf.SwinModel(
        tf.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2])
    )


def _convnext():
    return tf.ConvNextModel(tf.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2))


def _clip_text():
    return tf.CLIPTextModel(tf.CLIPTextConfig(**TINY_TEXT))


def _vit_with_pooler():
    return tf.ViTModel(tf.ViTConfig(**TINY_VISION))


def _deit_with_pooler():
    return tf.DeiTModel(tf.DeiTConfig(**TINY_VISION))


def _siglip_no_head():
    return tf.SiglipVisionModel(tf.SiglipVisionConfig(**TINY_VISION, vision_use_head=False))


@pytest.mark.parametrize(
    "build,kind,reason",
    [
        (_swin, "SwinModel", "not a supported plain ViT"),
        (_convnext, "ConvNextModel", "not a supported plain ViT"),
        (_clip_text, "CLIPTextModel", "text model"),
        (_vit_with_pooler, "ViTModel", "tanh"),
        (_deit_with_pooler, "DeiTModel", "add_pooling_layer=False"),
        (_siglip_no_head, "SiglipVisionModel", "vision_use_head=False"),
    ],
    ids=["swin", "convnext", "clip-text", "vit-pooler", "deit-pooler", "siglip-no-head"],
)
def test_unsupported_models_are_refused(build, kind, reason):
    with pytest.raises(UnsupportedModelError) as info:
        hf_to_hooked(build())
    message = str(info.value)
    assert kind in message and reason in message
    # The message lists what is supported.
    assert all(name in message for name in SUPPORTED_CLASSES)


def test_load_hf_refuses_unsupported_directory_before_loading(tmp_path):
    _swin().save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="SwinModel"):
        load_hf(tmp_path)
