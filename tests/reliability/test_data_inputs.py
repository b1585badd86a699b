"""Nothing silent in the data side: the shapes world, the mask datasets, the text pools, the
spurious-cue ablation and the report's Python entry point refuse bad input with a clear error of
the documented type (docs/errors.md): TypeError for a wrong type, ValueError for a value out of
its domain, IndexError for a head the components lack, FileNotFoundError (or IsADirectoryError)
for a path that is not there or is a folder.

One table: (id, call(env), expected exception type, message regex).
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from support.tiny import tiny_model
from torchvision import transforms as T

from vision_lens import datasets, shapes
from vision_lens.analysis import spurious
from vision_lens.analysis.direct_effects import Components
from vision_lens.analysis.textspan_result import TextSpanResult
from vision_lens.apps import report
from vision_lens.shapes import clip_model, encoding, evaluate, rendering, train_data
from vision_lens.shapes.captions import true_captions
from vision_lens.shapes.pretrained import check_device
from vision_lens.text_pools import text_pool

NAN = float("nan")
OBJ = dict(shape="circle", color="red", size="large", position="center", texture="solid")
LABELS = [0, 1] * 6
GROUPS = [0, 1, 2, 3] * 3


class _FakeClip(torch.nn.Module):
    """encode_image / encode_text of width 8: enough for the checks before any real work."""

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(len(x), 8)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.ones(len(tokens), 8)


def _tokenizer(texts: list[str]) -> torch.Tensor:
    return torch.zeros(len(texts), 4, dtype=torch.long)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("data_inputs")
    (tmp / "note.txt").write_text("not an image")
    seg_file = datasets.write_imagenet_seg_mat(
        tmp / "tiny.mat", [np.zeros((4, 6, 3), np.uint8)], [np.ones((4, 6), np.uint8)]
    )
    texts = ["a lake", "a red object", "grass fields", "a circle", "a seaside town"]
    return SimpleNamespace(
        tmp=tmp,
        seg_file=seg_file,
        one=shapes.generate(4, seed=0, n_objects=1, image_size=32),
        two=shapes.generate(2, seed=0, n_objects=2, image_size=32),
        clip=_FakeClip(),
        components=Components(torch.randn(4, 12, 2), ["embed", "L0H0", "L0H1", "bias"]),
        span=TextSpanResult(
            indices=torch.tensor([[0, 2, 1], [1, 3, 4]]),
            explained_variance=torch.ones(2, 3),
            total_variance=torch.ones(2),
            basis=torch.zeros(2, 3, 4),
            mean=torch.zeros(2, 4),
            texts=texts,
            heads=[(3, 0), (3, 1)],
        ),
        pre=T.Compose([T.Resize(4), T.CenterCrop(4), T.ToTensor()]),
    )


def _write(e, path=None, **kw):
    images = kw.pop("images", [np.zeros((4, 6, 3), np.uint8)])
    masks = kw.pop("masks", [np.ones((4, 6))])
    return datasets.write_imagenet_seg_mat(path or e.tmp / "w.mat", images, masks, **kw)


def _report(e, **kw):
    return report.write_report(kw.pop("out", e.tmp / "r.html"), progress=False, **kw)


def _ablate(e, heads=((0, 1),), **kw):
    weights = kw.pop("class_weights", torch.eye(2))
    labels = kw.pop("labels", LABELS)
    return spurious.spurious_ablation(e.components, list(heads), weights, labels, GROUPS, **kw)


def _accuracy(e, **kw):
    return evaluate.attribute_accuracy(
        e.clip, _tokenizer, e.one, kw.pop("attribute", "color"), **kw
    )


EMB, CW = torch.randn(4, 2), torch.eye(2)

# (id, call(env), expected type, message regex)
CASES = [
    # ------------------------------------------------------------ shapes.generate
    ("generate-n-zero", lambda e: shapes.generate(0), ValueError, r"n \(number of images\).*>= 1"),
    ("generate-n-bool", lambda e: shapes.generate(True), TypeError, r"n \(number.*bool True"),
    ("generate-n-float", lambda e: shapes.generate(2.0), TypeError, r"n \(number.*float 2\.0"),
    ("generate-seed-none", lambda e: shapes.generate(2, seed=None), TypeError, r"seed.*None"),
    ("generate-seed-str", lambda e: shapes.generate(2, seed="1"), TypeError, r"seed.*str '1'"),
    ("generate-seed-negative", lambda e: shapes.generate(2, seed=-1), ValueError, r"seed.*>= 0"),
    (
        "generate-n-objects-float-range",
        lambda e: shapes.generate(2, n_objects=(1.7, 2.2)),
        TypeError,
        r"n_objects.*\(1\.7, 2\.2\)",
    ),
    (
        "generate-image-size-too-small",
        lambda e: shapes.generate(2, image_size=16),
        ValueError,
        r"image_size.*>= 32.*16",
    ),
    (
        "generate-image-size-str",
        lambda e: shapes.generate(2, image_size="64"),
        TypeError,
        r"image_size.*str '64'",
    ),
    (
        "generate-colour-typo",
        lambda e: shapes.generate(2, colors=["rde"]),
        ValueError,
        r"colors \['rde'\].*Did you mean 'red'",
    ),
    (
        "generate-colour-repeated",
        lambda e: shapes.generate(2, colors=["red", "red", "blue"]),
        ValueError,
        r"colors names 'red' twice",
    ),
    (
        "generate-colour-int",
        lambda e: shapes.generate(2, colors=[1]),
        TypeError,
        r"colors must hold names.*int 1",
    ),
    (
        "generate-caption-mode-typo",
        lambda e: shapes.generate(2, caption_mode="ful"),
        ValueError,
        r"caption_mode 'ful'.*Did you mean 'full'",
    ),
    # ------------------------------------------------------------ spurious_split, labels
    (
        "spurious-split-typo",
        lambda e: shapes.spurious_split(4, "tset"),
        ValueError,
        r"split.*'tset'.*Did you mean 'test'",
    ),
    (
        "spurious-p-major-str",
        lambda e: shapes.spurious_split(4, p_major="0.9"),
        TypeError,
        r"p_major.*str '0\.9'",
    ),
    (
        "spurious-seed-float",
        lambda e: shapes.spurious_split(4, seed=1.7),
        TypeError,
        r"seed.*float 1\.7",
    ),
    (
        "labels-attribute-typo",
        lambda e: shapes.labels(e.one, "colour"),
        ValueError,
        r"attribute 'colour'.*Did you mean 'color'",
    ),
    (
        "labels-not-a-dataset",
        lambda e: shapes.labels([1, 2], "color"),
        TypeError,
        r"dataset must be a ShapesDataset.*got list",
    ),
    (
        "labels-several-objects",
        lambda e: shapes.labels(e.two, "color"),
        ValueError,
        r"exactly one object.*n_objects=1",
    ),
    # ------------------------------------------------------------ captions and prompts
    (
        "caption-object-colour-typo",
        lambda e: shapes.caption_for([dict(OBJ, color="rde")], "sky", mode="full"),
        ValueError,
        r"color of attributes\[0\] 'rde'.*Did you mean 'red'",
    ),
    (
        "caption-object-missing-key",
        lambda e: shapes.caption_for([{"shape": "circle"}], "sky"),
        ValueError,
        r"attributes\[0\] lacks \['color', 'size', 'position', 'texture'\]",
    ),
    (
        "caption-single-dict",
        lambda e: shapes.caption_for(OBJ, "sky"),
        TypeError,
        r"list of object dicts.*got dict.*\[obj\]",
    ),
    ("caption-rng-str", lambda e: shapes.caption_for([OBJ], "sky", rng="x"), TypeError, "rng"),
    (
        "caption-mode-int",
        lambda e: shapes.caption_for([OBJ], "sky", mode=3),
        TypeError,
        r"mode must be a caption mode.*int 3",
    ),
    ("true-captions-empty", lambda e: true_captions([], "sky"), ValueError, "at least one object"),
    (
        "prompts-attribute-typo",
        lambda e: shapes.prompts("shpae"),
        ValueError,
        r"attribute 'shpae'.*Did you mean 'shape'",
    ),
    (
        "sample-captions-seed-float",
        lambda e: shapes.sample_captions(e.one, seed=1.5),
        TypeError,
        r"seed.*float 1\.5",
    ),
    ("with-article-empty", lambda e: shapes.with_article(""), ValueError, "phrase is empty"),
    # ------------------------------------------------------------ rendering
    (
        "cell-box-position-typo",
        lambda e: shapes.cell_box("centre"),
        ValueError,
        r"position 'centre'.*Did you mean 'center'",
    ),
    ("cell-box-float", lambda e: shapes.cell_box(1.5), TypeError, r"position.*float 1\.5"),
    ("cell-box-size-zero", lambda e: shapes.cell_box(0, 0), ValueError, r"image_size.*>= 3"),
    (
        "render-background-typo",
        lambda e: rendering.render_scene(np.random.default_rng(0), [OBJ], "gras", 64),
        ValueError,
        r"background 'gras'.*Did you mean 'grass'",
    ),
    (
        "render-image-size-too-small",
        lambda e: rendering.render_scene(np.random.default_rng(0), [OBJ], "sky", 8),
        ValueError,
        r"image_size.*>= 32",
    ),
    (
        "render-same-cell",
        lambda e: rendering.render_scene(np.random.default_rng(0), [OBJ, OBJ], "sky", 64),
        ValueError,
        r"two objects in the cell 'center'",
    ),
    (
        "render-rng-seed",
        lambda e: rendering.render_scene(0, [OBJ], "sky", 64),
        TypeError,
        r"rng must be a numpy Generator",
    ),
    # ------------------------------------------------------------ ShapesDataset
    ("dataset-index-float", lambda e: e.one[1.5], TypeError, r"index must be an int.*float"),
    ("dataset-index-bool", lambda e: e.one[True], TypeError, r"index must be an int.*bool"),
    ("dataset-to-pil-range", lambda e: e.one.to_pil(10), IndexError, r"index 10 out of range"),
    (
        "dataset-subset-floats",
        lambda e: e.one.subset([0.5]),
        TypeError,
        r"indices must be ints or a boolean mask",
    ),
    ("dataset-grid-scale-zero", lambda e: e.one.grid(scale=0), ValueError, r"scale.*>= 1"),
    ("dataset-grid-pad-negative", lambda e: e.one.grid(pad=-3), ValueError, r"pad.*>= 0"),
    # ------------------------------------------------------------ encoding and evaluation
    (
        "images-to-tensor-float",
        lambda e: encoding.images_to_tensor(e.one.images / 255.0),
        TypeError,
        r"images must be uint8.*float64",
    ),
    (
        "images-to-tensor-channels-first",
        lambda e: encoding.images_to_tensor(np.zeros((2, 3, 32, 32), np.uint8)),
        ValueError,
        r"\[n, H, W, 3\].*\(2, 3, 32, 32\)",
    ),
    (
        "encode-images-batch-size-zero",
        lambda e: encoding.encode_images(e.clip, e.one.images, batch_size=0),
        ValueError,
        "batch_size",
    ),
    (
        "encode-texts-string",
        lambda e: encoding.encode_texts(e.clip, _tokenizer, "a red circle"),
        TypeError,
        r"texts must be a list of strings.*\['a red circle'\]",
    ),
    (
        "class-embeddings-string-class",
        lambda e: encoding.class_embeddings(e.clip, _tokenizer, ["a red object"]),
        TypeError,
        r"class_texts\[0\] is the string 'a red object'",
    ),
    (
        "class-embeddings-empty-class",
        lambda e: encoding.class_embeddings(e.clip, _tokenizer, [["a"], []]),
        ValueError,
        r"class_texts\[1\] is empty",
    ),
    (
        "accuracy-attribute-typo",
        lambda e: _accuracy(e, attribute="colour"),
        ValueError,
        r"attribute 'colour'.*Did you mean 'color'",
    ),
    (
        "accuracy-features-rows",
        lambda e: _accuracy(e, image_features=torch.randn(3, 8)),
        ValueError,
        r"image_features must be \[4, d\].*\(3, 8\)",
    ),
    (
        "accuracy-features-nan",
        lambda e: _accuracy(e, image_features=torch.full((4, 8), NAN)),
        ValueError,
        r"image_features contains 32 NaN",
    ),
    (
        "accuracy-class-count",
        lambda e: _accuracy(e, class_texts=[["a"]] * 3),
        ValueError,
        r"class_texts has 3 classes but color has 8 values",
    ),
    (
        "accuracy-features-width",
        lambda e: _accuracy(e, image_features=torch.randn(4, 5)),
        ValueError,
        r"width 5 but the model's text embeddings have width 8",
    ),
    (
        "ensemble-kind-typo",
        lambda e: evaluate.ensemble_texts("color", "grammer"),
        ValueError,
        r"kind 'grammer'.*Did you mean 'grammar'",
    ),
    ("format-report-empty", lambda e: evaluate.format_report({}), ValueError, r"report lacks"),
    # ------------------------------------------------------------ training configuration
    (
        "train-config-lr-nan",
        lambda e: clip_model.TrainConfig(lr=NAN),
        ValueError,
        r"TrainConfig\.lr must be a finite number > 0, got nan",
    ),
    (
        "train-config-steps-str",
        lambda e: clip_model.TrainConfig(steps="10"),
        TypeError,
        r"TrainConfig\.steps.*str '10'",
    ),
    (
        "train-config-batch-above-images",
        lambda e: clip_model.TrainConfig(n_images=4, batch_size=8),
        ValueError,
        r"n_images=4 is smaller than batch_size=8",
    ),
    (
        "train-config-p-single",
        lambda e: clip_model.TrainConfig(p_single=2.0),
        ValueError,
        r"p_single must be a finite number in \[0, 1\]",
    ),
    (
        "model-config-typo",
        lambda e: clip_model.shapes_clip_config(embed_dims=16),
        ValueError,
        r"'embed_dims'.*Did you mean 'embed_dim'",
    ),
    (
        "register-config-missing",
        lambda e: clip_model.register_config(e.tmp / "nope.json"),
        FileNotFoundError,
        r"nope\.json.*does not exist",
    ),
    (
        "register-config-folder",
        lambda e: clip_model.register_config(e.tmp),
        IsADirectoryError,
        r"is a folder; pass the model-config JSON",
    ),
    (
        "epoch-batches-batch-above-n",
        lambda e: train_data.epoch_batches(2, 5, torch.Generator()),
        ValueError,
        r"batch_size=5 is larger than the 2 scenes",
    ),
    (
        "batch-positives-lengths",
        lambda e: train_data.batch_positives(e.one, [0, 1], ["a red object"]),
        ValueError,
        r"2 indices but 1 captions",
    ),
    (
        "training-scenes-p-single",
        lambda e: train_data.make_training_scenes(4, p_single=2.0),
        ValueError,
        r"p_single must be in \[0, 1\]",
    ),
    (
        "device-typo",
        lambda e: check_device("cuda:x"),
        ValueError,
        r"'cuda:x' is not a torch device",
    ),
    # ------------------------------------------------------------ text pools
    (
        "text-pool-typo",
        lambda e: text_pool("genral"),
        ValueError,
        r"'genral'.*Did you mean 'general'.*Available pools",
    ),
    ("text-pool-int", lambda e: text_pool(1), TypeError, "name must be a string"),
    # ------------------------------------------------------------ datasets
    (
        "imagenet-seg-missing",
        lambda e: datasets.ImagenetSegmentation(e.tmp / "nope.mat"),
        FileNotFoundError,
        r"nope\.mat.*not found",
    ),
    (
        "imagenet-seg-folder",
        lambda e: datasets.ImagenetSegmentation(e.tmp),
        IsADirectoryError,
        r"is a folder; pass the file gtsegs_ijcv\.mat",
    ),
    (
        "imagenet-seg-not-hdf5",
        lambda e: datasets.ImagenetSegmentation(e.tmp / "note.txt"),
        ValueError,
        r"note\.txt.*not an HDF5",
    ),
    (
        "imagenet-seg-transform-int",
        lambda e: datasets.ImagenetSegmentation(e.seg_file, transform=3),
        TypeError,
        r"transform must be a callable",
    ),
    (
        "imagenet-seg-index-float",
        lambda e: datasets.ImagenetSegmentation(e.seg_file)[0.7],
        TypeError,
        r"index must be an int, got float 0\.7",
    ),
    (
        "imagenet-seg-write-names",
        lambda e: _write(e, names=["n01443537_1", "n01443537_2"]),
        ValueError,
        r"1 images but 2 names",
    ),
    (
        "imagenet-seg-write-float-image",
        lambda e: _write(e, images=[np.full((4, 6, 3), 0.7)]),
        TypeError,
        r"images\[0\] must be uint8.*float64",
    ),
    (
        "imagenet-seg-write-out-of-range",
        lambda e: _write(e, images=[np.full((4, 6, 3), 300)]),
        ValueError,
        r"images\[0\] has values 300\.\.300, outside 0\.\.255",
    ),
    ("imagenet-seg-write-empty", lambda e: _write(e, images=[], masks=[]), ValueError, "empty"),
    ("class-index-int", lambda e: datasets.imagenet_class_index(1), TypeError, "wnid"),
    (
        "transform-mask-nan",
        lambda e: datasets.transform_mask(np.full((4, 4), NAN), e.pre),
        ValueError,
        r"mask holds 16 NaN",
    ),
    (
        "transform-mask-none",
        lambda e: datasets.transform_mask(None, e.pre),
        TypeError,
        r"mask must be a numpy array.*NoneType",
    ),
    (
        "transform-mask-empty",
        lambda e: datasets.transform_mask(np.zeros((0, 4)), e.pre),
        ValueError,
        r"mask is empty",
    ),
    (
        "geometric-transform-none",
        lambda e: datasets.geometric_transform(None),
        TypeError,
        r"preprocess must be an image transform",
    ),
    # ------------------------------------------------------------ spurious: group accuracy
    (
        "group-accuracy-label-out-of-range",
        lambda e: spurious.group_accuracy(EMB, CW, [0, 1, 5, 1], [0, 0, 1, 1]),
        ValueError,
        r"labels holds 5, but class_weights has 2 classes",
    ),
    (
        "group-accuracy-float-labels",
        lambda e: spurious.group_accuracy(EMB, CW, [0.0, 1.0, 0.5, 1.0], [0, 0, 1, 1]),
        TypeError,
        r"labels must be ints",
    ),
    (
        "group-accuracy-bool-groups",
        lambda e: spurious.group_accuracy(EMB, CW, [0, 1, 0, 1], [True, False, True, False]),
        TypeError,
        r"groups must be ints.*torch\.bool",
    ),
    (
        "group-accuracy-lengths",
        lambda e: spurious.group_accuracy(EMB, CW, [0, 1, 0], [0, 0, 1, 1]),
        ValueError,
        r"4 images, 3 labels and 4 groups",
    ),
    (
        "group-accuracy-weights-1d",
        lambda e: spurious.group_accuracy(EMB, torch.randn(2), [0, 1, 0, 1], [0, 0, 1, 1]),
        ValueError,
        r"class_weights must be \[n_classes >= 1, d_embed\].*\(2,\)",
    ),
    (
        "group-accuracy-nan",
        lambda e: spurious.group_accuracy(torch.full((4, 2), NAN), CW, [0] * 4, [0] * 4),
        ValueError,
        r"embeddings contains 8 NaN",
    ),
    # ------------------------------------------------------------ spurious: keywords, ablation
    (
        "keywords-top-zero",
        lambda e: spurious.heads_by_keywords(e.span, ["lake"], top=0),
        ValueError,
        r"top must be >= 1",
    ),
    (
        "keywords-top-negative",
        lambda e: spurious.heads_by_keywords(e.span, ["lake"], top=-1),
        ValueError,
        r"top must be >= 1.*-1",
    ),
    (
        "keywords-min-matches-float",
        lambda e: spurious.heads_by_keywords(e.span, ["lake"], min_matches=1.5),
        TypeError,
        r"min_matches must be an int",
    ),
    (
        "keywords-not-strings",
        lambda e: spurious.heads_by_keywords(e.span, [3]),
        TypeError,
        r"keywords must be strings, got int 3",
    ),
    (
        "keywords-result-none",
        lambda e: spurious.heads_by_keywords(None, ["lake"]),
        TypeError,
        r"result must be a TextSpanResult",
    ),
    (
        "ablation-missing-head",
        lambda e: _ablate(e, heads=[(5, 0)]),
        IndexError,
        r"head \(5, 0\).*heads: L0H0, L0H1",
    ),
    (
        "ablation-repeated-head",
        lambda e: _ablate(e, heads=[(0, 1), (0, 1)]),
        ValueError,
        r"heads names head \(0, 1\) twice",
    ),
    ("ablation-no-heads", lambda e: _ablate(e, heads=[]), ValueError, r"heads is empty"),
    (
        "ablation-float-head",
        lambda e: _ablate(e, heads=[(0.5, 1)]),
        TypeError,
        r"pairs of ints.*\(0\.5, 1\)",
    ),
    (
        "ablation-label-string",
        lambda e: _ablate(e, heads=["L0H1"]),
        TypeError,
        r"\(layer, head\) pairs.*'L0H1'",
    ),
    (
        "ablation-n-random-negative",
        lambda e: _ablate(e, n_random=-1),
        ValueError,
        r"n_random must be >= 0",
    ),
    ("ablation-seed-str", lambda e: _ablate(e, seed="x"), TypeError, r"seed must be an int"),
    (
        "ablation-components-tensor",
        lambda e: spurious.spurious_ablation(torch.randn(4, 12, 2), [(0, 1)], CW, LABELS, GROUPS),
        TypeError,
        r"components must be a Components",
    ),
    (
        "ablation-label-out-of-range",
        lambda e: _ablate(e, labels=[0, 1, 2] * 4),
        ValueError,
        r"labels holds 2, but class_weights has 2 classes",
    ),
    # ------------------------------------------------------------ report (checked before loading)
    (
        "report-texts-string",
        lambda e: _report(e, images=e.tmp, texts="a cat"),
        TypeError,
        r"--texts must be a list of strings.*letter by letter",
    ),
    (
        "report-texts-not-strings",
        lambda e: _report(e, images=e.tmp, texts=[1, 2]),
        TypeError,
        r"--texts must hold strings, got int 1",
    ),
    (
        "report-max-images-float",
        lambda e: _report(e, images=e.tmp, max_images=2.5),
        TypeError,
        r"--max-images must be an integer >= 1, got float 2\.5",
    ),
    (
        "report-max-images-bool",
        lambda e: _report(e, images=e.tmp, max_images=True),
        TypeError,
        r"--max-images.*bool True",
    ),
    ("report-out-none", lambda e: _report(e, out=None), TypeError, r"--out must be a path"),
    ("report-model-int", lambda e: _report(e, model_name=3), TypeError, r"--model must be"),
    ("report-device-typo", lambda e: _report(e, device="cuda:x"), ValueError, r"'cuda:x'"),
    (
        "report-progress-str",
        lambda e: report.write_report(e.tmp / "r.html", progress="no"),
        TypeError,
        r"progress must be True or False",
    ),
    (
        "report-shapes-inputs-zero",
        lambda e: report.shapes_inputs(None, n_display=0),
        ValueError,
        r"n_display must be an integer >= 1",
    ),
    (
        "report-folder-inputs-no-images",
        lambda e: report.folder_inputs(tiny_model(), [], ["a cat", "a dog"]),
        ValueError,
        r"images is empty",
    ),
]


@pytest.mark.parametrize(
    "call, expected, pattern", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_refused_with_a_clear_error(env, call, expected, pattern):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a refusal, not a warning and a result
        with pytest.raises(expected, match=pattern) as info:
            call(env)
    # Never a raw error from inside torch/numpy/PIL: the message comes from vision_lens.
    assert info.traceback[-1].path.as_posix().find("/vision_lens/") >= 0, info.traceback[-1]


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 40


def test_wrong_types_stay_value_errors_for_old_callers():
    """The shapes world raised ValueError for these before 0.2; they are TypeErrors now and
    still caught by ``except ValueError``."""
    for call in (lambda: shapes.generate(2.5), lambda: shapes.generate(2, n_objects="two")):
        with pytest.raises(TypeError) as info:
            call()
        assert isinstance(info.value, ValueError)


def test_missing_head_is_also_a_key_error(env):
    with pytest.raises(KeyError, match="No component 'L7H7'"):
        _ablate(env, heads=[(7, 7)])


def test_valid_input_still_works(env):
    """The checks refuse only what is wrong: the same calls with good values succeed."""
    assert len(shapes.generate(2, seed=np.int64(3), n_objects=[1, 2], image_size=32)) == 2
    assert shapes.generate(1, colors="red", image_size=32).attributes[0][0]["color"] == "red"
    assert shapes.cell_box(np.int64(4)) == shapes.cell_box("center")
    assert len(env.one.subset([])) == 0 and len(env.one.subset(np.array([-1]))) == 1
    assert shapes.caption_for([OBJ, OBJ], "grass", rng=0, mode="count") == "two shapes on grass"
    result = spurious.group_accuracy(EMB, CW, np.array([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1]))
    assert set(result.per_group) == {0, 1}
    found = spurious.heads_by_keywords(env.span, "lake", top=None, min_matches=1)
    assert found.heads == [(3, 0)]
    r = _ablate(env, heads=[np.array([0, 1])], n_random=0, seed=np.int64(1))
    assert r.heads == [(0, 1)] and r.best_random is None
    mask = datasets.transform_mask([[0, 1, 1, 0]] * 4, env.pre)
    assert mask.shape == (4, 4)
    clip_model.TrainConfig(steps=2, batch_size=4, n_images=8, max_minutes=None, grad_clip=0)
