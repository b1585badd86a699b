"""The ``vision-lens`` command: one sub-command per application (``vision_lens.apps``).

Each sub-command's options are named (``dest``) like the parameters of the function it runs, so
:func:`_call` passes them on by name: ``vision-lens report`` runs
:func:`~vision_lens.apps.report.write_report`, ``vision-lens eval-seg`` runs
:func:`~vision_lens.apps.seg_eval.run_eval_seg`.
"""

from __future__ import annotations

import argparse
import inspect
import shlex
import sys
from collections.abc import Callable
from typing import TypeVar

from vision_lens.loading.open_clip import UnsupportedModelError

_R = TypeVar("_R")


def _call(function: Callable[..., _R], args: argparse.Namespace) -> _R:
    """Call ``function`` with the parsed options that are named like its parameters."""
    parameters = inspect.signature(function).parameters
    return function(**{name: value for name, value in vars(args).items() if name in parameters})


def _report(args: argparse.Namespace) -> int:
    from vision_lens.apps.report import write_report

    print(f"wrote {_call(write_report, args)}")
    return 0


def _eval_seg(args: argparse.Namespace) -> int:
    from vision_lens.apps.seg_eval import run_eval_seg

    result, paths = _call(run_eval_seg, args)
    print(result.table_markdown())
    for path in paths:
        print(f"wrote {path}")
    return 0


def _add_model_options(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """The options every sub-command shares: which CLIP, batch size and device."""
    parser.add_argument(
        "--model",
        dest="model_name",
        metavar="MODEL",
        help="open_clip model name (default: the shipped shapes model)",
    )
    parser.add_argument("--pretrained", help="open_clip pretrained tag or checkpoint path")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``vision-lens`` (one sub-command per job).

    Example:
        >>> args = build_parser().parse_args(["eval-seg", "--model", "ViT-B-16", "--quiet"])
        >>> args.model_name, args.progress, args.figure, args.batch_size
        ('ViT-B-16', False, True, 32)
    """
    parser = argparse.ArgumentParser(
        prog="vision-lens",
        description="Mechanistic interpretability for CLIP vision transformers.",
    )
    commands = parser.add_subparsers(dest="subcommand", required=True)
    report = commands.add_parser(
        "report",
        help="write one HTML page of figures: layer and head direct effects, attention "
        "ablations, token heatmaps",
        description="Write a self-contained HTML report. With no arguments it uses the shipped "
        "shapes-world CLIP and generated scenes.",
    )
    report.add_argument("--out", default="report.html", help="HTML file to write")
    _add_model_options(report, batch_size=64)
    report.add_argument("--images", help="folder of images (default: shapes-world scenes)")
    report.add_argument("--texts", nargs="+", help="text queries for the heatmaps (with --images)")
    report.add_argument("--max-images", type=int, default=8, help="images used from --images")
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
    _add_model_options(seg, batch_size=32)
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
    seg.add_argument(
        "--no-figure",
        dest="figure",
        action="store_false",
        help="skip the example-heatmap figure",
    )
    seg.add_argument(
        "--ablations",
        action="store_true",
        help="also evaluate variants of our method (reference subtraction, layers, clipping) "
        "and each method's best fixed threshold",
    )
    seg.add_argument("--quiet", dest="progress", action="store_false", help="no progress bars")
    seg.set_defaults(run=_eval_seg)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vision-lens`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command = " ".join(["vision-lens", *map(shlex.quote, argv)])  # recorded in results
    try:
        return args.run(args)
    except (FileNotFoundError, UnsupportedModelError, ValueError) as error:
        print(f"vision-lens {args.subcommand}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
