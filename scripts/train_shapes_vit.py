"""Train the shapes-world ViT classifier (a plain timm ViT) on CPU, resumably.

    python scripts/train_shapes_vit.py --out /tmp/shapes_vit
    python scripts/train_shapes_vit.py --out /tmp/shapes_vit --resume   # after an interruption

The shipped weights are the defaults (2,700 steps of 128 scenes from 100,000 generated ones, two
CPU threads; the time is in ``shapes_vit_train_log.json``)::

    python scripts/train_shapes_vit.py --out /tmp/shapes_vit

Checkpoints go to ``<out>/checkpoint.pt`` every ``--checkpoint-every`` steps; once all
``--steps`` are done it writes ``<out>/shapes_vit.safetensors`` (float16 timm state dict),
``<out>/shapes_vit.json`` (timm kwargs + attribute slices) and
``<out>/shapes_vit_train_log.json``; copy those three into ``vision_lens/shapes/weights/`` to ship
them. See :mod:`vision_lens.shapes.train_vit`.
"""

from __future__ import annotations

import argparse
import json
import sys

from vision_lens.shapes.train_vit import ViTTrainConfig, train_shapes_vit
from vision_lens.shapes.vit_classifier import ShapesViTConfig


def main(argv: list[str] | None = None) -> int:
    d, m = ViTTrainConfig(), ShapesViTConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="output directory (checkpoint and results)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"optimizer steps, the schedule's length (default {d.steps}); with --resume, a new "
        "length that extends the checkpoint's schedule",
    )
    p.add_argument("--stop-after", type=int, default=None, help="stop (checkpointed) after N steps")
    p.add_argument("--minutes", type=float, default=0, help="stop (checkpointed) after N minutes")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--n-images", type=int, default=d.n_images)
    p.add_argument("--p-single", type=float, default=d.p_single)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    p.add_argument("--width", type=int, default=m.embed_dim, help="embed_dim")
    p.add_argument("--depth", type=int, default=m.depth)
    p.add_argument("--heads", type=int, default=m.num_heads)
    p.add_argument("--patch-size", type=int, default=m.patch_size)
    p.add_argument("--reg-tokens", type=int, default=m.reg_tokens)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    model = ShapesViTConfig(
        embed_dim=args.width,
        depth=args.depth,
        num_heads=args.heads,
        patch_size=args.patch_size,
        reg_tokens=args.reg_tokens,
    )
    cfg = ViTTrainConfig(
        seed=args.seed,
        steps=d.steps if args.steps is None else args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        n_images=args.n_images,
        p_single=args.p_single,
        threads=args.threads,
        eval_every=args.eval_every,
        checkpoint_every=args.checkpoint_every,
        max_minutes=args.minutes or None,
        model=model,
    )
    result = train_shapes_vit(
        cfg,
        args.out,
        resume=args.resume,
        steps=args.steps if args.resume else None,
        stop_after=args.stop_after,
        progress=not args.no_progress,
        log=lambda s: print(s, flush=True),
    )
    summary = {"steps_done": result.steps_done, "finished": result.finished}
    summary["minutes"] = round(result.seconds / 60, 2)
    if result.history:
        summary["last"] = result.history[-1]
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
