"""Patch, class-token and position embeddings of a ViT."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from vision_lens.config import HookedViTConfig


class Embed(nn.Module):
    """Turns images into the token sequence ``[class token, patch_1, ..., patch_N]``.

    ``forward`` returns the token embeddings without positions; :meth:`pos_embed` gives the
    position embeddings. The model adds the two, so that its top-level ``hook_embed`` and
    ``hook_pos_embed`` hook points (TransformerLens' names) see each separately.

    Attributes:
        W_E: ``[d_model, 3, patch_h, patch_w]``, the patch projection in convolution layout.
        cls_token: ``[d_model]``, the learned class-token embedding.
        W_pos: ``[pos, d_model]``, learned position embeddings (class token first).

    Example:
        >>> cfg = HookedViTConfig(n_layers=1, d_model=16, n_heads=2, d_mlp=32, d_embed=8,
        ...                       image_size=16, patch_size=8)
        >>> Embed(cfg)(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, cfg: HookedViTConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.W_E = nn.Parameter(torch.empty(cfg.d_model, 3, *cfg.patch_size, dtype=cfg.dtype))
        self.cls_token = nn.Parameter(torch.empty(cfg.d_model, dtype=cfg.dtype))
        self.W_pos = nn.Parameter(torch.empty(cfg.n_pos, cfg.d_model, dtype=cfg.dtype))

    def forward(
        self, images: Float[Tensor, "batch 3 height width"]
    ) -> Float[Tensor, "batch pos d_model"]:
        """Patch embeddings with the class token at position 0 (no position embeddings)."""
        patches = F.conv2d(images, self.W_E, stride=self.patch_size)  # [batch, d, rows, cols]
        patches = patches.flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(patches.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1)

    def pos_embed(self, batch: int) -> Float[Tensor, "batch pos d_model"]:
        """The position embeddings, broadcast (not copied) over ``batch``."""
        return self.W_pos.expand(batch, -1, -1)
