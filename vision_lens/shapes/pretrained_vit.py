"""The shipped shapes-world ViT classifier (a plain timm ViT, not a CLIP): files and loading.

``weights/shapes_vit.json`` holds timm's ``VisionTransformer`` keyword arguments and the
attribute slices of the head (:class:`~vision_lens.shapes.vit_classifier.ShapesViTConfig`),
``weights/shapes_vit.safetensors`` the float16 timm state dict. Anyone can rebuild it without
vision_lens::

    import json, timm
    from safetensors.torch import load_file
    kwargs = json.load(open("shapes_vit.json"))["timm_kwargs"]
    model = timm.models.vision_transformer.VisionTransformer(**kwargs)
    model.load_state_dict({k: v.float() for k, v in load_file("shapes_vit.safetensors").items()})

As a :class:`vision_lens.HookedViT`: ``vision_lens.load_shapes_vit()`` (which converts
:func:`load_shapes_timm_vit` with ``HookedViT.from_timm``). Retrain it with
``scripts/train_shapes_vit.py`` (:mod:`vision_lens.shapes.train_vit`); evaluate it with
``scripts/eval_shapes_vit.py``.

Example:
    >>> import torch
    >>> model = load_shapes_timm_vit()
    >>> cfg = shapes_vit_config()
    >>> model(torch.zeros(1, 3, 64, 64)).shape[-1] == cfg.num_classes
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vision_lens.shapes.encoding import images_to_tensor
from vision_lens.shapes.objectives import attribute_targets
from vision_lens.shapes.pretrained import check_device
from vision_lens.shapes.vit_classifier import ShapesViTConfig, build_vit
from vision_lens.shapes.vocabulary import Scenes

if TYPE_CHECKING:
    import torch

__all__ = [
    "PROBE_ATTRIBUTES",
    "PROBE_TRAIN_SEED",
    "encode_scenes",
    "linear_probe_accuracy",
    "load_shapes_timm_vit",
    "shapes_vit_config",
    "shapes_vit_compalign_path",
    "shapes_vit_config_path",
    "shapes_vit_eval_path",
    "shapes_vit_weights_path",
]

#: Object attributes (and the background) the linear-probe gate checks on single-object scenes.
PROBE_ATTRIBUTES: tuple[str, ...] = ("color", "shape", "position", "size", "texture", "background")
#: Seed of the probes' training scenes (the held-out test scenes use the evaluation seed 10_000).
PROBE_TRAIN_SEED = 30_000

_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def shapes_vit_weights_path() -> Path:
    """Path of the shipped float16 safetensors weights (a timm state dict).

    Example:
        >>> shapes_vit_weights_path().name
        'shapes_vit.safetensors'
    """
    return _WEIGHTS_DIR / "shapes_vit.safetensors"


def shapes_vit_config_path() -> Path:
    """Path of the shipped config JSON (timm kwargs and attribute slices).

    Example:
        >>> shapes_vit_config_path().name
        'shapes_vit.json'
    """
    return _WEIGHTS_DIR / "shapes_vit.json"


def shapes_vit_eval_path() -> Path:
    """Path of the shipped evaluation report (``scripts/eval_shapes_vit.py``).

    Example:
        >>> shapes_vit_eval_path().name
        'shapes_vit_eval.json'
    """
    return _WEIGHTS_DIR / "shapes_vit_eval.json"


def shapes_vit_config() -> ShapesViTConfig:
    """The shipped model's config.

    Example:
        >>> cfg = shapes_vit_config()
        >>> cfg.global_pool, cfg.reg_tokens > 0, cfg.attributes[:2]
        ('avg', True, ('shape', 'color'))
    """
    return ShapesViTConfig.load(shapes_vit_config_path())


def load_shapes_timm_vit(
    device: str | torch.device | None = None, *, head: bool = True
) -> torch.nn.Module:
    """The shipped model as a plain timm ``VisionTransformer`` in eval mode.

    Args:
        device: Torch device (default CPU).
        head: Keep the classifier head (``model(x)`` gives the concatenated attribute logits);
            ``False`` removes it (``reset_classifier(0)``), so ``model(x)`` gives the pooled,
            ``fc_norm``-ed features a linear probe reads.

    Returns:
        The float32 model; ``model.pretrained_cfg`` carries the shapes world's input
        normalisation, so timm's eval transform of a 64x64 image equals
        :func:`vision_lens.shapes.encoding.images_to_tensor`.

    Example:
        >>> import torch
        >>> load_shapes_timm_vit(head=False)(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 128])
    """
    from safetensors.torch import load_file

    check_device(device)
    model = build_vit(shapes_vit_config())
    state = load_file(str(shapes_vit_weights_path()))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    if not head:
        model.reset_classifier(0)
    if device is not None:
        model.to(device)
    return model.eval()


def encode_scenes(
    model: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, batch_size: int = 250
) -> np.ndarray:
    """``model`` applied to uint8 scenes ``[n, 64, 64, 3]`` in batches, as float64 numpy.

    Example:
        >>> import torch
        >>> encode_scenes(lambda x: x.mean((2, 3)), np.zeros((3, 64, 64, 3), np.uint8)).shape
        (3, 3)
    """
    import torch

    with torch.no_grad():
        parts = [
            model(images_to_tensor(images[i : i + batch_size])).float().cpu().numpy()
            for i in range(0, len(images), batch_size)
        ]
    return np.concatenate(parts).astype(np.float64)


def linear_probe_accuracy(
    train_features: np.ndarray,
    train_scenes: Scenes,
    test_features: np.ndarray,
    test_scenes: Scenes,
    attributes: Sequence[str] = PROBE_ATTRIBUTES,
) -> dict[str, float]:
    """Held-out accuracy of one logistic-regression probe per attribute (scikit-learn).

    Each probe is fitted on standardised ``train_features`` of the scenes that carry the label
    (single-object scenes for object attributes) and scored on ``test_features``.

    Args:
        train_features: ``[len(train_scenes), d]`` features (e.g. :func:`encode_scenes`).
        train_scenes: Their scenes (for the ground truth).
        test_features: ``[len(test_scenes), d]``.
        test_scenes: Held-out scenes.
        attributes: Attributes to probe (any of :data:`PROBE_ATTRIBUTES` and ``"count"``).

    Returns:
        ``{attribute: accuracy}``, rounded to 4 decimals.

    Example:
        >>> from vision_lens.shapes import generate
        >>> train, test = generate(60, seed=1, n_objects=1), generate(20, seed=2, n_objects=1)
        >>> f = lambda ds: ds.images.reshape(len(ds), 64 * 64, 3).mean(1)  # mean colour
        >>> acc = linear_probe_accuracy(f(train), train, f(test), test, ["background"])
        >>> acc["background"] > 0.5
        True
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y_train = attribute_targets(train_scenes, range(len(train_features)))
    y_test = attribute_targets(test_scenes, range(len(test_features)))
    out = {}
    for a in attributes:
        ytr, yte = y_train[a].numpy(), y_test[a].numpy()
        keep_tr, keep_te = ytr != -100, yte != -100
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
        probe.fit(train_features[keep_tr], ytr[keep_tr])
        out[a] = round(float(probe.score(test_features[keep_te], yte[keep_te])), 4)
    return out


def shapes_vit_compalign_path() -> Path:
    """Folder of the shipped CompAlign of the shapes ViT into the shapes CLIP
    (``scripts/train_shapes_compalign.py``; read it with ``vl.CompAlign.load``).

    Example:
        >>> shapes_vit_compalign_path().name
        'shapes_vit_compalign'
    """
    return _WEIGHTS_DIR / "shapes_vit_compalign"
