"""HookedViTConfig: the numbers that define a ViT image tower, nothing else."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

ActFn = Literal["gelu", "gelu_tanh", "quick_gelu"]


@dataclass
class HookedViTConfig:
    """Architecture of a CLIP-style ViT image tower with class-token pooling.

    Every number is read from the converted model itself (never guessed from a model name), so a
    config always describes the weights it came with.

    Attributes:
        n_layers: Number of transformer blocks.
        d_model: Residual stream width.
        n_heads: Attention heads per block (``width // head_width`` in open_clip).
        d_head: Width of one head (``d_model // n_heads``).
        d_mlp: Hidden width of the MLPs.
        d_embed: Width of the final image embedding (after the projection).
        image_size: Input height and width in pixels.
        patch_size: Patch height and width in pixels.
        act_fn: ``"gelu"`` (exact erf), ``"gelu_tanh"`` or ``"quick_gelu"`` (OpenAI CLIP).
        eps: LayerNorm epsilon, shared by all LayerNorms of the tower.
        ln_pre: Whether a LayerNorm is applied to the embeddings before the first block.
        final_ln_after_pool: Recorded from open_clip; with class-token pooling applying the final
            LayerNorm before or after pooling gives the same embedding, so it does not change the
            computation.
        model_name: Free-form provenance (open_clip name and pretrained tag), for display only.
        dtype: Parameter dtype.

    Example:
        >>> cfg = HookedViTConfig(n_layers=2, d_model=64, n_heads=4, d_mlp=256, d_embed=32,
        ...                       image_size=32, patch_size=8)
        >>> cfg.n_patches, cfg.n_pos, cfg.d_head
        (16, 17, 16)
    """

    n_layers: int
    d_model: int
    n_heads: int
    d_mlp: int
    d_embed: int
    image_size: tuple[int, int] | int
    patch_size: tuple[int, int] | int
    d_head: int | None = None
    act_fn: ActFn = "gelu"
    eps: float = 1e-5
    ln_pre: bool = True
    final_ln_after_pool: bool = False
    model_name: str = "custom"
    dtype: torch.dtype = torch.float32
    # TransformerLens' ActivationCache reads these two; a ViT block always has both sublayers.
    attn_only: bool = field(default=False, init=False)
    normalization_type: str = field(default="LN", init=False)

    def __post_init__(self) -> None:
        self.image_size = _pair(self.image_size, "image_size")
        self.patch_size = _pair(self.patch_size, "patch_size")
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                    "pass d_head explicitly."
                )
            self.d_head = self.d_model // self.n_heads
        for (size, patch), axis in zip(
            zip(self.image_size, self.patch_size, strict=True), "HW", strict=True
        ):
            if size % patch:
                raise ValueError(
                    f"image_size {self.image_size} is not a multiple of patch_size "
                    f"{self.patch_size} along {axis}."
                )
        if self.act_fn not in ("gelu", "gelu_tanh", "quick_gelu"):
            raise ValueError(
                f"act_fn={self.act_fn!r} is not supported; use 'gelu', 'gelu_tanh' or 'quick_gelu'."
            )

    @property
    def grid_size(self) -> tuple[int, int]:
        """Patch grid (rows, columns)."""
        return (
            self.image_size[0] // self.patch_size[0],
            self.image_size[1] // self.patch_size[1],
        )

    @property
    def n_patches(self) -> int:
        """Number of image patches (excluding the class token)."""
        rows, cols = self.grid_size
        return rows * cols

    @property
    def n_pos(self) -> int:
        """Sequence length: the class token plus one token per patch."""
        return self.n_patches + 1

    def to_dict(self) -> dict:
        """A JSON-friendly dict of the config (dtype as a string)."""
        out = asdict(self)
        out["dtype"] = str(self.dtype).removeprefix("torch.")
        for derived in ("attn_only", "normalization_type"):
            out.pop(derived)
        return out


def _pair(value: tuple[int, int] | int, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value}.")
    return value
