"""Patch, prefix-token and position embeddings of a ViT."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from vision_lens.config import HookedViTConfig


class Embed(nn.Module):
    """Turns images into the token sequence ``[cls?, dist?, registers..., patch_1, ..., patch_N]``.

    ``forward`` returns the token embeddings without positions; :meth:`pos_embed` gives the
    position embeddings. The model adds the two, so that its top-level ``hook_embed`` and
    ``hook_pos_embed`` hook points (TransformerLens' names) see each separately.

    Attributes:
        W_E: ``[d_model, 3, patch_h, patch_w]``, the patch projection in convolution layout.
        b_E: ``[d_model]``, its bias (only when ``cfg.patch_bias``).
        cls_token: ``[d_model]``, the learned class-token embedding (when ``cfg.class_token``).
        dist_token: ``[d_model]``, the distillation token (when ``cfg.dist_token``).
        registers: ``[n_registers, d_model]``, register tokens (when ``cfg.n_registers``).
        W_pos: ``[pos, d_model]``, learned position embeddings of every token; the rows of
            prefix tokens that the source model gives no position (timm's ``no_embed_class``,
            registers) are zero, so one shape serves every family.

    Example:
        >>> cfg = HookedViTConfig.tiny(n_layers=1, d_model=16, n_heads=2, d_mlp=32, d_embed=8,
        ...     n_registers=2)
        >>> Embed(cfg)(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 7, 16])
    """

    def __init__(self, cfg: HookedViTConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        d, dtype = cfg.d_model, cfg.dtype
        self.W_E = nn.Parameter(torch.empty(d, 3, *cfg.patch_size, dtype=dtype))
        self.b_E = nn.Parameter(torch.zeros(d, dtype=dtype)) if cfg.patch_bias else None
        if cfg.class_token:
            self.cls_token = nn.Parameter(torch.empty(d, dtype=dtype))
        if cfg.dist_token:
            self.dist_token = nn.Parameter(torch.empty(d, dtype=dtype))
        if cfg.n_registers:
            self.registers = nn.Parameter(torch.empty(cfg.n_registers, d, dtype=dtype))
        self.W_pos = nn.Parameter(torch.empty(cfg.n_pos, d, dtype=dtype))

    def prefix(self) -> Float[Tensor, "n_prefix d_model"] | None:
        """The prefix tokens in sequence order, or ``None`` if there are none."""
        parts = [
            getattr(self, name)[None] for name in ("cls_token", "dist_token") if hasattr(self, name)
        ]
        if hasattr(self, "registers"):
            parts.append(self.registers)
        return torch.cat(parts) if parts else None

    def forward(
        self, images: Float[Tensor, "batch 3 height width"]
    ) -> Float[Tensor, "batch pos d_model"]:
        """Prefix tokens then patch embeddings (no position embeddings)."""
        patches = F.conv2d(images, self.W_E, self.b_E, stride=self.patch_size)
        patches = patches.flatten(2).transpose(1, 2)  # [batch, n_patches, d_model]
        prefix = self.prefix()
        if prefix is None:
            return patches
        return torch.cat([prefix.expand(patches.shape[0], -1, -1), patches], dim=1)

    def pos_embed(self, batch: int) -> Float[Tensor, "batch pos d_model"]:
        """The position embeddings, broadcast (not copied) over ``batch``."""
        return self.W_pos.expand(batch, -1, -1)
