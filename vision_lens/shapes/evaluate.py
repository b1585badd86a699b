"""Zero-shot evaluation of a CLIP on the shapes world (used for the shipped model's report).

Works on any open_clip ``CLIP`` (``encode_image`` / ``encode_text``) with a tokenizer; images go
through :func:`vision_lens.shapes.train.images_to_tensor` (what ``model.preprocess`` does).

Example:
    >>> from vision_lens.shapes.pretrained import load_shapes_open_clip, shapes_tokenizer
    >>> from vision_lens.shapes.evaluate import evaluate_shapes_clip, format_report
    >>> model, preprocess = load_shapes_open_clip()  # doctest: +SKIP
    >>> tokenizer = shapes_tokenizer()  # doctest: +SKIP
    >>> report = evaluate_shapes_clip(model, tokenizer, n=500)  # doctest: +SKIP
    >>> print(format_report(report))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vision_lens.shapes.generator import (
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    TEXTURES,
    VOCABULARY,
    ShapesDataset,
    caption_for,
    generate,
    labels,
    prompts,
    spurious_split,
)
from vision_lens.shapes.train import images_to_tensor

#: Attributes with zero-shot prompts, in report order (the first three are the quality gate).
ATTRIBUTES = ("color", "shape", "position", "size", "texture", "background")
#: Seed of the held-out test scenes of the shipped report (never used in training).
TEST_SEED = 10_000

_BASE = {"shape": "circle", "color": "red", "size": "medium", "position": "center"}
_BASE["texture"] = "solid"


@torch.no_grad()
def encode_images(
    model: torch.nn.Module, images: np.ndarray, batch_size: int = 500, *, normalize: bool = True
):
    """Image embeddings ``[n, d]`` of uint8 images ``[n, H, W, 3]``, unit-normalised unless
    ``normalize=False``."""
    out = [
        model.encode_image(images_to_tensor(images[i : i + batch_size]))
        for i in range(0, len(images), batch_size)
    ]
    feats = torch.cat(out).float()
    return F.normalize(feats, dim=-1) if normalize else feats


@torch.no_grad()
def encode_texts(model: torch.nn.Module, tokenizer: Callable, texts: Sequence[str]):
    """Normalised text embeddings ``[k, d]``."""
    return F.normalize(model.encode_text(tokenizer(list(texts))).float(), dim=-1)


@torch.no_grad()
def class_embeddings(
    model: torch.nn.Module, tokenizer: Callable, class_texts: Sequence[Sequence[str]]
) -> torch.Tensor:
    """One embedding per class: the renormalised mean of its texts' normalised embeddings."""
    flat = [t for texts in class_texts for t in texts]
    emb = encode_texts(model, tokenizer, flat)
    out, i = [], 0
    for texts in class_texts:
        out.append(emb[i : i + len(texts)].mean(0))
        i += len(texts)
    return F.normalize(torch.stack(out), dim=-1)


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
    if kind not in ("single", "compound", "grammar"):
        raise ValueError(f"kind must be 'single', 'compound' or 'grammar', got {kind!r}")
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
def zero_shot_accuracy(
    model: torch.nn.Module,
    tokenizer: Callable,
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
    """
    vocab = VOCABULARY[attribute]
    y = labels(dataset, attribute)
    if image_features is None:
        image_features = encode_images(model, dataset.images)
    if class_texts is None:
        class_texts = [[p] for p in prompts(attribute)]
    cls = class_embeddings(model, tokenizer, class_texts)
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


@torch.no_grad()
def spurious_worst_group(
    model: torch.nn.Module, tokenizer: Callable, n: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Zero-shot round-vs-angular accuracy per group on ``spurious_split(n, "test", seed)``.

    Methods: ``prompt`` ("an angular shape" / "a round shape", words the training captions never
    use), ``shape_ensemble`` (each class is the mean embedding of its shapes' ``grammar``
    ensembles) and ``shape_argmax`` (classify the 8 shapes, then map to round/angular).
    """
    from vision_lens.shapes.generator import ANGULAR_SHAPES, ROUND_SHAPES

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
    tokenizer: Callable,
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
    """
    model.eval()
    ds = generate(n, seed=seed, n_objects=1)
    feats = encode_images(model, ds.images)
    report: dict[str, Any] = {"n": n, "seed": seed, "attributes": {}}
    for attr in ATTRIBUTES:
        kinds = {}
        for kind in ("single", "compound", "grammar"):
            res = zero_shot_accuracy(
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
    """Markdown tables of an :func:`evaluate_shapes_clip` report."""
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
