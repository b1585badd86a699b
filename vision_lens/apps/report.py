"""The main job: one self-contained HTML page that shows what a CLIP ViT's components do.

``vision-lens report`` calls :func:`write_report`. On the shipped shapes model it needs no
arguments; with ``--model``/``--pretrained``/``--images`` it runs on any supported open_clip model
and the user's own images.
"""

from __future__ import annotations

import base64
import html
import io
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import plotly.graph_objects as go
import torch
from torch import Tensor

from vision_lens import plot
from vision_lens.analysis.ablation import cumulative_attention_ablation
from vision_lens.analysis.batched import decompose_dataset
from vision_lens.analysis.segmentation import segment
from vision_lens.errors import InputWarning
from vision_lens.protocols import TextEncoder
from vision_lens.utils.checks import check_batch_size

if TYPE_CHECKING:
    from PIL.Image import Image

    from vision_lens.hooked_vit import HookedViT

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


@dataclass
class ClassificationTask:
    """A zero-shot task for the ablation curve: images, class prompts and true labels."""

    name: str
    images: Tensor  # [N, 3, H, W], preprocessed
    class_texts: list[str]
    labels: Tensor  # [N]


@dataclass
class ReportInputs:
    """What a report shows: display scenes with heatmap queries, and tasks for the ablation."""

    title: str
    display_images: list[Image]  # shown with heatmaps
    queries: list[str]  # heatmap text queries
    reference_texts: list[str]  # their mean heatmap is subtracted (the paper's footnote)
    tasks: list[ClassificationTask] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def load_image_folder(folder: str | Path, max_images: int | None = None) -> list[Image]:
    """Load the images of a folder (sorted by name) as RGB PIL images.

    Unreadable files (not an image, truncated, a decompression bomb, a folder named like an
    image) are skipped and named in one :class:`~vision_lens.errors.InputWarning`; 16-bit images
    are scaled to 8 bits. At most ``max_images`` readable images are returned.

    Raises:
        FileNotFoundError: The folder does not exist.
        NotADirectoryError: It is a file.
        ValueError: It holds no image files, none is readable, or ``max_images < 1``.
    """
    path = Path(_check_path(folder, "--images"))
    if max_images is not None:
        _check_max_images(max_images)
    if not path.exists():
        raise FileNotFoundError(
            f"--images {str(folder)!r} does not exist; pass a folder of image files."
        )
    if not path.is_dir():
        raise NotADirectoryError(
            f"--images {str(folder)!r} is a file, not a folder; pass the folder that holds the "
            f"images (e.g. {str(path.parent)!r})."
        )
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(
            f"No images ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}; point --images at a "
            "folder of image files."
        )
    images: list[Image] = []
    skipped: list[str] = []
    tried = 0
    for file in files:
        if max_images is not None and len(images) >= max_images:
            break
        tried += 1
        try:
            images.append(_read_image(file))
        except _UNREADABLE as error:
            skipped.append(f"{file.name} ({_unreadable_reason(error)})")
    if not images:
        raise ValueError(
            f"None of the {tried} image files in --images {str(folder)!r} could be read: "
            f"{', '.join(skipped)}."
        )
    if skipped:
        warnings.warn(
            f"skipped {len(skipped)} of {tried} images: {', '.join(skipped)}",
            InputWarning,
            stacklevel=2,
        )
    return images


def _check_path(path: object, option: str) -> str | Path:
    if not isinstance(path, str | Path):
        raise TypeError(
            f"{option} must be a path (str or Path), got {type(path).__name__} {path!r}."
        )
    if not str(path).strip():
        raise ValueError(f"{option} is an empty path; pass a file or folder name.")
    return path


def _check_max_images(max_images: object) -> int:
    if isinstance(max_images, bool) or not isinstance(max_images, int | np.integer):
        raise TypeError(
            f"--max-images must be an integer >= 1, got {type(max_images).__name__} {max_images!r}."
        )
    if max_images < 1:
        raise ValueError(f"--max-images must be at least 1, got {max_images!r}.")
    return int(max_images)


def _unreadable() -> tuple[type[BaseException], ...]:
    import struct

    from PIL import Image

    # PIL's decoders raise all of these for broken files.
    bombs = (Image.DecompressionBombError, Image.DecompressionBombWarning)
    return (OSError, ValueError, SyntaxError, EOFError, struct.error, *bombs)


_UNREADABLE = _unreadable()


def _unreadable_reason(error: BaseException) -> str:
    from PIL import Image, UnidentifiedImageError

    if isinstance(error, UnidentifiedImageError):
        return "cannot identify image file"
    if isinstance(error, IsADirectoryError):
        return "a folder, not a file"
    if isinstance(error, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return "too many pixels, a possible decompression bomb"
    return " ".join(str(error).split()) or type(error).__name__


def _read_image(file: Path) -> Image:
    """One image file as an 8-bit RGB PIL image (16-bit and float images scaled, not clipped)."""
    from PIL import Image

    if file.is_dir():
        raise IsADirectoryError(str(file))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(file) as image:
            image.load()
            return _to_rgb(image)


def _to_rgb(image: Image) -> Image:
    from PIL import Image as PILImage

    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # convert("RGB") clips these to 255 (a 16-bit image turns white): scale to 8 bits.
        values = np.asarray(image).astype(np.float64)
        if image.mode.startswith("I;16") or (image.mode == "I" and values.max() > 255):
            values = values / 257.0  # 0..65535 -> 0..255
        elif image.mode == "F" and values.size and values.max() <= 1.0:
            values = values * 255.0  # floats in 0..1
        gray = np.clip(np.round(values), 0, 255).astype(np.uint8)
        return PILImage.fromarray(gray).convert("RGB")
    return image.convert("RGB")


def check_output_file(out: str | Path) -> Path:
    """``out`` as a :class:`~pathlib.Path` if the report can be written there, checked before
    any work: not a folder, in an existing folder, writable.

    Raises:
        IsADirectoryError, FileNotFoundError, NotADirectoryError, PermissionError: It cannot.
    """
    path = Path(_check_path(out, "--out"))
    name = str(out)
    if path.is_dir():
        raise IsADirectoryError(
            f"--out {name!r} is a folder; pass a file name such as {str(path / 'report.html')!r}."
        )
    parent = path.parent
    if not parent.exists():
        raise FileNotFoundError(
            f"--out {name!r}: folder {str(parent)!r} does not exist; create it first or pick "
            "another path."
        )
    if not parent.is_dir():
        raise NotADirectoryError(f"--out {name!r}: {str(parent)!r} is a file, not a folder.")
    try:
        if path.exists():
            with path.open("a", encoding="utf-8"):
                pass  # writable; the contents stay as they are until the report replaces them
        else:
            with tempfile.TemporaryFile(dir=parent):
                pass
    except OSError as error:
        raise PermissionError(
            f"--out {name!r} cannot be written ({error.strerror or error}); pick a writable path."
        ) from None
    return path


def preprocess_images(model: HookedViT, images: Sequence[Image]) -> Tensor:
    """Stack ``model.preprocess(image)`` for PIL images into ``[N, 3, H, W]``."""
    if model.preprocess is None:
        raise ValueError("This model has no preprocess transform; pass tensors instead.")
    images = list(images)
    if not images:
        raise ValueError("No images to preprocess: pass at least one PIL image.")
    from PIL.Image import Image as PILImage

    for i, image in enumerate(images):
        if not isinstance(image, PILImage):
            raise TypeError(
                f"images[{i}] must be a PIL image (e.g. from load_image_folder), got "
                f"{type(image).__name__}."
            )
    return torch.stack([model.preprocess(image) for image in images])


def shapes_inputs(
    model: HookedViT, n_display: int = 6, n_eval: int = 300, seed: int = 2024
) -> ReportInputs:
    """Report inputs from the shapes world: multi-object scenes for heatmaps, single-object scenes
    for colour/shape/position zero-shot tasks."""
    from vision_lens import shapes

    for name, value in (("n_display", n_display), ("n_eval", n_eval)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(
                f"{name} must be an integer >= 1, got {type(value).__name__} {value!r}."
            )
        if value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")
    display = shapes.generate(n_display, seed=seed, n_objects=(1, 3))
    queries: list[str] = []
    for attrs in display.attributes:
        for text in (
            shapes.with_article(f"{attrs[0]['color']} object"),
            shapes.with_article(attrs[0]["shape"]),
        ):
            if text not in queries:
                queries.append(text)
    evaluation = shapes.generate(n_eval, seed=seed + 1, n_objects=1)
    eval_images = preprocess_images(model, [evaluation.to_pil(i) for i in range(len(evaluation))])
    tasks = [
        ClassificationTask(
            name=attribute,
            images=eval_images,
            class_texts=shapes.prompts(attribute),
            labels=torch.as_tensor(shapes.labels(evaluation, attribute)),
        )
        for attribute in ("color", "shape", "position")
    ]
    return ReportInputs(
        title="vision_lens report",
        display_images=[display.to_pil(i) for i in range(len(display))],
        queries=queries[:4],
        reference_texts=shapes.prompts("color") + shapes.prompts("shape"),
        tasks=tasks,
        notes=[
            f"Heatmaps on {n_display} shapes-world scenes (seed {seed}); ablations on {n_eval} "
            f"held-out single-object scenes (seed {seed + 1}), zero-shot prompts "
            "'a {colour} object', 'a {shape}', 'an object in the {position}'."
        ],
    )


def folder_inputs(model: HookedViT, images: list[Image], texts: Sequence[str]) -> ReportInputs:
    """Report inputs for a user's images: heatmaps for ``texts``, and a label-free ablation task
    (agreement with the full model's zero-shot choice among ``texts``)."""
    _check_texts(texts)
    images = list(images)
    if not images:
        raise ValueError("images is empty: pass at least one PIL image (see load_image_folder).")
    return ReportInputs(
        title="vision_lens report",
        display_images=images[:8],
        queries=list(texts)[:6],
        reference_texts=list(texts),
        tasks=[
            ClassificationTask(
                name="agreement with the full model",
                images=preprocess_images(model, images),
                class_texts=list(texts),
                labels=torch.empty(0, dtype=torch.long),  # filled from the full model
            )
        ],
        notes=[
            f"{len(images)} user images. With no labels, the ablation curve shows how often the "
            "ablated embedding picks the same text as the full model."
        ],
    )


def figure_html(fig: go.Figure, first: bool) -> str:
    """A figure as an HTML fragment (the ``first`` one carries plotly.js: the page is offline).

    Example:
        >>> figure_html(go.Figure(), first=False).startswith("<div")
        True
    """
    return fig.to_html(full_html=False, include_plotlyjs=True if first else False)


def image_tag(image: Image, width: int = 128) -> str:
    """An ``<img>`` tag holding ``image`` as an inline PNG, upscaled without smoothing.

    Example:
        >>> from PIL import Image
        >>> image_tag(Image.new("RGB", (4, 4)))[:32]
        '<img src="data:image/png;base64,'
    """
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    style = "image-rendering:pixelated"
    return f'<img src="data:image/png;base64,{data}" width="{width}" style="{style}">'


@torch.no_grad()
def build_report(
    model: HookedViT,
    clip: TextEncoder,
    inputs: ReportInputs,
    batch_size: int = 64,
    progress: bool = True,
) -> str:
    """Compute every figure of the report and return the HTML page.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        clip: The matching :class:`vision_lens.CLIPText`.
        inputs: What to show (see :func:`shapes_inputs`, :func:`folder_inputs`).
        batch_size: Images per forward pass.
        progress: Show progress bars.

    Returns:
        A self-contained HTML page (plotly.js inline).
    """
    figures: list[tuple[str, str, go.Figure]] = []
    display = preprocess_images(model, inputs.display_images)

    # Direct effects of layers and heads, over the task images (more images, steadier means).
    base = inputs.tasks[0].images if inputs.tasks else display
    overview = decompose_dataset(model, base, heads=True, batch_size=batch_size, progress=progress)
    figures.append(
        (
            "Direct effect of each layer",
            "Mean norm of each component's direct contribution to the image embedding, and its "
            "mean projection on the (unit) embedding; the components sum exactly to the embedding.",
            plot.layer_contributions(
                overview["layers"], overview["labels"], overview["image_embed"]
            ),
        )
    )

    # Cumulative mean-ablation of attention layers (the paper's Figure 3).
    curves = {}
    for task in inputs.tasks:
        weights = clip.zero_shot_weights(task.class_texts, ["{}"]).to(overview["image_embed"])
        if task.images is base:
            terms, labels = overview["layers"], overview["labels"]
        else:
            out = decompose_dataset(model, task.images, batch_size=batch_size, progress=progress)
            terms, labels = out["layers"], out["labels"]
        truth = task.labels
        if truth.numel() == 0:
            truth = (terms.sum(0) @ weights.T).argmax(-1)
        curves[task.name] = cumulative_attention_ablation(terms, labels, weights, truth)
    if curves:
        x = ["none"] + [f"0..{layer}" for layer in range(model.cfg.n_layers)]
        figures.append(
            (
                "Mean-ablating attention layers, cumulatively",
                "Zero-shot accuracy when the direct effects of attention layers 0..l are replaced "
                "by their means over the images (the paper's Figure 3).",
                plot.line_chart(
                    curves, x, xaxis_title="attention layers mean-ablated", yaxis_title="accuracy"
                ),
            )
        )

    head_norms = overview["heads"].norm(dim=-1).mean(0)
    figures.append(
        (
            "Direct effect of each head",
            "Mean norm of each attention head's direct contribution to the image embedding.",
            plot.head_grid(head_norms, title="mean direct-effect norm"),
        )
    )

    # Token heatmaps on the patch grid, minus the mean heatmap over the reference texts.
    scores = segment(
        model,
        clip,
        display,
        inputs.queries,
        inputs.reference_texts,
        batch_size=batch_size,
        upsample=False,
    )
    figures.append(
        (
            "Where each text is found",
            "Each patch's direct contribution (all attention layers and heads) dotted with the "
            "text embedding, minus the mean over the reference texts; red = towards the text.",
            plot.token_heatmap_grid(inputs.display_images, scores, inputs.queries),
        )
    )
    return render_page(model, inputs.title, inputs.notes, inputs.display_images, figures)


def render_page(
    model: HookedViT,
    title: str,
    notes: Sequence[str],
    images: Sequence[Image],
    sections: Sequence[tuple[str, str, go.Figure | str]],
) -> str:
    """The report page: a title, the model's summary, ``notes``, the ``images`` and one
    ``(heading, text, body)`` section each (``body``: a figure, or an HTML fragment).

    Example:
        >>> import vision_lens as vl
        >>> page = render_page(vl.HookedViT(vl.HookedViTConfig.tiny()), "t", [], [], [])
        >>> page.startswith("<!DOCTYPE html>")
        True
    """
    cfg = model.cfg
    summary = (
        f"{html.escape(cfg.model_name)}: {cfg.n_layers} layers x {cfg.n_heads} heads, d_model "
        f"{cfg.d_model}, d_embed {cfg.d_embed}, {cfg.image_size[0]}x{cfg.image_size[1]} px, "
        f"patch {cfg.patch_size[0]}"
    )
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "section{margin-bottom:2em}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p>{summary}</p>",
        *[f"<p>{html.escape(note)}</p>" for note in notes],
        "<section><h2>Scenes</h2>",
        *[image_tag(image) for image in images],
        "</section>",
    ]
    first = True  # the first figure carries plotly.js
    for heading, text, body in sections:
        if not isinstance(body, str):
            body, first = figure_html(body, first), False
        parts += [f"<section><h2>{html.escape(heading)}</h2><p>{html.escape(text)}</p>", body]
        parts.append("</section>")
    return "\n".join([*parts, "</body></html>"])


def write_report(
    out: str | Path,
    model_name: str | None = None,
    pretrained: str | None = None,
    images: str | Path | None = None,
    texts: Sequence[str] | None = None,
    max_images: int = 8,
    batch_size: int = 64,
    device: str | None = None,
    progress: bool = True,
    compalign: str | Path | None = None,
    clip_model: str | None = None,
    clip_pretrained: str | None = None,
) -> Path:
    """Load a model, compute the report and write it to ``out``.

    Args:
        out: HTML file to write.
        model_name: open_clip model name (default the shipped shapes model), or a non-CLIP ViT
            read through ``compalign``: ``"shapes-vit"``, ``"timm:NAME"``, ``"hf:NAME"``.
        pretrained: open_clip tag or checkpoint path for ``model_name``.
        images: Folder of images; default shapes-world scenes.
        texts: Heatmap texts for ``images`` (default: a few generic descriptions).
        max_images: At most this many images from ``images``.
        batch_size: Images per forward pass.
        device: Torch device.
        progress: Show progress bars.
        compalign: CompAlign folder of a non-CLIP ``model_name``.
        clip_model: open_clip model whose text tower reads it (default: the shapes CLIP).
        clip_pretrained: open_clip tag or checkpoint path for ``clip_model``.

    Returns:
        The path written.

    Example:
        >>> write_report("report.html")  # the shipped shapes model  # doctest: +SKIP
    """
    from vision_lens.apps.report_beyond import check_beyond_options, write_beyond_report
    from vision_lens.models import load_clip_or_shapes
    from vision_lens.shapes.pretrained import check_device

    # Every check that needs no model comes first: a mistake costs no model load.
    check_batch_size(batch_size)
    _check_path(out, "--out")
    for option, value in (("--model", model_name), ("--pretrained", pretrained)):
        if value is not None and not isinstance(value, str | Path):
            raise TypeError(
                f"{option} must be a string or None, got {type(value).__name__} {value!r}."
            )
    if images is not None:
        _check_path(images, "--images")
    _check_max_images(max_images)
    if not isinstance(progress, bool):
        raise TypeError(
            f"progress must be True or False, got {type(progress).__name__} {progress!r}."
        )
    check_device(device)
    if images is None and texts is not None:
        raise ValueError(
            "--texts needs --images (the shapes report picks its own texts): add --images "
            "FOLDER or drop --texts."
        )
    if texts is not None:
        _check_texts(texts)
    out = check_output_file(out)
    beyond = (model_name, pretrained, compalign, clip_model, clip_pretrained)
    if check_beyond_options(*beyond, images=images, texts=texts):  # a non-CLIP model
        kwargs = dict(max_images=max_images, batch_size=batch_size, device=device)
        return write_beyond_report(out, *beyond, images, texts, **kwargs, progress=progress)
    if images is not None:
        user_images = load_image_folder(images, max_images)
    if model_name is None and pretrained is not None:
        raise ValueError("--pretrained needs --model (the shapes model has its own weights).")
    model, clip = load_clip_or_shapes(model_name, pretrained, device=device)
    if images is None:
        inputs = shapes_inputs(model)
    else:
        inputs = folder_inputs(model, user_images, texts or DEFAULT_TEXTS)
    page = build_report(model, clip, inputs, batch_size=batch_size, progress=progress)
    out.write_text(page, encoding="utf-8")
    return out


MAX_TEXTS = 6  # heatmap columns


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str | bytes) or not isinstance(texts, Sequence):
        hint = f" (a single string would be read letter by letter; pass [{texts!r}, ...])."
        end = hint if isinstance(texts, str) else "."
        raise TypeError(
            f"--texts must be a list of strings, got {type(texts).__name__} {texts!r}{end}"
        )
    texts = list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"--texts must hold strings, got {type(text).__name__} {text!r}.")
    if len(texts) < 2:
        raise ValueError(
            f"Pass at least two --texts (got {texts!r}): heatmaps are contrasted across texts."
        )
    if len(texts) > MAX_TEXTS:
        raise ValueError(
            f"Pass at most {MAX_TEXTS} --texts (got {len(texts)}): one heatmap column each."
        )
    blank = [text for text in texts if not text.strip()]
    if blank:
        raise ValueError(f"--texts holds an empty text {blank[0]!r}; drop it.")
    repeated = sorted({text for text in texts if texts.count(text) > 1})
    if repeated:
        raise ValueError(f"--texts repeats {repeated[0]!r}; give each text once.")


DEFAULT_TEXTS = [
    "a photo of a person",
    "a photo of an animal",
    "a photo of a building",
    "a photo of a vehicle",
    "a photo of food",
    "a photo of a landscape",
]
