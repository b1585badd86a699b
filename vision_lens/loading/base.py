"""What every loader returns: a config, a HookedViT state dict and the source's preprocessing."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import torch
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


def resample_position_embeddings(
    tower: LoadedTower, image_size: int | tuple[int, int]
) -> LoadedTower:
    """The same tower for another input size: patch position embeddings resampled to the new
    patch grid (bicubic with antialiasing, timm's ``resample_abs_pos_embed``, which is what timm
    does when it loads a checkpoint at another ``img_size``); prefix-token rows are kept.

    The source's preprocessing produced the old size, so the returned ``preprocess`` is ``None``
    unless the size is unchanged: resize and crop to the new size yourself.

    Args:
        tower: A loader's output.
        image_size: New input height and width (an int for square), multiples of the patch size.

    Returns:
        A new :class:`LoadedTower`; ``tower`` is not modified.

    Raises:
        ValueError: The size is not a multiple of the patch size.

    Example:
        >>> import torch, vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny(n_layers=1, d_model=16, n_heads=2, d_mlp=32, d_embed=8)
        >>> sd = vl.HookedViT(cfg).init_weights(seed=0).state_dict()
        >>> bigger = resample_position_embeddings(LoadedTower(cfg, sd, None), 32)
        >>> bigger.cfg.n_pos, tuple(bigger.state_dict["embed.W_pos"].shape)
        (17, (17, 16))
    """
    from timm.layers import resample_abs_pos_embed

    cfg = tower.cfg
    new_cfg = dataclasses.replace(cfg, image_size=image_size)  # validates the size
    if new_cfg.grid_size == cfg.grid_size:
        return tower
    if cfg.rope is not None:
        raise ValueError(
            f"{cfg.model_name}: rotary position tables were taken from the source at "
            f"{cfg.image_size} px and cannot be resampled; build the source model at "
            f"{new_cfg.image_size} px (timm: img_size=...) and convert that."
        )
    W_pos = tower.state_dict["embed.W_pos"]
    prefix, patches = W_pos[: cfg.n_prefix], W_pos[cfg.n_prefix :]
    resampled = resample_abs_pos_embed(
        patches[None],
        new_size=list(new_cfg.grid_size),
        old_size=list(cfg.grid_size),
        num_prefix_tokens=0,
        interpolation="bicubic",
        antialias=True,
    )[0]
    state_dict = dict(tower.state_dict)
    state_dict["embed.W_pos"] = torch.cat([prefix, resampled])
    return LoadedTower(new_cfg, state_dict, None)
