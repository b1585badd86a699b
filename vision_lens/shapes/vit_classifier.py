"""A plain timm ViT that classifies every attribute of a shapes-world scene (not a CLIP).

The model is an ordinary ``timm.models.vision_transformer.VisionTransformer`` with register
tokens, no class token and average pooling, and one linear head whose outputs are the
concatenated class logits of several attributes (:data:`ATTRIBUTES`): the slice
``slices["color"]`` of the logits is the 8-way colour classifier, and so on. Training (DeiT-style
supervised, :mod:`vision_lens.shapes.train_vit`) sums one cross-entropy per slice.

:class:`ShapesViTConfig` holds the timm keyword arguments and the attribute order; it is written
next to the weights as JSON, so the shipped model rebuilds with
``VisionTransformer(**config.timm_kwargs)`` (or ``timm.create_model("vit_tiny_patch16_224",
**config.timm_kwargs)``) and ``load_state_dict``.

Example:
    >>> import torch
    >>> cfg = ShapesViTConfig(embed_dim=32, depth=1, num_heads=2)
    >>> model = build_vit(cfg)
    >>> logits = model(torch.zeros(2, 3, 64, 64))
    >>> logits.shape[-1] == cfg.num_classes, split_logits(logits, cfg)["color"].shape
    (True, torch.Size([2, 8]))
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vision_lens.shapes.vocabulary import COUNT_WORDS, VOCABULARY

__all__ = [
    "ATTRIBUTES",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "LOSS_WEIGHTS",
    "SHAPES_VIT_NAME",
    "ShapesViTConfig",
    "attribute_classes",
    "build_vit",
    "classifier_accuracy",
    "classifier_loss",
    "split_logits",
]

#: The attributes the head predicts, in the order of their logit slices. Object attributes are
#: labelled on single-object scenes; ``background`` and ``count`` (objects - 1) on every scene.
ATTRIBUTES: tuple[str, ...] = (
    "shape",
    "color",
    "size",
    "position",
    "texture",
    "background",
    "count",
)

#: The model's name (timm's ``pretrained_cfg["architecture"]``, so HookedViT's ``cfg.model_name``).
SHAPES_VIT_NAME = "vl-shapes-vit"

#: Loss weight per attribute in :func:`classifier_loss` (1 when not listed): shape is the slowest
#: attribute for a ViT trained from scratch (see :mod:`vision_lens.shapes.objectives`).
LOSS_WEIGHTS: dict[str, float] = {"shape": 2.0}

#: The input normalisation (the shapes CLIP's, i.e. open_clip's OpenAI mean and std).
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


def attribute_classes(attribute: str) -> tuple[str, ...]:
    """The class names of one attribute's slice, in logit order.

    Example:
        >>> attribute_classes("count")
        ('one', 'two', 'three', 'four')
        >>> attribute_classes("size")
        ('small', 'medium', 'large')
    """
    if attribute == "count":
        return COUNT_WORDS[1:]
    if attribute not in VOCABULARY:
        raise ValueError(
            f"unknown attribute {attribute!r}; choose from {sorted({*VOCABULARY, 'count'})}."
        )
    return tuple(VOCABULARY[attribute])


@dataclass
class ShapesViTConfig:
    """Architecture of the shapes-world ViT classifier: timm's keyword arguments + attributes.

    Attributes:
        img_size: Input side in pixels (the shapes world renders 64x64 images).
        patch_size: Patch side.
        embed_dim: Residual width.
        depth: Number of blocks.
        num_heads: Attention heads per block.
        mlp_ratio: MLP width / ``embed_dim``.
        reg_tokens: Register tokens (prefix tokens that are not pooled).
        class_token: Whether the model has a class token (pooling is ``"avg"`` either way).
        no_embed_class: Position embeddings for the patch tokens only (as timm's register
            models).
        global_pool: timm's pooling (``"avg"``: mean over the patch tokens, then ``fc_norm``).
        attributes: Attributes of the head's slices, in order (:data:`ATTRIBUTES`).

    Example:
        >>> cfg = ShapesViTConfig()
        >>> cfg.num_classes, cfg.slices["color"]
        (41, slice(8, 16, None))
        >>> ShapesViTConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    img_size: int = 64
    patch_size: int = 8
    embed_dim: int = 128
    depth: int = 6
    num_heads: int = 4
    mlp_ratio: float = 4.0
    reg_tokens: int = 4
    class_token: bool = False
    no_embed_class: bool = True
    global_pool: str = "avg"
    attributes: tuple[str, ...] = field(default_factory=lambda: ATTRIBUTES)

    def __post_init__(self) -> None:
        self.attributes = tuple(self.attributes)
        for a in self.attributes:
            attribute_classes(a)  # raises on an unknown attribute

    @property
    def slices(self) -> dict[str, slice]:
        """The logit slice of each attribute, in :attr:`attributes` order."""
        out, start = {}, 0
        for a in self.attributes:
            n = len(attribute_classes(a))
            out[a] = slice(start, start + n)
            start += n
        return out

    @property
    def num_classes(self) -> int:
        """Width of the head: the sum of the attributes' class counts."""
        return sum(len(attribute_classes(a)) for a in self.attributes)

    @property
    def timm_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of timm's ``VisionTransformer`` for this model (head included)."""
        kw = {k: v for k, v in asdict(self).items() if k != "attributes"}
        return {**kw, "num_classes": self.num_classes}

    def to_dict(self) -> dict[str, Any]:
        """The JSON record shipped next to the weights (see :meth:`from_dict`)."""
        return {
            "architecture": "timm.models.vision_transformer.VisionTransformer",
            "timm_kwargs": self.timm_kwargs,
            "attributes": {
                a: {"slice": [s.start, s.stop], "classes": list(attribute_classes(a))}
                for a, s in self.slices.items()
            },
            "preprocess": {"mean": list(IMAGE_MEAN), "std": list(IMAGE_STD)},
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> ShapesViTConfig:
        """Inverse of :meth:`to_dict` (checks the head width against the attributes)."""
        kw = dict(record["timm_kwargs"])
        num_classes = kw.pop("num_classes")
        cfg = cls(**kw, attributes=tuple(record["attributes"]))
        if cfg.num_classes != num_classes:
            raise ValueError(
                f"config has num_classes={num_classes} but its attributes have "
                f"{cfg.num_classes} classes in all."
            )
        return cfg

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ShapesViTConfig:
        """Read a config written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def build_vit(cfg: ShapesViTConfig, *, sincos_pos_init: bool = False) -> torch.nn.Module:
    """A fresh timm ``VisionTransformer`` for ``cfg`` with the shapes world's ``pretrained_cfg``.

    ``pretrained_cfg`` carries the input size, mean and std and ``crop_pct=1``, so timm's (and
    vision_lens's) eval transform maps a 64x64 PIL image to exactly
    :func:`vision_lens.shapes.encoding.images_to_tensor` of it.

    Args:
        cfg: The architecture.
        sincos_pos_init: Start the (learnable) position embedding from 2D sin-cos values, which
            makes position and shape train much faster from scratch.

    Example:
        >>> model = build_vit(ShapesViTConfig(embed_dim=32, depth=1, num_heads=2))
        >>> model.num_prefix_tokens, model.global_pool, model.pretrained_cfg["crop_pct"]
        (4, 'avg', 1.0)
    """
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(**cfg.timm_kwargs)
    model.pretrained_cfg = {
        "architecture": SHAPES_VIT_NAME,
        "input_size": (3, cfg.img_size, cfg.img_size),
        "mean": IMAGE_MEAN,
        "std": IMAGE_STD,
        "crop_pct": 1.0,
        "crop_mode": "center",
        "interpolation": "bicubic",
        "num_classes": cfg.num_classes,
    }
    if sincos_pos_init:
        from open_clip.pos_embed import get_2d_sincos_pos_embed

        grid = cfg.img_size // cfg.patch_size
        table = get_2d_sincos_pos_embed(cfg.embed_dim, grid, cls_token=False)
        pos = model.pos_embed
        with torch.no_grad():
            n_prefix = pos.shape[1] - grid * grid  # 0 with no_embed_class
            pos[:, n_prefix:].copy_(torch.from_numpy(table).to(pos.dtype))
            pos[:, :n_prefix].zero_()
    return model


def split_logits(logits: torch.Tensor, cfg: ShapesViTConfig) -> dict[str, torch.Tensor]:
    """The head's logits ``[..., num_classes]`` as ``{attribute: logits [..., n_classes]}``.

    Example:
        >>> cfg = ShapesViTConfig(attributes=("size", "count"))
        >>> {a: t.shape[-1] for a, t in split_logits(torch.zeros(1, 7), cfg).items()}
        {'size': 3, 'count': 4}
    """
    if logits.shape[-1] != cfg.num_classes:
        raise ValueError(
            f"logits have {logits.shape[-1]} classes, the config's head {cfg.num_classes}."
        )
    return {a: logits[..., s] for a, s in cfg.slices.items()}


def classifier_loss(
    logits: torch.Tensor,
    targets: dict[str, torch.Tensor],
    cfg: ShapesViTConfig,
    weights: dict[str, float] | None = None,
) -> torch.Tensor:
    """Weighted sum over attributes of the cross-entropy of each logit slice.

    Args:
        logits: ``[n, num_classes]``.
        targets: ``{attribute: int64 [n]}`` class indices, ``-100`` where unlabelled (as
            :func:`vision_lens.shapes.objectives.attribute_targets` gives them); attributes
            missing from ``targets`` are skipped.
        cfg: The config whose slices the logits follow.
        weights: Loss weight per attribute (default :data:`LOSS_WEIGHTS`; 1 when not listed).

    Example:
        >>> cfg = ShapesViTConfig(attributes=("size", "count"))
        >>> logits = torch.zeros(2, 7)
        >>> targets = {"size": torch.tensor([0, -100]), "count": torch.tensor([1, 2])}
        >>> round(float(classifier_loss(logits, targets, cfg)), 4)  # log(3) + log(4)
        2.4849
    """
    weights = LOSS_WEIGHTS if weights is None else weights
    total = logits.new_zeros(())
    for a, part in split_logits(logits.float(), cfg).items():
        if a not in targets:
            continue
        y = targets[a].to(logits.device)
        if bool((y != -100).any()):
            total = total + weights.get(a, 1.0) * F.cross_entropy(part, y, ignore_index=-100)
    return total


@torch.no_grad()
def classifier_accuracy(
    logits: torch.Tensor, targets: dict[str, torch.Tensor], cfg: ShapesViTConfig
) -> dict[str, float]:
    """Per-attribute accuracy of the head over the labelled rows (``target != -100``).

    Example:
        >>> cfg = ShapesViTConfig(attributes=("size",))
        >>> logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0]])
        >>> classifier_accuracy(logits, {"size": torch.tensor([0, 1, 0])}, cfg)
        {'size': 0.6667}
    """
    out = {}
    for a, part in split_logits(logits, cfg).items():
        if a not in targets:
            continue
        y = targets[a].to(logits.device)
        keep = y != -100
        if bool(keep.any()):
            acc = (part[keep].argmax(-1) == y[keep]).float().mean()
            out[a] = round(float(acc), 4)
    return out
