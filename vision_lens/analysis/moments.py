"""Per-head first and second moments of direct effects, and TextSpan from them (one streaming pass).

TextSpan (:func:`vision_lens.analysis.textspan.textspan`) depends on a head's outputs ``C``
``[K images, d_embed]`` only through three statistics, all sums over images:

* ``count = K``,
* ``sum = sum_i c_i`` ``[d]`` (so the mean is ``mu = sum / K``),
* ``sum_outer = sum_i c_i c_i^T = C^T C`` ``[d, d]`` (the uncentred second moment times ``K``).

The rank-``r`` projection uses the top eigenvectors of ``C^T C`` (the right singular vectors of
the uncentred ``C``), which is ``sum_outer`` itself; the greedy variance uses the covariance
``Σ = C_c^T C_c / K = sum_outer / K - mu mu^T``; the total variance is ``trace Σ``. These sums
can be accumulated batch by batch, merged across shards or workers (they simply add), and
stored in float64, so :func:`textspan_from_moments` runs TextSpan on a dataset that never fits
in memory, with the same picks as :func:`textspan` on the whole ``[head, K, d]`` tensor (the two
share one core; only float64 rounding in how ``Σ`` is formed differs).

What the moments cannot give is anything per image: the result has no ``reconstruction``.
Reconstructions need a second pass over the images:
``result.project(batch_outputs)`` (:meth:`TextSpanResult.project`) projects each batch onto each
head's basis around its mean.

**Stored form** (``state_dict`` / :meth:`HeadMoments.from_state_dict`, e.g. the ``"head_moments"``
product of a streaming dataset pass saved as safetensors shards): a flat dict of tensors

* ``"count"``: int64 scalar (a 0-d or one-element tensor, or a Python int) — images seen,
* ``"sum"``: float64 ``[head, d_embed]``,
* ``"sum_outer"``: float64 ``[head, d_embed, d_embed]``.

Shards are combined with ``+`` (:meth:`HeadMoments.merge`).

**Mean ablation from streamed means.** A ``"mean:<hook>"`` product stores, for one hook (or one
direct-effect term), the same first two keys: ``"count"`` and a float64 ``"sum"`` of that
activation over the images. Its mean is ``sum / count`` (sum the ``count`` and ``sum`` of every
shard first, then divide once). :func:`vision_lens.analysis.ablation.mean_ablate` takes such
precomputed means through ``means=``: a ``[component, d_embed]`` tensor aligned with the terms, or
a ``{component index: mean [d_embed]}`` dict for the ablated components (map each
hook's name to its component's index first, e.g. with ``Components.index(label)``). This is what
``mean_ablate(terms, ablate, reference)`` computes with ``reference.mean(1)``, without keeping the
reference images' terms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from vision_lens.analysis.direct_effects import HeadLabel
from vision_lens.analysis.textspan import (
    check_head_chunk,
    check_labels,
    check_m_rank,
    check_text_pool,
    prepare_texts,
    textspan_core,
)
from vision_lens.analysis.textspan_result import TextSpanResult
from vision_lens.utils.batching import progress_bar
from vision_lens.utils.checks import check_finite

__all__ = ["STATE_KEYS", "HeadMoments", "textspan_from_moments"]

#: The keys of :meth:`HeadMoments.state_dict` (and of a stored ``"head_moments"`` product).
STATE_KEYS = ("count", "sum", "sum_outer")


def _as_outputs(outputs: object, name: str) -> Tensor:
    """``[head, images, d]`` float64 (a 2-D ``[images, d]`` is one head), checked finite."""
    if not isinstance(outputs, Tensor):
        raise TypeError(
            f"{name} must be a tensor [head, images, d_embed], got {type(outputs).__name__}."
        )
    if outputs.dim() == 2:
        outputs = outputs[None]
    if outputs.dim() != 3:
        raise ValueError(
            f"{name} must be [head, images, d_embed] or [images, d_embed], got "
            f"{tuple(outputs.shape)}."
        )
    if not outputs.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {outputs.dtype}.")
    check_finite(outputs, name)
    return outputs.detach().to(torch.float64)


@dataclass
class HeadMoments:
    """Running sums of each head's outputs over images: enough for TextSpan.

    Attributes:
        count: Number of images summed.
        sum: ``[head, d_embed]`` float64 ``sum_i c_i``.
        sum_outer: ``[head, d_embed, d_embed]`` float64 ``sum_i c_i c_i^T``.

    Example:
        >>> outputs = torch.randn(3, 100, 8)  # [head, images, d_embed]
        >>> moments = HeadMoments.from_outputs(outputs[:, :60])
        >>> moments.update(outputs[:, 60:])  # another batch
        HeadMoments(count=100, n_heads=3, d_embed=8)
        >>> torch.allclose(moments.mean, outputs.double().mean(1))
        True
        >>> whole = HeadMoments.from_outputs(outputs)
        >>> torch.allclose(moments.covariance, whole.covariance)
        True
    """

    count: int
    sum: Float[Tensor, "head d_embed"]
    sum_outer: Float[Tensor, "head d_embed d_embed"]

    def __post_init__(self) -> None:
        if isinstance(self.count, Tensor):
            if self.count.numel() != 1 or self.count.is_floating_point():
                raise TypeError(
                    f"count must be an int (or an integer tensor with one element), got "
                    f"{self.count.dtype} {tuple(self.count.shape)}."
                )
            self.count = int(self.count.item())
        if isinstance(self.count, bool) or not isinstance(self.count, int):
            raise TypeError(f"count must be an int, got {type(self.count).__name__}.")
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}.")
        for name in ("sum", "sum_outer"):
            value = getattr(self, name)
            if not isinstance(value, Tensor) or not value.is_floating_point():
                raise TypeError(f"{name} must be a float tensor, got {type(value).__name__}.")
        if self.sum.dim() != 2:
            raise ValueError(f"sum must be [head, d_embed], got {tuple(self.sum.shape)}.")
        h, d = self.sum.shape
        if tuple(self.sum_outer.shape) != (h, d, d):
            raise ValueError(
                f"sum_outer must be [head, d_embed, d_embed] = {(h, d, d)} to match sum "
                f"{(h, d)}, got {tuple(self.sum_outer.shape)}."
            )
        self.sum = self.sum.detach().to(torch.float64)
        self.sum_outer = self.sum_outer.detach().to(self.sum.device, torch.float64)

    # ------------------------------------------------------------------ building
    @classmethod
    def zeros(
        cls, n_heads: int, d_embed: int, device: str | torch.device | None = None
    ) -> HeadMoments:
        """Empty moments (``count = 0``) for ``n_heads`` heads of width ``d_embed``.

        Example:
            >>> HeadMoments.zeros(2, 4).sum_outer.shape
            torch.Size([2, 4, 4])
        """
        return cls(
            0,
            torch.zeros(n_heads, d_embed, dtype=torch.float64, device=device),
            torch.zeros(n_heads, d_embed, d_embed, dtype=torch.float64, device=device),
        )

    @classmethod
    def from_outputs(
        cls, head_outputs: Float[Tensor, "head images d_embed"] | Float[Tensor, "images d_embed"]
    ) -> HeadMoments:
        """The moments of ``head_outputs`` ``[head, images, d_embed]`` (or one head
        ``[images, d_embed]``), summed in float64.

        Raises:
            TypeError: Not a float tensor.
            ValueError: Wrong number of dimensions, or NaN/inf values.

        Example:
            >>> HeadMoments.from_outputs(torch.ones(2, 5, 3)).count
            5
        """
        outputs = _as_outputs(head_outputs, "head_outputs")
        return cls(outputs.shape[1], outputs.sum(1), outputs.mT @ outputs)

    def update(
        self, batch_outputs: Float[Tensor, "head images d_embed"] | Float[Tensor, "images d_embed"]
    ) -> HeadMoments:
        """Add a batch ``[head, images, d_embed]`` in place; returns ``self``.

        Raises:
            ValueError: The batch's heads or width differ from these moments', or it holds
                NaN/inf.

        Example:
            >>> moments = HeadMoments.zeros(2, 3)
            >>> moments.update(torch.ones(2, 4, 3)).count
            4
        """
        outputs = _as_outputs(batch_outputs, "batch_outputs").to(self.sum.device)
        if outputs.shape[0] != self.n_heads or outputs.shape[2] != self.d_embed:
            raise ValueError(
                f"batch_outputs {tuple(outputs.shape)} does not match these moments' "
                f"[head={self.n_heads}, images, d_embed={self.d_embed}]."
            )
        self.count += outputs.shape[1]
        self.sum += outputs.sum(1)
        self.sum_outer += outputs.mT @ outputs
        return self

    def merge(self, other: HeadMoments) -> HeadMoments:
        """The moments of both sets of images together (a new object; sums add).

        Raises:
            TypeError: ``other`` is not :class:`HeadMoments`.
            ValueError: Different numbers of heads or widths.

        Example:
            >>> x = torch.randn(2, 10, 3)
            >>> a, b = HeadMoments.from_outputs(x[:, :4]), HeadMoments.from_outputs(x[:, 4:])
            >>> torch.allclose((a + b).sum, x.double().sum(1))
            True
        """
        if not isinstance(other, HeadMoments):
            raise TypeError(f"can only merge HeadMoments, got {type(other).__name__}.")
        if other.sum.shape != self.sum.shape:
            raise ValueError(
                f"cannot merge moments of shape [head, d_embed] = {tuple(other.sum.shape)} into "
                f"{tuple(self.sum.shape)}."
            )
        return HeadMoments(
            self.count + other.count,
            self.sum + other.sum.to(self.sum.device),
            self.sum_outer + other.sum_outer.to(self.sum.device),
        )

    def __add__(self, other: HeadMoments) -> HeadMoments:
        return self.merge(other)

    def __repr__(self) -> str:
        return f"HeadMoments(count={self.count}, n_heads={self.n_heads}, d_embed={self.d_embed})"

    # ------------------------------------------------------------------ statistics
    @property
    def n_heads(self) -> int:
        """Number of heads."""
        return self.sum.shape[0]

    @property
    def d_embed(self) -> int:
        """Width of the outputs."""
        return self.sum.shape[1]

    def _require(self, n: int = 1) -> None:
        if self.count < n:
            raise ValueError(
                f"These moments summarise {self.count} image(s); at least {n} needed "
                "(update() them with head outputs first)."
            )

    @property
    def mean(self) -> Float[Tensor, "head d_embed"]:
        """``[head, d_embed]`` float64 ``sum / count``.

        Raises:
            ValueError: ``count == 0``.
        """
        self._require()
        return self.sum / self.count

    @property
    def second_moment(self) -> Float[Tensor, "head d_embed d_embed"]:
        """``[head, d_embed, d_embed]`` float64 ``sum_outer / count`` (``E[c c^T]``, uncentred).

        Raises:
            ValueError: ``count == 0``.
        """
        self._require()
        return self.sum_outer / self.count

    @property
    def covariance(self) -> Float[Tensor, "head d_embed d_embed"]:
        """``[head, d_embed, d_embed]`` float64 population covariance
        ``sum_outer / count - mean mean^T`` (divided by ``count``, as TextSpan's variance).

        Raises:
            ValueError: ``count == 0``.
        """
        return self.centred_gram() / self.count

    def centred_gram(self) -> Float[Tensor, "head d_embed d_embed"]:
        """``[head, d_embed, d_embed]`` float64 ``C_c^T C_c = sum_outer - count * mean mean^T``
        (the covariance times ``count``; symmetrised).

        Raises:
            ValueError: ``count == 0``.

        Example:
            >>> x = torch.randn(1, 5, 2).double()
            >>> centred = x - x.mean(1, keepdim=True)
            >>> torch.allclose(HeadMoments.from_outputs(x).centred_gram(), centred.mT @ centred)
            True
        """
        self._require()
        mean = self.sum / self.count
        gram = self.sum_outer - self.count * mean[:, :, None] * mean[:, None, :]
        return (gram + gram.mT) / 2

    # ------------------------------------------------------------------ storage
    def state_dict(self) -> dict[str, Tensor]:
        """``{"count": int64 scalar, "sum": [head, d], "sum_outer": [head, d, d]}`` (float64
        tensors, ready for ``safetensors.torch.save_file``).

        Example:
            >>> sorted(HeadMoments.zeros(1, 2).state_dict())
            ['count', 'sum', 'sum_outer']
        """
        return {
            "count": torch.tensor(self.count, dtype=torch.int64),
            "sum": self.sum.contiguous(),
            "sum_outer": self.sum_outer.contiguous(),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor | int]) -> HeadMoments:
        """Moments from :meth:`state_dict`'s form (see the module docstring): ``"count"`` (an
        int or an integer tensor with one element), ``"sum"`` ``[head, d_embed]`` and
        ``"sum_outer"`` ``[head, d_embed, d_embed]`` (any float dtype; kept as float64). Extra keys
        are ignored.

        Raises:
            KeyError: A key is missing.
            TypeError, ValueError: Wrong types or shapes.

        Example:
            >>> moments = HeadMoments.from_outputs(torch.randn(2, 6, 3))
            >>> HeadMoments.from_state_dict(moments.state_dict()).count
            6
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping of tensors, got {type(state).__name__}.")
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise KeyError(
                f"head moments need keys {list(STATE_KEYS)}; missing {missing} (got "
                f"{sorted(state)})."
            )
        return cls(state["count"], state["sum"], state["sum_outer"])  # type: ignore[arg-type]


def textspan_from_moments(
    moments: HeadMoments,
    text_embeddings: Float[Tensor, "n_text d_embed"],
    m: int,
    rank: int | None = 80,
    *,
    texts: Sequence[str] | None = None,
    heads: Sequence[HeadLabel] | None = None,
    normalize_texts: bool = True,
    head_chunk: int = 8,
    progress: bool = False,
) -> TextSpanResult:
    """TextSpan (Algorithm 1) from each head's moments instead of its outputs.

    Chooses the same texts, in the same order, as :func:`~vision_lens.analysis.textspan.textspan`
    on the outputs the moments were summed from (it runs the same core; the variances agree to
    float64 rounding). Being per-dataset statistics, moments give no per-image reconstruction:
    the result's ``reconstruction`` is ``None``; get it in a second pass with
    ``result.project(batch_outputs)``.

    Args:
        moments: :class:`HeadMoments` over at least 2 images (``[head, d_embed]`` sums).
        text_embeddings: ``[n_text, d_embed]`` text embeddings.
        m: Texts per head, ``1 <= m <= n_text`` (and ``<= min(rank, count, d_embed)``).
        rank: Project the texts onto the top-``rank`` eigenvectors of ``sum_outer`` (the right
            singular vectors of the uncentred outputs) first; ``None`` for no projection.
        texts: The strings of the pool.
        heads: ``(layer, head)`` of each row.
        normalize_texts: L2-normalise the text embeddings first.
        head_chunk: Heads processed together (bounds memory).
        progress: Show a progress bar over head chunks.

    Returns:
        A :class:`TextSpanResult` (``indices`` ``[head, m]``, ``explained_variance``
        ``[head, m]``, ``total_variance`` ``[head]``, float64 ``basis`` ``[head, m, d_embed]`` and
        ``mean`` ``[head, d_embed]``, ``reconstruction=None``; ``meta["n_images"]`` is the count).

    Raises:
        TypeError: ``moments`` is not :class:`HeadMoments`; non-tensor or non-float texts;
            non-int ``m``/``rank``.
        ValueError: Fewer than 2 images, widths that differ, NaN/inf in the moments or texts,
            an empty pool, ``m`` out of range, texts with zero norm, or a pool that runs out of
            independent texts.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> pool = torch.randn(50, 32)
        >>> outputs = torch.randn(2, 300, 3) @ pool[[4, 8, 15]] + 0.01 * torch.randn(2, 300, 32)
        >>> moments = HeadMoments.zeros(2, 32)
        >>> for batch in outputs.split(100, dim=1):  # e.g. a DataLoader
        ...     _ = moments.update(batch)
        >>> result = textspan_from_moments(moments, pool, m=3, rank=10)
        >>> sorted(result.indices[0].tolist())
        [4, 8, 15]
        >>> from vision_lens.analysis.textspan import textspan
        >>> torch.equal(result.indices, textspan(outputs, pool, m=3, rank=10).indices)
        True
    """
    if not isinstance(moments, HeadMoments):
        raise TypeError(
            f"moments must be HeadMoments (HeadMoments.from_state_dict(...) for stored sums), got "
            f"{type(moments).__name__}."
        )
    check_text_pool(text_embeddings)
    n_heads, d = moments.n_heads, moments.d_embed
    if d != text_embeddings.shape[-1]:
        raise ValueError(
            f"head moments have width {d} but text embeddings have width "
            f"{text_embeddings.shape[-1]}: TextSpan needs both in the joint embedding space (were "
            "they made by the same CLIP model?)."
        )
    if n_heads == 0:
        raise ValueError("moments have no heads.")
    if moments.count < 2:
        raise ValueError(
            f"TextSpan needs at least 2 images per head to measure variance; these moments "
            f"summarise {moments.count}."
        )
    check_finite(moments.sum, "moments.sum")
    check_finite(moments.sum_outer, "moments.sum_outer")
    m, rank = check_m_rank(m, rank, text_embeddings.shape[0], moments.count, d)
    texts, heads = check_labels(texts, heads, text_embeddings.shape[0], n_heads)
    check_head_chunk(head_chunk)
    R, given = prepare_texts(text_embeddings, moments.sum.device, normalize_texts)
    mean_all = moments.mean
    parts: list[tuple[Tensor, ...]] = []
    starts = range(0, n_heads, head_chunk)
    bar = progress_bar(len(starts), "TextSpan", enabled=progress, unit="chunk")
    try:
        for start in starts:
            rows = slice(start, start + head_chunk)
            chunk = HeadMoments(moments.count, moments.sum[rows], moments.sum_outer[rows])
            mean = mean_all[rows]
            uncentred = (chunk.sum_outer + chunk.sum_outer.mT) / 2
            gram = chunk.centred_gram()
            parts.append(
                (*textspan_core(gram, mean, moments.count, R, given, m, rank, uncentred), mean)
            )
            bar.update(1)
    finally:
        bar.close()
    return TextSpanResult(
        indices=torch.cat([p[0] for p in parts]),
        explained_variance=torch.cat([p[1] for p in parts]),
        total_variance=torch.cat([p[2] for p in parts]),
        basis=torch.cat([p[3] for p in parts]),
        mean=torch.cat([p[4] for p in parts]),
        reconstruction=None,
        texts=texts,
        heads=heads,
        rank=rank,
        meta={"n_images": moments.count, "source": "moments"},
    )
