"""The ``vision-lens`` command."""

from __future__ import annotations

import argparse
import shlex
import sys

from vision_lens.loading.open_clip import UnsupportedModelError


def _report(args: argparse.Namespace) -> int:
    from vision_lens.apps.report import write_report

    path = write_report(
        args.out,
        model_name=args.model,
        pretrained=args.pretrained,
        images=args.images,
        texts=args.texts,
        max_images=args.max_images,
        batch_size=args.batch_size,
        device=args.device,
    )
    print(f"wrote {path}")
    return 0


def _eval_seg(args: argparse.Namespace) -> int:
    from vision_lens.apps.seg_eval import run_eval_seg

    result, paths = run_eval_seg(
        args.out_dir,
        model_name=args.model,
        pretrained=args.pretrained,
        imagenet_seg=args.imagenet_seg,
        n=args.n,
        seed=args.seed,
        methods=args.methods,
        layers=args.layers,
        batch_size=args.batch_size,
        device=args.device,
        templates=args.templates,
        class_source=args.class_source,
        figure=not args.no_figure,
        n_examples=args.n_examples,
        ablations=args.ablations,
        progress=not args.quiet,
        command=args.command_line,
    )
    print(result.table_markdown())
    for path in paths:
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``vision-lens`` (one sub-command per job)."""
    parser = argparse.ArgumentParser(
        prog="vision-lens",
        description="Mechanistic interpretability for CLIP vision transformers.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser(
        "report",
        help="write one HTML page of figures: layer and head direct effects, attention "
        "ablations, token heatmaps",
        description="Write a self-contained HTML report. With no arguments it uses the shipped "
        "shapes-world CLIP and generated scenes.",
    )
    report.add_argument("--out", default="report.html", help="HTML file to write")
    report.add_argument("--model", help="open_clip model name (default: the shipped shapes model)")
    report.add_argument("--pretrained", help="open_clip pretrained tag or checkpoint path")
    report.add_argument("--images", help="folder of images (default: shapes-world scenes)")
    report.add_argument("--texts", nargs="+", help="text queries for the heatmaps (with --images)")
    report.add_argument("--max-images", type=int, default=8, help="images used from --images")
    report.add_argument("--batch-size", type=int, default=64)
    report.add_argument("--device", default=None, help="torch device, e.g. cuda")
    report.set_defaults(run=_report)

    from vision_lens.apps.seg_eval import METHODS, SHAPES_SEED

    seg = commands.add_parser(
        "eval-seg",
        help="zero-shot segmentation benchmark: the token decomposition vs. GradCAM, Chefer et "
        "al. 2021, raw attention and rollout (pixel accuracy, mIoU, mAP)",
        description="Evaluate zero-shot segmentation heatmaps of every method on one dataset and "
        "write segmentation.md, segmentation.json and segmentation_examples.html. With no "
        "arguments: the shipped shapes model on 500 held-out single-object shapes scenes.",
    )
    seg.add_argument("--out-dir", default="seg_eval", help="folder for the results")
    seg.add_argument("--model", help="open_clip model name (default: the shipped shapes model)")
    seg.add_argument("--pretrained", help="open_clip pretrained tag or checkpoint path")
    seg.add_argument(
        "--imagenet-seg", metavar="PATH", help="gtsegs_ijcv.mat (default: shapes-world scenes)"
    )
    seg.add_argument(
        "--n", type=int, help="number of images (default: 500 shapes scenes / all ImageNet-seg)"
    )
    seg.add_argument("--seed", type=int, default=SHAPES_SEED, help="seed of the shapes scenes")
    seg.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to compare"
    )
    seg.add_argument(
        "--layers", nargs="+", type=int, help="attention layers of our method (default: all)"
    )
    seg.add_argument("--batch-size", type=int, default=32)
    seg.add_argument("--device", default=None, help="torch device, e.g. cuda")
    seg.add_argument(
        "--templates",
        choices=("openai", "simple"),
        default="openai",
        help="ImageNet prompt templates for the class texts",
    )
    seg.add_argument(
        "--class-source",
        choices=("predicted", "label"),
        default="predicted",
        help="ImageNet class per image: the model's zero-shot prediction (the reference "
        "protocol) or the image's WordNet label",
    )
    seg.add_argument("--n-examples", type=int, default=4, help="images in the example figure")
    seg.add_argument("--no-figure", action="store_true", help="skip the example-heatmap figure")
    seg.add_argument(
        "--ablations",
        action="store_true",
        help="also evaluate variants of our method (reference subtraction, layers, clipping) "
        "and each method's best fixed threshold",
    )
    seg.add_argument("--quiet", action="store_true", help="no progress bars")
    seg.set_defaults(run=_eval_seg)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vision-lens`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = " ".join(["vision-lens", *map(shlex.quote, argv)])
    try:
        return args.run(args)
    except (FileNotFoundError, UnsupportedModelError, ValueError) as error:
        print(f"vision-lens {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
