"""Both towers of an open_clip model from one load: a HookedViT and a CLIPText."""

from __future__ import annotations

from pathlib import Path

import torch

from vision_lens.hooked_vit import HookedViT
from vision_lens.loading.open_clip import (
    check_open_clip_config,
    check_pretrained_source,
    convert_open_clip_model,
    default_preprocess,
)
from vision_lens.text import CLIPText


def load_clip(
    model_name: str,
    pretrained: str | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    cache_dir: str | None = None,
) -> tuple[HookedViT, CLIPText]:
    """Load an open_clip model once and return its image tower as a :class:`HookedViT` and its
    text tower as a :class:`CLIPText`.

    Args:
        model_name: An open_clip architecture name, e.g. ``"ViT-B-16"``.
        pretrained: An open_clip pretrained tag (downloaded on first use), a local checkpoint
            path, or ``None`` for random weights.
        device: Target device (default CPU).
        dtype: Target dtype (default float32).
        cache_dir: open_clip's download cache directory.

    Returns:
        ``(model, clip)``; ``model.preprocess`` is open_clip's eval transform for these weights.

    Raises:
        vision_lens.UnsupportedModelError: The image tower cannot be converted.

    Example:
        >>> model, clip = load_clip("ViT-B-32")  # random weights  # doctest: +SKIP
        >>> texts = clip.encode(["a dog", "a cat"])  # doctest: +SKIP
    """
    import open_clip

    check_open_clip_config(model_name)
    pretrained = check_pretrained_source(model_name, pretrained)
    source = open_clip.create_model(
        model_name, pretrained=pretrained, cache_dir=cache_dir, weights_only=True
    )
    provenance = model_name if pretrained is None else f"{model_name} ({_display(pretrained)})"
    model = convert_open_clip_model(
        HookedViT,
        source,
        model_name=provenance,
        preprocess=default_preprocess(source.visual),
        device=device,
        dtype=dtype,
        copy=False,
    )
    source.visual = None  # its weights now live in `model`; encode_text never reads it
    if device is not None or dtype is not None:
        source.to(device=device, dtype=dtype)
    clip = CLIPText.from_open_clip_model(source, open_clip.get_tokenizer(model_name))
    return model, clip.eval()


def load_clip_or_shapes(
    model_name: str | None = None,
    pretrained: str | None = None,
    *,
    device: str | torch.device | None = None,
) -> tuple[HookedViT, CLIPText]:
    """:func:`load_clip` for ``model_name``, or the shipped shapes-world CLIP when it is ``None``
    (the default model of the ``vision-lens`` commands).

    Raises:
        ValueError: ``pretrained`` given without ``model_name`` (the shapes model has its own
            weights).

    Example:
        >>> load_clip_or_shapes(pretrained="laion2b_s34b_b88k")
        Traceback (most recent call last):
        ...
        ValueError: --pretrained needs --model (the shapes model has its own weights).
    """
    if model_name is not None:
        return load_clip(model_name, pretrained, device=device)
    if pretrained is not None:
        raise ValueError("--pretrained needs --model (the shapes model has its own weights).")
    from vision_lens.shapes.load import load_shapes_clip

    return load_shapes_clip(device=device)


def _display(pretrained: str) -> str:
    """A pretrained tag as given; a checkpoint shipped in the package relative to it (reports
    written from the shipped model then read the same on every machine)."""
    package = Path(__file__).resolve().parent.parent
    path = Path(pretrained)
    if path.is_file() and path.resolve().is_relative_to(package):
        return str(path.resolve().relative_to(package.parent))
    return pretrained
