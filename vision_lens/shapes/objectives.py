"""What the shapes-world CLIP's training optimises, and how fast.

* :func:`multi_positive_clip_loss`: the contrastive loss, where a caption is a positive for
  every image of the batch it truly describes.
* The supervised attribute term: :func:`make_attribute_probes` (one linear classifier per
  attribute on the image embedding), :func:`attribute_targets` and :func:`attribute_loss`; it
  drives the image-tower warm start and stays on as an auxiliary term.
* The optimiser's schedule and parameter groups: :func:`lr_at`, :func:`param_groups`.

Example:
    >>> [round(lr_at(s, steps=10, lr=1.0, warmup=2), 2) for s in (0, 1, 2, 9)]
    [0.5, 1.0, 1.0, 0.04]
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F

from vision_lens.shapes.vocabulary import COUNT_WORDS, VOCABULARY, Scenes

__all__ = [
    "ATTRIBUTE_LOSS_WEIGHTS",
    "WARM_OBJECT_ATTRIBUTES",
    "attribute_loss",
    "attribute_targets",
    "lr_at",
    "make_attribute_probes",
    "multi_positive_clip_loss",
    "param_groups",
    "probe_accuracy",
]

#: Object attributes the image-tower warm start predicts (on single-object scenes only).
WARM_OBJECT_ATTRIBUTES: tuple[str, ...] = ("shape", "color", "size", "position", "texture")

#: Loss weight per attribute in :func:`attribute_loss`. Shape gets twice the weight because it
#: is by far the slowest attribute for a ViT trained from scratch: a shape-only probe needs
#: ~400 steps to pass 70% while colour and position pass 99% within 150 steps, after which
#: their gradients vanish and shape alone would be left with a small share of the clipped step.
ATTRIBUTE_LOSS_WEIGHTS: dict[str, float] = {"shape": 2.0}


def multi_positive_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    positives: torch.Tensor,
    logit_scale: torch.Tensor,
) -> torch.Tensor:
    """Symmetric CLIP loss where image ``i`` and text ``t`` match wherever ``positives[i, t]``.

    Each row (image -> texts) and column (text -> images) is a cross-entropy against the uniform
    distribution over its positives. With a one-to-one ``positives`` (the identity) this is the
    standard CLIP loss.

    Args:
        image_features: ``[n, d]`` (normalised here).
        text_features: ``[k, d]`` (normalised here).
        positives: bool ``[n, k]``; every row and column needs at least one ``True``.
        logit_scale: Log of the temperature's inverse (``model.logit_scale``).

    Example:
        >>> img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> round(float(multi_positive_clip_loss(img, img, torch.eye(2, dtype=torch.bool),
        ...                                      torch.tensor(0.0))), 4)
        0.3133
    """
    img = F.normalize(image_features.float(), dim=-1)
    txt = F.normalize(text_features.float(), dim=-1)
    logits = logit_scale.exp() * img @ txt.T
    pos = positives.float()
    i2t = -(pos * logits.log_softmax(1)).sum(1) / pos.sum(1)
    t2i = -(pos * logits.log_softmax(0)).sum(0) / pos.sum(0)
    return (i2t.mean() + t2i.mean()) / 2


def lr_at(step: int, steps: int, lr: float, warmup: int, min_lr_ratio: float = 0.0) -> float:
    """Linear warmup for ``warmup`` steps, then cosine decay to ``min_lr_ratio * lr``.

    Example:
        >>> lr_at(0, steps=100, lr=1e-3, warmup=10), lr_at(100, 100, 1e-3, 10, min_lr_ratio=0.1)
        (0.0001, 0.0001)
    """
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups as open_clip's training makes them: no weight decay on gains,
    biases, LayerNorms and ``logit_scale``; ``weight_decay`` on the rest.

    Example:
        >>> groups = param_groups(torch.nn.Linear(3, 2), weight_decay=0.1)
        >>> [(len(g["params"]), g["weight_decay"]) for g in groups]
        [(1, 0.0), (1, 0.1)]
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
        (no_decay if skip or "logit_scale" in name else decay).append(p)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def attribute_targets(scenes: Scenes, indices: Iterable[int]) -> dict[str, torch.Tensor]:
    """Class targets of :func:`attribute_loss`: ``{attribute: int64 [len(indices)]}``.

    Object attributes are labelled on single-object scenes and ``-100`` (ignored) elsewhere;
    ``background`` and ``count`` (objects - 1) are labelled on every scene.

    Example:
        >>> from vision_lens.shapes import generate
        >>> t = attribute_targets(generate(2, seed=0, n_objects=1), [0, 1])
        >>> sorted(t), t["count"].tolist()
        (['background', 'color', 'count', 'position', 'shape', 'size', 'texture'], [0, 0])
    """
    out: dict[str, list[int]] = {a: [] for a in (*WARM_OBJECT_ATTRIBUTES, "background", "count")}
    for i in indices:
        attrs = scenes.attributes[int(i)]
        for a in WARM_OBJECT_ATTRIBUTES:
            out[a].append(VOCABULARY[a].index(attrs[0][a]) if len(attrs) == 1 else -100)
        out["background"].append(VOCABULARY["background"].index(scenes.backgrounds[int(i)]))
        out["count"].append(len(attrs) - 1)
    return {a: torch.tensor(v) for a, v in out.items()}


def make_attribute_probes(model: torch.nn.Module, seed: int = 0) -> torch.nn.ModuleDict:
    """One linear classifier per attribute on the image embedding (for the supervised terms).

    Example:
        >>> import open_clip
        >>> model = open_clip.CLIP(embed_dim=8, vision_cfg=dict(image_size=16, patch_size=8,
        ...     layers=1, width=16, head_width=8), text_cfg=dict(width=16, heads=2, layers=1))
        >>> probes = make_attribute_probes(model)
        >>> {a: p.out_features for a, p in probes.items()}["count"]
        4
    """
    d = model.visual.output_dim
    sizes = {a: len(VOCABULARY[a]) for a in (*WARM_OBJECT_ATTRIBUTES, "background")}
    sizes["count"] = len(COUNT_WORDS) - 1
    torch.manual_seed(seed + 1)
    return torch.nn.ModuleDict({a: torch.nn.Linear(d, k) for a, k in sizes.items()})


def attribute_loss(
    probes: torch.nn.ModuleDict, features: torch.Tensor, targets: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Weighted sum over attributes of the probes' cross-entropy on layer-normed image embeddings.

    Weights come from :data:`ATTRIBUTE_LOSS_WEIGHTS` (1 for attributes not listed).

    Example:
        >>> probes = torch.nn.ModuleDict({"shape": torch.nn.Linear(4, 8)})
        >>> targets = {"shape": torch.tensor([0, -100])}  # -100: no label, ignored
        >>> attribute_loss(probes, torch.randn(2, 4), targets).shape
        torch.Size([])
    """
    feats = F.layer_norm(features.float(), (features.shape[-1],))
    return sum(
        ATTRIBUTE_LOSS_WEIGHTS.get(a, 1.0) * F.cross_entropy(probes[a](feats), y, ignore_index=-100)
        for a, y in targets.items()
    )


@torch.no_grad()
def probe_accuracy(
    probes: torch.nn.ModuleDict, features: torch.Tensor, val: Scenes
) -> dict[str, float]:
    """Accuracy of each object-attribute probe on ``val``'s raw (unnormalised) embeddings.

    Args:
        probes: :func:`make_attribute_probes`.
        features: ``[len(val), d]`` image embeddings (``normalize=False``).
        val: Single-object scenes.

    Returns:
        ``{"probe_<attribute>": accuracy}`` for :data:`WARM_OBJECT_ATTRIBUTES`, rounded to 4
        decimals.

    Example:
        >>> from vision_lens.shapes import generate
        >>> probes = torch.nn.ModuleDict({a: torch.nn.Linear(4, 9) for a in WARM_OBJECT_ATTRIBUTES})
        >>> acc = probe_accuracy(probes, torch.randn(3, 4), generate(3, seed=0, n_objects=1))
        >>> sorted(acc)[:2]
        ['probe_color', 'probe_position']
    """
    feats = F.layer_norm(features.float(), (features.shape[-1],))
    targets = attribute_targets(val, range(len(val.attributes)))
    return {
        f"probe_{a}": round(float((probes[a](feats).argmax(1) == targets[a]).float().mean()), 4)
        for a in WARM_OBJECT_ATTRIBUTES
    }
