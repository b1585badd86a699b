"""The vision ActivationCache: TransformerLens' cache plus exact direct-effect decompositions.

The math (``docs/decomposition.md``, Gandelsman et al. 2024 §3 and A.1). The readout
(``vision_lens.readout``) states the output as a linear function of the final residual
stream ``z`` at the positions ``q`` it reads, once the final norm's mean and scale (and an
attention-pooling head's pattern) are frozen from the forward pass:

    y = sum_g (sum_q w[g, q] z_q) @ M_g - m_term + const (+ the pooling head's MLP term),
    z_q = e_q + sum_l a_{l,q} + sum_l f_{l,q},

``e`` the embedding term (``blocks.0.hook_resid_pre``), ``a_l`` attention and ``f_l`` MLP outputs.
For a class-token readout ``q`` is the class token alone, ``w = 1 / sigma`` and
``M = diag(gamma) P``: the paper's formula. ``y`` is linear in the terms. The attention term splits
over heads ``h`` and source tokens ``i`` through each query's pattern row:

    a_{l,q} = sum_{h,i} A^{l,h}[q, i] * v_i^{l,h} @ W_O^{l,h}  +  b_O^l

where ``v`` includes the value bias ``b_V`` (so ``b_V``'s effect is shared among the tokens in
proportion to attention, exactly as the value vectors are) and layer scale is already folded into
``W_O`` and ``b_O``. A readout position attending to itself is that position's token term;
summed over the readout's query rows the per-head weights are the effective row
``R_g[h, i] = sum_q w[g, q] A^{l,h}[q, i]``, still ``[batch, head, key]``.

Two exact treatments of ``mu`` and ``beta``:

* ``ln_mode="center"`` (TransformerLens' ``apply_ln_to_stack``): every term is centred over
  ``d_model`` before the readout's map (RMSNorm does not centre, so there nothing is);
  ``const`` (the norm's bias and later biases) is the separate ``bias`` component, and each
  layer's ``b_O`` is that layer's *attention bias share*, part of the layer's attention term but
  of no head or token.
* ``ln_mode="split"`` (the paper's code): ``m_term`` and ``const`` are split evenly over the
  ``2L + 1`` layer-level terms (embedding, L attention layers, L MLPs), share ``s = 1/(2L+1)``.
  Inside an attention layer that share and ``b_O`` are split evenly over the ``head x token``
  terms, so heads and tokens sum to their layer and the ``bias`` component and the attention
  bias shares are zero.

An attention-pooling head's MLP (SigLIP) is nonlinear in ``z``: it is the one named component
``readout_mlp`` of :meth:`ActivationCache.decompose_layers`, in both modes.

``unit_output=True`` (``normalize=`` before 0.2) divides every term by ``||y||`` so that they sum
to the unit-norm output.

Only the readout's query rows of each attention pattern are used, and the per-head output
matrix is folded with the readout's ``M_g`` once per layer
(``W_eff^h = (W_O^h - mean_d W_O^h) M_g`` in centre mode), and further with text directions when
given, so the ``[batch, layer, head, pos, d_embed]`` tensor is only built when asked for.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import ActivationCache as _TLActivationCache
from transformer_lens.utilities.slice import Slice

from vision_lens.cache_entries import LazyEntries
from vision_lens.cache_tl import TransformerLensMethods
from vision_lens.errors import IncompleteCacheError
from vision_lens.readout import LinearReadout
from vision_lens.utils.checks import check_directions, layer_indices
from vision_lens.utils.deprecation import renamed_keyword
from vision_lens.weight_record import WeightRecord

LnMode = Literal["center", "split"]
LN_MODES = ("center", "split")


class LayerTerms(NamedTuple):
    """What :meth:`ActivationCache.decompose_layers` returns (``terms, labels = ...`` unpacks it).

    Attributes:
        terms: ``[component, batch, d_embed]`` (``[component, d_embed]`` without a batch axis).
        labels: One :class:`ComponentId` per component.
    """

    terms: Float[Tensor, "component batch d_embed"]
    labels: list[ComponentId]


# "Normalise" means scaling one vector to unit norm (CLIPText.encode(normalize=True));
# unit_output divides terms by their sum's norm. normalize= was its name before 0.2.
normalize_alias = renamed_keyword("normalize", "unit_output")


@dataclass
class _Frozen:
    """Per-image quantities of the readout, frozen from the forward pass."""

    z: Tensor  # [batch, query, d_model], final residual stream at the readout's positions
    lin: LinearReadout
    norm: Tensor  # [batch], ||y||


def _fresh_first(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` of TransformerLens' cache, run after :meth:`ActivationCache.check_fresh`."""

    @functools.wraps(method)
    def checked(self: ActivationCache, *args: Any, **kwargs: Any) -> Any:
        self.check_fresh()
        return method(self, *args, **kwargs)

    return checked


class ActivationCache(TransformerLensMethods, _TLActivationCache):
    """TransformerLens' ``ActivationCache`` for a :class:`vision_lens.HookedViT`, with exact
    decompositions of the model's output (a CLIP image embedding, features, logits) into direct
    effects.

    Indexing (``cache["blocks.3.attn.hook_pattern"]``, ``cache["pattern", 3]``), ``to``,
    ``remove_batch_dim``, ``stack_activation`` and the rest of TransformerLens' API behave as
    there. The ``decompose_*`` methods need the hooks listed by
    :meth:`vision_lens.HookedViT.decomposition_hooks`; a cache of every hook has them, and
    :meth:`vision_lens.HookedViT.run_with_decomposition_cache` keeps only those (and only the rows
    of the positions the readout reads).

    See the module docstring for how ``b_O``, ``b_V``, layer scale, a readout position's own
    attention and the final norm's mean and bias are attributed.

    Nothing is decomposed silently wrong: the decompositions read the model's current weights,
    so once they change after caching (see :class:`WeightRecord`) every ``decompose_*`` method
    raises :class:`vision_lens.StaleCacheError`; a cache lacking hooks or positions they need
    (``names_filter``, ``pos_slice``) raises :class:`vision_lens.IncompleteCacheError` naming
    them. ``remove_batch_dim`` and ``apply_slice_to_batch_dim`` caches decompose like the batch.

    A reduced-precision cache (``run_with_cache(cache_dtype=torch.bfloat16)``) decomposes in
    float32: each entry it reads is upcast, so the only error is the storage rounding of the
    entries, a relative ``eps / 2`` per element (``2**-9`` for bfloat16, ``2**-12`` for float16)
    in each of the at most three rounded factors of a term (pattern, values, norm scale). A
    term's error is therefore at most about ``1.5 * eps`` times the size of the term computed
    from the same factors' magnitudes; measured on a 6-layer ViT-B/16-width model it is at most
    ``3e-4`` of the embedding's norm for layer terms in bfloat16 (``2e-5`` in float16), and
    ``1e-5`` for head and token terms. The terms still sum to the cached output to that error.

    Example:
        >>> import torch, vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny()
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> embed, cache = model.run_with_cache(torch.randn(3, 3, 16, 16))
        >>> terms, labels = cache.decompose_layers()
        >>> labels
        ['embed', 'L0_attn', 'L0_mlp', 'L1_attn', 'L1_mlp', 'bias']
        >>> torch.allclose(terms.sum(0), embed, atol=1e-5)
        True
    """

    # ------------------------------------------------------------------ plumbing
    def __init__(
        self,
        cache_dict: dict[str, Tensor],
        model: Any,
        has_batch_dim: bool = True,
        *,
        weights: WeightRecord | None = None,
        pos_slice: str | None = None,
    ):
        """Wrap ``cache_dict`` (activations of ``model``).

        Args:
            weights: The :class:`WeightRecord` of the weights the activations came from
                (default: recorded now, i.e. the activations are assumed to come from the
                model's current weights).
            pos_slice: A description of the ``pos_slice`` that dropped positions from the
                entries (``run_with_cache`` sets it), or ``None``: the decompositions refuse a
                cache that lacks positions.
        """
        super().__init__(cache_dict, model, has_batch_dim=has_batch_dim)
        if weights is None and model is not None:
            weights = WeightRecord(model)
        self.weights = weights
        self.pos_slice = pos_slice
        if isinstance(cache_dict, LazyEntries):
            cache_dict.guard = self.check_fresh

    def derived_names(self) -> list[str]:
        """Entries this cache will compute when first read rather than holding them now
        (see :meth:`vision_lens.HookedViT.run_with_cache`); empty for a plain cache.

        Example:
            >>> import torch, vision_lens as vl
            >>> model = vl.HookedViT(vl.HookedViTConfig.tiny(n_layers=1)).init_weights(seed=0)
            >>> _, cache = model.run_with_cache(torch.randn(1, 3, 16, 16))
            >>> cache.derived_names()
            ['blocks.0.attn.hook_pattern', 'blocks.0.attn.hook_result', 'blocks.0.mlp.hook_post', \
'blocks.0.hook_resid_mid']
        """
        entries = self.cache_dict
        return entries.derived_names() if isinstance(entries, LazyEntries) else []

    def _rebuilt(self, fn: Callable[[str, Tensor], Tensor], **changes: Any) -> ActivationCache:
        """This cache with ``fn(name, tensor)`` applied to every held tensor (derived entries
        stay derived: each derivation commutes with moving and slicing)."""
        entries = self.cache_dict
        if isinstance(entries, LazyEntries):
            entries = entries.map_stored(fn)
        else:
            entries = {name: fn(name, tensor) for name, tensor in entries.items()}
        kwargs = {
            "has_batch_dim": self.has_batch_dim,
            "weights": self.weights,
            "pos_slice": self.pos_slice,
        }
        kwargs.update(changes)
        return type(self)(entries, self.model, **kwargs)

    def _batch_size(self) -> int:
        """TransformerLens' batch size (the most common leading size), from the held tensors
        only, so that asking does not compute the derived entries."""
        entries = self.cache_dict
        if not isinstance(entries, LazyEntries):
            return super()._batch_size()
        counts = Counter(t.size(0) for _, t in entries.stored_items() if t.ndim > 0)
        return counts.most_common(1)[0][0] if counts else 1

    def to(self, device: str | torch.device) -> ActivationCache:
        """Move the cache to ``device`` (as TransformerLens; derived entries stay derived and are
        computed on ``device`` when read)."""
        moved = self._rebuilt(lambda _, tensor: tensor.to(device))
        self.cache_dict = moved.cache_dict
        if isinstance(self.cache_dict, LazyEntries):
            self.cache_dict.guard = self.check_fresh
        return self

    def remove_batch_dim(self, batch_size: int | None = None) -> ActivationCache:
        """Drop the batch axis of a one-image cache (as TransformerLens)."""
        if not isinstance(self.cache_dict, LazyEntries) or not self.has_batch_dim:
            return super().remove_batch_dim(batch_size)
        batch_size = self._batch_size() if batch_size is None else batch_size
        if batch_size != 1:
            raise AssertionError(
                f"Cannot remove batch dimension from cache with batch size {batch_size}"
            )
        moved = self._rebuilt(lambda _, t: t[0] if t.ndim > 0 and t.size(0) == 1 else t)
        self.cache_dict = moved.cache_dict
        self.cache_dict.guard = self.check_fresh
        self.has_batch_dim = False
        return self

    def check_fresh(self) -> None:
        """Raise :class:`vision_lens.StaleCacheError` if the model's weights changed since this
        cache was made (see :class:`WeightRecord`); every ``decompose_*`` method calls it."""
        if self.weights is not None:
            self.weights.check(self.model)

    def _missing_message(self, name: str) -> str:
        if name not in self.model.decomposition_hooks():
            return (
                f"This cache lacks {name!r}. Cache it: model.run_with_cache(images) with no "
                "names_filter, or one that keeps it (a decomposition cache keeps only what the "
                "decompositions read)."
            )
        missing = [n for n in self.model.decomposition_hooks() if n not in self.cache_dict]
        if name not in missing:
            missing.insert(0, name)
        shown = ", ".join(repr(n) for n in missing)
        return (
            f"The decomposition needs {name!r}, which is not in this cache; it lacks "
            f"{len(missing)} of the hooks it needs: {shown}. Run "
            "model.run_with_decomposition_cache(images), or run_with_cache with "
            "names_filter=model.decomposition_hooks() (or no filter)."
        )

    def entry(self, name: str) -> Tensor:
        """A cached entry as the decompositions read it: with its batch axis (also after
        ``remove_batch_dim``), in float32 when stored in reduced precision (``cache_dtype``).

        Raises:
            IncompleteCacheError: The cache lacks it (the message says how to cache it).

        Example:
            >>> import torch, vision_lens as vl
            >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
            >>> _, cache = model.run_with_cache(torch.randn(1, 3, 16, 16),
            ...                                 cache_dtype=torch.bfloat16)
            >>> cache.entry("blocks.0.mlp.hook_post").dtype
            torch.float32
        """
        if name not in self.cache_dict:
            raise IncompleteCacheError(self._missing_message(name))
        tensor = self.cache_dict[name]
        if tensor.is_floating_point() and tensor.element_size() < 4:
            tensor = tensor.float()  # a reduced-precision cache: decompose in float32
        return tensor if self.has_batch_dim else tensor.unsqueeze(0)

    def _out(self, tensor: Tensor, batch_dim: int = 0) -> Tensor:
        return tensor if self.has_batch_dim else tensor.squeeze(batch_dim)

    def _check_usable(self) -> None:
        """Refuse a stale cache, or one cached with a ``pos_slice`` that dropped positions."""
        if self.model is None:
            raise ValueError("This cache has no model (cache.model is None): it cannot decompose.")
        self.check_fresh()
        if self.pos_slice is not None:
            raise IncompleteCacheError(
                f"This cache was made with pos_slice={self.pos_slice}, which drops positions the "
                "decomposition needs (blocks.L.attn.hook_v of every token, and the readout's "
                "rows of the other entries). Run model.run_with_decomposition_cache(images) "
                "(it keeps only the rows the readout reads), or run_with_cache without pos_slice "
                "and with names_filter=model.decomposition_hooks()."
            )

    def apply_slice_to_batch_dim(self, batch_slice) -> ActivationCache:
        """TransformerLens' batch slicing, returning this class (TL's builds its own class, which
        would drop the ``decompose_*`` methods) with this cache's weight record."""
        if not isinstance(batch_slice, Slice):
            batch_slice = Slice(batch_slice)
        if not (self.has_batch_dim or batch_slice.mode == "empty"):
            raise AssertionError("Cannot index into a cache without a batch dim")
        batch_size = self._batch_size()

        def cut(_: str, tensor: Tensor) -> Tensor:
            # Broadcast entries (leading size 1 in a larger batch) are not batched: kept whole.
            if tensor.ndim > 0 and tensor.size(0) == batch_size:
                return batch_slice.apply(tensor, dim=0)
            return tensor

        return self._rebuilt(cut, has_batch_dim=batch_slice.mode != "int" and self.has_batch_dim)

    # TransformerLens helpers that read weights refuse a stale cache too.
    compute_head_results = _fresh_first(_TLActivationCache.compute_head_results)
    stack_head_results = _fresh_first(_TLActivationCache.stack_head_results)

    @staticmethod
    def _check_mode(ln_mode: str) -> None:
        if ln_mode not in LN_MODES:
            raise ValueError(f"ln_mode must be one of {LN_MODES}, got {ln_mode!r}.")

    def readout_rows(self, name: str, pos_dim: int = 1) -> Tensor:
        """:meth:`entry` ``name`` at the positions the readout reads (``pos_dim`` is the position
        axis): the rows every direct effect flows through.

        A full cache is sliced here; a decomposition cache already holds just those rows. Any
        other length (e.g. a ``pos_slice`` of other rows) is refused rather than misread.

        Raises:
            IncompleteCacheError: The entry is missing or holds other positions.

        Example:
            >>> import torch, vision_lens as vl
            >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
            >>> _, cache = model.run_with_cache(torch.randn(2, 3, 16, 16))
            >>> cache.readout_rows("blocks.1.hook_resid_post").shape  # the class token
            torch.Size([2, 1, 32])
        """
        tensor = self.entry(name)
        rows = self.model.readout.query_positions
        n_query = rows.stop - rows.start
        length = tensor.shape[pos_dim]
        if length == self.model.cfg.n_pos:
            index = [slice(None)] * tensor.dim()
            index[pos_dim] = rows
            return tensor[tuple(index)]
        if length == n_query:
            return tensor
        raise IncompleteCacheError(
            f"Cache entry {name!r} has {length} positions along axis {pos_dim}, but direct "
            f"effects need all {self.model.cfg.n_pos} positions or exactly the {n_query} "
            f"positions the readout reads ({rows.start}..{rows.stop - 1}). Was it cached with "
            "pos_slice? Use model.run_with_decomposition_cache(images) instead."
        )

    def _values(self, layer: int) -> Tensor:
        """``blocks.{layer}.attn.hook_v`` ``[batch, pos, head, d_head]``, every source token."""
        name = f"blocks.{layer}.attn.hook_v"
        values = self.entry(name)
        if values.shape[1] != self.model.cfg.n_pos:
            raise IncompleteCacheError(
                f"Cache entry {name!r} has {values.shape[1]} positions; the decomposition needs "
                f"the values of all {self.model.cfg.n_pos} tokens (cache without pos_slice, or use "
                "model.run_with_decomposition_cache)."
            )
        return values

    def _frozen(self) -> _Frozen:
        self._check_usable()
        model = self.model
        last = self.model.cfg.n_layers - 1
        z = self.readout_rows(f"blocks.{last}.hook_resid_post")
        scale = self.entry("ln_final.hook_scale")
        if not model.readout.after_pool:
            scale = self.readout_rows("ln_final.hook_scale")
        is_map = self.model.cfg.readout == "map"
        lin = model.readout.linear(
            z,
            scale,
            model.ln_final,
            model.W_proj,
            model.b_proj,
            pool_pattern=self.entry("readout.attn.hook_pattern") if is_map else None,
            mlp_out=self.entry("readout.hook_mlp_out") if is_map else None,
        )
        y = lin.map_term(z, centre=False) - lin.m_term + lin.const
        if lin.nonlinear is not None:
            y = y + lin.nonlinear
        return _Frozen(z=z, lin=lin, norm=y.norm(dim=-1))

    def frozen_readout(self) -> tuple[LinearReadout, Float[Tensor, " batch"]]:
        """The readout as a linear map frozen at this cache's statistics (the final norm's scale,
        an attention pool's pattern), and the norm of the output it reproduces ``[batch]``.

        Every direct effect is ``lin.map_term(term)`` of a residual-stream term (plus shares of
        ``lin.m_term`` and ``lin.const``); analyses of other components (neurons, SAE features)
        map their terms with it exactly as the ``decompose_*`` methods do.

        Example:
            >>> import torch, vision_lens as vl
            >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
            >>> embed, cache = model.run_with_decomposition_cache(torch.randn(2, 3, 16, 16))
            >>> lin, norm = cache.frozen_readout()
            >>> torch.allclose(norm, embed.norm(dim=-1), atol=1e-5)
            True
        """
        frozen = self._frozen()
        return frozen.lin, frozen.norm

    def _map_term(
        self, c: Tensor, frozen: _Frozen, ln_mode: LnMode, share: float
    ) -> Float[Tensor, "batch d_embed"]:
        """Output-space contribution of a residual-stream term ``c`` ``[batch, query, d_model]``.

        ``share`` is the fraction of the norm's mean and of the biases this term carries in
        split mode.
        """
        if ln_mode == "center":
            return frozen.lin.map_term(c, centre=True)
        lin = frozen.lin
        return lin.map_term(c, centre=False) - share * lin.m_term + share * lin.const

    def _finish(self, terms: Tensor, frozen: _Frozen, unit_output: bool, batch_dim: int) -> Tensor:
        if unit_output:
            shape = [1] * terms.dim()
            shape[batch_dim] = -1
            terms = terms / frozen.norm.view(shape)
        return terms

    def _split_share(self) -> float:
        return 1.0 / (2 * self.model.cfg.n_layers + 1)

    def _head_weights(
        self,
        layer: int,
        ln_mode: LnMode,
        frozen: _Frozen,
        directions: Tensor | None = None,
    ) -> tuple[Float[Tensor, "channel head d_head k"], Tensor | None]:
        """Per-head output matrices folded with each readout channel's map, and the channels'
        second factor ``[channel, k, out]`` (``None`` when the first already ends in the output
        space). ``directions`` ``[n, d_embed]``, when given, are folded into the last factor, so
        ``out`` is ``n``."""
        W_O = self.model.blocks[layer].attn.W_O.detach().to(frozen.z)  # [head, d_head, d_model]
        if ln_mode == "center" and frozen.lin.centers:
            W_O = W_O - W_O.mean(-1, keepdim=True)
        M, right = frozen.lin.M, frozen.lin.M_out
        if directions is not None:
            if right is None:
                M = M @ directions.T
            else:
                right = right @ directions.T
        return torch.einsum("hed,gdf->ghef", W_O, M), right

    def _head_constant(
        self, layer: int, frozen: _Frozen, ln_mode: LnMode, per: int
    ) -> Float[Tensor, "batch d_embed"] | None:
        """Split mode: the share of b_O, the norm's mean and the biases that each of ``per``
        attention terms of ``layer`` carries; ``None`` in centre mode (b_O is the layer's
        separate bias share)."""
        if ln_mode == "center":
            return None
        b_O = self.model.blocks[layer].attn.b_O.detach().to(frozen.z)
        c = b_O.expand_as(frozen.z)
        return self._map_term(c, frozen, "split", self._split_share()) / per

    def _effective_rows(self, layer: int, frozen: _Frozen) -> tuple[Tensor, Tensor]:
        """Pattern rows weighted by the readout, ``R[b, g, h, i] = sum_q w[b, g, q] A[b, h, q, i]``
        ``[batch, channel, head, pos]``, and values ``[batch, pos, head, d_head]``."""
        pattern = self.readout_rows(f"blocks.{layer}.attn.hook_pattern", pos_dim=2)
        rows = torch.einsum("bgq,bhqk->bghk", frozen.lin.w, pattern)
        return rows, self._values(layer)

    def _check_directions(self, directions: Tensor | None, like: Tensor) -> Tensor | None:
        directions = check_directions(directions, self.model.cfg.d_embed)
        return None if directions is None else directions.to(device=like.device, dtype=like.dtype)

    # ------------------------------------------------------------------ public API
    @normalize_alias
    def decompose_layers(
        self,
        ln_mode: LnMode = "center",
        unit_output: bool = False,
        return_labels: bool | None = None,
    ) -> LayerTerms | Float[Tensor, "component batch d_embed"]:
        """Split the output into the direct effects of the embedding, every attention layer,
        every MLP, an attention-pooling head's MLP (if any) and the biases after the last block.

        The components sum to the model's output exactly (up to float rounding).

        Args:
            ln_mode: ``"center"`` or ``"split"`` (see the module docstring).
            unit_output: Divide by the output's norm, so the terms sum to the unit output
                (``normalize=`` before 0.2, still accepted with a warning until 0.3).
            return_labels: Deprecated (removed in 0.3): ``False`` returns the terms alone; use
                ``decompose_layers().terms`` instead.

        Returns:
            A :class:`LayerTerms` ``(terms, labels)``: ``[component, batch, d_embed]`` with
            components ``embed, L0_attn, L0_mlp, ..., [readout_mlp,] bias`` (``bias`` is zero in
            split mode), and their :class:`ComponentId` labels (strings with ``kind``,
            ``layer``, ``head`` attributes).

        Example:
            >>> terms, labels = cache.decompose_layers(ln_mode="split")  # doctest: +SKIP
            >>> terms.sum(0)  # == the model's output  # doctest: +SKIP
            >>> labels[1].kind, labels[1].layer  # doctest: +SKIP
            ('attn', 0)
        """
        if return_labels is not None:
            msg = "return_labels= is deprecated (removed in 0.3): use decompose_layers().terms."
            warnings.warn(msg, DeprecationWarning, stacklevel=2)
        self._check_mode(ln_mode)
        frozen = self._frozen()
        share = self._split_share()
        terms = [
            self._map_term(self.readout_rows("blocks.0.hook_resid_pre"), frozen, ln_mode, share)
        ]
        labels = [ComponentId("embed")]
        for layer in range(self.model.cfg.n_layers):
            for kind, hook in (("attn", "hook_attn_out"), ("mlp", "hook_mlp_out")):
                c = self.readout_rows(f"blocks.{layer}.{hook}")
                terms.append(self._map_term(c, frozen, ln_mode, share))
                labels.append(ComponentId(kind, layer))
        if frozen.lin.nonlinear is not None:
            terms.append(frozen.lin.nonlinear)
            labels.append(ComponentId("readout_mlp"))
        bias = frozen.lin.const.expand_as(terms[0])
        terms.append(bias if ln_mode == "center" else torch.zeros_like(bias))
        labels.append(ComponentId("bias"))
        out = self._out(self._finish(torch.stack(terms), frozen, unit_output, batch_dim=1), 1)
        return out if return_labels is False else LayerTerms(out, labels)

    @normalize_alias
    def decompose_heads(
        self,
        layers: int | Sequence[int] | None = None,
        ln_mode: LnMode = "center",
        unit_output: bool = False,
    ) -> Float[Tensor, "batch layer head d_embed"]:
        """Direct effect of every attention head (summed over source tokens).

        In centre mode the heads of a layer plus :meth:`attention_bias_terms` sum to the layer's
        ``L{l}_attn`` component of :meth:`decompose_layers`; in split mode the heads alone do.

        Args:
            layers: Layer indices (negative allowed) in the order wanted; default all.
            ln_mode: ``"center"`` or ``"split"``.
            unit_output: Divide by the output's norm (``normalize``: its deprecated name).

        Returns:
            ``[batch, layer, head, d_embed]`` (``layer`` indexes ``layers``).

        Example:
            >>> heads = cache.decompose_heads(layers=[-2, -1])  # doctest: +SKIP
            >>> heads.norm(dim=-1)  # [batch, 2, head]: how much each head writes  # doctest: +SKIP
        """
        self._check_mode(ln_mode)
        frozen = self._frozen()
        per_layer = []
        for layer in layer_indices(layers, self.model.cfg.n_layers):
            rows, values = self._effective_rows(layer, frozen)
            z = torch.einsum("bghk,bkhe->bghe", rows, values)  # [batch, channel, head, d_head]
            # Each head's output in the residual stream, then through the readout: for
            # batch x head rows this is cheaper than folding the head x d_head weight rows.
            W_O = self.model.blocks[layer].attn.W_O.detach().to(z)
            c = torch.einsum("bghe,hed->bghd", z, W_O)  # [batch, channel, head, d_model]
            if ln_mode == "center" and frozen.lin.centers:
                c = c - c.mean(-1, keepdim=True)
            heads = frozen.lin.to_output(torch.einsum("bghd,gdk->bhgk", c, frozen.lin.M))
            constant = self._head_constant(layer, frozen, ln_mode, per=self.model.cfg.n_heads)
            if constant is not None:
                heads = heads + constant[:, None]
            per_layer.append(heads)
        out = torch.stack(per_layer, dim=1)
        return self._out(self._finish(out, frozen, unit_output, batch_dim=0))

    @normalize_alias
    def attention_bias_terms(
        self,
        layers: int | Sequence[int] | None = None,
        ln_mode: LnMode = "center",
        unit_output: bool = False,
    ) -> Float[Tensor, "batch layer d_embed"]:
        """Each attention layer's bias share: the part of ``L{l}_attn`` owned by no head.

        In centre mode this is ``b_O`` through the frozen readout (centred); in split mode
        ``b_O`` is already spread over the heads and tokens, so it is zero.

        Example:
            >>> heads = cache.decompose_heads()  # doctest: +SKIP
            >>> attn_l = heads.sum(2) + cache.attention_bias_terms()  # doctest: +SKIP
        """
        self._check_mode(ln_mode)
        frozen = self._frozen()
        per_layer = []
        for layer in layer_indices(layers, self.model.cfg.n_layers):
            b_O = self.model.blocks[layer].attn.b_O.detach().to(frozen.z).expand_as(frozen.z)
            term = self._map_term(b_O, frozen, "center", 0.0)
            per_layer.append(term if ln_mode == "center" else torch.zeros_like(term))
        out = torch.stack(per_layer, dim=1)
        return self._out(self._finish(out, frozen, unit_output, batch_dim=0))

    def token_names(self) -> list[str]:
        """A name per position of :meth:`decompose_tokens`: ``cls``, ``dist``, ``reg{i}``,
        ``patch{i}`` (the model's ``readout.position_names()``).

        Example:
            >>> cache.token_names()[:2]  # doctest: +SKIP
            ['cls', 'patch0']
        """
        return self.model.readout.position_names()

    @normalize_alias
    def decompose_tokens(
        self,
        layers: int | Sequence[int] | None = None,
        ln_mode: LnMode = "center",
        unit_output: bool = False,
    ) -> Float[Tensor, "batch pos d_embed"]:
        """Direct effect of every source token through the attention layers, summed over the
        selected layers and all heads. Positions follow the token sequence (prefix tokens, then
        patches; :meth:`token_names` names them, ``model.readout.patch_positions`` selects the
        patches).

        Summed over ``pos`` this equals :meth:`decompose_heads` summed over layers and heads.

        Args:
            layers: Layer indices (negative allowed); default all.
            ln_mode: ``"center"`` or ``"split"``.
            unit_output: Divide by the output's norm (``normalize``: its deprecated name).

        Returns:
            ``[batch, pos, d_embed]``.

        Example:
            >>> tokens = cache.decompose_tokens(layers=range(-4, 0))  # doctest: +SKIP
            >>> patches = tokens[:, model.readout.patch_positions]  # doctest: +SKIP
        """
        self._check_mode(ln_mode)
        frozen = self._frozen()
        total = None
        for layer in layer_indices(layers, self.model.cfg.n_layers):
            rows, values = self._effective_rows(layer, frozen)
            W, right = self._head_weights(layer, ln_mode, frozen)  # [channel, head, d_head, k]
            # [batch, pos, channel, head, d_head], contracted with W over (channel, head, d_head)
            weighted = values[:, :, None] * rows.permute(0, 3, 1, 2)[..., None]
            if right is None:
                term = weighted.flatten(2) @ W.flatten(0, 2)  # [batch, pos, d_embed]
            else:
                inner = torch.einsum("bpghe,ghek->bpgk", weighted, W)
                term = torch.einsum("bpgk,gkf->bpf", inner, right)
            constant = self._head_constant(layer, frozen, ln_mode, per=values.shape[1])
            if constant is not None:
                term = term + constant[:, None]
            total = term if total is None else total + term
        return self._out(self._finish(total, frozen, unit_output, batch_dim=0))

    @normalize_alias
    def decompose_heads_tokens(
        self,
        directions: Float[Tensor, "k d_embed"] | None = None,
        layers: int | Sequence[int] | None = None,
        ln_mode: LnMode = "center",
        unit_output: bool = False,
    ) -> Float[Tensor, "batch layer head pos out"]:
        """Joint head x token decomposition, optionally projected onto directions.

        With ``directions`` ``[k, d_embed]`` (e.g. text embeddings) the per-head output matrices
        are folded with them first, so the result ``[batch, layer, head, pos, k]`` is computed
        without ever building the ``d_embed``-wide tensor; it equals the full decomposition
        contracted with ``directions.T``.

        Args:
            directions: ``[k, d_embed]`` directions to project on, or ``None`` for the full
                ``[batch, layer, head, pos, d_embed]`` tensor (large: use ``layers``).
            layers: Layer indices (negative allowed); default all.
            ln_mode: ``"center"`` or ``"split"``.
            unit_output: Divide by the output's norm (``normalize``: its deprecated name).

        Returns:
            ``[batch, layer, head, pos, k]`` or ``[batch, layer, head, pos, d_embed]``.

        Example:
            >>> texts = clip.encode(["a dog", "a cat"])  # doctest: +SKIP
            >>> scores = cache.decompose_heads_tokens(texts, layers=[-1])  # doctest: +SKIP
        """
        self._check_mode(ln_mode)
        frozen = self._frozen()
        directions = self._check_directions(directions, frozen.z)
        layer_ids = layer_indices(layers, self.model.cfg.n_layers)
        cfg = self.model.cfg
        batch = frozen.z.shape[0]
        width = cfg.d_embed if directions is None else directions.shape[0]
        out = frozen.z.new_zeros(batch, len(layer_ids), cfg.n_heads, cfg.n_pos, width)
        differentiable = frozen.z.requires_grad and torch.is_grad_enabled()
        for slot, layer in enumerate(layer_ids):
            rows, values = self._effective_rows(layer, frozen)
            W, right = self._head_weights(layer, ln_mode, frozen, directions)
            values = values.permute(0, 2, 1, 3)  # [batch, head, pos, d_head]
            for g in range(W.shape[0]):
                weighted = values * rows[:, g, :, :, None]  # [batch, head, pos, d_head]
                if right is not None:  # [batch, head, pos, k] then into the output space
                    out[:, slot] = out[:, slot] + (weighted @ W[g]) @ right[g]
                elif differentiable:
                    out[:, slot] = out[:, slot] + weighted @ W[g]  # out= variants lack grad
                elif g == 0:
                    for b in range(batch):  # out[b, slot] is contiguous: no temporary copy
                        torch.bmm(weighted[b], W[g], out=out[b, slot])
                else:
                    for b in range(batch):
                        out[b, slot].baddbmm_(weighted[b], W[g])
            constant = self._head_constant(layer, frozen, ln_mode, per=cfg.n_heads * cfg.n_pos)
            if constant is not None:
                if directions is not None:
                    constant = constant @ directions.T
                out[:, slot] += constant[:, None, None]
        return self._out(self._finish(out, frozen, unit_output, batch_dim=0))


class ComponentId(str):
    """A typed component label: a string (``"embed"``, ``"L3_attn"``, ``"L3_mlp"``, ``"L3H5"``,
    ``"readout_mlp"``, ``"bias"``) that also carries ``kind``, ``layer`` and ``head``, so code can
    select components without parsing labels.

    Example:
        >>> cid = ComponentId("attn", 3)
        >>> cid, cid.kind, cid.layer, cid.head
        ('L3_attn', 'attn', 3, None)
        >>> ComponentId("head", 2, 1)
        'L2H1'
    """

    kind: str
    layer: int | None
    head: int | None

    def __new__(cls, kind: str, layer: int | None = None, head: int | None = None):
        if kind in ("attn", "mlp", "attn_bias"):
            label = f"L{layer}_{kind}"
        elif kind == "head":
            label = f"L{layer}H{head}"
        else:
            label = kind
        obj = super().__new__(cls, label)
        obj.kind, obj.layer, obj.head = kind, layer, head
        return obj

    def __reduce__(self):
        return (ComponentId, (self.kind, self.layer, self.head))

    @classmethod
    def parse(cls, label: str) -> ComponentId:
        """The id of a label string (a :class:`ComponentId` is returned as it is), for labels
        that come from outside, e.g. a saved file.

        Example:
            >>> ComponentId.parse("L3H1").kind, ComponentId.parse("L2_mlp").layer
            ('head', 2)
        """
        if isinstance(label, ComponentId):
            return label
        match = _LABEL.match(label)
        if match is None:
            return cls(label)
        layer, head, kind = match.groups()
        if head is not None:
            return cls("head", int(layer), int(head))
        return cls(kind, int(layer))


_LABEL = re.compile(r"^L(\d+)(?:H(\d+)|_(attn_bias|attn|mlp))$")
