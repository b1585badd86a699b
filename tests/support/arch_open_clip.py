"""open_clip rows for the architecture registry: small random-weight versions of open_clip towers.

Each row is ``(label, open_clip_name, vision_cfg_overrides)``. :func:`build_tower` builds the
image tower the way ``open_clip.create_model`` does (``open_clip.model._build_vision_tower``, no
text tower, no download), with ``vision_cfg`` keys replaced by the overrides. open_clip's
``TimmModel`` passes no size arguments to ``timm.create_model``, so for a timm trunk the override
``timm_model_kwargs`` (not an open_clip key) is given to ``timm.create_model`` while the tower is
built, to shrink the trunk (depth, width, image size) while keeping its architecture.

Every 1-D parameter (norm weights and biases, attention and MLP biases, layer-scale gammas) and
every constant-initialised one (head scales) is perturbed, so a dropped or misplaced one shows.

Example:
    >>> label, name, overrides = OPEN_CLIP_ROWS[0]
    >>> tower = build_tower(name, **overrides)
    >>> type(tower).__name__, tower.training
    ('VisionTransformer', False)
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any, NamedTuple

import open_clip
import torch
from open_clip.model import _build_vision_tower
from torch import Tensor, nn

# A small native tower: 2 blocks of width 64 with 4 heads, 64x64 images.
_SMALL = dict(layers=2, width=64, head_width=16, image_size=64)
# The same for a timm trunk (timm.create_model kwargs) and the open_clip tower around it.
_TIMM_SMALL = dict(depth=2, embed_dim=64, num_heads=4, img_size=64)


def _timm(name_overrides: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    size = kwargs.get("img_size", _TIMM_SMALL["img_size"])
    return {
        "image_size": size,
        "timm_model_kwargs": {**_TIMM_SMALL, **kwargs},
        **(name_overrides or {}),
    }


class OpenClipTower(NamedTuple):
    """A full-size open_clip CLIP tower: config name, ``vision_cfg`` overrides, test batch."""

    config: str
    overrides: dict[str, Any]
    batch: int


# Full-size CLIP towers (random weights), by label. Tests at real size pick from this one table:
# output and every block against open_clip (tests/unit/test_hooked_vit.py) and the decomposition
# against the paper's reference code (tests/parity/test_decompose.py). The small rows of every
# open_clip family are OPEN_CLIP_ROWS below (the parity registry).
FULL_SIZE: dict[str, OpenClipTower] = {
    "ViT-B-32": OpenClipTower("ViT-B-32", {}, 2),
    "ViT-B-16": OpenClipTower("ViT-B-16", {}, 2),
    "ViT-L-14": OpenClipTower("ViT-L-14", {}, 1),
    # OpenAI CLIP's architecture: QuickGELU (the `openai` tags of ViT-B-32 use this config).
    "ViT-B-32-quickgelu": OpenClipTower("ViT-B-32-quickgelu", {}, 2),
    # Layer scale (ls_init_value=1e-4 in the config; gammas randomised by perturb_).
    "ViT-M-16-alt": OpenClipTower("ViT-M-16-alt", {}, 2),
    "ViT-B-32-256": OpenClipTower("ViT-B-32-256", {}, 2),
    # Layer scale; perturb_ draws the gammas with std 0.5 (both signs) so folding matters.
    "ViT-B-32+layer-scale": OpenClipTower("ViT-B-32", {"ls_init_value": 1e-5}, 2),
    # Non-224 input: 10 x 10 patches + class token = 101 positions.
    "ViT-B-16@160": OpenClipTower("ViT-B-16", {"image_size": 160}, 2),
    # Variants of one feature each; 4 layers are enough to exercise the feature.
    "ViT-B-32@160x256": OpenClipTower("ViT-B-32", {"image_size": (160, 256), "layers": 4}, 2),
    "ViT-B-32+final_ln_after_pool": OpenClipTower(
        "ViT-B-32", {"final_ln_after_pool": True, "layers": 4}, 2
    ),
    "ViT-B-32+no_ln_pre": OpenClipTower("ViT-B-32", {"no_ln_pre": True, "layers": 4}, 2),
    "ViT-B-32+gelu_tanh": OpenClipTower(
        "ViT-B-32", {"act_kwargs": {"approximate": "tanh"}, "layers": 4}, 2
    ),
    "ViT-B-32+eps1e-6": OpenClipTower("ViT-B-32", {"norm_kwargs": {"eps": 1e-6}, "layers": 4}, 2),
    "ViT-B-32+ls0.1": OpenClipTower("ViT-B-32", {"ls_init_value": 0.1, "layers": 4}, 2),
    # 8 heads of width 32 on a 256-wide model (the name says nothing about heads).
    "w256-hw32": OpenClipTower("ViT-B-32", {"width": 256, "head_width": 32, "layers": 4}, 2),
    # The big ones: slow suite only.
    "ViT-B-16@288": OpenClipTower("ViT-B-16", {"image_size": 288}, 1),
    "ViT-L-14-336": OpenClipTower("ViT-L-14-336", {}, 1),
    "ViT-H-14": OpenClipTower("ViT-H-14", {}, 1),
    "ViT-g-14": OpenClipTower("ViT-g-14", {}, 1),
    "ViT-bigG-14": OpenClipTower("ViT-bigG-14", {}, 1),
}

# The CLIP towers of the paper and of OpenAI (QuickGELU): every full-size test runs these.
CLIP_TOWERS = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-B-32-quickgelu")


def full_size(*labels: str) -> dict[str, OpenClipTower]:
    """The rows of :data:`FULL_SIZE` with these labels, in this order."""
    return {label: FULL_SIZE[label] for label in labels}


OPEN_CLIP_ROWS: list[tuple[str, str, dict[str, Any]]] = [
    # ----------------------------------------------------------- open_clip VisionTransformer
    ("ViT-B-32 (tok)", "ViT-B-32", dict(_SMALL)),
    ("ViT-B-16-quickgelu", "ViT-B-16-quickgelu", dict(_SMALL, image_size=32)),
    (
        "ViT-L-14-CLIPA (avg, ln after pool, no ln_pre)",
        "ViT-L-14-CLIPA",
        dict(_SMALL, image_size=56),
    ),
    ("avg, ln before pool", "ViT-B-32", dict(_SMALL, pool_type="avg")),
    ("tok, ln after pool", "ViT-B-32", dict(_SMALL, final_ln_after_pool=True)),
    ("layer scale", "ViT-B-32", dict(_SMALL, ls_init_value=0.1)),
    ("qk_norm (custom block)", "ViT-B-32", dict(_SMALL, qk_norm=True)),
    ("scale_heads (custom block)", "ViT-B-32", dict(_SMALL, scale_heads=True, ls_init_value=0.1)),
    ("plain custom block", "ViT-B-32", dict(_SMALL, block_type="custom")),
    (
        "eps 1e-6, tanh GELU, non-square",
        "ViT-B-32",
        dict(
            _SMALL,
            image_size=(64, 96),
            norm_kwargs={"eps": 1e-6},
            act_kwargs={"approximate": "tanh"},
        ),
    ),
    ("sin-cos position embedding", "ViT-B-32", dict(_SMALL, pos_embed_type="sin_cos_2d")),
    # ----------------------------------------------------------------- open_clip TimmModel
    ("ViT-B-16-SigLIP (timm MAP)", "ViT-B-16-SigLIP", _timm()),
    ("ViT-B-32-SigLIP2-256", "ViT-B-32-SigLIP2-256", _timm()),
    ("ViT-SO400M-14-SigLIP", "ViT-SO400M-14-SigLIP", _timm(img_size=56)),
    ("EVA01-g-14 (timm Eva, head in trunk)", "EVA01-g-14", _timm(img_size=56)),
    ("MobileCLIP2-L-14 (timm CLIP ViT)", "MobileCLIP2-L-14", _timm(img_size=56)),
    # Perception Encoder: RoPE on the patch tokens, norm_pre, MAP head, projection in the trunk.
    ("PE-Core-T-16-384 (timm Eva, RoPE, MAP)", "PE-Core-T-16-384", _timm()),
    ("PE-Core-B-16 (timm Eva, RoPE, MAP)", "PE-Core-B-16", _timm(img_size=48)),
    (
        # EVA02-CLIP's own trunk is refused (its norm over all heads' outputs mixes the heads);
        # without that norm the rest of it (RoPE, SwiGLU with an MLP norm) converts.
        "EVA02-B-16 trunk without scale_attn_inner (RoPE, SwiGLU + MLP norm)",
        "EVA02-B-16",
        _timm(img_size=48, scale_attn_inner=False),
    ),
    (
        "SigLIP + open_clip linear proj with bias",
        "ViT-B-16-SigLIP",
        _timm({"timm_proj": "linear", "timm_proj_bias": True}),
    ),
    (
        "timm CLIP ViT, avg pool + linear proj",
        "ViT-B-16-SigLIP",
        _timm(
            {
                "timm_model_name": "vit_base_patch16_clip_224",
                "timm_pool": "avg",
                "timm_proj": "linear",
            }
        ),
    ),
]


@contextlib.contextmanager
def _timm_kwargs(kwargs: dict[str, Any] | None) -> Iterator[None]:
    """Make open_clip's ``timm.create_model`` calls see ``kwargs`` too."""
    import open_clip.timm_model as oc_timm

    if not kwargs:
        yield
        return
    real = oc_timm.timm.create_model

    def create(name: str, *args: Any, **kw: Any) -> nn.Module:
        return real(name, *args, **{**kw, **kwargs})

    oc_timm.timm.create_model = create
    try:
        yield
    finally:
        oc_timm.timm.create_model = real


def vision_config(name: str, **overrides: Any) -> tuple[int, dict, bool, dict | None]:
    """``(embed_dim, vision_cfg, quick_gelu, timm_model_kwargs)`` of an open_clip config."""
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise KeyError(f"open_clip has no config {name!r}")
    vision_cfg = copy.deepcopy(cfg["vision_cfg"])
    timm_kwargs = overrides.pop("timm_model_kwargs", None)
    vision_cfg.update(overrides)
    return cfg["embed_dim"], vision_cfg, bool(cfg.get("quick_gelu", False)), timm_kwargs


def build_tower(
    name: str,
    *,
    seed: int = 0,
    perturb: bool = True,
    dtype: torch.dtype = torch.float32,
    **overrides: Any,
) -> nn.Module:
    """open_clip's image tower for config ``name`` (random weights, eval mode, ``dtype``)."""
    embed_dim, vision_cfg, quick_gelu, timm_kwargs = vision_config(name, **overrides)
    vision_cfg["timm_model_pretrained"] = False
    torch.manual_seed(seed)
    with _timm_kwargs(timm_kwargs):
        tower = _build_vision_tower(embed_dim, vision_cfg, quick_gelu=quick_gelu)
    if perturb:
        perturb_all_(tower, seed=seed + 1)
    return tower.to(dtype).eval()


@torch.no_grad()
def perturb_all_(module: nn.Module, seed: int = 1) -> nn.Module:
    """Add noise to every 1-D parameter and every parameter with one constant value, in place."""
    gen = torch.Generator().manual_seed(seed)
    for _, p in module.named_parameters():
        flat = p.detach().reshape(-1)
        if p.ndim == 1 or (flat.numel() > 0 and bool((flat == flat[0]).all())):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.2
            p.add_(noise.to(p.dtype))
    return module


def images(
    batch: int, size: tuple[int, int] | int, *, seed: int = 0, dtype=torch.float32
) -> Tensor:
    """Normalised-image-like random inputs ``[batch, 3, H, W]``."""
    h, w = (size, size) if isinstance(size, int) else size
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, h, w, generator=gen, dtype=torch.float64).to(dtype)


def tower_image_size(tower: nn.Module) -> tuple[int, int]:
    """The input size a tower takes (a timm trunk's own, which open_clip does not set)."""
    trunk = getattr(tower, "trunk", None)
    if trunk is not None:
        return tuple(trunk.patch_embed.img_size)
    size = tower.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


# ------------------------------------------------------------------ pretrained-list classification
# timm trunks that are convolutional or hybrid (a convolutional stem before the transformer).
CONV_TIMM_TRUNKS = ("convnext", "fastvit", "vitamin", "_mci_")


def is_transformer_over_patches(vision_cfg: dict) -> bool:
    """Whether an open_clip ``vision_cfg`` describes a transformer over image patches (not a
    ResNet, ConvNeXt, FastViT/MobileCLIP-S*, ViTamin or MobileCLIP-B's convolutional stem)."""
    if isinstance(vision_cfg.get("layers"), list | tuple):
        return False  # ModifiedResNet
    timm_name = vision_cfg.get("timm_model_name")
    if timm_name:
        return not any(part in f"{timm_name}_" for part in CONV_TIMM_TRUNKS)
    return True


def estimated_vision_params(vision_cfg: dict) -> float:
    """Rough parameter count of a native open_clip ViT tower (``12 * layers * width^2``)."""
    if vision_cfg.get("timm_model_name") or isinstance(vision_cfg.get("layers"), list | tuple):
        return float("inf")
    width, layers = vision_cfg.get("width", 768), vision_cfg.get("layers", 12)
    return 12 * layers * width**2 * vision_cfg.get("mlp_ratio", 4.0) / 4.0
