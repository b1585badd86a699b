"""timm rows for the architecture registry: small random-weight versions of real timm ViTs.

Each row is ``(label, timm_name, create_kwargs)``; :func:`make_timm_model` builds it with
``pretrained=False``, shrunk by the kwargs (depth, image size) so a row runs in about a second on
two CPU cores, and with every weight re-drawn at a scale where a wrong bias, norm, layer scale or
token embedding changes the output visibly.

Example:
    >>> label, name, kwargs = TIMM_ROWS[0]
    >>> model = make_timm_model(name, kwargs)
    >>> model.training
    False
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_SMALL = dict(depth=2, img_size=64)
# The same without a classifier head (timm's num_classes=0): the output is the pooled features.
_HEADLESS = dict(_SMALL, num_classes=0)
# Base-width towers (SigLIP, CLIP) narrowed to ViT-Tiny width: the layout is what is tested.
_NARROW = dict(_HEADLESS, embed_dim=192, num_heads=3)
_EVA02 = dict(depth=2, img_size=56)


def _rows() -> list[tuple[str, str, dict[str, Any]]]:
    from timm.layers import GluMlp, SwiGLU, SwiGLUPacked

    return [
        # timm's own tiny test models (test_vit/2/4 are dynamic_img_size=True: converted at their
        # native img_size).
        ("test_vit", "test_vit", dict(img_size=64)),
        ("test_vit2 (avg, register, layer scale)", "test_vit2", dict(img_size=64, depth=3)),
        ("test_vit3 (MAP over register + patches)", "test_vit3", dict(img_size=64, depth=3)),
        ("test_vit4 (RMSNorm)", "test_vit4", dict(img_size=64, depth=3)),
        ("deit_tiny", "deit_tiny_patch16_224", _HEADLESS),
        ("deit_tiny_distilled", "deit_tiny_distilled_patch16_224", _HEADLESS),
        (
            "deit_tiny_distilled + heads",
            "deit_tiny_distilled_patch16_224",
            dict(_SMALL, num_classes=10),
        ),
        ("deit3_small (layer scale)", "deit3_small_patch16_224", _HEADLESS),
        ("vit_small + classifier", "vit_small_patch16_224", dict(_SMALL, num_classes=10)),
        ("dinov2_small", "vit_small_patch14_dinov2", dict(depth=2, img_size=56)),
        ("dinov2_small_reg4", "vit_small_patch14_reg4_dinov2", dict(depth=2, img_size=56)),
        (
            # vit_giant_patch14_dinov2's MLP: SwiGLUPacked, SiLU, mlp_ratio 2.66667 * 2.
            "dinov2 giant-style SwiGLUPacked",
            "vit_small_patch14_dinov2",
            dict(
                depth=2,
                img_size=56,
                mlp_layer=SwiGLUPacked,
                act_layer=nn.SiLU,
                mlp_ratio=2.66667 * 2,
            ),
        ),
        (
            "split SwiGLU",
            "vit_small_patch16_224",
            dict(_HEADLESS, mlp_layer=SwiGLU, act_layer=nn.SiLU, mlp_ratio=8 / 3),
        ),
        (
            # The block passes its act_layer to the MLP: a GELU-gated GLU (GEGLU), gate last.
            "GluMlp GEGLU gate_last",
            "vit_small_patch16_224",
            dict(_HEADLESS, mlp_layer=GluMlp, mlp_ratio=4),
        ),
        ("siglip (MAP)", "vit_base_patch16_siglip_224", _NARROW),
        ("siglip (MAP) + classifier", "vit_base_patch16_siglip_224", dict(_NARROW, num_classes=7)),
        ("avg + fc_norm", "vit_small_patch16_224", dict(_HEADLESS, global_pool="avg")),
        ("clip (ln_pre, no patch bias)", "vit_base_patch16_clip_224", _NARROW),
        ("clip quickgelu", "vit_base_patch16_clip_quickgelu_224", _NARROW),
        ("qk_norm", "vit_small_patch16_224", dict(_HEADLESS, qk_norm=True)),
        (
            "MLP hidden-layer norm (scale_mlp_norm)",
            "vit_small_patch16_224",
            dict(_HEADLESS, scale_mlp_norm=True),
        ),
        (
            "no class token, avg",
            "vit_small_patch16_224",
            dict(_HEADLESS, class_token=False, global_pool="avg"),
        ),
        (
            "no_embed_class + 2 registers",
            "vit_small_patch16_224",
            dict(_HEADLESS, no_embed_class=True, reg_tokens=2),
        ),
        (
            "no position embedding, no biases, gelu_tanh",
            "vit_small_patch16_224",
            dict(
                _SMALL,
                num_classes=5,
                pos_embed="none",
                qkv_bias=False,
                proj_bias=False,
                act_layer="gelu_tanh",
            ),
        ),
        # timm Eva without RoPE: EVA01 (separate q/v biases, gamma_1/_2), and EVA02's SwiGLU MLP.
        (
            "eva01 giant-style (avg, fc_norm)",
            "eva_giant_patch14_224",
            dict(_HEADLESS, embed_dim=64, num_heads=2, img_size=56),
        ),
        (
            "eva01 clip-style (cls) + classifier",
            "eva_giant_patch14_clip_224",
            dict(_SMALL, embed_dim=64, num_heads=2, img_size=56, num_classes=5, init_values=0.1),
        ),
        (
            "eva02 tiny without RoPE (SwiGLU)",
            "eva02_tiny_patch14_224",
            dict(depth=2, img_size=56, use_rot_pos_emb=False, num_classes=0),
        ),
        (
            "eva02 without RoPE, MAP over class token + patches",
            "eva02_tiny_patch14_224",
            dict(depth=2, img_size=56, use_rot_pos_emb=False, num_classes=0, global_pool="map"),
        ),
        # Rotary position embeddings: each block's sin/cos tables are copied from timm's rope
        # module, whatever its flavour.
        ("eva02 tiny (RoPE, packed SwiGLU)", "eva02_tiny_patch14_224", dict(_EVA02, num_classes=0)),
        (
            "eva02 base-style (RoPE, SwiGLU with MLP norm) + classifier",
            "eva02_base_patch14_224",
            dict(_EVA02, embed_dim=64, num_heads=4, num_classes=5),
        ),
        (
            "vit rope (AttentionRope, layer scale, no abs pos)",
            "vit_small_patch16_rope_224",
            _HEADLESS,
        ),
        ("vit rope mixed (learned per-head RoPE)", "vit_small_patch16_rope_mixed_224", _HEADLESS),
        (
            "vit rope, grouped-query key/value heads, qk_norm",
            "vit_small_patch16_rope_224",
            dict(_HEADLESS, qkv_fused=False, num_kv_heads=2, qk_norm=True),
        ),
        (
            "vit rope reg1 gap (register, no class token, avg)",
            "vit_base_patch16_rope_reg1_gap_256",
            _NARROW,
        ),
        (
            "PE-Core tiny (RoPE, MAP, norm_pre)",
            "vit_pe_core_tiny_patch16_384",
            dict(_SMALL, num_classes=32),
        ),
        ("dinov3 small (half-split RoPE, registers)", "vit_small_patch16_dinov3", dict(_SMALL)),
    ]


TIMM_ROWS: list[tuple[str, str, dict[str, Any]]] = _rows()


def perturb_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw every parameter so that each one matters to the output.

    timm initialises biases to 0, norms to (1, 0), layer scales to 1e-5 and tokens to ~1e-6; a
    converter that dropped any of them would still match. Here: matrices ~ N(0, 1/fan_in), norm
    weights ~ 1 + 0.2 N, biases ~ 0.1 N, layer-scale gammas ~ 0.5 N, tokens, position
    embeddings and latents ~ 0.5 N.
    """
    generator = torch.Generator().manual_seed(seed)

    def randn(shape: torch.Size) -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("cls_token", "reg_token", "dist_token", "pos_embed", "latent"):
                new = 0.5 * randn(param.shape)
            elif leaf.startswith("gamma"):  # LayerScale.gamma, EvaBlock.gamma_1/_2
                new = 0.5 * randn(param.shape)
            elif param.ndim == 1 and leaf.endswith("bias"):  # incl. EvaAttention q_bias/v_bias
                new = 0.1 * randn(param.shape)
            elif param.ndim == 1:
                new = 1 + 0.2 * randn(param.shape)
            else:
                new = randn(param.shape) / param[0].numel() ** 0.5
            param.copy_(new.to(param.dtype))
    return model


def make_timm_model(
    name: str, kwargs: dict[str, Any], dtype: torch.dtype = torch.float32, seed: int = 0
) -> nn.Module:
    """Build a row's timm model: random weights, perturbed, in eval mode and ``dtype``."""
    import timm

    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, **kwargs)
    return perturb_(model, seed).to(dtype).eval()
