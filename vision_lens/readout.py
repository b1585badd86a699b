"""The readout: how a ViT's output is made from its final residual stream.

Every family differs only here (and in a few block details): which positions are prefix tokens
(class, distillation, registers) and which are patches, and how the output is pooled from them.
One :class:`Readout` owns that knowledge; the forward pass, the cache and the analyses ask it,
so no code elsewhere slices ``[:, 0]`` or ``[:, 1:]`` by hand.

With the final norm's statistics frozen (and, for an attention-pooling head, its attention
pattern frozen), every readout is linear in the final residual stream ``z``:

    y = sum_g (sum_q w[g, q] * z_q) @ M_g  -  m_term  +  const  (+ a nonlinear term)

``q`` runs over the positions the readout reads (the class token; the class and distillation
tokens; every patch; every token), ``g`` over readout channels (one for pooling by token or
average; one per head of an attention-pooling head; two for DeiT's separate class and
distillation heads), ``w = A / sigma`` folds the pooling weights ``A`` (rows summing to one) with
the norm's scale, ``M_g = diag(gamma) M_raw_g`` the norm's weight with what follows (the
projection; for attention pooling ``W_V W_O`` of that head, then the projection). ``m_term``
carries the norm's mean and ``const`` its bias and every bias after it. The one nonlinear part,
the MLP of an attention-pooling head, is kept as a term of its own, read from the forward pass.
See ``docs/decomposition.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

from vision_lens.components.attention import Attention
from vision_lens.components.hooks import CheckedHookPoint, is_hooked
from vision_lens.components.layer_norm import make_norm
from vision_lens.components.mlp import MLP
from vision_lens.config import HookedViTConfig


@dataclass
class LinearReadout:
    """The readout as a linear map of the final residual stream, statistics frozen.

    Attributes:
        w: ``[batch, channel, query]`` weights of the query positions (pooling weight / scale).
        M: ``[channel, d_model, k]`` maps, the final norm's ``gamma`` folded in; ``k = d_embed``
            unless ``M_out`` is given.
        m_term: ``[batch, d_embed]``, the final norm's mean through the readout.
        const: ``[d_embed]``, the final norm's bias and every later bias through the readout.
        nonlinear: ``[batch, d_embed]``, the attention-pooling head's MLP term, or ``None``.
        centers: Whether the final norm subtracts the mean (LayerNorm) or not (RMSNorm).
        M_out: ``[channel, k, d_embed]`` second factor of each channel's map (the attention
            pool's ``W_O^g P``, with ``k = d_head``), or ``None``: channel ``g`` maps by
            ``M[g] @ M_out[g]``.
    """

    w: Tensor
    M: Tensor
    m_term: Tensor
    const: Tensor
    nonlinear: Tensor | None
    centers: bool
    M_out: Tensor | None = None

    def map_term(self, c: Tensor, centre: bool) -> Tensor:
        """``sum_g (sum_q w[g, q] c_q) @ M_g`` ``[batch, d_embed]`` for a residual-stream term
        ``c`` ``[batch, query, d_model]``, centred over ``d_model`` first if ``centre`` (and the
        norm centres)."""
        if centre and self.centers:
            c = c - c.mean(-1, keepdim=True)
        pooled = torch.einsum("bgq,bqd->bgd", self.w, c)
        return self.to_output(torch.einsum("bgd,gdk->bgk", pooled, self.M))

    def to_output(self, x: Tensor) -> Tensor:
        """Channel-space values ``[..., channel, k]`` to the output ``[..., d_embed]`` (summed
        over channels)."""
        if self.M_out is None:
            return x.sum(-2)
        return torch.einsum("...gk,gke->...e", x, self.M_out)


class Readout(nn.Module):
    """Positions of a ViT's token sequence and the pooling that makes its output.

    Kinds (``cfg.readout``):
        ``"cls"``: the class token. ``"avg"``: mean over the patch tokens (timm ``avg``).
        ``"cls_dist"``: class and distillation tokens averaged (DeiT distilled; with
        ``cfg.dist_head`` each through its own projection). ``"map"``: attention pooling, a
        learned query ``latent`` attending over every token, then ``p + mlp(ln(p))`` (SigLIP).

    The final norm (``ln_final`` of the model) is applied to every token before pooling, or to
    the pooled vector when ``cfg.final_ln_after_pool``.

    Hook points (``"map"`` only): ``readout.attn.*`` as in a block's attention with one query
    position (``readout.attn.hook_pattern`` is ``[batch, head, 1, pos]``),
    ``readout.hook_attn_out`` ``[batch, d_model]`` and ``readout.hook_mlp_out``
    ``[batch, d_model]``; ``readout.ln.*`` and ``readout.mlp.*``.

    Example:
        >>> cfg = HookedViTConfig.tiny(n_layers=1, d_model=16, n_heads=2, d_mlp=32, d_embed=8,
        ...     n_registers=1, readout='avg')
        >>> readout = Readout(cfg)
        >>> readout.prefix_positions, readout.patch_positions, readout.query_positions
        (slice(0, 2, None), slice(2, 6, None), slice(2, 6, None))
        >>> readout.position_names()
        ['cls', 'reg0', 'patch0', 'patch1', 'patch2', 'patch3']
    """

    def __init__(self, cfg: HookedViTConfig):
        super().__init__()
        self.kind = cfg.readout
        self.n_prefix = cfg.n_prefix
        self.n_pos = cfg.n_pos
        self.after_pool = cfg.final_ln_after_pool
        self._names = (
            ["cls"] * cfg.class_token
            + ["dist"] * cfg.dist_token
            + [f"reg{i}" for i in range(cfg.n_registers)]
            + [f"patch{i}" for i in range(cfg.n_patches)]
        )
        if self.kind == "map":
            self.latent = nn.Parameter(torch.empty(cfg.d_model, dtype=cfg.dtype))
            self.attn = Attention(cfg, n_heads=cfg.readout_n_heads, qk_norm=False, rope=False)
            self.ln = make_norm(cfg.norm_type, cfg.d_model, cfg.eps, cfg.dtype)
            self.mlp = MLP(
                cfg, d_mlp=cfg.readout_d_mlp, act_fn=cfg.readout_act_fn, gated=False, norm=False
            )
            self.hook_attn_out = CheckedHookPoint()  # [batch, d_model]
            self.hook_mlp_out = CheckedHookPoint()  # [batch, d_model]
        self.dist_head = cfg.dist_head
        if cfg.dist_head:
            self.W_dist = nn.Parameter(torch.empty(cfg.d_model, cfg.d_embed, dtype=cfg.dtype))
            self.b_dist = (
                nn.Parameter(torch.zeros(cfg.d_embed, dtype=cfg.dtype)) if cfg.proj_bias else None
            )

    # ------------------------------------------------------------------ positions
    @property
    def prefix_positions(self) -> slice:
        """Positions of the prefix tokens (class, distillation, registers)."""
        return slice(0, self.n_prefix)

    @property
    def patch_positions(self) -> slice:
        """Positions of the patch tokens, row-major over the patch grid."""
        return slice(self.n_prefix, self.n_pos)

    @property
    def query_positions(self) -> slice:
        """Positions whose final residual stream the readout reads."""
        if self.kind == "cls":
            return slice(0, 1)
        if self.kind == "cls_dist":
            return slice(0, 2)
        if self.kind == "avg":
            return self.patch_positions
        return slice(0, self.n_pos)

    @property
    def n_query(self) -> int:
        """Number of positions the readout reads."""
        q = self.query_positions
        return q.stop - q.start

    def position_names(self) -> list[str]:
        """A name per position: ``cls``, ``dist``, ``reg{i}``, ``patch{i}``."""
        return list(self._names)

    @property
    def n_channels(self) -> int:
        """Readout channels of the linear form (heads of an attention pool, else 1 or 2)."""
        if self.kind == "map":
            return self.attn.n_heads
        return 2 if self.dist_head else 1

    # ------------------------------------------------------------------ forward
    def pool(
        self, resid: Float[Tensor, "batch pos d_model"], ln_final: nn.Module
    ) -> Float[Tensor, "batch d_model"] | Float[Tensor, "batch 2 d_model"]:
        """The pooled representation, before the projection (``hook_pooled``).

        ``[batch, d_model]``, or ``[batch, 2, d_model]`` (class, distillation) when each has its
        own projection.
        """
        rows = self.query_positions
        if self.after_pool:
            return ln_final(self._average(resid[:, rows]))
        # The final norm acts per token; normalising only the rows read is the same unless
        # someone watches the norm's hooks, who then sees every token.
        if is_hooked(ln_final.hook_scale, ln_final.hook_normalized):
            normed = ln_final(resid)[:, rows]
        else:
            normed = ln_final(resid[:, rows])
        if self.kind == "map":
            return self._attention_pool(normed)
        if self.dist_head:
            return normed
        return self._average(normed)

    def _average(self, rows: Tensor) -> Tensor:
        return rows[:, 0] if rows.shape[1] == 1 else rows.mean(1)

    def _attention_pool(self, normed: Tensor) -> Tensor:
        query = self.latent.expand(normed.shape[0], 1, -1)
        pooled = self.hook_attn_out(self.attn(normed, query=query)[:, 0])
        return pooled + self.hook_mlp_out(self.mlp(self.ln(pooled)))

    def project(
        self, pooled: Tensor, W_proj: Tensor, b_proj: Tensor | None
    ) -> Float[Tensor, "batch d_embed"]:
        """The output from :meth:`pool`'s result and the model's projection."""
        if not self.dist_head:
            out = pooled @ W_proj
            return out if b_proj is None else out + b_proj
        out = pooled[:, 0] @ W_proj + pooled[:, 1] @ self.W_dist
        for bias in (b_proj, self.b_dist):
            if bias is not None:
                out = out + bias
        return out / 2

    # ------------------------------------------------------------------ decomposition
    def pooling_weights(
        self, like: Tensor, pool_pattern: Tensor | None = None
    ) -> Float[Tensor, "batch channel query"]:
        """Weights ``A[g, q]`` of the query positions in each channel (rows sum to one).

        Args:
            like: ``[batch, query, d]``, for shape, device and dtype.
            pool_pattern: ``readout.attn.hook_pattern`` ``[batch, head, 1, pos]`` (``"map"``).
        """
        batch, n_query = like.shape[:2]
        if self.kind == "map":
            if pool_pattern is None:
                raise ValueError("an attention-pooling readout needs its pattern")
            return pool_pattern[:, :, 0, :]
        if self.dist_head:
            eye = torch.eye(2, dtype=like.dtype, device=like.device)
            return eye.expand(batch, 2, 2)
        return like.new_full((batch, 1, n_query), 1.0 / n_query)

    def linear(
        self,
        z: Float[Tensor, "batch query d_model"],
        scale: Tensor,
        ln_final: nn.Module,
        W_proj: Tensor,
        b_proj: Tensor | None,
        pool_pattern: Tensor | None = None,
        mlp_out: Tensor | None = None,
    ) -> LinearReadout:
        """The readout as a :class:`LinearReadout`, with the forward pass's statistics.

        Args:
            z: Final residual stream at :attr:`query_positions`.
            scale: ``ln_final.hook_scale``: ``[batch, query, 1]`` (norm before pooling) or
                ``[batch, 1]`` (after pooling).
            ln_final: The model's final norm.
            W_proj: ``[d_model, d_embed]`` projection; ``b_proj`` its bias or ``None``.
            pool_pattern: ``readout.attn.hook_pattern`` (``"map"`` only).
            mlp_out: ``readout.hook_mlp_out`` (``"map"`` only).
        """
        to = {"device": z.device, "dtype": z.dtype}
        A = self.pooling_weights(z, pool_pattern).to(**to)
        centers = bool(ln_final.centers)
        if self.after_pool:
            pooled = torch.einsum("bgq,bqd->bgd", A, z)[:, 0]
            sigma = scale.reshape(z.shape[0], 1).expand(-1, z.shape[1])
            mu = pooled.mean(-1, keepdim=True).expand(-1, z.shape[1])
        else:
            sigma = scale.reshape(z.shape[0], z.shape[1])
            mu = z.mean(-1)
        if not centers:
            mu = torch.zeros_like(mu)
        w = A / sigma[:, None, :]
        gamma = ln_final.w.detach().to(**to)
        beta = ln_final.bias
        P = W_proj.detach().to(**to)
        c0 = torch.zeros(P.shape[1], **to) if b_proj is None else b_proj.detach().to(**to)
        nonlinear, M_out = None, None
        if self.kind == "map":
            # Each pooling head maps d_model -> d_head -> d_embed: keep the two factors
            # (W_V^g and W_O^g P) rather than their d_model x d_embed product, which would cost
            # n_heads times a full projection to build and to apply.
            attn = self.attn
            W_V, W_O = attn.W_V.detach().to(**to), attn.W_O.detach().to(**to)
            M_raw = W_V  # [head, d_model, d_head]
            M_out = W_O @ P  # [head, d_head, d_embed]
            b_V = attn.b_V.detach().to(**to)
            c0 = c0 + (torch.einsum("he,hef->f", b_V, W_O) + attn.b_O.detach().to(**to)) @ P
            nonlinear = mlp_out.to(**to) @ P
        elif self.dist_head:
            M_raw = torch.stack([P, self.W_dist.detach().to(**to)]) / 2
            if self.b_dist is not None:
                c0 = c0 + self.b_dist.detach().to(**to)
            c0 = c0 / 2
        else:
            M_raw = P[None]
        M = gamma[None, :, None] * M_raw
        m = (w * mu[:, None, :]).sum(-1)  # [batch, channel]
        column_sums = M.sum(1)  # [channel, k]: ones @ M_g
        beta_part = None
        if beta is not None:
            beta_part = torch.einsum("d,gdk->gk", beta.detach().to(**to), M_raw)
        if M_out is not None:
            column_sums = torch.einsum("gk,gke->ge", column_sums, M_out)
            if beta_part is not None:
                beta_part = torch.einsum("gk,gke->ge", beta_part, M_out)
        m_term = torch.einsum("bg,ge->be", m, column_sums)
        const = c0 if beta_part is None else c0 + beta_part.sum(0)
        return LinearReadout(w, M, m_term, const, nonlinear, centers, M_out)
