"""Position embeddings resampled for another input size, checked against timm's own loading."""

from __future__ import annotations

import pytest
import timm
import torch
from support.arch_timm import perturb_
from timm.models.vision_transformer import checkpoint_filter_fn

import vision_lens as vl
from vision_lens.loading.base import LoadedTower, resample_position_embeddings


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("vit_small_patch16_224", dict(depth=2, img_size=64, num_classes=0)),
        ("vit_small_patch14_reg4_dinov2", dict(depth=2, img_size=56, num_classes=0)),
    ],
)
def test_resampled_model_matches_timm_loading_at_the_new_size(name, kwargs):
    torch.manual_seed(0)
    small = perturb_(timm.create_model(name, pretrained=False, **kwargs)).eval()
    big_size = kwargs["img_size"] + 2 * small.patch_embed.patch_size[0]
    big = timm.create_model(name, pretrained=False, **{**kwargs, "img_size": big_size}).eval()
    # timm resamples the position embeddings when it loads a checkpoint at another img_size.
    big.load_state_dict(checkpoint_filter_fn(small.state_dict(), big))
    model = vl.HookedViT.from_timm(small, image_size=big_size)
    assert model.cfg.image_size == (big_size, big_size) and model.preprocess is None
    x = torch.randn(2, 3, big_size, big_size)
    with torch.no_grad():
        torch.testing.assert_close(model(x), big(x), atol=1e-5, rtol=1e-5)
    _, cache = model.run_with_cache(x)
    terms, _ = cache.decompose_layers()
    torch.testing.assert_close(terms.sum(0), big(x).detach(), atol=1e-4, rtol=1e-4)


def test_same_size_is_unchanged_and_bad_size_is_refused():
    cfg = vl.HookedViTConfig(
        n_layers=1, d_model=16, n_heads=2, d_mlp=32, d_embed=8, image_size=16, patch_size=8
    )
    tower = LoadedTower(cfg, vl.HookedViT(cfg).init_weights(seed=0).state_dict(), None)
    assert resample_position_embeddings(tower, 16) is tower
    with pytest.raises(ValueError, match="multiple of patch_size"):
        resample_position_embeddings(tower, 20)
