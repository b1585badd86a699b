"""The shipped shapes-world ViT classifier: a plain timm ViT with register tokens and average
pooling, loaded through ``HookedViT.from_timm`` (``vl.load_shapes_vit``)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer

import vision_lens as vl
from vision_lens.shapes import generate
from vision_lens.shapes.encoding import images_to_tensor
from vision_lens.shapes.objectives import attribute_targets
from vision_lens.shapes.pretrained_vit import (
    PROBE_TRAIN_SEED,
    encode_scenes,
    linear_probe_accuracy,
    shapes_vit_config,
    shapes_vit_config_path,
    shapes_vit_eval_path,
    shapes_vit_weights_path,
)
from vision_lens.shapes.vit_classifier import classifier_accuracy

GATE = ("color", "shape", "position")
MAX_WEIGHTS_BYTES = 25 * 1024 * 1024


pytestmark = pytest.mark.skipif(
    not shapes_vit_weights_path().is_file(),
    reason="shipped weights missing: train with scripts/train_shapes_vit.py",
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def plain_timm(head: bool = True) -> torch.nn.Module:
    """The model rebuilt from the shipped files with timm alone (no vision_lens code)."""
    record = json.loads(shapes_vit_config_path().read_text())
    model = VisionTransformer(**record["timm_kwargs"])
    state = load_file(str(shapes_vit_weights_path()))
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    if not head:
        model.reset_classifier(0)
    return model.eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return images_to_tensor(generate(8, seed=123).images)


@pytest.fixture(scope="module")
def features_model() -> vl.HookedViT:
    return vl.load_shapes_vit(head=False)


@pytest.fixture(scope="module")
def classifier() -> vl.HookedViT:
    return vl.load_shapes_vit()


def test_shipped_files_are_small_and_describe_a_register_avg_pool_vit():
    assert shapes_vit_weights_path().stat().st_size <= MAX_WEIGHTS_BYTES
    cfg = shapes_vit_config()
    assert cfg.reg_tokens > 0 and cfg.global_pool == "avg"
    record = json.loads(shapes_vit_config_path().read_text())
    assert record["timm_kwargs"]["num_classes"] == cfg.num_classes
    assert list(record["attributes"]) == list(cfg.attributes)


@pytest.mark.parametrize("head", [True, False], ids=["logits", "features"])
@torch.no_grad()
def test_matches_the_timm_model_built_from_the_shipped_files(head, images, request):
    model = request.getfixturevalue("classifier" if head else "features_model")
    ref = plain_timm(head)(images)
    out = model(images)
    assert out.shape == ref.shape
    assert out.shape[-1] == (
        shapes_vit_config().num_classes if head else shapes_vit_config().embed_dim
    )
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_readout_is_the_register_aware_average(classifier):
    cfg = classifier.cfg
    assert cfg.model_name == "vl-shapes-vit"
    assert not cfg.class_token
    assert cfg.final_ln_after_pool


def test_preprocess_matches_images_to_tensor(classifier):
    raw = generate(2, seed=5).images
    got = torch.stack([classifier.preprocess(Image.fromarray(im)) for im in raw])
    torch.testing.assert_close(got, images_to_tensor(raw), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["classifier", "features_model"])
@torch.no_grad()
def test_layer_decomposition_sums_to_the_output(name, images, request):
    model = request.getfixturevalue(name)
    out, cache = model.run_with_cache(images)
    for mode in ("center", "split"):
        terms = cache.decompose_layers(ln_mode=mode).terms
        assert terms.shape[0] == 2 * model.cfg.n_layers + 2  # embed, attn/mlp per block, bias
        torch.testing.assert_close(terms.sum(0), out, atol=1e-4, rtol=1e-4)


@torch.no_grad()
def test_small_linear_probe_gate_and_head(features_model, classifier):
    train = generate(800, seed=PROBE_TRAIN_SEED, n_objects=1)
    test = generate(300, seed=10_000, n_objects=1)
    acc = linear_probe_accuracy(
        encode_scenes(features_model, train.images),
        train,
        encode_scenes(features_model, test.images),
        test,
        GATE,
    )
    assert all(acc[a] >= 0.9 for a in GATE), acc
    logits = torch.from_numpy(encode_scenes(classifier, test.images)).float()
    head = classifier_accuracy(
        logits, attribute_targets(test, range(len(test))), shapes_vit_config()
    )
    assert all(head[a] >= 0.9 for a in GATE), head


def test_shipped_eval_report_passes_the_gate():
    report = json.loads(shapes_vit_eval_path().read_text())
    assert report["n_test"] >= 1000
    assert all(report["linear_probe"][a] >= 0.95 for a in GATE), report["linear_probe"]
    assert report["gate_passed"]
