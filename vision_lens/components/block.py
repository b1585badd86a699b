"""One pre-LN transformer block of a ViT."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor, nn

from vision_lens.components.attention import Attention
from vision_lens.components.hooks import CheckedHookPoint
from vision_lens.components.layer_norm import make_norm
from vision_lens.components.mlp import MLP
from vision_lens.config import HookedViTConfig


class TransformerBlock(nn.Module):
    """A pre-norm block: attention then MLP, each reading a norm of the residual stream.

    ``resid_mid = resid_pre + attn(ln1(resid_pre))`` and
    ``resid_post = resid_mid + mlp(ln2(resid_mid))``.

    Hook points (all ``[batch, pos, d_model]``): ``hook_resid_pre``, ``hook_attn_out``,
    ``hook_resid_mid``, ``hook_mlp_out``, ``hook_resid_post``; the submodules ``ln1``, ``attn``,
    ``ln2`` and ``mlp`` carry their own.

    Example:
        >>> import torch
        >>> cfg = HookedViTConfig.tiny(n_layers=1, d_model=16, n_heads=2, d_mlp=32, d_embed=8)
        >>> block = TransformerBlock(cfg)
        >>> _ = [p.data.normal_() for p in block.parameters()]
        >>> block(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, cfg: HookedViTConfig):
        super().__init__()
        self.ln1 = make_norm(cfg.norm_type, cfg.d_model, cfg.eps, cfg.dtype)
        self.attn = Attention(cfg)
        self.ln2 = make_norm(cfg.norm_type, cfg.d_model, cfg.eps, cfg.dtype)
        self.mlp = MLP(cfg)
        self.hook_resid_pre = CheckedHookPoint()  # [batch, pos, d_model]
        self.hook_attn_out = CheckedHookPoint()  # [batch, pos, d_model]
        self.hook_resid_mid = CheckedHookPoint()  # [batch, pos, d_model]
        self.hook_mlp_out = CheckedHookPoint()  # [batch, pos, d_model]
        self.hook_resid_post = CheckedHookPoint()  # [batch, pos, d_model]

    def forward(
        self, resid_pre: Float[Tensor, "batch pos d_model"]
    ) -> Float[Tensor, "batch pos d_model"]:
        resid_pre = self.hook_resid_pre(resid_pre)
        attn_out = self.hook_attn_out(self.attn(self.ln1(resid_pre)))
        resid_mid = self.hook_resid_mid(resid_pre + attn_out)
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid_mid)))
        return self.hook_resid_post(resid_mid + mlp_out)
