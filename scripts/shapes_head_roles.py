"""Head roles of the shipped shapes-world CLIP, found by TextSpan and checked by ablation.

What it does (the paper's §4 on a model whose ground truth is known):

1. TextSpan with the ``shapes`` text pool on every attention head, over varied scenes.
2. Each head's *role*: the attribute (colour, shape, position, size, texture, background,
   count) that its top ``--role-top`` texts are about (each text votes 1, split evenly over the
   attributes it names; the winner needs ``--min-role`` votes and a strict lead, else "mixed").
3. Ablation check on held-out single-object scenes: mean-ablating the heads of one role should
   hurt zero-shot accuracy on that attribute more than on the others, and more than ablating
   as many random heads (mean drop over 5 seeded draws). Every single head's ablation effect on
   every task is reported too.
4. Spurious cue (Waterbirds-style, :func:`vision_lens.shapes.spurious_split`): round vs angular
   shapes, background 95% water for round and grass for angular in the train split, reversed
   in the test split. The model's captions describe shape and background independently, so the
   model itself holds no spurious pairing; as with a linear probe trained on Waterbirds, the cue
   enters through the classifier: the class means of the *train-split* image embeddings, which
   mix "round" with "water". Mean-ablating the heads whose TextSpan texts are about the
   background (keyword match) should raise test worst-group accuracy more than ablating as many
   random heads (best of 5, as in the paper). The zero-shot classifier with shape-only prompts
   is reported alongside.

Writes ``docs/results/shapes_head_roles.json`` and ``.md``. Runs in a few minutes on a CPU.

Usage::

    python scripts/shapes_head_roles.py             # the shipped model
    python scripts/shapes_head_roles.py --smoke     # tiny random CLIP, to test the pipeline
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

import torch

import vision_lens as vl
from vision_lens import shapes
from vision_lens.analysis import (
    ablated_embedding,
    accuracy_vs_m,
    attribute_variance,
    decompose_components,
    head_label,
    heads_by_keywords,
    spurious_ablation,
    textspan,
    zero_shot_accuracy,
)
from vision_lens.text_pools import text_pool

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "results" / "shapes_head_roles"

ATTRIBUTES = ("color", "shape", "position", "size", "texture", "background", "count")
TASKS = ("color", "shape", "position", "size", "texture", "background")
BACKGROUND_WORDS = (
    "background", "water", "grass", "sand", "sky", "lake", "sea", "waves", "river", "ocean",
    "field", "lawn", "meadow", "beach", "desert", "dunes", "clouds", "plain",
)  # fmt: skip
COUNT_WORDS = ("one", "two", "three", "four", "single", "pair", "many", "several", "no")


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
    "count": _word_pattern(COUNT_WORDS),
}


def attributes_of(text: str) -> set[str]:
    """Shapes-world attributes a description mentions ("a red circle" -> {color, shape})."""
    return {name for name, pattern in PATTERNS.items() if pattern.search(text)}


def head_role(texts: list[str], min_count: float) -> tuple[str, dict[str, float]]:
    """The attribute a head's texts are about: each text votes 1, split evenly over the
    attributes it mentions ("a red circle": 0.5 colour, 0.5 shape); the winner needs at least
    ``min_count`` votes and a strict lead, else the role is "mixed"."""
    counts = dict.fromkeys(ATTRIBUTES, 0.0)
    for text in texts:
        mentioned = attributes_of(text)
        for attribute in mentioned:
            counts[attribute] += 1 / len(mentioned)
    ranked = sorted(ATTRIBUTES, key=lambda a: -counts[a])
    best, second = ranked[0], ranked[1]
    if counts[best] < min_count or counts[best] <= counts[second]:
        return "mixed", counts
    return best, counts


def preprocess(model: vl.HookedViT, dataset: shapes.ShapesDataset) -> torch.Tensor:
    return torch.stack([model.preprocess(dataset.to_pil(i)) for i in range(len(dataset))])


def tiny_random_clip():
    """A tiny random open_clip CLIP (for --smoke): the pipeline runs, the numbers mean nothing."""
    import open_clip

    torch.manual_seed(0)
    source = open_clip.CLIP(
        embed_dim=32,
        vision_cfg={"image_size": 64, "patch_size": 16, "width": 64, "layers": 3, "head_width": 16},
        text_cfg={"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2},
    ).eval()
    model = vl.HookedViT.from_open_clip_model(source)
    clip = vl.CLIPText.from_open_clip_model(source)
    return model, clip


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny random CLIP, output to /tmp")
    parser.add_argument("--n-textspan", type=int, default=2000, help="scenes for TextSpan")
    parser.add_argument("--n-eval", type=int, default=1000, help="single-object eval scenes")
    parser.add_argument("--n-spurious", type=int, default=1000, help="spurious test scenes")
    parser.add_argument("--m", type=int, default=20, help="TextSpan texts per head")
    parser.add_argument("--rank", type=int, default=80)
    parser.add_argument("--role-top", type=int, default=6, help="texts examined for a role")
    parser.add_argument("--min-role", type=float, default=2.5, help="votes needed for a role")
    parser.add_argument("--spurious-min-matches", type=int, default=3)
    parser.add_argument(
        "--min-fraction",
        type=float,
        default=0.2,
        help="variance fraction an attribute span needs to name a head (and a 1.5x lead)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.smoke:
        model, clip = tiny_random_clip()
        args.n_textspan, args.n_eval, args.n_spurious = 200, 120, 120
        if args.out == OUT:
            args.out = Path("/tmp/shapes_head_roles_smoke")
        source = "tiny random open_clip CLIP (--smoke)"
    else:
        model, clip = vl.load_shapes_clip()
        source = "vision_lens.load_shapes_clip()"
    model.eval()
    cfg = model.cfg
    print(f"model: {cfg.n_layers} layers x {cfg.n_heads} heads, d_embed {cfg.d_embed}", flush=True)

    # 1. TextSpan on every head ---------------------------------------------------------------
    scenes = shapes.generate(args.n_textspan, seed=args.seed, n_objects=(1, 4))
    components = decompose_components(
        model, preprocess(model, scenes), batch_size=args.batch_size, progress=False
    )
    outputs, heads = components.head_outputs()
    pool = text_pool("shapes")
    pool_embeddings = clip.encode(pool).float()
    rank = min(args.rank, cfg.d_embed)
    m = min(args.m, rank)
    result = textspan(outputs, pool_embeddings, m=m, rank=rank, texts=pool, heads=heads)
    print(f"TextSpan: {len(heads)} heads, m={m}, {time.perf_counter() - start:.0f} s", flush=True)

    # 2. roles ------------------------------------------------------------------------------
    roles: dict[str, dict[str, Any]] = {}
    by_role: dict[str, list[tuple[int, int]]] = {}
    fraction = result.explained_fraction[:, -1]
    head_norm = outputs.norm(dim=-1).mean(-1)
    for row, lh in enumerate(heads):
        top = result.texts_for(row, top=args.role_top)
        role, counts = head_role(top, args.min_role)
        roles[head_label(*lh)] = {
            "role": role,
            "counts": counts,
            "top_texts": result.texts_for(row, top=10),
            "explained_fraction": float(fraction[row]),
            "mean_output_norm": float(head_norm[row]),
        }
        by_role.setdefault(role, []).append(lh)

    # 2b. roles by attribute subspaces: each head's variance inside the span of one attribute's
    # zero-shot class-prompt contrasts (a question TextSpan's mixed-attribute pool cannot ask)
    prompt_embeddings = {a: clip.encode(shapes.prompts(a)).float() for a in TASKS}
    spans = attribute_variance(outputs, prompt_embeddings, heads=[head_label(*lh) for lh in heads])
    span_roles = spans.roles(min_fraction=args.min_fraction, min_lead=1.5)
    by_span_role: dict[str, list[tuple[int, int]]] = {}
    for lh, role in zip(heads, span_roles, strict=True):
        by_span_role.setdefault(role, []).append(lh)

    # 3. ablation check -----------------------------------------------------------------------
    evaluation = shapes.generate(args.n_eval, seed=args.seed + 1, n_objects=1)
    eval_components = decompose_components(
        model, preprocess(model, evaluation), batch_size=args.batch_size, progress=False
    )
    tasks = {
        task: (prompt_embeddings[task], torch.as_tensor(shapes.labels(evaluation, task)))
        for task in TASKS
    }

    def accuracies(ablate) -> dict[str, float]:
        embedding = ablated_embedding(eval_components, list(ablate))
        return {t: zero_shot_accuracy(embedding, w, y) for t, (w, y) in tasks.items()}

    base = accuracies([])
    per_head = {head_label(*lh): accuracies([lh]) for lh in heads}
    generator = torch.Generator().manual_seed(args.seed)

    def ablation_check(groups: dict[str, list[tuple[int, int]]]) -> dict[str, Any]:
        checked = {}
        for role in (*TASKS, "count"):
            chosen = groups.get(role, [])
            if not chosen:
                continue
            after = accuracies(chosen)
            drops = {t: base[t] - after[t] for t in TASKS}
            random_drops = []
            for _ in range(5):
                draw = torch.randperm(len(heads), generator=generator)[: len(chosen)].tolist()
                acc = accuracies([heads[i] for i in draw])
                random_drops.append({t: base[t] - acc[t] for t in TASKS})
            mean_random = {t: sum(d[t] for d in random_drops) / 5 for t in TASKS}
            entry: dict[str, Any] = {
                "heads": [head_label(*lh) for lh in chosen],
                "accuracy_after": after,
                "drop": drops,
                "random_heads_mean_drop": mean_random,
            }
            if role in TASKS:
                others = [t for t in TASKS if t != role]
                entry["own_task_drop_largest"] = all(drops[role] > drops[t] for t in others)
                entry["own_task_drop_exceeds_random"] = drops[role] > mean_random[role]
            checked[role] = entry
        return checked

    role_ablation = ablation_check(by_role)
    span_ablation = ablation_check(by_span_role)
    print(f"ablations done, {time.perf_counter() - start:.0f} s", flush=True)

    # TextSpan fidelity: the paper's accuracy-vs-m on the colour/shape/position tasks
    ts_eval = textspan(
        eval_components.head_outputs()[0], pool_embeddings, m=m, rank=rank, heads=heads,
        texts=pool, reconstruct=False,
    )  # fmt: skip
    fidelity = {
        t: accuracy_vs_m(eval_components, ts_eval, w, y, ms=sorted({min(5, m), min(10, m), m}))
        for t, (w, y) in tasks.items()
        if t in ("color", "shape", "position")
    }

    # 4. spurious cue -------------------------------------------------------------------------
    train = shapes.spurious_split(args.n_spurious, "train", seed=args.seed + 1)
    test = shapes.spurious_split(args.n_spurious, "test", seed=args.seed)
    with torch.inference_mode():
        train_embeddings = torch.nn.functional.normalize(
            model(preprocess(model, train)).float(), dim=-1
        )
    test_components = decompose_components(
        model, preprocess(model, test), batch_size=args.batch_size, progress=False
    )
    train_labels = torch.as_tensor(train.labels)
    shape_prompts = {
        0: [shapes.with_article(s) for s in shapes.ANGULAR_SHAPES],
        1: [shapes.with_article(s) for s in shapes.ROUND_SHAPES],
    }
    classifiers = {
        # class means of the train split: "round" there is mostly round-on-water
        "train-split class means": torch.stack(
            [train_embeddings[train_labels == c].mean(0) for c in (0, 1)]
        ),
        "zero-shot, shape prompts": torch.stack(
            [clip.encode(shape_prompts[c]).float().mean(0) for c in (0, 1)]
        ),
    }
    classifiers = {k: torch.nn.functional.normalize(w, dim=-1) for k, w in classifiers.items()}
    background = heads_by_keywords(
        result, BACKGROUND_WORDS, top=args.role_top, min_matches=args.spurious_min_matches
    )
    spurious: dict[str, Any] = {
        "shape_prompts": shape_prompts,
        "keywords": list(BACKGROUND_WORDS),
        "heads": [head_label(*h) for h in background.heads],
        "classifiers": {},
    }
    span_background = by_span_role.get("background", [])
    spurious["subspace_selection"] = {
        "heads": [head_label(*h) for h in span_background],
        "classifiers": {},
    }
    spurious_md = ""
    for name, weights in classifiers.items():
        spurious_md += f"Classifier: **{name}**\n\n"
        selections = (
            ("TextSpan keywords", background.heads, background.matches, spurious["classifiers"]),
            (
                "background subspace",
                span_background,
                None,
                spurious["subspace_selection"]["classifiers"],
            ),
        )
        for how, chosen, matches, into in selections:
            if not chosen:
                spurious_md += f"Heads chosen by {how}: none.\n\n"
                continue
            report = spurious_ablation(
                test_components,
                chosen,
                weights,
                torch.as_tensor(test.labels),
                torch.as_tensor(test.groups),
                n_random=5,
                seed=args.seed,
                matches=matches,
            )
            into[name] = report.to_dict()
            names = ", ".join(head_label(*h) for h in chosen)
            spurious_md += f"Heads chosen by {how} ({names}):\n\n{report.to_markdown()}\n"

    # report -----------------------------------------------------------------------------------
    elapsed = time.perf_counter() - start
    out = {
        "model": source,
        "config": {"n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_embed": cfg.d_embed},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "textspan": {"m": m, "rank": rank, "pool": "shapes", "pool_size": len(pool)},
        "roles": roles,
        "heads_by_role": {r: [head_label(*lh) for lh in hs] for r, hs in by_role.items()},
        "base_accuracy": base,
        "role_ablation": role_ablation,
        "subspace": {
            "attributes": spans.attributes,
            "dims": spans.dims,
            "chance": spans.chance.tolist(),
            "fractions": {
                head_label(*lh): dict(zip(spans.attributes, row.tolist(), strict=True))
                for lh, row in zip(heads, spans.fractions, strict=True)
            },
            "roles": {head_label(*lh): r for lh, r in zip(heads, span_roles, strict=True)},
            "heads_by_role": {r: [head_label(*lh) for lh in hs] for r, hs in by_span_role.items()},
            "role_ablation": span_ablation,
        },
        "single_head_ablation": per_head,
        "textspan_accuracy_vs_m": fidelity,
        "spurious": spurious,
        "seconds": elapsed,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_threads": torch.get_num_threads(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(out, result, spans.to_markdown(), spurious_md))
    print(f"wrote {args.out.with_suffix('.json')} and .md in {elapsed:.0f} s")
    return out


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _ablation_table(out: dict, ablation: dict) -> list[str]:
    lines = [
        "| role (heads) | " + " | ".join(TASKS) + " | own task hit hardest? |",
        "| --- | " + " | ".join("---" for _ in TASKS) + " | --- |",
        "| *base accuracy* | " + " | ".join(_pct(out["base_accuracy"][t]) for t in TASKS) + " | |",
    ]
    for role, entry in ablation.items():
        cells = [
            f"{100 * entry['drop'][t]:+.1f} ({100 * entry['random_heads_mean_drop'][t]:+.1f})"
            for t in TASKS
        ]
        verdict = entry.get("own_task_drop_largest")
        verdict = "" if verdict is None else ("yes" if verdict else "no")
        lines.append(f"| {role} ({len(entry['heads'])}) | " + " | ".join(cells) + f" | {verdict} |")
    return lines


def markdown(out: dict, result, subspace_md: str, spurious_md: str) -> str:
    lines = [
        "# Head roles of the shapes-world CLIP",
        "",
        f"Generated by `scripts/shapes_head_roles.py` ({out['model']}; "
        f"{out['config']['n_layers']} layers x {out['config']['n_heads']} heads, d_embed "
        f"{out['config']['d_embed']}) in {out['seconds']:.0f} s on {out['date']}.",
        "",
        "## 1. TextSpan on every head",
        "",
        f"TextSpan (m={out['textspan']['m']}, rank {out['textspan']['rank']}) with the "
        f"`shapes` pool ({out['textspan']['pool_size']} texts) over "
        f"{out['settings']['n_textspan']} scenes of 1-4 objects. Role = the attribute a head's top "
        f"{out['settings']['role_top']} texts are about (each text votes 1, split over the "
        f"attributes it names; the winner needs {out['settings']['min_role']} votes and a "
        "strict lead, else *mixed*).",
        "",
        "| head | role | explained | mean norm | top texts |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, info in out["roles"].items():
        texts = "; ".join(info["top_texts"][:5])
        lines.append(
            f"| {name} | {info['role']} | {_pct(info['explained_fraction'])} | "
            f"{info['mean_output_norm']:.3f} | {texts} |"
        )
    lines += ["", "Heads per role: " + ", ".join(
        f"**{r}**: {', '.join(h)}" for r, h in out["heads_by_role"].items()
    ), ""]  # fmt: skip
    sub = out["subspace"]
    lines += [
        "## 1b. Attribute subspaces",
        "",
        "Each cell: the fraction of the head's direct-effect variance (over the same scenes) "
        "inside the span of one attribute's zero-shot class-prompt contrasts "
        "(`vision_lens.analysis.attribute_variance`; k classes span k - 1 dimensions). "
        "*chance* is what a random subspace of that dimension holds of an isotropic head. Role: "
        f"the largest fraction, if at least {_pct(out['settings']['min_fraction'])} and 1.5 "
        "times the runner-up, else *mixed*.",
        "",
        subspace_md,
        "Heads per subspace role: " + ", ".join(
            f"**{r}**: {', '.join(h)}" for r, h in sub["heads_by_role"].items()
        ),
        "",
        "## 2. Ablation check",
        "",
        f"Zero-shot accuracy on {out['settings']['n_eval']} held-out single-object scenes, "
        "prompts from `vision_lens.shapes.prompts`. Each row mean-ablates the heads of one role "
        "(means over the same scenes); cells are accuracy drops in points (random: mean drop "
        "of 5 draws of as many random heads).",
        "",
        "Roles from TextSpan (section 1):",
        "",
        *_ablation_table(out, out["role_ablation"]),
        "",
        "Roles from attribute subspaces (section 1b):",
        "",
        *_ablation_table(out, sub["role_ablation"]),
    ]  # fmt: skip
    lines += [
        "",
        "TextSpan fidelity (the paper's Figure 4 protocol: every head replaced by its projection "
        "on its first m texts, all other terms mean-ablated):",
        "",
        "| task | base | heads exact, rest ablated | " + " | ".join(
            f"m={k}" for k in next(iter(out["textspan_accuracy_vs_m"].values()))["m"]
        ) + " |",
        "| --- | --- | --- | " + " | ".join(
            "---" for _ in next(iter(out["textspan_accuracy_vs_m"].values()))["m"]
        ) + " |",
    ]  # fmt: skip
    for task, curve in out["textspan_accuracy_vs_m"].items():
        lines.append(
            f"| {task} | {_pct(curve['base'])} | {_pct(curve['heads_only'])} | "
            + " | ".join(_pct(a) for a in curve["accuracy"])
            + " |"
        )
    sp = out["spurious"]
    lines += [
        "",
        "## 3. Spurious cue: background",
        "",
        f"`spurious_split({out['settings']['n_spurious']}, 'test')`: round vs angular shapes, "
        "the pairing reversed from the train split (round mostly on grass). The model's captions "
        "never pair shape with background, so the cue enters through the classifier, as with a "
        "linear probe on Waterbirds: *train-split class means* are the mean train-split image "
        "embeddings of each class (95% round-on-water and angular-on-grass). The zero-shot "
        "classifier with shape-only prompts is shown too. Heads ablated: those with at least "
        f"{out['settings']['spurious_min_matches']} background texts among their top "
        f"{out['settings']['role_top']} TextSpan texts ({', '.join(sp['heads']) or 'none'}), "
        "and the heads whose subspace role is background "
        f"({', '.join(sp['subspace_selection']['heads']) or 'none'}).",
        "",
        spurious_md,
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
