"""HookedViTConfig: the numbers that define a ViT image tower, nothing else."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import torch

ActFn = Literal["gelu", "gelu_tanh", "quick_gelu", "silu", "relu"]
NormType = Literal["LN", "RMS"]
ReadoutKind = Literal["cls", "avg", "cls_dist", "map"]
RopeLayout = Literal["interleaved", "half"]
ACT_FNS = ("gelu", "gelu_tanh", "quick_gelu", "silu", "relu")
NORM_TYPES = ("LN", "RMS")
READOUTS = ("cls", "avg", "cls_dist", "map")
ROPE_LAYOUTS = ("interleaved", "half")


@dataclass
class HookedViTConfig:
    """Architecture of a plain ViT: open_clip, timm or Hugging Face towers alike.

    Every field is read from the converted model itself (never guessed from a model name), so a
    config always describes the weights it came with. The token sequence is
    ``[class token?, distillation token?, register tokens..., patches...]``; the ``readout``
    says how the output is made from the final residual stream (see
    :class:`vision_lens.Readout`).

    Attributes:
        n_layers: Number of transformer blocks.
        d_model: Residual stream width.
        n_heads: Attention heads per block (``width // head_width`` in open_clip).
        d_head: Width of one head (``d_model // n_heads``).
        d_mlp: Hidden width of the MLPs.
        d_embed: Width of the final image embedding (after the projection).
        image_size: Input height and width in pixels.
        patch_size: Patch height and width in pixels.
        act_fn: ``"gelu"`` (exact erf), ``"gelu_tanh"``, ``"quick_gelu"`` (OpenAI CLIP),
            ``"silu"`` or ``"relu"``.
        eps: Norm epsilon, shared by all norms of the tower.
        ln_pre: Whether a norm is applied to the embeddings before the first block.
        final_ln_after_pool: Apply the final norm (``ln_final``) after pooling (timm's
            ``fc_norm``, open_clip's ``final_ln_after_pool``) rather than to every token before
            it. With class-token pooling both give the same output.
        class_token: Whether the sequence starts with a learned class token.
        dist_token: Whether a distillation token follows it (DeiT distilled).
        n_registers: Number of register tokens after the class/distillation tokens (DINOv2-reg).
        patch_bias: Whether the patch embedding has a bias.
        norm_type: ``"LN"`` (LayerNorm) or ``"RMS"`` (RMSNorm, no centring).
        qk_norm: Whether queries and keys are normalised per head (timm ``qk_norm``).
        gated_mlp: SwiGLU-style MLP: ``act(x W_gate) * (x W_in)`` (DINOv2-giant, EVA02).
        mlp_norm: The MLP normalises its hidden layer (``d_mlp`` wide) before the output
            projection (timm ``scale_mlp``: EVA02's SwiGLU). A norm of the same type and eps as
            the tower's, submodule ``mlp.ln``.
        rope: Rotary position embeddings on the queries and keys of every block, after qk-norm:
            ``None`` (none), ``"interleaved"`` (channel pairs ``(0, 1), (2, 3), ...`` rotate
            together: timm's default, EVA02, PE) or ``"half"`` (pairs ``(i, i + d_head / 2)``:
            timm's ``rotate_half``, DINOv3). The rotation angles are data, not a rule: each
            block's attention holds the per-position tables ``rope_cos``/``rope_sin``
            ``[1 or n_heads, n_pos, d_head]`` (persistent buffers, in the state dict), taken at
            conversion from the source model; tokens it does not rotate (the prefix tokens, in
            timm) have ``cos = 1, sin = 0``. A model built from a config alone starts with
            that identity rotation everywhere.
        rope_per_head: The rotation tables differ per head (timm's ``rope_type='mixed'``, with
            learned per-head frequencies); otherwise one table is shared by all heads.
        readout: How the output is read from the final residual stream: ``"cls"`` (class token),
            ``"avg"`` (mean over patch tokens), ``"cls_dist"`` (class and distillation tokens
            averaged, DeiT distilled) or ``"map"`` (attention pooling by a learned query,
            SigLIP's MAP head).
        readout_n_heads: Heads of the attention-pooling head (``"map"`` only).
        readout_d_mlp: Hidden width of the attention-pooling head's MLP (``"map"`` only).
        readout_act_fn: Activation of that MLP.
        dist_head: ``"cls_dist"`` only: the distillation token has its own output projection
            (``readout.W_dist``, ``readout.b_dist``), averaged with ``W_proj``'s.
        proj_bias: Whether the output projection (``W_proj``) has a bias ``b_proj`` (a timm or
            Hugging Face classifier head).
        model_name: Free-form provenance (open_clip name and pretrained tag), for display only.
        dtype: Parameter dtype.

    Example:
        >>> cfg = HookedViTConfig.tiny(d_model=64, d_mlp=256, d_embed=32, image_size=32)
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
    class_token: bool = True
    dist_token: bool = False
    n_registers: int = 0
    patch_bias: bool = False
    norm_type: NormType = "LN"
    qk_norm: bool = False
    gated_mlp: bool = False
    mlp_norm: bool = False
    rope: RopeLayout | None = None
    rope_per_head: bool = False
    readout: ReadoutKind = "cls"
    readout_n_heads: int | None = None
    readout_d_mlp: int | None = None
    readout_act_fn: ActFn | None = None
    dist_head: bool = False
    proj_bias: bool = False
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
        # TransformerLens' apply_ln_to_stack centres only for "LN"-style norms.
        self.normalization_type = self.norm_type
        for name, value, allowed in (
            ("act_fn", self.act_fn, ACT_FNS),
            ("norm_type", self.norm_type, NORM_TYPES),
            ("readout", self.readout, READOUTS),
        ):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not supported; use one of {allowed}.")
        if self.rope is not None and self.rope not in ROPE_LAYOUTS:
            raise ValueError(f"rope={self.rope!r} is not supported; use None or {ROPE_LAYOUTS}.")
        if self.rope is not None and self.d_head % 2:
            raise ValueError(f"rope needs an even d_head (pairs of channels), got {self.d_head}.")
        if self.rope_per_head and self.rope is None:
            raise ValueError("rope_per_head=True needs rope set.")
        if self.n_registers < 0:
            raise ValueError(f"n_registers must be >= 0, got {self.n_registers}.")
        if self.readout in ("cls", "cls_dist") and not self.class_token:
            raise ValueError(f"readout={self.readout!r} needs a class token (class_token=True).")
        if self.readout == "cls_dist" and not self.dist_token:
            raise ValueError("readout='cls_dist' needs a distillation token (dist_token=True).")
        if self.dist_head and self.readout != "cls_dist":
            raise ValueError("dist_head=True only applies to readout='cls_dist'.")
        if self.final_ln_after_pool and (self.readout == "map" or self.dist_head):
            raise ValueError(
                "final_ln_after_pool=True is only defined for readouts that pool to one vector "
                "('cls', 'avg', 'cls_dist' without dist_head)."
            )
        if self.readout == "avg" and self.n_patches == 0:
            raise ValueError("readout='avg' needs at least one patch.")
        if self.readout == "map":
            self.readout_n_heads = self.readout_n_heads or self.n_heads
            self.readout_d_mlp = self.readout_d_mlp or self.d_mlp
            self.readout_act_fn = self.readout_act_fn or self.act_fn
            if self.d_model % self.readout_n_heads:
                raise ValueError(
                    f"d_model={self.d_model} is not divisible by readout_n_heads="
                    f"{self.readout_n_heads}."
                )
            if self.readout_act_fn not in ACT_FNS:
                raise ValueError(f"readout_act_fn={self.readout_act_fn!r}; use one of {ACT_FNS}.")

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
    def n_prefix(self) -> int:
        """Tokens before the patches: class, distillation and register tokens."""
        return int(self.class_token) + int(self.dist_token) + self.n_registers

    @property
    def n_pos(self) -> int:
        """Sequence length: the prefix tokens plus one token per patch."""
        return self.n_patches + self.n_prefix

    @classmethod
    def tiny(cls, **overrides: object) -> HookedViTConfig:
        """A small config for examples and tests (random weights run in milliseconds): 2 layers,
        ``d_model=32``, 4 heads of width 8, ``d_mlp=64``, ``d_embed=16``, 16 x 16 images in
        8 x 8 patches. Any field can be overridden.

        Example:
            >>> cfg = HookedViTConfig.tiny(n_layers=3, n_registers=1)
            >>> cfg.n_layers, cfg.n_pos
            (3, 6)
        """
        fields = dict(
            n_layers=2, d_model=32, n_heads=4, d_mlp=64, d_embed=16, image_size=16, patch_size=8
        )
        return cls(**{**fields, **overrides})

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
