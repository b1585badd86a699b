"""Conversion of timm ``VisionTransformer`` models into HookedViT weights.

Pure functions: they read a timm model's modules and weights and return a
:class:`~vision_lens.loading.base.LoadedTower` (config, state dict, preprocessing); nothing here
builds model code of its own. Every config number is read off the modules, never from the name.

Supported: timm ``VisionTransformer`` (and DeiT's ``VisionTransformerDistilled``) with plain
pre-norm ``Block`` s, and timm ``Eva`` models with pre-norm ``EvaBlock`` s (EVA01, EVA02, the
``vit_*_rope*`` models, Perception Encoder, DINOv3: fused or split q/k/v, q/v biases,
``gamma_1``/``gamma_2`` layer scales, ``EvaAttention`` or ``AttentionRope`` incl. grouped-query
key/value heads). Within those: class/distillation/register tokens, learned or absent position
embeddings (with or without ``no_embed_class``), rotary position embeddings of every timm flavour
(axial ``cat``, learned per-head ``mixed``, ``dinov3``, ``mrope``; interleaved or half-split
channel pairs: the model's own per-position sin/cos tables are copied, so nothing is
re-derived), ``norm_pre``, LayerNorm or RMSNorm, qk-norm, layer scale (folded into the output
projections), GELU/QuickGELU/SiLU/ReLU MLPs or gated (SwiGLU/GEGLU) ones, with or without a norm
of the hidden layer (``scale_mlp``), class-token, average or MAP (attention-pool) readout,
``norm`` or ``fc_norm``, and a linear classifier head. Models built with
``dynamic_img_size=True`` are converted at their native ``img_size``.
Everything else raises :class:`~vision_lens.errors.UnsupportedModelError`; notably a
norm over all heads' concatenated outputs before the attention projection (``scale_attn_inner``,
EVA02-CLIP), which mixes the heads so that the per-head decomposition would not be exact.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from vision_lens.config import HookedViTConfig
from vision_lens.loading._common import activation_name, is_identity, linear_bias
from vision_lens.loading.base import LoadedTower
from vision_lens.loading.checkpoints import (
    as_state_dict,
    check_file,
    check_state_dict,
    checkpoint_error,
    load_checked,
    read_checkpoint,
)
from vision_lens.loading.open_clip import UnsupportedModelError

_SUPPORTED = (
    "HookedViT supports timm VisionTransformer models with plain pre-norm Blocks and a "
    "class-token, average or MAP readout (vit_*, deit_*, deit3_*, DINOv2 incl. registers and "
    "SwiGLU, SigLIP, CLIP towers, test_vit*) and timm Eva models with pre-norm blocks (EVA01, "
    "EVA02 without scale_attn_inner, vit_*_rope*, PE, DINOv3), at a fixed image size."
)

# Pooling modes of timm's VisionTransformer mapped to HookedViT readouts.
_READOUTS = {"token": "cls", "avg": "avg", "map": "map"}


def _refuse(model_name: str, reason: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"Cannot convert timm model {model_name!r}: {reason}. {_SUPPORTED}"
    )


def _model_name(model: nn.Module, model_name: str | None) -> str:
    if model_name:
        return model_name
    pretrained_cfg = getattr(model, "pretrained_cfg", None) or {}
    return pretrained_cfg.get("architecture") or type(model).__name__


# ---------------------------------------------------------------------------------------------
# Module classification: each helper returns a HookedViT name, or None for "not supported".


def _norm_kind(norm: nn.Module) -> str | None:
    """``"LN"``, ``"RMS"`` or ``None`` for a normalisation module over the last dimension."""
    kind = type(norm).__name__
    if isinstance(norm, nn.LayerNorm) and kind in ("LayerNorm", "LayerNormFp32"):
        return "LN" if len(norm.normalized_shape) == 1 else None
    if kind in ("RmsNorm", "RmsNormFp32", "RMSNorm"):
        shape = tuple(norm.normalized_shape)
        return "RMS" if len(shape) == 1 and norm.eps is not None else None
    return None


# ---------------------------------------------------------------------------------------------
# Checks


def _mlp_kind(mlp: nn.Module) -> str | None:
    """``"plain"``, ``"glu"`` (packed fc1), ``"swiglu"`` (split fc1) or ``None``."""
    from timm.layers import GluMlp, Mlp, SwiGLU

    if type(mlp) is Mlp and isinstance(mlp.fc1, nn.Linear) and isinstance(mlp.fc2, nn.Linear):
        return "plain"
    if type(mlp) is GluMlp and isinstance(mlp.fc1, nn.Linear) and mlp.chunk_dim == -1:
        return "glu"
    if type(mlp) is SwiGLU:
        return "swiglu"
    return None


def _block_reason(block: nn.Module, index: int) -> str | None:
    from timm.layers import Attention, AttentionRope, LayerScale
    from timm.models.eva import EvaAttention, EvaBlock
    from timm.models.vision_transformer import Block

    where = f"block {index}"
    if type(block) not in (Block, EvaBlock):
        return (
            f"{where} is a {type(block).__name__}, not timm's plain pre-norm Block or EvaBlock "
            "(residual post-norm, parallel and other block variants are not implemented)"
        )
    attn = block.attn
    if type(attn) not in (Attention, EvaAttention, AttentionRope):
        return f"{where} uses {type(attn).__name__}, not timm's standard Attention"
    if not is_identity(attn.norm):
        return (
            f"{where} normalises the concatenated outputs of all heads before the attention "
            "projection (scale_norm / scale_attn_inner, as in EVA02-CLIP); that norm mixes the "
            "heads, so attention would no longer be a sum of per-head terms and the per-head "
            "decomposition would not be exact"
        )
    if getattr(attn, "gate", None) is not None:
        return f"{where} gates its attention output (gated attention)"
    if is_identity(attn.q_norm) != is_identity(attn.k_norm):
        return f"{where} normalises only one of queries and keys"
    if type(attn) is EvaAttention and attn.num_heads * attn.head_dim != block.norm1.weight.numel():
        # EvaAttention reshapes its heads back to the input width before the projection.
        return f"{where}'s attention width differs from the residual stream"
    kind = _mlp_kind(block.mlp)
    if kind is None:
        return f"{where} has an MLP of type {type(block.mlp).__name__}"
    if type(attn) is AttentionRope and attn.num_heads % attn.num_kv_heads:
        return f"{where} has {attn.num_kv_heads} key/value heads for {attn.num_heads} heads"
    if activation_name(block.mlp.act) is None:
        return f"{where}'s MLP activation {type(block.mlp.act).__name__} is not supported"
    if type(block) is Block:
        for ls in (block.ls1, block.ls2):
            if not (is_identity(ls) or type(ls) is LayerScale):
                return f"{where} has a {type(ls).__name__} layer scale"
    return None


def _attn_pool_reason(pool: nn.Module, d_model: int) -> str | None:
    from timm.layers import AttentionPoolLatent, Mlp

    if type(pool) is not AttentionPoolLatent:
        return f"its attention pool is a {type(pool).__name__}, not AttentionPoolLatent (MAP)"
    if pool.pos_embed is not None:
        return "its MAP head adds its own position embedding"
    if pool.latent_len != 1 or pool.pool != "token":
        return f"its MAP head has {pool.latent_len} latent queries pooled by {pool.pool!r}"
    if pool.latent.shape[-1] != d_model or pool.num_heads * pool.head_dim != d_model:
        return "its MAP head's width differs from the residual stream"
    if not (is_identity(pool.q_norm) and is_identity(pool.k_norm)):
        return "its MAP head normalises queries and keys"
    if not isinstance(pool.proj, nn.Linear) or pool.mlp is None:
        return "its MAP head has no output projection and MLP (out_features=0)"
    if _norm_kind(pool.norm) is None:
        return f"its MAP head's norm is a {type(pool.norm).__name__}"
    if type(pool.mlp) is not Mlp or not is_identity(pool.mlp.norm):
        return f"its MAP head's MLP is a {type(pool.mlp).__name__} with an inner norm"
    if activation_name(pool.mlp.act) is None:
        return f"its MAP head's activation {type(pool.mlp.act).__name__} is not supported"
    return None


def _norms(model: nn.Module) -> list[nn.Module]:
    """Every normalisation module the converted tower uses."""
    norms = [model.norm_pre, model.norm, model.fc_norm]
    for block in model.blocks:
        norms += [block.norm1, block.norm2, block.attn.q_norm, block.attn.k_norm, block.mlp.norm]
    if getattr(model, "attn_pool", None) is not None:
        norms.append(model.attn_pool.norm)
    return [norm for norm in norms if not is_identity(norm)]


def unsupported_reason(model: nn.Module) -> str | None:
    """Why a timm model cannot be converted into a HookedViT, or ``None`` if it can.

    Args:
        model: Any ``nn.Module`` (typically from ``timm.create_model``).

    Returns:
        A sentence fragment naming the first unsupported feature found, or ``None``.

    Example:
        >>> import timm
        >>> unsupported_reason(timm.create_model("test_vit", pretrained=False)) is None
        True
        >>> unsupported_reason(timm.create_model("resnet18", pretrained=False))
        'it is a ResNet, not a timm VisionTransformer'
    """
    from timm.layers import PatchEmbed
    from timm.models.deit import VisionTransformerDistilled
    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer

    kind = type(model).__name__
    if type(model) not in (VisionTransformer, VisionTransformerDistilled, Eva):
        return f"it is a {kind}, not a timm VisionTransformer"
    if type(model) is Eva and model.rope is not None:
        reason = _rope_reason(model)
        if reason is not None:
            return reason
    embed = model.patch_embed
    if type(embed) is not PatchEmbed:
        return (
            f"its patch embedding is a {type(embed).__name__} (e.g. a convolutional hybrid stem), "
            "not a plain PatchEmbed"
        )
    proj = embed.proj
    if not (
        isinstance(proj, nn.Conv2d)
        and proj.kernel_size == proj.stride
        and tuple(proj.kernel_size) == tuple(embed.patch_size)
        and tuple(proj.padding) == (0, 0)
        and tuple(proj.dilation) == (1, 1)
        and proj.groups == 1
        and proj.in_channels == 3
    ):
        return "its patch embedding is not a 3-channel convolution with stride == kernel"
    if embed.img_size is None:
        return "its patch embedding has no fixed image size"
    if not is_identity(embed.norm):
        return "its patch embedding normalises the patch tokens (embed_norm_layer)"
    if model.global_pool not in _READOUTS:
        if model.global_pool == "":
            return "it has no pooling (global_pool=''): its output is per-token, not an embedding"
        return f"it pools with global_pool={model.global_pool!r} (only 'token', 'avg', 'map')"
    for index, block in enumerate(model.blocks):
        reason = _block_reason(block, index)
        if reason is not None:
            return reason
    first = model.blocks[0].attn
    for index, block in enumerate(model.blocks):
        attn = block.attn
        if (attn.num_heads, attn.head_dim) != (first.num_heads, first.head_dim):
            return f"block {index} has a different head count or head width"
        if _d_mlp(block.mlp) != _d_mlp(model.blocks[0].mlp):
            return f"block {index} has a different MLP width"
        if _mlp_kind(block.mlp) != _mlp_kind(model.blocks[0].mlp):
            return f"block {index} has a different MLP type"
        if activation_name(block.mlp.act) != activation_name(model.blocks[0].mlp.act):
            return f"block {index} has a different MLP activation"
        if is_identity(attn.q_norm) != is_identity(first.q_norm):
            return f"block {index} differs from block 0 in qk-norm"
        if is_identity(block.mlp.norm) != is_identity(model.blocks[0].mlp.norm):
            return f"block {index} differs from block 0 in its MLP hidden-layer norm"
    norms = _norms(model)
    kinds = {_norm_kind(norm) for norm in norms}
    if None in kinds:
        bad = next(norm for norm in norms if _norm_kind(norm) is None)
        return f"it uses a {type(bad).__name__} normalisation (only LayerNorm and RMSNorm)"
    if len(kinds) > 1:
        return "it mixes LayerNorm and RMSNorm"
    eps_values = {float(norm.eps) for norm in norms}
    if len(eps_values) > 1:
        return f"its norms use different eps values {sorted(eps_values)}"
    if not is_identity(model.norm) and not is_identity(model.fc_norm):
        return "it has both a per-token final norm and a pooled fc_norm"
    if is_identity(model.norm) and is_identity(model.fc_norm):
        return "it has no final norm (final_norm=False)"
    head_reason = _head_reason(model.head, "head")
    if head_reason is not None:
        return head_reason
    n_prefix = model.num_prefix_tokens
    if isinstance(model, VisionTransformerDistilled):
        if model.reg_token is not None:
            return "it is a distilled DeiT with register tokens (timm ignores them there)"
        if not is_identity(model.fc_norm):
            return "it is a distilled DeiT with an fc_norm (timm's distilled head skips it)"
        if model.global_pool != "token":
            return "it is a distilled DeiT without class-token pooling"
        head_reason = _head_reason(model.head_dist, "head_dist")
        if head_reason is not None:
            return head_reason
        if is_identity(model.head) != is_identity(model.head_dist):
            return "it is a distilled DeiT with only one of its two heads"
    if model.pos_embed is not None:
        n_patches = embed.num_patches
        expected = n_patches if model.no_embed_class else n_patches + n_prefix
        if tuple(model.pos_embed.shape) != (1, expected, model.embed_dim):
            return (
                f"its position embedding has shape {tuple(model.pos_embed.shape)}, expected "
                f"(1, {expected}, {model.embed_dim})"
            )
    if model.global_pool == "map":
        if n_prefix and not _pool_include_prefix(model):
            # HookedViT's MAP readout attends to every token, prefix tokens included.
            return (
                "its MAP head attends to the patch tokens only, leaving out the prefix tokens "
                "(pool_include_prefix=False); HookedViT's MAP head attends to every token"
            )
        reason = _attn_pool_reason(model.attn_pool, model.embed_dim)
        if reason is not None:
            return reason
        if _norm_kind(model.attn_pool.norm) != next(iter(kinds)):
            return "its MAP head's norm differs in type from the tower's"
    elif model.attn_pool is not None:
        return "it has an attention pool but does not pool with it"
    if model.global_pool == "avg" and _pool_include_prefix(model) and n_prefix:
        return "it averages over the prefix tokens too (pool_include_prefix=True)"
    return None


# timm rotary modules whose get_embed() gives the concatenated [sin, cos] tables Eva's attention
# applies with apply_rot_embed_cat (RotaryEmbedding, the split sin/cos variant, is never wired
# into Eva's attention).
_ROPE_MODULES = (
    "RotaryEmbeddingCat",
    "RotaryEmbeddingMixed",
    "RotaryEmbeddingDinoV3",
    "RotaryEmbeddingMRope",
)


def _rope_reason(model: nn.Module) -> str | None:
    """Why an Eva model's rotary embedding cannot be reproduced, or ``None``.

    Structural only (no tables are computed), so it also judges models on the meta device.
    """
    rope = model.rope
    if type(rope).__name__ not in _ROPE_MODULES:
        return f"its rotary position embedding is a {type(rope).__name__}"
    layouts = {bool(getattr(block.attn, "rotate_half", False)) for block in model.blocks}
    if len(layouts) > 1:
        return "its blocks differ in the RoPE channel-pair layout (rotate_half)"
    for index, block in enumerate(model.blocks):
        if block.attn.num_prefix_tokens != model.num_prefix_tokens:
            # timm's rope table has one row per patch, applied after the skipped tokens.
            return (
                f"block {index} skips {block.attn.num_prefix_tokens} tokens before rotating, "
                f"but the sequence has {model.num_prefix_tokens} prefix tokens"
            )
    if getattr(model, "rope_mixed", False) and any(
        getattr(block.attn, "num_kv_heads", block.attn.num_heads) != block.attn.num_heads
        for block in model.blocks
    ):
        return "it has per-head RoPE tables (rope_type='mixed') with grouped key/value heads"
    return None


def _pool_include_prefix(model: nn.Module) -> bool:
    """Whether timm pools over the prefix tokens too (Eva's MAP head always does)."""
    if type(model).__name__ == "Eva":
        return model.attn_pool is not None
    return bool(model.pool_include_prefix)


def _head_reason(head: nn.Module, name: str) -> str | None:
    if is_identity(head) or isinstance(head, nn.Linear):
        return None
    return f"its classifier {name} is a {type(head).__name__}, not a Linear layer"


def _d_mlp(mlp: nn.Module) -> int:
    kind = _mlp_kind(mlp)
    if kind == "swiglu":
        return mlp.fc1_x.out_features
    if kind == "glu":
        return mlp.fc1.out_features // 2
    return mlp.fc1.out_features


# ---------------------------------------------------------------------------------------------
# Config


def timm_config(model: nn.Module, model_name: str | None = None) -> HookedViTConfig:
    """Read a :class:`HookedViTConfig` off a timm ``VisionTransformer``.

    Args:
        model: A timm ``VisionTransformer`` or ``VisionTransformerDistilled``.
        model_name: Name recorded in ``cfg.model_name`` and error messages; defaults to the
            model's ``pretrained_cfg['architecture']``.

    Returns:
        The config; every number is read off the modules.

    Raises:
        UnsupportedModelError: If the model is not a convertible plain ViT.

    Example:
        >>> import timm
        >>> cfg = timm_config(timm.create_model("test_vit", pretrained=False))
        >>> cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_mlp, cfg.readout
        (6, 64, 2, 192, 'cls')
    """
    from timm.models.deit import VisionTransformerDistilled

    name = _model_name(model, model_name)
    reason = unsupported_reason(model)
    if reason is not None:
        raise _refuse(name, reason)
    first = model.blocks[0]
    norms = _norms(model)
    d_model = model.embed_dim
    distilled = isinstance(model, VisionTransformerDistilled)
    head = model.head
    heads = [head, model.head_dist] if distilled else [head]
    has_head = isinstance(head, nn.Linear)
    readout = "cls_dist" if distilled else _READOUTS[model.global_pool]
    pool_kwargs: dict[str, Any] = {}
    if readout == "map":
        pool = model.attn_pool
        pool_kwargs = dict(
            readout_n_heads=pool.num_heads,
            readout_d_mlp=pool.mlp.fc1.out_features,
            readout_act_fn=activation_name(pool.mlp.act),
        )
    return HookedViTConfig(
        n_layers=len(model.blocks),
        d_model=d_model,
        n_heads=first.attn.num_heads,
        d_head=first.attn.head_dim,
        d_mlp=_d_mlp(first.mlp),
        d_embed=head.out_features if has_head else d_model,
        image_size=tuple(model.patch_embed.img_size),
        patch_size=tuple(model.patch_embed.patch_size),
        act_fn=activation_name(first.mlp.act),
        eps=float(norms[0].eps),
        ln_pre=not is_identity(model.norm_pre),
        final_ln_after_pool=not is_identity(model.fc_norm),
        class_token=model.cls_token is not None,
        dist_token=distilled,
        n_registers=int(model.reg_token.shape[1]) if model.reg_token is not None else 0,
        patch_bias=model.patch_embed.proj.bias is not None,
        norm_type=_norm_kind(norms[0]),
        qk_norm=not is_identity(first.attn.q_norm),
        gated_mlp=_mlp_kind(first.mlp) != "plain",
        mlp_norm=not is_identity(first.mlp.norm),
        rope=_rope_layout(model),
        rope_per_head=bool(getattr(model, "rope_mixed", False)),
        readout=readout,
        dist_head=distilled and has_head,
        # A bias on either classifier head needs b_proj (the other one's is then zero).
        proj_bias=any(isinstance(h, nn.Linear) and h.bias is not None for h in heads),
        model_name=name,
        dtype=model.patch_embed.proj.weight.dtype,
        **pool_kwargs,
    )


def _rope_layout(model: nn.Module) -> str | None:
    if getattr(model, "rope", None) is None:
        return None
    return "half" if getattr(model.blocks[0].attn, "rotate_half", False) else "interleaved"


# ---------------------------------------------------------------------------------------------
# Weights


def _t(tensor: Tensor) -> Tensor:
    return tensor.detach().clone().contiguous()


def _bias(linear: nn.Linear) -> Float[Tensor, " d_out"]:
    """A copy of a linear layer's bias, zeros if it has none (HookedViT always has one)."""
    return _t(linear_bias(linear))


def _norm_weights(norm: nn.Module, prefix: str, width: int, ref: Tensor) -> dict[str, Tensor]:
    """``{prefix}.w`` (and ``.b`` for LayerNorm), ones/zeros where the norm has no affine."""
    weight = getattr(norm, "weight", None)
    bias = getattr(norm, "bias", None)
    ones = torch.ones(width, dtype=ref.dtype, device=ref.device)
    out = {f"{prefix}.w": _t(weight) if weight is not None else ones}
    if _norm_kind(norm) == "LN":
        out[f"{prefix}.b"] = _t(bias) if bias is not None else torch.zeros_like(ones)
    return out


def _gammas(block: nn.Module, width: int, ref: Tensor) -> tuple[Tensor, Tensor]:
    """Layer-scale factors of the attention and MLP branches (ones where there is none)."""
    if hasattr(block, "ls1"):  # timm Block: LayerScale modules
        scales = [None if is_identity(ls) else ls.gamma for ls in (block.ls1, block.ls2)]
    else:  # EvaBlock: bare gamma_1 / gamma_2 parameters
        scales = [block.gamma_1, block.gamma_2]
    ones = torch.ones(width, dtype=ref.dtype, device=ref.device)
    return tuple(ones if scale is None else scale.detach() for scale in scales)


def _qkv(attn: nn.Module) -> tuple[Tensor, Tensor]:
    """Fused ``[3 * attn_dim, d]`` weight and ``[3 * attn_dim]`` bias of an attention module."""
    if getattr(attn, "q_proj", None) is not None:  # Eva/AttentionRope: separate projections
        groups = attn.num_heads // getattr(attn, "num_kv_heads", attn.num_heads)
        weights, biases = [attn.q_proj.weight], [_bias(attn.q_proj)]
        for proj in (attn.k_proj, attn.v_proj):
            # Grouped-query attention: head h reads key/value head h // groups (timm's
            # repeat_interleave after the rotation, which is the same for every head unless
            # the tables are per head, refused then), so repeat each kv head's rows.
            weight, bias = proj.weight, _bias(proj)
            weight = weight.reshape(-1, attn.head_dim, weight.shape[-1])
            weights.append(weight.repeat_interleave(groups, dim=0).flatten(0, 1))
            biases.append(bias.reshape(-1, attn.head_dim).repeat_interleave(groups, 0).flatten())
        return torch.cat(weights), torch.cat(biases)
    if getattr(attn, "q_bias", None) is not None:  # EvaAttention: q and v biases, k bias is 0
        return attn.qkv.weight, torch.cat([attn.q_bias, attn.k_bias, attn.v_bias])
    return attn.qkv.weight, _bias(attn.qkv)


def _block_state_dict(block: nn.Module, cfg: HookedViTConfig, prefix: str) -> dict[str, Tensor]:
    d, h, dh = cfg.d_model, cfg.n_heads, cfg.d_head
    attn, mlp = block.attn, block.mlp
    qkv_weight, qkv_bias = _qkv(attn)
    ref = qkv_weight
    sd = _norm_weights(block.norm1, f"{prefix}.ln1", d, ref)
    sd |= _norm_weights(block.norm2, f"{prefix}.ln2", d, ref)
    # timm's qkv rows are ordered (q|k|v, head, head_dim): the reshape in Attention.forward.
    sd[f"{prefix}.attn.qkv_weight"] = _t(qkv_weight.reshape(3, h, dh, d))
    sd[f"{prefix}.attn.qkv_bias"] = _t(qkv_bias.reshape(3, h, dh))
    if cfg.qk_norm:
        sd |= _norm_weights(attn.q_norm, f"{prefix}.attn.q_norm", dh, ref)
        sd |= _norm_weights(attn.k_norm, f"{prefix}.attn.k_norm", dh, ref)
    # Layer scale multiplies the sublayer output per channel: fold it into the output rows.
    gamma1, gamma2 = _gammas(block, d, ref)
    sd[f"{prefix}.attn.out_weight"] = _t(attn.proj.weight * gamma1[:, None])
    sd[f"{prefix}.attn.b_O"] = _bias(attn.proj) * gamma1
    kind = _mlp_kind(mlp)
    if kind == "swiglu":
        sd[f"{prefix}.mlp.in_weight"] = _t(mlp.fc1_x.weight)
        sd[f"{prefix}.mlp.b_in"] = _bias(mlp.fc1_x)
        sd[f"{prefix}.mlp.gate_weight"] = _t(mlp.fc1_g.weight)
        sd[f"{prefix}.mlp.b_gate"] = _bias(mlp.fc1_g)
    elif kind == "glu":
        # GluMlp: x1, x2 = fc1(x).chunk(2); gate_last -> x1 * act(x2), else act(x1) * x2.
        weights, biases = mlp.fc1.weight.chunk(2, dim=0), _bias(mlp.fc1).chunk(2, dim=0)
        halves = list(zip(weights, biases, strict=True))
        (in_w, in_b), (gate_w, gate_b) = halves if mlp.gate_last else halves[::-1]
        sd[f"{prefix}.mlp.in_weight"] = _t(in_w)
        sd[f"{prefix}.mlp.b_in"] = _t(in_b)
        sd[f"{prefix}.mlp.gate_weight"] = _t(gate_w)
        sd[f"{prefix}.mlp.b_gate"] = _t(gate_b)
    else:
        sd[f"{prefix}.mlp.in_weight"] = _t(mlp.fc1.weight)
        sd[f"{prefix}.mlp.b_in"] = _bias(mlp.fc1)
    if cfg.mlp_norm:
        sd |= _norm_weights(mlp.norm, f"{prefix}.mlp.ln", cfg.d_mlp, ref)
    sd[f"{prefix}.mlp.out_weight"] = _t(mlp.fc2.weight * gamma2[:, None])
    sd[f"{prefix}.mlp.b_out"] = _bias(mlp.fc2) * gamma2
    return sd


def _rope_tables(
    model: nn.Module, cfg: HookedViTConfig
) -> list[
    tuple[Float[Tensor, "rope_heads n_pos d_head"], Float[Tensor, "rope_heads n_pos d_head"]]
]:
    """Each block's RoPE ``(cos, sin)`` tables over all tokens, from the model's own rope module.

    The rope module is asked exactly as ``Eva._pos_embed`` asks it at the native image size (in
    eval mode, so no training-time coordinate jitter), so every timm flavour is reproduced as
    is. Prefix tokens, which timm leaves unrotated, get ``cos = 1, sin = 0``.
    """
    rope = model.rope
    was_training = rope.training
    rope.eval()
    try:
        grid = list(model.patch_embed.grid_size)
        if model.dynamic_img_size or not hasattr(rope, "feat_shape"):
            embed = rope.get_embed(shape=grid)
        else:
            embed = rope.get_embed()
    finally:
        rope.train(was_training)
    embed = embed.detach()
    n_tables = cfg.n_layers if cfg.rope_per_head else 1
    rope_heads = cfg.n_heads if cfg.rope_per_head else 1
    expected = (cfg.n_patches, 2 * cfg.d_head)
    if cfg.rope_per_head:
        expected = (n_tables, rope_heads, *expected)
    if tuple(embed.shape) != expected:
        raise _refuse(
            _model_name(model, None),
            f"its rotary embedding table has shape {tuple(embed.shape)}, expected {expected}",
        )
    embed = embed.to(cfg.dtype).reshape(n_tables, rope_heads, cfg.n_patches, 2 * cfg.d_head)
    sin, cos = embed.chunk(2, dim=-1)  # timm concatenates [sin, cos]
    full = (n_tables, rope_heads, cfg.n_pos, cfg.d_head)
    out_cos = torch.ones(full, dtype=cfg.dtype, device=embed.device)
    out_sin = torch.zeros(full, dtype=cfg.dtype, device=embed.device)
    out_cos[:, :, cfg.n_prefix :] = cos
    out_sin[:, :, cfg.n_prefix :] = sin
    return [
        (
            out_cos[index if cfg.rope_per_head else 0].clone(),
            out_sin[index if cfg.rope_per_head else 0].clone(),
        )
        for index in range(cfg.n_layers)
    ]


def _pos_embed(model: nn.Module, cfg: HookedViTConfig) -> Float[Tensor, "n_pos d_model"]:
    """One position row per token; prefix tokens timm gives none (``no_embed_class``) get 0."""
    ref = model.patch_embed.proj.weight
    w_pos = torch.zeros(cfg.n_pos, cfg.d_model, dtype=ref.dtype, device=ref.device)
    if model.pos_embed is None:
        return w_pos
    pos = model.pos_embed.detach()[0]
    if model.no_embed_class:
        w_pos[cfg.n_prefix :] = pos
    else:
        w_pos[:] = pos
    return w_pos


def _map_state_dict(pool: nn.Module, cfg: HookedViTConfig) -> dict[str, Tensor]:
    d, hp = cfg.d_model, cfg.readout_n_heads
    dhp = d // hp
    ref = pool.kv.weight
    if isinstance(pool.q, nn.Linear):
        q_w, q_b = pool.q.weight.detach(), _bias(pool.q)
    else:  # q_proj=False: the latent is the query itself.
        q_w = torch.eye(d, dtype=ref.dtype, device=ref.device)
        q_b = torch.zeros(d, dtype=ref.dtype, device=ref.device)
    sd = {
        "readout.latent": _t(pool.latent.reshape(d)),
        "readout.attn.qkv_weight": torch.cat(
            [q_w.reshape(1, hp, dhp, d), pool.kv.weight.detach().reshape(2, hp, dhp, d)]
        ).contiguous(),
        "readout.attn.qkv_bias": torch.cat(
            [q_b.reshape(1, hp, dhp), _bias(pool.kv).reshape(2, hp, dhp)]
        ).contiguous(),
        "readout.attn.out_weight": _t(pool.proj.weight),
        "readout.attn.b_O": _bias(pool.proj),
        "readout.mlp.in_weight": _t(pool.mlp.fc1.weight),
        "readout.mlp.b_in": _bias(pool.mlp.fc1),
        "readout.mlp.out_weight": _t(pool.mlp.fc2.weight),
        "readout.mlp.b_out": _bias(pool.mlp.fc2),
    }
    sd |= _norm_weights(pool.norm, "readout.ln", d, ref)
    return sd


def timm_state_dict(model: nn.Module, cfg: HookedViTConfig) -> dict[str, Tensor]:
    """Convert a timm ``VisionTransformer``'s weights into a HookedViT state dict.

    Args:
        model: The timm model ``cfg`` was read from (see :func:`timm_config`).
        cfg: Its config.

    Returns:
        HookedViT parameter names to fresh tensors (the timm model is not modified or shared).

    Example:
        >>> import timm
        >>> model = timm.create_model("test_vit", pretrained=False)
        >>> sd = timm_state_dict(model, timm_config(model))
        >>> tuple(sd["blocks.0.attn.qkv_weight"].shape)  # [3, n_heads, d_head, d_model]
        (3, 2, 32, 64)
    """
    d = cfg.d_model
    embed = model.patch_embed.proj
    ref = embed.weight
    with torch.no_grad():
        sd = {"embed.W_E": _t(embed.weight), "embed.W_pos": _pos_embed(model, cfg)}
        if cfg.patch_bias:
            sd["embed.b_E"] = _t(embed.bias)
        if cfg.class_token:
            sd["embed.cls_token"] = _t(model.cls_token.reshape(d))
        if cfg.dist_token:
            sd["embed.dist_token"] = _t(model.dist_token.reshape(d))
        if cfg.n_registers:
            sd["embed.registers"] = _t(model.reg_token.reshape(cfg.n_registers, d))
        if cfg.ln_pre:
            sd |= _norm_weights(model.norm_pre, "ln_pre", d, ref)
        for index, block in enumerate(model.blocks):
            sd |= _block_state_dict(block, cfg, f"blocks.{index}")
        if cfg.rope is not None:
            for index, (cos, sin) in enumerate(_rope_tables(model, cfg)):
                sd[f"blocks.{index}.attn.rope_cos"] = cos
                sd[f"blocks.{index}.attn.rope_sin"] = sin
        final = model.fc_norm if cfg.final_ln_after_pool else model.norm
        sd |= _norm_weights(final, "ln_final", d, ref)
        head = model.head
        if isinstance(head, nn.Linear):
            sd["W_proj"] = _t(head.weight.T)
            if cfg.proj_bias:
                sd["b_proj"] = _bias(head)
        else:
            # No classifier (num_classes=0): the output is the pooled feature itself.
            sd["W_proj"] = torch.eye(d, dtype=ref.dtype, device=ref.device)
        if cfg.dist_head:
            sd["readout.W_dist"] = _t(model.head_dist.weight.T)
            if cfg.proj_bias:
                sd["readout.b_dist"] = _bias(model.head_dist)
        if cfg.readout == "map":
            sd |= _map_state_dict(model.attn_pool, cfg)
    return sd


# ---------------------------------------------------------------------------------------------
# Entry points


def timm_preprocess(model: nn.Module) -> Callable:
    """timm's evaluation transform for ``model``, at the model's own (fixed) image size.

    The input size is taken from the patch embedding rather than the pretrained config, so a
    model created with ``img_size=...`` gets images of the size its HookedViT accepts.

    Example:
        >>> import timm
        >>> model = timm.create_model("test_vit", pretrained=False, img_size=64)
        >>> transform = timm_preprocess(model)
        >>> from PIL import Image
        >>> tuple(transform(Image.new("RGB", (100, 80))).shape)
        (3, 64, 64)
    """
    import timm.data

    size = tuple(model.patch_embed.img_size)
    data_cfg = timm.data.resolve_data_config({"input_size": (3, *size)}, model=model)
    return timm.data.create_transform(**data_cfg)


def timm_to_hooked(model: nn.Module, model_name: str | None = None) -> LoadedTower:
    """Convert a timm ``VisionTransformer`` into a HookedViT config, state dict and transform.

    The HookedViT built from the result computes ``model(x)`` in eval mode: the pooled features
    when ``num_classes=0``, the logits otherwise. Models created with ``dynamic_img_size=True``
    are converted at their native ``img_size`` (HookedViT has a fixed image size; at that size
    timm's resampling of the position embedding is the identity).

    Args:
        model: A timm ``VisionTransformer`` (e.g. from ``timm.create_model``).
        model_name: Name for the config and error messages (default: timm's architecture name).

    Returns:
        ``LoadedTower(cfg, state_dict, preprocess)``.

    Raises:
        UnsupportedModelError: If the model is not a plain ViT HookedViT implements; the message
            names the reason.

    Example:
        >>> import timm
        >>> from vision_lens.hooked_vit import HookedViT
        >>> source = timm.create_model("test_vit", pretrained=False).eval()
        >>> cfg, state_dict, preprocess = timm_to_hooked(source)
        >>> model = HookedViT(cfg)
        >>> model.load_state_dict(state_dict, strict=True)
        <All keys matched successfully>
    """
    cfg = timm_config(model, model_name)
    return LoadedTower(cfg, timm_state_dict(model, cfg), timm_preprocess(model))


def load_timm(
    name_or_model: str | nn.Module, pretrained: bool | str = False, **create_kwargs: Any
) -> LoadedTower:
    """Create (or take) a timm model and convert it with :func:`timm_to_hooked`.

    Args:
        name_or_model: A timm model name (``timm.create_model``) or an already built model.
        pretrained: ``False`` for random weights, ``True`` for timm's pretrained weights (needs
            them downloaded or cached), or the path of a local checkpoint file. timm loads
            checkpoints with ``torch.load(weights_only=True)``, so no pickled code runs; see
            :func:`load_timm_checkpoint` (``pretrained=True`` with
            ``pretrained_cfg_overlay=dict(file=path)`` is the same).
        **create_kwargs: Passed to ``timm.create_model`` (e.g. ``num_classes=0``,
            ``img_size=...``, ``depth=...``).

    Returns:
        ``LoadedTower(cfg, state_dict, preprocess)``.

    Raises:
        UnsupportedModelError: If the model is not a plain ViT HookedViT implements.
        FileNotFoundError: The checkpoint path does not exist.
        vision_lens.errors.CheckpointError: The checkpoint cannot be read or does not fit the
            model (another architecture or image size, missing keys); the message names it.

    Example:
        >>> cfg, state_dict, _ = load_timm("vit_small_patch16_224", num_classes=0, depth=2)
        >>> cfg.n_layers, cfg.d_model, cfg.d_embed
        (2, 384, 384)
    """
    if not isinstance(name_or_model, str):
        if pretrained is not False or create_kwargs:
            raise ValueError("pretrained and create_kwargs only apply to a model name.")
        return timm_to_hooked(name_or_model)
    import timm

    name = name_or_model
    overlay = dict(create_kwargs.pop("pretrained_cfg_overlay", None) or {})
    path = None
    if isinstance(pretrained, str | bytes) or hasattr(pretrained, "__fspath__"):
        path = os.fsdecode(pretrained)
    elif pretrained and overlay.get("file"):
        path = os.fsdecode(overlay.pop("file"))
    if overlay:
        create_kwargs["pretrained_cfg_overlay"] = overlay
    if path is None:
        model = timm.create_model(name, pretrained=bool(pretrained), **create_kwargs)
    else:
        check_file(path)  # before building the model
        model = timm.create_model(name, pretrained=False, **create_kwargs)
        load_timm_checkpoint(model, path, name)
    model.eval()
    return timm_to_hooked(model, name)


# Errors timm's checkpoint filters raise on tensors they cannot convert.
_FILTER_ERRORS = (KeyError, IndexError, ValueError, TypeError, RuntimeError, AttributeError)


def _classifier_keys(model: nn.Module) -> tuple[str, ...]:
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier", "head")
    return (classifier,) if isinstance(classifier, str) else tuple(classifier)


def load_timm_checkpoint(model: nn.Module, path: str | os.PathLike, name: str) -> None:
    """Load a local checkpoint file into a timm model as ``timm.create_model(pretrained=True,
    pretrained_cfg_overlay=dict(file=path))`` would, but refusing what timm would fix silently.

    The file is read without running code; a ``num_classes=0`` model drops the checkpoint's
    classifier (as timm does); checkpoints in another layout (e.g. original JAX or DINO keys)
    go through the model's ``checkpoint_filter_fn``. A checkpoint for another image size (timm
    would resample its position embeddings) or another patch size (timm would resample the
    patch embedding), and one with missing, extra or other-shaped tensors, is refused.

    Raises:
        FileNotFoundError: Nothing exists at ``path``.
        vision_lens.errors.CheckpointError: The file cannot be read or does not fit the model;
            the message names the file, the problem and the fix.
    """
    path = os.fspath(path)
    arch = f"timm {name}"
    state_dict = as_state_dict(
        read_checkpoint(path), path, ("state_dict_ema", "model_ema", "state_dict", "model")
    )
    heads = _classifier_keys(model)

    def drop_head(sd: dict[str, Tensor]) -> dict[str, Tensor]:
        if getattr(model, "num_classes", None) != 0:
            return sd
        return {k: v for k, v in sd.items() if not any(k.startswith(h + ".") for h in heads)}

    state_dict = drop_head(state_dict)
    expected = model.state_dict()
    pos = getattr(model, "pos_embed", None)
    position_keys = {}
    if isinstance(pos, Tensor) and hasattr(model, "patch_embed"):
        prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
        position_keys["pos_embed"] = (prefix, tuple(model.patch_embed.patch_size))
    size_fix = (
        "create the model at the checkpoint's size (img_size=...), then resample explicitly: "
        "HookedViT.from_timm(name, pretrained=path, img_size=<its size>, image_size=<yours>)"
    )
    reshaped = [
        k
        for k in state_dict
        if k in expected and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if set(state_dict) != set(expected) and not reshaped:
        # Another key layout: timm's own converter for this model (it would also resample
        # position and patch embeddings: any shape difference was refused above/below).
        module = sys.modules.get(type(model).__module__)
        filter_fn = getattr(module, "checkpoint_filter_fn", None)
        if filter_fn is not None:
            try:
                state_dict = drop_head(dict(filter_fn(state_dict, model)))
            except _FILTER_ERRORS as err:
                raise checkpoint_error(
                    path,
                    f"is not a checkpoint of {arch} (timm's converter failed: "
                    f"{type(err).__name__}: {err})",
                    f"pass a checkpoint saved from {arch}",
                ) from err
    check_state_dict(model, state_dict, path, arch, position_keys=position_keys, size_fix=size_fix)
    load_checked(model, state_dict, path, arch)
