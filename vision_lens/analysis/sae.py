"""Sparse autoencoders (SAEs) spliced into a :class:`vision_lens.HookedViT`, with their
reconstruction error kept as a term of its own so that every decomposition stays exact.

* :class:`SparseAutoencoder`: the protocol, anything with ``encode(x) -> features`` and
  ``decode(features) -> x_hat`` (an SAELens ``SAE``, an ``overcomplete`` SAE wrapped to return
  its codes, :class:`StandardSAE`).
* :func:`splice_sae` returns a :class:`SAESplice`: the activation at a hook point becomes
  ``decode(encode(x)) + error`` with ``error = x - decode(encode(x))`` computed from the clean
  features, so the forward pass is unchanged (up to float rounding) while the features, the
  reconstruction and the error are hook points of their own
  (``"<hook>.sae.hook_features"``, ``"<hook>.sae.hook_reconstruction"``,
  ``"<hook>.sae.hook_error"``). Editing the features (a hook on ``hook_features``) changes the
  reconstruction but not the error, as SAELens' ``use_error_term``.
* :func:`run_with_sae_cache`: ``run_with_cache`` with SAEs spliced in; the cache also holds
  those three entries per SAE.
* :func:`sae_direct_effects`: the direct effect (through the readout, as
  :meth:`vision_lens.ActivationCache.decompose_layers` maps a residual-stream term) of every
  feature at a residual-stream hook, plus the decoder bias and the error; they sum exactly to
  that residual stream's direct effect.
* :func:`load_saelens_sae` / :meth:`StandardSAE.save` (from
  :mod:`vision_lens.analysis.sae_format`, re-exported here): SAELens' on-disk format (a folder
  with ``cfg.json`` and ``sae_weights.safetensors``) without needing ``sae-lens``.

Example:
    >>> import torch, vision_lens as vl
    >>> from vision_lens.analysis.sae import StandardSAE, run_with_sae_cache
    >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
    >>> sae = StandardSAE.random(d_in=model.cfg.d_model, d_sae=64, seed=0)
    >>> images = torch.randn(2, 3, 16, 16)
    >>> out, cache = run_with_sae_cache(model, images, {"blocks.0.hook_resid_post": sae})
    >>> cache["blocks.0.hook_resid_post.sae.hook_features"].shape
    torch.Size([2, 5, 64])
    >>> torch.allclose(out, model(images), atol=1e-5)
    True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.hook_points import HookPoint

from vision_lens.analysis.sae_format import StandardSAE, hook_width, load_saelens_sae
from vision_lens.cache import ActivationCache
from vision_lens.utils.checks import check_finite

SAE_HOOKS = ("hook_features", "hook_reconstruction", "hook_error")
_RESIDUAL = re.compile(r"^blocks\.(\d+)\.hook_(resid_pre|resid_mid|resid_post|attn_out|mlp_out)$")


@runtime_checkable
class SparseAutoencoder(Protocol):
    """What :func:`splice_sae` needs: ``encode`` ``[..., d_in] -> [..., d_sae]`` and ``decode``
    ``[..., d_sae] -> [..., d_in]``. :func:`sae_direct_effects` also needs ``decode`` to be
    affine (``W_dec``/``b_dec`` attributes are used when present, otherwise read off by
    decoding the zero and unit codes)."""

    def encode(self, x: Tensor) -> Tensor: ...

    def decode(self, features: Tensor) -> Tensor: ...


def _sae_width(sae: Any) -> int | None:
    for attr in ("d_in",):
        value = getattr(sae, attr, None)
        if isinstance(value, int):
            return value
    W_enc = getattr(sae, "W_enc", None)
    return W_enc.shape[0] if isinstance(W_enc, Tensor) and W_enc.dim() == 2 else None


def _check_sae(model: Any, hook_name: str, sae: object) -> SparseAutoencoder:
    if not isinstance(sae, SparseAutoencoder):
        raise TypeError(
            f"sae must have encode(x) and decode(features) methods, got {type(sae).__name__}."
        )
    width = hook_width(model, hook_name)
    d_in = _sae_width(sae)
    if width is not None and d_in is not None and width != d_in:
        raise ValueError(
            f"The SAE reads {d_in}-wide activations but {hook_name!r} is {width} wide: was it "
            "trained on another hook point or another model?"
        )
    return sae


class SAESplice(nn.Module):
    """An SAE spliced into one hook point (made by :func:`splice_sae`).

    The hook replaces ``x`` by ``reconstruction + error``: the SAE's features, reconstruction
    and error pass through the hook points ``hook_features`` ``[batch, pos, d_sae]``,
    ``hook_reconstruction`` and ``hook_error`` ``[batch, pos, d_in]`` (named
    ``"<hook_name>.sae.hook_*"``). A hook that edits the features changes the reconstruction;
    the error stays the clean one.

    Use it as the hook list of ``model.hooks(fwd_hooks=...)`` / ``run_with_hooks`` (it iterates
    as ``[(hook_name, hook_fn)]``) or as a context manager that attaches it to the model.

    Attributes:
        hook_name: Where it is spliced.
        sae: The autoencoder.

    Example:
        >>> import torch, vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> sae = StandardSAE.random(d_in=model.cfg.d_model, d_sae=32)
        >>> splice = splice_sae(model, "blocks.0.hook_resid_post", sae)
        >>> x = torch.randn(1, 3, 16, 16)
        >>> torch.allclose(model.run_with_hooks(x, fwd_hooks=list(splice)), model(x), atol=1e-5)
        True
        >>> with splice:  # attached while inside
        ...     out = model(x)
    """

    def __init__(self, model: Any, hook_name: str, sae: SparseAutoencoder):
        super().__init__()
        self.hook_name = hook_name
        self.sae = sae
        self._model = [model]  # not a submodule: the splice must not own the model
        self._context: Any = None
        for name in SAE_HOOKS:
            point = HookPoint()
            point.name = f"{hook_name}.sae.{name}"
            setattr(self, name, point)

    def hook_points(self) -> dict[str, HookPoint]:
        """``{"<hook_name>.sae.hook_features": HookPoint, ...}``."""
        return {getattr(self, n).name: getattr(self, n) for n in SAE_HOOKS}

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        """``reconstruction + error`` for ``x``, running the three hook points."""
        sae_dtype = _param_dtype(self.sae, x.dtype)
        x_in = x.to(sae_dtype)
        clean = self.sae.encode(x_in)
        recon_clean = self.sae.decode(clean)
        if recon_clean.shape != x_in.shape:
            raise ValueError(
                f"SAE at {self.hook_name!r}: decode(encode(x)) has shape "
                f"{tuple(recon_clean.shape)}, x has {tuple(x_in.shape)}."
            )
        error = x_in - recon_clean
        features = self.hook_features(clean)
        recon = recon_clean if features is clean else self.sae.decode(features)
        recon = self.hook_reconstruction(recon)
        error = self.hook_error(error)
        return (recon + error).to(x.dtype)

    def hook_fn(self, activation: Tensor, hook: HookPoint) -> Tensor:
        """The forward hook attached at :attr:`hook_name`."""
        if hook_width(self._model[0], self.hook_name) not in (None, activation.shape[-1]):
            raise ValueError(f"{self.hook_name!r} gave an activation of {activation.shape}.")
        return self(activation)

    @property
    def fwd_hooks(self) -> list[tuple[str, Callable]]:
        """``[(hook_name, hook_fn)]`` for ``model.hooks`` / ``run_with_hooks``."""
        return [(self.hook_name, self.hook_fn)]

    def __iter__(self) -> Iterator[tuple[str, Callable]]:
        return iter(self.fwd_hooks)

    def __enter__(self) -> SAESplice:
        if self._context is not None:
            raise RuntimeError(f"The SAE splice at {self.hook_name!r} is already attached.")
        self._context = self._model[0].hooks(fwd_hooks=self.fwd_hooks)
        self._context.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        context, self._context = self._context, None
        context.__exit__(*exc)


def _param_dtype(module: object, default: torch.dtype) -> torch.dtype:
    if isinstance(module, nn.Module):
        for p in module.parameters():
            return p.dtype
    return default


def splice_sae(model: Any, hook_name: str, sae: SparseAutoencoder) -> SAESplice:
    """Splice ``sae`` into ``model`` at ``hook_name``, its reconstruction error kept as a term.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        hook_name: A hook point of ``model`` (``model.hook_names()``), e.g.
            ``"blocks.3.hook_resid_post"``.
        sae: A :class:`SparseAutoencoder` for that hook's width.

    Returns:
        A :class:`SAESplice`: ``model.run_with_hooks(images, fwd_hooks=list(splice))``, or
        ``with splice: model(images)``.

    Raises:
        KeyError: ``hook_name`` is no hook point of ``model``.
        TypeError: ``sae`` has no ``encode``/``decode``.
        ValueError: The SAE's width differs from the hook's.

    Example:
        >>> import torch, vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> splice = splice_sae(model, "blocks.1.hook_resid_pre",
        ...                     StandardSAE.random(d_in=model.cfg.d_model, d_sae=32))
        >>> list(splice.hook_points())[0]
        'blocks.1.hook_resid_pre.sae.hook_features'
    """
    return SAESplice(model, hook_name, _check_sae(model, hook_name, sae))


def run_with_sae_cache(
    model: Any,
    images: Float[Tensor, "batch 3 height width"],
    saes: Mapping[str, SparseAutoencoder],
    **run_with_cache_kwargs: Any,
) -> tuple[Float[Tensor, "batch d_embed"], ActivationCache]:
    """``model.run_with_cache(images)`` with every SAE of ``saes`` spliced in.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        images: Preprocessed images.
        saes: ``{hook_name: sae}``.
        **run_with_cache_kwargs: Passed to ``run_with_cache`` (``names_filter``, ``device``);
            the SAE entries are always kept (on ``device`` when given).

    Returns:
        ``(output, cache)``; the cache also holds ``"<hook>.sae.hook_features"``
        ``[batch, pos, d_sae]``, ``"<hook>.sae.hook_reconstruction"`` and
        ``"<hook>.sae.hook_error"`` ``[batch, pos, d_in]`` for each SAE. The output equals the
        unspliced model's up to float rounding, and the cache's decompositions stay exact.

    Raises:
        KeyError, TypeError, ValueError: As :func:`splice_sae`; ``saes`` empty.

    Example:
        >>> import torch, vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> sae = StandardSAE.random(d_in=model.cfg.d_model, d_sae=32)
        >>> _, cache = run_with_sae_cache(model, torch.randn(2, 3, 16, 16),
        ...                               {"blocks.0.hook_mlp_out": sae})
        >>> cache["blocks.0.hook_mlp_out.sae.hook_error"].shape
        torch.Size([2, 5, 32])
    """
    if not isinstance(saes, Mapping) or not saes:
        raise ValueError("saes must be a non-empty {hook_name: sae} mapping.")
    for key in ("remove_batch_dim", "incl_bwd", "return_cache_object", "pos_slice"):
        if run_with_cache_kwargs.get(key):
            raise ValueError(f"run_with_sae_cache does not support {key}=; use run_with_cache.")
    splices = [splice_sae(model, name, sae) for name, sae in saes.items()]
    device = run_with_cache_kwargs.get("device")
    store: dict[str, Tensor] = {}

    def save(tensor: Tensor, hook: HookPoint) -> None:
        t = tensor.detach()
        store[hook.name] = t if device is None else t.to(device)

    points = [p for s in splices for p in s.hook_points().values()]
    for point in points:
        point.add_hook(save)
    try:
        with model.hooks(fwd_hooks=[h for s in splices for h in s.fwd_hooks]):
            out, cache = model.run_with_cache(images, **run_with_cache_kwargs)
    finally:
        for point in points:
            point.remove_hooks("fwd")
    for name, tensor in store.items():
        cache.cache_dict[name] = tensor
    return out, cache


# ---------------------------------------------------------------------- direct effects
class SAEDirectEffects(NamedTuple):
    """What :func:`sae_direct_effects` returns; :meth:`total` is the residual stream's direct
    effect.

    Attributes:
        features: ``[batch, feature, out]``, each feature's ``f_i W_dec[i]`` through the readout.
        decoder_bias: ``[batch, out]``, ``b_dec`` through the readout.
        error: ``[batch, out]``, the reconstruction error through the readout.
    """

    features: Float[Tensor, "batch feature out"]
    decoder_bias: Float[Tensor, "batch out"]
    error: Float[Tensor, "batch out"]

    def total(self) -> Float[Tensor, "batch out"]:
        """Features + decoder bias + error: the direct effect of the hook's activation."""
        return self.features.sum(1) + self.decoder_bias + self.error


def _affine_decoder(sae: SparseAutoencoder, d_sae: int, like: Tensor) -> tuple[Tensor, Tensor]:
    """``(W_dec [d_sae, d_in], b_dec [d_in])``: the attributes when present, otherwise read off
    ``decode`` of the zero code and the unit codes."""
    W, b = getattr(sae, "W_dec", None), getattr(sae, "b_dec", None)
    if isinstance(W, Tensor) and isinstance(b, Tensor) and W.shape[0] == d_sae:
        return W.detach().to(like), b.detach().to(like)
    dtype = _param_dtype(sae, like.dtype)
    with torch.no_grad():
        codes = torch.cat([torch.zeros(1, d_sae), torch.eye(d_sae)]).to(like.device, dtype)
        out = sae.decode(codes).to(like)
    b = out[0] if b is None or not isinstance(b, Tensor) else b.detach().to(like)
    return out[1:] - out[0], b


def sae_direct_effects(
    cache: ActivationCache,
    hook_name: str,
    sae: SparseAutoencoder,
    directions: Float[Tensor, "k d_embed"] | None = None,
    unit_output: bool = False,
    chunk_size: int = 512,
) -> SAEDirectEffects:
    """Direct effects of an SAE's features at a residual-stream hook, plus its decoder bias and
    its reconstruction error, which sum exactly to that activation's direct effect.

    At the readout's positions ``x = sum_i f_i W_dec[i] + b_dec + error``; every term is mapped
    through the readout with the final norm's statistics frozen, centred over ``d_model`` as
    :meth:`vision_lens.ActivationCache.decompose_layers` maps a residual-stream term
    (``ln_mode="center"``). For ``blocks.{last}.hook_resid_post`` the terms plus that method's
    ``bias`` component (and ``readout_mlp`` for an attention-pooling head) sum to the output;
    for ``blocks.L.hook_resid_post`` they sum to its ``embed``, ``L0_attn`` ... ``L{L}_mlp``.

    Args:
        cache: A cache of the model (``run_with_sae_cache`` or ``run_with_cache``) holding
            ``hook_name``, ``ln_final.hook_scale`` and the last block's ``hook_resid_post``.
        hook_name: ``blocks.L.hook_resid_pre`` / ``resid_mid`` / ``resid_post`` /
            ``attn_out`` / ``mlp_out``.
        sae: The SAE (its ``decode`` must be affine).
        directions: ``[k, d_embed]`` directions (e.g. text embeddings) to project on.
        unit_output: Divide by the output's norm.
        chunk_size: Features per step.

    Returns:
        A :class:`SAEDirectEffects` (``out`` is ``d_embed``, or ``k`` with ``directions``).

    Raises:
        KeyError: Unknown hook name (or an :class:`vision_lens.IncompleteCacheError`).
        ValueError: Not a residual-stream hook; width mismatch; NaN in ``directions``;
            ``decode`` not affine.

    Example:
        >>> import torch, vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> sae = StandardSAE.random(d_in=model.cfg.d_model, d_sae=32)
        >>> hook = "blocks.1.hook_resid_post"
        >>> out, cache = run_with_sae_cache(model, torch.randn(2, 3, 16, 16), {hook: sae})
        >>> effects = sae_direct_effects(cache, hook, sae)
        >>> terms, labels = cache.decompose_layers()
        >>> torch.allclose(effects.total() + terms[labels.index("bias")], out, atol=1e-5)
        True
    """
    if not isinstance(cache, ActivationCache) or cache.model is None:
        raise TypeError("cache must be a vision_lens ActivationCache with its model.")
    if not cache.has_batch_dim:
        raise ValueError("the cache has no batch axis (remove_batch_dim): use a batched cache.")
    cache.check_fresh()
    model = cache.model
    sae = _check_sae(model, hook_name, sae)
    if not _RESIDUAL.match(hook_name):
        raise ValueError(
            f"{hook_name!r} is not a residual-stream term: direct effects through the readout "
            "need blocks.L.hook_resid_pre/resid_mid/resid_post/attn_out/mlp_out."
        )
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
    lin, norm = cache.frozen_readout()
    x = check_finite(cache.readout_rows(hook_name), hook_name).to(lin.w)
    with torch.no_grad():
        feats = sae.encode(x.to(_param_dtype(sae, x.dtype))).to(lin.w)
    W_dec, b_dec = _affine_decoder(sae, feats.shape[-1], lin.w)
    recon = feats @ W_dec + b_dec
    with torch.no_grad():
        decoded = sae.decode(feats.to(_param_dtype(sae, x.dtype))).to(lin.w)
    tol = 1e-4 * (1.0 + decoded.abs().max())
    if (decoded - recon).abs().max() > tol:
        raise ValueError(
            "sae.decode is not affine (decode(f) != f @ W_dec + b_dec), so its output does not "
            "split into per-feature terms."
        )
    error = x - recon
    M, M_out = lin.M, lin.M_out
    width = model.cfg.d_embed
    if directions is not None:
        directions = check_finite(directions, "directions").to(lin.w)
        directions = directions[None] if directions.dim() == 1 else directions
        if directions.dim() != 2 or directions.shape[1] != model.cfg.d_embed:
            raise ValueError(
                f"directions must be [k, {model.cfg.d_embed}], got {tuple(directions.shape)}."
            )
        width = directions.shape[0]
        if M_out is None:
            M = M @ directions.T
        else:
            M_out = M_out @ directions.T

    def to_output(values: Tensor) -> Tensor:  # [..., channel, k] -> [..., out]
        return values.sum(-2) if M_out is None else torch.einsum("...gk,gke->...e", values, M_out)

    def map_term(c: Tensor) -> Tensor:  # [batch, query, d_model] -> [batch, out]
        if lin.centers:
            c = c - c.mean(-1, keepdim=True)
        return to_output(torch.einsum("bgq,bqd,gdk->bgk", lin.w, c, M))

    n_features = feats.shape[-1]
    out = lin.w.new_empty(lin.w.shape[0], n_features, width)
    for start in range(0, n_features, chunk_size):
        chunk = slice(start, start + chunk_size)
        W = W_dec[chunk]
        if lin.centers:
            W = W - W.mean(-1, keepdim=True)
        pooled = torch.einsum("bgq,bqn->bng", lin.w, feats[..., chunk])
        out[:, chunk] = to_output(pooled[..., None] * torch.einsum("nd,gdk->ngk", W, M))
    result = SAEDirectEffects(out, map_term(b_dec.expand_as(x)), map_term(error))
    if unit_output:
        result = SAEDirectEffects(
            result.features / norm[:, None, None],
            result.decoder_bias / norm[:, None],
            result.error / norm[:, None],
        )
    return result


__all__ = [
    "SAEDirectEffects",
    "SAESplice",
    "SparseAutoencoder",
    "StandardSAE",
    "hook_width",
    "load_saelens_sae",
    "run_with_sae_cache",
    "sae_direct_effects",
    "splice_sae",
]
