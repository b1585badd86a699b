"""Zero-shot evaluation of a CLIP on the shapes world (used for the shipped model's report).

Works on any open_clip ``CLIP`` (``encode_image`` / ``encode_text``) with a tokenizer; images go
through :func:`vision_lens.shapes.encoding.images_to_tensor` (what ``model.preprocess`` does).
:func:`attribute_accuracy` classifies one attribute zero-shot; :func:`evaluate_shapes_clip` runs
it for every attribute and prompt ensemble, plus the spurious split.

Example:
    >>> from vision_lens.shapes.pretrained import load_shapes_open_clip, shapes_tokenizer
    >>> from vision_lens.shapes.evaluate import evaluate_shapes_clip, format_report
    >>> model, preprocess = load_shapes_open_clip()  # doctest: +SKIP
    >>> tokenizer = shapes_tokenizer()  # doctest: +SKIP
    >>> report = evaluate_shapes_clip(model, tokenizer, n=500)  # doctest: +SKIP
    >>> print(format_report(report))  # doctest: +SKIP
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vision_lens.shapes.captions import caption_for, prompts
from vision_lens.shapes.dataset import ShapesDataset
from vision_lens.shapes.encoding import Tokenizer, class_embeddings, encode_images

# Re-exported: encode_images, encode_texts and class_embeddings were defined here before
# vision_lens.shapes.encoding.
from vision_lens.shapes.encoding import encode_texts as encode_texts
from vision_lens.shapes.generator import generate, labels, spurious_split
from vision_lens.shapes.vocabulary import (
    ANGULAR_SHAPES,
    COLORS,
    POSITIONS,
    ROUND_SHAPES,
    SHAPES,
    SIZES,
    TEXTURES,
    VOCABULARY,
    check_int,
    check_name,
)
from vision_lens.utils.checks import check_finite

__all__ = [
    "ATTRIBUTES",
    "TEST_SEED",
    "attribute_accuracy",
    "ensemble_texts",
    "evaluate_shapes_clip",
    "format_report",
    "spurious_worst_group",
    "zero_shot_accuracy",
]

#: Attributes with zero-shot prompts, in report order (the first three are the quality gate).
ATTRIBUTES = ("color", "shape", "position", "size", "texture", "background")
#: Seed of the held-out test scenes of the shipped report (never used in training).
TEST_SEED = 10_000

_BASE = {"shape": "circle", "color": "red", "size": "medium", "position": "center"}
_BASE["texture"] = "solid"


def _obj(**kw: str) -> dict[str, str]:
    return {**_BASE, **kw}


def ensemble_texts(attribute: str, kind: str = "grammar") -> list[list[str]]:
    """Prompt ensembles per class, in vocabulary order, from the training caption grammar.

    Args:
        attribute: One of :data:`ATTRIBUTES`.
        kind: ``"single"`` (the :func:`prompts` form only), ``"compound"`` (the class named in
            every caption that mentions it together with one or two other attributes, the other
            attributes running over their vocabularies: "a red circle", "a red square", ...) or
            ``"grammar"`` (both).

    Example:
        >>> ensemble_texts("position", "compound")[0][:2]
        ['a circle in the top left', 'a square in the top left']
    """
    check_name(attribute, ATTRIBUTES, "attribute")
    check_name(kind, ("single", "compound", "grammar"), "kind")
    single = [[p] for p in prompts(attribute)]
    if kind == "single":
        return single
    out = []
    for value in VOCABULARY[attribute]:
        groups: list[tuple[str, list[dict[str, str]]]] = []
        bg = "plain"
        if attribute == "color":
            groups.append(("color_shape", [_obj(color=value, shape=s) for s in SHAPES]))
            objs = [_obj(color=value, shape=s, size=z) for s in SHAPES for z in SIZES]
            groups.append(("size_color_shape", objs))
        elif attribute == "shape":
            groups.append(("color_shape", [_obj(shape=value, color=c) for c in COLORS]))
            groups.append(("texture_shape", [_obj(shape=value, texture=t) for t in TEXTURES]))
            groups.append(("shape_position", [_obj(shape=value, position=p) for p in POSITIONS]))
        elif attribute == "position":
            groups.append(("shape_position", [_obj(position=value, shape=s) for s in SHAPES]))
        elif attribute == "size":
            objs = [_obj(size=value, color=c, shape=s) for c in COLORS for s in SHAPES]
            groups.append(("size_color_shape", objs))
        elif attribute == "texture":
            groups.append(("texture_shape", [_obj(texture=value, shape=s) for s in SHAPES]))
        elif attribute == "background":
            groups.append(("count", [_obj()]))
            bg = value
        else:
            raise ValueError(f"unknown attribute {attribute!r}; valid: {list(ATTRIBUTES)}")
        texts = [caption_for([o], bg, 0, mode=mode) for mode, objs in groups for o in objs]
        out.append(texts)
    if kind == "grammar":
        out = [s + c for s, c in zip(single, out, strict=True)]
    return out


@torch.no_grad()
def attribute_accuracy(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    dataset: ShapesDataset,
    attribute: str,
    *,
    class_texts: Sequence[Sequence[str]] | None = None,
    image_features: torch.Tensor | None = None,
    top_confusions: int = 3,
) -> dict[str, Any]:
    """Zero-shot classification of one attribute on single-object scenes.

    Args:
        model: open_clip ``CLIP``.
        tokenizer: Its tokenizer.
        dataset: Single-object scenes (``background`` works for any).
        attribute: Attribute to classify.
        class_texts: Texts per class (vocabulary order); default ``prompts(attribute)``.
        image_features: Precomputed :func:`encode_images` of ``dataset.images``.
        top_confusions: How many of the most confused pairs to return.

    Returns:
        ``accuracy``, ``per_class`` accuracy, ``confusion`` (rows true, columns predicted),
        ``most_confused`` (``[true, predicted, count]``), ``predictions``.

    Example:
        >>> from vision_lens.shapes.pretrained import load_shapes_open_clip, shapes_tokenizer
        >>> model, _ = load_shapes_open_clip()
        >>> scenes = generate(100, seed=10_000, n_objects=1)
        >>> res = attribute_accuracy(model, shapes_tokenizer(), scenes, "color")
        >>> res["accuracy"] > 0.9, len(res["per_class"]) == len(COLORS)
        (True, True)
    """
    check_name(attribute, ATTRIBUTES, "attribute")
    top_confusions = check_int(top_confusions, "top_confusions", minimum=0)
    vocab = VOCABULARY[attribute]
    y = labels(dataset, attribute)
    if class_texts is not None:
        if isinstance(class_texts, str) or not isinstance(class_texts, Sequence):
            raise TypeError(
                f"class_texts must be a list with one list of texts per {attribute} (in the "
                f"order of {list(vocab)}), got {type(class_texts).__name__}."
            )
        if len(class_texts) != len(vocab):
            raise ValueError(
                f"class_texts has {len(class_texts)} classes but {attribute} has {len(vocab)} "
                f"values ({list(vocab)}): pass one list of texts per value, in that order."
            )
    if image_features is not None:
        check_finite(image_features, "image_features")
        if image_features.ndim != 2 or image_features.shape[0] != len(y):
            raise ValueError(
                f"image_features must be [{len(y)}, d] (one row per image of dataset, from "
                f"encode_images(model, dataset.images)), got {tuple(image_features.shape)}."
            )
    if image_features is None:
        image_features = encode_images(model, dataset.images)
    if class_texts is None:
        class_texts = [[p] for p in prompts(attribute)]
    cls = class_embeddings(model, tokenizer, class_texts)
    if cls.shape[-1] != image_features.shape[-1]:
        raise ValueError(
            f"image_features have width {image_features.shape[-1]} but the model's text "
            f"embeddings have width {cls.shape[-1]}: were they encoded by another model?"
        )
    pred = (image_features @ cls.T).argmax(1).numpy()
    k = len(vocab)
    conf = np.zeros((k, k), dtype=np.int64)
    np.add.at(conf, (y, pred), 1)
    off = [(int(conf[i, j]), vocab[i], vocab[j]) for i in range(k) for j in range(k) if i != j]
    off = sorted((c for c in off if c[0] > 0), reverse=True)[:top_confusions]
    per_class = {
        vocab[i]: float(conf[i, i] / conf[i].sum()) if conf[i].sum() else float("nan")
        for i in range(k)
    }
    return {
        "accuracy": float((pred == y).mean()),
        "per_class": per_class,
        "confusion": conf.tolist(),
        "most_confused": [[t, p, c] for c, t, p in off],
        "predictions": pred,
    }


def zero_shot_accuracy(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Deprecated name of :func:`attribute_accuracy` (renamed in 0.2; removed in 0.3).

    Renamed because :func:`vision_lens.zero_shot_accuracy` is a different function (the accuracy
    of given image embeddings against given class embeddings, a float). Emits a
    ``DeprecationWarning``.

    Example:
        >>> import warnings
        >>> from vision_lens.shapes.pretrained import load_shapes_open_clip, shapes_tokenizer
        >>> model, _ = load_shapes_open_clip()
        >>> scenes = generate(20, seed=10_000, n_objects=1)
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     res = zero_shot_accuracy(model, shapes_tokenizer(), scenes, "shape")
        >>> caught[0].category.__name__, res["accuracy"] > 0.5
        ('DeprecationWarning', True)
    """
    warnings.warn(
        "vision_lens.shapes.evaluate.zero_shot_accuracy is now attribute_accuracy (the old name "
        "is removed in 0.3).",
        DeprecationWarning,
        stacklevel=2,
    )
    return attribute_accuracy(*args, **kwargs)


@torch.no_grad()
def spurious_worst_group(
    model: torch.nn.Module, tokenizer: Tokenizer, n: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Zero-shot round-vs-angular accuracy per group on ``spurious_split(n, "test", seed)``.

    Methods: ``prompt`` ("an angular shape" / "a round shape", words the training captions never
    use), ``shape_ensemble`` (each class is the mean embedding of its shapes' ``grammar``
    ensembles) and ``shape_argmax`` (classify the 8 shapes, then map to round/angular).

    Example:
        >>> from vision_lens.shapes.pretrained import load_shapes_open_clip, shapes_tokenizer
        >>> model, _ = load_shapes_open_clip()
        >>> res = spurious_worst_group(model, shapes_tokenizer(), n=40)
        >>> sorted(res["shape_argmax"]), res["shape_argmax"]["worst_group"] <= 1.0
        (['accuracy', 'groups', 'worst_group'], True)
    """
    ds = spurious_split(n, "test", seed=seed)
    feats = encode_images(model, ds.images)
    shape_texts = ensemble_texts("shape", "grammar")
    by_shape = dict(zip(SHAPES, shape_texts, strict=True))
    methods = {
        "prompt": [["an angular shape"], ["a round shape"]],
        "shape_ensemble": [
            [t for s in ANGULAR_SHAPES for t in by_shape[s]],
            [t for s in ROUND_SHAPES for t in by_shape[s]],
        ],
    }
    preds = {}
    for name, texts in methods.items():
        preds[name] = (feats @ class_embeddings(model, tokenizer, texts).T).argmax(1).numpy()
    shape_pred = (feats @ class_embeddings(model, tokenizer, shape_texts).T).argmax(1).numpy()
    is_round = np.array([SHAPES[i] in ROUND_SHAPES for i in shape_pred])
    preds["shape_argmax"] = is_round.astype(np.int64)
    group_names = ["angular/grass", "angular/water", "round/grass", "round/water"]
    out: dict[str, Any] = {"n": n, "seed": seed}
    for name, pred in preds.items():
        correct = pred == ds.labels
        groups = {
            g: float(correct[ds.groups == i].mean())
            for i, g in enumerate(group_names)
            if (ds.groups == i).any()
        }
        out[name] = {
            "accuracy": float(correct.mean()),
            "worst_group": float(min(groups.values())),
            "groups": groups,
        }
    return out


@torch.no_grad()
def evaluate_shapes_clip(
    model: torch.nn.Module,
    tokenizer: Tokenizer,
    n: int = 2000,
    seed: int = TEST_SEED,
    spurious_n: int = 2000,
    spurious_seed: int = 0,
) -> dict[str, Any]:
    """Full zero-shot report on ``generate(n, seed=seed, n_objects=1)`` plus the spurious split.

    Returns:
        A JSON-serialisable dict: per attribute and prompt kind (``single``, ``compound``,
        ``grammar``) the accuracy, per-class accuracy and most confused pairs; the best kind per
        attribute; and :func:`spurious_worst_group`.

    Example:
        >>> from vision_lens.shapes.pretrained import load_shapes_open_clip, shapes_tokenizer
        >>> model, _ = load_shapes_open_clip()  # doctest: +SKIP
        >>> report = evaluate_shapes_clip(model, shapes_tokenizer())  # doctest: +SKIP
        >>> report["attributes"]["shape"]["best_kind"]  # doctest: +SKIP
        'single'
    """
    model.eval()
    ds = generate(n, seed=seed, n_objects=1)
    feats = encode_images(model, ds.images)
    report: dict[str, Any] = {"n": n, "seed": seed, "attributes": {}}
    for attr in ATTRIBUTES:
        kinds = {}
        for kind in ("single", "compound", "grammar"):
            res = attribute_accuracy(
                model,
                tokenizer,
                ds,
                attr,
                class_texts=ensemble_texts(attr, kind),
                image_features=feats,
            )
            res.pop("predictions")
            res.pop("confusion")
            kinds[kind] = res
        best = max(kinds, key=lambda k: kinds[k]["accuracy"])
        report["attributes"][attr] = {"best_kind": best, **kinds}
    report["spurious"] = spurious_worst_group(model, tokenizer, spurious_n, spurious_seed)
    return report


def format_report(report: dict[str, Any]) -> str:
    """Markdown tables of an :func:`evaluate_shapes_clip` report.

    Example:
        >>> import json
        >>> from vision_lens.shapes.pretrained import shapes_eval_path
        >>> print(format_report(json.loads(shapes_eval_path().read_text())))  # doctest: +ELLIPSIS
        Zero-shot accuracy on 2000 held-out single-object scenes (seed 10000).
        ...
    """
    if not isinstance(report, dict):
        raise TypeError(
            f"report must be the dict of evaluate_shapes_clip, got {type(report).__name__}."
        )
    missing = [k for k in ("n", "seed", "attributes", "spurious") if k not in report]
    if missing:
        raise ValueError(
            f"report lacks {missing}: pass the dict returned by evaluate_shapes_clip (or the "
            "shipped shapes_clip_eval.json)."
        )
    lines = [
        f"Zero-shot accuracy on {report['n']} held-out single-object scenes "
        f"(seed {report['seed']}).",
        "",
        "| attribute | single prompt | compound ensemble | grammar ensemble | most confused "
        "(single prompt) |",
        "|---|---|---|---|---|",
    ]
    for attr, res in report["attributes"].items():
        conf = ", ".join(f"{t}->{p} ({c})" for t, p, c in res["single"]["most_confused"]) or "-"
        accs = [f"{100 * res[k]['accuracy']:.1f}%" for k in ("single", "compound", "grammar")]
        lines.append(f"| {attr} | " + " | ".join(accs) + f" | {conf} |")
    sp = report["spurious"]
    lines += [
        "",
        f"Round vs angular on `spurious_split({sp['n']}, 'test', seed={sp['seed']})`:",
        "",
        "| method | accuracy | worst group | groups |",
        "|---|---|---|---|",
    ]
    for name in ("prompt", "shape_ensemble", "shape_argmax"):
        r = sp[name]
        groups = ", ".join(f"{g} {100 * a:.1f}%" for g, a in r["groups"].items())
        lines.append(
            f"| {name} | {100 * r['accuracy']:.1f}% | {100 * r['worst_group']:.1f}% | {groups} |"
        )
    return "\n".join(lines)
