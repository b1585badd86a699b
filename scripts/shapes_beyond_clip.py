"""Beyond CLIP on the shipped shapes-world ViT (issue 17, part 5): CompAlign, scoring, ablation,
retrieval and segmentation, proven on a model that is not a CLIP.

The shipped pair: ``vl.load_shapes_vit(head=False)`` (a timm ViT classifier: 6 layers x 4 heads,
4 register tokens, average pooling; its output is the pooled ``fc_norm`` feature) and its
CompAlign into the shipped shapes CLIP (``scripts/train_shapes_compalign.py``: one map per head
and per MLP, the rest summed). Every number is on held-out single-object scenes (one object,
so each attribute has one true class per image):

1. **Alignment**: mean cosine between the mapped sum and the CLIP's image embedding, and
   zero-shot colour / shape / position accuracy of the mapped sum against the CLIP's class
   prompts (``vision_lens.shapes.prompts``), next to the CLIP's own.
2. **Scoring** (:func:`vision_lens.component_scores`, the paper's Algorithm 2) of every aligned
   component for the three properties (their prompts' text embeddings), on ``--n-score``
   scenes; the top components per property.
3. **Ablation**: each property's top ``k`` components are mean-ablated (their terms replaced by
   their mean over the scoring scenes) on ``--n-eval`` other scenes, and the accuracy of every
   attribute is read two ways: by the ViT's *own* classifier head applied to the ablated feature
   (the model's behaviour, no CLIP involved) and zero-shot through the ablated aligned sum. The
   drops are compared with ablating ``k`` random components (``--n-random`` draws, from the
   heads and MLPs).
4. **Retrieval** (:func:`vision_lens.analysis.component_retrieval`): for each colour, the 10
   images of the evaluation set closest (cosine) to "a {colour} object" (minus the mean of the 8
   colour prompts, as segmentation subtracts its class texts' mean) through the sum of the top
   colour components by score (the paper's §6.1); precision@10 = share of them whose object has
   that colour, next to the same through the top colour component alone, the top shape
   components and the whole aligned sum.
5. **Segmentation**: token heatmaps through CompAlign
   (:func:`vision_lens.analysis.aligned_token_heatmaps`, every head, the class text "a red circle"
   of each image minus the mean of the 64 class texts, as ``vl.segment`` does) against raw
   attention (the last layer's attention, mean over heads and over the patch queries that the
   average pool reads: the class-token baseline has no class token here), scored with the
   eval-seg metrics (:class:`~vision_lens.analysis.SegmentationMetrics`) against the objects' exact
   masks.

Writes ``docs/results/beyond_clip.json`` and ``.md``. About a minute on two CPU cores.

Usage::

    python scripts/shapes_beyond_clip.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import vision_lens as vl
from vision_lens.analysis import SegmentationMetrics, alignment_report
from vision_lens.analysis.beyond_clip import aligned_token_heatmaps, component_retrieval
from vision_lens.apps.seg_data import shapes_class_texts
from vision_lens.shapes import COLORS, generate, labels, with_article
from vision_lens.shapes.encoding import images_to_tensor
from vision_lens.shapes.pretrained_vit import (
    load_shapes_timm_vit,
    shapes_vit_compalign_path,
    shapes_vit_config,
)
from vision_lens.shapes.vit_classifier import classifier_accuracy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_shapes_compalign import class_texts, clip_embeddings, vit_components  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
PROPERTIES = ("color", "shape", "position")
EVAL_SEED = 10_000
SCORE_SEED = 20_000


class Pair:
    """The shipped ViT, its head, its CompAlign and the shapes CLIP, with per-scene helpers."""

    def __init__(self) -> None:
        self.vit = vl.load_shapes_vit(head=False)
        timm_model = load_shapes_timm_vit(head=True)
        self.head = timm_model.head
        self.head_cfg = shapes_vit_config()
        self.aligner = vl.CompAlign.load(shapes_vit_compalign_path())
        self.clip, self.text = vl.load_shapes_clip()
        self.texts = {p: class_texts(self.text, p) for p in PROPERTIES}  # unit norm

    def scenes(self, n: int, seed: int) -> dict[str, Any]:
        scenes = generate(n, seed=seed, n_objects=1)
        x = images_to_tensor(scenes.images)
        comps = vit_components(self.vit, x)
        with torch.no_grad():
            features = self.vit(x)
        gap = float((comps.terms.sum(0) - features).abs().max())
        if gap > 1e-4:  # the decomposition must be exact before anything is read from it
            raise RuntimeError(f"components do not sum to the ViT's output (max gap {gap:.2e}).")
        return {
            "scenes": scenes,
            "x": x,
            "components": comps,
            "aligned": self.aligner.align(comps),
            "clip": clip_embeddings(self.clip, x),
            "y": {p: torch.as_tensor(labels(scenes, p)) for p in PROPERTIES},
            "gap": gap,
        }

    def own_accuracy(self, features: torch.Tensor, y: dict[str, torch.Tensor]) -> dict[str, float]:
        with torch.no_grad():
            logits = self.head(features)
        return classifier_accuracy(logits, y, self.head_cfg)

    def zero_shot_accuracy(self, emb: torch.Tensor, y: dict[str, torch.Tensor]) -> dict[str, float]:
        return {p: vl.zero_shot_accuracy(emb, self.texts[p], y[p]) for p in PROPERTIES}


def alignment(pair: Pair, ev: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"zero_shot": {}}
    for p in PROPERTIES:
        r = alignment_report(pair.aligner, ev["components"], ev["clip"], pair.texts[p], ev["y"][p])
        out["cosine"] = r.cosine
        out["zero_shot"][p] = {"aligned_sum": r.accuracy, "clip": r.clip_accuracy}
    out["decomposition_max_gap"] = ev["gap"]
    return out


def scoring(pair: Pair, sc: dict[str, Any], top: int) -> tuple[Any, dict[str, Any]]:
    scores = vl.component_scores(sc["aligned"], pair.texts)
    variance = vl.component_scores(sc["aligned"], pair.texts, method="variance")
    out: dict[str, Any] = {"top": {}, "top_specific": {}, "top_variance": {}}
    out["own_property_first"] = {}
    for p in PROPERTIES:
        ranked = [(str(c), float(s)) for c, s in scores.rank_components(p) if str(c) != "rest"]
        out["top"][p] = ranked[:top]
        gaps = scores.gaps(p)
        order = torch.argsort(gaps, descending=True, stable=True).tolist()
        out["top_specific"][p] = [
            (str(scores.ids[i]), float(gaps[i])) for i in order if str(scores.ids[i]) != "rest"
        ][:top]
        out["top_variance"][p] = [
            (str(c), float(s)) for c, s in variance.rank_components(p) if str(c) != "rest"
        ][:top]
        best = str(scores.rank_properties(out["top_specific"][p][0][0])[0][0])
        out["own_property_first"][p] = best == p
    out["table"] = {
        p: {str(c): float(v) for c, v in zip(scores.ids, scores.table[i], strict=True)}
        for i, p in enumerate(scores.properties)
    }
    return scores, out


def ablation(
    pair: Pair,
    sc: dict[str, Any],
    ev: dict[str, Any],
    out_scoring: dict[str, Any],
    k: int,
    n_random: int,
    seed: int,
) -> dict[str, Any]:
    src, src_ref = ev["components"], sc["components"]
    ids = [str(c) for c in src.labels]
    candidates = [i for i, c in enumerate(ids) if c != "rest"]
    src_means = src_ref.terms.mean(1)  # [component, d]: the scoring scenes' means
    aln = ev["aligned"].terms.transpose(0, 1)
    aln_means = sc["aligned"].terms.mean(0)

    def effects(index: list[int]) -> dict[str, dict[str, float]]:
        own = pair.own_accuracy(vl.mean_ablate(src.terms, index, means=src_means), ev["y"])
        zs = pair.zero_shot_accuracy(vl.mean_ablate(aln, index, means=aln_means), ev["y"])
        return {"own_head": own, "zero_shot": zs}

    base = effects([])
    gen = torch.Generator().manual_seed(seed)
    random_draws = [
        [candidates[j] for j in torch.randperm(len(candidates), generator=gen)[:k].tolist()]
        for _ in range(n_random)
    ]
    random_effects = [effects(d) for d in random_draws]
    out: dict[str, Any] = {"k": k, "n_random": n_random, "base": base, "properties": {}}
    for p in PROPERTIES:
        chosen = [ids.index(c) for c, _ in out_scoring["top_specific"][p][:k]]
        eff = effects(chosen)
        rec: dict[str, Any] = {"ablated": [ids[i] for i in chosen]}
        for mode in ("own_head", "zero_shot"):
            drop = {q: base[mode][q] - eff[mode][q] for q in PROPERTIES}
            rnd = {
                q: float(np.mean([base[mode][q] - r[mode][q] for r in random_effects]))
                for q in PROPERTIES
            }
            rec[mode] = {
                "accuracy": eff[mode],
                "drop": drop,
                "random_mean_drop": rnd,
                "own_drop_largest": max(drop, key=drop.get) == p,
                "own_drop_exceeds_random": drop[p] > rnd[p],
            }
        out["properties"][p] = rec
    return out


def retrieval(pair: Pair, ev: dict[str, Any], out_scoring: dict[str, Any], k: int = 10):
    colors = labels(ev["scenes"], "color")
    prompts = pair.text.encode([with_article(f"{c} object") for c in COLORS])
    queries = prompts - prompts.mean(0)  # what sets each colour prompt apart from the others
    top = {p: [c for c, _ in out_scoring["top"][p]] for p in PROPERTIES}
    routes = {
        "top_color_component": top["color"][:1],
        "top3_color_components": top["color"][:3],
        "top3_shape_components": top["shape"][:3],
        "all_components": [str(c) for c in ev["aligned"].ids],
    }
    out: dict[str, Any] = {"k": k, "precision": {}, "per_color": {}}
    for route, comps in routes.items():
        found = component_retrieval(ev["aligned"], comps, query_text_embedding=queries, k=k)
        hits = [float(np.mean(colors[row.numpy()] == ci)) for ci, row in enumerate(found.indices)]
        out["precision"][route] = float(np.mean(hits))
        out["per_color"][route] = dict(zip(COLORS, hits, strict=True))
    out["components"] = {r: c if len(c) < 4 else "all" for r, c in routes.items()}
    return out


def segmentation(pair: Pair, n: int, seed: int, batch_size: int = 100) -> dict[str, Any]:
    scenes = generate(n, seed=seed, n_objects=1)
    texts = shapes_class_texts()
    text_emb = pair.text.encode(texts)
    index = {t: i for i, t in enumerate(texts)}
    y = [index[with_article(f"{o[0]['color']} {o[0]['shape']}")] for o in scenes.attributes]
    heads = [str(c) for c in pair.aligner.ids if c.kind == "head"]
    metrics = {"compalign": SegmentationMetrics(), "raw_attention": SegmentationMetrics()}
    last = f"blocks.{pair.vit.cfg.n_layers - 1}.attn.hook_pattern"
    patches = pair.vit.readout.patch_positions
    rows, cols = pair.vit.cfg.grid_size
    for start in range(0, n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        x = images_to_tensor(scenes.images[idx])
        masks = torch.from_numpy(scenes.foreground[idx].astype(bool))
        _, cache = pair.vit.run_with_decomposition_cache(x)
        per_text = aligned_token_heatmaps(
            cache,
            pair.aligner,
            text_emb[[y[i] for i in idx]],
            heads,
            reference_embeddings=text_emb,
            upsample=True,
        )  # [batch, n_text=batch, H, W]: image b's own text is on the diagonal
        heat = per_text[torch.arange(len(idx)), torch.arange(len(idx))]
        metrics["compalign"].update(heat, masks)
        pattern = cache[last]  # [batch, head, query, key]
        raw = pattern.mean(1)[:, patches][:, :, patches].mean(1)  # patch queries -> patch keys
        grid = raw.unflatten(-1, (rows, cols)).unsqueeze(1).float()
        up = F.interpolate(grid, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        metrics["raw_attention"].update(up[:, 0], masks)
    out = {name: m.compute() for name, m in metrics.items()}
    return {"n": n, "seed": seed, "components": "all heads", **out}


def run(
    n_eval: int = 1000,
    n_score: int = 1000,
    n_seg: int = 300,
    k: int = 3,
    n_random: int = 20,
    top: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Every measurement; returns the JSON-able record."""
    t0 = time.time()
    pair = Pair()
    ev = pair.scenes(n_eval, EVAL_SEED)
    sc = pair.scenes(n_score, SCORE_SEED)
    _, score_out = scoring(pair, sc, top)
    out = {
        "config": {
            "n_eval": n_eval,
            "n_score": n_score,
            "n_seg": n_seg,
            "k": k,
            "n_random": n_random,
            "eval_seed": EVAL_SEED,
            "score_seed": SCORE_SEED,
        },
        "alignment": alignment(pair, ev),
        "scoring": score_out,
        "ablation": ablation(pair, sc, ev, score_out, k, n_random, seed),
        "retrieval": retrieval(pair, ev, score_out),
        "segmentation": segmentation(pair, n_seg, EVAL_SEED + 7),
        "components": [str(c) for c in pair.aligner.ids],
    }
    out["seconds"] = round(time.time() - t0, 1)
    return out


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def markdown(out: dict[str, Any]) -> str:
    """The report page (``docs/results/beyond_clip.md``)."""
    a, s, ab, r, seg = (
        out["alignment"],
        out["scoring"],
        out["ablation"],
        out["retrieval"],
        out["segmentation"],
    )
    c = out["config"]
    lines = [
        "# Beyond CLIP: the shapes ViT read through CompAlign",
        "",
        "Generated by `python scripts/shapes_beyond_clip.py` "
        f"({out['date']}, {out['seconds']} s); raw numbers in `beyond_clip.json`. The model is "
        "`vl.load_shapes_vit(head=False)`, a timm ViT classifier (6 layers x 4 heads, 4 register "
        "tokens, average pooling) that is not a CLIP, and its shipped CompAlign into the shapes "
        "CLIP (`scripts/train_shapes_compalign.py`: one map per head and MLP, "
        f"{len(out['components'])} maps). Held-out single-object scenes: {c['n_eval']} for "
        f"evaluation (seed {c['eval_seed']}), {c['n_score']} for scoring (seed {c['score_seed']}).",
        "",
        "## 1. Alignment",
        "",
        f"The ViT's components sum to its output to {a['decomposition_max_gap']:.1e}. Mean "
        f"cosine between the mapped sum and the CLIP image embedding: **{a['cosine']:.3f}**.",
        "",
        "| zero-shot accuracy | through the mapped sum | the CLIP itself |",
        "|---|---|---|",
    ]
    for p in PROPERTIES:
        z = a["zero_shot"][p]
        lines.append(f"| {p} | {_pct(z['aligned_sum'])} | {_pct(z['clip'])} |")
    lines += [
        "",
        "## 2. Component scores",
        "",
        "The paper's score (correlation of the projections on each property's orthonormalised "
        "prompt embeddings) of every aligned component; top components per property (the "
        "variance-explained variant in brackets):",
        "",
        "| property | top components (score) | variance variant | most specific (margin over "
        "the next property) | best property of the most specific |",
        "|---|---|---|---|---|",
    ]
    for p in PROPERTIES:
        top = ", ".join(f"{cid} ({v:.2f})" for cid, v in s["top"][p])
        var = ", ".join(f"{cid} ({v:.3f})" for cid, v in s["top_variance"][p])
        spec = ", ".join(f"{cid} ({v:+.2f})" for cid, v in s["top_specific"][p])
        own = p if s["own_property_first"][p] else "another"
        lines.append(f"| {p} | {top} | {var} | {spec} | {own} |")
    lines += [
        "",
        f"## 3. Mean-ablating each property's {ab['k']} most specific components",
        "",
        "Components chosen by their margin over the other properties (the paper's §6.2 "
        "selection of property-specific components), replaced by their mean over the scoring "
        "scenes. Accuracy drop (points) of every attribute, read by the ViT's own classifier "
        "head and "
        f"zero-shot through the aligned sum; random = mean over {ab['n_random']} draws of "
        f"{ab['k']} random heads/MLPs. Base accuracy (own head): "
        + ", ".join(f"{p} {_pct(ab['base']['own_head'][p])}" for p in PROPERTIES)
        + "; zero-shot: "
        + ", ".join(f"{p} {_pct(ab['base']['zero_shot'][p])}" for p in PROPERTIES)
        + ".",
        "",
        "| ablated (property: components) | read by | colour drop | shape drop | position drop "
        "| random: own-property drop |",
        "|---|---|---|---|---|---|",
    ]
    for p in PROPERTIES:
        rec = ab["properties"][p]
        for mode in ("own_head", "zero_shot"):
            d = rec[mode]["drop"]
            cells = " | ".join(
                (f"**{100 * d[q]:.1f}**" if q == p else f"{100 * d[q]:.1f}") for q in PROPERTIES
            )
            lines.append(
                f"| {p}: {', '.join(rec['ablated'])} | {mode.replace('_', ' ')} | {cells} | "
                f"{100 * rec[mode]['random_mean_drop'][p]:.1f} |"
            )
    lines += [
        "",
        f"## 4. Retrieval (precision@{r['k']})",
        "",
        'For each of the 8 colours, the 10 evaluation images closest to "a {colour} object" '
        "(minus the mean colour prompt) through the sum of some components; precision = share "
        "with an object of that colour, mean over colours (chance 12.5%).",
        "",
        "| route | precision@10 |",
        "|---|---|",
    ]
    for route, v in r["precision"].items():
        comp = r["components"][route]
        comp = comp if isinstance(comp, str) else ", ".join(comp)
        lines.append(f"| {route.replace('_', ' ')} ({comp}) | {_pct(v)} |")
    lines += [
        "",
        "## 5. Segmentation",
        "",
        f"{seg['n']} single-object scenes (seed {seg['seed']}), the eval-seg protocol metrics "
        "against the exact object masks:",
        "",
        "| method | pixel accuracy | mIoU | mAP |",
        "|---|---|---|---|",
    ]
    for m in ("compalign", "raw_attention"):
        v = seg[m]
        lines.append(
            f"| {m.replace('_', ' ')} | {_pct(v['pixel_accuracy'])} | {_pct(v['miou'])} "
            f"| {_pct(v['map'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n-eval", type=int, default=1000)
    p.add_argument("--n-score", type=int, default=1000)
    p.add_argument("--n-seg", type=int, default=300)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--n-random", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(RESULTS), help="folder for beyond_clip.json / .md")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = run(args.n_eval, args.n_score, args.n_seg, args.k, args.n_random)
    out["date"] = dt.date.today().isoformat()
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "beyond_clip.json").write_text(json.dumps(out, indent=1) + "\n")
    (folder / "beyond_clip.md").write_text(markdown(out))
    print(markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
