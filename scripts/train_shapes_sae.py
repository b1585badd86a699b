"""Train a small SAE on the shipped shapes CLIP and measure how monosemantic its features are.

    python scripts/train_shapes_sae.py            # ~1-2 min on 2 CPU cores

1. Collect the class token's residual stream at ``blocks.3.hook_resid_post`` of the shapes CLIP
   on single-object shapes-world images (train and held-out splits, ground-truth colour, shape,
   position, size, texture, background for every image).
2. Train a ReLU SAE with ``overcomplete`` (``pip install overcomplete``, the optional extra
   ``vision_lens[sae]``): its linear encoder, an L2-normalised dictionary and the MSE + L1 loss,
   on activations centred and scaled to unit mean square. The centring and scale are folded into
   SAELens' "standard" layout (``b_dec`` = the mean, applied to the input), so the result loads
   with :func:`vision_lens.analysis.sae.load_saelens_sae` or with sae-lens itself.
3. Save it under ``vision_lens/shapes/weights/shapes_sae_L3_resid_post/`` (if under 1 MB).
4. Monosemanticity on the held-out images: for each live feature, its top-k activating images
   and the fraction that share their most common colour / shape / position (purity); count the
   features with purity >= 0.9 for one of those attributes, against random unit directions
   (projections of the centred activations, top-k the same way) and against the standard basis.
   Results go to ``docs/results/sae.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
import torch

import vision_lens as vl
from vision_lens.analysis.sae import (
    StandardSAE,
    load_saelens_sae,
    run_with_sae_cache,
    sae_direct_effects,
)
from vision_lens.shapes.encoding import images_to_tensor

ROOT = Path(__file__).resolve().parents[1]
HOOK = "blocks.3.hook_resid_post"
ATTRIBUTES = ("color", "shape", "position")
EXTRA_ATTRIBUTES = ("size", "texture", "background")


def activations(model, dataset, batch_size: int = 500) -> torch.Tensor:
    """Class-token residual stream at ``HOOK`` ``[n, d_model]``."""
    rows = []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            images = images_to_tensor(dataset.images[start : start + batch_size])
            _, cache = model.run_with_cache(images, names_filter=HOOK)
            rows.append(cache[HOOK][:, 0].clone())
    return torch.cat(rows)


def attribute_table(dataset) -> dict[str, np.ndarray]:
    table = {a: np.array([objs[0][a] for objs in dataset.attributes]) for a in ATTRIBUTES}
    for a in ("size", "texture"):
        table[a] = np.array([objs[0][a] for objs in dataset.attributes])
    table["background"] = np.array(dataset.backgrounds)
    return table


def purity(scores: torch.Tensor, table: dict[str, np.ndarray], k: int, min_active: bool):
    """Per column of ``scores`` ``[n, units]``: ``{attribute: purity}`` of its top-k images,
    with the majority value; ``None`` for a unit with fewer than ``k`` positive scores when
    ``min_active`` (a dead or too-rare feature)."""
    out = []
    top = scores.topk(k, dim=0)
    for unit in range(scores.shape[1]):
        if min_active and (scores[:, unit] > 0).sum() < k:
            out.append(None)
            continue
        idx = top.indices[:, unit].numpy()
        entry = {}
        for attr, values in table.items():
            value, count = Counter(values[idx].tolist()).most_common(1)[0]
            entry[attr] = (count / k, value)
        out.append(entry)
    return out


def summarize(purities, threshold: float) -> dict:
    live = [p for p in purities if p is not None]
    mono = [p for p in live if max(p[a][0] for a in ATTRIBUTES) >= threshold]
    by_attr = {
        a: sum(1 for p in live if p[a][0] >= threshold) for a in ATTRIBUTES + EXTRA_ATTRIBUTES
    }
    best = [max(p[a][0] for a in ATTRIBUTES) for p in live]
    return {
        "units": len(purities),
        "live": len(live),
        "monosemantic": len(mono),
        "monosemantic_fraction_of_live": len(mono) / max(len(live), 1),
        "monosemantic_by_attribute": by_attr,
        "mean_best_purity": float(np.mean(best)) if best else 0.0,
    }


def train(x: torch.Tensor, d_sae: int, penalty: float, epochs: int, seed: int):
    """Train with overcomplete; returns the SAELens-layout :class:`StandardSAE` and the logs."""
    try:
        from overcomplete.sae import SAE, mse_l1, train_sae
    except ImportError as err:  # the optional extra
        raise SystemExit(f"needs overcomplete (pip install 'vision_lens[sae]'): {err}") from err
    torch.manual_seed(seed)
    mu = x.mean(0)
    scale = float((x - mu).pow(2).sum(1).mean().div(x.shape[1]).sqrt())
    data = (x - mu) / scale
    sae = SAE(x.shape[1], d_sae, encoder_module="linear")
    loader = torch.utils.data.DataLoader(data, batch_size=256, shuffle=True)
    optimizer = torch.optim.Adam(sae.parameters(), lr=1e-3)
    criterion = partial(mse_l1, penalty=penalty)
    logs = train_sae(sae, loader, criterion, optimizer, nb_epochs=epochs, monitoring=1)
    sae.eval()
    linear = sae.encoder.final_block[0]
    D = sae.get_dictionary().detach()  # [d_sae, d_in], unit rows
    standard = StandardSAE(
        W_enc=linear.weight.detach().T / scale,
        b_enc=linear.bias.detach(),
        W_dec=D * scale,
        b_dec=mu,
        apply_b_dec_to_input=True,
        hook_name=HOOK,
    )
    with torch.no_grad():  # the export is the same function
        _, codes = sae.encode(data[:512])
        assert torch.allclose(standard.encode(x[:512]), codes, atol=1e-4)
        assert torch.allclose(standard.decode(codes), sae.decode(codes) * scale + mu, atol=1e-4)
    return standard, {k: [float(v) for v in vals] for k, vals in logs.items() if len(vals) < 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=8000)
    parser.add_argument("--n-eval", type=int, default=3000)
    parser.add_argument("--d-sae", type=int, default=256)
    parser.add_argument("--penalty", type=float, default=5e-5)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "vision_lens/shapes/weights")
    parser.add_argument("--results", type=Path, default=ROOT / "docs/results/sae.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.time()
    model, _ = vl.load_shapes_clip()
    model.eval()
    train_set = vl.shapes.generate(args.n_train, seed=100 + args.seed, n_objects=1)
    eval_set = vl.shapes.generate(args.n_eval, seed=200 + args.seed, n_objects=1)
    x_train, x_eval = activations(model, train_set), activations(model, eval_set)
    collected = time.time()

    sae, logs = train(x_train, args.d_sae, args.penalty, args.epochs, args.seed)
    trained = time.time()

    # reconstruction on held-out activations
    with torch.no_grad():
        feats = sae.encode(x_eval)
        recon = sae.decode(feats)
    centred = x_eval - x_eval.mean(0)
    fve = 1 - (x_eval - recon).pow(2).sum() / centred.pow(2).sum()
    l0 = (feats > 0).float().sum(1).mean()
    dead = int(((feats > 0).sum(0) == 0).sum())

    # save in SAELens' format (only if small)
    folder = args.out / "shapes_sae_L3_resid_post"
    size = sum(p.numel() * p.element_size() for p in sae.parameters())
    if size >= 1_000_000:
        folder = Path("/tmp/shapes_sae_L3_resid_post")
    sae.save(folder)
    loaded = load_saelens_sae(folder, model=model)
    assert torch.equal(loaded.encode(x_eval), feats)

    # splice check: the forward pass is unchanged and the per-feature effects sum exactly
    images = images_to_tensor(eval_set.images[:64])
    with torch.no_grad():
        out, cache = run_with_sae_cache(model, images, {HOOK: loaded})
        plain = model(images)
        effects = sae_direct_effects(cache, HOOK, loaded)
    terms, labels = cache.decompose_layers()
    upto = [i for i, lab in enumerate(labels) if lab.kind == "embed" or (lab.layer or 0) <= 3]
    upto = [i for i in upto if labels[i].kind != "bias"]
    splice = {
        "max_abs_output_change": float((out - plain).abs().max()),
        "max_abs_effects_sum_error": float((effects.total() - terms[upto].sum(0)).abs().max()),
        "output_scale_max_abs": float(plain.abs().max()),
        "error_term_norm_fraction": float(
            (effects.error.norm(dim=-1) / effects.total().norm(dim=-1)).mean()
        ),
    }

    # monosemanticity
    table = attribute_table(eval_set)
    k = args.top_k
    sae_p = purity(feats, table, k, min_active=True)
    gen = torch.Generator().manual_seed(args.seed)
    baselines = {}
    for name, n_dirs in (("random_directions", args.d_sae),):
        runs = []
        for _rep in range(3):
            dirs = torch.randn(n_dirs, x_eval.shape[1], generator=gen)
            dirs = dirs / dirs.norm(dim=1, keepdim=True)
            runs.append(summarize(purity(centred @ dirs.T, table, k, False), args.threshold))
        baselines[name] = {
            "runs": runs,
            "mean_monosemantic": np.mean([r["monosemantic"] for r in runs]),
        }
    basis = torch.cat([centred, -centred], 1)  # each residual dimension, both signs
    baselines["standard_basis_both_signs"] = summarize(
        purity(basis, table, k, False), args.threshold
    )

    examples = []
    for unit, p in enumerate(sae_p):
        if p is None:
            continue
        attr = max(ATTRIBUTES, key=lambda a: p[a][0])
        if p[attr][0] >= args.threshold:
            examples.append(
                {"feature": unit, "attribute": attr, "value": p[attr][1], "purity": p[attr][0]}
            )
    results = {
        "model": "vl.load_shapes_clip() (vl-shapes-ViT-6L-64)",
        "hook": HOOK,
        "position": "class token",
        "library": "overcomplete 0.3.0 (SAE, linear encoder, l2-normalised dictionary, mse_l1)",
        "data": {"train_images": args.n_train, "eval_images": args.n_eval, "objects_per_image": 1},
        "sae": {
            "d_in": sae.d_in,
            "d_sae": sae.d_sae,
            "penalty": args.penalty,
            "epochs": args.epochs,
            "saved_to": str(folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder),
            "bytes": size,
            "heldout_fraction_variance_explained": float(fve),
            "heldout_mean_l0": float(l0),
            "heldout_dead_features": dead,
            "final_train_logs": {k2: v[-1] for k2, v in logs.items() if v},
        },
        "splice": splice,
        "monosemanticity": {
            "top_k": k,
            "threshold": args.threshold,
            "attributes": list(ATTRIBUTES),
            "sae": summarize(sae_p, args.threshold),
            "baselines": baselines,
            "chance_purity": {"color": 1 / 8, "shape": 1 / 8, "position": 1 / 9},
            "monosemantic_features": examples,
        },
        "seconds": {
            "collect": round(collected - start, 1),
            "train": round(trained - collected, 1),
            "total": round(time.time() - start, 1),
        },
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k2: results[k2] for k2 in ("sae", "splice", "seconds")}, indent=2))
    mono = results["monosemanticity"]
    print("SAE:", mono["sae"])
    print("baselines:", json.dumps(mono["baselines"], indent=1, default=float))


if __name__ == "__main__":
    main()
