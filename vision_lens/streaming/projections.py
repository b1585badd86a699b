"""Per-head and per-token direct effects of a batch, with the weights folded once per pass.

:meth:`~vision_lens.ActivationCache.decompose_heads` and
:meth:`~vision_lens.ActivationCache.decompose_tokens` rebuild each head's output matrix through
the readout on every call and produce ``d_embed``-wide terms, which a pass with ``directions``
then projects. Over a dataset the weights do not change, so :class:`FoldedProjection` folds them
once (in float64, then cast to the compute dtype) with the readout's static maps and the
directions:

    F_l[g, h] = W_O^{l,h} (centred over d_model in centre mode) @ M_g [@ M_out_g] [@ D^T]

``[channel, head, d_head, out]`` (``out = k`` with directions ``D [k, d_embed]``, else
``d_embed``; a readout with a second factor ``M_out`` keeps it apart unless directions fold into
it). Per batch only the readout's per-image weights ``w`` (pooling weight over the frozen norm
scale) change, and with the pattern rows ``A`` and the values ``v`` of each layer:

    R[b, g, h, i] = sum_q w[b, g, q] A[b, h, q, i]
    heads[b, l, h] = sum_g (sum_i R[b, g, h, i] v[b, i, h]) @ F_l[g, h]
    tokens[b, i]   = sum_l sum_{g, h} R[b, g, h, i] v[b, i, h] @ F_l[g, h]

``O(pos * heads * d_head * k)`` per image and layer instead of ``O(pos * heads * d_model *
d_embed)`` plus a projection. In split mode each head (token) also carries its share of the
layer's ``b_O`` and of the norm's mean and the biases, as in the cache's methods. The results
equal those methods' (projected on ``D``) to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from vision_lens.cache import ActivationCache
    from vision_lens.hooked_vit import HookedViT
    from vision_lens.readout import LinearReadout

__all__ = ["BatchTerms", "FoldedProjection"]

# Weighted values ([batch, pos, layer, channel, head, d_head]) held at once per chunk of layers.
_CHUNK_BYTES = 64 * 2**20


@dataclass
class BatchTerms:
    """What :meth:`FoldedProjection.terms` gives for one batch (``None``: not asked for).

    Attributes:
        heads: ``[batch, layer, head, out]`` (projected on the directions when there are any).
        heads_full: ``[batch, layer, head, d_embed]`` (never projected: for head moments).
        tokens: ``[batch, pos, out]``.
    """

    heads: Tensor | None = None
    heads_full: Tensor | None = None
    tokens: Tensor | None = None


@dataclass
class _Fold:
    left: list[Tensor]  # per layer [channel, head, d_head, out or K]
    right: Tensor | None  # [channel, K, out] when the readout keeps a second factor
    flat: list[Tensor]  # per layer left[l] flattened to [channel * head * d_head, out or K]
    chunks: dict[tuple, Tensor] = field(default_factory=dict)  # concatenations per layer range


class FoldedProjection:
    """Head and token terms of decomposition caches of one model, its weights folded once.

    Args:
        model: The model (its weights must not change while this object is used).
        directions: ``[k, d_embed]`` to project on, or ``None``.
        ln_mode: ``"center"`` or ``"split"``, as in the cache's methods.

    Example:
        >>> import torch, vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> D = torch.randn(3, model.cfg.d_embed)
        >>> _, cache = model.run_with_decomposition_cache(torch.randn(2, 3, 16, 16))
        >>> terms = FoldedProjection(model, D, "center").terms(cache, heads=True, tokens=True)
        >>> torch.allclose(terms.heads, cache.decompose_heads() @ D.T, atol=1e-5)
        True
        >>> torch.allclose(terms.tokens, cache.decompose_tokens() @ D.T, atol=1e-5)
        True
    """

    def __init__(self, model: HookedViT, directions: Tensor | None, ln_mode: str):
        if ln_mode not in ("center", "split"):
            raise ValueError(f"ln_mode must be 'center' or 'split', got {ln_mode!r}.")
        self.model = model
        self.directions = directions
        self.ln_mode = ln_mode
        self._folds: dict[bool, _Fold] = {}
        self._directions_cast: Tensor | None = None

    # ------------------------------------------------------------------ folding (once)
    def _fold(self, lin: LinearReadout, projected: bool) -> _Fold:
        fold = self._folds.get(projected)
        if fold is not None:
            return fold
        # Folded in float64 on the CPU (any accelerator lacking float64 included), then cast.
        to = {"device": "cpu", "dtype": torch.float64}
        back = {"device": lin.M.device, "dtype": lin.M.dtype}
        M = lin.M.detach().to(**to)  # [channel, d_model, K]
        right = None if lin.M_out is None else lin.M_out.detach().to(**to)  # [channel, K, e]
        D = self.directions.detach().to(**to).T if projected else None  # [d_embed, k]
        if right is not None and D is not None:
            right = right @ D
        elif D is not None:
            M = M @ D
        if right is not None and right.shape[1] >= right.shape[2]:
            M, right = M @ right, None  # folding the second factor in makes nothing wider
        left, flat = [], []
        for block in self.model.blocks:
            W_O = block.attn.W_O.detach().to(**to)  # [head, d_head, d_model]
            if self.ln_mode == "center" and lin.centers:
                W_O = W_O - W_O.mean(-1, keepdim=True)
            F = torch.einsum("hed,gdk->ghek", W_O, M).to(**back).contiguous()
            left.append(F)
            flat.append(F.flatten(0, 2))
        cast = None if right is None else right.to(**back).contiguous()
        fold = self._folds[projected] = _Fold(left, cast, flat)
        return fold

    def _project(self, x: Tensor) -> Tensor:
        if self._directions_cast is None:
            self._directions_cast = self.directions.detach().to(x).T.contiguous()
        return x @ self._directions_cast

    # ------------------------------------------------------------------ per batch
    def _split_constants(self, lin: LinearReadout, batch: int) -> list[Tensor]:
        """Split mode: per layer, the ``[batch, d_embed]`` term of ``b_O`` plus the layer's share
        of the norm's mean and the biases (the cache's ``_head_constant`` before dividing)."""
        share = 1.0 / (2 * self.model.cfg.n_layers + 1)
        n_query = lin.w.shape[-1]
        out = []
        for block in self.model.blocks:
            b_O = block.attn.b_O.detach().to(lin.M)
            c = b_O.expand(batch, n_query, b_O.shape[-1])
            out.append(lin.map_term(c, centre=False) - share * lin.m_term + share * lin.const)
        return out

    def terms(
        self,
        cache: ActivationCache,
        *,
        heads: bool = False,
        heads_full: bool = False,
        tokens: bool = False,
    ) -> BatchTerms:
        """The head terms (projected; and ``heads_full`` unprojected) and token terms of the
        batch in ``cache`` (a :meth:`~vision_lens.HookedViT.run_with_decomposition_cache` or full
        cache of ``model``).

        Raises:
            vision_lens.StaleCacheError: The model's weights changed since the cache was made.
            vision_lens.IncompleteCacheError: The cache lacks what the decomposition reads.
        """
        lin, _ = cache.frozen_readout()
        L = self.model.cfg.n_layers
        pattern = torch.stack(
            [cache.readout_rows(f"blocks.{i}.attn.hook_pattern", pos_dim=2) for i in range(L)], 1
        )
        values = torch.stack([cache.entry(f"blocks.{i}.attn.hook_v") for i in range(L)], 2)
        return self.compute(lin, pattern, values, heads=heads, heads_full=heads_full, tokens=tokens)

    def compute(
        self,
        lin: LinearReadout,
        pattern: Tensor,
        values: Tensor,
        *,
        heads: bool = False,
        heads_full: bool = False,
        tokens: bool = False,
    ) -> BatchTerms:
        """:meth:`terms` from the readout frozen at the batch's statistics, the pattern rows
        ``[batch, layer, head, query, pos]`` and the values ``[batch, pos, layer, head, d_head]``
        of every layer (what :class:`~vision_lens.streaming.capture.BatchCapture` keeps)."""
        projected = self.directions is not None
        want = {True: heads and projected, False: heads_full or (heads and not projected)}
        folds = {p: self._fold(lin, p) for p in want if want[p]}
        token_fold = self._fold(lin, projected) if tokens else None
        batch, n_pos, n_layers, n_heads, d_head = values.shape
        n_channels = lin.w.shape[1]
        per_chunk: dict[bool, list[Tensor]] = {p: [] for p in folds}
        total = None
        # Layers in chunks of about _CHUNK_BYTES of weighted values (all layers at once for a
        # small model: a few large operations instead of many small ones).
        layer_bytes = batch * n_pos * n_channels * n_heads * d_head * values.element_size()
        step = max(1, min(n_layers, _CHUNK_BYTES // max(1, layer_bytes)))
        for lo in range(0, n_layers, step):
            hi = min(n_layers, lo + step)
            # R[b, i, l, g, h] = sum_q w[b, g, q] A[b, l, h, q, i]
            rows = torch.einsum("bgq,blhqk->bklgh", lin.w, pattern[:, lo:hi])
            v = values[:, :, lo:hi, None]  # [batch, pos, layer, 1, head, d_head]
            if token_fold is not None:
                weighted = v * rows[..., None]  # [batch, pos, layer, channel, head, d_head]
                term = self._tokens(weighted, token_fold, lo, hi)
                total = term if total is None else total.add_(term)
                z = weighted.sum(1) if folds else None
            elif folds:
                z = torch.einsum("bklgh,bklhe->blghe", rows, values[:, :, lo:hi])
            for p, fold in folds.items():
                left = self._stacked(fold, lo, hi)  # [layer, channel, head, d_head, out]
                term = torch.einsum("blghe,lghek->blghk", z, left)
                if fold.right is not None:
                    term = torch.einsum("blghk,gko->blgho", term, fold.right)
                per_chunk[p].append(term.sum(2))  # [batch, layer, head, out]
        out = BatchTerms()
        constants = self._split_constants(lin, batch) if self.ln_mode == "split" else None
        for p, chunks in per_chunk.items():
            stacked = torch.cat(chunks, dim=1)  # [batch, layer, head, out]
            if constants is not None:
                c = torch.stack(constants, dim=1)  # [batch, layer, d_embed]
                c = self._project(c) if p else c
                stacked = stacked + c[:, :, None] / n_heads
            if p or not projected:
                out.heads = stacked
            if not p:
                out.heads_full = stacked
        if total is not None:
            total = total.view(batch, n_pos, -1)
            if constants is not None:
                c = sum(constants[1:], constants[0]) / n_pos
                total = total + (self._project(c) if projected else c)[:, None]
            out.tokens = total
        if not heads_full:
            out.heads_full = None
        if not heads:
            out.heads = None
        return out

    def _stacked(self, fold: _Fold, lo: int, hi: int) -> Tensor:
        key = ("stacked", lo, hi)
        if key not in fold.chunks:
            fold.chunks[key] = torch.stack(fold.left[lo:hi]).contiguous()
        return fold.chunks[key]

    def _tokens(self, weighted: Tensor, fold: _Fold, lo: int, hi: int) -> Tensor:
        """``[batch * pos, out]``: the weighted values of layers ``lo..hi`` through the fold."""
        batch, n_pos, n_layers, n_channels = weighted.shape[:4]
        n = batch * n_pos
        if fold.right is None:  # one matrix product over (layer, channel, head, d_head)
            key = ("flat", lo, hi)
            if key not in fold.chunks:
                fold.chunks[key] = torch.cat(fold.flat[lo:hi]).contiguous()
            return weighted.reshape(n, -1) @ fold.chunks[key]
        # Each channel through its own second factor: [channel, n, layer * head * d_head].
        per_channel = weighted.reshape(n, n_layers, n_channels, -1).permute(2, 0, 1, 3)
        key = ("per_channel", lo, hi)
        if key not in fold.chunks:  # [channel, layer * head * d_head, K]
            left = torch.stack(fold.left[lo:hi], 1)  # [channel, layer, head, d_head, K]
            fold.chunks[key] = left.flatten(1, 3).contiguous()
        inner = torch.bmm(per_channel.reshape(n_channels, n, -1), fold.chunks[key])
        return torch.einsum("gnk,gko->no", inner, fold.right)
