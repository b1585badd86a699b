"""LayerNorm and RMSNorm with TransformerLens hook points for their scale and normalised output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from vision_lens.components.hooks import CheckedHookPoint, is_hooked


class _Norm(nn.Module):
    """What LayerNorm and RMSNorm share: the gain ``w``, ``eps`` and the two hook points."""

    #: Whether the norm subtracts the mean (the decomposition's "center" mode relies on it).
    centers: bool

    def __init__(self, d_model: int, eps: float, dtype: torch.dtype):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model, dtype=dtype))
        self.hook_scale = CheckedHookPoint()  # [batch, pos, 1]
        self.hook_normalized = CheckedHookPoint()  # [batch, pos, d_model]

    @property
    def bias(self) -> Tensor | None:
        """The additive ``b`` (``None`` for RMSNorm)."""
        raise NotImplementedError


class LayerNorm(_Norm):
    """LayerNorm over the last dimension with learned ``w`` (gamma) and ``b`` (beta).

    Hook points:
        hook_scale: ``[..., 1]``, the per-token ``sqrt(var + eps)``.
        hook_normalized: ``[..., d_model]``, ``(x - mean) / scale`` before ``w`` and ``b``.

    With no hook attached the fused ``torch.nn.functional.layer_norm`` kernel runs; with a hook
    attached the explicit computation runs so the hooks see (and may edit) the real values.

    Example:
        >>> ln = LayerNorm(8)
        >>> ln(torch.randn(2, 3, 8)).shape
        torch.Size([2, 3, 8])
    """

    centers = True

    def __init__(self, d_model: int, eps: float = 1e-5, dtype: torch.dtype = torch.float32):
        super().__init__(d_model, eps, dtype)
        self.b = nn.Parameter(torch.zeros(d_model, dtype=dtype))

    @property
    def bias(self) -> Tensor | None:
        return self.b

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        if not is_hooked(self.hook_scale, self.hook_normalized):
            return F.layer_norm(x, (x.shape[-1],), self.w, self.b, self.eps)
        centred = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        normalized = self.hook_normalized(centred / scale)
        return normalized * self.w + self.b


class RMSNorm(_Norm):
    """RMSNorm over the last dimension with a learned ``w``: ``x / sqrt(mean(x^2) + eps) * w``.

    No centring and no bias, so in the decomposition the "center" mode leaves terms as they are.

    Hook points:
        hook_scale: ``[..., 1]``, ``sqrt(mean(x^2) + eps)``.
        hook_normalized: ``[..., d_model]``, ``x / scale``.

    Example:
        >>> RMSNorm(8)(torch.randn(2, 3, 8)).shape
        torch.Size([2, 3, 8])
    """

    centers = False

    def __init__(self, d_model: int, eps: float = 1e-6, dtype: torch.dtype = torch.float32):
        super().__init__(d_model, eps, dtype)

    @property
    def bias(self) -> Tensor | None:
        return None

    def forward(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        if not is_hooked(self.hook_scale, self.hook_normalized):
            return F.rms_norm(x, (x.shape[-1],), self.w, self.eps)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.w


def make_norm(
    norm_type: str, d_model: int, eps: float, dtype: torch.dtype = torch.float32
) -> LayerNorm | RMSNorm:
    """A :class:`LayerNorm` (``"LN"``) or :class:`RMSNorm` (``"RMS"``).

    Example:
        >>> type(make_norm("RMS", 8, 1e-6)).__name__
        'RMSNorm'
    """
    if norm_type == "LN":
        return LayerNorm(d_model, eps, dtype)
    if norm_type == "RMS":
        return RMSNorm(d_model, eps, dtype)
    raise ValueError(f"norm_type must be 'LN' or 'RMS', got {norm_type!r}.")
