"""The zero-shot segmentation benchmark: our token decomposition and every baseline, one run.

``vision-lens eval-seg`` calls :func:`run_eval_seg`. Per image there is one class text (its
ground-truth class, or for ImageNet-segmentation the model's zero-shot prediction among the 1,000
classes, as in the reference code). Every method turns it into a ``[H, W]`` heatmap at the
model's input resolution; :class:`~vision_lens.analysis.seg_metrics.SegmentationMetrics`
binarises each at its mean and accumulates pixel accuracy, mIoU and mAP (Chefer et al. 2021).

Data:

* default, the shapes world: single-object scenes (``vision_lens.shapes.generate(n, seed,
  n_objects=1)``), class text = the object's colour and shape ("a red circle"), mask = the
  object's exact pixels; the reference set = all 64 colour-shape texts.
* ``--imagenet-seg gtsegs_ijcv.mat``: ImageNet-segmentation, classes = the 1,000 ImageNet class
  names with CLIP's prompt templates (the reference set = all 1,000 class weights).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from vision_lens.analysis.baselines import BASELINES, baseline_scores
from vision_lens.analysis.seg_metrics import SegmentationMetrics
from vision_lens.analysis.segmentation import patch_token_scores
from vision_lens.apps.seg_data import (
    SHAPES_SEED,
    SegBatch,
    SegData,
    check_imagenet_seg_file,
    check_output_dir,
    imagenet_seg_data,
    shapes_class_texts,
    shapes_data,
)
from vision_lens.cache import LnMode
from vision_lens.utils.batching import progress_bar
from vision_lens.utils.checks import check_batch_size
from vision_lens.utils.grids import upsample_grid

if TYPE_CHECKING:
    from vision_lens.cache import ActivationCache
    from vision_lens.hooked_vit import HookedViT

#: Every method of the benchmark, ours first.
METHODS = ("decomposition", *BASELINES)
METHOD_NAMES = {
    "decomposition": "Token decomposition (ours; Gandelsman et al. 2024)",
    "chefer2021": "Chefer et al. 2021 (gradient x attention relevance)",
    "gradcam": "GradCAM (last block input)",
    "raw_attention": "Raw attention (last layer)",
    "rollout": "Attention rollout",
}
#: Table 3 of Gandelsman et al. 2024 (ImageNet-segmentation; pixel acc., mIoU, mAP in %).
PAPER_TABLE3 = {
    "decomposition": (75.21, 54.50, 81.61),
    "chefer2021": (69.21, 47.47, 78.29),
    "gradcam": (70.27, 44.50, 70.30),
    "raw_attention": (65.67, 43.83, 76.05),
    "rollout": (60.63, 40.64, 74.47),
}


@dataclass
class SegEvalResult:
    """Metrics (fractions), seconds per method, settings and a few example heatmaps."""

    metrics: dict[str, dict[str, Any]]
    seconds: dict[str, float]
    settings: dict[str, Any]
    examples: dict[str, Any] = field(default_factory=dict)
    ablations: dict[str, dict[str, Any]] = field(default_factory=dict)

    def ranking(self, key: str = "miou") -> list[str]:
        """Methods sorted by a metric, best first."""
        return sorted(self.metrics, key=lambda m: -self.metrics[m][key])

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly content (examples left out)."""
        return {
            "settings": self.settings,
            "metrics": self.metrics,
            "seconds": self.seconds,
            "ablations": self.ablations,
        }

    def table_markdown(self) -> str:
        """The comparison table (percentages), ours first then the baselines."""
        n = max(self.settings.get("n_images", 1), 1)
        lines = [
            "| Method | Pixel acc. | mIoU | mAP | IoU bg | IoU fg | mAP fg only | ms / image |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for method, m in self.metrics.items():
            name = METHOD_NAMES.get(method, method)
            lines.append(
                f"| {name} | {100 * m['pixel_accuracy']:.2f} | {100 * m['miou']:.2f} | "
                f"{100 * m['map']:.2f} | {100 * m['iou_background']:.2f} | "
                f"{100 * m['iou_foreground']:.2f} | {100 * m['map_foreground']:.2f} | "
                f"{1000 * self.seconds[method] / n:.1f} |"
            )
        return "\n".join(lines)

    def markdown(self) -> str:
        """A results page: setup, the table, the paper's numbers for context."""
        s = self.settings
        parts = [
            "# Zero-shot segmentation: token decomposition vs. baselines",
            "",
            f"Produced by `{s.get('command', 'evaluate_segmentation(...)')}` (vision_lens "
            f"{s.get('version', '')}).",
            "",
            f"- Model: {s['model']}",
            f"- Data: {s['data']}",
            f"- Class text per image: {s['label_source']}; heatmaps of our method subtract the "
            f"mean heatmap over {s['n_reference']} reference class texts (the paper's footnote).",
            f"- Our method: patch-token direct effects of attention layers {s['layers']} "
            f"(ln_mode={s['ln_mode']!r}) dotted with the class text embedding.",
            "- Protocol (Chefer et al. 2021, as in Gandelsman et al. Table 3): per image, clip at "
            "0, min-max normalise, binarise at the mean; pixel accuracy over all pixels, mIoU = "
            "mean of background and foreground IoU accumulated over the dataset, mAP = mean "
            "per-image AP (foreground and background channels pooled, as the reference code); "
            "'mAP fg only' scores the foreground channel alone.",
        ]
        if s.get("zero_shot_accuracy") is not None:
            parts.append(
                f"- The model's zero-shot accuracy on these class texts: "
                f"{100 * s['zero_shot_accuracy']:.1f}% ({s['n_classes']} classes)."
            )
        if "foreground_fraction" in s:
            background = 1 - s["foreground_fraction"]
            parts.append(
                f"- Foreground is {100 * s['foreground_fraction']:.1f}% of the pixels: predicting "
                f"no foreground at all would score pixel accuracy {100 * background:.2f}, mIoU "
                f"{50 * background:.2f}, IoU fg 0."
            )
        parts += [
            f"- {s['n_images']} images; {s['seconds_total']:.0f} s in total on {s['device']}.",
            "",
            "## Results (%)",
            "",
            self.table_markdown(),
            "",
            f"Ranking by mIoU: {' > '.join(self.ranking('miou'))}.",
            "",
            "## For reference: Gandelsman et al. 2024, Table 3 (ImageNet-segmentation, CLIP)",
            "",
            "| Method | Pixel acc. | mIoU | mAP |",
            "|---|---:|---:|---:|",
        ]
        for method, (acc, miou, ap) in PAPER_TABLE3.items():
            parts.append(f"| {METHOD_NAMES[method]} | {acc:.2f} | {miou:.2f} | {ap:.2f} |")
        if self.ablations:
            parts += ["", self.ablation_markdown()]
        return "\n".join(parts) + "\n"

    def ablation_markdown(self) -> str:
        """The ablation section: thresholds for every method, then variants of ours."""
        lines = [
            "## Ablations (`--ablations`)",
            "",
            "Threshold: the protocol binarises each normalised heatmap at its own mean; the "
            "best single fixed threshold for the whole dataset (an oracle, chosen on the same "
            f"images from {SWEEP[0]}..{SWEEP[-1]}) shows how much that choice costs each method.",
            "",
            "| Method | mIoU (mean threshold) | best fixed threshold | mIoU there | mAP fg only |",
            "|---|---:|---:|---:|---:|",
        ]
        for method, m in self.metrics.items():
            lines.append(
                f"| {METHOD_NAMES.get(method, method)} | {100 * m['miou']:.2f} | "
                f"{m['best_threshold']:.2f} | {100 * m['miou_best_threshold']:.2f} | "
                f"{100 * m['map_foreground']:.2f} |"
            )
        lines += [
            "",
            "Variants of our method (reference subtraction, layers, clipping):",
            "",
            "| Variant | Pixel acc. | mIoU | mAP | mAP fg only | best-threshold mIoU |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, m in self.ablations.items():
            lines.append(
                f"| {name} | {100 * m['pixel_accuracy']:.2f} | {100 * m['miou']:.2f} | "
                f"{100 * m['map']:.2f} | {100 * m['map_foreground']:.2f} | "
                f"{100 * m['miou_best_threshold']:.2f} (at {m['best_threshold']:.2f}) |"
            )
        return "\n".join(lines)

    def write(self, out_dir: str | Path, figure: bool = True) -> list[Path]:
        """Write ``segmentation.md``, ``segmentation.json`` and (with ``figure``)
        ``segmentation_examples.html`` into ``out_dir``; returns the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / "segmentation.md", out / "segmentation.json"]
        paths[0].write_text(self.markdown(), encoding="utf-8")
        paths[1].write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        if figure and self.examples:
            from vision_lens.plot import segmentation_examples

            ex = self.examples
            fig = segmentation_examples(
                ex["images"],
                ex["masks"],
                {METHOD_NAMES.get(k, k).split(" (")[0]: v for k, v in ex["heatmaps"].items()},
                ex["texts"],
            )
            html = out / "segmentation_examples.html"
            fig.write_html(html, include_plotlyjs="cdn", full_html=True)
            paths.append(html)
        return paths


def evaluate_segmentation(
    model: HookedViT,
    data: SegData,
    methods: Sequence[str] = METHODS,
    layers: int | Sequence[int] | None = None,
    *,
    reference: Float[Tensor, "n_ref d_embed"] | None = None,
    ln_mode: LnMode = "center",
    n_examples: int = 4,
    ablations: bool = False,
    progress: bool = True,
) -> SegEvalResult:
    """Evaluate our token-decomposition heatmaps and the baselines on one dataset.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        data: The evaluation set (see :func:`shapes_data`, :func:`imagenet_seg_data`).
        methods: Any of :data:`METHODS`.
        layers: Attention layers of our method (default all, as in the paper).
        reference: Embeddings whose mean heatmap our method subtracts (default all class
            embeddings of ``data``).
        ln_mode: Final-LayerNorm treatment of the decomposition.
        n_examples: Heatmaps of this many first images are kept for the figure.
        ablations: Also evaluate variants of our method (no reference subtraction, subsets of
            layers, no clipping at 0) and record, for every method, the best fixed threshold
            (:data:`SWEEP`) next to the protocol's mean threshold (``result.ablations``).
        progress: Show a progress bar.

    Returns:
        A :class:`SegEvalResult`.

    Example:
        >>> result = evaluate_segmentation(model, shapes_data(model, clip, n=64))  # doctest: +SKIP
        >>> print(result.table_markdown())  # doctest: +SKIP
    """
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"Unknown or no methods {unknown}; choose from {list(METHODS)}.")
    class_emb = _class_directions(model, data.class_embeddings)
    ref = class_emb if reference is None else F.normalize(reference.to(class_emb), dim=-1)
    ref_mean = ref.mean(0)
    metrics = {m: SegmentationMetrics(sweep=SWEEP) for m in methods}
    variants = _variants(model.cfg.n_layers) if ablations and "decomposition" in methods else {}
    variant_metrics = {
        name: SegmentationMetrics(sweep=SWEEP, clip_negative=clip)
        for name, (_, _, clip) in variants.items()
    }
    seconds = dict.fromkeys(methods, 0.0)
    examples = _Examples(n_examples, methods)
    counts = dict.fromkeys(("correct", "labeled", "foreground", "pixels"), 0)
    start_time = time.perf_counter()
    with progress_bar(data.n_images, "eval-seg", enabled=progress) as bar:
        for batch in data.batches():
            images = batch.images.to(device=model.device, dtype=model.dtype)
            masks = batch.masks.bool()
            counts["foreground"] += int(masks.sum())
            counts["pixels"] += masks.numel()
            tic = time.perf_counter()
            embed, cache = model.run_with_decomposition_cache(images)
            predicted = (F.normalize(embed, dim=-1) @ class_emb.T).argmax(-1)
            labels = predicted if batch.labels is None else batch.labels.to(predicted.device)
            if batch.labels is not None:
                counts["correct"] += int((predicted == labels).sum())
                counts["labeled"] += labels.numel()
            directions = class_emb[labels]  # [batch, d_embed]
            heat: dict[str, Tensor] = {}
            if "decomposition" in methods:
                dirs = (directions - ref_mean)[:, None]  # [batch, 1, d_embed]
                heat["decomposition"] = patch_token_scores(cache, dirs, layers, ln_mode)[:, 0]
                seconds["decomposition"] += time.perf_counter() - tic
            for name, heatmaps in _variant_heatmaps(cache, directions, ref_mean, variants, ln_mode):
                variant_metrics[name].update(heatmaps, masks)
            del cache
            for method in methods:
                if method != "decomposition":
                    tic = time.perf_counter()
                    heat[method] = baseline_scores(model, images, method, directions)
                    seconds[method] += time.perf_counter() - tic
            for method in methods:
                tic = time.perf_counter()
                heat[method] = _to_pixels(model, heat[method])
                seconds[method] += time.perf_counter() - tic
                metrics[method].update(heat[method], masks)
            examples.add(batch, labels, heat)
            bar.update(images.shape[0])
    if not metrics[methods[0]].n_images:
        raise ValueError("The dataset yielded no images.")
    settings = {
        "model": model.cfg.model_name,
        "data": data.description,
        "dataset": data.name,
        "n_images": metrics[methods[0]].n_images,
        "n_classes": len(data.class_texts),
        "n_reference": int(ref.shape[0]),
        "label_source": data.label_source,
        "zero_shot_accuracy": counts["correct"] / counts["labeled"] if counts["labeled"] else None,
        "foreground_fraction": counts["foreground"] / max(counts["pixels"], 1),
        "layers": "all" if layers is None else list(np.atleast_1d(layers).tolist()),
        "ln_mode": ln_mode,
        "methods": list(methods),
        "seconds_total": time.perf_counter() - start_time,
        "device": str(model.device),
        "ablations": bool(ablations),
        "version": _version(),
    }
    return SegEvalResult(
        metrics={m: metrics[m].compute() for m in methods},
        seconds=seconds,
        settings=settings,
        examples=examples.collect(model, data.class_texts),
        ablations={name: m.compute() for name, m in variant_metrics.items()},
    )


def _class_directions(
    model: HookedViT, class_embeddings: Float[Tensor, "n_class d_embed"]
) -> Float[Tensor, "n_class d_embed"]:
    """Unit class embeddings on the model's device and dtype, checked against its width."""
    class_emb = F.normalize(class_embeddings.to(device=model.device, dtype=model.dtype), dim=-1)
    if class_emb.shape[-1] != model.cfg.d_embed:
        raise ValueError(
            f"Class embeddings are {class_emb.shape[-1]}-dimensional but the model embeds into "
            f"{model.cfg.d_embed}; use the text tower of the same CLIP."
        )
    return class_emb


def _to_pixels(
    model: HookedViT, scores: Float[Tensor, "batch n_patches"]
) -> Float[Tensor, "batch height width"]:
    """Per-patch scores as heatmaps at the model's input size, on the CPU."""
    grid = scores.float().unflatten(-1, model.cfg.grid_size)
    return upsample_grid(grid, model.cfg.image_size).cpu()


def _variant_heatmaps(
    cache: ActivationCache,
    directions: Float[Tensor, "batch d_embed"],
    ref_mean: Float[Tensor, " d_embed"],
    variants: dict[str, tuple[list[int], bool, bool]],
    ln_mode: LnMode,
) -> Iterator[tuple[str, Float[Tensor, "batch height width"]]]:
    """``(name, heatmaps)`` of each variant of our method (see :func:`_variants`), from the
    per-layer scores of the class text and of the reference mean, computed once."""
    if not variants:
        return
    model = cache.model
    both = torch.stack([directions, ref_mean.expand_as(directions)], dim=1)
    per_layer = torch.stack(  # [layer, batch, 2, n_patches]
        [patch_token_scores(cache, both, [i], ln_mode) for i in range(model.cfg.n_layers)]
    )
    for name, (chosen, subtract, _) in variants.items():
        scores = per_layer[chosen].sum(0)
        scores = scores[:, 0] - scores[:, 1] if subtract else scores[:, 0]
        yield name, _to_pixels(model, scores)


class _Examples:
    """The first ``n`` images of an evaluation with their masks, labels and every method's
    heatmaps, for the example figure."""

    def __init__(self, n: int, methods: Sequence[str]):
        self.n = n
        self.heatmaps: dict[str, list[Tensor]] = {m: [] for m in methods}
        self.masks: list[Tensor] = []
        self.images: list[Tensor] = []
        self.labels: list[int] = []

    def add(self, batch: SegBatch, labels: Tensor, heatmaps: dict[str, Tensor]) -> None:
        """Keep what the figure still needs of one batch (its pixel heatmaps by method)."""
        keep = max(0, self.n - len(self.labels))
        if not keep:
            return
        for method, heat in self.heatmaps.items():
            heat.append(heatmaps[method][:keep])
        self.masks.append(batch.masks.bool()[:keep].cpu())
        self.images.append(batch.images[:keep].cpu())
        self.labels += labels[:keep].tolist()

    def collect(self, model: HookedViT, class_texts: list[str]) -> dict[str, Any]:
        """``{"heatmaps", "masks", "images", "texts"}`` for the figure (empty if none kept)."""
        if not self.labels:
            return {}
        return {
            "heatmaps": {m: torch.cat(v) for m, v in self.heatmaps.items()},
            "masks": torch.cat(self.masks),
            "images": display_images(model, torch.cat(self.images)),
            "texts": [class_texts[i] for i in self.labels],
        }


def _version() -> str:
    from vision_lens._version import __version__

    return __version__


#: Fixed thresholds (on heatmaps min-max normalised to [0, 1]) swept to find each method's best.
SWEEP = tuple(round(0.05 * k, 2) for k in range(1, 20))


def _variants(n_layers: int) -> dict[str, tuple[list[int], bool, bool]]:
    """Variants of our method: name -> (layers, subtract the reference mean, clip at 0)."""
    every = list(range(n_layers))
    out = {
        "all layers (the default)": (every, True, True),
        "all layers, no reference subtraction": (every, False, True),
        "all layers, no clipping at 0 before normalising": (every, True, False),
    }
    for k in sorted({1, 2, 3, 4, n_layers // 2, 8} - {0}):
        if k < n_layers:
            out[f"last {k} layer{'s' if k > 1 else ''}"] = (every[-k:], True, True)
    for layer in every[-min(n_layers, 12) :]:
        out[f"layer {layer} only"] = ([layer], True, True)
    return out


def display_images(model: HookedViT, images: Float[Tensor, "n 3 height width"]) -> np.ndarray:
    """Undo ``model.preprocess``'s normalisation: ``uint8 [n, H, W, 3]`` for figures."""
    mean, std = torch.zeros(3), torch.ones(3)
    for step in getattr(model.preprocess, "transforms", []):
        if type(step).__name__ == "Normalize":
            mean, std = torch.tensor(step.mean), torch.tensor(step.std)
    pixels = images.float().cpu() * std[:, None, None] + mean[:, None, None]
    if pixels.min() < -0.5 or pixels.max() > 1.5:  # not a [0, 1] image: stretch
        lo = pixels.amin(dim=(1, 2, 3), keepdim=True)
        hi = pixels.amax(dim=(1, 2, 3), keepdim=True)
        pixels = (pixels - lo) / (hi - lo + 1e-12)
    return (pixels.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


def run_eval_seg(
    out_dir: str | Path = "seg_eval",
    model_name: str | None = None,
    pretrained: str | None = None,
    imagenet_seg: str | Path | None = None,
    n: int | None = None,
    seed: int = SHAPES_SEED,
    methods: Sequence[str] = METHODS,
    layers: Sequence[int] | None = None,
    batch_size: int = 32,
    device: str | None = None,
    templates: str = "openai",
    class_source: str = "predicted",
    figure: bool = True,
    n_examples: int = 4,
    ablations: bool = False,
    progress: bool = True,
    command: str = "vision-lens eval-seg",
) -> tuple[SegEvalResult, list[Path]]:
    """Load a model, build the data, evaluate every method and write the results.

    Args:
        out_dir: Folder for ``segmentation.md``, ``segmentation.json`` and
            ``segmentation_examples.html``.
        model_name: open_clip model name (default the shipped shapes model).
        pretrained: open_clip tag or checkpoint path for ``model_name``.
        imagenet_seg: Path to ``gtsegs_ijcv.mat`` (default: shapes-world scenes).
        n: Number of images (default 500 shapes scenes / all of ImageNet-segmentation).
        seed: Seed of the shapes scenes.
        methods: Methods to compare (default all).
        layers: Attention layers of our method (default all).
        batch_size: Images per forward pass.
        device: Torch device.
        templates: ImageNet prompt templates (``"openai"`` or ``"simple"``).
        class_source: ImageNet class per image, ``"predicted"`` or ``"label"``.
        figure: Also write the example-heatmap figure.
        n_examples: Images in the figure.
        ablations: Also evaluate variants of our method and the threshold sweep.
        progress: Show progress bars.
        command: The command line recorded in the results page.

    Returns:
        ``(result, written paths)``.

    Example:
        >>> result, paths = run_eval_seg("docs/results")  # shapes model  # doctest: +SKIP
    """
    from vision_lens.models import load_clip_or_shapes

    # Every check that needs no model comes first: a mistake costs no model load.
    check_batch_size(batch_size)
    if n is not None and (isinstance(n, bool) or int(n) < 1):
        raise ValueError(f"--n must be at least 1, got {n!r}.")
    if n_examples < 0:
        raise ValueError(f"--n-examples must be 0 or more, got {n_examples!r}.")
    check_output_dir(out_dir)
    if imagenet_seg is not None:
        check_imagenet_seg_file(imagenet_seg)
    model, clip = load_clip_or_shapes(model_name, pretrained, device=device)
    if imagenet_seg is None:
        n_scenes = 500 if n is None else n
        data = shapes_data(model, clip, n=n_scenes, seed=seed, batch_size=batch_size)
    else:
        data = imagenet_seg_data(
            model,
            clip,
            imagenet_seg,
            n=n,
            batch_size=batch_size,
            templates=templates,
            class_source=class_source,
            progress=progress,
        )
    result = evaluate_segmentation(
        model,
        data,
        methods=methods,
        layers=layers,
        n_examples=n_examples,
        ablations=ablations,
        progress=progress,
    )
    result.settings.update(command=command)
    return result, result.write(out_dir, figure=figure)


__all__ = [
    "METHODS",
    "METHOD_NAMES",
    "SHAPES_SEED",
    "SWEEP",
    "SegBatch",
    "SegData",
    "SegEvalResult",
    "display_images",
    "evaluate_segmentation",
    "imagenet_seg_data",
    "run_eval_seg",
    "shapes_class_texts",
    "shapes_data",
]
