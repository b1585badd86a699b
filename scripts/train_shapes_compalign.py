"""Fit the shipped CompAlign: the shapes ViT's components mapped into the shapes CLIP's space.

    python scripts/train_shapes_compalign.py                 # writes the shipped folder
    python scripts/train_shapes_compalign.py --out /tmp/ca   # somewhere else

Label-free (the paper's §4): ``--n-train`` shapes-world scenes with 1-4 objects (seed 40_000,
no labels read) go through the shapes ViT (``vl.load_shapes_vit(head=False)``: its output is
the pooled, ``fc_norm``-ed feature) and the shapes CLIP's image tower. The ViT's output is
decomposed exactly (:func:`vision_lens.analysis.decompose_components`, every layer split into
heads) and every head and MLP gets its own map; the embedding, the attention biases and the
readout's bias share are summed into ``"rest"`` (:func:`select_components`). The maps train
with the paper's loss and defaults (Adam, ``lr=3e-4``, ``lambda=1/768``, Frobenius penalty)
for ``--epochs`` passes with early stopping on 10% held-out scenes.

Writes ``compalign.safetensors`` and ``compalign.json`` (:meth:`CompAlign.save`) and
``alignment.json`` (the held-out cosine and the zero-shot accuracy through the mapped sum on
``--n-test`` single-object scenes of seed 10_000, next to the CLIP's own) into
``vision_lens/shapes/weights/shapes_vit_compalign/``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

import vision_lens as vl
from vision_lens.analysis import CompAlign, alignment_report
from vision_lens.analysis.direct_effects import Components, decompose_components
from vision_lens.analysis.selection import select_components
from vision_lens.shapes import generate, labels, prompts
from vision_lens.shapes.encoding import images_to_tensor
from vision_lens.shapes.pretrained_vit import shapes_vit_compalign_path

TRAIN_SEED = 40_000
TEST_SEED = 10_000
ATTRIBUTES = ("color", "shape", "position")


def vit_components(
    vit: vl.HookedViT, images: torch.Tensor, batch_size: int = 250, progress: bool = False
) -> Components:
    """The ViT's output split into every head, every MLP and ``"rest"`` (float32, CPU)."""
    comps = decompose_components(
        vit,
        images,
        head_layers=list(range(vit.cfg.n_layers)),
        batch_size=batch_size,
        progress=progress,
    )
    return select_components(comps, heads=True, mlps=True, attention=True)


@torch.no_grad()
def clip_embeddings(
    clip: vl.HookedViT, images: torch.Tensor, batch_size: int = 250
) -> torch.Tensor:
    """The shapes CLIP's image embeddings ``[n, d_clip]`` (not normalised)."""
    return torch.cat([clip(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


@torch.no_grad()
def class_texts(text: Any, attribute: str) -> torch.Tensor:
    """The attribute's prompts' CLIP text embeddings ``[n_classes, d_clip]``, vocabulary order."""
    return text.encode(prompts(attribute))


def fit(
    n_train: int = 20_000,
    epochs: int = 30,
    seed: int = 0,
    progress: bool = True,
) -> tuple[CompAlign, dict[str, Any]]:
    """Fit the maps; returns the aligner and its training record."""
    vit = vl.load_shapes_vit(head=False)
    clip, _ = vl.load_shapes_clip()
    scenes = generate(n_train, seed=TRAIN_SEED, n_objects=(1, 4))
    x = images_to_tensor(scenes.images)
    t0 = time.time()
    comps = vit_components(vit, x, progress=progress)
    z = clip_embeddings(clip, x)
    t_data = time.time() - t0
    aligner = CompAlign.for_components(comps, d_clip=z.shape[1], seed=seed)
    t0 = time.time()
    history = aligner.fit(comps, z, epochs=epochs, seed=seed, progress=progress)
    record = {
        "n_train": n_train,
        "train_seed": TRAIN_SEED,
        "epochs": epochs,
        "components": [str(c) for c in aligner.ids],
        "seconds_data": round(t_data, 1),
        "seconds_fit": round(time.time() - t0, 1),
        "best_val_cosine": max(history.val_cosine) if history.val_cosine else None,
    }
    return aligner, record


def evaluate(aligner: CompAlign, n_test: int = 2000) -> dict[str, Any]:
    """Held-out cosine and zero-shot accuracy through the mapped sum (and of the CLIP itself)
    on single-object scenes of the evaluation seed."""
    vit = vl.load_shapes_vit(head=False)
    clip, text = vl.load_shapes_clip()
    test = generate(n_test, seed=TEST_SEED, n_objects=1)
    x = images_to_tensor(test.images)
    comps = vit_components(vit, x)
    z = clip_embeddings(clip, x)
    out: dict[str, Any] = {"n_test": n_test, "test_seed": TEST_SEED, "zero_shot": {}}
    for attribute in ATTRIBUTES:
        y = torch.as_tensor(labels(test, attribute))
        report = alignment_report(aligner, comps, z, class_texts(text, attribute), y)
        out["cosine"] = report.cosine
        out["zero_shot"][attribute] = {"aligned": report.accuracy, "clip": report.clip_accuracy}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default=str(shapes_vit_compalign_path()), help="output folder")
    p.add_argument("--n-train", type=int, default=20_000)
    p.add_argument("--n-test", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    aligner, record = fit(args.n_train, args.epochs, progress=not args.no_progress)
    record["evaluation"] = evaluate(aligner, args.n_test)
    out = aligner.save(args.out)
    (Path(out) / "alignment.json").write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["evaluation"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
