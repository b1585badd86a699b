"""Multi-head self-attention with per-head hook points."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from vision_lens.components.hooks import CheckedHookPoint, is_hooked, wants_grad
from vision_lens.components.layer_norm import make_norm
from vision_lens.config import HookedViTConfig


class Attention(nn.Module):
    """Bidirectional multi-head attention over all tokens (self-attention in the blocks; with
    ``query=`` given, cross-attention from learned queries, as in an attention-pooling head).

    Weights are stored in the layout torch's fused kernels take: ``qkv_weight``
    ``[3, head, d_head, d_model]`` (viewed as one ``[3 * d_model, d_model]`` matrix, exactly
    open_clip's ``in_proj_weight``), ``qkv_bias`` ``[3, head, d_head]`` and ``out_weight``
    ``[d_model, head * d_head]``. The TransformerLens-shaped ``W_Q, W_K, W_V``
    ``[head, d_model, d_head]``, ``b_Q, b_K, b_V`` ``[head, d_head]`` and ``W_O``
    ``[head, d_head, d_model]`` are views of those parameters, so editing a view in place edits
    the model. Layer scale is folded into ``out_weight`` and ``b_O``. With ``qk_norm`` the
    queries and keys of each head are normalised over ``d_head`` (submodules ``q_norm`` and
    ``k_norm``, each with its own ``hook_scale``/``hook_normalized``) before the dot product.

    With ``cfg.rope`` set, the (normalised) queries and keys are then rotated per position:
    ``q * cos + rotate(q) * sin`` with the tables ``rope_cos``/``rope_sin``
    ``[1 or head, pos, d_head]`` (persistent buffers holding the source model's own angles;
    ``cos = 1, sin = 0`` for tokens the source does not rotate, so the rotation is exactly the
    identity there). ``rotate`` maps each channel pair ``(a, b)`` to ``(-b, a)``: pairs are
    adjacent channels for ``"interleaved"``, channels ``i`` and ``i + d_head / 2`` for
    ``"half"``. Only the queries and keys change, so the values, the pattern and everything
    after them (and the per-head decomposition) are as without RoPE.

    Hook points:
        hook_q, hook_k, hook_v: ``[batch, pos, head, d_head]``, the projections as computed
            (queries and keys before qk-norm and before any rotation).
        hook_rot_q, hook_rot_k: ``[batch, pos, head, d_head]`` (RoPE only, TransformerLens'
            names), the queries and keys after qk-norm and rotation: what the scores use.
        hook_attn_scores: ``[batch, head, query_pos, key_pos]``, scaled by ``1/sqrt(d_head)``.
        hook_pattern: ``[batch, head, query_pos, key_pos]``, softmax of the scores.
        hook_z: ``[batch, pos, head, d_head]``, pattern-weighted values.
        hook_result: ``[batch, pos, head, d_model]``, each head's output;
            ``hook_result.sum(head) + b_O`` is the sublayer output.

    With nothing attached to these hook points, one fused scaled-dot-product-attention kernel
    runs. When any is hooked, the explicit computation runs; the ``[batch, pos, head, d_model]``
    per-head result is built only when ``hook_result`` itself is hooked.

    Example:
        >>> cfg = HookedViTConfig.tiny(n_layers=1, d_model=16, n_heads=2, d_mlp=32, d_embed=8)
        >>> attn = Attention(cfg)
        >>> attn.W_Q.shape, attn.W_O.shape
        (torch.Size([2, 16, 8]), torch.Size([2, 8, 16]))
        >>> rope_cfg = HookedViTConfig.tiny(n_layers=1, d_model=16, n_heads=2, d_mlp=32, d_embed=8,
        ...     rope='interleaved')
        >>> Attention(rope_cfg).rope_cos.shape  # [1 (shared by the heads), n_pos, d_head]
        torch.Size([1, 5, 8])
    """

    def __init__(
        self,
        cfg: HookedViTConfig,
        n_heads: int | None = None,
        qk_norm: bool | None = None,
        rope: bool | None = None,
    ):
        """Build the weights (uninitialised) and hook points.

        Args:
            cfg: The tower's config.
            n_heads: Head count, for an attention other than the blocks' (an attention-pooling
                head); ``d_head`` is then ``d_model // n_heads``.
            qk_norm: Normalise queries and keys (default: ``cfg.qk_norm``).
            rope: Rotate queries and keys by ``cfg.rope`` (default: whether ``cfg.rope`` is
                set; an attention-pooling head passes ``False``: the tables are per block).
        """
        super().__init__()
        self.n_heads = n_heads or cfg.n_heads
        self.d_head = cfg.d_head if n_heads is None else cfg.d_model // n_heads
        d_inner = self.n_heads * self.d_head
        shape = (self.n_heads, self.d_head)
        self.qkv_weight = nn.Parameter(torch.empty(3, *shape, cfg.d_model, dtype=cfg.dtype))
        self.qkv_bias = nn.Parameter(torch.zeros(3, *shape, dtype=cfg.dtype))
        self.out_weight = nn.Parameter(torch.empty(cfg.d_model, d_inner, dtype=cfg.dtype))
        self.b_O = nn.Parameter(torch.zeros(cfg.d_model, dtype=cfg.dtype))
        self.qk_norm = cfg.qk_norm if qk_norm is None else qk_norm
        if self.qk_norm:
            self.q_norm = make_norm(cfg.norm_type, self.d_head, cfg.eps, cfg.dtype)
            self.k_norm = make_norm(cfg.norm_type, self.d_head, cfg.eps, cfg.dtype)
        if rope is None:
            rope = cfg.rope is not None
        if rope and cfg.rope is None:
            raise ValueError("rope=True needs cfg.rope (the channel-pair layout) to be set.")
        self.rope = cfg.rope if rope else None
        if self.rope is not None:
            # Buffers, not parameters: the angles are fixed data of the source model (even
            # timm's learned per-head frequencies are fixed at inference), and the identity
            # rotation they start at keeps a config-only model valid.
            table = (self.n_heads if cfg.rope_per_head else 1, cfg.n_pos, self.d_head)
            self.register_buffer("rope_cos", torch.ones(table, dtype=cfg.dtype))
            self.register_buffer("rope_sin", torch.zeros(table, dtype=cfg.dtype))
            self.hook_rot_q = CheckedHookPoint()  # [batch, pos, head, d_head]
            self.hook_rot_k = CheckedHookPoint()  # [batch, pos, head, d_head]

        self.hook_q = CheckedHookPoint()  # [batch, pos, head, d_head]
        self.hook_k = CheckedHookPoint()  # [batch, pos, head, d_head]
        self.hook_v = CheckedHookPoint()  # [batch, pos, head, d_head]
        self.hook_attn_scores = CheckedHookPoint()  # [batch, head, query_pos, key_pos]
        self.hook_pattern = CheckedHookPoint()  # [batch, head, query_pos, key_pos]
        self.hook_z = CheckedHookPoint()  # [batch, pos, head, d_head]
        self.hook_result = CheckedHookPoint()  # [batch, pos, head, d_model]

    # TransformerLens-shaped views of the stored weights.
    @property
    def W_Q(self) -> Float[Tensor, "head d_model d_head"]:
        return self.qkv_weight[0].transpose(-1, -2)

    @property
    def W_K(self) -> Float[Tensor, "head d_model d_head"]:
        return self.qkv_weight[1].transpose(-1, -2)

    @property
    def W_V(self) -> Float[Tensor, "head d_model d_head"]:
        return self.qkv_weight[2].transpose(-1, -2)

    @property
    def b_Q(self) -> Float[Tensor, "head d_head"]:
        return self.qkv_bias[0]

    @property
    def b_K(self) -> Float[Tensor, "head d_head"]:
        return self.qkv_bias[1]

    @property
    def b_V(self) -> Float[Tensor, "head d_head"]:
        return self.qkv_bias[2]

    @property
    def W_O(self) -> Float[Tensor, "head d_head d_model"]:
        return self.out_weight.T.reshape(self.n_heads, self.d_head, -1)

    def _hook_points(self) -> tuple[HookPoint, ...]:
        norms = (
            (self.q_norm.hook_scale, self.q_norm.hook_normalized)
            + (self.k_norm.hook_scale, self.k_norm.hook_normalized)
            if self.qk_norm
            else ()
        )
        rot = (self.hook_rot_q, self.hook_rot_k) if self.rope is not None else ()
        return (
            norms
            + rot
            + (
                self.hook_q,
                self.hook_k,
                self.hook_v,
                self.hook_attn_scores,
                self.hook_pattern,
                self.hook_z,
                self.hook_result,
            )
        )

    def _qkv(
        self, x: Tensor, query: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:  # each [batch, pos, head, d_head]
        batch, pos, _ = x.shape
        if query is None:
            qkv = F.linear(x, self.qkv_weight.flatten(0, 2), self.qkv_bias.flatten())
            return qkv.view(batch, pos, 3, self.n_heads, self.d_head).unbind(2)
        q = F.linear(query, self.qkv_weight[0].flatten(0, 1), self.qkv_bias[0].flatten())
        kv = F.linear(x, self.qkv_weight[1:].flatten(0, 2), self.qkv_bias[1:].flatten())
        k, v = kv.view(batch, pos, 2, self.n_heads, self.d_head).unbind(2)
        return q.view(batch, query.shape[1], self.n_heads, self.d_head), k, v

    def _rotate(self, x: Tensor, head_dim: int) -> Tensor:
        """Apply the RoPE tables to queries or keys whose head axis is ``head_dim`` (1 or 2)."""
        cos, sin = self.rope_cos, self.rope_sin  # [1 or head, pos, d_head]
        if head_dim == 2:  # x is [batch, pos, head, d_head]
            cos, sin = cos.transpose(0, 1), sin.transpose(0, 1)
        if self.rope == "half":
            first, second = x.chunk(2, dim=-1)
            turned = torch.cat([-second, first], dim=-1)
        else:
            turned = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape)
        # Same operations in the same order as timm's apply_rot_embed, so results match bitwise.
        return x * cos + turned * sin

    def forward(
        self,
        x: Float[Tensor, "batch pos d_model"],
        query: Float[Tensor, "batch query_pos d_model"] | None = None,
    ) -> Float[Tensor, "batch query_pos d_model"]:
        """Attention output ``[batch, query_pos, d_model]``; ``query_pos = pos`` unless ``query``
        (inputs of learned queries, for attention pooling) is given."""
        if self.rope is not None and query is not None:
            raise ValueError("RoPE attention is self-attention; it takes no separate queries.")
        q, k, v = self._qkv(x, query)
        if not is_hooked(*self._hook_points()):
            if self.qk_norm:
                q, k = self.q_norm(q), self.k_norm(k)
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # each [batch, head, pos, d_head]
            if self.rope is not None:
                q, k = self._rotate(q, head_dim=1), self._rotate(k, head_dim=1)
            z = F.scaled_dot_product_attention(q, k, v)
            return F.linear(z.transpose(1, 2).flatten(2), self.out_weight, self.b_O)

        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            q = self.hook_rot_q(self._rotate(q, head_dim=2))
            k = self.hook_rot_k(self._rotate(k, head_dim=2))
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(self.d_head)
        scores = self.hook_attn_scores(scores)
        pattern = self.hook_pattern(scores.softmax(dim=-1))
        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        if not is_hooked(self.hook_result):
            return F.linear(z.flatten(2), self.out_weight, self.b_O)
        result = torch.einsum("bqhe,hed->bqhd", z, self.W_O)
        version = result._version
        hooked = self.hook_result(result)
        unchanged = hooked is result and result._version == version
        if unchanged and not wants_grad(self.hook_result, result):
            # Only observed (not changed, no gradient asked for): the output is computed exactly
            # as when nothing observes hook_result, so caching it, or deriving it from hook_z
            # later, changes no number downstream.
            return F.linear(z.flatten(2), self.out_weight, self.b_O)
        return hooked.sum(dim=2) + self.b_O
