"""Names renamed in 0.2 keep working for one release, with a DeprecationWarning, and give the
same results as their new names."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from support.tiny import random_images, tiny_model

import vision_lens as vl
from vision_lens.analysis.seg_metrics import normalize_heatmaps, rescale_heatmaps
from vision_lens.analysis.segmentation import patch_token_scores, segment


def test_normalize_heatmaps_is_rescale_heatmaps():
    heatmaps = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0))
    with pytest.warns(DeprecationWarning, match="rescale_heatmaps"):
        old = normalize_heatmaps(heatmaps)
    assert torch.equal(old, rescale_heatmaps(heatmaps))
    with pytest.warns(DeprecationWarning):
        assert torch.equal(vl.analysis.normalize_heatmaps(heatmaps), old)


class _Fixed:
    """Fixed random text embeddings (a TextEncoder)."""

    def encode(self, texts, normalize=True, batch_size=256, progress=False):
        gen = torch.Generator().manual_seed(len(texts))
        return torch.nn.functional.normalize(torch.randn(len(texts), 16, generator=gen), dim=-1)

    def zero_shot_weights(self, classnames, templates, progress=False, batch_size=256):
        return self.encode(classnames)


def test_segment_normalize_keyword_is_unit_output():
    model, images = tiny_model(), random_images(2)
    new = segment(model, _Fixed(), images, ["a", "b"], unit_output=True, progress=False)
    with pytest.warns(DeprecationWarning, match="normalize= is now unit_output="):
        old = segment(model, _Fixed(), images, ["a", "b"], normalize=True, progress=False)
    assert torch.equal(old, new)
    _, cache = model.run_with_cache(images)
    directions = torch.ones(2, 16)
    with pytest.raises(TypeError, match="unit_output= alone"), pytest.warns(DeprecationWarning):
        patch_token_scores(cache, directions, normalize=True, unit_output=True)


def test_seg_eval_moved_to_apps():
    sys.modules.pop("vision_lens.analysis.seg_eval", None)
    with pytest.warns(DeprecationWarning, match="vision_lens.apps.seg_eval"):
        old = importlib.import_module("vision_lens.analysis.seg_eval")
    from vision_lens.apps import seg_eval

    assert old.run_eval_seg is seg_eval.run_eval_seg
    assert vl.analysis.evaluate_segmentation is seg_eval.evaluate_segmentation


def test_decompose_dataset_embed_key_is_image_embed():
    from vision_lens.analysis.batched import decompose_dataset

    out = decompose_dataset(tiny_model(), random_images(3), batch_size=2, progress=False)
    assert "embed" not in out and out["image_embed"].shape == (3, 16)
    with pytest.warns(DeprecationWarning, match="image_embed"):
        assert out["embed"] is out["image_embed"]
    with pytest.raises(KeyError):
        out["nothing"]
