"""Tests for the shapes-world generator (pure numpy + PIL, fast)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from vision_lens.shapes import (
    ANGULAR_SHAPES,
    BACKGROUNDS,
    CAPTION_MODES,
    COLOR_RGB,
    COLORS,
    LABEL_NAMES,
    POSITIONS,
    PROMPTS,
    ROUND_SHAPES,
    SHAPES,
    SIZES,
    TEXTURES,
    VOCABULARY,
    ShapesDataset,
    ShapesSample,
    SpuriousDataset,
    caption_for,
    cell_box,
    generate,
    labels,
    prompts,
    sample_captions,
    spurious_split,
)

ATTRS = ("shape", "color", "size", "position", "texture")


@pytest.fixture(scope="module")
def ds() -> ShapesDataset:
    return generate(120, seed=7, n_objects=(1, 4))


@pytest.fixture(scope="module")
def single() -> ShapesDataset:
    return generate(150, seed=11, n_objects=1)


def _assert_same(a: ShapesDataset, b: ShapesDataset) -> None:
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.foreground, b.foreground)
    np.testing.assert_array_equal(a.counts, b.counts)
    assert a.captions == b.captions
    assert a.attributes == b.attributes
    assert a.backgrounds == b.backgrounds
    for ma, mb in zip(a.masks, b.masks, strict=True):
        np.testing.assert_array_equal(ma, mb)


# ----------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------


def test_vocabulary() -> None:
    assert len(SHAPES) >= 6 and {"circle", "square", "triangle"} <= set(SHAPES)
    assert len(COLORS) >= 8 and {"red", "green", "blue", "yellow"} <= set(COLORS)
    assert SIZES == ("small", "medium", "large")
    # Row-major 3x3 grid: "top left", "top", ..., "center", ..., "bottom right".
    rows, cols = ("top", "", "bottom"), ("left", "", "right")
    assert POSITIONS == tuple(f"{r} {c}".strip() or "center" for r in rows for c in cols)
    assert TEXTURES == ("solid", "striped", "dotted", "checkered")
    assert len(BACKGROUNDS) >= 4 and {"water", "grass"} <= set(BACKGROUNDS)
    assert set(COLOR_RGB) == set(COLORS)
    # Round/angular partition the shapes.
    assert set(ROUND_SHAPES) | set(ANGULAR_SHAPES) == set(SHAPES)
    assert not set(ROUND_SHAPES) & set(ANGULAR_SHAPES)
    assert "circle" in ROUND_SHAPES and LABEL_NAMES == ("angular", "round")
    assert PROMPTS["color"] == "a {} object"
    assert PROMPTS["shape"] == "a {}"
    assert PROMPTS["position"] == "an object in the {}"
    for name, vocab in VOCABULARY.items():
        assert len(set(vocab)) == len(vocab), name
    # Colours are mutually distinct.
    rgb = np.array([COLOR_RGB[c] for c in COLORS], dtype=float)
    d = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)
    assert d[~np.eye(len(COLORS), dtype=bool)].min() > 60


def test_moved_names_stay_importable_from_the_generator_module() -> None:
    import vision_lens.shapes as shapes
    from vision_lens.shapes import generator

    for name in shapes.__all__:  # the generator module's public names before the split
        assert getattr(generator, name) is getattr(shapes, name), name


def test_prompts() -> None:
    assert prompts("shape")[: len(SHAPES)] == [
        ("an " if s[0] in "aeiou" else "a ") + s for s in SHAPES
    ]
    assert "an orange object" in prompts("color") or "orange" not in COLORS
    assert prompts("position")[0] == "an object in the top left"
    assert len(prompts("color")) == len(COLORS)
    with pytest.raises(ValueError, match="valid"):
        prompts("smell")


# ----------------------------------------------------------------------------------------------
# Determinism, shapes, dtypes
# ----------------------------------------------------------------------------------------------


def test_deterministic() -> None:
    a = generate(30, seed=5)
    b = generate(30, seed=5)
    _assert_same(a, b)
    c = generate(30, seed=6)
    assert not np.array_equal(a.images, c.images)
    assert a.captions != c.captions
    # Image i does not depend on n.
    _assert_same(a.subset(range(10)), generate(10, seed=5))


def test_shapes_and_dtypes(ds: ShapesDataset) -> None:
    n = len(ds)
    assert n == 120
    assert ds.images.shape == (n, 64, 64, 3) and ds.images.dtype == np.uint8
    assert ds.foreground.shape == (n, 64, 64) and ds.foreground.dtype == bool
    assert ds.counts.shape == (n,) and np.issubdtype(ds.counts.dtype, np.integer)
    assert len(ds.captions) == len(ds.attributes) == len(ds.backgrounds) == len(ds.masks) == n
    for attrs, masks, boxes, k in zip(ds.attributes, ds.masks, ds.boxes, ds.counts, strict=True):
        assert len(attrs) == k
        assert masks.shape == (k, 64, 64) and masks.dtype == bool
        assert boxes.shape == (k, 4)
        for obj in attrs:
            assert set(obj) == set(ATTRS)
            assert all(isinstance(v, str) and obj[v] in VOCABULARY[v] for v in obj)
    assert all(isinstance(c, str) and c for c in ds.captions)
    assert set(ds.backgrounds) <= set(BACKGROUNDS)


def test_counts_and_n_objects(ds: ShapesDataset, single: ShapesDataset) -> None:
    assert np.array_equal(ds.counts, [len(a) for a in ds.attributes])
    assert set(ds.counts.tolist()) == {1, 2, 3, 4}
    assert (single.counts == 1).all()
    assert all(m.shape[0] == 1 for m in single.masks)
    ds3 = generate(20, seed=0, n_objects=(2, 3))
    assert set(ds3.counts.tolist()) <= {2, 3}
    assert (generate(5, seed=0, n_objects=4).counts == 4).all()


def test_image_size_parameter() -> None:
    for size in (48, 96):
        d = generate(12, seed=2, image_size=size)
        assert d.images.shape == (12, size, size, 3)
        assert d.foreground.shape == (12, size, size)
        for attrs, masks in zip(d.attributes, d.masks, strict=True):
            for obj, m in zip(attrs, masks, strict=True):
                x0, y0, x1, y1 = cell_box(obj["position"], size)
                assert m.any() and not m.sum() - m[y0:y1, x0:x1].sum()


# ----------------------------------------------------------------------------------------------
# Masks and pixels
# ----------------------------------------------------------------------------------------------


def test_cell_box() -> None:
    assert cell_box("top left") == (0, 0, 21, 21)
    assert cell_box("bottom right") == (43, 43, 64, 64)
    covered = np.zeros((64, 64), int)
    for p in POSITIONS:
        x0, y0, x1, y1 = cell_box(p)
        covered[y0:y1, x0:x1] += 1
    assert (covered == 1).all()


def test_masks_nonempty_in_cell_and_disjoint(ds: ShapesDataset) -> None:
    for i in range(len(ds)):
        masks = ds.masks[i]
        assert masks.sum(axis=(1, 2)).min() >= 12
        # disjoint: no pixel belongs to two objects
        assert masks.sum(axis=0).max() <= 1
        np.testing.assert_array_equal(ds.foreground[i], masks.any(axis=0))
        positions = [o["position"] for o in ds.attributes[i]]
        assert len(set(positions)) == len(positions)
        for obj, m, box in zip(ds.attributes[i], masks, ds.boxes[i], strict=True):
            x0, y0, x1, y1 = cell_box(obj["position"])
            inside = np.zeros_like(m)
            inside[y0:y1, x0:x1] = True
            assert not (m & ~inside).any(), (i, obj)
            bx0, by0, bx1, by1 = box
            assert x0 <= bx0 < bx1 <= x1 and y0 <= by0 < by1 <= y1
            ys, xs = np.nonzero(m)
            assert bx0 <= xs.min() and xs.max() < bx1 and by0 <= ys.min() and ys.max() < by1


def test_object_pixels_have_object_colour(ds: ShapesDataset) -> None:
    n_solid = 0
    for i in range(len(ds)):
        img = ds.images[i].astype(int)
        for obj, m in zip(ds.attributes[i], ds.masks[i], strict=True):
            rgb = np.array(COLOR_RGB[obj["color"]])
            px = img[m]
            exact = (px == rgb).all(axis=1)
            if obj["texture"] == "solid":
                n_solid += 1
                assert exact.all(), (i, obj)
            else:
                assert exact.mean() >= 0.5, (i, obj, exact.mean())
                assert not exact.all(), (i, obj)  # the pattern is visible
            # The pattern alternates the colour with one darker shade of it.
            others = np.unique(px[~exact], axis=0)
            assert len(others) <= 1, (i, obj, others)
            if len(others):
                assert (others[0] <= rgb).all() and others[0].sum() < rgb.sum() - 60, (i, obj)
    assert n_solid > 0


def test_background_not_confusable_with_object_colours() -> None:
    d = generate(60, seed=3, n_objects=1)
    for i in range(len(d)):
        bg = d.images[i][~d.foreground[i]].astype(float)
        mean = bg.mean(axis=0)
        for c in COLORS:
            assert np.linalg.norm(mean - COLOR_RGB[c]) > 70, (d.backgrounds[i], c)
        # textured, not flat (except tiny noise on plain)
        assert bg.std(axis=0).max() > 1.0


def test_sizes_are_ordered() -> None:
    d = generate(200, seed=4, n_objects=1, shapes=["square"])
    side = {s: set() for s in SIZES}
    for attrs, box in zip(d.attributes, d.boxes, strict=True):
        side[attrs[0]["size"]].add(int(box[0, 2] - box[0, 0]))
    assert all(len(v) == 1 for v in side.values())
    small, medium, large = (side[s].pop() for s in SIZES)
    assert small + 3 <= medium and medium + 3 <= large <= 21


def test_restricted_vocabulary() -> None:
    d = generate(
        20, seed=1, backgrounds=["water"], shapes=["star"], colors=("red", "blue"), sizes="large"
    )
    assert set(d.backgrounds) == {"water"}
    objs = [o for a in d.attributes for o in a]
    assert {o["shape"] for o in objs} == {"star"}
    assert {o["color"] for o in objs} <= {"red", "blue"}
    assert {o["size"] for o in objs} == {"large"}


# ----------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------


def _mentioned(caption: str, vocab: tuple[str, ...]) -> set[str]:
    return {v for v in vocab if re.search(rf"\b{re.escape(v)}\b", caption)}


def test_full_captions_mention_all_attributes() -> None:
    d = generate(40, seed=9, caption_mode="full")
    for cap, attrs, bg in zip(d.captions, d.attributes, d.backgrounds, strict=True):
        assert bg in cap
        for obj in attrs:
            phrase = f"{obj['size']} {obj['color']} {obj['texture']} {obj['shape']}"
            assert f"{phrase} in the {obj['position']}" in cap, cap
    obj = dict(shape="circle", color="red", size="large", position="top left", texture="striped")
    assert (
        caption_for([obj], "water", mode="full")
        == "a large red striped circle in the top left on a water background"
    )
    two = [obj, dict(obj, shape="square", color="blue", position="center")]
    assert (
        caption_for(two, "grass", mode="color_shape")
        == "two objects: a red circle and a blue square"
    )
    assert caption_for(two + [obj], "grass", mode="count") == "three shapes on grass"
    assert caption_for([dict(obj, color="orange")], "sand", mode="color") == "an orange object"


@pytest.mark.parametrize("seed", [0, 1])
def test_captions_only_claim_true_attributes(ds: ShapesDataset, seed: int) -> None:
    caps = ds.captions if seed == 0 else sample_captions(ds, seed=seed)
    count_words = ("one", "two", "three", "four")
    for cap, attrs, bg, k in zip(caps, ds.attributes, ds.backgrounds, ds.counts, strict=True):
        for key in ("shape", "color", "size", "texture"):
            assert _mentioned(cap, VOCABULARY[key]) <= {o[key] for o in attrs}, (cap, attrs)
        for pos in re.findall(r"in the ([a-z ]+?)(?:,| and| on|$)", cap):
            assert pos in {o["position"] for o in attrs}, (cap, attrs)
        assert _mentioned(cap, BACKGROUNDS) <= {bg}, (cap, bg)
        said = [w for w in count_words if re.search(rf"\b{w}\b", cap)]
        if said and not re.search(r"other shapes?$", cap):
            assert said == [count_words[k - 1]], (cap, k)


def test_caption_variety_and_sampling(ds: ShapesDataset) -> None:
    # Several templates are used, both full and partial.
    assert len({c.split(" ")[1] for c in ds.captions}) > 5
    assert any("background" in c for c in ds.captions)
    a, b = sample_captions(ds, seed=1), sample_captions(ds, seed=1)
    assert a == b and len(a) == len(ds)
    assert a != sample_captions(ds, seed=2)
    assert ds.random_captions(1) == a
    assert all(
        c.startswith(("one", "two", "three", "four", "a ", "an "))
        for c in sample_captions(ds, 3, mode="count")
    )
    for mode in CAPTION_MODES:
        assert all(isinstance(c, str) and c for c in sample_captions(ds.subset(range(8)), 0, mode))
    with pytest.raises(ValueError, match="caption mode"):
        sample_captions(ds, 0, mode="poem")


# ----------------------------------------------------------------------------------------------
# Dataset API
# ----------------------------------------------------------------------------------------------


def test_getitem_subset_to_pil(ds: ShapesDataset, tmp_path) -> None:
    s = ds[3]
    assert isinstance(s, ShapesSample)
    np.testing.assert_array_equal(s.image, ds.images[3])
    assert s.caption == ds.captions[3] and s.background == ds.backgrounds[3]
    assert s.attributes == ds.attributes[3] and s.masks.shape[0] == ds.counts[3]
    np.testing.assert_array_equal(ds[-1].image, ds.images[-1])
    with pytest.raises(IndexError):
        ds[len(ds)]
    sub = ds.subset([5, 2, 9])
    assert isinstance(sub, ShapesDataset) and len(sub) == 3
    assert sub.captions == [ds.captions[i] for i in (5, 2, 9)]
    np.testing.assert_array_equal(sub.images[1], ds.images[2])
    np.testing.assert_array_equal(sub.masks[2], ds.masks[9])
    mask = np.zeros(len(ds), bool)
    mask[[1, 4]] = True
    assert ds.subset(mask).captions == [ds.captions[1], ds.captions[4]]
    img = ds.to_pil(0)
    assert isinstance(img, Image.Image) and img.size == (64, 64) and img.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(img), ds.images[0])
    path = tmp_path / "grid.png"
    ds.grid(range(16), ncols=4, scale=2).save(path)
    assert Image.open(path).size == (4 * 130 + 2, 4 * 130 + 2)


def test_labels(single: ShapesDataset, ds: ShapesDataset) -> None:
    for attr in (*ATTRS, "background"):
        y = labels(single, attr)
        assert y.shape == (len(single),) and np.issubdtype(y.dtype, np.integer)
        vocab = VOCABULARY[attr]
        if attr == "background":
            assert [vocab[i] for i in y] == single.backgrounds
        else:
            assert [vocab[i] for i in y] == [a[0][attr] for a in single.attributes]
    assert len(set(labels(single, "color").tolist())) == len(COLORS)
    with pytest.raises(ValueError, match="exactly one object"):
        labels(ds, "color")
    with pytest.raises(ValueError, match="unknown attribute"):
        labels(single, "smell")


# ----------------------------------------------------------------------------------------------
# Spurious split
# ----------------------------------------------------------------------------------------------


def test_spurious_split_proportions() -> None:
    tr = spurious_split(2000, split="train", seed=0)
    te = spurious_split(2000, split="test", seed=0)
    for d in (tr, te):
        assert isinstance(d, SpuriousDataset) and isinstance(d, ShapesDataset)
        assert len(d) == 2000 and (d.counts == 1).all()
        np.testing.assert_array_equal(d.groups, 2 * d.labels + d.places)
        shapes = [a[0]["shape"] for a in d.attributes]
        np.testing.assert_array_equal(d.labels, [s in ROUND_SHAPES for s in shapes])
        assert [("water" if p else "grass") for p in d.places] == d.backgrounds
        assert abs(d.labels.mean() - 0.5) < 0.05
        assert set(shapes) == set(SHAPES)
    agree_tr = (tr.labels == tr.places).mean()
    agree_te = (te.labels == te.places).mean()
    assert abs(agree_tr - 0.95) < 0.02
    assert abs(agree_te - 0.05) < 0.02
    g_tr, g_te = np.bincount(tr.groups, minlength=4), np.bincount(te.groups, minlength=4)
    assert g_tr[[0, 3]].sum() > 0.93 * 2000 and g_tr[[1, 2]].min() > 20  # rare but present
    assert g_te[[1, 2]].sum() > 0.93 * 2000 and g_te[[0, 3]].min() > 20
    # Train and test are different images; same args give the same split.
    assert not np.array_equal(tr.images[:10], te.images[:10])
    a, b = spurious_split(60, "test", seed=3), spurious_split(60, "test", seed=3)
    _assert_same(a, b)
    np.testing.assert_array_equal(a.groups, b.groups)
    assert not np.array_equal(a.images, spurious_split(60, "test", seed=4).images)


def test_spurious_split_options_and_subset() -> None:
    d = spurious_split(100, "train", seed=1, p_major=0.5, image_size=48)
    assert d.images.shape == (100, 48, 48, 3)
    assert abs((d.labels == d.places).mean() - 0.5) <= 0.02
    sub = d.subset(np.flatnonzero(d.groups == 1))
    assert isinstance(sub, SpuriousDataset) and (sub.groups == 1).all()
    assert sub.split == "train" and sub.p_major == 0.5
    np.testing.assert_array_equal(sub.labels, 0)
    with pytest.raises(ValueError, match="split"):
        spurious_split(10, split="val")
    with pytest.raises(ValueError, match="p_major"):
        spurious_split(10, p_major=1.5)


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -3, 2.5, None])
def test_invalid_n(n) -> None:
    with pytest.raises(ValueError, match="n "):
        generate(n)


@pytest.mark.parametrize("n_objects", [0, 5, (0, 2), (3, 2), (1, 5), (1, 2, 3), "two", True])
def test_invalid_n_objects(n_objects) -> None:
    with pytest.raises(ValueError, match=r"n_objects.*1 <= lo <= hi <= 4"):
        generate(3, n_objects=n_objects)


def test_invalid_names() -> None:
    with pytest.raises(ValueError, match=r"backgrounds.*moon.*valid values.*water"):
        generate(3, backgrounds=["water", "moon"])
    with pytest.raises(ValueError, match="shapes"):
        generate(3, shapes=["blob"])
    with pytest.raises(ValueError, match="colors"):
        generate(3, colors=[])
    with pytest.raises(ValueError, match="positions"):
        generate(3, n_objects=3, positions=["top", "left"])
    with pytest.raises(ValueError, match="image_size"):
        generate(3, image_size=8)
    with pytest.raises(ValueError, match="caption_mode"):
        generate(3, caption_mode="poem")
    with pytest.raises(ValueError, match="background"):
        caption_for(
            [dict(shape="circle", color="red", size="small", position="top", texture="solid")],
            "moon",
        )
