"""The MLP sublayer of a ViT block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from vision_lens.components.hooks import CheckedHookPoint
from vision_lens.components.layer_norm import make_norm
from vision_lens.config import HookedViTConfig


def quick_gelu(x: Tensor) -> Tensor:
    """OpenAI CLIP's sigmoid approximation of GELU: ``x * sigmoid(1.702 x)``."""
    return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": quick_gelu,
    "silu": F.silu,
    "relu": F.relu,
}


class MLP(nn.Module):
    """Two linear maps with an activation between them, or a gated (SwiGLU-style) MLP.

    Plain: ``post = act(x W_in + b_in)``; gated (``cfg.gated_mlp``):
    ``post = act(x W_gate + b_gate) * (x W_in + b_in)``; then ``out = post W_out + b_out``, or
    with ``cfg.mlp_norm`` (EVA02's ``scale_mlp``) ``out = ln(post) W_out + b_out``, ``ln`` a norm
    over ``d_mlp`` (submodule ``ln``, with its own ``hook_scale``/``hook_normalized``). The MLP
    stays one term of the residual-stream decomposition either way.

    Weights are stored in torch's ``[out, in]`` layout (``in_weight``, ``out_weight``) so the
    forward pass is two fused ``F.linear`` calls; ``W_in`` ``[d_model, d_mlp]`` and ``W_out``
    ``[d_mlp, d_model]`` are TransformerLens-shaped views of them. Layer scale, when the source
    model has it, is already folded into ``out_weight`` and ``b_out``.

    Hook points:
        hook_pre: ``[batch, pos, d_mlp]``, pre-activation (of the gate, for a gated MLP).
        hook_pre_linear: ``[batch, pos, d_mlp]``, the linear branch (gated MLP only).
        hook_post: ``[batch, pos, d_mlp]``, post-activation (times the linear branch if gated),
            before ``ln`` when there is one.

    Example:
        >>> cfg = HookedViTConfig.tiny(n_layers=1, d_model=16, n_heads=2, d_mlp=32, d_embed=8)
        >>> MLP(cfg).W_in.shape
        torch.Size([16, 32])
    """

    def __init__(
        self,
        cfg: HookedViTConfig,
        d_mlp: int | None = None,
        act_fn: str | None = None,
        gated: bool | None = None,
        norm: bool | None = None,
    ):
        """Build the weights (uninitialised) and hook points.

        Args:
            cfg: The tower's config.
            d_mlp: Hidden width, for an MLP other than the blocks' (an attention-pooling head's).
            act_fn: Activation (default: ``cfg.act_fn``).
            gated: Gated MLP (default: ``cfg.gated_mlp``).
            norm: Normalise the hidden layer (default: ``cfg.mlp_norm``; an attention-pooling
                head passes ``False``).
        """
        super().__init__()
        if norm is None:
            norm = cfg.mlp_norm
        d_mlp = d_mlp or cfg.d_mlp
        self.gated = cfg.gated_mlp if gated is None else gated
        self.act = ACTIVATIONS[act_fn or cfg.act_fn]
        self.in_weight = nn.Parameter(torch.empty(d_mlp, cfg.d_model, dtype=cfg.dtype))
        self.b_in = nn.Parameter(torch.zeros(d_mlp, dtype=cfg.dtype))
        if self.gated:
            self.gate_weight = nn.Parameter(torch.empty(d_mlp, cfg.d_model, dtype=cfg.dtype))
            self.b_gate = nn.Parameter(torch.zeros(d_mlp, dtype=cfg.dtype))
            self.hook_pre_linear = CheckedHookPoint()  # [batch, pos, d_mlp]
        self.out_weight = nn.Parameter(torch.empty(cfg.d_model, d_mlp, dtype=cfg.dtype))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model, dtype=cfg.dtype))
        self.hook_pre = CheckedHookPoint()  # [batch, pos, d_mlp]
        self.hook_post = CheckedHookPoint()  # [batch, pos, d_mlp]
        self.ln = make_norm(cfg.norm_type, d_mlp, cfg.eps, cfg.dtype) if norm else None

    @property
    def W_in(self) -> Float[Tensor, "d_model d_mlp"]:
        return self.in_weight.T

    @property
    def W_out(self) -> Float[Tensor, "d_mlp d_model"]:
        return self.out_weight.T

    @property
    def W_gate(self) -> Float[Tensor, "d_model d_mlp"]:
        """Gate weights of a gated MLP."""
        return self.gate_weight.T

    def forward(self, x: Float[Tensor, "batch pos d_model"]) -> Float[Tensor, "batch pos d_model"]:
        if self.gated:
            pre = self.hook_pre(F.linear(x, self.gate_weight, self.b_gate))
            linear = self.hook_pre_linear(F.linear(x, self.in_weight, self.b_in))
            post = self.hook_post(self.act(pre) * linear)
        else:
            pre = self.hook_pre(F.linear(x, self.in_weight, self.b_in))
            post = self.hook_post(self.act(pre))
        if self.ln is not None:
            post = self.ln(post)
        return F.linear(post, self.out_weight, self.b_out)
