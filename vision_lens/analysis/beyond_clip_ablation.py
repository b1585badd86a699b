"""Ablation applications for any ViT (Balasubramanian et al. 2024, §5 and §6.4).

* :func:`layer_ablation_curve`: classification accuracy as whole layers are mean-ablated one
  after another (the paper's Figure 2: from the last layer down; or from the first up).
* :func:`spurious_mitigation`: score each component ``spurious - core`` (e.g. "location" minus
  "bird" component scores), mean-ablate the top ``k`` and report worst-group accuracy before and
  after, against as many random components (the paper's Table 3).

Both work on the source model's :class:`~vision_lens.analysis.Components` (its classifier reads
that space) or on CompAlign's aligned terms with CLIP zero-shot weights; ablation is
:func:`~vision_lens.analysis.mean_ablate`, group accuracy
:func:`~vision_lens.analysis.group_accuracy`.

Example:
    >>> import torch
    >>> from vision_lens.analysis.direct_effects import Components
    >>> c = Components(torch.randn(4, 10, 3), ["embed", "L0_attn", "L1_attn", "bias"])
    >>> layer_ablation_curve(c, [0] * 10, torch.eye(3)).layers
    [[], [1], [1, 0]]
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from vision_lens.analysis.ablation import mean_ablate
from vision_lens.analysis.beyond_clip import component_index, component_terms
from vision_lens.analysis.compalign import AlignedComponents
from vision_lens.analysis.direct_effects import Components
from vision_lens.analysis.selection import REST
from vision_lens.analysis.spurious import GroupAccuracy, group_accuracy
from vision_lens.cache import ComponentId
from vision_lens.utils.checks import check_finite

__all__ = [
    "LayerAblationCurve",
    "SpuriousMitigation",
    "layer_ablation_curve",
    "spurious_mitigation",
]

ComponentsLike = Components | AlignedComponents | Float[Tensor, "n component d"]
Classifier = Float[Tensor, "n_classes d"] | Callable[[Tensor], Tensor]


def _reference(reference: object, terms: Tensor, ids: list[ComponentId]) -> Tensor | None:
    if reference is None:
        return None
    ref, ref_ids = component_terms(reference, ids if isinstance(reference, Tensor) else None)
    if ref_ids != ids or ref.shape[2] != terms.shape[2]:
        raise ValueError("reference must have the same components (and width) as components.")
    return ref


def _int(value: object, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}.")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}.")
    return int(value)


# ---------------------------------------------------------------------- layer ablation
@dataclass
class LayerAblationCurve:
    """What :func:`layer_ablation_curve` returns.

    Attributes:
        layers: The layers mean-ablated at each step (``[]`` first: nothing ablated).
        accuracy: Top-1 accuracy at each step.
    """

    layers: list[list[int]]
    accuracy: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"layers": self.layers, "accuracy": self.accuracy}


def _accuracy(embedding: Tensor, classifier: Classifier, labels: Tensor) -> float:
    if isinstance(classifier, Tensor):
        if classifier.dim() != 2 or classifier.shape[1] != embedding.shape[1]:
            raise ValueError(
                f"classifier weights must be [n_classes, d={embedding.shape[1]}], got "
                f"{tuple(classifier.shape)}."
            )
        check_finite(classifier, "classifier")
        logits = embedding @ classifier.to(embedding).T
    else:
        logits = classifier(embedding)
        if not isinstance(logits, Tensor) or logits.shape[:1] != embedding.shape[:1]:
            raise ValueError("classifier(embeddings [n, d]) must return logits [n, n_classes].")
    return (logits.argmax(-1) == labels.to(logits.device)).float().mean().item()


def layer_ablation_curve(
    components: ComponentsLike,
    labels: Int[Tensor, " n"] | Sequence[int],
    classifier: Classifier,
    *,
    order: Literal["last_first", "first_last"] = "last_first",
    reference: ComponentsLike | None = None,
    ids: Sequence[str] | None = None,
) -> LayerAblationCurve:
    """Accuracy as layers are mean-ablated cumulatively (the paper's Figure 2).

    Every component of a layer (its attention or heads and bias share, its MLP) is replaced by
    its mean over ``reference`` (:func:`~vision_lens.analysis.mean_ablate`); components of no
    layer (``embed``, ``bias``, ``rest``, ``readout_mlp``) are kept.

    Args:
        components: The source model's :class:`Components` (or aligned terms, or a tensor
            ``[n, component, d]`` with ``ids``).
        labels: ``[n]`` true classes.
        classifier: ``[n_classes, d]`` weights (``argmax(embedding @ W.T)``) or a callable from
            embeddings ``[n, d]`` to logits ``[n, n_classes]`` (e.g. the model's own head).
        order: ``"last_first"`` (the paper: last layer first) or ``"first_last"``.
        reference: Images whose means replace the ablated terms (default: ``components``).
        ids: Labels of a plain tensor's components.

    Returns:
        :class:`LayerAblationCurve` with ``n_layers + 1`` points.

    Raises:
        ValueError: No layered component, label count, classifier width, NaN, bad ``order``.

    Example:
        >>> from vision_lens.analysis.direct_effects import Components
        >>> terms = torch.zeros(3, 4, 2)
        >>> terms[1] = torch.tensor([[1.0, 0], [0, 1], [1, 0], [0, 1]])  # L1 does the job
        >>> c = Components(terms, ["embed", "L0_mlp", "L1_mlp"])
        >>> layer_ablation_curve(c, [0, 1, 0, 1], torch.eye(2), order="first_last").accuracy
        [1.0, 0.5, 0.5]
    """
    terms, parsed = component_terms(components, ids)
    if order not in ("last_first", "first_last"):
        raise ValueError(f"order must be 'last_first' or 'first_last', got {order!r}.")
    ref = _reference(reference, terms, parsed)
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.shape[0] != terms.shape[1]:
        raise ValueError(f"labels must be [n={terms.shape[1]}], got {tuple(labels.shape)}.")
    layers = sorted({c.layer for c in parsed if c.layer is not None})
    if not layers:
        raise ValueError("No component belongs to a layer: nothing to ablate.")
    if order == "last_first":
        layers = layers[::-1]
    steps, accuracy = [], []
    for n in range(len(layers) + 1):
        chosen = layers[:n]
        mask = torch.tensor([c.layer in chosen for c in parsed])
        embedding = mean_ablate(terms, mask, ref)
        steps.append(chosen)
        accuracy.append(_accuracy(embedding, classifier, labels))
    return LayerAblationCurve(steps, accuracy)


# ---------------------------------------------------------------------- spurious mitigation
@dataclass
class SpuriousMitigation:
    """What :func:`spurious_mitigation` returns.

    Attributes:
        ablated: The ``k`` components with the highest ``spurious - core`` score.
        score: ``[component]`` the ``spurious - core`` score of every component.
        before: Group accuracy with nothing ablated.
        after: Group accuracy with ``ablated`` mean-ablated.
        random: One result per draw of ``k`` random candidates.
        random_components: The components of each draw.
        best_random: The draw with the best worst-group accuracy, or ``None``.
    """

    ablated: list[ComponentId]
    score: Tensor
    before: GroupAccuracy
    after: GroupAccuracy
    random: list[GroupAccuracy]
    random_components: list[list[ComponentId]]
    best_random: GroupAccuracy | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ablated": [str(c) for c in self.ablated],
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "best_random": None if self.best_random is None else self.best_random.to_dict(),
            "random": [r.to_dict() for r in self.random],
            "random_components": [[str(c) for c in cs] for cs in self.random_components],
        }


def _score_vector(scores: object, ids: list[ComponentId], name: str) -> Tensor:
    if isinstance(scores, Mapping):
        given = {ComponentId.parse(str(key)): value for key, value in scores.items()}
        missing = [c for c in ids if c not in given and c != REST]
        if missing:
            raise KeyError(f"{name} has no score for component {missing[0]!r}.")
        vector = torch.tensor([float(given.get(c, float("nan"))) for c in ids]).double()
        check_finite(vector[[i for i, c in enumerate(ids) if c in given]], name)
        return vector  # NaN for an unscored "rest": refused if it is a candidate
    if not isinstance(scores, Tensor) or scores.dim() != 1:
        raise TypeError(
            f"{name} must be a 1-d tensor [component] or a {{component: score}} dict, got "
            f"{type(scores).__name__}."
        )
    if scores.shape[0] != len(ids):
        raise ValueError(f"{name} has {scores.shape[0]} scores for {len(ids)} components.")
    return check_finite(scores, name).double().cpu()


def spurious_mitigation(
    scores_spurious: Float[Tensor, " component"] | Mapping[str, float],
    scores_core: Float[Tensor, " component"] | Mapping[str, float],
    components: ComponentsLike,
    labels: Int[Tensor, " n"] | Sequence[int],
    groups: Int[Tensor, " n"] | Sequence[int],
    k: int,
    *,
    class_weights: Float[Tensor, "n_classes d"],
    n_random: int = 5,
    seed: int = 0,
    candidates: Sequence[str | int] | None = None,
    reference: ComponentsLike | None = None,
    ids: Sequence[str] | None = None,
) -> SpuriousMitigation:
    """Mean-ablate the ``k`` components most about the spurious cue and least about the core
    one; worst-group accuracy before/after, against ``k`` random components (§6.4, Table 3).

    Args:
        scores_spurious: Per-component scores for the spurious property (``"location"``):
            ``[component]`` in ``components``' order, or ``ComponentScores.scores(prop)``.
        scores_core: The same for the core property (``"bird"``).
        components: The terms the classifier reads (see :func:`layer_ablation_curve`).
        labels: ``[n]`` true classes.
        groups: ``[n]`` group of each image (e.g. ``2 * label + place``).
        k: Components to ablate (the paper: 10).
        class_weights: ``[n_classes, d]`` classifier (zero-shot text embeddings in aligned
            space, or the model's head weights).
        n_random: Draws of ``k`` random candidates (0 skips the baseline).
        seed: Seed of the draws.
        candidates: Components that may be chosen or drawn (default: all but ``"rest"``).
        reference: Images whose means replace the ablated terms (default: ``components``).
        ids: Labels of a plain tensor's components.

    Returns:
        :class:`SpuriousMitigation`.

    Raises:
        ValueError: ``k`` out of ``[1, len(candidates)]``, mismatched lengths, NaN scores.
        KeyError: A candidate that is not a component, or a component a score dict lacks.

    Example:
        >>> terms = torch.zeros(3, 8, 2)
        >>> place, label = torch.tensor([0, 1] * 4), torch.tensor([0, 0, 1, 1] * 2)
        >>> terms[0] = 2 * torch.eye(2)[place]  # L0H0: the background, louder than the bird
        >>> terms[1] = torch.eye(2)[label]  # L0H1: the bird
        >>> c = Components(terms, ["L0H0", "L0H1", "rest"])
        >>> r = spurious_mitigation(torch.tensor([0.9, 0.1, 0.0]), torch.tensor([0.0, 0.8, 0.0]),
        ...                         c, label, 2 * label + place, 1, class_weights=torch.eye(2))
        >>> r.ablated, r.before.worst, r.after.worst
        (['L0H0'], 0.0, 1.0)
    """
    terms, parsed = component_terms(components, ids)
    spurious = _score_vector(scores_spurious, parsed, "scores_spurious")
    core = _score_vector(scores_core, parsed, "scores_core")
    if candidates is None:
        pool = [i for i, c in enumerate(parsed) if c != REST]
    else:
        pool = component_index(parsed, candidates, "candidates")
    k = _int(k, "k", 1, len(pool))
    n_random = _int(n_random, "n_random", 0)
    seed = _int(seed, "seed", 0)
    ref = _reference(reference, terms, parsed)
    score = spurious - core
    if not bool(torch.isfinite(score[pool]).all()):
        raise ValueError("A candidate component has no score: score it or leave it out.")
    order = torch.argsort(score[pool], descending=True, stable=True).tolist()
    chosen = [pool[i] for i in order[:k]]

    def evaluate(ablate: list[int]) -> GroupAccuracy:
        embedding = mean_ablate(terms, ablate, ref)
        return group_accuracy(embedding, class_weights, labels, groups)

    before, after = evaluate([]), evaluate(chosen)
    generator = torch.Generator().manual_seed(seed)
    random, drawn = [], []
    for _ in range(n_random):
        draw = [pool[i] for i in torch.randperm(len(pool), generator=generator)[:k].tolist()]
        drawn.append([parsed[i] for i in draw])
        random.append(evaluate(draw))
    best = max(random, key=lambda r: (r.worst, r.average)) if random else None
    return SpuriousMitigation(
        ablated=[parsed[i] for i in chosen],
        score=score,
        before=before,
        after=after,
        random=random,
        random_components=drawn,
        best_random=best,
    )
