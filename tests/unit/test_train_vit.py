"""Tests for the shapes-world ViT classifier's model, loss and training loop (tiny, CPU)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer

from vision_lens.shapes import generate
from vision_lens.shapes.encoding import images_to_tensor
from vision_lens.shapes.objectives import attribute_targets
from vision_lens.shapes.train_vit import (
    CONFIG_NAME,
    LOG_NAME,
    WEIGHTS_NAME,
    ViTTrainConfig,
    train_shapes_vit,
)
from vision_lens.shapes.vit_classifier import (
    ATTRIBUTES,
    ShapesViTConfig,
    attribute_classes,
    build_vit,
    classifier_accuracy,
    classifier_loss,
    split_logits,
)

TINY = ShapesViTConfig(embed_dim=32, depth=1, num_heads=2, reg_tokens=2)


def tiny_train_config(**overrides) -> ViTTrainConfig:
    kw = dict(
        steps=3,
        batch_size=4,
        n_images=12,
        n_val=6,
        warmup=1,
        eval_every=2,
        checkpoint_every=1,
        model=TINY,
    )
    return ViTTrainConfig(**{**kw, **overrides})


def test_slices_cover_the_head_in_order():
    cfg = ShapesViTConfig()
    stops = [s.stop for s in cfg.slices.values()]
    starts = [s.start for s in cfg.slices.values()]
    assert starts[0] == 0 and stops[-1] == cfg.num_classes
    assert starts[1:] == stops[:-1]
    assert list(cfg.slices) == list(ATTRIBUTES)
    assert {a: s.stop - s.start for a, s in cfg.slices.items()} == {
        a: len(attribute_classes(a)) for a in ATTRIBUTES
    }


def test_config_round_trips_and_builds_plain_timm_vit(tmp_path):
    path = TINY.save(tmp_path / "cfg.json")
    assert ShapesViTConfig.load(path) == TINY
    record = json.loads(path.read_text())
    model = VisionTransformer(**record["timm_kwargs"])  # no vision_lens needed
    assert model.num_classes == TINY.num_classes
    assert model.num_prefix_tokens == TINY.reg_tokens and model.cls_token is None
    with pytest.raises(ValueError, match="num_classes"):
        ShapesViTConfig.from_dict(
            {**record, "timm_kwargs": {**record["timm_kwargs"], "num_classes": 3}}
        )
    with pytest.raises(ValueError, match="unknown attribute"):
        ShapesViTConfig(attributes=("colour",))


def test_sincos_init_and_eval_transform_match_images_to_tensor():
    from PIL import Image

    from vision_lens.loading.timm import timm_preprocess

    model = build_vit(TINY, sincos_pos_init=True)
    assert model.pos_embed.shape[1] == (64 // 8) ** 2  # no_embed_class: patches only
    assert model.pos_embed.abs().sum() > 0
    images = generate(2, seed=0).images
    ref = images_to_tensor(images)
    transform = timm_preprocess(model)
    got = torch.stack([transform(Image.fromarray(im)) for im in images])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_loss_and_accuracy_follow_the_slices():
    cfg = TINY
    ds = generate(6, seed=0, n_objects=(1, 4))
    targets = attribute_targets(ds, range(6))
    # Perfect logits: loss ~0 and accuracy 1 on every labelled attribute.
    logits = torch.full((6, cfg.num_classes), -30.0)
    for a, s in cfg.slices.items():
        y = targets[a]
        rows = (y != -100).nonzero().flatten()
        logits[rows, s.start + y[rows]] = 30.0
    assert float(classifier_loss(logits, targets, cfg)) < 1e-6
    acc = classifier_accuracy(logits, targets, cfg)
    assert set(acc) == set(ATTRIBUTES) and all(v == 1.0 for v in acc.values())
    # Uniform logits: each slice contributes log(n_classes) times its weight.
    flat = classifier_loss(torch.zeros(6, cfg.num_classes), targets, cfg, weights={})
    expected = sum(
        np.log(len(attribute_classes(a))) for a in ATTRIBUTES if (targets[a] != -100).any()
    )
    assert float(flat) == pytest.approx(expected, rel=1e-5)
    assert split_logits(logits, cfg)["position"].shape == (6, 9)
    with pytest.raises(ValueError, match="classes"):
        split_logits(torch.zeros(1, 5), cfg)


def test_train_three_steps_saves_loadable_timm_files(tmp_path):
    result = train_shapes_vit(tiny_train_config(), tmp_path, progress=False, log=None)
    assert result.finished and result.steps_done == 3 and len(result.losses) == 3
    assert all(np.isfinite(result.losses))
    assert [h["step"] for h in result.history] == [2, 3]
    assert "val_shape" in result.history[-1]
    cfg = ShapesViTConfig.load(tmp_path / CONFIG_NAME)
    model = VisionTransformer(**cfg.timm_kwargs).eval()
    state = load_file(tmp_path / WEIGHTS_NAME)
    assert all(v.dtype == torch.float16 for v in state.values())
    model.load_state_dict({k: v.float() for k, v in state.items()})
    x = images_to_tensor(generate(2, seed=1).images)
    with torch.no_grad():
        torch.testing.assert_close(model(x), result.model(x), atol=2e-2, rtol=2e-2)
    log = json.loads((tmp_path / LOG_NAME).read_text())
    assert log["steps_done"] == 3


def test_resume_replays_the_uninterrupted_run(tmp_path):
    whole = train_shapes_vit(tiny_train_config(), None, progress=False, log=None)
    first = train_shapes_vit(tiny_train_config(), tmp_path, stop_after=2, progress=False, log=None)
    assert not first.finished and first.steps_done == 2
    assert not (tmp_path / WEIGHTS_NAME).exists()
    second = train_shapes_vit(tiny_train_config(), tmp_path, resume=True, progress=False, log=None)
    assert second.finished and second.steps_done == 3
    np.testing.assert_allclose(second.losses, whole.losses, rtol=1e-4)
    assert (tmp_path / WEIGHTS_NAME).exists()
