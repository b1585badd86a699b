"""vision_lens.streaming: products against the in-memory decompositions, the reader, statistics,
resuming a finished run, and refusals."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from support.tiny import random_images, tiny_model

import vision_lens as vl
from vision_lens.streaming.shards import shard_name

ALL = (
    "heads,layers,tokens,embed,head_moments,"
    "hook:blocks.0.hook_resid_post,mean:blocks.1.hook_resid_post"
)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def images():
    return random_images(11)


def test_products_match_the_cache(model, images, tmp_path):
    run = vl.collect(model, images, ALL, tmp_path, batch_size=3, shard_size=6, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.json",
        "shard-00000.safetensors",
        "shard-00001.safetensors",
        "statistics.safetensors",
    ]
    embed, cache = model.run_with_cache(images)
    heads = cache.decompose_heads()
    torch.testing.assert_close(run["heads"].load(), heads, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        run["layers"].load(), cache.decompose_layers().terms.transpose(0, 1), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(run["tokens"].load(), cache.decompose_tokens(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(run["embed"].load(), embed, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        run["hook:blocks.0.hook_resid_post"].load(), cache["blocks.0.hook_resid_post"]
    )
    h = heads.double()
    moments = run.head_moments()
    assert torch.equal(moments["count"], torch.full((2, 4), 11))
    torch.testing.assert_close(moments["sum"], h.sum(0))
    torch.testing.assert_close(moments["outer"], torch.einsum("blhd,blhe->lhde", h, h))
    assert moments["outer"].dtype == torch.float64
    torch.testing.assert_close(
        run.mean("blocks.1.hook_resid_post"), cache["blocks.1.hook_resid_post"].double().mean(0)
    )
    assert run.layer_labels[0] == "embed" and run.layer_labels[-1] == "bias"
    # Lazy indexing across the shard boundary equals slicing the whole tensor.
    whole = run["tokens"].load()
    assert torch.equal(run["tokens"][4:9], whole[4:9])
    assert torch.equal(run["tokens"][[10, 0, 6]], whole[[10, 0, 6]])
    assert torch.equal(run["tokens"][-1], whole[-1])
    assert torch.equal(run["tokens"][::4], whole[::4])
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["complete"] and [s["start"] for s in manifest["shards"]] == [0, 6]
    assert manifest["identity"]["batch_size"] == 3 and len(manifest["shards"][0]["sha256"]) == 64


def test_statistics_merged_from_shards_equal_the_merged_file(model, images, tmp_path):
    run = vl.collect(
        model, images, "head_moments", tmp_path, batch_size=2, shard_size=4, progress=False
    )
    merged = run.head_moments()
    (tmp_path / "statistics.safetensors").unlink()
    again = vl.open_collected(tmp_path).head_moments()
    assert all(torch.equal(merged[k], again[k]) for k in merged)


def test_directions_project(model, images, tmp_path):
    directions = torch.randn(3, model.cfg.d_embed, generator=torch.Generator().manual_seed(1))
    run = vl.collect(
        model,
        images,
        ["heads", "tokens"],
        tmp_path,
        batch_size=4,
        directions=directions,
        progress=False,
    )
    _, cache = model.run_with_cache(images)
    torch.testing.assert_close(
        run["heads"].load(), cache.decompose_heads() @ directions.T, atol=1e-5, rtol=1e-5
    )
    assert run["tokens"].shape == (11, 5, 3)


def test_finished_run_returns_at_once_and_mismatch_is_refused(model, images, tmp_path):
    vl.collect(model, images, "embed", tmp_path, batch_size=4, progress=False)
    before = (tmp_path / shard_name(0)).stat().st_mtime_ns
    vl.collect(model, images, "embed", tmp_path, batch_size=4, progress=False)
    assert (tmp_path / shard_name(0)).stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="another batch_size.*new out, or overwrite=True"):
        vl.collect(model, images, "embed", tmp_path, batch_size=2, progress=False)
    with pytest.raises(ValueError, match="another products"):
        vl.collect(model, images, "heads", tmp_path, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="another data"):
        vl.collect(model, images[:5], "embed", tmp_path, batch_size=4, progress=False)
    with pytest.raises(ValueError, match="another model"):
        vl.collect(tiny_model(seed=1), images, "embed", tmp_path, batch_size=4, progress=False)
    run = vl.collect(
        model, images[:5], "heads", tmp_path, batch_size=4, overwrite=True, progress=False
    )
    assert run.products == ["heads"] and len(run["heads"]) == 5


def test_datasets_of_tuples_dicts_and_folders(model, tmp_path):
    from PIL import Image

    images = random_images(5)
    pairs = [(images[i], i % 2) for i in range(5)]
    run = vl.collect(model, pairs, "embed,labels", tmp_path / "a", batch_size=2, progress=False)
    assert run["labels"].load().tolist() == [0, 1, 0, 1, 0]
    torch.testing.assert_close(run["embed"].load(), model(images))

    def preprocess(image):
        return torch.tensor(np.array(image), dtype=torch.float32).permute(2, 0, 1) / 128 - 1

    model_pp = tiny_model(preprocess=preprocess)
    pil = [
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (16, 16, 3), dtype=np.uint8))
        for i in range(3)
    ]
    hf_like = [{"image": image, "label": i} for i, image in enumerate(pil)]
    run = vl.collect(model_pp, hf_like, "embed", tmp_path / "b", batch_size=2, progress=False)
    expected = model_pp(torch.stack([preprocess(image) for image in pil]))
    torch.testing.assert_close(run["embed"].load(), expected)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(pil):
        image.save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    with pytest.warns(vl.InputWarning, match="skipped 1 of 4 images: broken.png"):
        run = vl.collect(model_pp, folder, "embed", tmp_path / "c", batch_size=2, progress=False)
    torch.testing.assert_close(run["embed"].load(), expected)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(what="haeds"), ValueError, "Unknown product 'haeds'; did you mean 'heads'"),
        (
            dict(what="hook:blocks.0.hook_resid_postt"),
            ValueError,
            "did you mean 'hook:blocks.0.hook_resid_post'",
        ),
        (dict(what=""), ValueError, "names no product"),
        (dict(what="embed,embed"), ValueError, "twice"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(shard_size=5, batch_size=2), ValueError, "multiple of batch_size"),
        (dict(directions=torch.ones(2, 7)), ValueError, "7 wide but the model's output is 16"),
        (dict(data=torch.zeros(0, 3, 16, 16)), ValueError, "empty"),
        (dict(data=iter([torch.zeros(3, 16, 16)])), TypeError, "Dataset"),
        (dict(what="labels"), ValueError, "carry none"),
    ],
)
def test_refusals(model, images, tmp_path, kwargs, error, match):
    call = dict(data=images, what="heads", batch_size=4)
    call.update(kwargs)
    with pytest.raises(error, match=match):
        vl.collect(model, call.pop("data"), call.pop("what"), tmp_path, progress=False, **call)


def test_reader_refuses_missing_and_incomplete(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        vl.open_collected(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"identity": {}, "complete": False}))
    with pytest.raises(ValueError, match="not complete"):
        vl.open_collected(tmp_path)


def test_dtype_and_no_warnings(model, images, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run = vl.collect(
            model, images, "heads", tmp_path, batch_size=4, dtype=torch.float16, progress=False
        )
    assert run["heads"].dtype == torch.float16 and run["heads"][0].dtype == torch.float16
