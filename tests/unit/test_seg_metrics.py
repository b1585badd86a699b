"""Segmentation metrics (Chefer et al. 2021 protocol) against hand-computed cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from vision_lens.analysis.seg_metrics import (
    SegmentationMetrics,
    average_precision,
    binarize,
    intersection_union,
    pixel_correct,
    rescale_heatmaps,
)


def t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def m(rows):
    return torch.tensor(rows, dtype=torch.bool)


# ------------------------------------------------------------------ normalisation, binarisation
def test_normalize_clips_then_min_max():
    out = rescale_heatmaps(t([[[-2.0, 0.0], [1.0, 4.0]]]))
    # clipped to [0, 0, 1, 4] -> min 0, max 4
    assert torch.allclose(out, t([[[0.0, 0.0], [0.25, 1.0]]]))


def test_normalize_without_clipping_uses_true_minimum():
    out = rescale_heatmaps(t([[[-2.0, 0.0], [1.0, 4.0]]]), clip_negative=False)
    assert torch.allclose(out, t([[[0.0, 2 / 6], [3 / 6, 1.0]]]))


def test_normalize_is_per_image():
    out = rescale_heatmaps(t([[[0.0, 1.0]], [[0.0, 10.0]]]))
    assert torch.allclose(out, t([[[0.0, 1.0]], [[0.0, 1.0]]]))


@pytest.mark.parametrize("value", [3.0, -1.0])
def test_constant_or_negative_heatmap_gives_zeros_and_no_foreground(value):
    heat = torch.full((1, 3, 3), value)
    assert torch.equal(rescale_heatmaps(heat), torch.zeros(1, 3, 3))
    assert not binarize(heat).any()


def test_binarize_thresholds_strictly_above_the_mean():
    # normalised [0, .2, .6, 1], mean .45
    assert torch.equal(binarize(t([[[0.0, 1.0], [3.0, 5.0]]])), m([[[0, 0], [1, 1]]]))
    # normalised [0, .2, .4, 1] (mean .4): .4 is not above the mean
    assert torch.equal(binarize(t([[[0.0, 1.0], [2.0, 5.0]]])), m([[[0, 0], [0, 1]]]))


def test_binarize_numeric_threshold_and_errors():
    heat = t([[[0.0, 1.0], [3.0, 5.0]]])
    assert torch.equal(binarize(heat, 0.1), m([[[0, 1], [1, 1]]]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binarize(heat, 2.0)
    with pytest.raises(ValueError, match="mean"):
        binarize(heat, "median")


# ------------------------------------------------------------------ counts
def test_pixel_correct_and_intersection_union_hand_case():
    pred = m([[[1, 0], [1, 1]]])
    mask = m([[[1, 1], [0, 1]]])
    assert pixel_correct(pred, mask) == (2, 4)
    inter, union = intersection_union(pred, mask)
    # background: pred {(0,1)}, truth {(1,0)} -> inter 0, union 2; foreground: inter 2, union 4
    assert inter.tolist() == [0, 2] and union.tolist() == [2, 4]


# ------------------------------------------------------------------ average precision
def test_ap_foreground_hand_case():
    # ranking: pos (.9), neg (.8), pos (.7), neg (.1) -> AP = (1 + 2/3) / 2
    heat = t([[[0.9, 0.8], [0.7, 0.1]]])
    mask = m([[[1, 0], [1, 0]]])
    ap = average_precision(heat, mask, ap_mode="foreground")
    assert ap.shape == (1,) and ap.dtype == torch.float64
    assert ap.item() == pytest.approx((1 + 2 / 3) / 2)


def test_ap_both_channels_hand_case():
    # pooled scores: fg [.9 .8 .7 .1] vs [1 0 1 0]; bg [.1 .2 .3 .9] vs [0 1 0 1]
    # thresholds .9 (2 pos): P=1 R=.5; .7: P=3/4 R=.75; .2: P=4/6 R=1
    heat = t([[[0.9, 0.8], [0.7, 0.1]]])
    mask = m([[[1, 0], [1, 0]]])
    expected = 0.5 * 1 + 0.25 * 0.75 + 0.25 * (4 / 6)
    assert average_precision(heat, mask).item() == pytest.approx(expected)


def test_ap_perfect_and_empty_mask():
    heat = t([[[1.0, 0.0], [1.0, 0.0]], [[0.2, 0.4], [0.6, 0.8]]])
    mask = m([[[1, 0], [1, 0]], [[0, 0], [0, 0]]])
    fg = average_precision(heat, mask, ap_mode="foreground")
    assert fg[0].item() == pytest.approx(1.0)
    assert fg[1].item() == 0.0  # no positive pixel: undefined -> 0 as np.nan_to_num
    assert average_precision(heat, mask)[0].item() == pytest.approx(1.0)


def test_ap_bad_mode():
    with pytest.raises(ValueError, match="ap_mode"):
        average_precision(t([[[0.0]]]), m([[[1]]]), ap_mode="mean")


# ------------------------------------------------------------------ the accumulator
HEAT = t([[[0.0, 1.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]])
MASK = m([[[0, 1], [0, 1]], [[0, 0], [1, 1]]])
# image 1 perfect; image 2 predicts only the top-left pixel, truth is the bottom row.
EXPECTED = {
    "pixel_accuracy": 5 / 8,
    "iou_background": 3 / 6,
    "iou_foreground": 2 / 5,
    "miou": (3 / 6 + 2 / 5) / 2,
    # image 2 pooled: scores [0 1 1 1 | 1 0 0 0] (bg | fg) vs [1 1 0 0 | 0 0 1 1]:
    # score 1 -> P=1/4 R=1/4; score 0 -> P=1/2 R=1 -> AP = 1/16 + 3/8
    "map": (1 + 1 / 16 + 3 / 8) / 2,
    # image 2 fg only: scores [1 0 0 0] vs [0 0 1 1] -> P=1/2 at R=1 -> AP 1/2
    "map_foreground": (1 + 0.5) / 2,
    "n_images": 2,
}


@pytest.mark.parametrize("split", [False, True])
def test_accumulator_hand_case_streams_over_batches(split):
    metrics = SegmentationMetrics()
    if split:
        metrics.update(HEAT[:1], MASK[:1])
        metrics.update(HEAT[1:], MASK[1:])
    else:
        metrics.update(HEAT, MASK)
    result = metrics.compute()
    assert result.keys() == EXPECTED.keys()
    for key, value in EXPECTED.items():
        assert result[key] == pytest.approx(value), key


def test_accumulator_iou_is_accumulated_not_averaged_per_image():
    # per-image foreground IoUs are 1 and 0 (mean .5); pooled it is 2 / 5
    metrics = SegmentationMetrics()
    metrics.update(HEAT, MASK)
    assert metrics.compute()["iou_foreground"] == pytest.approx(0.4)


def test_accumulator_is_scale_invariant_and_accepts_integer_masks():
    a, b = SegmentationMetrics(), SegmentationMetrics()
    a.update(HEAT, MASK)
    b.update(HEAT * 7.5 + 3.0, MASK.long())
    assert a.compute() == b.compute()


def test_accumulator_reset_and_foreground_mode():
    metrics = SegmentationMetrics(ap_mode="foreground")
    metrics.update(HEAT, MASK)
    assert metrics.compute()["map"] == pytest.approx(EXPECTED["map_foreground"])
    metrics.reset()
    with pytest.raises(ValueError, match="update"):
        metrics.compute()


def test_accumulator_matches_sklearn_on_random_data():
    from sklearn.metrics import average_precision_score

    gen = torch.Generator().manual_seed(0)
    heat = torch.rand(3, 8, 8, generator=gen)
    mask = torch.rand(3, 8, 8, generator=gen) > 0.6
    metrics = SegmentationMetrics(ap_mode="foreground")
    metrics.update(heat, mask)
    expected = np.mean(
        [
            average_precision_score(mk.flatten().numpy(), h.flatten().numpy())
            for h, mk in zip(rescale_heatmaps(heat), mask, strict=True)
        ]
    )
    assert metrics.compute()["map"] == pytest.approx(expected)


def test_errors_are_clear():
    metrics = SegmentationMetrics()
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.update(torch.rand(2, 4, 4), torch.ones(2, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="binary"):
        metrics.update(torch.rand(1, 2, 2), torch.tensor([[[0, 2], [1, 0]]]))
    with pytest.raises(ValueError, match=r"\[batch, H, W\]"):
        metrics.update(torch.rand(1, 2, 4, 4), torch.ones(1, 2, 4, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="floating"):
        metrics.update(torch.ones(1, 2, 2, dtype=torch.long), torch.ones(1, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="ap_mode"):
        SegmentationMetrics(ap_mode="x")


def test_threshold_sweep_reports_the_best_fixed_threshold():
    # image 2 of HEAT normalised is [1 0 0 0]: any threshold below 1 predicts the top-left only;
    # a fixed threshold of .5 on image 1 matches the mean threshold, so the sweep reproduces
    # the protocol's mIoU there, and a threshold of 1.0 predicts nothing at all.
    metrics = SegmentationMetrics(sweep=[0.5, 1.0])
    metrics.update(HEAT, MASK)
    result = metrics.compute()
    assert result["sweep_miou"][0] == pytest.approx(EXPECTED["miou"])
    # nothing predicted: background IoU = 4 true background px / 8 px, foreground IoU 0
    assert result["sweep_miou"][1] == pytest.approx((4 / 8 + 0.0) / 2)
    assert result["best_threshold"] == 0.5
    assert result["miou_best_threshold"] == pytest.approx(EXPECTED["miou"])
    with pytest.raises(ValueError, match="sweep"):
        SegmentationMetrics(sweep=[1.5])


def test_ap_counts_tied_scores_together():
    # Tied scores form one threshold (scikit-learn's definition, as the reference code): .5
    # catches both positives and one negative at once -> P=2/3 at R=1. Ranking inside the tie
    # (positives first: 1, negatives first: (1/2 + 2/3) / 2) or interpolating would differ.
    heat = t([[[0.5, 0.5], [0.5, 0.1]]])
    mask = m([[[1, 0], [1, 0]]])
    assert average_precision(heat, mask, ap_mode="foreground").item() == pytest.approx(2 / 3)
    # pooled: bg .9 (pos): P=1 R=1/4; the six scores at .5 hold 3 positives: P=4/7 R=1
    expected = 1 / 4 * 1 + 3 / 4 * (4 / 7)
    assert average_precision(heat, mask).item() == pytest.approx(expected)


def test_ap_without_positives_is_zero_and_silent():
    heat = t([[[0.2, 0.4], [0.6, 0.8]]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn would warn "No positive class found"
        ap = average_precision(heat, m([[[0, 0], [0, 0]]]), ap_mode="foreground")
    assert ap.tolist() == [0.0]
