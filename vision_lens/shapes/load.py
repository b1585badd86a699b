"""The shipped shapes-world CLIP as vision_lens models."""

from __future__ import annotations

import torch


def load_shapes_clip(device: str | torch.device | None = None):
    """Load the small CLIP trained on the shapes world, shipped with the package.

    It goes through the same open_clip path as any model (a registered open_clip config and a
    local safetensors checkpoint), so everything shown on it works on real CLIPs too.

    Args:
        device: Torch device (default CPU).

    Returns:
        ``(model, clip)``: a :class:`vision_lens.HookedViT` (with ``model.preprocess``) and a
        :class:`vision_lens.CLIPText`.

    Example:
        >>> import vision_lens as vl
        >>> model, clip = vl.load_shapes_clip()  # doctest: +SKIP
        >>> scenes = vl.shapes.generate(4, seed=0)  # doctest: +SKIP
    """
    from vision_lens.loading.clip import load_clip
    from vision_lens.shapes.pretrained import (
        SHAPES_MODEL_NAME,
        register_shapes_config,
        shapes_weights_path,
    )

    register_shapes_config()
    return load_clip(SHAPES_MODEL_NAME, str(shapes_weights_path()), device=device)
