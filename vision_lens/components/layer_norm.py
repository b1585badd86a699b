"""LayerNorm with TransformerLens hook points for its scale and normalised output."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from vision_lens.components._hooks import is_hooked


class LayerNorm(nn.Module):
    """LayerNorm over the last dimension with learned ``w`` (gamma) and ``b`` (beta).

    Hook points:
        hook_scale: ``[batch, pos, 1]``, the per-token ``sqrt(var + eps)``.
        hook_normalized: ``[batch, pos, d_model]``, ``(x - mean) / scale`` before ``w`` and ``b``.

    With no hook attached the fused ``torch.nn.functional.layer_norm`` kernel runs; with a hook
    attached the explicit computation runs so the hooks see (and may edit) the real values.

    Example:
        >>> ln = LayerNorm(8)
        >>> ln(torch.randn(2, 3, 8)).shape
        torch.Size([2, 3, 8])
    """

    def __init__(self, d_model: int, eps: float = 1e-5, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model, dtype=dtype))
        self.b = nn.Parameter(torch.zeros(d_model, dtype=dtype))
        self.hook_scale = HookPoint()  # [batch, pos, 1]
        self.hook_normalized = HookPoint()  # [batch, pos, d_model]

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        if not is_hooked(self.hook_scale, self.hook_normalized):
            return F.layer_norm(x, (x.shape[-1],), self.w, self.b, self.eps)
        centred = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((centred.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        normalized = self.hook_normalized(centred / scale)
        return normalized * self.w + self.b
