"""The ImageNet-segmentation reader on small ``.mat`` files written here in the
``gtsegs_ijcv.mat`` layout (HDF5: ``/value/img``, ``/value/gt`` references, images stored
transposed), and the alignment of masks with their preprocessed images."""

from __future__ import annotations

import json
import pickle

import h5py
import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image

import vision_lens as vl
from vision_lens.apps.seg_eval import evaluate_segmentation, imagenet_seg_data
from vision_lens.datasets import (
    ImagenetSegmentation,
    geometric_transform,
    imagenet_class_index,
    transform_mask,
    write_imagenet_seg_mat,
)


def write_like_matlab(path, images, masks, names=None):
    """The reference layout, written directly with h5py (independently of the library's
    writer): images ``[3, W, H]``, masks ``[W, H]`` behind a ``[1, 1]`` reference cell."""
    ref = h5py.special_dtype(ref=h5py.Reference)
    with h5py.File(path, "w") as f:
        refs = f.create_group("#refs#")
        img = f.create_dataset("value/img", (len(images), 1), dtype=ref)
        gt = f.create_dataset("value/gt", (len(images), 1), dtype=ref)
        ids = f.create_dataset("value/id", (len(images), 1), dtype=ref) if names else None
        for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
            img[i, 0] = refs.create_dataset(f"a{i}", data=np.transpose(image, (2, 1, 0))).ref
            cell = refs.create_dataset(f"c{i}", (1, 1), dtype=ref)
            cell[0, 0] = refs.create_dataset(f"b{i}", data=mask.astype(np.uint8).T).ref
            gt[i, 0] = cell.ref
            if ids is not None:
                chars = np.frombuffer(names[i].encode("utf-16-le"), dtype=np.uint16)[:, None]
                ids[i, 0] = refs.create_dataset(f"d{i}", data=chars).ref
    return path


def red_square_scene(height, width, box, seed=0):
    """A dark noisy image with a pure red square at ``box = (y0, y1, x0, x1)``; its mask."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, size=(height, width, 3), dtype=np.uint8)
    y0, y1, x0, x1 = box
    image[y0:y1, x0:x1] = (255, 0, 0)
    mask = np.zeros((height, width), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return image, mask


SCENES = [  # non-square both ways; the object off-centre so a wrong crop shows
    red_square_scene(48, 80, (10, 30, 50, 66), seed=0),
    red_square_scene(80, 48, (52, 72, 6, 26), seed=1),
    red_square_scene(40, 40, (4, 20, 20, 36), seed=2),
]
NAMES = ["n01443537_123", "n02085620_7", "n99999999_1"]


@pytest.fixture
def mat_file(tmp_path):
    return write_like_matlab(
        tmp_path / "gtsegs_ijcv.mat", [s[0] for s in SCENES], [s[1] for s in SCENES], NAMES
    )


def iou(a, b):
    return float((a & b).sum()) / float((a | b).sum())


def test_raw_pairs_are_untransposed(mat_file):
    ds = ImagenetSegmentation(mat_file)
    assert len(ds) == 3
    for i, (image, mask) in enumerate(SCENES):
        got_image, got_mask = ds.raw(i)
        assert got_image.shape == image.shape and np.array_equal(got_image, image)
        assert got_mask.dtype == bool and np.array_equal(got_mask, mask)
        assert np.array_equal(ds[i][0], image)  # no transform: the raw pair
    assert ds.name(0) == "n01443537_123" and ds.wnid(1) == "n02085620"
    assert imagenet_class_index(ds.wnid(0)) == 1 and imagenet_class_index(ds.wnid(2)) is None


@pytest.mark.parametrize("resize_mode", ["shortest", "longest", "squash"])
def test_masks_stay_aligned_with_their_images(mat_file, resize_mode):
    preprocess = image_transform_v2(PreprocessCfg(size=32, resize_mode=resize_mode), False)
    ds = ImagenetSegmentation(mat_file, transform=preprocess)
    for i in range(len(ds)):
        image, mask = ds[i]
        assert image.shape == (3, 32, 32) and mask.shape == (32, 32) and mask.dtype == torch.bool
        redness = image[0] - image[1]  # normalised channels: high only on the red square
        red = redness > (redness.max() + redness.min()) / 2
        assert iou(red, mask) > 0.8, (i, iou(red, mask))


def test_square_resized_masks_would_be_misaligned(mat_file):
    # The reference code resizes masks straight to 32x32 while centre-cropping the image; on a
    # non-square image with an off-centre object that misplaces the mask (what the test above
    # guards against).
    preprocess = image_transform_v2(PreprocessCfg(size=32), False)
    ds = ImagenetSegmentation(mat_file, transform=preprocess)
    image, _ = ds[0]
    redness = image[0] - image[1]
    red = redness > (redness.max() + redness.min()) / 2
    naive = Image.fromarray(SCENES[0][1].astype(np.uint8) * 255).resize((32, 32), Image.NEAREST)
    assert iou(red, torch.from_numpy(np.asarray(naive) > 127)) < 0.6


def test_transform_mask_matches_dataset_and_rejects_unknown_steps():
    preprocess = image_transform_v2(PreprocessCfg(size=32), False)
    image, mask = SCENES[1]
    out = transform_mask(mask, preprocess)
    assert out.shape == (32, 32)
    assert torch.equal(
        out, transform_mask(Image.fromarray(mask.astype(np.uint8) * 255), preprocess)
    )
    from torchvision import transforms as T

    with pytest.raises(ValueError, match="mask transform"):
        geometric_transform(T.Compose([T.RandomHorizontalFlip(), T.ToTensor()]))


def test_library_writer_round_trips_in_the_reference_layout(tmp_path):
    path = write_imagenet_seg_mat(
        tmp_path / "w.mat", [s[0] for s in SCENES], [s[1] for s in SCENES], NAMES
    )
    with h5py.File(path, "r") as f:  # read as the reference code does
        image = np.array(f[f["/value/img"][1, 0]]).transpose((2, 1, 0))
        target = np.array(f[f[f["/value/gt"][1, 0]][0, 0]]).transpose((1, 0))
        name = b"".join(np.array(f[f["/value/id"][1, 0]])).decode("utf-16")
    assert np.array_equal(image, SCENES[1][0]) and np.array_equal(target > 0, SCENES[1][1])
    assert name == NAMES[1]
    ds = ImagenetSegmentation(path)
    assert all(np.array_equal(ds.raw(i)[1], SCENES[i][1]) for i in range(3))


def test_reader_pickles_and_closes(mat_file):
    ds = ImagenetSegmentation(mat_file)
    ds.raw(0)
    clone = pickle.loads(pickle.dumps(ds))  # as DataLoader workers get it
    assert np.array_equal(clone.raw(2)[0], SCENES[2][0])
    with ds:
        assert ds.raw(1)[0].shape == (80, 48, 3)
    assert ds._file is None


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="gtsegs_ijcv"):
        ImagenetSegmentation(tmp_path / "missing.mat")
    bogus = tmp_path / "bogus.mat"
    bogus.write_bytes(b"MATLAB 5.0 MAT-file, not HDF5")
    with pytest.raises(ValueError, match="HDF5"):
        ImagenetSegmentation(bogus)
    empty = tmp_path / "empty.mat"
    with h5py.File(empty, "w") as f:
        f.create_dataset("value/x", data=np.zeros(2))
    with pytest.raises(ValueError, match="/value/img"):
        ImagenetSegmentation(empty)
    ds = ImagenetSegmentation(
        write_like_matlab(tmp_path / "ok.mat", [SCENES[0][0]], [SCENES[0][1]])
    )
    assert ds.name(0) is None and ds.wnid(0) is None
    with pytest.raises(IndexError):
        ds.raw(1)


# ------------------------------------------------------------------ the benchmark on it
class FakeZeroShot:
    """Text tower stand-in: fixed random unit class weights for the 1,000 classes."""

    def zero_shot_weights(self, classnames, templates, progress=False):
        gen = torch.Generator().manual_seed(0)
        return F.normalize(torch.randn(len(classnames), 16, generator=gen), dim=-1)


def tiny_model():
    cfg = vl.HookedViTConfig(
        n_layers=2, d_model=32, n_heads=2, d_mlp=64, d_embed=16, image_size=32, patch_size=8
    )
    preprocess = image_transform_v2(PreprocessCfg(size=32), False)
    return vl.HookedViT(cfg, preprocess=preprocess).init_weights(seed=0, std=0.2)


def test_benchmark_on_imagenet_seg_predicted_classes(mat_file):
    model = tiny_model()
    data = imagenet_seg_data(model, FakeZeroShot(), mat_file, batch_size=2, progress=False)
    assert data.n_images == 3 and len(data.class_texts) == 1000
    result = evaluate_segmentation(model, data, progress=False, n_examples=3)
    assert set(result.metrics) == {
        "decomposition",
        "chefer2021",
        "gradcam",
        "raw_attention",
        "rollout",
    }
    assert all(m["n_images"] == 3 for m in result.metrics.values())
    assert result.settings["zero_shot_accuracy"] is None  # no labels: predicted classes
    assert result.examples["masks"].shape == (3, 32, 32)


def test_benchmark_label_classes_need_imagenet_wnids(mat_file):
    model = tiny_model()
    data = imagenet_seg_data(model, FakeZeroShot(), mat_file, n=2, class_source="label")
    result = evaluate_segmentation(model, data, methods=["decomposition"], progress=False)
    assert result.metrics["decomposition"]["n_images"] == 2
    data = imagenet_seg_data(model, FakeZeroShot(), mat_file, class_source="label")
    with pytest.raises(ValueError, match="1,000 ImageNet classes"):
        evaluate_segmentation(model, data, methods=["decomposition"], progress=False)
    with pytest.raises(ValueError, match="class_source"):
        imagenet_seg_data(model, FakeZeroShot(), mat_file, class_source="truth")


def test_eval_seg_command_on_imagenet_seg(mat_file, tmp_path, capsys):
    from vision_lens.cli import main

    folder = tmp_path / "cfg"
    folder.mkdir()
    cfg = {
        "embed_dim": 16,
        "vision_cfg": {
            "image_size": 32,
            "layers": 1,
            "width": 32,
            "head_width": 16,
            "patch_size": 16,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 1,
        },
    }
    (folder / "vl-test-imseg-tiny.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    out = tmp_path / "out"
    argv = ["eval-seg", "--model", "vl-test-imseg-tiny", "--imagenet-seg", str(mat_file)]
    argv += ["--templates", "simple", "--quiet", "--no-figure", "--out-dir", str(out)]
    assert main(argv) == 0
    saved = json.loads((out / "segmentation.json").read_text())
    assert saved["settings"]["dataset"] == "imagenet-seg"
    assert saved["settings"]["n_images"] == 3 and saved["settings"]["n_classes"] == 1000
    assert not (out / "segmentation_examples.html").exists()
    assert "Token decomposition" in capsys.readouterr().out
