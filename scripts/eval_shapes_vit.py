"""Evaluate the shipped shapes-world ViT classifier; writes ``weights/shapes_vit_eval.json``.

    python scripts/eval_shapes_vit.py                      # the shipped model
    python scripts/eval_shapes_vit.py --n-train 3000 --n-test 2000 --out /tmp/eval.json

Two numbers per attribute, both on held-out single-object scenes (``generate(n_test,
seed=10_000, n_objects=1)``, the seed of the shapes CLIP's report; training used seeds
>= 1_000_000):

* ``linear_probe``: a scikit-learn logistic regression on the model's pooled, pre-head features
  (``vl.load_shapes_vit(head=False)``), fitted on ``n_train`` other scenes (seed 30_000). The
  quality gate is >= 0.95 for colour, shape and position.
* ``classifier``: the model's own head (the attribute's logit slice, argmax).

Object count and background are also scored by the head on scenes with 1-4 objects
(``classifier_multi``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import vision_lens as vl
from vision_lens.shapes.generator import generate
from vision_lens.shapes.objectives import attribute_targets
from vision_lens.shapes.pretrained_vit import (
    PROBE_TRAIN_SEED,
    encode_scenes,
    linear_probe_accuracy,
    shapes_vit_config,
    shapes_vit_eval_path,
)
from vision_lens.shapes.vit_classifier import classifier_accuracy

TEST_SEED = 10_000
GATE = {"color": 0.95, "shape": 0.95, "position": 0.95}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n-train", type=int, default=3000, help="probe training scenes")
    p.add_argument("--n-test", type=int, default=2000, help="held-out test scenes")
    p.add_argument("--out", default=str(shapes_vit_eval_path()), help="report path")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    cfg = shapes_vit_config()
    features = vl.load_shapes_vit(head=False)
    classifier = vl.load_shapes_vit()
    train = generate(args.n_train, seed=PROBE_TRAIN_SEED, n_objects=1)
    test = generate(args.n_test, seed=TEST_SEED, n_objects=1)
    multi = generate(args.n_test, seed=TEST_SEED + 1, n_objects=(1, 4))
    probe = linear_probe_accuracy(
        encode_scenes(features, train.images), train, encode_scenes(features, test.images), test
    )

    def head(ds):
        logits = torch.from_numpy(encode_scenes(classifier, ds.images)).float()
        return classifier_accuracy(logits, attribute_targets(ds, range(len(ds))), cfg)

    head_single = head(test)
    head_single.pop("count", None)  # trivially "one" on single-object scenes
    head_multi = {k: v for k, v in head(multi).items() if k in ("count", "background")}
    report = {
        "model": "shapes_vit.safetensors",
        "n_train": args.n_train,
        "n_test": args.n_test,
        "probe_train_seed": PROBE_TRAIN_SEED,
        "test_seed": TEST_SEED,
        "features": f"pooled fc_norm features (load_shapes_vit(head=False)), width {cfg.embed_dim}",
        "linear_probe": probe,
        "classifier": head_single,
        "classifier_multi": head_multi,
        "gate": GATE,
        "gate_passed": all(probe[a] >= t for a, t in GATE.items()),
        "seconds": round(time.time() - t0, 1),
    }
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0 if report["gate_passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
