"""Zero-shot evaluation of the shapes-world CLIP; prints markdown, writes JSON.

    python scripts/eval_shapes_clip.py                       # the shipped weights
    python scripts/eval_shapes_clip.py --weights /tmp/run/shapes_clip.safetensors \\
        --config /tmp/run/vl-shapes-ViT-6L-64.json --json /tmp/run/eval.json

Per attribute (colour, shape, position, size, texture, background) it reports the accuracy of
the single prompt (``vision_lens.shapes.prompts``), of two prompt ensembles and the most confused
pairs, on held-out single-object scenes (``generate(n, seed=10_000, n_objects=1)``; training
never uses seeds below 100_000), plus the worst-group round-vs-angular accuracy on
``spurious_split(n, "test")``. See :mod:`vision_lens.shapes.evaluate`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from vision_lens.shapes.clip_model import register_config
from vision_lens.shapes.evaluate import TEST_SEED, evaluate_shapes_clip, format_report
from vision_lens.shapes.pretrained import (
    register_shapes_config,
    shapes_eval_path,
    shapes_weights_path,
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--weights", default=str(shapes_weights_path()))
    p.add_argument("--config", default=None, help="model-config JSON (default: the shipped one)")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=TEST_SEED)
    p.add_argument("--spurious-n", type=int, default=2000)
    p.add_argument("--spurious-seed", type=int, default=0)
    p.add_argument("--json", default=str(shapes_eval_path()), help="output JSON ('' to skip)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import open_clip

    torch.set_num_threads(args.threads)
    name = register_config(args.config) if args.config else register_shapes_config()
    model = open_clip.create_model(name, pretrained=args.weights, weights_only=True).eval()
    tokenizer = open_clip.get_tokenizer(name)
    t0 = time.time()
    report = evaluate_shapes_clip(
        model, tokenizer, args.n, args.seed, args.spurious_n, args.spurious_seed
    )
    report["model_name"] = name
    report["weights"] = Path(args.weights).name
    report["seconds"] = round(time.time() - t0, 1)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
