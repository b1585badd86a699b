"""MLP neurons: their direct and second-order effects on the output, texts that describe them,
and the images that excite them.

* :func:`neuron_direct_effects`: each neuron's output ``post[..., n] * W_out[n]`` at the
  readout's positions, mapped through the frozen readout exactly as
  :meth:`vision_lens.ActivationCache.decompose_layers` maps the layer's MLP term; with
  :func:`mlp_bias_effect` the neurons sum to that term.
* :func:`neuron_second_order_effects`: Gandelsman et al., ICLR 2025 ("Interpreting the
  second-order effects of neurons in CLIP"). A neuron's output at every token is carried through
  each later attention layer (its ``ln1`` with the forward pass's statistics frozen, ``W_V``, the
  recorded pattern's rows at the readout's positions, ``W_O``) and then the readout; later MLPs
  are ignored (that is the definition).
* :func:`sparse_text_decomposition`: a direction written as a sparse non-negative combination of
  texts (as SpLiCE, Bhalla et al. 2024).
* :func:`top_activating_images`: a dataset pass keeping a running top-k of images per neuron.

The map through the readout is the cache's: with the final norm's statistics (and an
attention-pooling head's pattern) frozen, the readout is the linear map
``c -> sum_g (sum_q w[g, q] c_q) M_g`` of :class:`vision_lens.readout.LinearReadout`
(``docs/decomposition.md``). In ``ln_mode="center"`` every term is centred over ``d_model``
first; in ``"split"`` the neurons carry none of the norm's mean and biases (the layer's share
goes to :func:`mlp_bias_effect`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from vision_lens.cache import ActivationCache
from vision_lens.errors import IncompleteCacheError
from vision_lens.readout import LinearReadout
from vision_lens.utils.batching import batched
from vision_lens.utils.checks import (
    check_batch_size,
    check_directions,
    check_finite,
    layer_indices,
    neuron_indices,
)

LnMode = Literal["center", "split"]


# ---------------------------------------------------------------------------------- helpers
def _layer(layer: object, n_layers: int) -> int:
    if isinstance(layer, bool) or not isinstance(layer, int | np.integer):
        raise TypeError(f"layer must be one int (negative counts from the end), got {layer!r}.")
    return layer_indices(int(layer), n_layers)[0]


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _check_mode(ln_mode: str) -> None:
    if ln_mode not in ("center", "split"):
        raise ValueError(f"ln_mode must be 'center' or 'split', got {ln_mode!r}.")


def _check_cache(cache: object) -> ActivationCache:
    if not isinstance(cache, ActivationCache):
        raise TypeError(
            f"cache must be a vision_lens ActivationCache (from model.run_with_cache), got "
            f"{type(cache).__name__}."
        )
    if not cache.has_batch_dim:
        raise ValueError("the cache has no batch axis (remove_batch_dim): use a batched cache.")
    cache.check_fresh()
    return cache


def _every_position(cache: ActivationCache, name: str) -> Tensor:
    """:meth:`ActivationCache.entry` ``name``, which must hold every position."""
    tensor = cache.entry(name)
    n_pos = cache.model.cfg.n_pos
    if tensor.shape[1] != n_pos:
        raise IncompleteCacheError(
            f"Cache entry {name!r} has {tensor.shape[1]} positions, but this needs all {n_pos}. "
            "Cache without pos_slice: model.run_with_cache(images)."
        )
    return tensor


def _directions(directions: object, d_embed: int, like: Tensor) -> Tensor | None:
    directions = check_directions(directions, d_embed)
    return None if directions is None else directions.to(device=like.device, dtype=like.dtype)


def _fold(lin: LinearReadout, directions: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """The readout's maps ``M`` ``[channel, d_model, k]`` and ``M_out`` with the directions
    folded into the last factor (as the cache does for heads)."""
    M, M_out = lin.M, lin.M_out
    if directions is not None:
        if M_out is None:
            M = M @ directions.T
        else:
            M_out = M_out @ directions.T
    return M, M_out


def _to_output(x: Tensor, M_out: Tensor | None) -> Tensor:
    """``[batch, neuron, channel, k]`` summed over channels into the output space."""
    return x.sum(2) if M_out is None else torch.einsum("bngk,gke->bne", x, M_out)


def _activations(cache: ActivationCache, layer: int, readout_rows: bool) -> Tensor:
    """What multiplies ``W_out``: ``hook_post`` (or, for an MLP with a norm over its hidden
    layer, that norm's output, its statistics frozen) ``[batch, pos, d_mlp]``, at the readout's
    rows or at every position."""
    mlp = cache.model.blocks[layer].mlp
    read = cache.readout_rows if readout_rows else lambda name: _every_position(cache, name)
    if mlp.ln is None:
        return read(f"blocks.{layer}.mlp.hook_post")
    normed = read(f"blocks.{layer}.mlp.ln.hook_normalized")
    out = normed * mlp.ln.w.detach().to(normed)
    return out if mlp.ln.bias is None else out + mlp.ln.bias.detach().to(normed)


def _chunks(indices: list[int], chunk_size: int) -> Iterable[tuple[int, list[int]]]:
    chunk_size = _positive_int(chunk_size, "chunk_size")
    for start in range(0, len(indices), chunk_size):
        yield start, indices[start : start + chunk_size]


# ---------------------------------------------------------------------------------- effects
def neuron_direct_effects(
    cache: ActivationCache,
    layer: int,
    neurons: int | Sequence[int] | Tensor | None = None,
    directions: Float[Tensor, "k d_embed"] | None = None,
    ln_mode: LnMode = "center",
    unit_output: bool = False,
    chunk_size: int = 512,
) -> Float[Tensor, "batch neuron out"]:
    """Each MLP neuron's direct effect on the output (e.g. the CLIP image embedding).

    Neuron ``n`` of ``layer`` writes ``post[b, q, n] * W_out[layer, n]`` into the residual stream
    at each position ``q``; at the readout's positions that term is mapped through the frozen
    readout exactly as :meth:`vision_lens.ActivationCache.decompose_layers` maps the whole MLP.
    Summed over all neurons, plus :func:`mlp_bias_effect`, it is that method's ``L{layer}_mlp``
    term. For an MLP with a norm over its hidden layer (EVA02's ``mlp_norm``) the activation is
    that norm's output, its statistics frozen, since that is what multiplies ``W_out``. Neurons
    are processed ``chunk_size`` at a time; with ``directions`` the readout is
    folded with them first, so the ``d_embed``-wide effects are never built.

    Args:
        cache: A full cache (``model.run_with_cache(images)``) with a batch axis.
        layer: The MLP's layer (negative counts from the end).
        neurons: Neuron indices; default all ``d_mlp``.
        directions: ``[k, d_embed]`` directions (e.g. text embeddings) to project on.
        ln_mode: ``"center"`` or ``"split"`` (as the cache; in split mode the neurons carry no
            share of the final norm's mean and biases).
        unit_output: Divide by the output's norm.
        chunk_size: Neurons per step (bounds the memory to ``batch x chunk x channel x k``).

    Returns:
        ``[batch, neuron, d_embed]``, or ``[batch, neuron, k]`` with ``directions``.

    Example:
        >>> import torch, vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> _, cache = model.run_with_cache(torch.randn(2, 3, 16, 16))
        >>> effects = neuron_direct_effects(cache, layer=-1)  # [2, d_mlp, d_embed]
        >>> terms, labels = cache.decompose_layers()
        >>> mlp = effects.sum(1) + mlp_bias_effect(cache, -1)
        >>> torch.allclose(mlp, terms[labels.index("L1_mlp")], atol=1e-5)
        True
    """
    cache = _check_cache(cache)
    _check_mode(ln_mode)
    cfg = cache.model.cfg
    layer = _layer(layer, cfg.n_layers)
    ids = neuron_indices(neurons, cfg.d_mlp)
    lin, norm = cache.frozen_readout()
    dirs = _directions(directions, cfg.d_embed, lin.w)
    M, M_out = _fold(lin, dirs)
    act = _activations(cache, layer, readout_rows=True).to(lin.w)
    W_out = cache.model.blocks[layer].mlp.W_out.detach().to(lin.w)  # [d_mlp, d_model]
    centre = ln_mode == "center" and lin.centers
    width = cfg.d_embed if dirs is None else dirs.shape[0]
    out = lin.w.new_empty(lin.w.shape[0], len(ids), width)
    for start, chunk in _chunks(ids, chunk_size):
        pooled = torch.einsum("bgq,bqn->bng", lin.w, act[..., chunk])  # [batch, n, channel]
        W = W_out[chunk]
        if centre:
            W = W - W.mean(-1, keepdim=True)
        WM = torch.einsum("nd,gdk->ngk", W, M)  # [n, channel, k]
        out[:, start : start + len(chunk)] = _to_output(pooled[..., None] * WM, M_out)
    return out / norm[:, None, None] if unit_output else out


def mlp_bias_effect(
    cache: ActivationCache,
    layer: int,
    directions: Float[Tensor, "k d_embed"] | None = None,
    ln_mode: LnMode = "center",
    unit_output: bool = False,
) -> Float[Tensor, "batch out"]:
    """The part of an MLP's direct effect owned by no neuron: ``b_out`` through the readout (in
    split mode with the layer's share of the final norm's mean and biases).

    Example:
        >>> import torch, vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> _, cache = model.run_with_cache(torch.randn(2, 3, 16, 16))
        >>> mlp_bias_effect(cache, 0).shape
        torch.Size([2, 16])
    """
    cache = _check_cache(cache)
    _check_mode(ln_mode)
    cfg = cache.model.cfg
    layer = _layer(layer, cfg.n_layers)
    lin, norm = cache.frozen_readout()
    dirs = _directions(directions, cfg.d_embed, lin.w)
    b_out = cache.model.blocks[layer].mlp.b_out.detach().to(lin.w)
    c = b_out.expand(lin.w.shape[0], lin.w.shape[2], -1)
    if ln_mode == "center":
        term = lin.map_term(c, centre=True)
    else:
        share = 1.0 / (2 * cfg.n_layers + 1)
        term = lin.map_term(c, centre=False) - share * lin.m_term + share * lin.const
    if dirs is not None:
        term = term @ dirs.T
    return term / norm[:, None] if unit_output else term


def neuron_second_order_effects(
    cache: ActivationCache,
    layer: int,
    neurons: int | Sequence[int] | Tensor | None = None,
    directions: Float[Tensor, "k d_embed"] | None = None,
    ln_mode: LnMode = "center",
    unit_output: bool = False,
    chunk_size: int = 128,
) -> Float[Tensor, "batch neuron out"]:
    """Each MLP neuron's second-order effect on the output, summed over source tokens.

    Gandelsman et al., ICLR 2025. For every later layer ``L' > layer``, the neuron's output at
    each token ``t``, ``post[b, t, n] * W_out[n]``, goes through ``ln1`` of ``L'`` with the cached
    statistics frozen (``blocks.L'.ln1.hook_scale``; linear, so only the centring and ``gamma /
    scale`` apply, no bias), then ``W_V`` of each head (no ``b_V``), is weighted by the recorded
    pattern's rows at the readout's positions (``blocks.L'.attn.hook_pattern``), goes through
    ``W_O`` (no ``b_O``), and is summed over heads, tokens and layers, then mapped through the
    frozen readout as :func:`neuron_direct_effects` does. MLPs after ``layer`` are ignored.

    Per later layer the work is ``neuron x head x d_model x d_head`` for the value projections
    and ``batch x neuron x head x d_head x k`` for the output, ``chunk_size`` neurons at a time;
    nothing of size ``pos x d_mlp x d_embed`` is built.

    Args:
        cache: A full cache (``model.run_with_cache(images)``) with a batch axis.
        layer: The neurons' layer (negative counts from the end); the last layer has no
            second-order effect (zeros).
        neurons: Neuron indices; default all ``d_mlp``.
        directions: ``[k, d_embed]`` directions to project on.
        ln_mode: ``"center"`` (centre each term over ``d_model`` before the readout) or
            ``"split"`` (no centring; the neurons carry no share of the norm's mean or biases).
        unit_output: Divide by the output's norm.
        chunk_size: Neurons per step.

    Returns:
        ``[batch, neuron, d_embed]``, or ``[batch, neuron, k]`` with ``directions``.

    Example:
        >>> import torch, vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> _, cache = model.run_with_cache(torch.randn(2, 3, 16, 16))
        >>> neuron_second_order_effects(cache, layer=0, neurons=[0, 5]).shape
        torch.Size([2, 2, 16])
    """
    cache = _check_cache(cache)
    _check_mode(ln_mode)
    model = cache.model
    cfg = model.cfg
    layer = _layer(layer, cfg.n_layers)
    ids = neuron_indices(neurons, cfg.d_mlp)
    lin, norm = cache.frozen_readout()
    dirs = _directions(directions, cfg.d_embed, lin.w)
    M, M_out = _fold(lin, dirs)
    width = cfg.d_embed if dirs is None else dirs.shape[0]
    out = lin.w.new_zeros(lin.w.shape[0], len(ids), width)
    if layer == cfg.n_layers - 1:
        return out
    act = _activations(cache, layer, readout_rows=False)[..., ids].to(lin.w)  # [batch, pos, n]
    W_out = model.blocks[layer].mlp.W_out.detach().to(lin.w)[ids]  # [n, d_model]
    for later in range(layer + 1, cfg.n_layers):
        block = model.blocks[later]
        scale = _every_position(cache, f"blocks.{later}.ln1.hook_scale").to(lin.w)
        pattern = cache.readout_rows(f"blocks.{later}.attn.hook_pattern", pos_dim=2)
        R = torch.einsum("bgq,bhqt->bght", lin.w, pattern.to(lin.w))  # effective rows
        coef = torch.einsum("bght,btn->bnhg", R, act / scale)  # [batch, n, head, channel]
        W_O = block.attn.W_O.detach().to(lin.w)  # [head, d_head, d_model]
        if ln_mode == "center" and lin.centers:
            W_O = W_O - W_O.mean(-1, keepdim=True)
        W_OM = torch.einsum("hed,gdk->hegk", W_O, M)  # [head, d_head, channel, k]
        W_V = block.attn.W_V.detach().to(lin.w)  # [head, d_model, d_head]
        gamma = block.ln1.w.detach().to(lin.w)
        for start, chunk in _chunks(list(range(len(ids))), chunk_size):
            W = W_out[chunk]
            if block.ln1.centers:
                W = W - W.mean(-1, keepdim=True)
            V = torch.einsum("nd,hde->nhe", W * gamma, W_V)  # [n, head, d_head]
            x = torch.einsum("bnhg,nhe->bnghe", coef[:, chunk], V)
            x = torch.einsum("bnghe,hegk->bngk", x, W_OM)
            out[:, start : start + len(chunk)] += _to_output(x, M_out)
    return out / norm[:, None, None] if unit_output else out


# ---------------------------------------------------------------------------------- texts
@dataclass
class SparseTextDecomposition:
    """What :func:`sparse_text_decomposition` returns.

    Attributes:
        texts: The texts with non-zero weight, largest weight first (at most ``n_terms``).
        weights: ``[term]`` their non-negative weights (over the centred, unit-norm pool).
        indices: ``[term]`` their indices in the pool.
        cosine: Cosine between the direction (centred as fitted, unit norm) and the weighted
            sum of all selected pool vectors (every non-zero weight, not just the top terms).
    """

    texts: list[str]
    weights: Tensor
    indices: Tensor
    cosine: float


def sparse_text_decomposition(
    direction: Float[Tensor, " d_embed"],
    text_embeddings: Float[Tensor, "text d_embed"],
    texts: Sequence[str],
    n_terms: int = 10,
    l1: float = 0.05,
    center_pool: bool = True,
    direction_mean: Float[Tensor, " d_embed"] | None = None,
) -> SparseTextDecomposition:
    """A direction as a sparse non-negative combination of texts (as SpLiCE, Bhalla et al.).

    The pool's embeddings are scaled to unit norm, centred by their mean and scaled to unit norm
    again (``center_pool``), as SpLiCE does with its concept vocabulary; the direction (a
    neuron's effect, a head's mean output, an image embedding) has ``direction_mean``
    subtracted if given (SpLiCE subtracts the mean image embedding from images) and is scaled
    to unit norm. Then ``min_w 1/2 ||d - C^T w||^2 + l1 ||w||_1`` over ``w >= 0`` is solved
    with scikit-learn's ``Lasso(positive=True)``.

    Args:
        direction: ``[d_embed]`` the direction to describe.
        text_embeddings: ``[text, d_embed]`` the pool (e.g. ``text.encode(texts)``).
        texts: One string per pool row.
        n_terms: How many of the largest weights to return.
        l1: The sparsity penalty (on the unit-norm scale: above ``max_i <c_i, d>`` every weight
            is zero).
        center_pool: Centre the pool by its mean (SpLiCE); ``False`` keeps the unit-norm rows.
        direction_mean: ``[d_embed]`` subtracted from ``direction`` first, or ``None``.

    Returns:
        A :class:`SparseTextDecomposition` (texts, weights, pool indices, reconstruction cosine);
        empty, with cosine 0, when ``l1`` is so large that every weight is zero.

    Example:
        >>> import torch
        >>> pool = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
        >>> texts = [f"text {i}" for i in range(20)]
        >>> result = sparse_text_decomposition(0.7 * pool[3] + 0.3 * pool[8], pool, texts,
        ...     center_pool=False, l1=0.01)
        >>> result.texts[:2]
        ['text 3', 'text 8']
    """
    from sklearn.linear_model import Lasso  # imported here: sklearn is slow to import

    direction = check_finite(direction, "direction").detach().double().cpu().flatten()
    pool = check_finite(text_embeddings, "text_embeddings").detach().double().cpu()
    if pool.dim() != 2 or pool.shape[0] == 0:
        raise ValueError(
            f"text_embeddings must be a non-empty [text, d_embed] pool, got {tuple(pool.shape)}."
        )
    if len(texts) != pool.shape[0]:
        raise ValueError(f"{len(texts)} texts for {pool.shape[0]} text embeddings.")
    if direction.shape[0] != pool.shape[1]:
        raise ValueError(
            f"direction has width {direction.shape[0]}, the text embeddings {pool.shape[1]}."
        )
    _positive_int(n_terms, "n_terms")
    if not l1 >= 0:
        raise ValueError(f"l1 must be >= 0, got {l1!r}.")
    if direction_mean is not None:
        mean = check_finite(direction_mean, "direction_mean").detach().double().cpu().flatten()
        if mean.shape != direction.shape:
            raise ValueError(
                f"direction_mean has shape {tuple(mean.shape)}, not {tuple(direction.shape)}."
            )
        direction = direction - mean
    pool = pool / pool.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if center_pool:
        pool = pool - pool.mean(0, keepdim=True)
        pool = pool / pool.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if float(direction.norm()) == 0.0:
        raise ValueError("direction is zero: there is nothing to decompose.")
    direction = direction / direction.norm()
    # sklearn's Lasso minimises 1/(2 n) ||y - X w||^2 + alpha ||w||_1 with n = d_embed.
    lasso = Lasso(alpha=l1 / pool.shape[1], positive=True, fit_intercept=False, max_iter=10000)
    lasso.fit(pool.T.numpy(), direction.numpy())
    w = torch.from_numpy(lasso.coef_.copy())
    recon = w @ pool
    cosine = float(recon @ direction / recon.norm()) if float(recon.norm()) > 0 else 0.0
    order = torch.argsort(w, descending=True)
    order = order[w[order] > 0][:n_terms]
    return SparseTextDecomposition(
        texts=[texts[i] for i in order.tolist()],
        weights=w[order].float(),
        indices=order,
        cosine=cosine,
    )


# ---------------------------------------------------------------------------------- images
@dataclass
class TopActivations:
    """What :func:`top_activating_images` returns.

    Attributes:
        values: ``[neuron, k]`` the top activations, largest first.
        indices: ``[neuron, k]`` the images' positions in the pass (0-based, in order seen).
        neurons: The neurons, in the order of the rows.
        layer: The MLP's layer.
    """

    values: Tensor
    indices: Tensor
    neurons: list[int]
    layer: int


def top_activating_images(
    model: Any,
    images: Tensor | Iterable[Any],
    layer: int,
    neurons: int | Sequence[int] | Tensor | None,
    k: int = 16,
    batch_size: int = 64,
    reduce: Literal["max", "cls", "mean"] = "max",
    progress: bool = True,
) -> TopActivations:
    """The ``k`` images that activate each neuron most, in one pass keeping a running top-k.

    Only ``[neuron, k]`` values and indices are kept between batches, never all activations.
    An image's activation is ``hook_post`` of ``blocks.{layer}.mlp`` reduced over tokens:
    its maximum (``"max"``), its mean (``"mean"``) or its value at the class token (``"cls"``).

    Args:
        model: A :class:`vision_lens.HookedViT`.
        images: ``[N, 3, H, W]`` preprocessed images or an iterable of batches (a DataLoader
            yielding tensors or ``(images, labels)``).
        layer: The MLP's layer (negative counts from the end).
        neurons: Neuron indices (``None``: all).
        k: Images per neuron (fewer if the pass has fewer images).
        batch_size: Images per forward pass (for a tensor of images).
        reduce: ``"max"``, ``"mean"`` or ``"cls"`` over tokens.
        progress: Draw a progress bar.

    Returns:
        A :class:`TopActivations`.

    Example:
        >>> import torch, vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> top = top_activating_images(model, torch.randn(6, 3, 16, 16), layer=0,
        ...     neurons=[1, 2], k=3, batch_size=4, progress=False)
        >>> top.values.shape, top.indices.shape
        (torch.Size([2, 3]), torch.Size([2, 3]))
    """
    cfg = model.cfg
    layer = _layer(layer, cfg.n_layers)
    ids = neuron_indices(neurons, cfg.d_mlp)
    k = _positive_int(k, "k")
    batch_size = check_batch_size(batch_size)
    if reduce not in ("max", "mean", "cls"):
        raise ValueError(f"reduce must be 'max', 'mean' or 'cls', got {reduce!r}.")
    if reduce == "cls" and not cfg.class_token:
        raise ValueError("reduce='cls' needs a class token; this model has none (use 'max').")
    index = torch.tensor(ids, device=model.W_proj.device)
    found: list[Tensor] = []

    def keep(post: Tensor, hook: Any) -> None:
        post = post.index_select(-1, index).float()  # [batch, pos, n]
        if reduce == "max":
            found.append(post.amax(1))
        elif reduce == "mean":
            found.append(post.mean(1))
        else:
            found.append(post[:, 0])

    best_values = best_indices = None
    seen = 0
    with torch.no_grad():
        for batch in batched(images, batch_size, "top activating images", progress=progress):
            found.clear()
            model.run_with_hooks(batch, fwd_hooks=[(f"blocks.{layer}.mlp.hook_post", keep)])
            scores = found[0].T.cpu()  # [n, batch]
            where = torch.arange(seen, seen + scores.shape[1]).expand_as(scores)
            seen += scores.shape[1]
            if best_values is not None:
                scores = torch.cat([best_values, scores], 1)
                where = torch.cat([best_indices, where], 1)
            best_values, top = scores.topk(min(k, scores.shape[1]), dim=1)
            best_indices = where.gather(1, top)
    if best_values is None:
        raise ValueError("images is empty: the pass saw no batch.")
    return TopActivations(best_values, best_indices, ids, layer)
