"""The report for a ViT that is not a CLIP, read through CompAlign (Balasubramanian et al. 2024).

A non-CLIP ViT has no text tower: a :class:`~vision_lens.analysis.CompAlign` maps each of its
components into a CLIP's image-embedding space, where the CLIP's text tower reads them.
``vision-lens report --model shapes-vit`` (the shipped pair), ``--model timm:NAME --compalign
DIR`` or ``--model hf:NAME --compalign DIR`` runs :func:`write_beyond_report`: alignment quality,
component scores, top components, layer ablations and token heatmaps, all through the maps.

Example:
    >>> source_kind("timm:vit_small_patch16_224"), source_kind("ViT-B-16")
    ('timm', None)
"""

from __future__ import annotations

import difflib
import html
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import plotly.graph_objects as go
import torch
import torch.nn.functional as F
from torch import Tensor

from vision_lens import plot
from vision_lens.analysis.beyond_clip import TOKEN_KINDS, aligned_token_heatmaps
from vision_lens.analysis.beyond_clip_ablation import layer_ablation_curve
from vision_lens.analysis.compalign import AlignedComponents, CompAlign, alignment_report
from vision_lens.analysis.direct_effects import decompose_components
from vision_lens.analysis.scoring import ComponentScores, component_scores
from vision_lens.analysis.selection import select_components
from vision_lens.apps import report
from vision_lens.errors import UnsupportedModelError
from vision_lens.utils.checks import check_batch_size

if TYPE_CHECKING:
    from PIL.Image import Image

    from vision_lens.hooked_vit import HookedViT
    from vision_lens.text import CLIPText

#: ``--model`` of the shipped pair: the shapes ViT with its CompAlign into the shapes CLIP.
SHAPES_VIT = "shapes-vit"
#: Prefixes of a user's non-CLIP ``--model`` and an example name for each.
PREFIXES = {"timm": "vit_small_patch16_224", "hf": "facebook/dinov2-small"}
#: Shapes attributes used as properties (zero-shot tasks, component scores, heatmaps).
SHAPES_PROPERTIES = ("color", "shape", "position")
N_DISPLAY, N_EVAL, SEED = 4, 300, 2024  # shapes scenes: heatmaps, evaluation, seed
TOP_COMPONENTS = 5  # token components per property whose heatmaps are summed
MAX_QUERIES = 3  # heatmap columns per property


def source_kind(model_name: str | os.PathLike | None) -> str | None:
    """What kind of non-CLIP model ``--model`` names: ``"shapes-vit"``, ``"timm"`` or ``"hf"``;
    ``None`` for a CLIP (an open_clip name, or no name: the shipped shapes CLIP).

    Example:
        >>> source_kind("hf:facebook/dinov2-small"), source_kind(None)
        ('hf', None)
    """
    if model_name is None:
        return None
    name = os.fspath(model_name)
    if name == SHAPES_VIT:
        return SHAPES_VIT
    return next((kind for kind in PREFIXES if name.startswith(f"{kind}:")), None)


def _display(path: str | os.PathLike) -> str:
    """A path as given; one in the package relative to it (pages read alike on every machine)."""
    package, resolved = Path(__file__).resolve().parents[1], Path(path).resolve()
    inside = resolved.is_relative_to(package)
    return str(resolved.relative_to(package.parent)) if inside else os.fspath(path)


def _unknown(option: str, name: str, names: Sequence[str], prefix: str = "") -> ValueError:
    close = [prefix + c for c in difflib.get_close_matches(name, names, n=3, cutoff=0.5)]
    hint = f"did you mean {' or '.join(map(repr, close))}?" if close else "no close match"
    source = "timm" if prefix else "open_clip"
    return ValueError(
        f"{option} {prefix + name!r} is not a{'n' * (not prefix)} {source} model; {hint}"
    )


def _check_clip_model(name: str, pretrained: str | None) -> None:
    """An open_clip ``--clip-model`` (and ``--clip-pretrained``) that can load, before it does."""
    import open_clip

    from vision_lens.loading.open_clip import check_open_clip_config, check_pretrained_source

    if name.startswith(("hf-hub:", "local-dir:")):
        return  # checked by open_clip when it reads them
    if open_clip.get_model_config(name) is None:
        raise _unknown("--clip-model", name, open_clip.list_models())
    try:
        check_open_clip_config(name)
    except UnsupportedModelError as error:
        raise UnsupportedModelError(f"--clip-model {name!r}: {error}") from None
    try:
        check_pretrained_source(name, pretrained)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"--clip-pretrained {error}") from None


def check_beyond_options(
    model_name: str | None = None,
    pretrained: str | None = None,
    compalign: str | os.PathLike | None = None,
    clip_model: str | None = None,
    clip_pretrained: str | None = None,
    images: str | os.PathLike | None = None,
    texts: Sequence[str] | None = None,
) -> bool:
    """Whether the report reads a non-CLIP model through CompAlign (``model_name``
    ``shapes-vit``, ``timm:NAME`` or ``hf:NAME``), refusing before any model loads what cannot
    work: a CompAlign option with a CLIP, a user's model without ``--compalign``, ``--images``
    and ``--texts``, ``--pretrained`` where it does not apply, unknown timm or open_clip names.

    Example:
        >>> check_beyond_options("ViT-B-16"), check_beyond_options("shapes-vit")
        (False, True)
        >>> check_beyond_options(compalign="ca/")
        Traceback (most recent call last):
        ...
        ValueError: --compalign 'ca/' reads a non-CLIP model through CompAlign, ...
    """
    options = (("--compalign", compalign), ("--clip-model", clip_model))
    options += (("--clip-pretrained", clip_pretrained),)
    for option, value in (("--model", model_name), *options):
        if value is not None and not isinstance(value, str | os.PathLike):
            raise TypeError(f"{option} must be a string or None, got {type(value).__name__}.")
    kind = source_kind(model_name)
    if kind is None:
        for option, value in options:
            if value is not None:
                model = "the default model" if model_name is None else f"--model {model_name!r}"
                raise ValueError(
                    f"{option} {os.fspath(value)!r} reads a non-CLIP model through CompAlign, "
                    f"but {model} is a CLIP, read by its own text tower: drop {option}, or pass "
                    "--model shapes-vit, timm:NAME or hf:NAME"
                )
        return False
    name = os.fspath(model_name).partition(":")[2]
    if kind != SHAPES_VIT and not name.strip():
        raise ValueError(
            f"--model {model_name!r} names no model; e.g. --model {kind}:{PREFIXES[kind]}"
        )
    if kind == "timm":
        import timm

        if not timm.is_model(name):
            raise _unknown("--model", name, timm.list_models(), prefix="timm:")
        if pretrained is not None:
            from vision_lens.loading.checkpoints import check_file

            check_file(pretrained)
    elif kind == "hf":
        from vision_lens.loading.hf import check_hf_source

        check_hf_source(name)
    if pretrained is not None and kind != "timm":
        why = "the shipped shapes ViT has its own weights"
        if kind == "hf":
            why = "a Hugging Face model loads from its hub id or save_pretrained folder"
        raise ValueError(f"--pretrained {pretrained!r} does not apply to --model {kind}: {why}")
    if compalign is None and kind != SHAPES_VIT:
        raise ValueError(
            f"--model {model_name} is not a CLIP: it has no text tower, so the report reads its "
            "components through a CompAlign fitted for it (the folder CompAlign.save writes, "
            "as scripts/train_shapes_compalign.py does): add --compalign DIR"
        )
    if clip_pretrained is not None and clip_model is None:
        raise ValueError(
            f"--clip-pretrained {clip_pretrained!r} needs --clip-model (the default shapes CLIP "
            "has its own weights): add --clip-model NAME or drop --clip-pretrained"
        )
    if clip_model is not None:
        _check_clip_model(clip_model, clip_pretrained)
    if kind != SHAPES_VIT and (images is None or texts is None):
        missing = "--images FOLDER and --texts" if images is None else "--texts"
        raise ValueError(
            f"--model {model_name} needs {missing} (2 to 6 texts, read as one property): the "
            "generated shapes scenes and their prompts are for --model shapes-vit"
        )
    return True


def _load_compalign(path: str | os.PathLike, clip_model: str | None) -> CompAlign:
    """The CompAlign in ``path``, its d_clip checked against the CLIP's open_clip config."""
    import open_clip

    from vision_lens.shapes.pretrained import SHAPES_MODEL_NAME, register_shapes_config

    try:
        aligner = CompAlign.load(path)
    except (OSError, ValueError) as error:
        raise type(error)(f"--compalign: {error}") from None
    register_shapes_config()
    config = open_clip.get_model_config(clip_model or SHAPES_MODEL_NAME)
    _check_width(aligner, clip_model, None if config is None else config.get("embed_dim"))
    return aligner


def _check_width(aligner: CompAlign, clip_model: str | None, width: int | None) -> None:
    if width is not None and int(width) != aligner.d_clip:
        clip = f"--clip-model {clip_model}" if clip_model else "the default shapes CLIP"
        raise ValueError(
            f"--compalign maps into a {aligner.d_clip}-wide CLIP space, but {clip} embeds "
            f"images in {width} dimensions: pass the CLIP it was fitted for with --clip-model "
            "(and --clip-pretrained), or fit a CompAlign into this CLIP's space"
        )


def check_compalign_fits(model: HookedViT, aligner: CompAlign, model_name: str) -> None:
    """Refuse a CompAlign fitted for another model: its source width must be the model's output
    width and its components must name layers and heads the model has.

    Example:
        >>> import vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny())  # 2 layers, 4 heads, d_embed 16
        >>> check_compalign_fits(model, CompAlign(["L5H0", "rest"], 16, 8), "tiny")
        Traceback (most recent call last):
        ...
        IndexError: --compalign: component 'L5H0' names layer 5, but --model tiny has ...
    """
    cfg = model.cfg
    fix = "pass the model it was fitted for, or fit one for this model (CompAlign.fit)"
    if aligner.d_source != cfg.d_embed:
        raise ValueError(
            f"--compalign maps {aligner.d_source}-wide source components, but --model "
            f"{model_name} outputs {cfg.d_embed}-wide features (timm: num_classes=0): {fix}"
        )
    for cid in aligner.ids:
        for part, count in (("layer", cfg.n_layers), ("head", cfg.n_heads)):
            value = getattr(cid, part)
            if value is not None and not 0 <= value < count:
                raise IndexError(
                    f"--compalign: component {str(cid)!r} names {part} {value}, but --model "
                    f"{model_name} has {part}s 0..{count - 1}: {fix}"
                )


def load_source_model(
    model_name: str, pretrained: str | None = None, device: str | None = None
) -> HookedViT:
    """The non-CLIP model ``--model`` names: the shipped shapes ViT's features
    (``load_shapes_vit(head=False)``), a timm ViT (``num_classes=0``: its features; ``pretrained``
    a local checkpoint, else random weights) or a Hugging Face ViT (hub id or local folder).

    Example:
        >>> load_source_model("shapes-vit").cfg.d_embed  # doctest: +SKIP
        128
    """
    from vision_lens.hooked_vit import HookedViT
    from vision_lens.models import load_shapes_vit

    kind, name = source_kind(model_name), str(model_name).partition(":")[2]
    if kind == SHAPES_VIT:
        return load_shapes_vit(device, head=False)
    if kind == "timm":
        model = HookedViT.from_timm(name, pretrained or False, num_classes=0, device=device)
    elif kind == "hf":
        model = HookedViT.from_hf(name, device=device)
    else:
        raise ValueError(f"--model {model_name!r} is a CLIP; load it with vl.load_clip.")
    if model.preprocess is None:
        raise ValueError(
            f"--model {model_name} has no image transform (no image processor config): save its "
            "image processor into the folder (AutoImageProcessor ... save_pretrained(DIR))"
        )
    return model


@dataclass
class BeyondInputs:
    """What a beyond-CLIP report shows: ``display_images`` get token heatmaps for ``queries``
    (``{property: texts}``); ``eval_images`` everything else, each property's class ``texts``
    in ``properties`` with ``labels`` (``[n_eval]``) where known, else the CLIP's own choice."""

    title: str
    display_images: list[Image]
    eval_images: list[Image]
    properties: dict[str, list[str]]
    queries: dict[str, list[str]]
    labels: dict[str, Tensor] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def shapes_beyond_inputs(
    n_display: int = N_DISPLAY, n_eval: int = N_EVAL, seed: int = SEED
) -> BeyondInputs:
    """Shapes-world inputs: multi-object scenes for heatmaps, single-object scenes labelled
    with colour, shape and position for everything else.

    Example:
        >>> inputs = shapes_beyond_inputs(2, 10)
        >>> sorted(inputs.properties), len(inputs.eval_images), inputs.labels["color"].shape
        (['color', 'position', 'shape'], 10, torch.Size([10]))
    """
    from vision_lens import shapes
    from vision_lens.shapes.vocabulary import VOCABULARY

    display = shapes.generate(n_display, seed=seed, n_objects=(1, 3))
    evaluation = shapes.generate(n_eval, seed=seed + 1, n_objects=1)
    properties = {p: shapes.prompts(p) for p in SHAPES_PROPERTIES}
    queries = {}
    for prop, prompts in properties.items():
        seen = [prompts[VOCABULARY[prop].index(attrs[0][prop])] for attrs in display.attributes]
        queries[prop] = list(dict.fromkeys(seen))[:MAX_QUERIES]
    return BeyondInputs(
        title="vision_lens report (through CompAlign)",
        display_images=[display.to_pil(i) for i in range(len(display))],
        eval_images=[evaluation.to_pil(i) for i in range(len(evaluation))],
        properties=properties,
        queries=queries,
        labels={p: torch.as_tensor(shapes.labels(evaluation, p)) for p in SHAPES_PROPERTIES},
        notes=[
            f"Heatmaps on {n_display} shapes-world scenes (seed {seed}); everything else on "
            f"{n_eval} held-out single-object scenes (seed {seed + 1}) with the prompts "
            "'a {colour} object', 'a {shape}', 'an object in the {position}'."
        ],
    )


def folder_beyond_inputs(images: Sequence[Image], texts: Sequence[str]) -> BeyondInputs:
    """A user's images with ``texts`` as one property (no labels: the report compares with the
    CLIP's own zero-shot choice, and ablations with the full mapped sum's).

    Example:
        >>> from PIL import Image
        >>> inputs = folder_beyond_inputs([Image.new("RGB", (8, 8))] * 2, ["a dog", "a cat"])
        >>> inputs.properties
        {'texts': ['a dog', 'a cat']}
    """
    images, texts = list(images), list(texts)
    if len(images) < 2:
        raise ValueError(
            f"{len(images)} readable image(s): the component scores correlate over images, so "
            "pass a folder with at least 2 images to --images."
        )
    return BeyondInputs(
        title="vision_lens report (through CompAlign)",
        display_images=images[:N_DISPLAY],
        eval_images=images,
        properties={"texts": texts},
        queries={"texts": texts},
        notes=[f"{len(images)} user images; the --texts are scored as one property."],
    )


def _compalign_note(aligner: CompAlign, path: str | os.PathLike) -> str:
    names = {"head": "heads", "mlp": "MLPs", "attn": "attention layers", "attn_bias": "attn biases"}
    counts = Counter(names.get(cid.kind, str(cid)) for cid in aligner.ids)
    parts = ", ".join(
        f"{n} {kind}" if kind in names.values() else kind for kind, n in counts.items()
    )
    hist, fitted = aligner.history, "no stored fit history"
    if hist is not None and hist.steps:
        early = ", stopped early" if hist.stopped_early else ""
        fitted = (
            f"fitted {hist.epochs} epoch(s), {hist.steps[-1]} steps, best held-out cosine "
            f"{max(hist.val_cosine):.3f} at step {hist.best_step}{early}"
        )
    return (
        f"CompAlign {_display(path)}: {len(aligner.ids)} components ({parts}), d_source "
        f"{aligner.d_source} -> d_clip {aligner.d_clip}; {fitted}."
    )


def _table(rows: Sequence[Sequence[str]]) -> str:
    lines = ["<table border='1' cellpadding='4' style='border-collapse:collapse'>"]
    for i, row in enumerate(rows):
        tag = "th" if i == 0 else "td"
        lines.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in row) + "</tr>")
    return "\n".join([*lines, "</table>"])


@torch.no_grad()
def _embed(model: HookedViT, images: Tensor, batch_size: int) -> Tensor:
    device = next(model.parameters()).device
    batches = [images[i : i + batch_size] for i in range(0, len(images), batch_size)]
    return torch.cat([model(batch.to(device)).float().cpu() for batch in batches])


@torch.no_grad()
def build_beyond_report(
    model: HookedViT,
    aligner: CompAlign,
    clip_image: HookedViT,
    clip_text: CLIPText,
    inputs: BeyondInputs,
    *,
    compalign_path: str | os.PathLike = "CompAlign",
    batch_size: int = 64,
    progress: bool = True,
) -> str:
    """Compute every figure of the beyond-CLIP report and return the HTML page.

    Args:
        model: The non-CLIP :class:`~vision_lens.HookedViT` whose output ``aligner`` maps.
        aligner: Its :class:`~vision_lens.analysis.CompAlign` into ``clip_image``'s space.
        clip_image: The CLIP's image tower (the reference embeddings of the alignment cosine).
        clip_text: The CLIP's text tower (reads the aligned components).
        inputs: What to show (:func:`shapes_beyond_inputs`, :func:`folder_beyond_inputs`).
        compalign_path: Where ``aligner`` came from (shown in the header).
        batch_size: Images per forward pass.
        progress: Show progress bars.

    Returns:
        A self-contained HTML page (plotly.js inline).

    Example:
        >>> page = build_beyond_report(vit, aligner, clip_image, clip_text,
        ...                            shapes_beyond_inputs())  # doctest: +SKIP
    """
    sections: list[tuple[str, str, go.Figure | str]] = []
    x = report.preprocess_images(model, inputs.eval_images)
    split = sorted({c.layer for c in aligner.ids if c.kind in ("head", "attn_bias")})
    comps = decompose_components(model, x, split, batch_size=batch_size, progress=progress)
    try:
        comps = select_components(comps, ids=aligner.ids)  # in the order of the maps
    except ValueError as error:
        raise ValueError(f"--compalign does not fit this --model: {error}") from None
    aligned = aligner.align(comps)
    z = _embed(clip_image, report.preprocess_images(clip_image, inputs.eval_images), batch_size)
    texts = {p: clip_text.encode(t).float().cpu() for p, t in inputs.properties.items()}

    # Alignment quality: the mapped sum against the CLIP's own image embedding.
    known = bool(inputs.labels)
    head = ["zero-shot accuracy: mapped sum", "CLIP itself"]
    if not known:
        head = ["agreement of the mapped sum's zero-shot choice with the CLIP's"]
    labels, rows = {}, [["property", *head]]
    for prop, weights in texts.items():
        truth = inputs.labels.get(prop)
        if truth is None:  # no labels: agreement with the CLIP's own choice
            truth = (F.normalize(z, dim=-1) @ weights.T).argmax(-1)
        result = alignment_report(aligner, comps, z, weights, truth)
        values = [result.accuracy, result.clip_accuracy] if known else [result.accuracy]
        rows.append([prop, *(f"{v:.1%}" for v in values)])
        labels[prop] = truth if known else (aligned.total() @ weights.T).argmax(-1)
    cosine = alignment_report(aligner, comps, z)
    text = (
        "Mean cosine between the mapped sum of the components and the CLIP image embedding of "
        f"the same image over {cosine.n} images: {cosine.cosine:.3f}. Zero-shot classification "
        "through the mapped sum"
        + (", next to the CLIP's own." if known else ", against the CLIP's own choice.")
    )
    sections.append(("Alignment quality", text, _table(rows)))
    scores = component_scores(aligned, texts)
    sections += _score_sections(scores)
    sections.append(_ablation_section(aligned, labels, texts, known))
    sections += _heatmap_sections(model, aligner, clip_text, inputs, scores, texts)
    notes = [
        _compalign_note(aligner, compalign_path),
        f"Text side: {clip_image.cfg.model_name} (d_embed {clip_image.cfg.d_embed}); its image "
        "tower gives the reference embeddings of the alignment cosine.",
        *inputs.notes,
    ]
    return report.render_page(model, inputs.title, notes, inputs.display_images, sections)


def _score_sections(scores: ComponentScores) -> list[tuple[str, str, go.Figure | str]]:
    out: list[tuple[str, str, go.Figure | str]] = []
    text = (
        "Each component's score for the property (the paper's Algorithm 2: mean correlation over "
        "the images of its aligned term and the whole, along the property's text directions)."
    )
    if any(cid.kind == "head" for cid in scores.ids):
        for prop in scores.properties:
            out.append((f"Component scores: {prop}", text, plot.score_heatmap(scores, prop)))
    out.append(("Top components per property", text, plot.top_components_chart(scores, top=10)))
    return out


def _ablation_section(
    aligned: AlignedComponents, labels: dict[str, Tensor], texts: dict[str, Tensor], known: bool
) -> tuple[str, str, go.Figure]:
    curves, steps = {}, []
    for prop, weights in texts.items():
        curve = layer_ablation_curve(aligned, labels[prop], weights)
        name = prop if known else f"{prop}: agreement with the full mapped sum"
        curves[name], steps = curve.accuracy, curve.layers
    x = ["none"] + [str(s[0]) if len(s) == 1 else f"{s[0]}..{s[-1]}" for s in steps[1:]]
    return (
        "Mean-ablating layers, cumulatively (through CompAlign)",
        "Zero-shot accuracy of the mapped sum when every component of layers L..l (last layer "
        "first) is replaced by its mean over the images (the paper's Figure 2)"
        + ("." if known else "; with no labels, agreement with the full mapped sum's choice."),
        plot.line_chart(curves, x, xaxis_title="layers mean-ablated", yaxis_title="accuracy"),
    )


def _heatmap_sections(
    model: HookedViT,
    aligner: CompAlign,
    clip_text: CLIPText,
    inputs: BeyondInputs,
    scores: ComponentScores,
    texts: dict[str, Tensor],
) -> list[tuple[str, str, go.Figure | str]]:
    display = report.preprocess_images(model, inputs.display_images)
    device = next(model.parameters()).device
    _, cache = model.run_with_decomposition_cache(display.to(device))
    aligner.to(device)
    out: list[tuple[str, str, go.Figure | str]] = []
    for prop, queries in inputs.queries.items():
        ranked = [c for c, _ in scores.rank_components(prop) if c.kind in TOKEN_KINDS]
        top = ranked[:TOP_COMPONENTS]
        if not top:
            continue  # no head or attention layer among the components: no tokens to show
        query = clip_text.encode(queries).float().to(device)
        heat = aligned_token_heatmaps(
            cache, aligner, query, top, reference_embeddings=texts[prop].to(device)
        )
        text = (
            f"Each patch's contribution through the maps of {prop}'s top components "
            f"({', '.join(top)}) dotted with the text embedding, minus the mean over the "
            "property's texts; red = towards the text."
        )
        fig = plot.token_heatmap_grid(inputs.display_images, heat.cpu(), queries)
        out.append((f"Where each text is found: {prop}", text, fig))
    aligner.cpu()
    return out


def write_beyond_report(
    out: str | Path,
    model_name: str,
    pretrained: str | None = None,
    compalign: str | os.PathLike | None = None,
    clip_model: str | None = None,
    clip_pretrained: str | None = None,
    images: str | Path | None = None,
    texts: Sequence[str] | None = None,
    *,
    max_images: int = 8,
    batch_size: int = 64,
    device: str | None = None,
    progress: bool = True,
) -> Path:
    """Load a non-CLIP model, its CompAlign and a CLIP, compute the report and write it.

    Args:
        out: HTML file to write.
        model_name: ``"shapes-vit"`` (the shipped pair), ``"timm:NAME"`` or ``"hf:NAME"``.
        pretrained: A local checkpoint for a timm model (default: random weights).
        compalign: The CompAlign folder (default for ``shapes-vit``: the shipped one).
        clip_model: open_clip model whose text tower reads the maps (default: the shapes CLIP).
        clip_pretrained: Its pretrained tag or checkpoint path.
        images: Folder of images (required but for ``shapes-vit``: shapes scenes).
        texts: 2 to 6 texts for ``images`` (scored as one property).
        max_images: At most this many images from ``images``.
        batch_size: Images per forward pass.
        device: Torch device.
        progress: Show progress bars.

    Returns:
        The path written (errors: :func:`check_beyond_options`, :func:`check_compalign_fits`).

    Example:
        >>> write_beyond_report("report.html", "shapes-vit")  # doctest: +SKIP
    """
    from vision_lens.models import load_clip, load_shapes_clip
    from vision_lens.shapes.pretrained import check_device
    from vision_lens.shapes.pretrained_vit import shapes_vit_compalign_path

    beyond = (model_name, pretrained, compalign, clip_model, clip_pretrained)
    if not check_beyond_options(*beyond, images=images, texts=texts):
        raise ValueError(f"--model {model_name!r} is a CLIP: use write_report for it.")
    check_batch_size(batch_size)
    check_device(device)
    out = report.check_output_file(out)
    path = shapes_vit_compalign_path() if compalign is None else compalign
    aligner = _load_compalign(path, clip_model)  # and its width: before any model loads
    if images is None:
        inputs = shapes_beyond_inputs(N_DISPLAY, N_EVAL, SEED)  # read now: tests shrink N_EVAL
    else:
        user_images = report.load_image_folder(images, max_images)
        inputs = folder_beyond_inputs(user_images, report.DEFAULT_TEXTS if texts is None else texts)
    model = load_source_model(model_name, pretrained, device)
    check_compalign_fits(model, aligner, model_name)
    if clip_model is None:
        clip = load_shapes_clip(device)
    else:
        clip = load_clip(clip_model, clip_pretrained, device=device)
    _check_width(aligner, clip_model, clip[0].cfg.d_embed)
    opts = dict(compalign_path=path, batch_size=batch_size, progress=progress)
    page = build_beyond_report(model, aligner, *clip, inputs, **opts)
    out.write_text(page, encoding="utf-8")
    return out
