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

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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
    labels = torch.as_tensor(labels, device=embeddings.device).long()
    groups = torch.as_tensor(groups, device=embeddings.device).long()
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
        raise ValueError("No images.")
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
    if result.texts is None:
        raise ValueError("The TextSpan result has no texts: run textspan with texts=[...].")
    if min_matches < 1:
        raise ValueError(f"min_matches must be >= 1, got {min_matches}.")
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
    heads = [(int(a), int(b)) for a, b in heads]
    pool = components.heads if candidates is None else [(int(a), int(b)) for a, b in candidates]
    if len(heads) > len(pool):
        raise ValueError(f"Cannot draw {len(heads)} random heads from {len(pool)} candidates.")
    components.head_indices(heads)  # clear error for unknown heads

    def evaluate(ablate: Sequence[HeadLabel]) -> GroupAccuracy:
        embedding = ablated_embedding(components, list(ablate), reference=reference)
        return group_accuracy(embedding, class_weights, labels, groups)

    before = evaluate([])
    after = evaluate(heads)
    generator = torch.Generator().manual_seed(seed)
    random_heads, random = [], []
    for _ in range(n_random if heads else 0):
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
