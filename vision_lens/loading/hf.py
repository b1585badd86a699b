"""Conversion of Hugging Face ``transformers`` ViT image towers into HookedViT weights.

Pure functions: they read a ``transformers`` model (its config object and its weights) and return
a :class:`~vision_lens.loading.base.LoadedTower` ``(cfg, state_dict, preprocess)``; nothing here
runs or builds a HookedViT. Supported classes and the output each one's HookedViT reproduces:

- ``CLIPVisionModel``: ``pooler_output`` (post-LayerNorm class token).
- ``CLIPVisionModelWithProjection``: ``image_embeds``.
- ``CLIPModel``: ``get_image_features`` (vision tower and ``visual_projection``).
- ``SiglipVisionModel``, ``SiglipModel``: ``pooler_output`` / ``get_image_features`` (the MAP
  attention-pooling head).
- ``Dinov2Model``, ``Dinov2WithRegistersModel``: ``pooler_output`` (normalised class token).
- ``ViTModel``, ``DeiTModel`` loaded with ``add_pooling_layer=False``:
  ``last_hidden_state[:, 0]`` (their default dense + tanh pooler is refused: it is not linear).
- ``ViTForImageClassification``, ``DeiTForImageClassification``: ``logits``.
- ``DeiTForImageClassificationWithTeacher``: ``logits`` (mean of the class and distillation
  heads).

HookedViT runs at the config's image size only, with the stored position embeddings; that is
what every class above does at its native size (``interpolate_pos_encoding`` off, or a no-op at
the native square size for DINOv2).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from vision_lens.config import HookedViTConfig
from vision_lens.loading._common import fold_layer_scale, linear_bias
from vision_lens.loading.base import LoadedTower
from vision_lens.loading.checkpoints import check_file, checkpoint_error, read_checkpoint
from vision_lens.loading.open_clip import UnsupportedModelError

if TYPE_CHECKING:
    from PIL.Image import Image
    from transformers import PretrainedConfig

# Class name -> the output its HookedViT reproduces (for error messages and docs).
SUPPORTED_CLASSES = {
    "CLIPVisionModel": "pooler_output",
    "CLIPVisionModelWithProjection": "image_embeds",
    "CLIPModel": "get_image_features",
    "SiglipVisionModel": "pooler_output",
    "SiglipModel": "get_image_features",
    "Dinov2Model": "pooler_output",
    "Dinov2WithRegistersModel": "pooler_output",
    "ViTModel": "last_hidden_state[:, 0] (loaded with add_pooling_layer=False)",
    "ViTForImageClassification": "logits",
    "DeiTModel": "last_hidden_state[:, 0] (loaded with add_pooling_layer=False)",
    "DeiTForImageClassification": "logits",
    "DeiTForImageClassificationWithTeacher": "logits",
}

# config.model_type -> class to load when a saved config names no supported architecture.
_CLASS_FOR_MODEL_TYPE = {
    "clip": "CLIPModel",
    "clip_vision_model": "CLIPVisionModel",
    "siglip": "SiglipModel",
    "siglip_vision_model": "SiglipVisionModel",
    "dinov2": "Dinov2Model",
    "dinov2_with_registers": "Dinov2WithRegistersModel",
    "vit": "ViTModel",
    "deit": "DeiTModel",
}

# transformers' ``hidden_act`` strings -> HookedViT act_fn. The tanh variants (gelu_new,
# gelu_fast) are the same function as torch's tanh GELU written differently, so they agree to
# rounding; anything else (clipped, squared, learned activations) is refused.
_ACT_FNS = {
    "gelu": "gelu",
    "gelu_python": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_python_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "quick_gelu": "quick_gelu",
    "silu": "silu",
    "swish": "silu",
    "relu": "relu",
}


def _supported_list() -> str:
    return ", ".join(SUPPORTED_CLASSES)


def _refuse(kind: str, reason: str) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"Cannot convert transformers model {kind}: {reason}. HookedViT supports these "
        f"transformers classes: {_supported_list()}."
    )


def _get(module: nn.Module, *paths: str) -> Any:
    """The first of the dotted attribute ``paths`` that exists on ``module`` (None if none).

    transformers renames submodules between major versions (``attention.attention.query`` in
    4.x, ``attention.q_proj`` in 5.x), so each lookup lists the known spellings.
    """
    for path in paths:
        obj = module
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return obj
    return None


def _act_fn(name: object, kind: str) -> str:
    if not isinstance(name, str) or name not in _ACT_FNS:
        raise _refuse(
            kind,
            f"its activation hidden_act={name!r} is not one of {sorted(_ACT_FNS)}",
        )
    return _ACT_FNS[name]


def _linear(module: object, what: str, kind: str) -> nn.Linear:
    if not isinstance(module, nn.Linear):
        raise _refuse(kind, f"its {what} is {type(module).__name__}, not a Linear layer")
    return module


# ---------------------------------------------------------------------- source description
class _Source:
    """What the converter reads off one supported model, family-independent."""

    def __init__(self, kind: str, tower: nn.Module):
        self.kind = kind
        self.tower = tower  # the module with .embeddings and the blocks
        self.ln_pre: nn.Module | None = None
        self.final_norm: nn.Module | None = None
        self.final_ln_after_pool = False
        self.layers: list[nn.Module] = []
        self.act_name: Any = None
        # Output head.
        self.readout = "cls"
        self.proj: nn.Linear | Tensor | None = None  # None: the pooled vector itself (eye)
        self.dist_proj: nn.Linear | None = None
        self.map_head: nn.Module | None = None


def _tower_of(model: nn.Module) -> nn.Module:
    """The module holding ``embeddings``: CLIP/SigLIP wrap it in ``vision_model`` (twice in
    transformers 4.x, where ``CLIPVisionModel.vision_model`` is a ``CLIPVisionTransformer``)."""
    tower = model
    while not hasattr(tower, "embeddings") and hasattr(tower, "vision_model"):
        tower = tower.vision_model
    return tower


def _describe(model: nn.Module) -> _Source:
    """Dispatch on the model's class; raise UnsupportedModelError for anything else."""
    kind = type(model).__name__
    families = [cls for cls in type(model).__mro__ if cls.__name__ in SUPPORTED_CLASSES]
    if not families:
        what = "a text model" if "Text" in kind else "not a supported plain ViT image model"
        raise _refuse(kind, f"{kind} is {what}")
    family = families[0].__name__
    if family.startswith("CLIP"):
        return _describe_clip(model, family)
    if family.startswith("Siglip"):
        return _describe_siglip(model, family)
    if family.startswith("Dinov2"):
        return _describe_dinov2(model, family)
    return _describe_vit(model, family)


def _blocks(tower: nn.Module) -> list[nn.Module]:
    layers = _get(tower, "encoder.layers", "encoder.layer", "layers")
    if layers is None:
        raise _refuse(type(tower).__name__, "no encoder layers were found")
    return list(layers)


def _describe_clip(model: nn.Module, family: str) -> _Source:
    src = _Source(family, _tower_of(model))
    src.ln_pre = src.tower.pre_layrnorm
    src.final_norm = src.tower.post_layernorm
    # HF CLIP normalises the pooled class token only (post_layernorm(last_hidden_state[:, 0])).
    src.final_ln_after_pool = True
    src.layers = _blocks(src.tower)
    src.act_name = src.tower.config.hidden_act
    if family in ("CLIPVisionModelWithProjection", "CLIPModel"):
        src.proj = _linear(model.visual_projection, "visual_projection", family)
    return src


def _describe_siglip(model: nn.Module, family: str) -> _Source:
    src = _Source(family, _tower_of(model))
    if not getattr(src.tower, "use_head", False) or getattr(src.tower, "head", None) is None:
        raise _refuse(
            family,
            "its vision tower has no pooling head (vision_use_head=False), so its pooler_output "
            "is None and there is no image embedding to reproduce",
        )
    src.final_norm = src.tower.post_layernorm  # per token, before the MAP head
    src.layers = _blocks(src.tower)
    src.act_name = src.tower.config.hidden_act
    src.readout = "map"
    src.map_head = src.tower.head
    return src


def _describe_dinov2(model: nn.Module, family: str) -> _Source:
    src = _Source(family, model)
    image_size = model.config.image_size
    if isinstance(image_size, list | tuple) and image_size[0] != image_size[1]:
        # HF DINOv2 re-interpolates position embeddings for any non-square input, even at the
        # native size, so the stored table is not what it uses.
        raise _refuse(
            family,
            f"its image_size {tuple(image_size)} is not square (HF DINOv2 interpolates position "
            "embeddings for non-square inputs)",
        )
    src.final_norm = model.layernorm
    src.layers = _blocks(model)
    src.act_name = model.config.hidden_act
    return src


def _describe_vit(model: nn.Module, family: str) -> _Source:
    # ViT/DeiT: the bare model, or a classifier wrapping it as .vit / .deit.
    base = _get(model, "vit", "deit") if family not in ("ViTModel", "DeiTModel") else model
    src = _Source(family, base)
    if getattr(base, "pooler", None) is not None:
        raise _refuse(
            family,
            "its pooler_output is dense + tanh of the class token, which is not linear and so "
            "cannot be decomposed exactly. Load it without the pooler, e.g. "
            f"{family}.from_pretrained(path, add_pooling_layer=False) or "
            "load_hf(path, add_pooling_layer=False); HookedViT then outputs the normalised class "
            "token last_hidden_state[:, 0]",
        )
    src.final_norm = base.layernorm
    src.layers = _blocks(base)
    src.act_name = base.config.hidden_act
    if family in ("ViTForImageClassification", "DeiTForImageClassification"):
        if isinstance(model.classifier, nn.Linear):
            src.proj = model.classifier
    elif family == "DeiTForImageClassificationWithTeacher":
        src.readout = "cls_dist"
        cls_head, dist_head = model.cls_classifier, model.distillation_classifier
        if isinstance(cls_head, nn.Linear) != isinstance(dist_head, nn.Linear):
            raise _refuse(family, "only one of its two classifier heads is a Linear layer")
        if isinstance(cls_head, nn.Linear):
            src.proj, src.dist_proj = cls_head, dist_head
    return src


# ---------------------------------------------------------------------- per-block reading
def _attention_parts(layer: nn.Module, kind: str) -> tuple[nn.Linear, ...]:
    """``(q, k, v, out)`` Linear layers of one block, across the transformers layouts."""
    q = _get(layer, "self_attn.q_proj", "attention.q_proj", "attention.attention.query")
    k = _get(layer, "self_attn.k_proj", "attention.k_proj", "attention.attention.key")
    v = _get(layer, "self_attn.v_proj", "attention.v_proj", "attention.attention.value")
    o = _get(
        layer,
        "self_attn.out_proj",
        "attention.o_proj",
        "attention.out_proj",
        "attention.output.dense",
    )
    names = ("query", "key", "value", "output")
    parts = zip((q, k, v, o), names, strict=True)
    return tuple(_linear(m, f"attention {n} projection", kind) for m, n in parts)


def _block_norms(layer: nn.Module) -> tuple[nn.Module, nn.Module]:
    ln1 = _get(layer, "layer_norm1", "norm1", "layernorm_before")
    ln2 = _get(layer, "layer_norm2", "norm2", "layernorm_after")
    return ln1, ln2


def _mlp_parts(layer: nn.Module, kind: str) -> dict[str, Tensor] | None:
    """Gated (SwiGLU) MLP weights as HookedViT names, or None for a plain fc1/act/fc2 MLP."""
    mlp = layer.mlp
    if hasattr(mlp, "gate_proj"):  # transformers 5: silu(gate_proj(x)) * up_proj(x)
        gate = _linear(mlp.gate_proj, "MLP gate projection", kind)
        up = _linear(mlp.up_proj, "MLP up projection", kind)
        down = _linear(mlp.down_proj, "MLP down projection", kind)
        return {
            "mlp.gate_weight": gate.weight,
            "mlp.b_gate": linear_bias(gate),
            "mlp.in_weight": up.weight,
            "mlp.b_in": linear_bias(up),
            "mlp.out_weight": down.weight,
            "mlp.b_out": linear_bias(down),
        }
    if hasattr(mlp, "weights_in"):  # transformers 4: x1, x2 = weights_in(x).chunk(2); silu(x1)*x2
        w_in = _linear(mlp.weights_in, "MLP input projection", kind)
        w_out = _linear(mlp.weights_out, "MLP output projection", kind)
        gate_w, in_w = w_in.weight.chunk(2, dim=0)
        gate_b, in_b = linear_bias(w_in).chunk(2, dim=0)
        return {
            "mlp.gate_weight": gate_w,
            "mlp.b_gate": gate_b,
            "mlp.in_weight": in_w,
            "mlp.b_in": in_b,
            "mlp.out_weight": w_out.weight,
            "mlp.b_out": linear_bias(w_out),
        }
    return None


def _plain_mlp(layer: nn.Module, kind: str) -> tuple[nn.Linear, nn.Linear]:
    fc1 = _get(layer, "mlp.fc1", "intermediate.dense")
    fc2 = _get(layer, "mlp.fc2", "output.dense")
    return _linear(fc1, "MLP input layer", kind), _linear(fc2, "MLP output layer", kind)


def _layer_scales(layer: nn.Module) -> tuple[Tensor | None, Tensor | None]:
    ls1 = _get(layer, "layer_scale1.lambda1")
    ls2 = _get(layer, "layer_scale2.lambda1")
    return ls1, ls2


def _check_norm(norm: object, what: str, kind: str) -> nn.LayerNorm:
    if not isinstance(norm, nn.LayerNorm) or norm.weight is None or norm.bias is None:
        raise _refuse(kind, f"its {what} is {type(norm).__name__}, not an affine LayerNorm")
    return norm


# ---------------------------------------------------------------------- embeddings
def _embedding_parts(src: _Source) -> dict[str, Any]:
    """Patch conv, prefix tokens and the position table, in HookedViT's token order."""
    emb = src.tower.embeddings
    kind = src.kind
    conv = _get(emb, "patch_embedding", "patch_embeddings.projection")
    if not isinstance(conv, nn.Conv2d):
        raise _refuse(kind, "its patch embedding is not a Conv2d")
    # SigLIP spells no padding as the string "valid", the others as (0, 0).
    padded = conv.padding != "valid" and any(conv.padding)
    if tuple(conv.stride) != tuple(conv.kernel_size) or padded:
        raise _refuse(kind, "its patch embedding convolution overlaps or pads patches")
    if conv.in_channels != 3:
        raise _refuse(kind, f"it takes {conv.in_channels}-channel images, not RGB")
    d = conv.out_channels
    cls = _get(emb, "class_embedding", "cls_token")
    dist = _get(emb, "distillation_token")
    registers = _get(emb, "register_tokens")
    pos = _get(emb, "position_embedding.weight", "position_embeddings")
    if pos is None:
        raise _refuse(kind, "it has no learned position embeddings")
    pos = pos.reshape(-1, d)
    n_with_pos = (cls is not None) + (dist is not None)
    n_registers = 0 if registers is None else registers.reshape(-1, d).shape[0]
    if n_registers:
        # HF adds position embeddings to [cls, patches] and inserts the registers after; in
        # HookedViT every token has a W_pos row, so the registers' rows are zeros.
        zeros = torch.zeros(n_registers, d, dtype=pos.dtype, device=pos.device)
        pos = torch.cat([pos[:n_with_pos], zeros, pos[n_with_pos:]])
    return {
        "conv": conv,
        "cls": cls,
        "dist": dist,
        "registers": None if registers is None else registers.reshape(-1, d),
        "n_registers": n_registers,
        "pos": pos,
    }


def _image_size(config: PretrainedConfig) -> tuple[int, int]:
    size = config.image_size
    return (size, size) if isinstance(size, int) else tuple(int(s) for s in size)


# ---------------------------------------------------------------------- main conversion
@torch.no_grad()
def hf_to_hooked(model: nn.Module, model_name: str | None = None) -> LoadedTower:
    """Convert a ``transformers`` ViT image model into a HookedViT config and state dict.

    Every number is read from the model's config object and weights. Layer scale (DINOv2) is
    folded into the attention and MLP output weights and biases; missing query/key/value biases
    become zeros; HF's separate query, key and value projections are stacked into
    ``qkv_weight [3, head, d_head, d_model]``. Tensors that need no change (norms, biases,
    embeddings) are the model's own, detached but not copied: ``load_state_dict`` copies them.

    Args:
        model: One of the classes in :data:`SUPPORTED_CLASSES` (random or pretrained weights).
        model_name: Provenance stored as ``cfg.model_name`` (default: the config's
            ``_name_or_path``, else the class name).

    Returns:
        ``LoadedTower(cfg, state_dict, preprocess=None)``: build the model with
        ``HookedViT(cfg)`` and ``load_state_dict(state_dict, strict=True)``.

    Raises:
        UnsupportedModelError: The model is not a supported class (Swin, ConvNeXt, a text
            model, ...), or a supported class in a form HookedViT cannot reproduce exactly (a ViT
            with its tanh pooler, SigLIP without pooling head, mixed LayerNorm eps, an unknown
            activation).

    Example:
        >>> from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
        >>> hf = CLIPVisionModelWithProjection(CLIPVisionConfig(
        ...     hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        ...     image_size=32, patch_size=8, projection_dim=24))
        >>> cfg, state_dict, _ = hf_to_hooked(hf)
        >>> cfg.n_pos, cfg.d_embed, state_dict["blocks.0.attn.qkv_weight"].shape
        (17, 24, torch.Size([3, 4, 16, 64]))
    """
    src = _describe(model)
    kind = src.kind
    config = src.tower.config
    emb = _embedding_parts(src)
    conv: nn.Conv2d = emb["conv"]
    d = conv.out_channels
    dtype, device = conv.weight.dtype, conv.weight.device
    n_heads = int(config.num_attention_heads)
    image_size = _image_size(config)

    norms = [_check_norm(src.final_norm, "final norm", kind)]
    if src.ln_pre is not None:
        norms.append(_check_norm(src.ln_pre, "pre-norm", kind))

    sd: dict[str, Tensor] = {"embed.W_E": conv.weight}
    if conv.bias is not None:
        sd["embed.b_E"] = conv.bias
    if emb["cls"] is not None:
        sd["embed.cls_token"] = emb["cls"].reshape(d)
    if emb["dist"] is not None:
        sd["embed.dist_token"] = emb["dist"].reshape(d)
    if emb["registers"] is not None and emb["n_registers"]:
        sd["embed.registers"] = emb["registers"]
    sd["embed.W_pos"] = emb["pos"]
    if src.ln_pre is not None:
        sd["ln_pre.w"], sd["ln_pre.b"] = src.ln_pre.weight, src.ln_pre.bias
    sd["ln_final.w"], sd["ln_final.b"] = src.final_norm.weight, src.final_norm.bias

    act_fn = _act_fn(src.act_name, kind)
    gated = None
    d_mlp = d_head = None
    for i, layer in enumerate(src.layers):
        p = f"blocks.{i}."
        ln1, ln2 = _block_norms(layer)
        norms += [_check_norm(ln1, "block norm", kind), _check_norm(ln2, "block norm", kind)]
        q, k, v, o = _attention_parts(layer, kind)
        if q.out_features % n_heads:
            raise _refuse(kind, f"its query width {q.out_features} is not divisible by {n_heads}")
        d_head = q.out_features // n_heads
        ls1, ls2 = _layer_scales(layer)
        out_w, out_b = fold_layer_scale(o.weight, linear_bias(o), ls1)
        sd.update(
            {
                p + "ln1.w": ln1.weight,
                p + "ln1.b": ln1.bias,
                p + "attn.qkv_weight": torch.stack([q.weight, k.weight, v.weight]).view(
                    3, n_heads, d_head, d
                ),
                p + "attn.qkv_bias": torch.stack(
                    [linear_bias(q), linear_bias(k), linear_bias(v)]
                ).view(3, n_heads, d_head),
                p + "attn.out_weight": out_w,
                p + "attn.b_O": out_b,
                p + "ln2.w": ln2.weight,
                p + "ln2.b": ln2.bias,
            }
        )
        mlp = _mlp_parts(layer, kind)
        if mlp is None:
            fc1, fc2 = _plain_mlp(layer, kind)
            mlp = {
                "mlp.in_weight": fc1.weight,
                "mlp.b_in": linear_bias(fc1),
                "mlp.out_weight": fc2.weight,
                "mlp.b_out": linear_bias(fc2),
            }
        layer_gated = "mlp.gate_weight" in mlp
        if gated is not None and gated != layer_gated:
            raise _refuse(kind, "its blocks mix gated and plain MLPs")
        gated = layer_gated
        mlp["mlp.out_weight"], mlp["mlp.b_out"] = fold_layer_scale(
            mlp["mlp.out_weight"], mlp["mlp.b_out"], ls2
        )
        d_mlp = mlp["mlp.in_weight"].shape[0]
        sd.update({p + name: t for name, t in mlp.items()})
    if not src.layers:
        raise _refuse(kind, "it has no transformer blocks")
    if gated:
        # HF's SwiGLU FFN hard-codes SiLU whatever config.hidden_act says.
        act_fn = "silu"

    readout_kwargs: dict[str, Any] = {}
    if src.readout == "map":
        readout_kwargs = _map_head(src.map_head, sd, d, kind, norms)
        readout_kwargs["readout_act_fn"] = _act_fn(config.hidden_act, kind)

    # Output projection: [d_model, d_embed], i.e. the transpose of a Linear's weight.
    proj_bias = False
    if src.proj is None:
        sd["W_proj"] = torch.eye(d, dtype=dtype, device=device)
    else:
        sd["W_proj"] = src.proj.weight.T
        if src.proj.bias is not None:
            proj_bias = True
            sd["b_proj"] = src.proj.bias
    if src.dist_proj is not None:
        sd["readout.W_dist"] = src.dist_proj.weight.T
        sd["readout.b_dist"] = linear_bias(src.dist_proj)
        if not proj_bias:
            proj_bias = True
            sd["b_proj"] = linear_bias(src.proj)

    eps_values = {float(norm.eps) for norm in norms}
    if len(eps_values) != 1:
        raise _refuse(kind, f"its LayerNorms use different eps values {sorted(eps_values)}")

    name = model_name or getattr(model.config, "_name_or_path", "") or kind
    cfg = HookedViTConfig(
        n_layers=len(src.layers),
        d_model=d,
        n_heads=n_heads,
        d_head=d_head,
        d_mlp=d_mlp,
        d_embed=sd["W_proj"].shape[1],
        image_size=image_size,
        patch_size=tuple(conv.kernel_size),
        act_fn=act_fn,
        eps=eps_values.pop(),
        ln_pre=src.ln_pre is not None,
        final_ln_after_pool=src.final_ln_after_pool,
        class_token=emb["cls"] is not None,
        dist_token=emb["dist"] is not None,
        n_registers=emb["n_registers"],
        patch_bias=conv.bias is not None,
        gated_mlp=bool(gated),
        readout=src.readout,
        dist_head=src.dist_proj is not None,
        proj_bias=proj_bias,
        model_name=str(name),
        dtype=dtype,
        **readout_kwargs,
    )
    n_pos_source = sd["embed.W_pos"].shape[0]
    if n_pos_source != cfg.n_pos:
        raise _refuse(
            kind,
            f"it has {n_pos_source} position embeddings but image_size {cfg.image_size} with "
            f"patch_size {cfg.patch_size} gives {cfg.n_pos} tokens",
        )
    state_dict = {key: t.detach() for key, t in sd.items()}
    return LoadedTower(cfg, state_dict, None)


def _map_head(
    head: nn.Module, sd: dict[str, Tensor], d: int, kind: str, norms: list[nn.Module]
) -> dict[str, Any]:
    """SigLIP's ``SiglipMultiheadAttentionPoolingHead`` as ``readout.*`` weights."""
    attn = head.attention
    if (
        not isinstance(attn, nn.MultiheadAttention)
        or not attn._qkv_same_embed_dim
        or attn.in_proj_bias is None
        or attn.bias_k is not None
        or attn.add_zero_attn
    ):
        raise _refuse(kind, "its pooling head's attention is not a plain fused-QKV attention")
    h = attn.num_heads
    dh = d // h
    fc1 = _linear(head.mlp.fc1, "pooling head MLP input layer", kind)
    fc2 = _linear(head.mlp.fc2, "pooling head MLP output layer", kind)
    norms.append(_check_norm(head.layernorm, "pooling head norm", kind))
    sd.update(
        {
            "readout.latent": head.probe.reshape(d),
            "readout.attn.qkv_weight": attn.in_proj_weight.view(3, h, dh, d),
            "readout.attn.qkv_bias": attn.in_proj_bias.view(3, h, dh),
            "readout.attn.out_weight": attn.out_proj.weight,
            "readout.attn.b_O": linear_bias(attn.out_proj),
            "readout.ln.w": head.layernorm.weight,
            "readout.ln.b": head.layernorm.bias,
            "readout.mlp.in_weight": fc1.weight,
            "readout.mlp.b_in": linear_bias(fc1),
            "readout.mlp.out_weight": fc2.weight,
            "readout.mlp.b_out": linear_bias(fc2),
        }
    )
    return {"readout_n_heads": h, "readout_d_mlp": fc1.out_features}


# ---------------------------------------------------------------------- loading by name/path
def _model_class(config: PretrainedConfig, kind_hint: str) -> type:
    import transformers

    names = [a for a in (getattr(config, "architectures", None) or []) if a in SUPPORTED_CLASSES]
    if not names:
        fallback = _CLASS_FOR_MODEL_TYPE.get(getattr(config, "model_type", None))
        if fallback is None or getattr(config, "architectures", None):
            archs = getattr(config, "architectures", None) or [config.model_type]
            raise _refuse(
                str(archs[0]),
                f"{kind_hint} is a {archs[0]} (model_type={config.model_type!r}), not a supported "
                "plain ViT image model",
            )
        names = [fallback]
    return getattr(transformers, names[0])


HUB_KEYS = ("revision", "cache_dir", "token", "local_files_only", "subfolder")
"""``from_pretrained`` keyword arguments that say where files come from (not how to build)."""


def hub_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``from_pretrained`` keyword arguments that name where files come from
    (:data:`HUB_KEYS`), for ``AutoConfig``, ``AutoTokenizer`` and image processors.

    Example:
        >>> hub_kwargs({"revision": "main", "torch_dtype": "float16"})
        {'revision': 'main'}
    """
    return {k: kwargs[k] for k in HUB_KEYS if k in kwargs}


def hf_preprocess(path: str | os.PathLike, **kwargs: Any) -> Callable | None:
    """PIL image -> ``[3, H, W]`` tensor via the checkpoint's image processor, if it has one
    (``None`` when the checkpoint ships no image processor)."""
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError):
        return None

    def preprocess(image: Image) -> Tensor:
        return processor(images=image, return_tensors="pt")["pixel_values"][0]

    preprocess.processor = processor  # type: ignore[attr-defined]
    return preprocess


def load_hf(name_or_path_or_model: str | os.PathLike | nn.Module, **kwargs: Any) -> LoadedTower:
    """Load a ``transformers`` ViT (hub name, local directory or built model) and convert it.

    With a name or path the class is chosen from the saved config (``AutoConfig``; its
    ``architectures`` entry, else its ``model_type``), the weights are read with
    ``from_pretrained`` (safetensors where the directory has them; never ``trust_remote_code``),
    and the image processor, when the checkpoint has one, becomes ``preprocess``.

    Args:
        name_or_path_or_model: A hub id, a local ``save_pretrained`` directory, or a built
            ``transformers`` model (converted as is, ``preprocess=None``).
        **kwargs: Passed to ``from_pretrained`` (e.g. ``add_pooling_layer=False`` for a
            ``ViTModel``, ``revision``, ``cache_dir``, ``torch_dtype``).

    Returns:
        ``LoadedTower(cfg, state_dict, preprocess)``.

    Raises:
        UnsupportedModelError: The checkpoint is not one of :data:`SUPPORTED_CLASSES`, or
            cannot be reproduced exactly (see :func:`hf_to_hooked`).
        FileNotFoundError: A local path that does not exist.
        vision_lens.errors.CheckpointError: A local directory whose files cannot be read or
            do not fit the model (see :func:`check_hf_source`, :func:`load_pretrained_checked`),
            or ``image_size=`` other than the checkpoint's; the message names the file.

    Example:
        >>> import tempfile
        >>> from transformers import Dinov2Config, Dinov2Model
        >>> hf = Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1,
        ...                               num_attention_heads=2, image_size=28, patch_size=14))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     hf.save_pretrained(tmp)
        ...     cfg, state_dict, preprocess = load_hf(tmp)
        >>> cfg.n_pos, preprocess is None
        (5, True)
    """
    if isinstance(name_or_path_or_model, nn.Module):
        if kwargs:
            raise TypeError(f"from_pretrained arguments {sorted(kwargs)} need a name or path.")
        return hf_to_hooked(name_or_path_or_model)
    from transformers import AutoConfig

    local = check_hf_source(name_or_path_or_model, kwargs.get("subfolder"))
    path = os.fspath(name_or_path_or_model)
    if kwargs.pop("trust_remote_code", False):
        raise ValueError("load_hf does not run remote code (trust_remote_code=True refused).")
    hub = hub_kwargs(kwargs)
    config = AutoConfig.from_pretrained(path, **hub)
    cls = _model_class(config, repr(path))
    if local:
        if any(name.endswith(".safetensors") for name in os.listdir(path)):
            kwargs.setdefault("use_safetensors", True)
        _check_image_size(config, kwargs, path)
    else:
        # A hub id: insist on safetensors rather than unpickling a .bin.
        kwargs.setdefault("use_safetensors", True)
    model = load_pretrained_checked(cls, path, **kwargs).eval()
    cfg, state_dict, _ = hf_to_hooked(model, model_name=path)
    return LoadedTower(cfg, state_dict, hf_preprocess(path, **hub))


def _looks_local(name_or_path: str | os.PathLike) -> bool:
    """Whether a name is meant as a local path rather than a hub id (``org/name``)."""
    if not isinstance(name_or_path, str) or os.path.exists(name_or_path):
        return True
    return (
        os.path.isabs(name_or_path)
        or name_or_path.startswith((".", "~"))
        or name_or_path.count("/") > 1
        or os.sep != "/"
        and os.sep in name_or_path
    )


def check_hf_source(name_or_path: str | os.PathLike, subfolder: str | None = None) -> bool:
    """Check a local ``save_pretrained`` directory before ``from_pretrained`` reads it; return
    whether ``name_or_path`` is local (``False``: a hub id, left to ``transformers``).

    The config must exist and every weights file must be readable (safetensors headers are
    checked, which catches empty, truncated and corrupted files; ``.bin`` files are read with
    ``torch.load(weights_only=True)`` when there are no safetensors, as transformers would).

    Raises:
        FileNotFoundError: A local path that does not exist.
        vision_lens.errors.CheckpointError: A file instead of a directory, no ``config.json``,
            no weights, or a weights file that cannot be read; the message names the file.
    """
    if not _looks_local(name_or_path):
        return False
    path = os.path.expanduser(os.fspath(name_or_path))
    if subfolder:
        path = os.path.join(path, subfolder)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Model directory {path!r} does not exist (resolved: {os.path.abspath(path)!r}); "
            "pass the directory save_pretrained wrote, or a hub id such as 'org/name'."
        )
    if not os.path.isdir(path):
        raise checkpoint_error(
            path,
            "is a file, not a save_pretrained directory",
            "pass the directory that holds it together with its config.json",
        )
    names = sorted(os.listdir(path))
    if "config.json" not in names:
        raise checkpoint_error(
            path,
            "has no config.json, so it is not a save_pretrained directory",
            "pass the directory model.save_pretrained(...) wrote",
        )
    weights = [
        n
        for n in names
        if (n.startswith("model") and n.endswith(".safetensors"))
        or (n.startswith("pytorch_model") and n.endswith(".bin"))
    ]
    if not weights:
        raise checkpoint_error(
            path,
            "has no weights file (model.safetensors or pytorch_model.bin)",
            "save the model with model.save_pretrained(path) or download it again",
        )
    safetensors = [n for n in weights if n.endswith(".safetensors")]
    for name in safetensors or weights:
        _check_weights_file(os.path.join(path, name))
    return True


def _check_weights_file(file: str) -> None:
    check_file(file)
    if not file.endswith(".safetensors"):
        read_checkpoint(file)
        return
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(file, framework="pt") as handle:
            handle.keys()
    except SafetensorError as err:
        raise checkpoint_error(
            file, f"is not a valid safetensors file, truncated or corrupted ({err})"
        ) from err


def _check_image_size(config: PretrainedConfig, kwargs: Mapping[str, Any], path: str) -> None:
    """Refuse ``image_size=`` overriding the saved config's (the position embeddings were
    learned for the saved size; transformers would refuse them or, for DINOv2, interpolate
    them at every call)."""
    if "image_size" not in kwargs:
        return
    vision = getattr(config, "vision_config", config)
    saved = getattr(vision, "image_size", None)
    wanted = kwargs["image_size"]
    if saved is not None and _pair(saved) != _pair(wanted):
        raise checkpoint_error(
            path,
            f"was made for {_pair(saved)} px images, not the image_size={wanted!r} asked for; "
            "position embeddings are not resized silently",
            "load it at its own size and resample explicitly: "
            f"HookedViT.from_hf({path!r}, image_size={wanted!r}) (not a from_pretrained "
            "image_size)",
        )


def _pair(size: Any) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else tuple(size)


def load_pretrained_checked(cls: type, path: str, **kwargs: Any) -> nn.Module:
    """``cls.from_pretrained(path, **kwargs)``, refusing a checkpoint that leaves parameters at
    their random initialisation (missing keys, or sizes skipped by
    ``ignore_mismatched_sizes``) instead of transformers' log warning, and naming the
    directory when the weights do not fit the architecture."""
    kwargs.pop("output_loading_info", None)
    arch = cls.__name__
    try:
        model, info = cls.from_pretrained(path, output_loading_info=True, **kwargs)
    except RuntimeError as err:  # load_state_dict: shapes that do not fit the config
        raise checkpoint_error(
            path,
            f"does not fit {arch} as its config.json describes it ({err})",
            "pass the directory of a checkpoint saved from this config",
        ) from err
    missing = sorted(info.get("missing_keys") or [])
    mismatched = info.get("mismatched_keys") or []
    mismatched = sorted(str(k[0] if isinstance(k, tuple) else k) for k in mismatched)
    if missing or mismatched:
        bad = missing or mismatched
        what = "missing" if missing else "of another shape"
        shown = ", ".join(bad[:3]) + (f", ... ({len(bad)} in all)" if len(bad) > 3 else "")
        raise checkpoint_error(
            path,
            f"leaves {len(bad)} parameter(s) of {arch} at random initialisation ({what}: {shown})",
            "pass a complete checkpoint saved from this architecture (or the class it was "
            "saved from, e.g. add_pooling_layer=False for a ViTModel without pooler)",
        )
    return model
