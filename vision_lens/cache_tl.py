"""TransformerLens' cache methods with vision semantics: :class:`TransformerLensMethods`.

:class:`vision_lens.ActivationCache` inherits TransformerLens' ``ActivationCache`` API. This mixin
(its first base class) keeps every inherited method that is right for a ViT and replaces those
that would be silently wrong:

* the "unembedding" is the readout: the final norm (its cached scale) at the position(s) the
  readout reads, the pooling and the projection ``W_proj``
  (:meth:`TransformerLensMethods.apply_readout_to_stack`); there is no vocabulary, so
  :meth:`~TransformerLensMethods.logit_attrs` takes text directions ``[k, d_embed]`` instead of
  tokens, and ``logit_lens`` refuses;
* the embedding term is ``blocks.0.hook_resid_pre`` (``ln_pre`` of the patch, class and position
  embeddings), which is what the blocks add to: ``hook_embed + hook_pos_embed`` is not, once
  ``ln_pre`` normalises them;
* a norm's cached scale is used only at the positions and batch it was cached for (a
  decomposition cache keeps only the readout's rows; ``final_ln_after_pool`` normalises the pooled
  vector, not any position), else the method raises instead of broadcasting;
* MLP neurons are the ``d_mlp`` terms of ``mlp.hook_post @ W_out``, which needs the MLP to be
  linear after ``hook_post`` (refused for ``mlp_norm``).

``pos_slice`` arguments index our positions (:meth:`vision_lens.ActivationCache.token_names`
names them: prefix tokens, then patches). The ``decompose_*`` methods of the cache remain the
exact, cheap route to the output's direct effects; these methods are TransformerLens'
residual-stream views.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens.utilities.slice import Slice

from vision_lens.errors import IncompleteCacheError

_NO_VOCAB = (
    "A ViT has no vocabulary, so there are no tokens to attribute to: pass text directions "
    "[k, d_embed] (e.g. clip.encode(['a dog'])), or use cache.decompose_layers(), "
    "cache.decompose_heads() or cache.decompose_heads_tokens(directions) for the exact direct "
    "effects on the output."
)


def _slice(value: Any) -> Slice:
    return value if isinstance(value, Slice) else Slice(value)


class TransformerLensMethods:
    """TransformerLens' residual-stream methods for a ViT cache (mixed into
    :class:`vision_lens.ActivationCache`; see the module docstring for what changes).

    Example:
        >>> import torch, vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> embed, cache = model.run_with_cache(torch.randn(2, 3, 16, 16))
        >>> stack, labels = cache.decompose_resid(return_labels=True)
        >>> labels
        ['embed', '0_attn_out', '0_mlp_out', '1_attn_out', '1_mlp_out']
        >>> terms = cache.apply_readout_to_stack(stack)  # [component, batch, d_embed]
        >>> bias = cache.decompose_layers().terms[-1]
        >>> torch.allclose(terms.sum(0) + bias, embed, atol=1e-5)
        True
    """

    # ------------------------------------------------------------------ helpers
    def _tl_layer(self, layer: int | None) -> int:
        """TransformerLens' ``layer`` (``None``, ``-1`` or ``n_layers``: the readout's input;
        other negatives count back from it) as ``0 .. n_layers``."""
        n = self.model.cfg.n_layers
        if layer is None:
            return n
        if layer < 0:
            layer += n + 1
        if not 0 <= layer <= n:
            raise ValueError(f"layer must be in [-{n + 1}, {n}] or None, got {layer}.")
        return layer

    def _refuse_hidden_norm(self) -> None:
        if self.model.cfg.mlp_norm:
            raise NotImplementedError(
                "This model's MLPs normalise their hidden layer (mlp_norm) between "
                "mlp.hook_post and W_out, so hook_post * W_out is not a neuron's output. Use "
                "whole MLP terms instead: cache.decompose_resid(mode='mlp') or "
                "cache.get_full_resid_decomposition(expand_neurons=False), or "
                "cache.decompose_layers() for their direct effects."
            )

    def _get_cached_ln_scale(
        self, layer: int | None, mlp_input: bool, pos_slice: Slice, batch_slice: Any = None
    ) -> Tensor:
        """TransformerLens' cached norm scale, refused where it belongs to no position."""
        if self._tl_layer(layer) == self.model.cfg.n_layers:
            if mlp_input:
                raise ValueError("mlp_input=True has no meaning for the readout (layer=n_layers).")
            if self.model.cfg.final_ln_after_pool:
                raise ValueError(
                    "This model's final norm acts on the pooled vector (final_ln_after_pool), so "
                    "its cached scale belongs to no position and cannot normalise a per-position "
                    "stack. Use cache.apply_readout_to_stack(stack) (pooling, the norm's frozen "
                    "statistics and the projection) or cache.decompose_layers()."
                )
        return super()._get_cached_ln_scale(layer, mlp_input, pos_slice, batch_slice)

    def _ensure_head_results(self) -> bool:
        for layer in range(self.model.cfg.n_layers):
            result, z = f"blocks.{layer}.attn.hook_result", f"blocks.{layer}.attn.hook_z"
            if result not in self.cache_dict and z not in self.cache_dict:
                raise IncompleteCacheError(
                    f"Per-head results need {result!r} or {z!r}, and this cache has neither "
                    "(a decomposition cache keeps only what decompose_* reads). Run "
                    "model.run_with_cache(images) without names_filter, or use "
                    "cache.decompose_heads() for the heads' direct effects."
                )
        return super()._ensure_head_results()

    def _stack_neuron_results_apply_ln_projected(self, *args: Any, **kwargs: Any) -> Tensor:
        self._refuse_hidden_norm()
        return super()._stack_neuron_results_apply_ln_projected(*args, **kwargs)

    # ------------------------------------------------------------------ norms and readout
    def apply_ln_to_stack(
        self,
        residual_stack: Float[Tensor, "component *batch_and_pos d_model"],
        layer: int | None = None,
        mlp_input: bool = False,
        pos_slice: Any = None,
        batch_slice: Any = None,
        has_batch_dim: bool = True,
        recompute_ln: bool = False,
    ) -> Float[Tensor, "component *batch_and_pos d_model"]:
        """TransformerLens' ``apply_ln_to_stack``: centre each term (LayerNorm; RMSNorm does not
        centre) and divide it by the norm's cached scale at the same image and position, i.e.
        what each term contributes to that norm's output (before its weight and bias).

        ``layer`` ``0 .. n_layers - 1`` is ``blocks.{layer}.ln1`` (``ln2`` with ``mlp_input``);
        ``None``, ``-1`` or ``n_layers`` is the final norm (``ln_final``), per position.
        ``recompute_ln=True`` (final norm only) applies ``model.ln_final`` to each term with its
        own statistics, weight and bias (a logit lens). The stack's batch and position axes must
        be those of the cached scale after ``pos_slice`` and ``batch_slice``: a decomposition
        cache holds the final scale at the readout's rows only, and a stack over other positions
        is refused rather than broadcast.

        Args:
            residual_stack: ``[component, batch, pos, d_model]`` (``[component, pos, d_model]``
                with ``has_batch_dim=False``; no ``pos`` after an integer ``pos_slice``).
            layer: The norm whose input the terms are taken as (see above).
            mlp_input: ``ln2`` rather than ``ln1`` of ``layer``.
            pos_slice: The positions the stack holds (applied to the scale, not the stack).
            batch_slice: Applied to both the stack and the scale.
            has_batch_dim: Whether the stack has a batch axis.
            recompute_ln: See above.

        Returns:
            The stack, same shape.

        Raises:
            ValueError: The shapes disagree, or the final norm acts after pooling
                (``final_ln_after_pool``): use :meth:`apply_readout_to_stack`.

        Example:
            >>> stack = cache.decompose_resid(layer=1)  # doctest: +SKIP
            >>> normed = cache.apply_ln_to_stack(stack, layer=1)  # doctest: +SKIP
        """
        layer = self._tl_layer(layer)
        if layer == self.model.cfg.n_layers and recompute_ln:
            if self.model.cfg.final_ln_after_pool:
                self._get_cached_ln_scale(layer, mlp_input, _slice(pos_slice))  # raises
            self.check_fresh()  # ln_final's weights are read
        else:
            batch = _slice(batch_slice)
            scale = self._get_cached_ln_scale(layer, mlp_input, _slice(pos_slice), batch)
            stack = batch.apply(residual_stack, dim=1) if has_batch_dim else residual_stack
            if not has_batch_dim and self.has_batch_dim and scale.shape[0] == 1:
                scale = scale[0]
            if tuple(stack.shape[1:-1]) != tuple(scale.shape[:-1]):
                raise ValueError(
                    f"The stack's batch and position axes {tuple(stack.shape[1:-1])} are not "
                    f"those of the cached norm scale {tuple(scale.shape[:-1])} (after pos_slice "
                    "and batch_slice). Pass the pos_slice the stack was taken with; a "
                    "decomposition cache holds the final norm at the readout's positions only "
                    "(use cache.apply_readout_to_stack for the readout)."
                )
        return super().apply_ln_to_stack(
            residual_stack, layer, mlp_input, pos_slice, batch_slice, has_batch_dim, recompute_ln
        )

    def apply_readout_to_stack(
        self,
        residual_stack: Float[Tensor, "component batch pos d_model"],
        pos_slice: Any = None,
        has_batch_dim: bool = True,
    ) -> Float[Tensor, "component batch d_embed"]:
        """Each term of a final-residual-stream stack through the readout, the vision
        "unembedding": at the readout's positions, centred (LayerNorm) and divided by the final
        norm's cached scale, times its weight, pooled, projected (``ln_mode="center"`` of
        :meth:`vision_lens.ActivationCache.decompose_layers`).

        The map is linear, so a stack that sums to ``blocks.{n_layers-1}.hook_resid_post`` (e.g.
        :meth:`decompose_resid` or :meth:`get_full_resid_decomposition`) maps to terms that sum to
        the output minus the readout's constant, the ``bias`` term of ``decompose_layers()``
        (and minus ``readout_mlp`` for an attention-pooling head).

        Args:
            residual_stack: ``[component, batch, pos, d_model]``, over every position or over
                the readout's positions only (``model.readout.query_positions``); batchless
                with ``has_batch_dim=False``.
            pos_slice: The positions the stack holds, if sliced: they must be the readout's.
            has_batch_dim: Whether the stack has a batch axis.

        Returns:
            ``[component, batch, d_embed]`` (``[component, d_embed]`` without a batch axis).

        Example:
            >>> heads = cache.stack_head_results()  # [L * H, batch, pos, d_model]  # doctest: +SKIP
            >>> cache.apply_readout_to_stack(heads)  # [L * H, batch, d_embed]  # doctest: +SKIP
        """
        readout = self.model.readout
        rows, n_pos = readout.query_positions, self.model.cfg.n_pos
        wanted = list(range(rows.start, rows.stop))
        stack = residual_stack if has_batch_dim else residual_stack.unsqueeze(1)
        if pos_slice is not None:
            positions = _slice(pos_slice)
            held = [int(i) for i in torch.as_tensor(positions.indices(n_pos)).reshape(-1)]
            if held != wanted:
                raise ValueError(
                    f"The readout reads positions {wanted} ({readout.position_names()[rows]}); "
                    f"a stack holding positions {held} does not determine the output."
                )
            if positions.mode == "int":
                stack = stack.unsqueeze(-2)
        elif stack.dim() == 4 and stack.shape[2] == n_pos:
            stack = stack[:, :, rows]
        if stack.dim() != 4 or stack.shape[2] != len(wanted):
            raise ValueError(
                f"residual_stack must be [component, batch, pos, d_model] over all {n_pos} "
                f"positions or the readout's {len(wanted)}, got {tuple(residual_stack.shape)}."
            )
        lin = self._frozen().lin
        if stack.shape[1] != lin.w.shape[0]:
            raise ValueError(
                f"The stack's batch {stack.shape[1]} is not the cache's {lin.w.shape[0]}; slice "
                "the cache too (cache.apply_slice_to_batch_dim)."
            )
        stack = stack.to(lin.M)
        if lin.centers:
            stack = stack - stack.mean(-1, keepdim=True)
        pooled = torch.einsum("bgq,nbqd->nbgd", lin.w, stack)
        out = lin.to_output(torch.einsum("nbgd,gdk->nbgk", pooled, lin.M))
        return out if has_batch_dim else out[:, 0]

    def logit_attrs(
        self,
        residual_stack: Float[Tensor, "component batch pos d_model"],
        directions: Float[Tensor, "*k d_embed"],
        incorrect_directions: Float[Tensor, "*k d_embed"] | None = None,
        pos_slice: Any = None,
        batch_slice: Any = None,
        has_batch_dim: bool = True,
    ) -> Float[Tensor, "component batch *k"]:
        """Attribution of each term of a final-residual-stream stack to text directions: the
        term through the readout (:meth:`apply_readout_to_stack`, in place of the final norm and
        unembedding) dotted with each direction (minus ``incorrect_directions``, for a
        difference such as "dog" minus "cat").

        Args:
            residual_stack: ``[component, batch, pos, d_model]``, as for
                :meth:`apply_readout_to_stack`.
            directions: ``[d_embed]`` or ``[k, d_embed]`` (e.g. CLIP text embeddings). Token ids
                or strings are refused: a ViT has no vocabulary.
            incorrect_directions: Same shape as ``directions``, or ``None``.
            pos_slice: The positions the stack holds, if sliced (the readout's).
            batch_slice: Not supported: slice the cache with
                :meth:`vision_lens.ActivationCache.apply_slice_to_batch_dim`.
            has_batch_dim: Whether the stack has a batch axis.

        Returns:
            ``[component, batch]`` for one direction, ``[component, batch, k]`` for ``k``
            (no batch axis without one).

        Example:
            >>> texts = clip.encode(["a dog", "a cat"])  # doctest: +SKIP
            >>> attrs = cache.logit_attrs(cache.decompose_resid(), texts)  # doctest: +SKIP
            >>> attrs.shape  # [component, batch, 2]  # doctest: +SKIP
        """
        if batch_slice is not None and _slice(batch_slice).mode != "identity":
            raise ValueError(
                "batch_slice is not supported: slice the cache instead "
                "(cache.apply_slice_to_batch_dim(batch_slice)) and pass the matching stack."
            )
        d_embed = self.model.cfg.d_embed
        pairs = [("directions", directions), ("incorrect_directions", incorrect_directions)]
        for name, value in pairs:
            if value is None:
                continue
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise TypeError(f"{name}: {_NO_VOCAB}")
            if value.dim() not in (1, 2) or value.shape[-1] != d_embed:
                raise ValueError(
                    f"{name} must be [d_embed] or [k, d_embed] with d_embed={d_embed}, got "
                    f"{tuple(value.shape)}."
                )
        if incorrect_directions is not None:
            if incorrect_directions.shape != directions.shape:
                raise ValueError(
                    "directions and incorrect_directions must have the same shape, got "
                    f"{tuple(directions.shape)} and {tuple(incorrect_directions.shape)}."
                )
            directions = directions - incorrect_directions
        terms = self.apply_readout_to_stack(residual_stack, pos_slice, has_batch_dim)
        directions = directions.to(terms)
        return terms @ (directions if directions.dim() == 1 else directions.T)

    def logit_lens(self, **kwargs: Any) -> Any:
        """Refused: TransformerLens' logit lens reads an unembedding ``W_U`` and a vocabulary.

        Use :meth:`accumulated_resid` with ``apply_ln=True`` (each stream through ``ln_final``
        with its own statistics) and pool and project with ``model.readout`` and
        ``model.W_proj``, or :meth:`apply_readout_to_stack` (frozen statistics).

        Example:
            >>> cache.logit_lens()  # doctest: +SKIP
            Traceback (most recent call last):
            NotImplementedError: ...
        """
        raise NotImplementedError(
            "logit_lens needs an unembedding and a vocabulary, which a ViT has not. Use "
            "cache.accumulated_resid(apply_ln=True) and pool and project with model.readout and "
            "model.W_proj, or cache.apply_readout_to_stack(cache.accumulated_resid()) with the "
            "final norm's frozen statistics."
        )

    # ------------------------------------------------------------------ decompositions
    def decompose_resid(
        self,
        layer: int | None = None,
        mlp_input: bool = False,
        mode: Literal["all", "mlp", "attn"] = "all",
        apply_ln: bool = False,
        pos_slice: Any = None,
        incl_embeds: bool = True,
        return_labels: bool = False,
    ) -> Tensor | tuple[Tensor, list[str]]:
        """The residual stream entering block ``layer`` as a stack of the terms written into
        it: ``embed`` (``blocks.0.hook_resid_pre``, the embeddings after ``ln_pre``), then
        ``{l}_attn_out`` and ``{l}_mlp_out`` for each earlier layer (TransformerLens' labels).

        The terms sum to ``blocks.{layer}.hook_resid_pre`` (``hook_resid_mid`` with
        ``mlp_input``; the last ``hook_resid_post`` for ``layer=None``), which TransformerLens'
        ``hook_embed + hook_pos_embed`` would not once ``ln_pre`` normalises them.

        Args:
            layer: ``0 .. n_layers``; ``None`` or ``-1``: the final residual stream.
            mlp_input: Also ``{layer}_attn_out``: the MLP's input rather than the attention's.
            mode: ``"all"``, ``"attn"`` or ``"mlp"`` sublayers (``embed`` either way).
            apply_ln: :meth:`apply_ln_to_stack` at that layer's norm.
            pos_slice: Positions to keep (ours: :meth:`token_names`).
            incl_embeds: Include ``embed``.
            return_labels: Also return the labels.

        Returns:
            ``[component, batch, pos, d_model]``, and the labels if asked.

        Example:
            >>> stack, labels = cache.decompose_resid(layer=1, return_labels=True)  # doctest: +SKIP
            >>> labels  # doctest: +SKIP
            ['embed', '0_attn_out', '0_mlp_out']
        """
        layer = self._tl_layer(layer)
        if mlp_input and layer == self.model.cfg.n_layers:
            raise ValueError("mlp_input=True needs a block (layer < n_layers).")
        positions = _slice(pos_slice)
        parts, labels = [], []
        if incl_embeds:
            parts.append(positions.apply(self["blocks.0.hook_resid_pre"], dim=-2)[None])
            labels.append("embed")
        if layer > 0 or (mlp_input and mode != "mlp"):
            stack, names = super().decompose_resid(
                layer, mlp_input, mode, False, positions, incl_embeds=False, return_labels=True
            )
            parts.append(stack)
            labels += names
        if not parts:
            raise ValueError(f"Nothing to decompose at layer {layer} without incl_embeds.")
        stack = torch.cat(parts)
        if apply_ln:
            stack = self.apply_ln_to_stack(
                stack, layer, mlp_input, positions, has_batch_dim=self.has_batch_dim
            )
        return (stack, labels) if return_labels else stack

    def get_neuron_results(
        self,
        layer: int,
        neuron_slice: Any = None,
        pos_slice: Any = None,
        project_output_onto: Tensor | None = None,
    ) -> Tensor:
        """Each neuron's output ``mlp.hook_post[..., n] * W_out[n]`` (TransformerLens'; ``b_out``
        is not a neuron's), refused for ``mlp_norm`` MLPs and a stale cache.

        Args:
            layer: Block index.
            neuron_slice: Neurons to keep.
            pos_slice: Positions to keep (ours).
            project_output_onto: ``[d_model]`` or ``[d_model, k]``, contracted with ``W_out``
                first.

        Returns:
            ``[batch, pos, neuron, d_model]`` (last axis ``k``, or none, when projected).

        Example:
            >>> neurons = cache.get_neuron_results(0)  # [b, pos, d_mlp, d_model]  # doctest: +SKIP
            >>> neurons.sum(-2) + model.blocks[0].mlp.b_out  # cache["mlp_out", 0]  # doctest: +SKIP
        """
        self.check_fresh()
        self._refuse_hidden_norm()
        return super().get_neuron_results(layer, neuron_slice, pos_slice, project_output_onto)

    def stack_neuron_results(self, layer: int, *args: Any, **kwargs: Any) -> Any:
        """TransformerLens' ``stack_neuron_results`` (every neuron of the layers before
        ``layer``, labels ``L{l}N{n}``), refused for ``mlp_norm`` MLPs and a stale cache;
        ``apply_ln`` is :meth:`apply_ln_to_stack`.

        Returns:
            ``[layer * d_mlp (+ 1), batch, pos, d_model]``, and labels if asked.

        Example:
            >>> stack = cache.stack_neuron_results(2, incl_remainder=True)  # doctest: +SKIP
            >>> stack.sum(0)  # == cache["resid_post", 1]  # doctest: +SKIP
        """
        self.check_fresh()
        self._refuse_hidden_norm()
        return super().stack_neuron_results(layer, *args, **kwargs)

    def get_full_resid_decomposition(
        self,
        layer: int | None = None,
        mlp_input: bool = False,
        expand_neurons: bool = True,
        apply_ln: bool = False,
        pos_slice: Any = None,
        return_labels: bool = False,
        project_output_onto: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, list[str]]:
        """The residual stream entering block ``layer`` split into every head (``L{l}H{h}``),
        every neuron (``L{l}N{n}``; or ``{l}_mlp_out`` with ``expand_neurons=False``), ``embed``
        (``blocks.0.hook_resid_pre``) and ``bias`` (the ``b_O`` of those attention layers and,
        with neurons, the ``b_out`` of those MLPs). The terms sum to
        ``blocks.{layer}.hook_resid_pre`` (``hook_resid_mid`` with ``mlp_input``; the final
        residual stream for ``layer=None``).

        Args:
            layer: ``0 .. n_layers``; ``None`` or ``-1``: the final residual stream.
            mlp_input: Include block ``layer``'s heads: the MLP's input.
            expand_neurons: One term per neuron rather than per MLP.
            apply_ln: :meth:`apply_ln_to_stack` at that layer's norm.
            pos_slice: Positions to keep (ours).
            return_labels: Also return the labels.
            project_output_onto: ``[d_model]`` or ``[d_model, k]`` applied last.

        Returns:
            ``[component, batch, pos, d_model]`` (last axis ``k``, or none, when projected),
            and the labels if asked.

        Example:
            >>> stack = cache.get_full_resid_decomposition()  # doctest: +SKIP
            >>> cache.apply_readout_to_stack(stack)  # each term's direct effect  # doctest: +SKIP
        """
        self.check_fresh()
        layer = self._tl_layer(layer)
        if mlp_input and layer == self.model.cfg.n_layers:
            raise ValueError("mlp_input=True needs a block (layer < n_layers).")
        positions = _slice(pos_slice)
        n_attn = layer + int(mlp_input)
        parts, labels = [], []
        heads, names = self.stack_head_results(n_attn, return_labels=True, pos_slice=positions)
        parts.append(heads)
        labels += names
        if layer > 0 and expand_neurons:
            self._refuse_hidden_norm()
            neurons, names = self.stack_neuron_results(
                layer, pos_slice=positions, return_labels=True
            )
        elif layer > 0:
            neurons, names = self.decompose_resid(
                layer, mode="mlp", pos_slice=positions, incl_embeds=False, return_labels=True
            )
        if layer > 0:
            parts.append(neurons)
            labels += names
        embed = positions.apply(self["blocks.0.hook_resid_pre"], dim=-2)[None]
        parts += [embed]
        bias = torch.zeros_like(embed[0, ..., :])
        blocks = self.model.blocks
        for index in range(n_attn):
            bias = bias + blocks[index].attn.b_O.detach().to(bias)
        for index in range(layer if expand_neurons else 0):
            bias = bias + blocks[index].mlp.b_out.detach().to(bias)
        parts.append(bias[None])
        labels += ["embed", "bias"]
        stack = torch.cat([p.to(embed) for p in parts])
        if apply_ln:
            stack = self.apply_ln_to_stack(
                stack, layer, mlp_input, positions, has_batch_dim=self.has_batch_dim
            )
        if project_output_onto is not None:
            stack = stack @ project_output_onto.to(stack)
        return (stack, labels) if return_labels else stack

    # ------------------------------------------------------------------ recurrent models
    def ssm_layers(self, mixer_type: Any = None) -> list[int]:
        """Blocks with a state-space (recurrent) mixer: none in a ViT.

        Returns:
            ``[]``.

        Example:
            >>> cache.ssm_layers()  # doctest: +SKIP
            []
        """
        return []

    def compute_ssm_effective_attention(self, *args: Any, **kwargs: Any) -> Any:
        """Refused: a ViT has attention, no SSM mixer; read ``cache["pattern", layer]``
        ``[batch, head, query, key]``.

        Example:
            >>> cache["pattern", 0].shape  # doctest: +SKIP
        """
        raise NotImplementedError(
            "A ViT has no SSM layers; its attention patterns are cache['pattern', layer] "
            "[batch, head, query, key]."
        )

    def compute_ssm_state(self, *args: Any, **kwargs: Any) -> Any:
        """Refused: a ViT has no recurrent state; its residual stream is
        ``cache["resid_post", layer]``.

        Example:
            >>> cache["resid_post", 0].shape  # doctest: +SKIP
        """
        raise NotImplementedError(
            "A ViT has no SSM layers and no recurrent state; read the residual stream with "
            "cache['resid_post', layer] or cache.accumulated_resid()."
        )
