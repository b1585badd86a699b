"""Train the shapes-world CLIP on CPU (the shipped weights came from the defaults).

    python scripts/train_shapes_clip.py --out vision_lens/shapes/weights --seed 0

The shipped run hit the 44-minute limit after 1359 of its 1800 scheduled steps; to replay it on
any machine, step for step: ``--minutes 0 --stop-after 1359``.

Writes ``<out>/<model name>.json`` (the open_clip config), ``<out>/shapes_clip.safetensors``
(float16) and ``<out>/train_log.json``. See :mod:`vision_lens.shapes.train`.
"""

from __future__ import annotations

import argparse
import json
import sys

from vision_lens.shapes.clip_model import SHAPES_MODEL_NAME, TrainConfig
from vision_lens.shapes.train import train_shapes_clip


def main(argv: list[str] | None = None) -> int:
    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--steps", type=int, default=d.steps, help="optimizer steps (sets the schedule)")
    p.add_argument(
        "--minutes",
        type=float,
        default=d.max_minutes,
        help="stop early (and save) after this many minutes, a safety net; 0 disables",
    )
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="stop after this many steps, schedule still set by --steps (replays a timed-out run)",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--n-images", type=int, default=d.n_images, help="training scenes generated")
    p.add_argument("--p-single", type=float, default=d.p_single, help="single-object fraction")
    p.add_argument(
        "--no-sincos-init",
        action="store_true",
        help="keep open_clip's random position-embedding init (learns position much slower)",
    )
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument(
        "--fp32",
        action="store_true",
        help="no bfloat16 autocast (the default uses it; fast on CPUs with AVX512-BF16)",
    )
    p.add_argument(
        "--warm-steps", type=int, default=d.warm_steps, help="supervised image-tower warm start"
    )
    p.add_argument(
        "--aux-weight",
        type=float,
        default=d.aux_weight,
        help="weight of the supervised attribute term during contrastive training (0: pure CLIP)",
    )
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--model-name", default=SHAPES_MODEL_NAME)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    cfg = TrainConfig(
        seed=args.seed,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup,
        weight_decay=args.weight_decay,
        n_images=args.n_images,
        p_single=args.p_single,
        sincos_pos_init=not args.no_sincos_init,
        threads=args.threads,
        bf16=not args.fp32,
        warm_steps=args.warm_steps,
        aux_weight=args.aux_weight,
        max_minutes=args.minutes or None,
        stop_after=args.stop_after,
        eval_every=args.eval_every,
        model_name=args.model_name,
    )
    res = train_shapes_clip(cfg, out=args.out, progress=not args.no_progress)
    print(
        json.dumps(
            {
                "weights": str(res.weights_path),
                "config": str(res.config_path),
                "steps_done": res.steps_done,
                "minutes": round(res.seconds / 60, 2),
                "final": res.history[-1] if res.history else None,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
