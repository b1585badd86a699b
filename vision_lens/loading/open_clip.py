"""Conversion of open_clip image towers into HookedViT weights.

Pure functions: they read open_clip modules and configs and return a HookedViTConfig and a state
dict (a :class:`~vision_lens.loading.base.LoadedTower`); nothing here builds model code of its own.

Supported towers:
    * open_clip ``VisionTransformer``: class-token (``pool_type='tok'``) or average
      (``pool_type='avg'``, CLIPA) pooling, with the final LayerNorm before or after pooling
      (``final_ln_after_pool``), with or without ``ln_pre``, layer scale, GELU or QuickGELU, and
      the ``CustomResidualAttentionBlock`` options that are a plain block in disguise: ``qk_norm``
      (a LayerNorm over each head's queries and keys) and ``scale_heads`` (a per-head output
      scale, folded into the output projection). Attention weights are read by parameter name
      (``in_proj_weight``/``in_proj_bias``/``out_proj`` or ``qkv``/``proj``), not by module type.
    * open_clip ``TimmModel`` whose trunk :func:`vision_lens.loading.timm.timm_to_hooked`
      converts (SigLIP, SigLIP2, EVA01, PE-Core with rotary position embeddings, ViTs hosted in
      timm), with open_clip's linear projection head (``timm_proj='linear'``) folded into
      ``W_proj``/``b_proj``.

Refused, with :class:`UnsupportedModelError` naming the reason: convolutional and hybrid towers
(ModifiedResNet, ConvNeXt, FastViT/MobileCLIP-S*, ViTamin and MobileCLIP-B's convolutional stem),
attentional poolers (CoCa), custom blocks that change the computation (scaled cosine attention,
inner/post-attention LayerNorms, MLP LayerNorm), ``pool_type='none'``, MLP projection heads and
timm trunks timm_to_hooked refuses (EVA02-B/L: a LayerNorm over all heads' concatenated outputs
before the attention projection, which mixes the heads; EVA02-E: post-norm blocks; ...).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
from collections.abc import Callable

import torch
from torch import Tensor, nn

from vision_lens.config import HookedViTConfig
from vision_lens.errors import UnsupportedModelError
from vision_lens.loading._common import (
    activation_name,
    bias_or_zeros,
    fold_layer_scale,
    is_identity,
)
from vision_lens.loading.base import LoadedTower

_SUPPORTED = (
    "HookedViT supports open_clip VisionTransformer towers with class-token or average pooling "
    "(ViT-B-32, ViT-B-16, ViT-L-14, ViT-H-14, ViT-g-14, ViT-bigG-14, their -quickgelu, OpenAI, "
    "CLIPA and other-resolution variants, qk-norm and head-scale blocks) and timm ViT trunks "
    "(SigLIP, SigLIP2, EVA01, PE-Core, CLIP ViTs in timm) with a linear or no projection head."
)

# open_clip vision_cfg keys that select a block HookedViT does not implement, with the reason each
# one is refused. (qk_norm and scale_heads are supported: see _custom_attention_reason.)
_UNSUPPORTED_VISION_CFG = {
    "attentional_pool": (
        "it pools with an attentional pooler (CoCa): many learned queries whose output is "
        "LayerNormed after pooling, which HookedViT's single-query readout does not compute"
    ),
    "scaled_cosine_attn": "its attention blocks use scaled cosine attention (custom block)",
    "scale_attn_inner": "its attention blocks have an inner LayerNorm (custom block)",
    "scale_attn": "its attention blocks have a post-attention LayerNorm (custom block)",
    "scale_fc": "its MLPs have an inner LayerNorm (custom block)",
}

# Pooling of open_clip's VisionTransformer mapped to HookedViT readouts.
_POOL_READOUTS = {"tok": "cls", "avg": "avg", "avg_all": "avg"}

# timm trunks that are convolutional or hybrid, recognised by name in check_open_clip_config's
# message (the verdict itself comes from the built trunk).
_CONV_TRUNKS = ("convnext", "fastvit", "vitamin", "_mci", "resnet", "efficientnet", "regnet")


def _refuse(model_name: str, reason: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"Cannot convert open_clip model {model_name!r}: {reason}. {_SUPPORTED}"
    )


# ---------------------------------------------------------------------------------------------
# Config-only check


def check_open_clip_config(model_name: str) -> None:
    """Raise :class:`UnsupportedModelError` early, before any weights exist, for a known name.

    Native open_clip towers are judged from the ``vision_cfg`` alone. For a timm trunk the config
    does not say what the trunk is, so the tower is built on the ``meta`` device (no memory, no
    weights, no download) and judged exactly as a built tower is. Unknown names (e.g.
    ``hf-hub:`` models) pass; the built tower is checked after creation.

    Example:
        >>> check_open_clip_config("RN50")
        Traceback (most recent call last):
        ...
        vision_lens.errors.UnsupportedModelError: Cannot convert open_clip model 'RN50': its image tower is a ModifiedResNet (convolutional, no patch tokens). ...
    """  # noqa: E501
    reason = config_unsupported_reason(model_name)
    if reason is not None:
        raise _refuse(model_name, reason)


def config_unsupported_reason(model_name: str) -> str | None:
    """Why the open_clip config ``model_name`` cannot be converted, or ``None`` (also for names
    open_clip has no config for)."""
    import open_clip

    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        return None
    vision = dict(cfg.get("vision_cfg", {}))
    if vision.get("timm_model_name"):
        return _meta_timm_tower_reason(cfg["embed_dim"], vision)
    if isinstance(vision.get("layers"), list | tuple):
        return "its image tower is a ModifiedResNet (convolutional, no patch tokens)"
    for key, reason in _UNSUPPORTED_VISION_CFG.items():
        if vision.get(key):
            return reason
    pool_type = vision.get("pool_type", "tok")
    if pool_type not in ("tok", "avg"):
        return _pool_reason(pool_type)
    if vision.get("block_type") not in (None, "default", "custom"):
        return f"its blocks are of type {vision['block_type']!r}"
    return None


def _pool_reason(pool_type: str) -> str:
    if pool_type == "none":
        return "it does not pool (pool_type='none'): its output is per-token, not an embedding"
    return f"it pools with pool_type={pool_type!r} (only 'tok' and 'avg')"


def _meta_timm_tower_reason(embed_dim: int, vision: dict) -> str | None:
    """Build a TimmModel tower on the meta device (nothing allocated or downloaded) and judge it."""
    from open_clip.model import _build_vision_tower

    vision["timm_model_pretrained"] = False
    try:
        with torch.device("meta"):
            visual = _build_vision_tower(embed_dim, vision)
    except Exception as error:  # noqa: BLE001 - any failure is reported as the reason
        return f"its timm trunk {vision['timm_model_name']!r} could not be built ({error})"
    return unsupported_reason(visual)


# ---------------------------------------------------------------------------------------------
# Built towers: classification


def unsupported_reason(visual: nn.Module) -> str | None:
    """Why an image tower cannot be converted, or ``None`` if it can."""
    from open_clip.transformer import VisionTransformer

    kind = type(visual).__name__
    if isinstance(visual, VisionTransformer):
        return _vit_reason(visual)
    if kind == "TimmModel":
        return _timm_tower_reason(visual)
    if kind == "ModifiedResNet":
        return "its image tower is a ModifiedResNet (convolutional, no patch tokens)"
    return f"its image tower is a {kind}, not open_clip's VisionTransformer or a timm ViT"


def _is_layer_norm(norm: nn.Module) -> bool:
    return isinstance(norm, nn.LayerNorm) and len(norm.normalized_shape) == 1


def _attention_parts(attn: nn.Module) -> tuple[Tensor, Tensor | None, nn.Linear] | None:
    """``(qkv_weight [3d, d], qkv_bias [3d] or None, output Linear)`` read by parameter name:
    ``in_proj_weight``/``in_proj_bias``/``out_proj`` (torch MultiheadAttention, open_clip's
    Attention) or ``qkv``/``proj`` (open_clip main's Attention); ``None`` if neither."""
    weight = getattr(attn, "in_proj_weight", None)
    out = getattr(attn, "out_proj", None)
    if weight is None and getattr(attn, "q_proj_weight", None) is not None:
        # MultiheadAttention with separate q/k/v weights (kdim/vdim set).
        weight = torch.cat([attn.q_proj_weight, attn.k_proj_weight, attn.v_proj_weight])
    if isinstance(weight, Tensor) and isinstance(out, nn.Linear):
        return weight, getattr(attn, "in_proj_bias", None), out
    qkv, proj = getattr(attn, "qkv", None), getattr(attn, "proj", None)
    if isinstance(qkv, nn.Linear) and isinstance(proj, nn.Linear):
        return qkv.weight, qkv.bias, proj
    return None


def _custom_attention_reason(attn: nn.Module, head_dim: int) -> str | None:
    """For open_clip's own ``Attention``: the options that are not a plain attention."""
    if getattr(attn, "logit_scale", None) is not None or getattr(attn, "scaled_cosine", False):
        return "its attention blocks use scaled cosine attention (custom block)"
    if not is_identity(getattr(attn, "ln_inner", None)):
        return "its attention blocks have an inner LayerNorm (custom block)"
    for name in ("q_bias", "k_bias", "v_bias", "rope", "q_proj"):
        if getattr(attn, name, None) is not None:
            return f"its attention has a {name} (not a fused plain attention)"
    ln_q, ln_k = getattr(attn, "ln_q", None), getattr(attn, "ln_k", None)
    if is_identity(ln_q) != is_identity(ln_k):
        return "its attention normalises only one of queries and keys"
    if not is_identity(ln_q):
        for norm in (ln_q, ln_k):
            if not _is_layer_norm(norm) or tuple(norm.normalized_shape) != (head_dim,):
                return (
                    f"its qk-norm is a {type(norm).__name__} over {tuple(norm.normalized_shape)}, "
                    f"not a LayerNorm over each head's {head_dim} channels"
                )
    return None


def _block_reason(block: nn.Module, index: int, width: int) -> str | None:
    from open_clip.transformer import CustomResidualAttentionBlock, ResidualAttentionBlock

    where = f"block {index}"
    if type(block) not in (ResidualAttentionBlock, CustomResidualAttentionBlock):
        return f"{where} is a {type(block).__name__} (custom attention variants)"
    if hasattr(block, "ln_1_kv"):
        return f"{where} uses cross-attention"
    if not is_identity(getattr(block, "ln_attn", None)):
        return "its attention blocks have a post-attention LayerNorm (custom block, scale_attn)"
    attn = block.attn
    parts = _attention_parts(attn)
    if parts is None:
        return f"{where}'s attention {type(attn).__name__} has no fused q/k/v and output weights"
    weight, _, out = parts
    heads = getattr(attn, "num_heads", None)
    if not heads or tuple(weight.shape) != (3 * width, width) or width % heads:
        return f"{where}'s attention is not a {width}-wide fused q/k/v multi-head attention"
    if tuple(out.weight.shape) != (width, width):
        return f"{where}'s attention output is not {width} x {width}"
    if isinstance(attn, nn.MultiheadAttention):
        if attn.bias_k is not None or attn.add_zero_attn:
            return f"{where}'s attention adds bias_k/bias_v or a zero attention position"
    else:
        reason = _custom_attention_reason(attn, width // heads)
        if reason is not None:
            return reason
    mlp = block.mlp
    if not all(hasattr(mlp, name) for name in ("c_fc", "gelu", "c_proj")):
        return f"{where}'s MLP is not c_fc -> activation -> c_proj"
    if not is_identity(getattr(mlp, "ln", None)):
        return "its MLPs have an inner LayerNorm (custom block, scale_fc)"
    if activation_name(mlp.gelu) is None:
        return f"its MLP activation {type(mlp.gelu).__name__} is not GELU or QuickGELU"
    for ls in (block.ls_1, block.ls_2):
        if not (is_identity(ls) or isinstance(getattr(ls, "gamma", None), Tensor)):
            return f"{where} has a {type(ls).__name__} layer scale"
    return None


def _vit_norms(visual: nn.Module) -> list[nn.Module]:
    norms = [visual.ln_post]
    if not is_identity(visual.ln_pre):
        norms.append(visual.ln_pre)
    for block in visual.transformer.resblocks:
        norms += [block.ln_1, block.ln_2]
        for name in ("ln_q", "ln_k"):
            if not is_identity(getattr(block.attn, name, None)):
                norms.append(getattr(block.attn, name))
    return norms


def _has_class_token(visual: nn.Module) -> bool:
    return getattr(visual, "class_embedding", None) is not None


def _vit_reason(visual: nn.Module) -> str | None:
    if getattr(visual, "attn_pool", None) is not None:
        return _UNSUPPORTED_VISION_CFG["attentional_pool"]
    pool_type = visual.pool_type
    if pool_type not in _POOL_READOUTS:
        return _pool_reason(pool_type)
    cls_token = _has_class_token(visual)
    if pool_type == "tok" and not cls_token:
        return "it pools by class token but has none"
    if pool_type == "avg_all" and cls_token:
        return "it averages the class token with the patches (pool_type='avg_all')"
    conv = visual.conv1
    if not (
        isinstance(conv, nn.Conv2d)
        and conv.in_channels == 3
        and tuple(conv.kernel_size) == tuple(conv.stride)
        and tuple(conv.padding) == (0, 0)
        and tuple(conv.dilation) == (1, 1)
        and conv.groups == 1
    ):
        return "its patch embedding is not a 3-channel convolution with stride == kernel"
    width = conv.out_channels
    blocks = visual.transformer.resblocks
    for index, block in enumerate(blocks):
        reason = _block_reason(block, index, width)
        if reason is not None:
            return reason
    first = blocks[0]
    for index, block in enumerate(blocks):
        if block.attn.num_heads != first.attn.num_heads:
            return f"block {index} has a different head count"
        if block.mlp.c_fc.out_features != first.mlp.c_fc.out_features:
            return f"block {index} has a different MLP width"
        if activation_name(block.mlp.gelu) != activation_name(first.mlp.gelu):
            return f"block {index} has a different MLP activation"
        if is_identity(getattr(block.attn, "ln_q", None)) != is_identity(
            getattr(first.attn, "ln_q", None)
        ):
            return f"block {index} differs from block 0 in qk-norm"
    norms = _vit_norms(visual)
    bad = [norm for norm in norms if not _is_layer_norm(norm)]
    if bad:
        return f"it uses a {type(bad[0]).__name__} normalisation (only LayerNorm)"
    eps_values = {float(norm.eps) for norm in norms}
    if len(eps_values) > 1:
        return f"its LayerNorms use different eps values {sorted(eps_values)}"
    grid = tuple(s // p for s, p in zip(visual.image_size, conv.kernel_size, strict=True))
    n_pos = grid[0] * grid[1] + int(cls_token)
    if tuple(visual.positional_embedding.shape) != (n_pos, width):
        return (
            f"its position embedding has shape {tuple(visual.positional_embedding.shape)}, "
            f"expected ({n_pos}, {width})"
        )
    proj = visual.proj
    if not (proj is None or isinstance(proj, nn.Linear | Tensor)):
        return f"its projection is a {type(proj).__name__}"
    return None


def _head_linears(head: nn.Module) -> tuple[list[nn.Linear], str | None]:
    """The Linear layers of an open_clip TimmModel head, and why it is not linear if it isn't."""
    modules = list(head) if isinstance(head, nn.Sequential) else [head]
    linears = []
    for module in modules:
        if isinstance(module, nn.Dropout | nn.Identity):
            continue
        if isinstance(module, nn.Linear):
            linears.append(module)
            continue
        kind = type(module).__name__
        if kind == "Mlp":
            return linears, "its projection head is an MLP (timm_proj='mlp', nonlinear)"
        if "Pool" in kind:
            return linears, f"it pools with a {kind} head (timm_pool='abs_attn'/'rot_attn')"
        return linears, f"its projection head contains a {kind}"
    return linears, None


def _timm_tower_reason(visual: nn.Module) -> str | None:
    from vision_lens.loading import timm as timm_loading

    trunk = visual.trunk
    name = type(trunk).__name__
    reason = timm_loading.unsupported_reason(trunk)
    if reason is not None:
        if name in ("ConvNeXt", "FastVit", "ResNet") or "HybridEmbed" in reason:
            kind = (
                "hybrid convolution + transformer" if "HybridEmbed" in reason else "convolutional"
            )
            return (
                f"its image tower is a timm {name} trunk ({kind}, no plain patch tokens): {reason}"
            )
        return f"its timm trunk ({name}) is not supported: {reason}"
    _, head_reason = _head_linears(visual.head)
    return head_reason


# ---------------------------------------------------------------------------------------------
# open_clip VisionTransformer


def config_from_visual(visual: nn.Module, model_name: str = "open_clip") -> HookedViTConfig:
    """Read a :class:`HookedViTConfig` off an open_clip image tower.

    Every number comes from the module's weights and submodules (head count from the attention
    module, i.e. open_clip's ``width // head_width``), never from the model's name. For a
    ``TimmModel`` tower the config is the timm trunk's with open_clip's head folded in.
    """
    reason = unsupported_reason(visual)
    if reason is not None:
        raise _refuse(model_name, reason)
    if type(visual).__name__ == "TimmModel":
        return _timm_tower(visual, model_name).cfg
    blocks = visual.transformer.resblocks
    first = blocks[0]
    d_model = visual.conv1.out_channels
    proj = visual.proj
    if isinstance(proj, nn.Linear):
        d_embed, proj_bias = proj.out_features, proj.bias is not None
    else:
        d_embed = proj.shape[1] if proj is not None else d_model
        proj_bias = isinstance(getattr(visual, "proj_bias", None), Tensor)
    return HookedViTConfig(
        n_layers=len(blocks),
        d_model=d_model,
        n_heads=first.attn.num_heads,
        d_mlp=first.mlp.c_fc.out_features,
        d_embed=d_embed,
        image_size=tuple(visual.image_size),
        patch_size=tuple(visual.conv1.kernel_size),
        act_fn=activation_name(first.mlp.gelu),
        eps=float(visual.ln_post.eps),
        ln_pre=not is_identity(visual.ln_pre),
        final_ln_after_pool=bool(getattr(visual, "final_ln_after_pool", False)),
        class_token=_has_class_token(visual),
        patch_bias=visual.conv1.bias is not None,
        qk_norm=not is_identity(getattr(first.attn, "ln_q", None)),
        readout=_POOL_READOUTS[visual.pool_type],
        proj_bias=proj_bias,
        model_name=model_name,
        dtype=visual.conv1.weight.dtype,
    )


def _norm_params(norm: nn.Module, prefix: str) -> dict[str, Tensor]:
    """``{prefix}.w`` and ``{prefix}.b`` of a LayerNorm (ones/zeros where it has no affine)."""
    (size,) = norm.normalized_shape
    ref = next(iter(norm.parameters()), None)
    ref = ref if ref is not None else torch.empty(0)
    weight = norm.weight if norm.weight is not None else torch.ones(size, dtype=ref.dtype)
    return {f"{prefix}.w": weight, f"{prefix}.b": bias_or_zeros(norm.bias, size, weight)}


def _vit_block_state_dict(block: nn.Module, cfg: HookedViTConfig, p: str) -> dict[str, Tensor]:
    h, dh, d = cfg.n_heads, cfg.d_head, cfg.d_model
    attn = block.attn
    qkv_w, qkv_b, out = _attention_parts(attn)
    out_w = out.weight
    out_b = bias_or_zeros(out.bias, d, out_w)
    head_scale = getattr(attn, "head_scale", None)
    if head_scale is not None:
        # scale_heads: each head's output z is multiplied by its scale before out_proj, i.e. the
        # columns of out_proj that read that head.
        out_w = out_w * head_scale.detach().reshape(h, 1).expand(h, dh).reshape(1, h * dh)
    out_w, out_b = fold_layer_scale(out_w, out_b, getattr(block.ls_1, "gamma", None))
    mlp = block.mlp
    mlp_b = bias_or_zeros(mlp.c_proj.bias, d, mlp.c_proj.weight)
    mlp_w, mlp_b = fold_layer_scale(mlp.c_proj.weight, mlp_b, getattr(block.ls_2, "gamma", None))
    sd = {
        **_norm_params(block.ln_1, p + "ln1"),
        p + "attn.qkv_weight": qkv_w.view(3, h, dh, d),
        p + "attn.qkv_bias": bias_or_zeros(qkv_b, 3 * d, qkv_w).view(3, h, dh),
        p + "attn.out_weight": out_w,
        p + "attn.b_O": out_b,
        **_norm_params(block.ln_2, p + "ln2"),
        p + "mlp.in_weight": mlp.c_fc.weight,
        p + "mlp.b_in": bias_or_zeros(mlp.c_fc.bias, cfg.d_mlp, mlp.c_fc.weight),
        p + "mlp.out_weight": mlp_w,
        p + "mlp.b_out": mlp_b,
    }
    if cfg.qk_norm:
        sd |= _norm_params(attn.ln_q, p + "attn.q_norm")
        sd |= _norm_params(attn.ln_k, p + "attn.k_norm")
    return sd


@torch.no_grad()
def convert_visual_state_dict(visual: nn.Module, cfg: HookedViTConfig) -> dict[str, Tensor]:
    """Map an open_clip image tower's weights onto HookedViT parameter names.

    Layer scale (``ls_1``/``ls_2``) is folded into the attention output and MLP output weights
    and biases, so hook outputs are exactly what enters the residual stream. Tensors that need no
    change are returned as views sharing storage with ``visual`` (open_clip VisionTransformer);
    a ``TimmModel`` tower's tensors are fresh copies.
    """
    if type(visual).__name__ == "TimmModel":
        return _timm_tower(visual, cfg.model_name).state_dict
    d = cfg.d_model
    proj = visual.proj
    sd: dict[str, Tensor] = {
        "embed.W_E": visual.conv1.weight,
        "embed.W_pos": visual.positional_embedding,
        **_norm_params(visual.ln_post, "ln_final"),
    }
    if cfg.class_token:
        sd["embed.cls_token"] = visual.class_embedding
    if cfg.patch_bias:
        sd["embed.b_E"] = visual.conv1.bias
    if isinstance(proj, nn.Linear):
        sd["W_proj"] = proj.weight.T
        if cfg.proj_bias:
            sd["b_proj"] = proj.bias
    else:
        sd["W_proj"] = proj if proj is not None else torch.eye(d, dtype=cfg.dtype)
        if cfg.proj_bias:
            sd["b_proj"] = visual.proj_bias
    if cfg.ln_pre:
        sd |= _norm_params(visual.ln_pre, "ln_pre")
    for layer, block in enumerate(visual.transformer.resblocks):
        sd |= _vit_block_state_dict(block, cfg, f"blocks.{layer}.")
    return {name: t.detach() for name, t in sd.items()}


# ---------------------------------------------------------------------------------------------
# open_clip TimmModel


@torch.no_grad()
def _timm_tower(visual: nn.Module, model_name: str) -> LoadedTower:
    """A TimmModel's trunk converted by timm_to_hooked, with open_clip's head folded into the
    projection: ``head(trunk(x)) = (pooled @ W + b) @ A.T + c = pooled @ (W A.T) + (b A.T + c)``.
    """
    from vision_lens.loading.timm import timm_to_hooked

    reason = _timm_tower_reason(visual)
    if reason is not None:
        raise _refuse(model_name, reason)
    try:
        cfg, sd, _ = timm_to_hooked(visual.trunk, model_name)
    except UnsupportedModelError as error:
        raise _refuse(model_name, f"its timm trunk is not supported ({error})") from error
    linears, _ = _head_linears(visual.head)
    sd = dict(sd)
    proj_bias = cfg.proj_bias
    d_embed = cfg.d_embed
    for linear in linears:
        weight = linear.weight.detach()
        bias = linear.bias.detach() if linear.bias is not None else None
        d_embed = linear.out_features
        for w_key, b_key in (("W_proj", "b_proj"), ("readout.W_dist", "readout.b_dist")):
            if w_key not in sd:
                continue
            old_b = sd.get(b_key)
            sd[w_key] = (sd[w_key] @ weight.T).contiguous()
            new_b = None if old_b is None else old_b @ weight.T
            if bias is not None:
                new_b = bias.clone() if new_b is None else new_b + bias
            if new_b is not None:
                sd[b_key] = new_b.contiguous()
        proj_bias = proj_bias or bias is not None
    if cfg.dist_head and proj_bias:
        # Both heads need a bias once one has; the missing one is the head's bias alone.
        for w_key, b_key in (("W_proj", "b_proj"), ("readout.W_dist", "readout.b_dist")):
            if b_key not in sd:
                sd[b_key] = torch.zeros(d_embed, dtype=sd[w_key].dtype, device=sd[w_key].device)
                for linear in linears:
                    if linear.bias is not None:
                        sd[b_key] = sd[b_key] @ linear.weight.detach().T + linear.bias.detach()
    cfg = dataclasses.replace(cfg, d_embed=d_embed, proj_bias=proj_bias, model_name=model_name)
    return LoadedTower(cfg, sd, None)


# ---------------------------------------------------------------------------------------------
# Entry points


def open_clip_to_hooked(
    model: nn.Module, model_name: str | None = None, preprocess: Callable | None = None
) -> LoadedTower:
    """Convert an open_clip CLIP model (or its ``.visual``) into a config, state dict and
    transform. Tensors of an open_clip ``VisionTransformer`` that need no change share storage
    with ``model``; clone them if either model will be edited.

    Raises:
        UnsupportedModelError: If the image tower cannot be converted (the message says why).
    """
    visual = _visual_of(model)
    name = model_name or type(model).__name__
    reason = unsupported_reason(visual)
    if reason is not None:
        raise _refuse(name, reason)
    if type(visual).__name__ == "TimmModel":
        cfg, state_dict, _ = _timm_tower(visual, name)
    else:
        cfg = config_from_visual(visual, name)
        state_dict = convert_visual_state_dict(visual, cfg)
    return LoadedTower(cfg, state_dict, preprocess or default_preprocess(visual))


def _visual_of(model: nn.Module) -> nn.Module:
    from open_clip.transformer import VisionTransformer

    if isinstance(model, VisionTransformer) or type(model).__name__ in (
        "TimmModel",
        "ModifiedResNet",
    ):
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


def check_pretrained_source(model_name: str, pretrained: str | os.PathLike | None) -> str | None:
    """``pretrained`` as open_clip takes it (a str), after checking that it is a known tag or an
    existing file; raises a clear FileNotFoundError otherwise (and CheckpointError for a
    directory or an empty file)."""
    import open_clip

    from vision_lens.loading.checkpoints import check_file

    if pretrained is None:
        return None
    pretrained = os.fspath(pretrained)  # open_clip takes str only (it lower()s tags)
    if open_clip.get_pretrained_cfg(model_name, pretrained):
        return pretrained
    if not os.path.exists(pretrained):
        raise FileNotFoundError(
            f"{pretrained!r} is neither an existing checkpoint file nor an open_clip pretrained "
            f"tag for {model_name}. Tags: {open_clip.list_pretrained_tags_by_model(model_name)}"
        )
    return check_file(pretrained)


def _position_keys(model: nn.Module) -> dict[str, tuple[int, tuple[int, int]]]:
    """The image tower's learned position-embedding keys -> (prefix tokens, patch size)."""
    visual = model.visual
    conv = getattr(visual, "conv1", None)
    if isinstance(getattr(visual, "positional_embedding", None), Tensor) and conv is not None:
        prefix = int(_has_class_token(visual))
        return {"visual.positional_embedding": (prefix, tuple(conv.kernel_size))}
    trunk = getattr(visual, "trunk", None)
    if isinstance(getattr(trunk, "pos_embed", None), Tensor) and hasattr(trunk, "patch_embed"):
        prefix = 0 if getattr(trunk, "no_embed_class", False) else trunk.num_prefix_tokens
        patch = tuple(trunk.patch_embed.patch_size)
        return {"visual.trunk.pos_embed": (prefix, patch)}
    return {}


def load_open_clip_checkpoint(model: nn.Module, path: str, model_name: str) -> None:
    """Load a local checkpoint file into an open_clip model as ``open_clip.load_checkpoint``
    does (its format conversions included), except that nothing is resized or left out
    silently: a checkpoint for another image size, with missing, extra or other-shaped tensors,
    or one that cannot be read is refused with a :class:`CheckpointError` naming the file.

    ``.npz``/``.npy`` (big_vision) files are left to open_clip's own converter.
    """
    from open_clip import factory

    from vision_lens.loading.checkpoints import (
        as_state_dict,
        check_state_dict,
        load_checked,
        read_checkpoint,
    )

    if os.path.splitext(path)[1] in (".npz", ".npy"):
        factory.load_checkpoint(model, path, weights_only=True)
        return
    state_dict = as_state_dict(read_checkpoint(path), path)
    # The format conversions of open_clip.load_checkpoint, without its resize_pos_embed and
    # resize_text_pos_embed (refused below instead).
    state_dict = factory.convert_state_dict(model, state_dict)
    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        state_dict = factory.convert_to_custom_text_state_dict(state_dict)
    for key in ("logit_scale", "logit_bias"):
        param = getattr(model, key, None)
        if key in state_dict and isinstance(param, Tensor):
            if state_dict[key].ndim != param.ndim and state_dict[key].numel() == param.numel():
                state_dict[key] = state_dict[key].reshape(param.shape)
    if "logit_bias" not in state_dict and getattr(model, "logit_bias", None) is not None:
        if "logit_scale" in state_dict:  # a CLIP checkpoint into a SigLIP model, as open_clip
            state_dict["logit_bias"] = torch.zeros_like(state_dict["logit_scale"])
    state_dict.pop("text.transformer.embeddings.position_ids", None)
    size_fix = (
        "load it into the open_clip config of its own image size, then resample explicitly: "
        "HookedViT.from_loaded(open_clip_to_hooked(model), image_size=...)"
    )
    check_state_dict(
        model,
        state_dict,
        path,
        f"open_clip {model_name}",
        position_keys=_position_keys(model),
        size_fix=size_fix,
    )
    load_checked(model, state_dict, path, f"open_clip {model_name}")


def create_open_clip(
    model_name: str, pretrained: str | os.PathLike | None = None, cache_dir: str | None = None
) -> nn.Module:
    """Create an open_clip model by name (tag, local checkpoint or random weights), after
    checking that the architecture converts and the weights exist.

    A local checkpoint is read without running code and checked against the architecture
    (:func:`load_open_clip_checkpoint`): open_clip would resize position embeddings of another
    image size silently; here that is refused.

    Raises:
        vision_lens.UnsupportedModelError: The image tower is not one we convert.
        FileNotFoundError: ``pretrained`` is neither a tag nor an existing file.
        vision_lens.errors.CheckpointError: The local checkpoint is a directory, empty,
            truncated, not a checkpoint, for another architecture or image size, or incomplete;
            the message names the file.
    """
    import open_clip

    check_open_clip_config(model_name)
    pretrained = check_pretrained_source(model_name, pretrained)
    if pretrained is None or open_clip.get_pretrained_cfg(model_name, pretrained):
        return open_clip.create_model(
            model_name, pretrained=pretrained, cache_dir=cache_dir, weights_only=True
        )
    # A local file: no default text-tower weights (open_clip skips them when CLIP weights load;
    # the flag is pretrained_text in open_clip >= 3.x, pretrained_hf before).
    params = inspect.signature(open_clip.create_model).parameters
    flag = "pretrained_text" if "pretrained_text" in params else "pretrained_hf"
    no_text_weights = {flag: False}
    # open_clip warns "No pretrained weights loaded ... initialized randomly" here, which is
    # untrue once load_open_clip_checkpoint has run: drop that one record.
    root = logging.getLogger()
    drop = logging.Filter()
    drop.filter = lambda record: "No pretrained weights loaded" not in record.getMessage()
    root.addFilter(drop)
    try:
        model = open_clip.create_model(
            model_name, pretrained=None, cache_dir=cache_dir, **no_text_weights
        )
    finally:
        root.removeFilter(drop)
    load_open_clip_checkpoint(model, pretrained, model_name)
    return model
