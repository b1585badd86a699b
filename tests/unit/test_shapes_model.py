"""Tests for the shipped shapes-world CLIP and its training code (fast, CPU)."""

from __future__ import annotations

import json
import math

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from vision_lens.shapes import BACKGROUNDS, POSITIONS, SHAPES, generate, sample_captions
from vision_lens.shapes.captions import true_captions
from vision_lens.shapes.clip_model import TrainConfig, build_model, shapes_clip_config
from vision_lens.shapes.encoding import encode_images, encode_text_trimmed, images_to_tensor
from vision_lens.shapes.evaluate import attribute_accuracy, ensemble_texts, zero_shot_accuracy
from vision_lens.shapes.objectives import attribute_targets, multi_positive_clip_loss
from vision_lens.shapes.pretrained import (
    SHAPES_MODEL_NAME,
    load_shapes_open_clip,
    register_shapes_config,
    shapes_config_path,
    shapes_tokenizer,
    shapes_weights_path,
)
from vision_lens.shapes.train import train_shapes_clip, warm_start_image_tower
from vision_lens.shapes.train_data import CaptionTokenizer, TrainingScenes

MAX_WEIGHTS_BYTES = 25 * 1024 * 1024

needs_weights = pytest.mark.skipif(
    not shapes_weights_path().is_file(),
    reason="shipped weights missing: train with scripts/train_shapes_clip.py",
)


@pytest.fixture(scope="module")
def shipped():
    torch.manual_seed(0)
    model, preprocess = load_shapes_open_clip()
    return model, preprocess, shapes_tokenizer()


@pytest.fixture(scope="module")
def heldout():
    return generate(300, seed=10_000, n_objects=1)


@needs_weights
def test_shipped_config_is_a_multi_head_multi_layer_vit():
    cfg = json.loads(shapes_config_path().read_text())
    vision = cfg["vision_cfg"]
    assert shapes_config_path().stem == SHAPES_MODEL_NAME
    assert vision["layers"] >= 4
    assert vision["width"] // vision["head_width"] >= 4
    assert vision["image_size"] == 64
    assert register_shapes_config() == SHAPES_MODEL_NAME
    assert register_shapes_config() == SHAPES_MODEL_NAME  # idempotent
    assert SHAPES_MODEL_NAME in open_clip.list_models()


@needs_weights
def test_weights_file_is_small():
    assert shapes_weights_path().is_file()
    assert shapes_weights_path().stat().st_size <= MAX_WEIGHTS_BYTES


@needs_weights
def test_hooked_vit_matches_open_clip(shipped, heldout):
    import vision_lens

    model = shipped[0]
    register_shapes_config()
    hooked = vision_lens.HookedViT.from_open_clip(
        SHAPES_MODEL_NAME, pretrained=str(shapes_weights_path())
    )
    x = images_to_tensor(heldout.images[:16])
    with torch.no_grad():
        expected = model.encode_image(x)
        got = hooked(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@needs_weights
def test_preprocess_equals_images_to_tensor(shipped, heldout):
    preprocess = shipped[1]
    for i in range(3):
        expected = images_to_tensor(heldout.images[i : i + 1])[0]
        got = preprocess(Image.fromarray(heldout.images[i]))
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


@needs_weights
@pytest.mark.parametrize("attribute", ["color", "shape", "position"])
def test_attribute_accuracy_on_heldout_scenes(shipped, heldout, attribute):
    model, _, tokenizer = shipped
    feats = encode_images(model, heldout.images)
    res = attribute_accuracy(model, tokenizer, heldout, attribute, image_features=feats)
    assert res["accuracy"] >= 0.8, res["most_confused"]
    ens = attribute_accuracy(
        model,
        tokenizer,
        heldout,
        attribute,
        class_texts=ensemble_texts(attribute, "grammar"),
        image_features=feats,
    )
    assert ens["accuracy"] >= 0.85


@needs_weights
def test_zero_shot_accuracy_is_a_deprecated_alias(shipped, heldout):
    model, _, tokenizer = shipped
    scenes = heldout.subset(range(40))
    with pytest.warns(DeprecationWarning, match="attribute_accuracy"):
        old = zero_shot_accuracy(model, tokenizer, scenes, "shape", top_confusions=1)
    new = attribute_accuracy(model, tokenizer, scenes, "shape", top_confusions=1)
    np.testing.assert_equal(old, new)  # per_class is NaN for shapes without scenes


def test_old_train_and_evaluate_import_paths_still_work():
    from vision_lens.shapes import clip_model, encoding, objectives, train, train_data
    from vision_lens.shapes import evaluate as evaluate_module

    # The public names of vision_lens.shapes.train before the split, by the module that defines
    # them now. A fixed list, the old API, and not the modules' __all__: their new names (e.g.
    # objectives.param_groups) need not be importable from train.
    moved = {
        clip_model: """SHAPES_MODEL_NAME TrainConfig build_model init_sincos_pos_embed
            register_config save_weights shapes_clip_config write_config""",
        encoding: "IMAGE_MEAN IMAGE_STD encode_text_trimmed images_to_tensor",
        train_data: """MULTI_MODE_WEIGHTS SINGLE_MODE_WEIGHTS VALIDATION_SEED CaptionTokenizer
            TrainingScenes make_training_scenes sample_batch_captions""",
        objectives: """ATTRIBUTE_LOSS_WEIGHTS WARM_OBJECT_ATTRIBUTES attribute_loss
            attribute_targets lr_at make_attribute_probes multi_positive_clip_loss""",
    }
    for module, names in moved.items():
        for name in names.split():
            assert getattr(train, name) is getattr(module, name), name
    assert train.true_captions is true_captions
    assert train.register_shapes_config is register_shapes_config
    for name in ("encode_images", "encode_texts", "class_embeddings"):
        assert getattr(evaluate_module, name) is getattr(encoding, name), name


def test_shapes_modules_import_each_other_without_cycles():
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("vision_lens")
    shapes = sorted(m for m in graph.modules if m.startswith("vision_lens.shapes."))
    for importer in shapes:
        for imported in graph.find_modules_directly_imported_by(importer):
            if imported.startswith("vision_lens.shapes."):
                assert not graph.chain_exists(importer=imported, imported=importer), (
                    f"import cycle: {importer} <-> {imported}"
                )


def test_images_to_tensor_shape_and_values():
    img = np.full((2, 64, 64, 3), 255, dtype=np.uint8)
    x = images_to_tensor(img)
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])
    torch.testing.assert_close(x[0, :, 0, 0], (1 - mean) / std)


def test_true_captions_cover_generator_captions():
    ds = generate(60, seed=5)
    for seed in range(3):
        for i, cap in enumerate(sample_captions(ds, seed=seed)):
            assert cap in true_captions(ds.attributes[i], ds.backgrounds[i])


def test_multi_positive_loss_reduces_to_clip_loss():
    torch.manual_seed(0)
    img, txt = torch.randn(6, 8), torch.randn(6, 8)
    scale = torch.tensor(math.log(10.0))
    ours = multi_positive_clip_loss(img, txt, torch.eye(6, dtype=torch.bool), scale)
    reference = open_clip.ClipLoss()(
        torch.nn.functional.normalize(img, dim=-1),
        torch.nn.functional.normalize(txt, dim=-1),
        scale.exp(),
    )
    torch.testing.assert_close(ours, reference)


def _tiny_config(**kw) -> TrainConfig:
    """A tiny model trained for 3 steps on 20 images, on one thread, without evaluation or time
    limit; ``kw`` overrides any of it."""
    model_cfg = shapes_clip_config(
        embed_dim=16,
        vision_cfg=dict(width=32, head_width=16, layers=2),
        text_cfg=dict(width=32, heads=2, layers=1, context_length=64),
    )
    run = dict(steps=3, batch_size=8, n_images=20, n_val=20, warmup=1, warm_steps=2)
    setup = dict(eval_every=0, threads=1, max_minutes=None, model_name="vl-shapes-test-tiny")
    return TrainConfig(**{**run, **setup, "model_cfg": model_cfg, **kw})


def test_encode_text_trimmed_matches_encode_text():
    model = build_model(_tiny_config()).eval()
    tok = CaptionTokenizer("ViT-B-32", 64)
    texts = ["a red object", "two objects: a red circle in the top and a blue square", "a ring"]
    tokens = tok(texts)
    with torch.no_grad():
        torch.testing.assert_close(encode_text_trimmed(model, tokens), model.encode_text(tokens))


def test_training_smoke(tmp_path):
    cfg = _tiny_config()
    initial = build_model(cfg).state_dict()
    res = train_shapes_clip(cfg, out=tmp_path, progress=False, log=None)
    assert res.steps_done == 3 and len(res.losses) == 3
    assert all(math.isfinite(v) for v in res.losses)
    trained = res.model.state_dict()
    changed = [k for k in initial if not torch.equal(initial[k], trained[k])]
    assert "visual.conv1.weight" in changed and "text_projection" in changed
    # The saved config + float16 weights load back through open_clip's own path.
    assert res.config_path.name == "vl-shapes-test-tiny.json"
    loaded = open_clip.create_model("vl-shapes-test-tiny", pretrained=str(res.weights_path))
    w = loaded.state_dict()["visual.conv1.weight"]
    torch.testing.assert_close(w, trained["visual.conv1.weight"].half().float())


def test_stop_after_replays_a_cut_short_run():
    """``stop_after`` stops early under the full schedule: the same weights as a run of the same
    schedule that ends there, unlike a shorter ``steps`` (its cosine decays sooner)."""
    full = train_shapes_clip(_tiny_config(steps=5, stop_after=3), progress=False, log=None)
    assert full.steps_done == 3 and len(full.losses) == 3
    assert full.history[-1]["step"] == 3  # evaluated where it stopped
    again = train_shapes_clip(_tiny_config(steps=5, stop_after=3), progress=False, log=None)
    short = train_shapes_clip(_tiny_config(steps=3), progress=False, log=None)
    a, b, c = (r.model.state_dict() for r in (full, again, short))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_attribute_targets_label_single_objects_and_ignore_multi():
    ds = generate(12, seed=3, n_objects=(1, 2))
    t = attribute_targets(ds, range(12))
    assert {len(a) for a in ds.attributes} == {1, 2}  # both branches below are exercised
    for i, attrs in enumerate(ds.attributes):
        assert t["count"][i] == len(attrs) - 1
        assert t["background"][i] == BACKGROUNDS.index(ds.backgrounds[i])
        if len(attrs) == 1:
            assert t["shape"][i] == SHAPES.index(attrs[0]["shape"])
            assert t["position"][i] == POSITIONS.index(attrs[0]["position"])
        else:
            assert t["shape"][i] == t["position"][i] == -100


def test_warm_start_trains_only_the_image_tower():
    cfg = _tiny_config(warm_steps=3)
    model = build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ds = generate(16, seed=4)
    scenes = TrainingScenes(ds.images, ds.attributes, ds.backgrounds, ds.captions)
    losses = warm_start_image_tower(model, scenes, cfg, progress=False)
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert "visual.conv1.weight" in changed
    assert not any(
        k.startswith(("transformer.", "token_embedding", "text_projection")) for k in changed
    )


def test_same_seed_retrains_the_same_weights():
    cfg = _tiny_config(aux_weight=0.5)
    a = train_shapes_clip(cfg, progress=False, log=None).model.state_dict()
    b = train_shapes_clip(cfg, progress=False, log=None).model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    c = train_shapes_clip(_tiny_config(seed=1), progress=False, log=None).model.state_dict()
    assert not torch.equal(a["visual.conv1.weight"], c["visual.conv1.weight"])
