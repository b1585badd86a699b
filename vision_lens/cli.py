"""The ``vision-lens`` command: one sub-command per application (``vision_lens.apps``).

Each sub-command's options are named (``dest``) like the parameters of the function it runs, so
:func:`_call` passes them on by name: ``vision-lens report`` runs
:func:`~vision_lens.apps.report.write_report`, ``vision-lens eval-seg`` runs
:func:`~vision_lens.apps.seg_eval.run_eval_seg`.

A user's mistake ends the command with exit code 2 and one line on stderr,
``vision-lens <command>: error: <what is wrong and how to fix it>``; ``--debug`` shows the
traceback instead. Bugs keep their traceback (exit code 1).
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import os
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NoReturn, TypeVar

from vision_lens import errors

_R = TypeVar("_R")

#: What counts as the user's mistake (exit 2, one line) rather than a bug (traceback, exit 1).
#:
#: * ``ValueError``, ``TypeError``, ``IndexError``: how the library refuses a bad argument (a value
#:   out of its domain, an argument of the wrong kind, a layer or head the model lacks; see
#:   ``vision_lens/errors.py``). ``UnsupportedModelError``, ``CheckpointError`` and
#:   ``HookOutputError`` are ``ValueError`` s.
#: * ``OSError``: files and folders (``FileNotFoundError``, ``NotADirectoryError``,
#:   ``IsADirectoryError``, ``PermissionError``, PIL's ``UnidentifiedImageError``, a full disk, a
#:   failed download): the environment, not the code.
#: * ``StaleCacheError`` (a ``RuntimeError``) and ``IncompleteCacheError`` (a ``KeyError``): the
#:   library's own refusals.
#: * ``MemoryError`` and torch's out-of-memory error: too large a batch for the machine.
#:
#: Everything else, notably ``RuntimeError`` from torch internals, ``KeyError``,
#: ``AttributeError`` and ``AssertionError``, is a bug and keeps its traceback. open_clip's
#: unknown-model and unknown-tag ``RuntimeError`` s never arise: :func:`_check_model` refuses
#: those names before open_clip is asked.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    IndexError,
    OSError,
    MemoryError,
    errors.StaleCacheError,
    errors.IncompleteCacheError,
)


class CommandLineError(ValueError):
    """An option (or combination of options) the command refuses before doing any work."""


def _call(function: Callable[..., _R], args: argparse.Namespace) -> _R:
    """Call ``function`` with the parsed options that are named like its parameters; options left
    unset (``None``) keep the function's default."""
    parameters = inspect.signature(function).parameters
    return function(
        **{
            name: value
            for name, value in vars(args).items()
            if name in parameters and value is not None
        }
    )


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


def _collect(args: argparse.Namespace) -> int:
    import torch

    from vision_lens.models import load_clip_or_shapes
    from vision_lens.streaming import collect

    model, _ = load_clip_or_shapes(args.model_name, args.pretrained, device=args.device)
    dtype = None if args.dtype is None else getattr(torch, args.dtype)
    run = collect(
        model,
        args.images,
        args.what,
        args.out,
        batch_size=args.batch_size,
        dtype=dtype,
        overwrite=args.overwrite,
        progress=args.progress,
    )
    print(f"wrote {run.out} ({run.n_images} images: {', '.join(run.products)})")
    return 0


def _textspan(args: argparse.Namespace) -> int:
    from vision_lens.apps.pipelines import run_textspan

    result, paths = _call(run_textspan, args)
    print(f"TextSpan on {result.n_heads} heads ({result.meta['n_images']} images, m={result.m})")
    for path in paths:
        print(f"wrote {path}")
    return 0


def _ablate(args: argparse.Namespace) -> int:
    from vision_lens.apps.pipelines import run_ablate

    result, paths = _call(run_ablate, args)
    for row in result["rows"]:
        print(f"{row['accuracy']:7.1%}  {row['ablated']}")
    for path in paths:
        print(f"wrote {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# Option types: a bad value is refused by argparse, naming the option, before anything loads.


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, batch sizes)."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (seeds, layer indices, optional counts)."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def torch_device(text: str) -> str:
    """A torch device that exists on this machine: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    import torch

    hint = "use cpu, cuda, cuda:N or mps"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a torch device; {hint}") from None
    if device.type == "cpu":
        return text
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"{text!r}: CUDA is not available on this machine; use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
            )
        return text
    if device.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(
                f"{text!r}: MPS is not available on this machine; use --device cpu"
            )
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not supported; {hint}")


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line: ``<prog>: error: <message>``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_model_options(parser: argparse.ArgumentParser, batch_size: int) -> argparse.Action:
    """The options every sub-command shares (which CLIP, batch size, device); returns --model."""
    model = parser.add_argument(
        "--model",
        dest="model_name",
        metavar="MODEL",
        help="open_clip model name (default: the shipped shapes model)",
    )
    parser.add_argument("--pretrained", help="open_clip pretrained tag or checkpoint path")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size)
    parser.add_argument("--device", type=torch_device, default=None, help="torch device, e.g. cuda")
    parser.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,  # keeps a --debug given before the sub-command
        help="show the traceback of an error",
    )
    return model


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``vision-lens`` (one sub-command per job).

    Example:
        >>> args = build_parser().parse_args(["eval-seg", "--model", "ViT-B-16", "--quiet"])
        >>> args.model_name, args.progress, args.figure, args.batch_size
        ('ViT-B-16', False, True, 32)
    """
    parser = _Parser(
        prog="vision-lens",
        description="Mechanistic interpretability for CLIP vision transformers.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
    report = commands.add_parser(
        "report",
        help="write one HTML page of figures: direct effects, ablations, token heatmaps",
        description="Write a self-contained HTML report. With no arguments: the shipped shapes "
        "CLIP and generated scenes; --model shapes-vit: the shipped ViT read through CompAlign.",
    )
    report.add_argument(
        "--out", default="report.html", help="HTML file to write (its folder must exist)"
    )
    models = "open_clip name, or a non-CLIP ViT: shapes-vit, timm:NAME, hf:NAME (with --compalign)"
    _add_model_options(report, batch_size=64).help = models + " (default: the shapes CLIP)"
    report.add_argument("--compalign", metavar="DIR", help="CompAlign folder of a non-CLIP --model")
    report.add_argument("--clip-model", help="open_clip CLIP reading --compalign (default: shapes)")
    report.add_argument("--clip-pretrained", help="open_clip tag or checkpoint for --clip-model")
    report.add_argument("--images", help="folder of images (default: shapes-world scenes)")
    report.add_argument(
        "--texts", nargs="+", help="2 to 6 text queries for the heatmaps (with --images)"
    )
    report.add_argument(
        "--max-images", type=positive_int, help="images used from --images (default 8)"
    )
    report.set_defaults(run=_report, parser=report)

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
        "--n",
        type=positive_int,
        help="number of images (default: 500 shapes scenes / all ImageNet-seg)",
    )
    seg.add_argument(
        "--seed",
        type=non_negative_int,
        help=f"seed of the shapes scenes (default {SHAPES_SEED}; not with --imagenet-seg)",
    )
    seg.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to compare"
    )
    seg.add_argument(
        "--layers",
        nargs="+",
        type=non_negative_int,
        help="attention layers of our method (default: all)",
    )
    seg.add_argument(
        "--templates",
        choices=("openai", "simple"),
        help="ImageNet prompt templates for the class texts (default openai; with --imagenet-seg)",
    )
    seg.add_argument(
        "--class-source",
        choices=("predicted", "label"),
        help="ImageNet class per image: the model's zero-shot prediction (the reference "
        "protocol, the default) or the image's WordNet label (with --imagenet-seg)",
    )
    seg.add_argument(
        "--n-examples", type=non_negative_int, default=4, help="images in the example figure"
    )
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
    seg.set_defaults(run=_eval_seg, parser=seg)

    col = commands.add_parser(
        "collect",
        help="one resumable pass over a folder of images into shards: head, layer and token "
        "direct effects, the output, hook activations, head moments (vision_lens.streaming)",
        description="Run the model over a folder of images and write the named products into "
        "OUT/shard-*.safetensors with OUT/manifest.json. Rerunning the same command resumes.",
    )
    col.add_argument("--images", required=True, help="folder of images")
    col.add_argument(
        "--what",
        required=True,
        help="comma-separated products: heads, layers, tokens, embed, hook:<hook name>, "
        "head_moments, mean:<hook name>",
    )
    col.add_argument("--out", required=True, help="folder for the shards and the manifest")
    _add_model_options(col, batch_size=32)
    col.add_argument(
        "--dtype",
        choices=("float32", "float16", "bfloat16", "float64"),
        help="stored dtype of per-image products (default: the model's)",
    )
    col.add_argument("--overwrite", action="store_true", help="replace a collection in --out")
    col.add_argument("--quiet", dest="progress", action="store_false", help="no progress bar")
    col.set_defaults(run=_collect, parser=col)
    _add_pipelines(commands)
    return parser


def _add_forward_dtype(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        help="forward dtype of the model (default: the model's; statistics stay float64)",
    )
    parser.add_argument("--quiet", dest="progress", action="store_false", help="no progress bars")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="recompute the pass in OUT/collect (after changing --batch-size, --dtype, ...)",
    )


def _add_pipelines(commands: argparse._SubParsersAction) -> None:
    """``textspan`` and ``ablate``: one resumable ``collect`` pass, then a table
    (:mod:`vision_lens.apps.pipelines`)."""
    ts = commands.add_parser(
        "textspan",
        help="TextSpan on every head over a folder of images: the texts that span each head's "
        "direct effects (markdown, JSON, HTML)",
        description="Collect every head's direct-effect moments over --images into OUT/collect "
        "(rerunning resumes), then run TextSpan with a text pool on every head and write "
        "textspan.md, textspan.json and textspan.html into --out.",
    )
    ts.add_argument("--images", required=True, help="folder of images")
    ts.add_argument("--out", required=True, help="folder for the pass and the tables")
    ts.add_argument(
        "--pool",
        help="text pool: a shipped name (shapes, general) or a text file, one description a "
        "line (default: shapes for the shipped model, else general)",
    )
    ts.add_argument("--m", type=positive_int, default=10, help="texts per head (default 10)")
    ts.add_argument(
        "--rank",
        type=positive_int,
        default=80,
        help="project the texts on each head's top directions first (default 80)",
    )
    _add_model_options(ts, batch_size=32)
    _add_forward_dtype(ts)
    ts.set_defaults(run=_textspan, parser=ts)

    ab = commands.add_parser(
        "ablate",
        help="the mean-ablation table: zero-shot accuracy with all MLPs, or all attention "
        "layers but the last k, mean-ablated",
        description="Collect the layer direct effects of labelled images into OUT/collect "
        "(rerunning resumes), then write ablation.md and ablation.json into --out. Labels: one "
        "subfolder of --images per class, or --labels FILE of FILE,CLASS lines with --classes.",
    )
    ab.add_argument(
        "--images", required=True, help="folder with one subfolder per class (or with --labels)"
    )
    ab.add_argument("--out", required=True, help="folder for the pass and the table")
    ab.add_argument("--labels", help="text file of FILE,CLASS lines (FILE relative to --images)")
    ab.add_argument(
        "--classes",
        nargs="+",
        help="class texts, e.g. 'a photo of a dog' (default: the subfolder names)",
    )
    _add_model_options(ab, batch_size=32)
    _add_forward_dtype(ab)
    ab.set_defaults(run=_ablate, parser=ab)


# ---------------------------------------------------------------------------------------------
# Checks of option combinations, before any model or data loads.


def _check_model(model_name: str | None, pretrained: str | None) -> None:
    """Refuse an unknown or unconvertible ``--model`` and an unknown ``--pretrained`` before any
    weights load (open_clip itself raises a bare ``RuntimeError`` for them, after a while)."""
    if model_name is None:
        if pretrained is not None:
            raise CommandLineError(
                f"--pretrained needs --model (got --pretrained {pretrained!r} alone; the shipped "
                "shapes model has its own weights): add --model NAME or drop --pretrained"
            )
        return
    if model_name.startswith(("hf-hub:", "local-dir:")):
        return  # checked by open_clip when it reads them
    import open_clip

    from vision_lens.loading.open_clip import check_open_clip_config, check_pretrained_source

    if open_clip.get_model_config(model_name) is None:
        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=3, cutoff=0.5)
        hint = (
            f"did you mean {' or '.join(map(repr, close))}?"
            if close
            else "see open_clip.list_models() for the names"
        )
        raise CommandLineError(f"--model {model_name!r} is not an open_clip model; {hint}")
    try:
        check_open_clip_config(model_name)
    except errors.UnsupportedModelError as error:  # names why
        raise errors.UnsupportedModelError(f"--model {model_name!r}: {error}") from None
    try:
        check_pretrained_source(model_name, pretrained)
    except FileNotFoundError as error:  # lists the tags
        raise FileNotFoundError(f"--pretrained {error}") from None


def _check_options(args: argparse.Namespace) -> None:
    """Refuse options the command would otherwise ignore, and unknown models."""
    if args.subcommand == "report":
        if args.texts is not None and args.images is None:
            raise CommandLineError(
                f"--texts {' '.join(map(shlex.quote, args.texts))} needs --images (the shapes "
                "report picks its own texts): add --images FOLDER or drop --texts"
            )
        if args.max_images is not None and args.images is None:
            raise CommandLineError(
                f"--max-images {args.max_images} needs --images (the shapes report generates "
                "its scenes): add --images FOLDER or drop --max-images"
            )
        from vision_lens.apps.report_beyond import check_beyond_options

        if _call(check_beyond_options, args):
            return  # a non-CLIP --model read through CompAlign: checked there
    elif args.subcommand == "eval-seg":
        if args.imagenet_seg is None:
            for option, value in (
                ("--templates", args.templates),
                ("--class-source", args.class_source),
            ):
                if value is not None:
                    raise CommandLineError(
                        f"{option} {value} applies to ImageNet-segmentation only: add "
                        f"--imagenet-seg PATH or drop {option}"
                    )
        elif args.seed is not None:
            raise CommandLineError(
                f"--seed {args.seed} applies to the shapes scenes only, not to --imagenet-seg: "
                "drop --seed"
            )
    elif args.subcommand == "collect":
        _check_collect(args)
    elif args.subcommand in ("textspan", "ablate"):
        _check_pipeline(args)
    _check_model(args.model_name, args.pretrained)


def _check_collect(args: argparse.Namespace) -> None:
    """``vision-lens collect``: the folders and the product names, before any model loads."""
    from pathlib import Path

    from vision_lens.streaming.products import PER_IMAGE, PREFIXES, STATISTICS

    images, out = Path(args.images), Path(args.out)
    if not images.is_dir():
        kind = "is a file, not a folder" if images.exists() else "does not exist"
        raise FileNotFoundError(f"--images {args.images!r} {kind}; pass a folder of images")
    if out.exists() and not out.is_dir():
        raise CommandLineError(f"--out {args.out!r} is a file; pass a folder for the shards")
    existing = next(p for p in [out, *out.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise CommandLineError(f"--out {args.out!r} is inside the file {str(existing)!r}")
    if not os.access(existing, os.W_OK):
        raise CommandLineError(f"--out {args.out!r} cannot be written; pass a writable folder")
    names = [name.strip() for name in args.what.split(",") if name.strip()]
    if not names:
        raise CommandLineError("--what names no product; e.g. --what heads,embed,head_moments")
    known = [*PER_IMAGE, *STATISTICS]
    for name in names:
        if name.startswith(PREFIXES) or name in known:
            continue
        close = difflib.get_close_matches(name, known, n=2, cutoff=0.5)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise CommandLineError(
            f"--what {name!r} is not a product; {hint}choose from {', '.join(known)}, "
            "hook:<hook name>, mean:<hook name>"
        )


def _check_pipeline(args: argparse.Namespace) -> None:
    """``vision-lens textspan`` / ``ablate``: the folders, the pool or the labels, before any
    model loads."""
    from vision_lens.apps import pipelines

    if args.subcommand == "textspan":
        pipelines.check_images(args.images)
        pipelines.resolve_pool(args.pool, args.model_name)
    else:
        pipelines.ablation_data(args.images, args.classes, args.labels)
    pipelines.check_out(args.out)


# ---------------------------------------------------------------------------------------------
# The entry point


@contextmanager
def _one_line_warnings(prog: str) -> Iterator[None]:
    """Show the library's :class:`~vision_lens.errors.InputWarning` s as
    ``<prog>: warning: <message>`` lines (every one, not once per place)."""
    with warnings.catch_warnings():
        warnings.simplefilter("always", errors.InputWarning)
        default = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
            if issubclass(category, errors.InputWarning):
                print(f"{prog}: warning: {message}", file=sys.stderr)
            else:
                default(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def _one_line(error: BaseException) -> str:
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return "out of memory; lower --batch-size or use a smaller --model"
    text = " ".join(str(error).split())
    return text or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vision-lens`` console script; returns the exit code (0 done, 2 a
    mistake in the options' values or files, 130 interrupted). A malformed command line (an
    unknown option, a value of the wrong form) raises ``SystemExit(2)`` as argparse does."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    # A bad option exits here (SystemExit(2), after its one line), as argparse does.
    args, extra = parser.parse_known_args(argv)
    if args.subcommand is None:
        commands = next(a for a in parser._actions if a.dest == "subcommand").choices
        parser.error("choose a command: " + ", ".join(commands))
    if extra:
        args.parser.error(f"unrecognized arguments: {' '.join(map(shlex.quote, extra))}")
    args.command = " ".join(["vision-lens", *map(shlex.quote, argv)])  # recorded in results
    prog = f"vision-lens {args.subcommand}"
    try:
        with _one_line_warnings(prog):
            _check_options(args)
            return args.run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        import torch

        if args.debug or not isinstance(error, (*USER_ERRORS, torch.OutOfMemoryError)):
            raise
        print(f"{prog}: error: {_one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
