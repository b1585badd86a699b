"""Conversion of open_clip image towers into HookedViT weights.

Pure functions: they read open_clip modules and configs and return a HookedViTConfig and a state
dict; nothing here builds model code of its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from vision_lens.config import HookedViTConfig

if TYPE_CHECKING:
    from vision_lens.hooked_vit import HookedViT


class UnsupportedModelError(ValueError):
    """The model's image tower cannot be converted into a HookedViT."""


# open_clip vision_cfg keys that select a tower or block HookedViT does not implement, with the
# reason each one is refused.
_UNSUPPORTED_VISION_CFG = {
    "timm_model_name": "its image tower is a timm trunk, not open_clip's VisionTransformer",
    "attentional_pool": "it pools with an attentional pooler instead of the class token",
    "qk_norm": "its attention blocks normalise queries and keys (custom block)",
    "scaled_cosine_attn": "its attention blocks use scaled cosine attention (custom block)",
    "scale_heads": "its attention blocks scale heads (custom block)",
    "scale_attn_inner": "its attention blocks have an inner LayerNorm (custom block)",
    "scale_attn": "its attention blocks have a post-attention LayerNorm (custom block)",
    "scale_fc": "its MLPs have an inner LayerNorm (custom block)",
}


def _refuse(model_name: str, reason: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"Cannot convert open_clip model {model_name!r}: {reason}. HookedViT supports open_clip "
        "VisionTransformer towers with class-token pooling (ViT-B-32, ViT-B-16, ViT-L-14, "
        "ViT-H-14, ViT-g-14, ViT-bigG-14 and their -quickgelu, OpenAI and other-resolution "
        "variants)."
    )


def check_open_clip_config(model_name: str) -> None:
    """Raise :class:`UnsupportedModelError` early, from the config alone, for a known name.

    Unknown names (e.g. ``hf-hub:`` models) pass; the built tower is checked after creation.

    Example:
        >>> check_open_clip_config("RN50")
        Traceback (most recent call last):
        ...
        vision_lens.loading.open_clip.UnsupportedModelError: Cannot convert open_clip model 'RN50': its image tower is a ModifiedResNet (convolutional, no patch tokens). ...
    """  # noqa: E501
    import open_clip

    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        return
    vision = cfg.get("vision_cfg", {})
    if isinstance(vision.get("layers"), list | tuple):
        raise _refuse(
            model_name, "its image tower is a ModifiedResNet (convolutional, no patch tokens)"
        )
    for key, reason in _UNSUPPORTED_VISION_CFG.items():
        if vision.get(key):
            raise _refuse(model_name, reason)
    if vision.get("pool_type", "tok") != "tok":
        raise _refuse(
            model_name, f"it pools with pool_type={vision['pool_type']!r}, not the class token"
        )
    if vision.get("block_type") not in (None, "default"):
        raise _refuse(model_name, f"its blocks are of type {vision['block_type']!r}")


def unsupported_reason(visual: nn.Module) -> str | None:
    """Why an image tower cannot be converted, or ``None`` if it can."""
    from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

    kind = type(visual).__name__
    if not isinstance(visual, VisionTransformer):
        if kind == "ModifiedResNet":
            return "its image tower is a ModifiedResNet (convolutional, no patch tokens)"
        if kind == "TimmModel":
            return "its image tower is a timm trunk, not open_clip's VisionTransformer"
        return f"its image tower is a {kind}, not open_clip's VisionTransformer"
    if getattr(visual, "attn_pool", None) is not None:
        return "it pools with an attentional pooler instead of the class token"
    if visual.pool_type != "tok":
        return f"it pools with pool_type={visual.pool_type!r}, not the class token"
    for block in visual.transformer.resblocks:
        if not isinstance(block, ResidualAttentionBlock):
            return f"its blocks are {type(block).__name__} (custom attention variants)"
        if not isinstance(block.attn, nn.MultiheadAttention) or not block.attn._qkv_same_embed_dim:
            return "its attention is not a standard fused-QKV multi-head attention"
        if hasattr(block, "ln_1_kv"):
            return "its blocks use cross-attention"
        if _activation_name(block.mlp.gelu) is None:
            return f"its MLP activation {type(block.mlp.gelu).__name__} is not GELU or QuickGELU"
    if visual.conv1.bias is not None:
        return "its patch embedding has a bias"
    return None


def _activation_name(act: nn.Module) -> str | None:
    from open_clip.transformer import QuickGELU

    if isinstance(act, QuickGELU):
        return "quick_gelu"
    if isinstance(act, nn.GELU):
        return {"none": "gelu", "tanh": "gelu_tanh"}.get(act.approximate)
    return None


def _layer_norms(visual: nn.Module) -> list[nn.Module]:
    norms = [visual.ln_post]
    if not isinstance(visual.ln_pre, nn.Identity):
        norms.append(visual.ln_pre)
    for block in visual.transformer.resblocks:
        norms += [block.ln_1, block.ln_2]
    return norms


def config_from_visual(visual: nn.Module, model_name: str = "open_clip") -> HookedViTConfig:
    """Read a :class:`HookedViTConfig` off an open_clip ``VisionTransformer``.

    Every number comes from the module's weights and submodules (head count from the attention
    module, i.e. open_clip's ``width // head_width``), never from the model's name.
    """
    reason = unsupported_reason(visual)
    if reason is not None:
        raise _refuse(model_name, reason)
    blocks = visual.transformer.resblocks
    first = blocks[0]
    eps_values = {norm.eps for norm in _layer_norms(visual)}
    if len(eps_values) != 1:
        raise _refuse(model_name, f"its LayerNorms use different eps values {sorted(eps_values)}")
    d_model = visual.conv1.out_channels
    return HookedViTConfig(
        n_layers=len(blocks),
        d_model=d_model,
        n_heads=first.attn.num_heads,
        d_mlp=first.mlp.c_fc.out_features,
        d_embed=visual.proj.shape[1] if visual.proj is not None else d_model,
        image_size=tuple(visual.image_size),
        patch_size=tuple(visual.conv1.kernel_size),
        act_fn=_activation_name(first.mlp.gelu),
        eps=eps_values.pop(),
        ln_pre=not isinstance(visual.ln_pre, nn.Identity),
        final_ln_after_pool=bool(getattr(visual, "final_ln_after_pool", False)),
        model_name=model_name,
        dtype=visual.conv1.weight.dtype,
    )


def _fold_layer_scale(
    layer_scale: nn.Module, weight: Tensor, bias: Tensor
) -> tuple[Tensor, Tensor]:
    """``(weight * gamma[:, None], bias * gamma)``; the tensors themselves without layer scale
    (no copy, so a conversion with ``copy=False`` shares their storage)."""
    gamma = getattr(layer_scale, "gamma", None)
    if gamma is None:
        return weight, bias
    gamma = gamma.detach()
    return weight * gamma[:, None], bias * gamma


@torch.no_grad()
def convert_visual_state_dict(visual: nn.Module, cfg: HookedViTConfig) -> dict[str, Tensor]:
    """Map an open_clip ``VisionTransformer``'s weights onto HookedViT parameter names.

    Layer scale (``ls_1``/``ls_2``) is folded into the attention output and MLP output weights
    and biases, so hook outputs are exactly what enters the residual stream. Tensors that need no
    change are returned as views sharing storage with ``visual``.
    """
    h, dh, d = cfg.n_heads, cfg.d_head, cfg.d_model
    sd: dict[str, Tensor] = {
        "embed.W_E": visual.conv1.weight,
        "embed.cls_token": visual.class_embedding,
        "embed.W_pos": visual.positional_embedding,
        "ln_final.w": visual.ln_post.weight,
        "ln_final.b": visual.ln_post.bias,
        "W_proj": visual.proj if visual.proj is not None else torch.eye(d, dtype=cfg.dtype),
    }
    if cfg.ln_pre:
        sd["ln_pre.w"], sd["ln_pre.b"] = visual.ln_pre.weight, visual.ln_pre.bias
    for layer, block in enumerate(visual.transformer.resblocks):
        p = f"blocks.{layer}."
        out_w, out_b = _fold_layer_scale(
            block.ls_1, block.attn.out_proj.weight, block.attn.out_proj.bias
        )
        mlp_w, mlp_b = _fold_layer_scale(block.ls_2, block.mlp.c_proj.weight, block.mlp.c_proj.bias)
        sd.update(
            {
                p + "ln1.w": block.ln_1.weight,
                p + "ln1.b": block.ln_1.bias,
                p + "attn.qkv_weight": block.attn.in_proj_weight.view(3, h, dh, d),
                p + "attn.qkv_bias": block.attn.in_proj_bias.view(3, h, dh),
                p + "attn.out_weight": out_w,
                p + "attn.b_O": out_b,
                p + "ln2.w": block.ln_2.weight,
                p + "ln2.b": block.ln_2.bias,
                p + "mlp.in_weight": block.mlp.c_fc.weight,
                p + "mlp.b_in": block.mlp.c_fc.bias,
                p + "mlp.out_weight": mlp_w,
                p + "mlp.b_out": mlp_b,
            }
        )
    return {name: t.detach() for name, t in sd.items()}


def _visual_of(model: nn.Module) -> nn.Module:
    from open_clip.transformer import VisionTransformer

    if isinstance(model, VisionTransformer):
        return model
    visual = getattr(model, "visual", None)
    if visual is None:
        raise UnsupportedModelError(
            f"{type(model).__name__} is neither an open_clip CLIP model (with a .visual tower) nor "
            "an open_clip VisionTransformer; pass open_clip.create_model(...) or its .visual."
        )
    return visual


def default_preprocess(visual: nn.Module) -> Callable:
    """open_clip's evaluation transform for a tower, from its ``preprocess_cfg``."""
    from open_clip.transform import PreprocessCfg, image_transform, image_transform_v2

    pp_cfg = getattr(visual, "preprocess_cfg", None)
    if pp_cfg:
        return image_transform_v2(PreprocessCfg(**pp_cfg), is_train=False)
    return image_transform(visual.image_size, is_train=False)


def convert_open_clip_model(
    cls: type[HookedViT],
    model: nn.Module,
    *,
    model_name: str | None = None,
    preprocess: Callable | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    copy: bool = True,
) -> HookedViT:
    """Build a ``cls`` (HookedViT) from an open_clip CLIP model or VisionTransformer.

    Args:
        cls: The HookedViT class.
        model: The open_clip model (or its ``.visual``).
        model_name: Provenance for error messages and ``cfg.model_name``.
        preprocess: Transform to expose as ``.preprocess`` (default: open_clip's eval transform).
        device: Target device (default: the source's).
        dtype: Target dtype (default: the source's).
        copy: Copy weights (``True``) or share storage with ``model`` where layouts agree.
    """
    visual = _visual_of(model)
    name = model_name or type(model).__name__
    cfg = config_from_visual(visual, name)
    state_dict = convert_visual_state_dict(visual, cfg)
    if copy:
        state_dict = {k: v.clone() for k, v in state_dict.items()}
    with torch.device("meta"):
        hooked = cls(cfg, preprocess=preprocess or default_preprocess(visual))
    hooked.load_state_dict(state_dict, strict=True, assign=True)
    if device is not None or dtype is not None:
        hooked.to(device=device, dtype=dtype)
    return hooked.eval()


def check_pretrained_source(model_name: str, pretrained: str | os.PathLike | None) -> str | None:
    """``pretrained`` as open_clip takes it (a str), after checking that it is a known tag or an
    existing file; raises a clear FileNotFoundError otherwise."""
    import open_clip

    if pretrained is None:
        return None
    pretrained = os.fspath(pretrained)  # open_clip takes str only (it lower()s tags)
    if open_clip.get_pretrained_cfg(model_name, pretrained):
        return pretrained
    if not os.path.isfile(pretrained):
        raise FileNotFoundError(
            f"{pretrained!r} is neither an existing checkpoint file nor an open_clip pretrained "
            f"tag for {model_name}. Tags: {open_clip.list_pretrained_tags_by_model(model_name)}"
        )
    return pretrained


def load_open_clip_visual(
    cls: type[HookedViT],
    model_name: str,
    pretrained: str | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    cache_dir: str | None = None,
) -> HookedViT:
    """Create an open_clip model by name (tag, local checkpoint or random weights) and convert it.

    The open_clip model is dropped after conversion; its tensors are shared, not copied.
    """
    import open_clip

    check_open_clip_config(model_name)
    pretrained = check_pretrained_source(model_name, pretrained)
    clip = open_clip.create_model(
        model_name, pretrained=pretrained, cache_dir=cache_dir, weights_only=True
    )
    provenance = model_name if pretrained is None else f"{model_name} ({pretrained})"
    return convert_open_clip_model(
        cls, clip, model_name=provenance, device=device, dtype=dtype, copy=False
    )
