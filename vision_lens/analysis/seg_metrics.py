"""Zero-shot segmentation metrics: the protocol of Chefer et al. 2021, streamed over batches.

The protocol (used by Gandelsman et al. 2024, Table 3, on ImageNet-segmentation), per image:

1. The soft heatmap is clipped at 0 and min-max normalised to ``[0, 1]``
   (:func:`rescale_heatmaps`; a constant heatmap becomes all zeros).
2. It is binarised at its own mean: foreground where ``heatmap > mean`` (:func:`binarize`).
3. Over the dataset:

   * **pixel accuracy**: correctly labelled pixels / all pixels, accumulated globally;
   * **mIoU**: background and foreground intersections and unions are each summed over the whole
     dataset, giving one IoU per class; mIoU is their mean;
   * **mAP**: per image, the average precision of the soft heatmap, averaged over images, with
     scikit-learn's ``average_precision_score`` as the reference code (``get_ap_scores``) does.
     Also as there, both classes are scored at once: the foreground channel ``h`` against the
     mask and the background channel ``1 - h`` against its complement, pooled into one
     precision-recall curve (``ap_mode="both"``). ``ap_mode="foreground"`` scores only ``h``
     against the mask.

Masks and heatmaps must be at the same resolution (the model's input size, with masks resized and
cropped exactly as their images; see :mod:`vision_lens.datasets.masks`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from jaxtyping import Bool, Float
from torch import Tensor

ApMode = Literal["both", "foreground"]
AP_MODES = ("both", "foreground")


def rescale_heatmaps(
    heatmaps: Float[Tensor, "batch height width"], clip_negative: bool = True
) -> Float[Tensor, "batch height width"]:
    """Clip at 0 and min-max rescale each heatmap to ``[0, 1]``, as the reference code does.

    (Called ``normalize_heatmaps`` before 0.2: "normalize" now only means scaling a vector to
    unit norm.)

    Args:
        heatmaps: ``[batch, H, W]`` soft heatmaps (any scale).
        clip_negative: Clip negative values to 0 first (the reference code for the token
            decomposition does; for non-negative heatmaps it changes nothing).

    Returns:
        ``[batch, H, W]`` float32 in ``[0, 1]``; a constant heatmap (or one that is all
        negative, with ``clip_negative``) gives all zeros.

    Example:
        >>> rescale_heatmaps(torch.tensor([[[-1.0, 1.0], [2.0, 3.0]]]))
        tensor([[[0.0000, 0.3333],
                 [0.6667, 1.0000]]])
    """
    heatmaps = _check_heatmaps(heatmaps)
    x = heatmaps.float()
    if clip_negative:
        x = x.clamp(min=0)
    flat = x.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - lo
    out = torch.where(span > 0, (flat - lo) / span.clamp(min=torch.finfo(x.dtype).tiny), 0.0)
    return out.view_as(x)


def normalize_heatmaps(
    heatmaps: Float[Tensor, "batch height width"], clip_negative: bool = True
) -> Float[Tensor, "batch height width"]:
    """Deprecated name of :func:`rescale_heatmaps` (removed in 0.3)."""
    warnings.warn(
        "normalize_heatmaps is now rescale_heatmaps (the old name is removed in 0.3).",
        DeprecationWarning,
        stacklevel=2,
    )
    return rescale_heatmaps(heatmaps, clip_negative)


def binarize(
    heatmaps: Float[Tensor, "batch height width"],
    threshold: Literal["mean"] | float = "mean",
    clip_negative: bool = True,
) -> Bool[Tensor, "batch height width"]:
    """Foreground masks from soft heatmaps: normalise (:func:`rescale_heatmaps`) and threshold.

    Args:
        heatmaps: ``[batch, H, W]`` soft heatmaps.
        threshold: ``"mean"`` (the protocol: each normalised heatmap's own mean) or a number in
            ``[0, 1]`` applied to the normalised heatmaps.
        clip_negative: Clip at 0 before normalising (the protocol).

    Returns:
        ``[batch, H, W]`` bool, ``True`` = foreground (strictly above the threshold).

    Example:
        >>> binarize(torch.tensor([[[0.0, 1.0], [3.0, 5.0]]])).int()
        tensor([[[0, 0],
                 [1, 1]]], dtype=torch.int32)
    """
    normalized = rescale_heatmaps(heatmaps, clip_negative=clip_negative)
    if isinstance(threshold, str):
        if threshold != "mean":
            raise ValueError(f"threshold must be 'mean' or a number in [0, 1], got {threshold!r}.")
        level = normalized.flatten(1).mean(dim=1)[:, None, None]
    else:
        level = float(threshold)
        if not 0.0 <= level <= 1.0:
            raise ValueError(
                f"A numeric threshold applies to heatmaps normalised to [0, 1]; got {level}."
            )
    return normalized > level


def pixel_correct(
    pred: Bool[Tensor, "batch height width"], masks: Bool[Tensor, "batch height width"]
) -> tuple[int, int]:
    """Correctly labelled pixels and labelled pixels (all of them) of a batch.

    Example:
        >>> pred = torch.tensor([[[True, False], [True, True]]])
        >>> mask = torch.tensor([[[True, True], [False, True]]])
        >>> pixel_correct(pred, mask)
        (2, 4)
    """
    pred, masks = _check_pair(pred, masks)
    return int((pred == masks).sum()), int(masks.numel())


def intersection_union(
    pred: Bool[Tensor, "batch height width"], masks: Bool[Tensor, "batch height width"]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class pixel intersections and unions of a batch, classes ``(background, foreground)``.

    Example:
        >>> pred = torch.tensor([[[True, False], [True, True]]])
        >>> mask = torch.tensor([[[True, True], [False, True]]])
        >>> intersection_union(pred, mask)
        (array([0, 2]), array([2, 4]))
    """
    pred, masks = _check_pair(pred, masks)
    inter = np.array([int((~pred & ~masks).sum()), int((pred & masks).sum())])
    union = np.array([int((~pred | ~masks).sum()), int((pred | masks).sum())])
    return inter, union


def average_precision(
    heatmaps: Float[Tensor, "batch height width"],
    masks: Bool[Tensor, "batch height width"],
    ap_mode: ApMode = "both",
) -> Float[Tensor, " batch"]:
    """Per-image average precision of soft heatmaps against binary masks.

    scikit-learn's ``average_precision_score``, as in the reference code: the sum over distinct
    score thresholds of the recall increase times the precision, without interpolation, tied
    scores counted together. An undefined AP (no positive pixel) counts as 0, as
    ``np.nan_to_num`` makes it in the reference code. The heatmaps are used as given: the
    protocol passes :func:`rescale_heatmaps` of them (which :class:`SegmentationMetrics` does).

    Args:
        heatmaps: ``[batch, H, W]`` scores, higher = more foreground (in ``[0, 1]`` for
            ``ap_mode="both"``, whose background score is ``1 - heatmap``).
        masks: ``[batch, H, W]`` bool ground truth.
        ap_mode: ``"both"`` (the reference protocol: foreground and background channels pooled)
            or ``"foreground"``.

    Returns:
        ``[batch]`` float64 APs.

    Example:
        >>> h = torch.tensor([[[0.9, 0.8], [0.1, 0.2]]])
        >>> m = torch.tensor([[[True, False], [False, False]]])
        >>> average_precision(h, m, ap_mode="foreground")
        tensor([1.], dtype=torch.float64)
    """
    if ap_mode not in AP_MODES:
        raise ValueError(f"ap_mode must be one of {AP_MODES}, got {ap_mode!r}.")
    heatmaps, masks = _check_heatmaps_masks(heatmaps, masks)
    scores = heatmaps.detach().double().flatten(1).cpu().numpy()
    truth = masks.flatten(1).numpy()
    out = []
    for score, target in zip(scores, truth, strict=True):
        if ap_mode == "both":
            score = np.concatenate([1.0 - score, score])
            target = np.concatenate([~target, target])
        out.append(_ranking_ap(score, target))
    return torch.tensor(out, dtype=torch.float64)


def _ranking_ap(score: np.ndarray, target: np.ndarray) -> float:
    """scikit-learn's average precision of one ranking; 0 without positives (undefined)."""
    # Imported here: sklearn.metrics takes seconds to import and only the metrics need it.
    from sklearn.metrics import average_precision_score

    if not target.any():
        return 0.0
    return float(average_precision_score(target, score))


class SegmentationMetrics:
    """Accumulates the protocol's metrics over batches (see the module docstring).

    Args:
        threshold: Binarisation threshold (``"mean"``, the protocol, or a number in ``[0, 1]``).
        ap_mode: ``"both"`` (the protocol) or ``"foreground"``.
        clip_negative: Clip heatmaps at 0 before normalising (the protocol).
        sweep: Optional fixed thresholds in ``[0, 1]``: the IoUs at each are accumulated too, and
            :meth:`compute` reports the dataset-level best one (an oracle, to see how much the
            mean threshold costs a method; not part of the protocol).

    Example:
        >>> metrics = SegmentationMetrics()
        >>> heat = torch.tensor([[[0.0, 1.0], [0.0, 1.0]]])
        >>> metrics.update(heat, heat > 0.5)
        >>> result = metrics.compute()
        >>> result["pixel_accuracy"], result["miou"], result["map"], result["n_images"]
        (1.0, 1.0, 1.0, 1)
    """

    def __init__(
        self,
        threshold: Literal["mean"] | float = "mean",
        ap_mode: ApMode = "both",
        clip_negative: bool = True,
        sweep: Sequence[float] | None = None,
    ):
        if ap_mode not in AP_MODES:
            raise ValueError(f"ap_mode must be one of {AP_MODES}, got {ap_mode!r}.")
        self.sweep = None if sweep is None else torch.tensor([float(v) for v in sweep])
        if self.sweep is not None and (
            self.sweep.numel() == 0 or self.sweep.min() < 0 or self.sweep.max() > 1
        ):
            raise ValueError(f"sweep must be thresholds in [0, 1], got {sweep!r}.")
        self.threshold = threshold
        self.ap_mode = ap_mode
        self.clip_negative = clip_negative
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.correct = 0
        self.labeled = 0
        self.intersection = np.zeros(2, dtype=np.int64)
        self.union = np.zeros(2, dtype=np.int64)
        self.ap: list[float] = []
        self.ap_foreground: list[float] = []
        k = 0 if self.sweep is None else self.sweep.numel()
        self.sweep_intersection = np.zeros((k, 2), dtype=np.int64)
        self.sweep_union = np.zeros((k, 2), dtype=np.int64)

    def update(
        self,
        heatmaps: Float[Tensor, "batch height width"],
        masks: Bool[Tensor, "batch height width"],
    ) -> None:
        """Add a batch of soft heatmaps and their ground-truth masks (same ``[batch, H, W]``)."""
        heatmaps, masks = _check_heatmaps_masks(heatmaps, masks)
        normalized = rescale_heatmaps(heatmaps, clip_negative=self.clip_negative)
        pred = binarize(normalized, self.threshold, clip_negative=False)
        correct, labeled = pixel_correct(pred, masks)
        inter, union = intersection_union(pred, masks)
        self.correct += correct
        self.labeled += labeled
        self.intersection += inter
        self.union += union
        self.ap += average_precision(normalized, masks, self.ap_mode).tolist()
        if self.ap_mode == "foreground":
            self.ap_foreground = self.ap
        else:
            self.ap_foreground += average_precision(normalized, masks, "foreground").tolist()
        if self.sweep is not None:
            for k, level in enumerate(self.sweep.tolist()):
                inter, union = intersection_union(normalized > level, masks)
                self.sweep_intersection[k] += inter
                self.sweep_union[k] += union

    @property
    def n_images(self) -> int:
        """Images seen so far."""
        return len(self.ap)

    def compute(self) -> dict[str, Any]:
        """The metrics so far, as fractions in ``[0, 1]``.

        Returns:
            ``{"pixel_accuracy", "miou", "map", "iou_background", "iou_foreground",
            "map_foreground", "n_images"}``; ``map`` follows ``ap_mode``, ``map_foreground`` is
            the foreground-only AP (more telling when objects are small). With ``sweep`` also
            ``"best_threshold"``, ``"miou_best_threshold"`` and ``"sweep_miou"`` (per
            threshold).

        Raises:
            ValueError: Nothing was added.
        """
        if not self.ap:
            raise ValueError("No images were added; call update(heatmaps, masks) first.")
        iou = self.intersection / np.maximum(self.union, 1)
        return {
            "pixel_accuracy": self.correct / self.labeled,
            "miou": float(iou.mean()),
            "map": float(np.mean(self.ap)),
            "iou_background": float(iou[0]),
            "iou_foreground": float(iou[1]),
            "map_foreground": float(np.mean(self.ap_foreground)),
            "n_images": self.n_images,
        } | self._sweep_results()

    def _sweep_results(self) -> dict[str, Any]:
        if self.sweep is None:
            return {}
        miou = (self.sweep_intersection / np.maximum(self.sweep_union, 1)).mean(1)
        best = int(np.argmax(miou))
        return {
            "best_threshold": float(self.sweep[best]),
            "miou_best_threshold": float(miou[best]),
            "sweep_miou": [float(v) for v in miou],
        }


def _check_heatmaps(heatmaps: object) -> Float[Tensor, "batch height width"]:
    if not isinstance(heatmaps, Tensor):
        raise TypeError(f"heatmaps must be a tensor [batch, H, W], got {type(heatmaps).__name__}.")
    if heatmaps.dim() != 3:
        raise ValueError(
            f"heatmaps must be [batch, H, W], got shape {tuple(heatmaps.shape)} (one text per "
            "image: select it, e.g. heatmaps[:, 0])."
        )
    if not heatmaps.is_floating_point():
        raise TypeError(f"heatmaps must be floating point, got {heatmaps.dtype}.")
    return heatmaps


def _check_masks(masks: object) -> Bool[Tensor, "batch height width"]:
    """Binary masks ``[batch, H, W]`` as a bool tensor on the CPU."""
    if not isinstance(masks, Tensor):
        raise TypeError(f"masks must be a tensor [batch, H, W], got {type(masks).__name__}.")
    if masks.dim() != 3:
        raise ValueError(f"masks must be [batch, H, W], got shape {tuple(masks.shape)}.")
    if masks.dtype != torch.bool:
        if not ((masks == 0) | (masks == 1)).all():
            raise ValueError(
                "masks must be binary (bool, or integers 0/1); threshold them first, e.g. "
                "masks > 0."
            )
        masks = masks.bool()
    return masks.cpu()


def _check_pair(pred: object, masks: object) -> tuple[Tensor, Tensor]:
    """Predicted and true masks, both bool ``[batch, H, W]`` on the CPU, of one shape."""
    masks = _check_masks(masks)
    if not isinstance(pred, Tensor) or pred.dtype != torch.bool:
        got = pred.dtype if isinstance(pred, Tensor) else type(pred).__name__
        raise TypeError(f"pred must be a bool tensor [batch, H, W], got {got}.")
    if pred.shape != masks.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and masks {tuple(masks.shape)} differ in shape."
        )
    return pred.cpu(), masks


def _check_heatmaps_masks(heatmaps: object, masks: object) -> tuple[Tensor, Tensor]:
    """Soft heatmaps (as given) and bool CPU masks of the same ``[batch, H, W]`` shape."""
    heatmaps, masks = _check_heatmaps(heatmaps), _check_masks(masks)
    if heatmaps.shape != masks.shape:
        raise ValueError(
            f"heatmaps {tuple(heatmaps.shape)} and masks {tuple(masks.shape)} differ in shape; "
            "upsample the heatmaps to the input size and resize/crop the masks exactly as their "
            "images (see vision_lens.datasets.masks)."
        )
    return heatmaps, masks
