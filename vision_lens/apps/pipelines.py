"""Dataset-scale pipelines over :func:`~vision_lens.streaming.collect`: TextSpan on every head and
the paper's mean-ablation table, from one resumable pass over a folder of images.

``vision-lens textspan`` calls :func:`run_textspan`, ``vision-lens ablate`` calls
:func:`run_ablate`. Both write the pass into ``OUT/collect`` (shards and a manifest), so rerunning
the same command reuses it (a finished pass returns at once, an interrupted one continues), then
compute their tables from the stored products and write them into ``OUT``:

* :func:`run_textspan`: the ``"head_moments"`` statistic (float64 per-head sums of the direct
  effect and of its outer products), then
  :func:`~vision_lens.analysis.moments.textspan_from_moments` on every head with a text pool
  encoded by the CLIP text tower: ``textspan.md``, ``textspan.json``, ``textspan.html``.
* :func:`run_ablate`: the ``"layers"`` direct effects (stored float32) and the class labels; the
  mean of every component over the images (float64, summed shard by shard), then
  :func:`~vision_lens.analysis.ablation.mean_ablate` with ``means=`` per shard: zero-shot
  accuracy with all MLPs, or all attention layers except the last ``k`` (``k = 1..4``),
  mean-ablated (the paper's Figure 3 / Table 3 ablations): ``ablation.md``, ``ablation.json``.

``dtype`` is the *forward* dtype: the model's weights are cast to it before the pass
(``float16`` is meant for GPUs). Whatever it is, the statistics are float64 sums and the stored
direct effects of :func:`run_ablate` are float32, so only the forward pass runs in lower
precision.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vision_lens import models
from vision_lens.analysis.ablation import mean_ablate
from vision_lens.analysis.moments import HeadMoments, textspan_from_moments
from vision_lens.analysis.textspan_result import TextSpanResult
from vision_lens.streaming import collect
from vision_lens.streaming.data import IMAGE_SUFFIXES
from vision_lens.text_pools import list_text_pools, text_pool

__all__ = [
    "DTYPES",
    "LabeledImages",
    "ablation_data",
    "check_images",
    "check_out",
    "resolve_pool",
    "run_ablate",
    "run_textspan",
]

#: The forward dtypes the pipelines accept, by name.
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: The pool of the shipped shapes model when none is named (other models: ``"general"``).
SHAPES_POOL = "shapes"

#: Attention layers kept (the last ``k``) in the ablation table.
KEEP_LAST = (1, 2, 3, 4)


# ------------------------------------------------------------------ checks (before any model)
def check_out(out: str | os.PathLike) -> Path:
    """``out`` as a :class:`~pathlib.Path` if the results can be written into it (it may not
    exist yet).

    Raises:
        NotADirectoryError: It is a file, or inside one.
        PermissionError: It cannot be written.

    Example:
        >>> check_out(tempfile.gettempdir()).is_dir()
        True
    """
    path = Path(out)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == path else f"is inside the file {str(existing)!r}"
        raise NotADirectoryError(f"--out {str(out)!r} {what}; pass a folder for the results.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise PermissionError(
            f"--out {str(out)!r} cannot be written ({error.strerror or error}); pass a writable "
            "folder."
        ) from None
    return path


def check_images(images: str | os.PathLike) -> Path:
    """``images`` as a :class:`~pathlib.Path` if it is a folder.

    Raises:
        FileNotFoundError: It does not exist or is a file.
    """
    path = Path(images)
    if not path.is_dir():
        kind = "is a file, not a folder" if path.exists() else "does not exist"
        raise FileNotFoundError(f"--images {str(images)!r} {kind}; pass a folder of images")
    return path


def resolve_pool(pool: str | os.PathLike | None, model_name: str | None = None) -> list[str]:
    """The texts of ``pool``: a text file (one description a line; blank lines and ``#``
    comments skipped, duplicates dropped) or a shipped pool's name
    (:func:`~vision_lens.text_pools.list_text_pools`). ``None``: ``"shapes"`` for the shipped
    shapes model (``model_name`` ``None``), else ``"general"``.

    Raises:
        ValueError: An unknown pool name (listing the shipped ones) or an empty file.

    Example:
        >>> resolve_pool(None)[:2]
        ['a red object', 'a red shape']
    """
    if pool is None:
        pool = SHAPES_POOL if model_name is None else "general"
    path = Path(pool)
    if path.is_file():
        seen: dict[str, None] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                seen.setdefault(line, None)
        if not seen:
            raise ValueError(f"--pool file {str(pool)!r} holds no text (one description a line)")
        return list(seen)
    if str(pool) not in list_text_pools():
        raise FileNotFoundError(
            f"--pool {str(pool)!r} is neither a file nor a shipped pool; pass a text file (one "
            f"description a line) or one of {', '.join(list_text_pools())}"
        )
    return text_pool(str(pool))


def _forward_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ValueError(f"--dtype {dtype!r}: choose from {', '.join(DTYPES)}")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class LabeledImages(torch.utils.data.Dataset):
    """Image files with an integer label each: items ``(PIL image, label)`` (read lazily; the
    collection pass converts them to RGB and preprocesses them)."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int]):
        self.files, self.labels = list(files), [int(label) for label in labels]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        from PIL import Image

        try:
            with Image.open(self.files[index]) as image:
                image.load()
                return image.copy(), self.labels[index]
        except OSError as error:
            raise OSError(f"cannot read image {str(self.files[index])!r}: {error}") from None


def ablation_data(
    images: str | os.PathLike,
    classes: Sequence[str] | None = None,
    labels: str | os.PathLike | None = None,
) -> tuple[LabeledImages, list[str]]:
    """The labelled images and the class texts of :func:`run_ablate`.

    * ``labels`` given: a text file of ``FILE,CLASS`` lines (a comma or a tab between them;
      ``FILE`` relative to ``images``; ``CLASS`` a class index or one of ``classes``), with
      ``classes`` the class texts.
    * Otherwise ``images`` holds one subfolder per class (sorted by name); ``classes`` gives
      their texts in that order (default: the folder names, ``_`` read as a space).

    Raises:
        FileNotFoundError: ``images`` or ``labels`` missing, or a file a label names.
        ValueError: No labels (neither ``labels`` nor class subfolders), fewer than 2 classes,
            texts that do not match the subfolders, an unknown class in the labels file, or no
            image.
    """
    folder = check_images(images)
    classes = None if classes is None else [str(c) for c in classes]
    if labels is not None:
        path = Path(labels)
        if not path.is_file():
            raise FileNotFoundError(
                f"--labels {str(labels)!r} does not exist; pass a text file of FILE,CLASS lines"
            )
        if not classes:
            raise ValueError("--labels needs --classes (the class texts, in label order)")
        files, targets = [], []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, cls = line.replace("\t", ",").rpartition(",")
            name, cls = name.strip(), cls.strip()
            if not sep or not name:
                raise ValueError(
                    f"--labels {str(labels)!r} line {number} is not FILE,CLASS: {line!r}"
                )
            if cls in classes:
                target = classes.index(cls)
            elif cls.isdigit() and int(cls) < len(classes):
                target = int(cls)
            else:
                raise ValueError(
                    f"--labels line {number}: class {cls!r} is neither one of --classes nor an "
                    f"index below {len(classes)}"
                )
            file = folder / name
            if not file.is_file():
                raise FileNotFoundError(f"--labels line {number}: image {str(file)!r} not found")
            files.append(file)
            targets.append(target)
    else:
        subfolders = sorted(p for p in folder.iterdir() if p.is_dir())
        if not subfolders:
            raise ValueError(
                f"--images {str(images)!r} has no class subfolders; put each class's images in "
                "a subfolder (its name is the class text) or pass --labels FILE --classes TEXTS"
            )
        if classes is None:
            classes = [p.name.replace("_", " ") for p in subfolders]
        elif len(classes) != len(subfolders):
            raise ValueError(
                f"--classes gives {len(classes)} texts for {len(subfolders)} class subfolders "
                f"({', '.join(p.name for p in subfolders)}); give one per subfolder, in that order"
            )
        files, targets = [], []
        for target, sub in enumerate(subfolders):
            found = _image_files(sub)
            files.extend(found)
            targets.extend([target] * len(found))
    if len(classes) < 2:
        raise ValueError(f"zero-shot accuracy needs at least 2 classes, got {classes}")
    if not files:
        raise ValueError(f"no image ({', '.join(IMAGE_SUFFIXES)}) found under {str(images)!r}")
    return LabeledImages(files, targets), classes


# ------------------------------------------------------------------ shared
def _load(
    model_name: str | None, pretrained: str | None, device: str | None, dtype: torch.dtype | None
) -> tuple[Any, Any]:
    model, clip = models.load_clip_or_shapes(model_name, pretrained, device=device)
    if dtype is not None:
        model = model.to(dtype)
    return model.eval(), clip.eval()


def _encode(clip: Any, texts: Sequence[str]) -> Tensor:
    with torch.no_grad():
        return clip.encode(list(texts)).detach().to("cpu", torch.float64)


def _config(
    images: str | os.PathLike,
    model_name: str | None,
    pretrained: str | None,
    dtype: torch.dtype | None,
    batch_size: int,
    device: str | None,
    command: str | None,
) -> dict[str, Any]:
    return {
        "images": str(images),
        "model": model_name or "shapes-clip (shipped)",
        "pretrained": pretrained,
        "forward_dtype": None if dtype is None else str(dtype).removeprefix("torch."),
        "batch_size": batch_size,
        "device": device,
        "command": command,
    }


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ textspan
def run_textspan(
    images: str | os.PathLike,
    out: str | os.PathLike,
    *,
    pool: str | os.PathLike | None = None,
    m: int = 10,
    rank: int | None = 80,
    model_name: str | None = None,
    pretrained: str | None = None,
    batch_size: int = 32,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> tuple[TextSpanResult, list[Path]]:
    """TextSpan on every head over a folder of images, in one resumable pass.

    Args:
        images: Folder of images.
        out: Results folder: the pass goes into ``out/collect``; ``textspan.md``,
            ``textspan.json`` and ``textspan.html`` into ``out``.
        pool: A text file or a shipped pool name (see :func:`resolve_pool`).
        m: Texts per head.
        rank: Project the texts on the top-``rank`` directions of each head first (``None``:
            no projection).
        model_name: open_clip model name (default: the shipped shapes model).
        pretrained: Its pretrained tag or checkpoint (with ``model_name``).
        batch_size: Images per forward pass.
        device: Where the model runs.
        dtype: Forward dtype (``"float32"``, ``"bfloat16"``, ``"float16"``; default the
            model's); the moments are float64 sums either way.
        overwrite: Recompute the pass instead of resuming the one in ``out/collect``.
        progress: Show progress bars.
        command: The command line, recorded in the JSON.

    Returns:
        The :class:`~vision_lens.analysis.textspan_result.TextSpanResult` (one row per head) and
        the written paths.
    """
    folder = check_images(images)
    out = check_out(out)
    texts = resolve_pool(pool, model_name)
    forward = _forward_dtype(dtype)
    model, clip = _load(model_name, pretrained, device, forward)
    run = collect(
        model,
        folder,
        ["head_moments"],
        out / "collect",
        batch_size=batch_size,
        overwrite=overwrite,
        progress=progress,
    )
    stats = run.head_moments()
    n_layers, n_heads, d = stats["sum"].shape
    moments = HeadMoments(
        int(stats["count"].flatten()[0]),
        stats["sum"].reshape(n_layers * n_heads, d),
        stats["outer"].reshape(n_layers * n_heads, d, d),
    )
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    result = textspan_from_moments(
        moments, _encode(clip, texts), m, rank, texts=texts, heads=heads, progress=progress
    )
    config = {
        **_config(folder, model_name, pretrained, forward, batch_size, device, command),
        "pool": str(pool)
        if pool is not None
        else (SHAPES_POOL if model_name is None else "general"),
        "n_texts": len(texts),
        "n_images": moments.count,
        "m": result.m,
        "rank": rank,
    }
    header = (
        f"# TextSpan: {n_layers * n_heads} heads, {moments.count} images\n\n"
        f"Model {config['model']}, images `{folder}`, pool {config['pool']} "
        f"({len(texts)} texts), m={result.m}, rank={rank}. Explained: the fraction of each "
        "head's variance over the images that its m texts explain.\n\n"
    )
    paths = [
        _write(out / "textspan.md", header + result.to_markdown(top=result.m)),
        _write(
            out / "textspan.json",
            json.dumps({"config": config, **result.to_dict()}, indent=2) + "\n",
        ),
        _write(out / "textspan.html", _textspan_html(result, config)),
    ]
    return result, paths


def _textspan_html(result: TextSpanResult, config: dict[str, Any]) -> str:
    """One self-contained page: per head its explained fraction and its texts in order, each
    with the cumulative fraction explained after it."""
    fraction = result.explained_fraction
    rows = []
    for h in range(result.n_heads):
        items = "".join(
            f"<li>{html.escape(str(result.texts[i]) if result.texts else str(i))} "
            f"<span class=f>{float(fraction[h, k]):.1%}</span></li>"
            for k, i in enumerate(result.indices[h].tolist())
        )
        rows.append(
            f"<tr><td>{html.escape(result.label(h))}</td><td>{float(fraction[h, -1]):.1%}</td>"
            f"<td><ol>{items}</ol></td></tr>"
        )
    title = f"TextSpan: {result.n_heads} heads, {config['n_images']} images"
    details = html.escape(
        f"model {config['model']}, images {config['images']}, pool {config['pool']} "
        f"({config['n_texts']} texts), m={config['m']}, rank={config['rank']}"
    )
    return (
        "<!doctype html>\n<html><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}"
        "ol{margin:0;padding-left:1.5em}.f{color:#888;font-size:smaller}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{details}. Explained: the cumulative fraction of the "
        "head's variance over the images explained by its texts up to that one.</p>"
        "<table><tr><th>head</th><th>explained</th><th>texts (in TextSpan order)</th></tr>"
        + "".join(rows)
        + "</table></body></html>\n"
    )


# ------------------------------------------------------------------ ablation
def _ablations(labels: Sequence[str]) -> list[tuple[str, list[int]]]:
    """``(name, component indices)`` of every row of the table."""
    attn = [i for i, name in enumerate(labels) if name.endswith("_attn")]
    mlp = [i for i, name in enumerate(labels) if name.endswith("_mlp")]
    rows = [("nothing", []), ("all MLPs", mlp)]
    for k in KEEP_LAST:
        if k < len(attn):
            rows.append((f"all attention layers except the last {k}", attn[:-k]))
    k = max([k for k in KEEP_LAST if k < len(attn)], default=0)
    if k:
        rows.append((f"all MLPs + all attention layers except the last {k}", mlp + attn[:-k]))
    return rows


def run_ablate(
    images: str | os.PathLike,
    out: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    labels: str | os.PathLike | None = None,
    model_name: str | None = None,
    pretrained: str | None = None,
    batch_size: int = 32,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> tuple[dict[str, Any], list[Path]]:
    """The paper's mean-ablation table: zero-shot accuracy with all MLPs, or all attention
    layers except the last ``k``, replaced by their mean direct effect over the images.

    Args:
        images: One subfolder of images per class, or a folder with ``labels``
            (see :func:`ablation_data`).
        out: Results folder: the pass goes into ``out/collect``; ``ablation.md`` and
            ``ablation.json`` into ``out``.
        classes: The class texts (prompts as given, e.g. ``"a photo of a dog"``).
        labels: A ``FILE,CLASS`` file (with a flat ``images`` folder).
        model_name: open_clip model name (default: the shipped shapes model).
        pretrained: Its pretrained tag or checkpoint (with ``model_name``).
        batch_size: Images per forward pass.
        device: Where the model runs.
        dtype: Forward dtype (default the model's); the direct effects are stored float32 and
            the means summed in float64.
        overwrite: Recompute the pass instead of resuming the one in ``out/collect``.
        progress: Show a progress bar.
        command: The command line, recorded in the JSON.

    Returns:
        ``{"config", "classes", "n_images", "components", "rows": [{"ablated", "components",
        "accuracy"}]}`` and the written paths.
    """
    data, class_texts = ablation_data(images, classes, labels)
    out = check_out(out)
    forward = _forward_dtype(dtype)
    model, clip = _load(model_name, pretrained, device, forward)
    run = collect(
        model,
        data,
        ["layers", "labels"],
        out / "collect",
        batch_size=batch_size,
        dtype=torch.float32,
        overwrite=overwrite,
        progress=progress,
    )
    components = run.layer_labels
    weights = _encode(clip, class_texts)
    total = torch.zeros(len(components), weights.shape[1], dtype=torch.float64)
    for block in run["layers"].iter_shards():  # [b, component, d]
        total += block.to(torch.float64).sum(0)
    means = total / run.n_images
    ablations = _ablations(components)
    correct = [0] * len(ablations)
    for block, truth in zip(run["layers"].iter_shards(), run["labels"].iter_shards(), strict=True):
        terms = block.to(torch.float64).transpose(0, 1)  # [component, b, d]
        for row, (_, ablate) in enumerate(ablations):
            predicted = (mean_ablate(terms, ablate, means=means) @ weights.T).argmax(-1)
            correct[row] += int((predicted == truth).sum())
    n = run.n_images
    result = {
        "config": _config(images, model_name, pretrained, forward, batch_size, device, command),
        "classes": class_texts,
        "n_images": n,
        "components": components,
        "means": "each ablated component's mean direct effect over these images",
        "rows": [
            {
                "ablated": name,
                "components": [components[i] for i in ablate],
                "accuracy": correct[row] / n,
            }
            for row, (name, ablate) in enumerate(ablations)
        ],
    }
    lines = [
        f"# Mean-ablation: zero-shot accuracy, {n} images, {len(class_texts)} classes\n",
        f"Model {result['config']['model']}, images `{images}`. Each ablated component's direct "
        "effect is replaced by its mean over these images.\n",
        "| mean-ablated | components | accuracy |",
        "| --- | ---: | ---: |",
    ]
    for row in result["rows"]:
        lines.append(f"| {row['ablated']} | {len(row['components'])} | {row['accuracy']:.1%} |")
    paths = [
        _write(out / "ablation.md", "\n".join(lines) + "\n"),
        _write(out / "ablation.json", json.dumps(result, indent=2) + "\n"),
    ]
    return result, paths
