"""The vision ActivationCache: TransformerLens' cache plus exact direct-effect decompositions.

The math (DESIGN.md §3, Gandelsman et al. 2024 §3 and A.1). With ``z`` the class token's final
residual stream, ``mu``/``sigma`` the final LayerNorm's mean and scale taken from the forward pass,
``gamma``/``beta`` its weight and bias and ``P`` the projection, the image embedding is

    y = (gamma * (z - mu) / sigma + beta) @ P,        z = e + sum_l a_l + sum_l f_l,

``e`` the embedding term (``blocks.0.hook_resid_pre``), ``a_l`` attention and ``f_l`` MLP outputs
at the class token. With ``mu`` and ``sigma`` frozen, ``y`` is linear in the terms. The attention
term splits over heads ``h`` and source tokens ``i``:

    a_l = sum_{h,i} A^{l,h}[cls, i] * v_i^{l,h} @ W_O^{l,h}  +  b_O^l

where ``v`` includes the value bias ``b_V`` (so ``b_V``'s effect is shared among the tokens in
proportion to attention, exactly as the value vectors are) and layer scale is already folded into
``W_O`` and ``b_O``. The class token attending to itself is the ``pos = 0`` token term.

Two exact treatments of ``mu`` and ``beta``:

* ``ln_mode="center"`` (TransformerLens' ``apply_ln_to_stack``): every term ``c`` maps to
  ``(gamma * (c - mean_d(c)) / sigma) @ P``; ``beta @ P`` is the separate ``bias`` component, and
  each layer's ``b_O`` is that layer's *attention bias share*, part of the layer's attention term
  but of no head or token.
* ``ln_mode="split"`` (the paper's code): ``mu`` and ``beta`` are split evenly over the
  ``2L + 1`` layer-level terms (embedding, L attention layers, L MLPs): a term maps to
  ``(gamma * (c - s mu) / sigma + s beta) @ P`` with ``s = 1/(2L+1)``. Inside an attention layer
  that share and ``b_O`` are split evenly over the ``head x token`` terms, so heads and tokens sum
  to their layer and the ``bias`` component and the attention bias shares are zero.

``normalize=True`` divides every term by ``||y||`` so that they sum to the unit embedding.

Only the class-token query row of each attention pattern is used, and the per-head output
matrix is folded with ``gamma`` and ``P`` once per layer
(``W_eff^h = (W_O^h - mean_d W_O^h) diag(gamma) P`` in centre mode), and further with text
directions when given, so the
``[batch, layer, head, pos, d_embed]`` tensor is only built when asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import ActivationCache as _TLActivationCache

LnMode = Literal["center", "split"]
LN_MODES = ("center", "split")


@dataclass
class _Frozen:
    """Per-image quantities of the final LayerNorm, frozen from the forward pass."""

    z: Tensor  # [batch, d_model], class token's final residual stream
    mu: Tensor  # [batch]
    sigma: Tensor  # [batch]
    norm: Tensor  # [batch], ||y||


class ActivationCache(_TLActivationCache):
    """TransformerLens' ``ActivationCache`` for a :class:`vision_lens.HookedViT`, with exact
    decompositions of the image embedding into direct effects.

    Indexing (``cache["blocks.3.attn.hook_pattern"]``, ``cache["pattern", 3]``), ``to``,
    ``remove_batch_dim``, ``stack_activation`` and the rest of TransformerLens' API behave as
    there. The ``decompose_*`` methods need the hooks listed by
    :meth:`vision_lens.HookedViT.decomposition_hooks`; a cache of every hook has them, and
    :meth:`vision_lens.HookedViT.run_with_decomposition_cache` keeps only those (and only the
    class-token row where that is all the decomposition uses).

    See the module docstring for how ``b_O``, ``b_V``, layer scale, the class token's own attention
    and the final LayerNorm's mean and bias are attributed.

    Example:
        >>> import torch, vision_lens as vl
        >>> cfg = vl.HookedViTConfig(n_layers=2, d_model=32, n_heads=4, d_mlp=64, d_embed=16,
        ...                          image_size=16, patch_size=8)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> embed, cache = model.run_with_cache(torch.randn(3, 3, 16, 16))
        >>> terms, labels = cache.decompose_layers()
        >>> labels
        ['embed', 'L0_attn', 'L0_mlp', 'L1_attn', 'L1_mlp', 'bias']
        >>> torch.allclose(terms.sum(0), embed, atol=1e-5)
        True
    """

    # ------------------------------------------------------------------ plumbing
    def _get(self, name: str) -> Tensor:
        if name not in self.cache_dict:
            raise KeyError(
                f"The decomposition needs {name!r}, which is not in this cache. Run "
                "model.run_with_decomposition_cache(images), or run_with_cache with "
                "names_filter=model.decomposition_hooks() (or no filter)."
            )
        tensor = self.cache_dict[name]
        return tensor if self.has_batch_dim else tensor.unsqueeze(0)

    def _out(self, tensor: Tensor, batch_dim: int = 0) -> Tensor:
        return tensor if self.has_batch_dim else tensor.squeeze(batch_dim)

    def apply_slice_to_batch_dim(self, batch_slice) -> ActivationCache:
        """TransformerLens' batch slicing, returning this class (TL's builds its own class, which
        would drop the ``decompose_*`` methods)."""
        sliced = super().apply_slice_to_batch_dim(batch_slice)
        return type(self)(sliced.cache_dict, sliced.model, has_batch_dim=sliced.has_batch_dim)

    @property
    def _cfg(self):
        return self.model.cfg

    def _layer_indices(self, layers: int | Sequence[int] | None) -> list[int]:
        n_layers = self._cfg.n_layers
        if layers is None:
            return list(range(n_layers))
        layers = [layers] if isinstance(layers, int) else list(layers)
        out = []
        if not layers:
            raise ValueError("layers is empty: select at least one layer (or None for all).")
        for layer in layers:
            index = int(layer)
            if not -n_layers <= index < n_layers:
                raise IndexError(
                    f"Layer {layer} does not exist: the model has {n_layers} layers "
                    f"(valid indices {-n_layers}..{n_layers - 1})."
                )
            out.append(index % n_layers)
        return out

    @staticmethod
    def _check_mode(ln_mode: str) -> None:
        if ln_mode not in LN_MODES:
            raise ValueError(f"ln_mode must be one of {LN_MODES}, got {ln_mode!r}.")

    def _cls(self, name: str) -> Tensor:
        """The class-token row ``[batch, d]`` of a ``[batch, pos, d]`` activation."""
        return self._get(name)[:, 0]

    def _frozen(self) -> _Frozen:
        last = self._cfg.n_layers - 1
        z = self._cls(f"blocks.{last}.hook_resid_post")
        sigma = self._get("ln_final.hook_scale")[:, 0, 0]
        mu = z.mean(-1)
        gamma, beta, proj = self._ln_weights(z)
        y = ((z - mu[:, None]) * gamma / sigma[:, None] + beta) @ proj
        return _Frozen(z=z, mu=mu, sigma=sigma, norm=y.norm(dim=-1))

    def _ln_weights(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        model = self.model
        to = {"device": like.device, "dtype": like.dtype}
        return (
            model.ln_final.w.detach().to(**to),
            model.ln_final.b.detach().to(**to),
            model.W_proj.detach().to(**to),
        )

    def _map_term(
        self, c: Tensor, frozen: _Frozen, ln_mode: LnMode, share: float
    ) -> Float[Tensor, "batch d_embed"]:
        """Image-space contribution of a residual-stream term ``c`` ``[batch, d_model]``.

        ``share`` is the fraction of ``mu`` and ``beta`` this term carries in split mode.
        """
        gamma, beta, proj = self._ln_weights(c)
        sigma = frozen.sigma[:, None]
        if ln_mode == "center":
            return ((c - c.mean(-1, keepdim=True)) * gamma / sigma) @ proj
        return ((c - share * frozen.mu[:, None]) * gamma / sigma + share * beta) @ proj

    def _finish(self, terms: Tensor, frozen: _Frozen, normalize: bool, batch_dim: int) -> Tensor:
        if normalize:
            shape = [1] * terms.dim()
            shape[batch_dim] = -1
            terms = terms / frozen.norm.view(shape)
        return terms

    def _split_share(self) -> float:
        return 1.0 / (2 * self._cfg.n_layers + 1)

    def _head_weights(
        self, layer: int, ln_mode: LnMode, like: Tensor, right: Tensor | None = None
    ) -> Float[Tensor, "head d_head out"]:
        """Per-head output matrices folded with gamma and ``right`` ``[d_model, out]``: ``P``
        (the default) or ``P @ directions.T``, computed once by the caller for all layers."""
        gamma, _, proj = self._ln_weights(like)
        W_O = self.model.blocks[layer].attn.W_O.detach().to(like)  # [head, d_head, d_model]
        if ln_mode == "center":
            W_O = W_O - W_O.mean(-1, keepdim=True)
        return (W_O * gamma) @ (proj if right is None else right)

    def _head_constant(
        self, layer: int, frozen: _Frozen, ln_mode: LnMode, per: int
    ) -> Float[Tensor, "batch d_embed"] | None:
        """Split mode: the share of b_O, mu and beta that each of ``per`` attention terms of
        ``layer`` carries; ``None`` in centre mode (b_O is the layer's separate bias share)."""
        if ln_mode == "center":
            return None
        b_O = self.model.blocks[layer].attn.b_O.detach().to(frozen.z)
        c = b_O.expand_as(frozen.z)
        return self._map_term(c, frozen, "split", self._split_share()) / per

    def _attention_rows(self, layer: int) -> tuple[Tensor, Tensor]:
        """Class-token attention row ``[batch, head, pos]`` and values
        ``[batch, pos, head, d_head]``."""
        pattern = self._get(f"blocks.{layer}.attn.hook_pattern")[:, :, 0, :]
        values = self._get(f"blocks.{layer}.attn.hook_v")
        return pattern, values

    def _check_directions(self, directions: Tensor | None, like: Tensor) -> Tensor | None:
        if directions is None:
            return None
        if not isinstance(directions, Tensor):
            raise TypeError(f"directions must be a tensor [k, d_embed], got {type(directions)}.")
        if directions.dim() == 1:
            directions = directions[None]
        d_embed = self._cfg.d_embed
        if directions.dim() != 2 or directions.shape[1] != d_embed:
            raise ValueError(
                f"directions must have shape [k, {d_embed}] (the image embedding width), got "
                f"{tuple(directions.shape)}. Were they made by the same CLIP model?"
            )
        if directions.shape[0] == 0:
            raise ValueError("directions is empty: pass at least one direction.")
        return directions.to(device=like.device, dtype=like.dtype)

    # ------------------------------------------------------------------ public API
    def decompose_layers(
        self, ln_mode: LnMode = "center", normalize: bool = False, return_labels: bool = True
    ) -> (
        tuple[Float[Tensor, "component batch d_embed"], list[str]]
        | Float[Tensor, "component batch d_embed"]
    ):
        """Split the image embedding into the direct effects of the embedding, every attention
        layer, every MLP and the final LayerNorm's bias.

        The components sum to the image embedding exactly (up to float rounding).

        Args:
            ln_mode: ``"center"`` or ``"split"`` (see the module docstring).
            normalize: Divide by the embedding's norm, so the terms sum to the unit embedding.
            return_labels: Also return the component labels.

        Returns:
            ``[component, batch, d_embed]`` with components ``embed, L0_attn, L0_mlp, ...,
            bias`` (``bias`` is zero in split mode), and the labels if asked.

        Example:
            >>> terms, labels = cache.decompose_layers(ln_mode="split")  # doctest: +SKIP
            >>> terms.sum(0)  # == the image embedding  # doctest: +SKIP
        """
        self._check_mode(ln_mode)
        frozen = self._frozen()
        share = self._split_share()
        terms = [self._map_term(self._cls("blocks.0.hook_resid_pre"), frozen, ln_mode, share)]
        labels = ["embed"]
        for layer in range(self._cfg.n_layers):
            for kind, hook in (("attn", "hook_attn_out"), ("mlp", "hook_mlp_out")):
                c = self._cls(f"blocks.{layer}.{hook}")
                terms.append(self._map_term(c, frozen, ln_mode, share))
                labels.append(f"L{layer}_{kind}")
        _, beta, proj = self._ln_weights(frozen.z)
        bias = (beta @ proj).expand_as(terms[0])
        terms.append(bias if ln_mode == "center" else torch.zeros_like(bias))
        labels.append("bias")
        out = self._out(self._finish(torch.stack(terms), frozen, normalize, batch_dim=1), 1)
        return (out, labels) if return_labels else out

    def decompose_heads(
        self,
        layers: int | Sequence[int] | None = None,
        ln_mode: LnMode = "center",
        normalize: bool = False,
    ) -> Float[Tensor, "batch layer head d_embed"]:
        """Direct effect of every attention head (summed over source tokens).

        In centre mode the heads of a layer plus :meth:`attention_bias_terms` sum to the layer's
        ``L{l}_attn`` component of :meth:`decompose_layers`; in split mode the heads alone do.

        Args:
            layers: Layer indices (negative allowed) in the order wanted; default all.
            ln_mode: ``"center"`` or ``"split"``.
            normalize: Divide by the embedding's norm.

        Returns:
            ``[batch, layer, head, d_embed]`` (``layer`` indexes ``layers``).

        Example:
            >>> heads = cache.decompose_heads(layers=[-2, -1])  # doctest: +SKIP
            >>> heads.norm(dim=-1)  # [batch, 2, head]: how much each head writes  # doctest: +SKIP
        """
        self._check_mode(ln_mode)
        frozen = self._frozen()
        per_layer = []
        gamma, _, proj = self._ln_weights(frozen.z)
        for layer in self._layer_indices(layers):
            pattern, values = self._attention_rows(layer)
            z_cls = torch.einsum("bhp,bphe->bhe", pattern, values)  # [batch, head, d_head]
            # Each head's output in the residual stream, then through the frozen LayerNorm and P:
            # for batch x head rows this is cheaper than folding the head x d_head weight rows.
            W_O = self.model.blocks[layer].attn.W_O.detach().to(z_cls)
            c = torch.einsum("bhe,hed->bhd", z_cls, W_O)  # [batch, head, d_model]
            if ln_mode == "center":
                c = c - c.mean(-1, keepdim=True)
            heads = (c * (gamma / frozen.sigma[:, None, None])) @ proj
            constant = self._head_constant(layer, frozen, ln_mode, per=self._cfg.n_heads)
            if constant is not None:
                heads = heads + constant[:, None]
            per_layer.append(heads)
        out = torch.stack(per_layer, dim=1)
        return self._out(self._finish(out, frozen, normalize, batch_dim=0))

    def attention_bias_terms(
        self,
        layers: int | Sequence[int] | None = None,
        ln_mode: LnMode = "center",
        normalize: bool = False,
    ) -> Float[Tensor, "batch layer d_embed"]:
        """Each attention layer's bias share: the part of ``L{l}_attn`` owned by no head.

        In centre mode this is ``b_O`` through the frozen LayerNorm (centred); in split mode
        ``b_O`` is already spread over the heads and tokens, so it is zero.

        Example:
            >>> heads = cache.decompose_heads()  # doctest: +SKIP
            >>> attn_l = heads.sum(2) + cache.attention_bias_terms()  # doctest: +SKIP
        """
        self._check_mode(ln_mode)
        frozen = self._frozen()
        per_layer = []
        for layer in self._layer_indices(layers):
            b_O = self.model.blocks[layer].attn.b_O.detach().to(frozen.z).expand_as(frozen.z)
            term = self._map_term(b_O, frozen, "center", 0.0)
            per_layer.append(term if ln_mode == "center" else torch.zeros_like(term))
        out = torch.stack(per_layer, dim=1)
        return self._out(self._finish(out, frozen, normalize, batch_dim=0))

    def decompose_tokens(
        self,
        layers: int | Sequence[int] | None = None,
        ln_mode: LnMode = "center",
        normalize: bool = False,
    ) -> Float[Tensor, "batch pos d_embed"]:
        """Direct effect of every source token through the attention layers, summed over the
        selected layers and all heads (``pos = 0`` is the class token).

        Summed over ``pos`` this equals :meth:`decompose_heads` summed over layers and heads.

        Args:
            layers: Layer indices (negative allowed); default all.
            ln_mode: ``"center"`` or ``"split"``.
            normalize: Divide by the embedding's norm.

        Returns:
            ``[batch, pos, d_embed]``.

        Example:
            >>> tokens = cache.decompose_tokens(layers=range(-4, 0))  # doctest: +SKIP
            >>> patch_scores = tokens[:, 1:] @ text_embedding  # doctest: +SKIP
        """
        self._check_mode(ln_mode)
        frozen = self._frozen()
        total = None
        for layer in self._layer_indices(layers):
            pattern, values = self._attention_rows(layer)
            W = self._head_weights(layer, ln_mode, values)  # [head, d_head, d_embed]
            weighted = values * pattern.transpose(1, 2)[..., None]  # [batch, pos, head, d_head]
            term = weighted.flatten(2) @ W.flatten(0, 1)  # [batch, pos, d_embed]
            term = term / frozen.sigma[:, None, None]
            constant = self._head_constant(layer, frozen, ln_mode, per=values.shape[1])
            if constant is not None:
                term = term + constant[:, None]
            total = term if total is None else total + term
        return self._out(self._finish(total, frozen, normalize, batch_dim=0))

    def decompose_heads_tokens(
        self,
        directions: Float[Tensor, "k d_embed"] | None = None,
        layers: int | Sequence[int] | None = None,
        ln_mode: LnMode = "center",
        normalize: bool = False,
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
            normalize: Divide by the embedding's norm.

        Returns:
            ``[batch, layer, head, pos, k]`` or ``[batch, layer, head, pos, d_embed]``.

        Example:
            >>> texts = clip.encode(["a dog", "a cat"])  # doctest: +SKIP
            >>> scores = cache.decompose_heads_tokens(texts, layers=[-1])  # doctest: +SKIP
        """
        self._check_mode(ln_mode)
        frozen = self._frozen()
        directions = self._check_directions(directions, frozen.z)
        layer_ids = self._layer_indices(layers)
        cfg = self._cfg
        batch = frozen.z.shape[0]
        width = cfg.d_embed if directions is None else directions.shape[0]
        out = frozen.z.new_empty(batch, len(layer_ids), cfg.n_heads, cfg.n_pos, width)
        right = None if directions is None else self._ln_weights(frozen.z)[2] @ directions.T
        for slot, layer in enumerate(layer_ids):
            pattern, values = self._attention_rows(layer)
            W = self._head_weights(layer, ln_mode, values, right)  # [head, d_head, width]
            weighted = values * (
                pattern.transpose(1, 2)[..., None] / frozen.sigma[:, None, None, None]
            )
            weighted = weighted.permute(0, 2, 1, 3)  # [batch, head, pos, d_head]
            if weighted.requires_grad and torch.is_grad_enabled():
                out[:, slot] = weighted @ W  # differentiable (out= variants are not)
            else:
                for b in range(batch):  # out[b, slot] is contiguous: no temporary, no copy
                    torch.bmm(weighted[b], W, out=out[b, slot])
            constant = self._head_constant(layer, frozen, ln_mode, per=cfg.n_heads * cfg.n_pos)
            if constant is not None:
                if directions is not None:
                    constant = constant @ directions.T
                out[:, slot] += constant[:, None, None]
        return self._out(self._finish(out, frozen, normalize, batch_dim=0))
