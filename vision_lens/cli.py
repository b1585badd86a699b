"""The ``vision-lens`` command."""

from __future__ import annotations

import argparse
import sys

from vision_lens.loading.open_clip import UnsupportedModelError


def _report(args: argparse.Namespace) -> int:
    from vision_lens.report import write_report

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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vision-lens`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (FileNotFoundError, UnsupportedModelError, ValueError) as error:
        print(f"vision-lens {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
