"""Where the shipped shapes-world CLIP computes colour, shape and position (issue 19, part 6).

Three measurements on held-out single-object scenes (one object, so each attribute has one
true class per image):

1. **Embedding lens** (:func:`vision_lens.analysis.embedding_lens`): every layer's residual
   stream through the model's own readout, classified zero-shot with the text tower's class
   prompts (``vision_lens.shapes.prompts``). Reports the accuracy per stage and attribute and
   the first stage at which each attribute is decodable (accuracy >= ``--threshold``).
2. **Neurons** (:func:`vision_lens.analysis.neuron_second_order_effects`): for each attribute,
   the MLP neuron (layers 0 .. n_layers - 2) whose second-order effect pushes the image
   embedding furthest toward the *true* class of that attribute, measured as the mean projection
   of the effect on the true class's text embedding, centred over the attribute's classes. Its
   mean second-order effect is described by :func:`sparse_text_decomposition` over the
   ``shapes`` text pool, and the attribute its top texts name is counted (each text votes 1,
   split over the attributes it names, as in ``scripts/shapes_head_roles.py``). Then the top
   ``k`` neurons by that score are mean-ablated (their ``blocks.L.mlp.hook_post`` activation set
   to its mean over the evaluation images, per position) on other held-out scenes, and the drop
   of zero-shot accuracy and of the mean logit margin (cosine to the true class minus the best
   other class) on every attribute is compared with mean-ablating as many random neurons drawn
   from the same layers (mean over ``--n-random`` draws).
3. **Activation patching** (:func:`vision_lens.analysis.patch_activations`): clean/corrupted
   pairs that differ only in the object's colour (same shape, size, texture, position,
   background and background texture: both images are drawn by ``render_scene`` from the same
   random state), metric = the cosine of the output with the clean colour's text embedding minus
   the corrupted colour's, mean over pairs. The residual stream (``resid_pre`` and
   ``resid_post`` of every layer) is patched at the class token, at the patch tokens that the
   object covers, and at all patch tokens; the first layer whose class-token patch recovers at
   least half of the clean-corrupted gap localises where colour enters the class token.

Writes ``docs/results/circuits.json`` and ``.md``. Runs in about two minutes on two CPU cores.

Usage::

    python scripts/shapes_circuits.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import vision_lens as vl
from vision_lens import shapes
from vision_lens.analysis.circuits import patch_activations
from vision_lens.analysis.lens import embedding_lens, lens_stage_names
from vision_lens.analysis.neurons import neuron_second_order_effects, sparse_text_decomposition
from vision_lens.shapes.encoding import images_to_tensor
from vision_lens.shapes.rendering import render_scene
from vision_lens.text_pools import text_pool

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results" / "circuits"

LENS_ATTRIBUTES = ("color", "shape", "position", "size", "texture")
NEURON_ATTRIBUTES = ("color", "shape", "position")
TEXT_ATTRIBUTES = ("color", "shape", "position", "size", "texture", "background")
BACKGROUND_WORDS = (
    "background", "water", "grass", "sand", "sky", "lake", "sea", "waves", "field", "beach",
    "clouds", "plain", "grassy",
)  # fmt: skip


def _word_pattern(words) -> re.Pattern:
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"\b(?:{alternatives})s?\b", re.IGNORECASE)


PATTERNS = {
    "color": _word_pattern(shapes.COLORS),
    "shape": _word_pattern(shapes.SHAPES),
    "position": _word_pattern(["top", "bottom", "left", "right", "center"]),
    "size": _word_pattern(shapes.SIZES),
    "texture": _word_pattern(shapes.TEXTURES),
    "background": _word_pattern(BACKGROUND_WORDS),
}


def text_votes(texts: list[str]) -> dict[str, float]:
    """Each text votes 1, split evenly over the shapes-world attributes it names."""
    votes = dict.fromkeys(TEXT_ATTRIBUTES, 0.0)
    for text in texts:
        named = [a for a, pattern in PATTERNS.items() if pattern.search(text)]
        for attribute in named:
            votes[attribute] += 1 / len(named)
    return votes


def neuron_label(layer: int, neuron: int) -> str:
    return f"L{layer}N{neuron}"


def _class_directions(clip, attribute: str) -> torch.Tensor:
    return F.normalize(clip.encode(shapes.prompts(attribute)).float(), dim=-1)


# ----------------------------------------------------------------------------------- 1. lens
def lens_section(model, clip, n: int, seed: int, threshold: float) -> dict[str, Any]:
    scenes = shapes.generate(n, seed=seed, n_objects=1)
    images = images_to_tensor(scenes.images)
    directions = {a: _class_directions(clip, a) for a in LENS_ATTRIBUTES}
    scores = embedding_lens(model, images, torch.cat(list(directions.values())))
    accuracy: dict[str, list[float]] = {}
    start = 0
    for attribute, w in directions.items():
        block = scores[..., start : start + len(w)]
        start += len(w)
        labels = torch.as_tensor(shapes.labels(scenes, attribute))
        accuracy[attribute] = (block.argmax(-1) == labels[None]).float().mean(1).tolist()
    stages = lens_stage_names(model)
    first = {
        a: next((stages[i] for i, v in enumerate(acc) if v >= threshold), None)
        for a, acc in accuracy.items()
    }
    index = {a: (stages.index(s) if s is not None else len(stages)) for a, s in first.items()}
    earliest = min(index[a] for a in NEURON_ATTRIBUTES)
    return {
        "n_images": n,
        "seed": seed,
        "threshold": threshold,
        "stages": stages,
        "chance": {a: 1 / len(shapes.VOCABULARY[a]) for a in LENS_ATTRIBUTES},
        "accuracy": accuracy,
        "first_decodable": first,
        "first_decodable_index": index,
        "first_among_color_shape_position": [a for a in NEURON_ATTRIBUTES if index[a] == earliest],
    }


# -------------------------------------------------------------------------------- 2. neurons
def _post_means(model, images: torch.Tensor) -> dict[int, torch.Tensor]:
    """Every MLP layer's mean ``hook_post`` activation over ``images``, per position."""
    with torch.no_grad():
        _, cache = model.run_with_cache(
            images, names_filter=lambda name: name.endswith("mlp.hook_post")
        )
    return {
        layer: cache[f"blocks.{layer}.mlp.hook_post"].mean(0) for layer in range(model.cfg.n_layers)
    }


def _ablation_hooks(neurons: list[tuple[int, int]], means: dict[int, torch.Tensor] | None):
    """Forward hooks that set the chosen neurons' activations to their mean (per position) over
    the evaluation images, or to 0 when ``means`` is ``None``."""
    by_layer: dict[int, list[int]] = {}
    for layer, n in neurons:
        by_layer.setdefault(layer, []).append(n)
    hooks = []
    for layer, ids in by_layer.items():

        def hook(act, hook, layer=layer, ids=ids):
            act = act.clone()
            act[:, :, ids] = 0.0 if means is None else means[layer][:, ids]
            return act

        hooks.append((f"blocks.{layer}.mlp.hook_post", hook))
    return hooks


def _readout_scores(model, images, hooks, tasks) -> dict[str, dict[str, float]]:
    with torch.no_grad():
        out = F.normalize(model.run_with_hooks(images, fwd_hooks=hooks).float(), dim=-1)
    result = {}
    for attribute, (w, y) in tasks.items():
        s = out @ w.T
        true = s.gather(1, y[:, None])[:, 0]
        other = s.scatter(1, y[:, None], float("-inf")).max(1).values
        result[attribute] = {
            "accuracy": (s.argmax(-1) == y).float().mean().item(),
            "margin": (true - other).mean().item(),
        }
    return result


def neuron_section(
    model,
    clip,
    n_select: int,
    n_eval: int,
    seed: int,
    ks: list[int],
    n_random: int,
    n_terms: int,
    l1: float,
    ablation: str,
) -> dict[str, Any]:
    cfg = model.cfg
    selection = shapes.generate(n_select, seed=seed, n_objects=1)
    x = images_to_tensor(selection.images)
    with torch.no_grad():
        _, cache = model.run_with_cache(x)
    layers = list(range(cfg.n_layers - 1))  # the last layer has no second-order effect
    effects = torch.stack([neuron_second_order_effects(cache, layer) for layer in layers])
    del cache
    directions = {a: _class_directions(clip, a) for a in NEURON_ATTRIBUTES}
    margin_score, abs_score = {}, {}
    for attribute, w in directions.items():
        centred = w - w.mean(0)
        s = effects @ centred.T  # [layer, image, neuron, class]
        y = torch.as_tensor(shapes.labels(selection, attribute))
        index = y[None, :, None, None].expand(len(layers), -1, cfg.d_mlp, 1)
        margin_score[attribute] = s.gather(-1, index)[..., 0].mean(1)  # [layer, neuron]
        abs_score[attribute] = s.abs().mean((1, 3))

    pool = text_pool("shapes")
    pool_embeddings = clip.encode(pool).float()
    evaluation = shapes.generate(n_eval, seed=seed + 1, n_objects=1)
    xe = images_to_tensor(evaluation.images)
    tasks = {a: (w, torch.as_tensor(shapes.labels(evaluation, a))) for a, w in directions.items()}
    base = _readout_scores(model, xe, [], tasks)
    means = _post_means(model, xe) if ablation == "mean" else None
    generator = torch.Generator().manual_seed(seed)
    found: dict[str, Any] = {}
    for attribute in NEURON_ATTRIBUTES:
        order = margin_score[attribute].flatten().argsort(descending=True).tolist()
        ranked = [divmod(i, cfg.d_mlp) for i in order]
        layer_index, neuron = ranked[0]
        layer = layers[layer_index]
        effect = effects[layer_index, :, neuron]
        decomposition = sparse_text_decomposition(
            effect.mean(0), pool_embeddings, pool, n_terms=n_terms, l1=l1
        )
        votes = text_votes(decomposition.texts)
        best_abs = divmod(int(abs_score[attribute].flatten().argmax()), cfg.d_mlp)
        named = max(votes, key=votes.get)
        ablations = {}
        for k in ks:
            chosen = [(layers[li], n) for li, n in ranked[:k]]
            after = _readout_scores(model, xe, _ablation_hooks(chosen, means), tasks)
            random_after = []
            for _ in range(n_random):
                draw = [
                    (lay, int(torch.randint(cfg.d_mlp, (1,), generator=generator)))
                    for lay, _ in chosen
                ]
                while len(set(draw)) < len(draw):  # no neuron twice
                    draw = [
                        (lay, int(torch.randint(cfg.d_mlp, (1,), generator=generator)))
                        for lay, _ in chosen
                    ]
                hooks = _ablation_hooks(draw, means)
                random_after.append(_readout_scores(model, xe, hooks, tasks))
            entry: dict[str, Any] = {"neurons": [neuron_label(*c) for c in chosen]}
            for metric in ("accuracy", "margin"):
                drop = {a: base[a][metric] - after[a][metric] for a in NEURON_ATTRIBUTES}
                rand = {
                    a: float(np.mean([base[a][metric] - r[a][metric] for r in random_after]))
                    for a in NEURON_ATTRIBUTES
                }
                others = [a for a in NEURON_ATTRIBUTES if a != attribute]
                entry[metric] = {
                    "after": {a: after[a][metric] for a in NEURON_ATTRIBUTES},
                    "drop": drop,
                    "random_mean_drop": rand,
                    "own_drop_exceeds_random": drop[attribute] > rand[attribute],
                    "own_drop_largest": all(drop[attribute] > drop[o] for o in others),
                }
            ablations[str(k)] = entry
        found[attribute] = {
            "neuron": neuron_label(layer, neuron),
            "layer": layer,
            "index": neuron,
            "margin_score": {a: float(margin_score[a][layer_index, neuron]) for a in directions},
            "abs_projection": {a: float(abs_score[a][layer_index, neuron]) for a in directions},
            "top_abs_projection_neuron": neuron_label(layers[best_abs[0]], best_abs[1]),
            "top_texts": decomposition.texts,
            "text_weights": [round(float(w), 4) for w in decomposition.weights],
            "decomposition_cosine": decomposition.cosine,
            "text_votes": votes,
            "texts_name": named,
            "texts_name_attribute": named == attribute,
            "ablation": ablations,
        }
    largest = str(max(ks))
    chosen_sets = {a: set(v["ablation"][largest]["neurons"]) for a, v in found.items()}
    overlap = {
        f"{a}&{b}": len(chosen_sets[a] & chosen_sets[b])
        for i, a in enumerate(NEURON_ATTRIBUTES)
        for b in NEURON_ATTRIBUTES[i + 1 :]
    }
    return {
        "n_select": n_select,
        "n_eval": n_eval,
        "overlap_of_top_k": {"k": int(largest), "shared": overlap},
        "seed": seed,
        "layers_searched": layers,
        "ablation_mode": ablation,
        "ks": ks,
        "n_random": n_random,
        "base": base,
        "attributes": found,
    }


# ------------------------------------------------------------------------------- 3. patching
def colour_pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list, list[int], list[int]]:
    """``n`` single-object scenes and their copies with another colour (everything else,
    including the background texture and the object's jitter, identical)."""
    scenes = shapes.generate(n, seed=seed, n_objects=1)
    rng = np.random.default_rng(seed)
    clean, corrupted, masks, clean_ids, corrupt_ids = [], [], [], [], []
    for i in range(n):
        obj = dict(scenes.attributes[i][0])
        other = dict(obj)
        c = shapes.COLORS.index(obj["color"])
        shift = int(rng.integers(1, len(shapes.COLORS)))
        other["color"] = shapes.COLORS[(c + shift) % len(shapes.COLORS)]
        background = scenes.backgrounds[i]
        image, mask, _ = render_scene(np.random.default_rng([seed, i]), [obj], background, 64)
        image2, mask2, _ = render_scene(np.random.default_rng([seed, i]), [other], background, 64)
        assert (mask == mask2).all() and (image != image2).any()
        clean.append(image)
        corrupted.append(image2)
        masks.append(mask[0])
        clean_ids.append(c)
        corrupt_ids.append(shapes.COLORS.index(other["color"]))
    return np.stack(clean), np.stack(corrupted), masks, clean_ids, corrupt_ids


def _patch_sets(model, clean, corrupted, metric, hook_names, position_masks) -> list[float]:
    """Patch, per hook, the positions marked in ``position_masks`` ``[batch, pos]`` (each image
    its own set) from the clean run into the corrupted run."""
    with torch.no_grad():
        _, cache = model.run_with_cache(clean, names_filter=lambda name: name in hook_names)
        values = []
        for name in hook_names:
            source = cache[name]

            def hook(act, hook, source=source):
                return torch.where(position_masks[:, :, None], source, act)

            values.append(metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, hook)])))
    return [float(v) for v in values]


def patching_section(model, clip, n_pairs: int, seed: int, threshold: float) -> dict[str, Any]:
    cfg = model.cfg
    clean_np, corrupt_np, masks, clean_ids, corrupt_ids = colour_pairs(n_pairs, seed)
    clean, corrupted = images_to_tensor(clean_np), images_to_tensor(corrupt_np)
    colours = _class_directions(clip, "color")
    difference = colours[clean_ids] - colours[corrupt_ids]  # [pair, d_embed]

    def metric(out: torch.Tensor) -> torch.Tensor:
        return (F.normalize(out.float(), dim=-1) * difference).sum(-1).mean()

    names = ["resid_pre", "resid_post"]
    cls = patch_activations(model, clean, corrupted, metric, hook_names=names, positions=[0])
    gap = cls.clean - cls.corrupted
    cls_recovered = cls.recovered()[:, 0].tolist()
    n_layers = cfg.n_layers
    hook_names = cls.hook_names
    rows, cols = cfg.grid_size
    ph, pw = cfg.patch_size
    n_prefix = model.readout.n_prefix
    object_mask = torch.zeros(n_pairs, cfg.n_pos, dtype=torch.bool)
    for i, mask in enumerate(masks):
        cells = mask.reshape(rows, ph, cols, pw).any(axis=(1, 3)).reshape(-1)
        object_mask[i, n_prefix:] = torch.as_tensor(cells)
    all_patches = torch.zeros(n_pairs, cfg.n_pos, dtype=torch.bool)
    all_patches[:, n_prefix:] = True
    sets = {"object_patches": object_mask, "all_patches": all_patches}
    recovered = {"class_token": cls_recovered}
    for key, mask in sets.items():
        values = _patch_sets(model, clean, corrupted, metric, hook_names, mask)
        recovered[key] = [(v - cls.corrupted) / gap for v in values]
    by_hook = {
        key: {
            "resid_pre": values[:n_layers],
            "resid_post": values[n_layers:],
        }
        for key, values in recovered.items()
    }
    # The residual stream entering layer l (resid_pre l), then the one leaving the last layer.
    stream = {key: v["resid_pre"] + [v["resid_post"][-1]] for key, v in by_hook.items()}
    stream_names = [f"resid_pre {i}" for i in range(n_layers)] + [f"resid_post {n_layers - 1}"]
    first_cls = next(
        (layer for layer, v in enumerate(by_hook["class_token"]["resid_post"]) if v >= threshold),
        None,
    )
    return {
        "n_pairs": n_pairs,
        "seed": seed,
        "threshold": threshold,
        "metric": "cos(out, clean colour text) - cos(out, corrupted colour text), mean of pairs",
        "clean_metric": cls.clean,
        "corrupted_metric": cls.corrupted,
        "mean_object_patches": float(object_mask.sum(1).float().mean()),
        "recovered": by_hook,
        "stream": {"names": stream_names, **stream},
        "first_layer_class_token_recovers": first_cls,
        "colour_enters_class_token_in": None if first_cls is None else f"L{first_cls}",
    }


# ------------------------------------------------------------------------------------- run
def run(
    model=None,
    clip=None,
    *,
    n_lens: int = 500,
    n_select: int = 300,
    n_eval: int = 200,
    n_pairs: int = 64,
    ks: tuple[int, ...] = (1, 50),
    n_random: int = 10,
    n_terms: int = 6,
    l1: float = 0.05,
    ablation: str = "mean",
    lens_threshold: float = 0.8,
    patch_threshold: float = 0.5,
    seed: int = 40_000,
) -> dict[str, Any]:
    """All three measurements on the shipped model (or ``model``, ``clip``); a JSON-able dict."""
    start = time.perf_counter()
    if model is None:
        model, clip = vl.load_shapes_clip()
    model.eval()
    torch.manual_seed(0)
    cfg = model.cfg
    out: dict[str, Any] = {
        "config": {
            "n_layers": cfg.n_layers,
            "n_heads": cfg.n_heads,
            "d_mlp": cfg.d_mlp,
            "n_patches": cfg.n_pos - model.readout.n_prefix,
        },
    }
    out["lens"] = lens_section(model, clip, n_lens, seed, lens_threshold)
    out["neurons"] = neuron_section(
        model, clip, n_select, n_eval, seed + 1, list(ks), n_random, n_terms, l1, ablation
    )
    out["patching"] = patching_section(model, clip, n_pairs, seed + 3, patch_threshold)
    out["seconds"] = time.perf_counter() - start
    return out


# ---------------------------------------------------------------------------------- report
def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def to_markdown(out: dict[str, Any]) -> str:
    lens, neurons, patching = out["lens"], out["neurons"], out["patching"]
    cfg = out["config"]
    stages = lens["stages"]
    lines = [
        "# Circuits in the shapes-world CLIP",
        "",
        f"Generated by `scripts/shapes_circuits.py` ({out['model']}; {cfg['n_layers']} layers x "
        f"{cfg['n_heads']} heads, {cfg['d_mlp']} MLP neurons per layer) in "
        f"{out['seconds']:.0f} s on {out['date']}. All scenes are held out (seeds from "
        f"{lens['seed']}; training uses seeds from 100,000 up) and have one object.",
        "",
        "## Conclusions",
        "",
        *conclusions(out),
        "",
        "## 1. Embedding lens",
        "",
        "Zero-shot accuracy of each stage's residual stream put through the model's readout "
        "(`vision_lens.analysis.embedding_lens`: final norm recomputed, class token, projection), "
        f"against the class prompts of `vision_lens.shapes.prompts`, on {lens['n_images']} "
        "scenes. *embed* is the embedding entering block 0, *Lk* the stream leaving block k; "
        "the last column is the model's own output.",
        "",
        "| attribute | chance | " + " | ".join(stages) + " | decodable from |",
        "| --- | --- | " + " | ".join("---" for _ in stages) + " | --- |",
    ]
    for attribute, acc in lens["accuracy"].items():
        first = lens["first_decodable"][attribute] or "never"
        lines.append(
            f"| {attribute} | {_pct(lens['chance'][attribute])} | "
            + " | ".join(_pct(a) for a in acc)
            + f" | {first} |"
        )
    first = lens["first_among_color_shape_position"]
    earliest = lens["first_decodable"][first[0]]
    lines += [
        "",
        f"*Decodable from*: the first stage with accuracy >= {_pct(lens['threshold'])}. Among "
        f"colour, shape and position, **{' and '.join(first)}** become decodable first "
        f"(at {earliest}); shape only at {lens['first_decodable']['shape'] or 'no stage'}.",
        "",
        "## 2. Neurons",
        "",
        "For each attribute, the neuron (layers "
        f"{neurons['layers_searched'][0]}-{neurons['layers_searched'][-1]}) whose second-order "
        "effect (`neuron_second_order_effects`, Gandelsman et al. 2025) has the largest mean "
        "projection on the *true* class's text embedding, the attribute's class embeddings "
        f"centred ({neurons['n_select']} selection scenes). *Scores* are that mean projection "
        "for each attribute. Its texts: `sparse_text_decomposition` of its mean second-order "
        "effect over the `shapes` pool; *named* is the attribute its texts name most (each "
        "text votes 1, split over the attributes it names).",
        "",
        "| attribute | neuron | scores (colour / shape / position) | named | top texts |",
        "| --- | --- | --- | --- | --- |",
    ]
    for attribute, info in neurons["attributes"].items():
        scores = " / ".join(f"{v:.4f}" for v in info["margin_score"].values())
        lines.append(
            f"| {attribute} | {info['neuron']} | {scores} | {info['texts_name']} "
            f"({info['text_votes'][info['texts_name']]:.1f} votes) | "
            f"{'; '.join(info['top_texts'])} |"
        )
    base = neurons["base"]
    lines += [
        "",
        "**Ablation.** The top *k* neurons of each attribute's ranking are "
        f"{neurons['ablation_mode']}-ablated at `blocks.L.mlp.hook_post` (every position) on "
        f"{neurons['n_eval']} other scenes; random: as many neurons drawn from the same "
        f"layers, mean of {neurons['n_random']} draws. Cells: drop of zero-shot accuracy "
        "in points, and of the mean logit margin (cosine to the true class minus the best "
        "other class) in 1/100 cosine. Base accuracy "
        + ", ".join(f"{a} {_pct(v['accuracy'])}" for a, v in base.items())
        + "; base margin "
        + ", ".join(f"{a} {v['margin']:.3f}" for a, v in base.items())
        + ".",
        "",
        "| neurons of | k | accuracy drop: colour / shape / position | random | "
        "margin drop: colour / shape / position | random |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for attribute, info in neurons["attributes"].items():
        for k, entry in info["ablation"].items():
            cells = []
            for metric in ("accuracy", "margin"):
                e = entry[metric]
                cells.append(" / ".join(_pts(v) for v in e["drop"].values()))
                cells.append(" / ".join(_pts(v) for v in e["random_mean_drop"].values()))
            lines.append(f"| {attribute} | {k} | " + " | ".join(cells) + " |")
    shared = neurons["overlap_of_top_k"]
    lines += [
        "",
        _neuron_summary(neurons),
        "",
        f"Neurons shared by the top-{shared['k']} sets: "
        + ", ".join(f"{k.replace('&', ' & ')} {v}" for k, v in shared["shared"].items())
        + ".",
        "",
    ]
    rec = patching["recovered"]
    n_layers = cfg["n_layers"]
    lines += [
        "## 3. Activation patching: where colour enters the class token",
        "",
        f"{patching['n_pairs']} clean/corrupted pairs that differ only in the object's colour "
        "(drawn by `render_scene` from the same random state: same shape, size, texture, "
        "position, jitter and background). Metric: cosine of the output with the clean colour's "
        "prompt minus with the corrupted colour's, mean over pairs: clean "
        f"{patching['clean_metric']:.4f}, corrupted {patching['corrupted_metric']:.4f}. Cells: "
        "the fraction of that gap recovered by patching the clean residual stream into the "
        "corrupted run at the class token, at the patch tokens the object covers (mean "
        f"{patching['mean_object_patches']:.1f} of {out['config']['n_patches']}), or at all "
        "patch tokens.",
        "",
        "| patched | " + " | ".join(f"L{i}" for i in range(n_layers)) + " |",
        "| --- | " + " | ".join("---" for _ in range(n_layers)) + " |",
    ]
    for key, label in (
        ("class_token", "class token"),
        ("object_patches", "object's patches"),
        ("all_patches", "all patches"),
    ):
        for hook in ("resid_pre", "resid_post"):
            lines.append(
                f"| {label}, {hook} | " + " | ".join(_pct(v) for v in rec[key][hook]) + " |"
            )
    where = patching["colour_enters_class_token_in"]
    lines += [
        "",
        (
            f"Patching the class token first recovers >= {_pct(patching['threshold'])} at "
            f"`blocks.{where[1:]}.hook_resid_post`: colour information is written into the class "
            f"token by block {where[1:]}."
            if where is not None
            else "Patching the class token never recovers half of the gap."
        ),
        "",
    ]
    return "\n".join(lines)


def conclusions(out: dict[str, Any]) -> list[str]:
    """What the numbers show, one bullet per measurement (written from the numbers)."""
    lens, neurons, patching = out["lens"], out["neurons"], out["patching"]
    first = lens["first_among_color_shape_position"]
    decodable = lens["first_decodable"]
    lines = [
        f"* **Lens.** {' and '.join(first)} become decodable first (accuracy >= "
        f"{_pct(lens['threshold'])} at {decodable[first[0]]}); "
        + ", ".join(
            f"{a} at {decodable[a] or 'no stage'}" for a in NEURON_ATTRIBUTES if a not in first
        )
        + "."
    ]
    k = str(max(neurons["ks"]))
    for attribute, info in neurons["attributes"].items():
        acc = info["ablation"][k]["accuracy"]
        if acc["own_drop_exceeds_random"] and acc["own_drop_largest"]:
            verdict = "hurts it more than random neurons do and more than the other attributes"
        else:
            failed = []
            if not acc["own_drop_exceeds_random"]:
                failed.append("no more than random neurons do")
            if not acc["own_drop_largest"]:
                failed.append("not more than another attribute")
            verdict = "hurts it " + " and ".join(failed)
        worst = max(acc["drop"], key=acc["drop"].get)
        named = info["texts_name"]
        if not info["texts_name_attribute"]:
            named += f" (not {attribute})"
        single = ""
        if "1" in info["ablation"] and k != "1":
            one = info["ablation"]["1"]["accuracy"]["drop"]
            single = f" Ablating {info['neuron']} alone: largest accuracy drop " + _pts(
                max(one.values())
            )
            single += " points."
        lines.append(
            f"* **{attribute.capitalize()} neurons.** {info['neuron']}'s texts name {named}. "
            f"Mean-ablating the top {k} {attribute} neurons {verdict} (own accuracy drop "
            f"{_pts(acc['drop'][attribute])} points, random "
            f"{_pts(acc['random_mean_drop'][attribute])}; largest drop: {worst}, "
            f"{_pts(acc['drop'][worst])}).{single}"
        )
    where = patching["colour_enters_class_token_in"]
    rec = patching["recovered"]
    lines.append(
        "* **Patching.** Colour reaches the class token in "
        + (f"block {where[1:]}" if where else "no block")
        + f" (class-token patch after block {where[1:] if where else '-'}: "
        + (_pct(rec["class_token"]["resid_post"][int(where[1:])]) if where else "-")
        + " recovered); before block 0 only the object's patches carry it ("
        + _pct(rec["object_patches"]["resid_pre"][0])
        + "), and by the last block the patches carry almost none of it ("
        + _pct(rec["all_patches"]["resid_pre"][-1])
        + " for all patches entering it)."
    )
    return lines


def _neuron_summary(neurons: dict[str, Any]) -> str:
    parts = []
    for attribute, info in neurons["attributes"].items():
        k = max(info["ablation"], key=int)
        acc, mar = info["ablation"][k]["accuracy"], info["ablation"][k]["margin"]
        parts.append(
            f"*{attribute}* (k={k}): own accuracy drop {_pts(acc['drop'][attribute])} vs random "
            f"{_pts(acc['random_mean_drop'][attribute])}, own margin drop "
            f"{_pts(mar['drop'][attribute])} vs random {_pts(mar['random_mean_drop'][attribute])}"
            f"; own-attribute drop the largest: accuracy {acc['own_drop_largest']}, margin "
            f"{mar['own_drop_largest']}"
        )
    return "Summary: " + "; ".join(parts) + "."


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-lens", type=int, default=500)
    parser.add_argument("--n-select", type=int, default=300)
    parser.add_argument("--n-eval", type=int, default=200)
    parser.add_argument("--n-pairs", type=int, default=64)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--n-random", type=int, default=10)
    parser.add_argument("--ablation", choices=("mean", "zero"), default="mean")
    parser.add_argument("--seed", type=int, default=40_000)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    out = {"model": "vision_lens.load_shapes_clip()"}
    out |= run(
        n_lens=args.n_lens,
        n_select=args.n_select,
        n_eval=args.n_eval,
        n_pairs=args.n_pairs,
        ks=tuple(args.ks),
        n_random=args.n_random,
        ablation=args.ablation,
        seed=args.seed,
    )
    out["date"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(to_markdown(out))
    print(f"wrote {args.out.with_suffix('.md')} ({out['seconds']:.0f} s)")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
