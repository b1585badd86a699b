"""Reducing spurious cues by mean-ablating property heads (Gandelsman et al. 2024, §4.2, Table 2).

On Waterbirds the background (water/land) is a spurious cue for the bird class. The paper reads
each head's TextSpan descriptions, mean-ablates the heads whose role is location/background, and
measures zero-shot worst-group accuracy before and after, against ablating as many random heads
(best of 5 draws). This module automates the reading with keyword matching and reports the same
numbers; on the shapes world use :func:`vision_lens.shapes.spurious_split` (round vs angular
shapes on water vs grass).

Example:
    >>> heads = heads_by_keywords(result, ["water", "grass", "background"], top=10)
    ... # doctest: +SKIP
    >>> report = spurious_ablation(components, heads.heads, class_weights, labels, groups)
    ... # doctest: +SKIP
    >>> report.before.worst, report.after.worst, report.best_random.worst  # doctest: +SKIP
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from vision_lens.analysis.ablation import ablated_embedding
from vision_lens.analysis.direct_effects import Components, HeadLabel, head_label
from vision_lens.utils.checks import check_finite

if TYPE_CHECKING:
    from vision_lens.analysis.textspan_result import TextSpanResult

__all__ = [
    "GroupAccuracy",
    "HeadMatches",
    "SpuriousAblation",
    "group_accuracy",
    "heads_by_keywords",
    "spurious_ablation",
]

#: Background / location words for Waterbirds-style spurious cues.
LOCATION_KEYWORDS: tuple[str, ...] = (
    "water", "lake", "sea", "ocean", "river", "beach", "grass", "field", "forest", "land",
    "background", "sand", "sky", "meadow", "lawn", "desert", "place", "location", "photo taken in",
)  # fmt: skip


@dataclass
class GroupAccuracy:
    """Zero-shot accuracy per group, its worst value and the average over images.

    Attributes:
        per_group: ``{group: accuracy}`` for every group present.
        counts: ``{group: number of images}``.
        worst: The lowest group accuracy (the robustness metric of Sagawa et al. 2019).
        average: Accuracy over all images.
    """

    per_group: dict[int, float]
    counts: dict[int, int]
    worst: float
    average: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "worst": self.worst,
            "average": self.average,
            "per_group": {str(g): a for g, a in self.per_group.items()},
            "counts": {str(g): n for g, n in self.counts.items()},
        }


def group_accuracy(
    embeddings: Float[Tensor, "images d_embed"],
    class_weights: Float[Tensor, "n_classes d_embed"],
    labels: Int[Tensor, " images"] | Sequence[int],
    groups: Int[Tensor, " images"] | Sequence[int],
) -> GroupAccuracy:
    """Zero-shot accuracy per group (e.g. ``2 * label + place``).

    Example:
        >>> r = group_accuracy(torch.tensor([[1.0, 0], [0, 1], [1, 0], [1, 0]]), torch.eye(2),
        ...                    [0, 1, 1, 1], [0, 0, 1, 1])
        >>> r.per_group, r.worst, r.average
        ({0: 1.0, 1: 0.0}, 0.0, 0.5)
    """
    check_finite(embeddings, "embeddings")
    check_finite(class_weights, "class_weights")
    if embeddings.ndim != 2:
        raise ValueError(
            f"embeddings must be [images, d_embed], got shape {tuple(embeddings.shape)}."
        )
    if class_weights.ndim != 2 or class_weights.shape[0] == 0:
        raise ValueError(
            "class_weights must be [n_classes >= 1, d_embed] (one zero-shot weight per class), "
            f"got shape {tuple(class_weights.shape)}."
        )
    labels = _int_vector(labels, "labels", embeddings.device)
    groups = _int_vector(groups, "groups", embeddings.device)
    if embeddings.shape[-1] != class_weights.shape[-1]:
        raise ValueError(
            f"Image embeddings have width {embeddings.shape[-1]} but class weights have width "
            f"{class_weights.shape[-1]}."
        )
    if not (labels.shape[0] == groups.shape[0] == embeddings.shape[0]):
        raise ValueError(
            f"{embeddings.shape[0]} images, {labels.shape[0]} labels and {groups.shape[0]} "
            "groups: they must match."
        )
    if labels.shape[0] == 0:
        raise ValueError("No images: embeddings, labels and groups are empty.")
    n_classes = class_weights.shape[0]
    bad = (labels < 0) | (labels >= n_classes)
    if bool(bad.any()):
        raise ValueError(
            f"labels holds {labels[bad][0].item()}, but class_weights has {n_classes} classes "
            f"(labels 0..{n_classes - 1}): a label outside them would count as always wrong."
        )
    correct = (embeddings @ class_weights.to(embeddings).T).argmax(-1) == labels
    per_group, counts = {}, {}
    for g in sorted(set(groups.tolist())):
        mask = groups == g
        per_group[g] = correct[mask].float().mean().item()
        counts[g] = int(mask.sum())
    return GroupAccuracy(
        per_group=per_group,
        counts=counts,
        worst=min(per_group.values()),
        average=correct.float().mean().item(),
    )


def _int_vector(values: object, name: str, device: torch.device) -> Tensor:
    """A 1-d int64 tensor of ``values`` (a tensor, array or sequence of ints)."""
    if values is None or isinstance(values, str | bytes | numbers.Number):
        raise TypeError(
            f"{name} must be a 1-d tensor or sequence of ints (one per image), got "
            f"{type(values).__name__} {values!r}."
        )
    try:
        tensor = torch.as_tensor(np.asarray(values) if isinstance(values, list | tuple) else values)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"{name} must be a 1-d tensor or sequence of ints (one per image): {error}"
        ) from None
    if tensor.numel() and (
        tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex()
    ):
        raise TypeError(
            f"{name} must be ints (one class or group index per image), got {tensor.dtype}; "
            "convert with .long() if the values are whole numbers."
        )
    if tensor.ndim != 1:
        raise ValueError(f"{name} must be 1-d (one per image), got shape {tuple(tensor.shape)}.")
    return tensor.to(device=device, dtype=torch.long)


@dataclass
class HeadMatches:
    """Heads selected by keyword matching on their TextSpan texts.

    Attributes:
        heads: Selected ``(layer, head)`` pairs, most matches first (row indices if the result
            has no head labels).
        matches: ``{"L{l}H{h}": [matching texts]}`` for the selected heads.
        counts: ``{"L{l}H{h}": number of matching texts}`` for every head examined.
    """

    heads: list[HeadLabel]
    matches: dict[str, list[str]]
    counts: dict[str, int]


def _pattern(keywords: Sequence[str]) -> re.Pattern:
    if isinstance(keywords, str):
        keywords = [keywords]
    if not isinstance(keywords, Sequence | set | frozenset):
        raise TypeError(
            f"keywords must be a list of words, got {type(keywords).__name__} {keywords!r}."
        )
    for k in keywords:
        if not isinstance(k, str):
            raise TypeError(
                f"keywords must be strings, got {type(k).__name__} {k!r} in {list(keywords)!r}."
            )
    words = [k.strip() for k in keywords if k and k.strip()]
    if not words:
        raise ValueError("Pass at least one keyword.")
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b(?:{alternatives})(?:s|es)?\b", re.IGNORECASE)


def heads_by_keywords(
    result: TextSpanResult,
    keywords: Sequence[str] = LOCATION_KEYWORDS,
    top: int | None = 10,
    min_matches: int = 2,
) -> HeadMatches:
    """Heads whose top TextSpan texts mention any of ``keywords``.

    Matching is case-insensitive on whole words (plural ``s``/``es`` allowed), so ``"sea"``
    matches "the sea" and "seas" but not "season".

    Args:
        result: A :class:`~vision_lens.analysis.textspan_result.TextSpanResult` with ``texts`` (and
            ``heads``) set, e.g. from :func:`~vision_lens.analysis.textspan.textspan_model`.
        keywords: Words or phrases describing the role (default: background/location words).
        top: Examine each head's first ``top`` texts (default 10; ``None``: all ``m``).
        min_matches: A head is selected if at least this many of those texts match.

    Returns:
        :class:`HeadMatches`.

    Example:
        >>> from vision_lens.analysis.textspan_result import TextSpanResult
        >>> texts = ["a lake", "a red object", "grass fields", "a circle", "a seaside town"]
        >>> r = TextSpanResult(indices=torch.tensor([[0, 2, 1], [1, 3, 4]]),
        ...     explained_variance=torch.ones(2, 3), total_variance=torch.ones(2),
        ...     basis=torch.zeros(2, 3, 4), mean=torch.zeros(2, 4), texts=texts,
        ...     heads=[(3, 0), (3, 1)])
        >>> heads_by_keywords(r, ["lake", "grass", "sea"], min_matches=1).heads
        [(3, 0)]
    """
    if not all(hasattr(result, a) for a in ("texts", "texts_for", "n_heads", "label")):
        raise TypeError(
            "result must be a TextSpanResult (from textspan / textspan_model), got "
            f"{type(result).__name__}."
        )
    if result.texts is None:
        raise ValueError("The TextSpan result has no texts: run textspan with texts=[...].")
    if top is not None:
        _check_count(top, "top", 1, " (or None for all of each head's texts)")
    _check_count(min_matches, "min_matches", 1)
    pattern = _pattern(keywords)
    found: list[tuple[int, int, HeadLabel | int]] = []
    matches: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for row in range(result.n_heads):
        texts = result.texts_for(row, top=top)
        hits = [t for t in texts if pattern.search(t)]
        name = result.label(row)
        counts[name] = len(hits)
        if len(hits) >= min_matches:
            key = result.heads[row] if result.heads is not None else row
            found.append((-len(hits), row, key))
            matches[name] = hits
    found.sort()
    return HeadMatches(heads=[key for _, _, key in found], matches=matches, counts=counts)


def _check_count(value: object, name: str, minimum: int, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an int >= {minimum}{hint}, got {type(value).__name__} {value!r}."
        )
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}{hint}, got {value}.")
    return int(value)


class _MissingHeadError(IndexError, KeyError):
    """A head the components lack: an ``IndexError`` (docs/errors.md), and a ``KeyError`` as
    :meth:`Components.index` raises for a missing label."""

    def __str__(self) -> str:
        return str(self.args[0])


def _head_pairs(heads: object, name: str) -> list[HeadLabel]:
    if isinstance(heads, str | bytes) or not isinstance(heads, Sequence):
        raise TypeError(
            f"{name} must be a list of (layer, head) pairs, got {type(heads).__name__} {heads!r}."
        )
    out = []
    for pair in heads:
        if (
            isinstance(pair, str | bytes)
            or not isinstance(pair, Sequence | Tensor | np.ndarray)
            or len(pair) != 2
        ):
            raise TypeError(
                f"{name} must be (layer, head) pairs such as (3, 0), got {pair!r} in "
                f"{list(heads)!r}."
            )
        values = pair.tolist() if isinstance(pair, Tensor | np.ndarray) else list(pair)
        if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in values):
            raise TypeError(
                f"{name} must be pairs of ints (layer, head), got {pair!r} in {list(heads)!r}."
            )
        out.append((int(values[0]), int(values[1])))
    return out


def _check_heads_exist(components: Components, heads: list[HeadLabel], name: str) -> None:
    have = set(components.heads)
    missing = [h for h in heads if h not in have]
    if missing:
        layer, head = missing[0]
        available = ", ".join(head_label(*h) for h in components.heads[:12]) or "none"
        more = ", ..." if len(components.heads) > 12 else ""
        raise _MissingHeadError(
            f"No component {head_label(layer, head)!r}: {name} names head {missing[0]}, which "
            f"these components do not have (heads: {available}{more}). Heads exist only for "
            "the layers split with head_layers=."
        )


@dataclass
class SpuriousAblation:
    """Worst-group and average accuracy before/after mean-ablating heads, with a random-heads
    baseline.

    Attributes:
        heads: The ablated heads.
        before: Accuracy with nothing ablated.
        after: Accuracy with ``heads`` mean-ablated.
        random: One result per random draw of ``len(heads)`` heads.
        random_heads: The heads of each draw.
        best_random: The draw with the best worst-group accuracy (the paper's "top of 5").
        matches: Keyword matches that chose the heads, if any.
    """

    heads: list[HeadLabel]
    before: GroupAccuracy
    after: GroupAccuracy
    random: list[GroupAccuracy]
    random_heads: list[list[HeadLabel]]
    best_random: GroupAccuracy | None
    matches: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "heads": [head_label(*h) for h in self.heads],
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "best_random": None if self.best_random is None else self.best_random.to_dict(),
            "random": [r.to_dict() for r in self.random],
            "random_heads": [[head_label(*h) for h in hs] for hs in self.random_heads],
            "matches": self.matches,
        }

    def to_markdown(self) -> str:
        rows = [
            ("nothing ablated", self.before),
            (f"{len(self.heads)} selected heads ablated", self.after),
        ]
        if self.best_random is not None:
            rows.append(
                (f"{len(self.heads)} random heads (best of {len(self.random)})", self.best_random)
            )
        lines = ["| ablation | worst-group acc. | average acc. |", "| --- | --- | --- |"]
        lines += [f"| {name} | {r.worst:.1%} | {r.average:.1%} |" for name, r in rows]
        return "\n".join(lines) + "\n"


def spurious_ablation(
    components: Components,
    heads: Sequence[HeadLabel],
    class_weights: Float[Tensor, "n_classes d_embed"],
    labels: Int[Tensor, " images"] | Sequence[int],
    groups: Int[Tensor, " images"] | Sequence[int],
    *,
    n_random: int = 5,
    seed: int = 0,
    candidates: Sequence[HeadLabel] | None = None,
    reference: Components | Tensor | None = None,
    matches: dict[str, list[str]] | None = None,
) -> SpuriousAblation:
    """Mean-ablate ``heads`` and report group accuracies before and after, plus the best of
    ``n_random`` seeded draws of as many random heads from ``candidates``.

    Args:
        components: Terms of the evaluation images, with the heads split out.
        heads: ``(layer, head)`` pairs to ablate (e.g. ``heads_by_keywords(...).heads``).
        class_weights: Zero-shot classifier ``[n_classes, d_embed]``.
        labels: True classes.
        groups: Group of each image (e.g. ``SpuriousDataset.groups``).
        n_random: Random draws for the baseline (0 to skip).
        seed: Seed of the draws (a ``torch.Generator``).
        candidates: Heads to draw from (default: every head in ``components``).
        reference: Images whose means replace the ablated terms (default: ``components``).
        matches: Keyword matches to keep in the report.

    Example:
        >>> c = Components(torch.randn(4, 12, 2), ["embed", "L0H0", "L0H1", "bias"])
        >>> r = spurious_ablation(c, [(0, 1)], torch.eye(2), [0, 1] * 6, [0, 1, 2, 3] * 3,
        ...                       n_random=2)
        >>> len(r.random_heads), len(r.random_heads[0])
        (2, 1)
    """
    if not isinstance(components, Components):
        raise TypeError(
            "components must be a Components (from decompose_components or split_heads), got "
            f"{type(components).__name__}."
        )
    heads = _head_pairs(heads, "heads")
    if not heads:
        raise ValueError(
            "heads is empty: nothing to ablate (after would equal before). Pass at least one "
            "(layer, head), e.g. heads_by_keywords(...).heads, and skip the ablation when it "
            "finds none."
        )
    n_random = _check_count(n_random, "n_random", 0, " (0 skips the random baseline)")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}.")
    pool = components.heads if candidates is None else _head_pairs(candidates, "candidates")
    if len(heads) > len(pool):
        raise ValueError(f"Cannot draw {len(heads)} random heads from {len(pool)} candidates.")
    for name, chosen in (("heads", heads), ("candidates", pool)):
        repeated = sorted({h for h in chosen if chosen.count(h) > 1})
        if repeated:
            raise ValueError(
                f"{name} names head {repeated[0]} twice; give each head once (a repeat would "
                "count it twice)."
            )
    _check_heads_exist(components, heads, "heads")
    _check_heads_exist(components, pool, "candidates")

    def evaluate(ablate: Sequence[HeadLabel]) -> GroupAccuracy:
        embedding = ablated_embedding(components, list(ablate), reference=reference)
        return group_accuracy(embedding, class_weights, labels, groups)

    before = evaluate([])
    after = evaluate(heads)
    generator = torch.Generator().manual_seed(int(seed))
    random_heads, random = [], []
    for _ in range(n_random):
        draw = torch.randperm(len(pool), generator=generator)[: len(heads)].tolist()
        chosen = [pool[i] for i in draw]
        random_heads.append(chosen)
        random.append(evaluate(chosen))
    best = max(random, key=lambda r: (r.worst, r.average)) if random else None
    return SpuriousAblation(
        heads=heads,
        before=before,
        after=after,
        random=random,
        random_heads=random_heads,
        best_random=best,
        matches=dict(matches or {}),
    )
