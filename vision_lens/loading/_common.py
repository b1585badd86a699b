"""Small conversion helpers every loader shares: reading modules, filling absent biases, folding
layer scale. Pure functions over tensors and modules; no loader-specific rules live here."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def is_identity(module: nn.Module | None) -> bool:
    """Whether an optional submodule is absent (``None`` or ``nn.Identity``).

    Example:
        >>> is_identity(nn.Identity()), is_identity(None), is_identity(nn.ReLU())
        (True, True, False)
    """
    return module is None or isinstance(module, nn.Identity)


def activation_name(act: nn.Module) -> str | None:
    """The HookedViT ``act_fn`` an activation module computes, or ``None`` if unsupported.

    torch's modules by type; timm's and open_clip's own (``GELU``, ``GELUTanh``, ``QuickGELU``,
    ``Swish``) by class name, since they are plain modules of those libraries.

    Example:
        >>> activation_name(nn.GELU(approximate="tanh")), activation_name(nn.Sigmoid())
        ('gelu_tanh', None)
    """
    kind = type(act).__name__
    if isinstance(act, nn.GELU):
        return {"none": "gelu", "tanh": "gelu_tanh"}.get(act.approximate)
    if kind == "GELU":
        return "gelu"
    if kind == "GELUTanh":
        return "gelu_tanh"
    if kind == "QuickGELU":
        return "quick_gelu"
    if isinstance(act, nn.SiLU) or kind == "Swish":
        return "silu"
    if isinstance(act, nn.ReLU):
        return "relu"
    return None


def bias_or_zeros(bias: Tensor | None, size: int, like: Tensor) -> Tensor:
    """``bias`` itself (no copy), or zeros of ``size`` with ``like``'s dtype and device: HookedViT
    always stores a bias.

    Example:
        >>> bias_or_zeros(None, 3, torch.ones(2, dtype=torch.float64))
        tensor([0., 0., 0.], dtype=torch.float64)
    """
    if bias is not None:
        return bias
    return torch.zeros(size, dtype=like.dtype, device=like.device)


def linear_bias(linear: nn.Linear) -> Tensor:
    """A Linear layer's bias, or zeros where it has none (no copy).

    Example:
        >>> linear_bias(nn.Linear(2, 3, bias=False))
        tensor([0., 0., 0.])
    """
    return bias_or_zeros(linear.bias, linear.weight.shape[0], linear.weight)


def fold_layer_scale(weight: Tensor, bias: Tensor, gamma: Tensor | None) -> tuple[Tensor, Tensor]:
    """Fold a layer scale into the linear map feeding it: ``gamma * (x W^T + b)`` becomes one
    map ``(W * gamma[:, None], b * gamma)``. Without ``gamma`` the tensors themselves come back
    (no copy, so a conversion that shares storage still does).

    Example:
        >>> w, b = fold_layer_scale(torch.ones(2, 3), torch.ones(2), torch.tensor([2.0, 3.0]))
        >>> w[:, 0], b
        (tensor([2., 3.]), tensor([2., 3.]))
    """
    if gamma is None:
        return weight, bias
    gamma = gamma.detach()
    return weight * gamma[:, None], bias * gamma
