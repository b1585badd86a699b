"""Patch grids: turning per-patch scores into a square grid and upsampling it to image pixels."""

from __future__ import annotations

import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor


def as_square_grid(scores: Float[Tensor, "... n_patches"]) -> Float[Tensor, "... side side"]:
    """Reshape ``[..., n_patches]`` scores to ``[..., side, side]``; refuse a non-square count.

    Example:
        >>> import torch
        >>> as_square_grid(torch.zeros(2, 16)).shape
        torch.Size([2, 4, 4])
    """
    n = scores.shape[-1]
    side = int(round(n**0.5))
    if side * side != n:
        raise ValueError(f"{n} patch scores do not form a square grid; pass [rows, cols].")
    return scores.reshape(*scores.shape[:-1], side, side)


def upsample_grid(
    grid: Float[Tensor, "... rows cols"], size: tuple[int, int]
) -> Float[Tensor, "... height width"]:
    """Bilinearly upsample patch-grid scores to image size (``align_corners=False``), in float32.

    Args:
        grid: ``[..., rows, cols]`` scores on the patch grid.
        size: ``(H, W)`` in pixels.

    Returns:
        ``[..., H, W]``.

    Example:
        >>> import torch
        >>> upsample_grid(torch.ones(2, 3, 4, 4), (32, 32)).shape
        torch.Size([2, 3, 32, 32])
    """
    lead = grid.shape[:-2]
    flat = grid.reshape(-1, 1, *grid.shape[-2:]).float()
    up = F.interpolate(flat, size=tuple(size), mode="bilinear", align_corners=False)
    return up.view(*lead, *up.shape[-2:])
