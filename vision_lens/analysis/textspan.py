"""TextSpan (Gandelsman et al. 2024, §4.1, Algorithm 1): per-head bases of text directions.

For one head, ``C`` ``[K images, d_embed]`` holds its direct effects and ``R`` ``[M, d_embed]``
the (L2-normalised) embeddings of a pool of text descriptions. The reference code projects ``R``
onto the top-``rank`` right singular vectors of the *uncentred* ``C`` (``rank = 80``), centres
``C`` by its mean, then repeats ``m`` times::

    j* = argmax_j var_images(C @ R_j)          # the text along which the head varies most
    t = R_j*;   C' += (C t / t.t) t^T;   C -= (C t / t.t) t^T;   R -= (R t / t.t) t^T

and returns the chosen texts, the variance explained and the reconstruction ``C' + mean``.

How this module computes exactly that, fast (all in float64, batched over heads):

* Everything happens in the rank-``r`` subspace: with ``V`` ``[d, r]`` the top eigenvectors of
  ``C^T C`` (the right singular vectors of ``C``), the projected texts are ``R V V^T``; write
  ``rho = R V`` ``[M, r]`` for their coordinates.
* ``var(C R_j)`` is a quadratic form: ``rho_j^T S rho_j`` with ``S = V^T Σ V`` and
  ``Σ = C_c^T C_c / K`` the head's covariance.
* The chosen directions ``t_1, t_2, ...`` are mutually orthogonal (each is taken from texts that
  were already deflated by the earlier ones), so after ``k`` steps the deflated data is
  ``C_c P`` and the deflated texts ``rho P`` with ``P = I - sum_k t̂_k t̂_k^T``; hence the
  deflated score is ``(rho_j P) S (rho_j P)^T``: the *original* ``S`` applied to the *deflated*
  texts. Each step updates all scores and residual norms in closed form from one pass over
  ``rho`` (``rho @ [t̂, S t̂]``), ``O(M r)``, instead of the ``O(K d M)`` product ``C @ R^T`` of
  the literal loop; the best 16 candidates are rescored exactly before every choice.
* Explained variance after ``k`` steps is ``sum_k t̂_k^T S t̂_k`` and the reconstruction
  ``C_c Q Q^T + mean`` with ``Q`` the orthonormal chosen directions in ``d_embed`` space.

Only the mean, the Gram matrices and ``K`` enter (:func:`textspan_core`), so
:func:`vision_lens.analysis.moments.textspan_from_moments` runs the same core on per-head sums
streamed over a dataset.

Two rules make the choice well defined (the literal loop in ``tests/textspan_reference.py``
follows them too): a text already chosen is never chosen again, and a text whose residual has
vanished (squared norm <= ``1e-12`` times its squared norm as given, e.g. a duplicate of a chosen
text) is not eligible. Ties go to the lowest index (``argmax``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from vision_lens.analysis.batched import map_batches
from vision_lens.analysis.direct_effects import HeadLabel
from vision_lens.analysis.textspan_result import TextSpanResult
from vision_lens.cache import LnMode, normalize_alias
from vision_lens.protocols import TextEncoder
from vision_lens.utils.batching import progress_bar
from vision_lens.utils.checks import check_finite, layer_indices

if TYPE_CHECKING:
    from vision_lens.cache import ActivationCache
    from vision_lens.hooked_vit import HookedViT

__all__ = [
    "TextSpanResult",
    "check_head_outputs",
    "head_outputs_dataset",
    "textspan",
    "textspan_model",
]

#: A text whose residual squared norm falls to this fraction of its squared norm as given can no
#: longer be chosen (it lies, numerically, in the span of the chosen texts).
ELIGIBLE_TOL = 1e-12
#: Eigenvalues of the outputs' Gram matrix below this fraction of the largest are treated as
#: zero (singular values below 1e-5 of the largest: far above float32 rounding, 1e-7).
RANK_TOL = 1e-10


# ---------------------------------------------------------------------- validation
def check_head_outputs(head_outputs: object) -> Tensor:
    """``head_outputs`` if it is a tensor (``[head, images, d_embed]``), else ``TypeError``.

    Example:
        >>> check_head_outputs(torch.zeros(2, 3, 4)).shape
        torch.Size([2, 3, 4])
    """
    if not isinstance(head_outputs, Tensor):
        raise TypeError(
            f"head_outputs must be a tensor [head, images, d_embed], got "
            f"{type(head_outputs).__name__}."
        )
    return head_outputs


def check_text_pool(text_embeddings: object) -> Tensor:
    """``text_embeddings`` if it is a finite float ``[n_text, d_embed]`` tensor with at least one
    row, else ``TypeError``/``ValueError`` (the checks :func:`textspan` applies to its pool)."""
    if not isinstance(text_embeddings, Tensor):
        raise TypeError(
            f"text_embeddings must be a tensor [n_text, d_embed] (e.g. clip.encode(texts)), got "
            f"{type(text_embeddings).__name__}."
        )
    if text_embeddings.dim() != 2:
        raise ValueError(
            f"text_embeddings must be [n_text, d_embed], got {tuple(text_embeddings.shape)}."
        )
    if text_embeddings.shape[0] == 0:
        raise ValueError("The text pool is empty: pass at least m text embeddings.")
    if not text_embeddings.is_floating_point():
        raise TypeError(
            f"text_embeddings must be a floating-point tensor, got {text_embeddings.dtype}."
        )
    return check_finite(text_embeddings, "text_embeddings")


def check_m_rank(
    m: object, rank: object, n_text: int, n_images: int, d: int
) -> tuple[int, int | None]:
    """``(m, rank)`` if valid for a pool of ``n_text`` texts and ``n_images`` images of width
    ``d`` (shared by :func:`textspan` and ``textspan_from_moments``), else an error."""
    if isinstance(m, bool) or not isinstance(m, int):
        raise TypeError(f"m must be an int, got {type(m).__name__}.")
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}.")
    if m > n_text:
        raise ValueError(
            f"m={m} is larger than the text pool ({n_text} texts): use m <= {n_text} or a "
            "larger pool (e.g. vision_lens.text_pool('general'))."
        )
    if rank is not None:
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise TypeError(f"rank must be an int or None, got {type(rank).__name__}.")
        if rank < 1:
            raise ValueError(f"rank must be >= 1 (or None for no projection), got {rank}.")
    effective = d if rank is None else min(rank, n_images, d)
    if m > effective:
        fix = "rank=None" if rank is not None and rank < d else "more images"
        raise ValueError(
            f"m={m} exceeds the dimension of the space the texts live in ({effective}: "
            f"rank={rank}, {n_images} images, d_embed={d}); after {effective} texts "
            f"nothing is left to explain. Use m <= {effective}, a larger rank, or {fix}."
        )
    return m, rank


def _check_inputs(
    head_outputs: object, text_embeddings: object, m: object, rank: object
) -> tuple[Tensor, Tensor, int, int | None]:
    check_head_outputs(head_outputs)
    check_text_pool(text_embeddings)
    outputs = head_outputs[None] if head_outputs.dim() == 2 else head_outputs
    if outputs.dim() != 3:
        raise ValueError(
            f"head_outputs must be [head, images, d_embed] or [images, d_embed], got "
            f"{tuple(head_outputs.shape)}. From decompose_heads() ([images, layer, head, d_embed]) "
            "use heads.flatten(1, 2).transpose(0, 1)."
        )
    if outputs.shape[-1] != text_embeddings.shape[-1]:
        raise ValueError(
            f"head outputs have width {outputs.shape[-1]} but text embeddings have width "
            f"{text_embeddings.shape[-1]}: TextSpan needs both in the joint embedding space (were "
            "they made by the same CLIP model?)."
        )
    if outputs.shape[0] == 0:
        raise ValueError("head_outputs has no heads.")
    if outputs.shape[1] < 2:
        raise ValueError(
            f"TextSpan needs at least 2 images per head to measure variance, got "
            f"{outputs.shape[1]}."
        )
    if not outputs.is_floating_point() or not text_embeddings.is_floating_point():
        raise TypeError("head_outputs and text_embeddings must be floating-point tensors.")
    m, rank = check_m_rank(m, rank, text_embeddings.shape[0], outputs.shape[1], outputs.shape[-1])
    return outputs, text_embeddings, m, rank


def prepare_texts(
    text_embeddings: Tensor, device: torch.device, normalize: bool
) -> tuple[Tensor, Tensor]:
    """The texts ``R`` ``[M, d]`` in float64 on ``device`` (L2-normalised if ``normalize``) and
    their squared norms as given ``[M]`` (the reference for eligibility); ``ValueError`` for a
    text with zero norm."""
    R = text_embeddings.detach().to(device=device, dtype=torch.float64)
    norms = R.norm(dim=-1)
    if (norms == 0).any():
        bad = int((norms == 0).nonzero()[0])
        raise ValueError(f"Text embedding {bad} has zero norm; remove it from the pool.")
    if normalize:
        R = R / norms[:, None]
    return R, (R * R).sum(-1)


def check_head_chunk(head_chunk: object) -> int:
    """``head_chunk`` if it is an int >= 1, else ``TypeError``/``ValueError``."""
    if isinstance(head_chunk, bool) or not isinstance(head_chunk, int):
        raise TypeError(f"head_chunk must be an int, got {type(head_chunk).__name__}.")
    if head_chunk < 1:
        raise ValueError(f"head_chunk must be >= 1, got {head_chunk}.")
    return head_chunk


def check_labels(
    texts: Sequence[str] | None, heads: Sequence[HeadLabel] | None, n_text: int, n_heads: int
) -> tuple[list[str] | None, list[HeadLabel] | None]:
    """``texts`` and ``heads`` as lists (``None`` passes through); ``ValueError`` if a length
    differs from ``n_text``/``n_heads``."""
    if texts is not None:
        texts = list(texts)
        if len(texts) != n_text:
            raise ValueError(f"{len(texts)} texts given for {n_text} text embeddings.")
    if heads is not None:
        heads = [(int(lh[0]), int(lh[1])) for lh in heads]
        if len(heads) != n_heads:
            raise ValueError(f"{len(heads)} head labels given for {n_heads} heads.")
    return texts, heads


# ---------------------------------------------------------------------- the algorithm
def textspan_core(
    gram: Tensor,
    mean: Tensor,
    n_images: int,
    R: Tensor,
    given: Tensor,
    m: int,
    rank: int | None,
    uncentred: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """TextSpan for a chunk of heads from their moments alone (everything float64).

    TextSpan's choices depend on the outputs ``C`` ``[h, K, d]`` only through ``K``, the mean
    and the Gram matrices, which is what this takes, so the in-memory :func:`textspan` and the
    streaming ``textspan_from_moments`` share it.

    Notation: ``rho`` ``[h, M, r]`` are the texts' coordinates in the rank-``r`` subspace, ``S``
    ``[h, r, r]`` the head's covariance there, ``u_i`` the unit directions chosen so far (mutually
    orthogonal) and ``a_i = rho_{i-1} u_i`` ``[h, M]`` the deflation coefficients. The deflated
    texts are ``rho_k = rho - sum_i a_i u_i^T``; nothing ``[h, M, r]``-sized is ever rewritten:
    each step reads ``rho`` once (``rho @ [u, S u]``) and updates the scores
    ``q_j = rho_k,j S rho_k,j^T`` and squared norms ``n_j = |rho_k,j|^2`` in closed form::

        q <- q - 2 a b + a^2 (u^T S u),   n <- n - a^2,   b = rho_{k-1} S u.

    The best few candidates' scores are recomputed exactly from their deflated vectors before
    each choice, so rounding in these updates can never change a pick.

    Args:
        gram: ``[h, d, d]`` centred Gram matrix ``C_c^T C_c`` (``K`` times the covariance).
        mean: ``[h, d]`` mean over the images.
        n_images: ``K``.
        R: ``[M, d]`` the texts (normalised or not, see :func:`prepare_texts`).
        given: ``[M]`` their squared norms as given.
        m: Texts per head.
        rank: Subspace rank (``None``: none).
        uncentred: ``[h, d, d]`` ``C^T C``; default ``gram + K mean mean^T``.

    Returns:
        ``(indices [h, m], explained [h, m], total [h], basis [h, m, d])``.

    Raises:
        ValueError: The pool runs out of eligible texts before ``m``.
    """
    n_heads, d = mean.shape
    device, dtype = gram.device, gram.dtype
    total = gram.diagonal(dim1=-2, dim2=-1).sum(-1) / n_images
    r = d if rank is None else min(rank, n_images, d)
    if r < d:
        # Top right singular vectors of the *uncentred* outputs, as in the reference code.
        if uncentred is None:
            uncentred = gram + n_images * mean[:, :, None] * mean[:, None, :]
        eigenvalues, eigenvectors = torch.linalg.eigh(uncentred)  # ascending eigenvalues
        V = eigenvectors[..., -r:].flip(-1)  # [h, d, r]
        # A head writes from a d_head-dimensional space, so when r > d_head the top-r subspace
        # includes directions of (numerically) zero variance, and which ones eigh returns is
        # decided by rounding noise: a perturbation of 1e-13 then changed which texts were
        # picked. Those directions carry no signal; dropping them makes the result depend on the
        # data only (an exact reimplementation of the reference wherever they are absent).
        top = eigenvalues[..., -r:].flip(-1)  # [h, r], descending
        V = V * (top > RANK_TOL * top[:, :1].clamp(min=0))[:, None, :]
        rho = torch.einsum("md,hdr->hmr", R, V)  # text coordinates in the subspace
        S = V.mT @ gram @ V / n_images  # [h, r, r]
    else:
        V = None
        rho = R.expand(n_heads, -1, -1)  # shared, never written
        S = gram / n_images
    n_text = R.shape[0]
    q = ((rho @ S) * rho).sum(-1)  # [h, M]: var_images(C R_j)
    norms = (rho * rho).sum(-1)
    eligible = norms > ELIGIBLE_TOL * given
    rows = torch.arange(n_heads, device=device)
    n_candidates = min(16, n_text)
    coefficients = torch.zeros(n_heads, n_text, m, dtype=dtype, device=device)  # a_i
    directions = torch.zeros(n_heads, m, rho.shape[-1], dtype=dtype, device=device)  # u_i
    indices = torch.empty(n_heads, m, dtype=torch.long, device=device)
    steps = torch.empty(n_heads, m, dtype=dtype, device=device)
    for k in range(m):
        # Exact scores of the best candidates from their deflated vectors.
        _, candidates = q.masked_fill(~eligible, -torch.inf).topk(n_candidates, dim=-1)
        deflated = rho[rows[:, None], candidates] - (
            coefficients[rows[:, None], candidates, :k] @ directions[:, :k]
        )  # [h, c, r]
        exact = ((deflated @ S) * deflated).sum(-1)
        exact_norms = (deflated * deflated).sum(-1)
        ok = eligible[rows[:, None], candidates] & (exact_norms > ELIGIBLE_TOL * given[candidates])
        exact = exact.masked_fill(~ok, -torch.inf)
        best = exact.max(-1).values
        if torch.isinf(best).any():
            bad = int(torch.isinf(best).nonzero()[0])
            raise ValueError(
                f"After {k} texts no eligible text is left for head row {bad}: the pool spans "
                f"only {k} directions of that head's subspace. Use m <= {k} or a larger, more "
                "diverse text pool."
            )
        # Lowest text index among exact ties, like argmax in the literal loop.
        slot = torch.where(exact == best[:, None], candidates, n_text).argmin(-1)
        j = candidates[rows, slot]
        t = deflated[rows, slot]  # [h, r]
        tt = exact_norms[rows, slot]
        unit = t / tt.sqrt()[:, None]
        S_unit = (S @ unit[..., None])[..., 0]  # [h, r]
        indices[:, k] = j
        steps[:, k] = best / tt  # variance along the new unit direction
        # a = rho_{k-1} u and b = rho_{k-1} S u, from one pass over rho
        ab = rho @ torch.stack([unit, S_unit], dim=-1)  # [h, M, 2]
        if k:
            overlap = directions[:, :k] @ torch.stack([unit, S_unit], dim=-1)  # [h, k, 2]
            ab = ab - coefficients[:, :, :k] @ overlap
        a, b = ab[..., 0], ab[..., 1]
        curvature = (unit * S_unit).sum(-1)[:, None]
        q = q - 2 * a * b + a * a * curvature
        norms = norms - a * a
        coefficients[:, :, k] = a
        directions[:, k] = unit
        eligible &= norms > ELIGIBLE_TOL * given
        eligible[rows, j] = False
    basis = directions if V is None else directions @ V.mT  # [h, m, d], orthonormal
    return indices, steps.cumsum(-1), total, basis


def _textspan_chunk(
    C: Tensor, R: Tensor, given: Tensor, m: int, rank: int | None, reconstruct: bool
) -> tuple[Tensor, ...]:
    """TextSpan for a chunk of heads; ``C`` ``[h, K, d]`` and ``R`` ``[M, d]`` in float64."""
    n_images = C.shape[1]
    mean = C.mean(1)  # [h, d]
    centred = C - mean[:, None]
    gram = centred.mT @ centred  # [h, d, d], centred Gram matrix
    indices, explained, total, basis = textspan_core(gram, mean, n_images, R, given, m, rank)
    reconstruction = None
    if reconstruct:
        reconstruction = (centred @ basis.mT) @ basis + mean[:, None]
    return indices, explained, total, basis, mean, reconstruction


def textspan(
    head_outputs: Float[Tensor, "head images d_embed"] | Float[Tensor, "images d_embed"],
    text_embeddings: Float[Tensor, "n_text d_embed"],
    m: int,
    rank: int | None = 80,
    *,
    texts: Sequence[str] | None = None,
    heads: Sequence[HeadLabel] | None = None,
    normalize_texts: bool = True,
    reconstruct: bool = True,
    head_chunk: int = 8,
    progress: bool = False,
) -> TextSpanResult:
    """TextSpan (Algorithm 1) on every head at once: for each head, ``m`` texts whose
    directions greedily explain the most variance of its outputs.

    Identical (same texts chosen, same values up to float64 rounding) to running the literal
    algorithm head by head; see the module docstring for the algebra that makes it fast.

    Args:
        head_outputs: ``[head, images, d_embed]`` direct effects of each head over a set of
            images (e.g. ``cache.decompose_heads()`` ``[images, layer, head, d_embed]`` reshaped
            with ``.flatten(1, 2).transpose(0, 1)``), or one head ``[images, d_embed]`` (treated as
            ``head = 1``). Any float dtype; computed in float64 internally.
        text_embeddings: ``[n_text, d_embed]`` text embeddings (``clip.encode(pool)``).
        m: Texts per head, ``1 <= m <= n_text`` (and ``<= rank``).
        rank: Project the texts onto the top-``rank`` right singular vectors of each head's
            (uncentred) outputs first, as the reference code does (80); ``None`` for no
            projection.
        texts: The strings of the pool (for :meth:`TextSpanResult.texts_for` and reports).
        heads: ``(layer, head)`` of each row (for lookups by head and labels in reports).
        normalize_texts: L2-normalise the text embeddings first (Algorithm 1 assumes unit
            texts); with ``False`` they are used as given.
        reconstruct: Also return the reconstruction ``C' + mean`` ``[head, images, d_embed]``
            (as large as the input; :meth:`TextSpanResult.project` recomputes it on demand).
        head_chunk: Heads processed together (bounds memory: about ``head_chunk * (images *
            d_embed + d_embed^2 + 2 * n_text * rank) * 8`` bytes).
        progress: Show a progress bar over head chunks.

    Returns:
        A :class:`TextSpanResult` (``indices`` ``[head, m]``, ``explained_variance``
        ``[head, m]``, ``total_variance`` ``[head]``, ``basis``, ``mean``, ``reconstruction``).

    Raises:
        ValueError: Wrong shapes, widths that differ, an empty pool, ``m < 1``, ``m`` larger than
            the pool or the subspace, fewer than 2 images, texts with zero norm, non-finite
            values, or a pool that runs out of independent texts.
        TypeError: Non-tensor or non-float inputs, non-int ``m``/``rank``.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> pool = torch.randn(100, 64)
        >>> outputs = torch.randn(4, 200, 5) @ pool[[3, 14, 15, 92, 65]]  # 4 heads, 5 texts each
        >>> result = textspan(outputs + 0.01 * torch.randn(4, 200, 64), pool, m=5, rank=10)
        >>> sorted(result.indices[0].tolist())
        [3, 14, 15, 65, 92]
        >>> result.explained_variance.shape, result.reconstruction.shape
        (torch.Size([4, 5]), torch.Size([4, 200, 64]))
    """
    outputs, text_embeddings, m, rank = _check_inputs(head_outputs, text_embeddings, m, rank)
    n_heads, n_images, d = outputs.shape
    texts, heads = check_labels(texts, heads, text_embeddings.shape[0], n_heads)
    check_head_chunk(head_chunk)
    R, given = prepare_texts(text_embeddings, outputs.device, normalize_texts)

    parts: list[tuple[Tensor, ...]] = []
    starts = range(0, n_heads, head_chunk)
    bar = progress_bar(len(starts), "TextSpan", enabled=progress, unit="chunk")
    try:
        for start in starts:
            chunk = outputs[start : start + head_chunk].detach().to(torch.float64)
            # Checked per chunk, so no mask as large as all the outputs is built.
            check_finite(chunk, f"head_outputs (heads {start}..{start + chunk.shape[0] - 1})")
            parts.append(_textspan_chunk(chunk, R, given, m, rank, reconstruct))
            bar.update(1)
    finally:
        bar.close()

    dtype = outputs.dtype
    return TextSpanResult(
        indices=torch.cat([p[0] for p in parts]),
        explained_variance=torch.cat([p[1] for p in parts]),
        total_variance=torch.cat([p[2] for p in parts]),
        basis=torch.cat([p[3] for p in parts]).to(dtype),
        mean=torch.cat([p[4] for p in parts]).to(dtype),
        reconstruction=torch.cat([p[5] for p in parts]).to(dtype) if reconstruct else None,
        texts=texts,
        heads=heads,
        rank=rank,
    )


# ---------------------------------------------------------------------- on a model
@normalize_alias
def head_outputs_dataset(
    model: HookedViT,
    images: Tensor | Iterable[Any],
    layers: int | Sequence[int] | None = None,
    *,
    ln_mode: LnMode = "center",
    unit_output: bool = False,
    batch_size: int = 64,
    progress: bool = True,
    device: str | torch.device | None = "cpu",
) -> tuple[Float[Tensor, "head images d_embed"], list[HeadLabel]]:
    """Direct effects of the heads of ``layers`` over a dataset, as TextSpan wants them.

    Runs :meth:`HookedViT.run_with_decomposition_cache` in batches and keeps only
    ``cache.decompose_heads(layers)`` (no layer or token terms).

    Args:
        model: The model.
        images: Preprocessed images ``[N, 3, H, W]`` or an iterable of batches.
        layers: Layers whose heads to keep (negative allowed, each once; default all).
        ln_mode: LayerNorm treatment (see :mod:`vision_lens.cache`).
        unit_output: Divide the head outputs by the embedding norm (``normalize``: its
            deprecated name).
        batch_size: Images per forward pass.
        progress: Progress bar.
        device: Where the outputs are gathered.

    Returns:
        ``([head, images, d_embed], [(layer, head), ...])`` with heads ordered layer-major.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny()
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> outputs, heads = head_outputs_dataset(model, torch.randn(5, 3, 16, 16), layers=[-1],
        ...                                       batch_size=2, progress=False)
        >>> outputs.shape, heads[:2]
        (torch.Size([4, 5, 16]), [(1, 0), (1, 1)])
    """
    layer_ids = layer_indices(layers, model.cfg.n_layers)

    def step(embed: Tensor, cache: ActivationCache) -> Tensor:
        return cache.decompose_heads(layer_ids, ln_mode, unit_output).to(device)

    chunks = map_batches(
        model, images, step, batch_size=batch_size, desc="head outputs", progress=progress
    )
    out = torch.cat(chunks).flatten(1, 2).transpose(0, 1).contiguous()  # [L*H, images, d]
    labels = [(layer, head) for layer in layer_ids for head in range(model.cfg.n_heads)]
    return out, labels


@normalize_alias
def textspan_model(
    model: HookedViT,
    clip: TextEncoder,
    images: Tensor | Iterable[Any],
    texts: Sequence[str] | str,
    layers: int | Sequence[int] | None = None,
    m: int = 60,
    rank: int | None = 80,
    *,
    ln_mode: LnMode = "center",
    unit_output: bool = False,
    batch_size: int = 64,
    text_batch_size: int = 256,
    reconstruct: bool = False,
    progress: bool = True,
) -> TextSpanResult:
    """TextSpan for the heads of a model: head outputs over ``images``, texts encoded with
    ``clip``, labelled results.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        clip: The matching text tower: a :class:`vision_lens.CLIPText` (or any
            :class:`~vision_lens.protocols.TextEncoder`).
        images: Preprocessed images ``[N, 3, H, W]`` or an iterable of batches (a DataLoader).
        texts: The description pool, or the name of a shipped pool (``"general"``,
            ``"shapes"``; see :func:`vision_lens.text_pool`).
        layers: Layers whose heads to analyse (default all; the paper uses the last four,
            ``range(-4, 0)``).
        m: Texts per head (clipped to the pool size and ``rank`` with a clear error otherwise).
        rank: Subspace rank (see :func:`textspan`).
        ln_mode: Decomposition's LayerNorm treatment.
        unit_output: Divide head outputs by the embedding norm (the paper's convention;
            ``normalize``: its deprecated name).
        batch_size: Images per forward pass.
        text_batch_size: Texts per text-tower pass.
        reconstruct: Keep the reconstructions (``[heads, N, d_embed]``).
        progress: Progress bars.

    Returns:
        A :class:`TextSpanResult` with ``texts`` and ``heads`` filled in, so
        ``result.texts_for(layer, head)`` works; ``result.meta`` records the settings.

    Example:
        >>> result = textspan_model(model, clip, images, "general", layers=range(-4, 0), m=60)
        ... # doctest: +SKIP
        >>> result.texts_for(11, 3)[:5]  # doctest: +SKIP
        >>> print(result.to_markdown(top=5))  # doctest: +SKIP
    """
    if isinstance(texts, str):
        from vision_lens.text_pools import text_pool

        pool_name: str | None = texts
        texts = text_pool(texts)
    else:
        pool_name = None
        texts = list(texts)
    if not texts:
        raise ValueError("The text pool is empty: pass at least m texts.")
    outputs, heads = head_outputs_dataset(
        model,
        images,
        layers,
        ln_mode=ln_mode,
        unit_output=unit_output,
        batch_size=batch_size,
        progress=progress,
    )
    embeddings = clip.encode(texts, batch_size=text_batch_size, progress=progress)
    result = textspan(
        outputs,
        embeddings.to(outputs),
        m=m,
        rank=rank,
        texts=texts,
        heads=heads,
        reconstruct=reconstruct,
        progress=progress,
    )
    result.meta = {
        "pool": pool_name,
        "n_texts": len(texts),
        "n_images": outputs.shape[1],
        "ln_mode": ln_mode,
        "unit_output": unit_output,
    }
    return result
