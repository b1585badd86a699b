"""What every loader returns: a config, a HookedViT state dict and the source's preprocessing."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor

from vision_lens.config import HookedViTConfig


class LoadedTower(NamedTuple):
    """A converted image tower, ready for ``HookedViT(cfg).load_state_dict(state_dict)``.

    Attributes:
        cfg: Architecture of the tower, read off the source model.
        state_dict: HookedViT parameter names to tensors (strict: every parameter, no extras).
        preprocess: The source library's evaluation transform (PIL image to tensor), if any.

    Example:
        >>> import timm
        >>> from vision_lens.loading.timm import timm_to_hooked
        >>> tower = timm_to_hooked(timm.create_model("test_vit", pretrained=False))
        >>> cfg, state_dict, preprocess = tower
        >>> cfg.d_model, state_dict["embed.W_E"].shape[0]
        (64, 64)
    """

    cfg: HookedViTConfig
    state_dict: dict[str, Tensor]
    preprocess: Callable | None
