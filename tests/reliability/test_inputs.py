"""Nothing silent: every misuse of an entry point gets a clear error (or, for input that could be
intended, an ``InputWarning``), with one exception type per kind of mistake (docs/errors.md).

One table: (call, expected exception or warning type, message regex). Each call takes the shared
tiny setup (a random HookedViT, a tiny random open_clip CLIPText of the same width, data).
"""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import open_clip
import pytest
import torch
from support.tiny import random_images, tiny_model

import vision_lens as vl
from vision_lens.analysis.segmentation import patch_token_scores
from vision_lens.text.scoring import similarity
from vision_lens.utils.checks import check_finite, check_images

NAN = float("nan")
INF = float("inf")
D = 16  # the tiny HookedViT's d_embed

_TINY_CLIP = {
    "embed_dim": D,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The shared setup: model, text tower, images, text embeddings, head outputs, terms."""
    config_dir = tmp_path_factory.mktemp("open_clip_configs")
    (config_dir / "vl-test-inputs-tiny.json").write_text(json.dumps(_TINY_CLIP))
    open_clip.add_model_config(config_dir)
    torch.manual_seed(0)
    clip_model = open_clip.create_model("vl-test-inputs-tiny", pretrained=None).eval()
    clip = vl.CLIPText.from_open_clip_model(
        clip_model, open_clip.get_tokenizer("vl-test-inputs-tiny")
    )
    model = tiny_model()
    g = torch.Generator().manual_seed(0)
    _, cache = model.run_with_decomposition_cache(random_images(2))
    return SimpleNamespace(
        model=model,
        clip=clip,
        images=random_images(2),
        texts=torch.randn(3, D, generator=g),
        outputs=torch.randn(3, 20, D, generator=g),  # [head, images, d]
        pool=torch.randn(30, D, generator=g),
        terms=torch.randn(4, 5, D, generator=g),  # [component, images, d]
        cache=cache,
    )


def _with(t: torch.Tensor, value: float, index: tuple = (0, 0)) -> torch.Tensor:
    t = t.clone()
    t[index] = value
    return t


def _flat(t: torch.Tensor, value: float) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = value
    return t


# (id, call(env), expected type, message regex)
CASES = [
    # ------------------------------------------------------------ model forward: images
    ("forward-list", lambda e: e.model([[0.0]]), TypeError, "float tensor"),
    ("forward-none", lambda e: e.model(None), TypeError, "NoneType"),
    ("forward-single-image", lambda e: e.model(e.images[0]), ValueError, "batch dimension"),
    ("forward-channels", lambda e: e.model(e.images[:, :1]), ValueError, "batch, 3"),
    ("forward-size", lambda e: e.model(random_images(2, 8)), ValueError, "model takes"),
    ("forward-uint8", lambda e: e.model(e.images.to(torch.uint8)), TypeError, "float tensor"),
    ("forward-nan", lambda e: e.model(_flat(e.images, NAN)), ValueError, "1 NaN and 0 infinite"),
    ("forward-inf", lambda e: e.model(_flat(e.images, -INF)), ValueError, "0 NaN and 1 infinite"),
    (
        "forward-0-255",
        lambda e: e.model(torch.rand(2, 3, 16, 16) * 255),
        vl.InputWarning,
        r"0\.\.255.*model\.preprocess.*filterwarnings",
    ),
    (
        "forward-0-1",
        lambda e: e.model(torch.rand(2, 3, 16, 16)),
        vl.InputWarning,
        r"0\.\.1 .*mean/std.*filterwarnings",
    ),
    (
        "forward-huge-negative",
        lambda e: e.model(-torch.rand(2, 3, 16, 16) * 255),
        vl.InputWarning,
        "0..255",
    ),
    # ------------------------------------------------------------ run_with_cache
    ("cache-none", lambda e: e.model.run_with_cache(None), TypeError, "NoneType"),
    (
        "cache-nan",
        lambda e: e.model.run_with_cache(_flat(e.images, NAN)),
        ValueError,
        "NaN",
    ),
    (
        "cache-0-1",
        lambda e: e.model.run_with_cache(torch.rand(2, 3, 16, 16)),
        vl.InputWarning,
        "0..1",
    ),
    (
        "decomposition-cache-0-255",
        lambda e: e.model.run_with_decomposition_cache(e.images * 100),
        vl.InputWarning,
        "0..255",
    ),
    # ------------------------------------------------------------ segment & co.
    (
        "segment-nan-texts",
        lambda e: vl.segment(e.model, None, e.images, _with(e.texts, NAN)),
        ValueError,
        r"text embeddings \(texts\) contains 1 NaN",
    ),
    (
        "segment-inf-reference",
        lambda e: vl.segment(e.model, None, e.images, e.texts, reference_texts=_with(e.pool, INF)),
        ValueError,
        r"reference_texts.*infinite",
    ),
    (
        "segment-nan-images",
        lambda e: vl.segment(e.model, None, _flat(e.images, NAN), e.texts),
        ValueError,
        "Images contains 1 NaN",
    ),
    (
        "segment-0-255-images",
        lambda e: vl.segment(e.model, None, e.images * 255, e.texts),
        vl.InputWarning,
        "0..255",
    ),
    ("segment-texts-int", lambda e: vl.segment(e.model, None, e.images, 3), TypeError, "texts"),
    (
        "segment-texts-empty",
        lambda e: vl.segment(e.model, e.clip, e.images, []),
        ValueError,
        "empty",
    ),
    (
        "segment-int-embeddings",
        lambda e: vl.segment(e.model, None, e.images, torch.ones(3, D, dtype=torch.long)),
        TypeError,
        "floating point",
    ),
    (
        "segment-width",
        lambda e: vl.segment(e.model, None, e.images, torch.randn(3, D + 1)),
        ValueError,
        "same CLIP model",
    ),
    (
        "segment-strings-without-clip",
        lambda e: vl.segment(e.model, None, e.images, ["a", "b"]),
        ValueError,
        "clip",
    ),
    (
        "segment-batch-size-str",
        lambda e: vl.segment(e.model, None, e.images, e.texts, batch_size="2"),
        TypeError,
        "batch_size",
    ),
    (
        "segment-heads-nan",
        lambda e: vl.segment_heads(e.model, None, e.images, _with(e.texts, NAN)),
        ValueError,
        "NaN",
    ),
    (
        "patch-token-scores-nan",
        lambda e: patch_token_scores(e.cache, _with(e.texts, NAN)),
        ValueError,
        "directions contains 1 NaN",
    ),
    (
        "decompose-heads-tokens-nan-directions",
        lambda e: e.cache.decompose_heads_tokens(directions=_with(e.texts, NAN)),
        ValueError,
        "directions contains 1 NaN",
    ),
    (
        "patch-token-scores-list",
        lambda e: patch_token_scores(e.cache, e.texts.tolist()),
        TypeError,
        "directions must be a tensor",
    ),
    (
        "patch-token-scores-width",
        lambda e: patch_token_scores(e.cache, torch.randn(3, D + 2)),
        ValueError,
        "same CLIP model",
    ),
    # ------------------------------------------------------------ similarity
    (
        "similarity-nan-images",
        lambda e: vl.CLIPText.similarity(_with(e.texts, NAN), e.texts),
        ValueError,
        "image_embeds contains 1 NaN",
    ),
    (
        "similarity-inf-texts",
        lambda e: similarity(e.texts, _with(e.texts, INF)),
        ValueError,
        "text_embeds contains 0 NaN and 1 infinite",
    ),
    ("similarity-list", lambda e: similarity([[1.0] * D], e.texts), TypeError, "must be a tensor"),
    (
        "similarity-int",
        lambda e: similarity(torch.ones(2, D, dtype=torch.long), e.texts),
        TypeError,
        "floating-point",
    ),
    (
        "similarity-3d",
        lambda e: similarity(e.texts[None], e.texts),
        ValueError,
        r"\[n, d_embed\]",
    ),
    ("similarity-width", lambda e: similarity(e.texts, e.pool[:, :4]), ValueError, "width"),
    # ------------------------------------------------------------ attribute_variance
    (
        "attribute-variance-nan-outputs",
        lambda e: vl.attribute_variance(_with(e.outputs, NAN), {"color": e.texts}),
        ValueError,
        "head_outputs contains",
    ),
    (
        "attribute-variance-nan-set",
        lambda e: vl.attribute_variance(e.outputs, {"color": _with(e.texts, NAN)}),
        ValueError,
        r"text_sets\['color'\] contains",
    ),
    (
        "attribute-variance-list",
        lambda e: vl.attribute_variance(e.outputs.tolist(), {"color": e.texts}),
        TypeError,
        "head_outputs must be a tensor",
    ),
    (
        "attribute-variance-sets-list",
        lambda e: vl.attribute_variance(e.outputs, [e.texts]),
        TypeError,
        "mapping",
    ),
    (
        "attribute-variance-set-list",
        lambda e: vl.attribute_variance(e.outputs, {"color": e.texts.tolist()}),
        TypeError,
        "'color' must be a tensor",
    ),
    (
        "attribute-variance-empty",
        lambda e: vl.attribute_variance(e.outputs, {}),
        ValueError,
        "at least one text set",
    ),
    # ------------------------------------------------------------ textspan
    (
        "textspan-nan-texts",
        lambda e: vl.textspan(e.outputs, _with(e.pool, NAN), m=3, progress=False),
        ValueError,
        "text_embeddings contains 1 NaN",
    ),
    (
        "textspan-inf-outputs",
        lambda e: vl.textspan(_with(e.outputs, INF, (1, 0)), e.pool, m=3, progress=False),
        ValueError,
        r"head_outputs \(heads .*infinite",
    ),
    (
        "textspan-list",
        lambda e: vl.textspan(e.outputs.tolist(), e.pool, m=3),
        TypeError,
        "must be a tensor",
    ),
    ("textspan-m-str", lambda e: vl.textspan(e.outputs, e.pool, m="3"), TypeError, "m must be"),
    ("textspan-m-zero", lambda e: vl.textspan(e.outputs, e.pool, m=0), ValueError, "m must be"),
    (
        "textspan-head-chunk-float",
        lambda e: vl.textspan(e.outputs, e.pool, m=3, head_chunk=1.5),
        TypeError,
        "head_chunk",
    ),
    # ------------------------------------------------------------ retrieval
    (
        "neighbors-nan",
        lambda e: vl.image_neighbors(_with(e.outputs[0], NAN)),
        ValueError,
        "outputs contains 1 NaN",
    ),
    ("neighbors-k-str", lambda e: vl.image_neighbors(e.outputs[0], k="3"), TypeError, "k must"),
    ("neighbors-k-zero", lambda e: vl.image_neighbors(e.outputs[0], k=0), ValueError, "k must"),
    (
        "neighbors-float-queries",
        lambda e: vl.image_neighbors(e.outputs[0], [0.9]),
        TypeError,
        "queries must be image indices",
    ),
    (
        "neighbors-query-range",
        lambda e: vl.image_neighbors(e.outputs[0], [99]),
        IndexError,
        "out of range",
    ),
    (
        "neighbors-empty-queries",
        lambda e: vl.image_neighbors(e.outputs[0], []),
        ValueError,
        "queries is empty",
    ),
    (
        "neighbors-chunk-zero",
        lambda e: vl.image_neighbors(e.outputs[0], chunk_size=0),
        ValueError,
        "chunk_size",
    ),
    (
        "text-to-image-nan",
        lambda e: vl.text_to_image(e.outputs[0], _with(e.texts, NAN)),
        ValueError,
        "text_embeddings contains 1 NaN",
    ),
    (
        "text-to-image-list",
        lambda e: vl.text_to_image(e.outputs[0], e.texts.tolist()),
        TypeError,
        "must be a tensor",
    ),
    (
        "text-to-image-width",
        lambda e: vl.text_to_image(e.outputs[0], e.pool[:, :3]),
        ValueError,
        "same CLIP model",
    ),
    (
        "text-to-image-empty",
        lambda e: vl.text_to_image(e.outputs[0], e.texts[:0]),
        ValueError,
        "empty",
    ),
    # ------------------------------------------------------------ mean ablation
    (
        "mean-ablate-nan-terms",
        lambda e: vl.mean_ablate(_with(e.terms, NAN, (0, 0, 0)), [0]),
        ValueError,
        "terms contains 1 NaN",
    ),
    (
        "mean-ablate-inf-reference",
        lambda e: vl.mean_ablate(e.terms, [0], reference=_with(e.terms, INF, (1, 0, 0))),
        ValueError,
        "reference contains 0 NaN and 1 infinite",
    ),
    (
        "mean-ablate-list",
        lambda e: vl.mean_ablate(e.terms.tolist(), [0]),
        TypeError,
        "terms must be a tensor",
    ),
    ("mean-ablate-2d", lambda e: vl.mean_ablate(e.terms[0], [0]), ValueError, "got shape"),
    (
        "mean-ablate-float-index",
        lambda e: vl.mean_ablate(e.terms, [0.9]),
        TypeError,
        "int component indices",
    ),
    ("mean-ablate-range", lambda e: vl.mean_ablate(e.terms, [9]), IndexError, "out of range"),
    (
        "mean-ablate-str",
        lambda e: vl.mean_ablate(e.terms, "0"),
        TypeError,
        "component indices or a boolean mask",
    ),
    # ------------------------------------------------------------ CLIPText.encode
    ("encode-empty", lambda e: e.clip.encode([]), ValueError, "empty text list"),
    ("encode-non-string", lambda e: e.clip.encode(["a", 3]), TypeError, "index 1 is int"),
    ("encode-none", lambda e: e.clip.encode(None), TypeError, "NoneType"),
    ("encode-none-item", lambda e: e.clip.encode([None]), TypeError, "index 0 is NoneType"),
    ("encode-tensor", lambda e: e.clip.encode(torch.ones(2)), TypeError, "tensor"),
    ("encode-batch-size-str", lambda e: e.clip.encode(["a"], batch_size="2"), TypeError, "batch"),
    ("encode-batch-size-0", lambda e: e.clip.encode(["a"], batch_size=0), ValueError, "batch"),
    # ------------------------------------------------------------ the shared helper
    ("check-finite-list", lambda e: check_finite([1.0], "x"), TypeError, "x must be a tensor"),
    (
        "check-finite-nan",
        lambda e: check_finite(torch.tensor([NAN, INF, 1.0]), "weights"),
        ValueError,
        "weights contains 1 NaN and 1 infinite value",
    ),
]


@pytest.mark.parametrize(
    ("call", "expected", "pattern"),
    [pytest.param(call, expected, pattern, id=name) for name, call, expected, pattern in CASES],
)
def test_misuse_is_refused_or_flagged(env, call, expected, pattern):
    if issubclass(expected, Warning):
        with pytest.warns(expected, match=pattern):
            call(env)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error", vl.InputWarning)  # errors come before any warning
            with pytest.raises(expected, match=pattern):
                call(env)


def test_table_is_large_enough():
    assert len(CASES) >= 40
    assert len({name for name, *_ in CASES}) == len(CASES)


# ---------------------------------------------------------------- no false alarms
@pytest.mark.parametrize(
    "images",
    [
        pytest.param(random_images(4), id="randn"),
        pytest.param(torch.zeros(2, 3, 16, 16), id="zeros (a normalised mean-grey image)"),
        pytest.param(torch.rand(2, 3, 16, 16) * 4.4 - 2.1, id="imagenet-range"),
        pytest.param(torch.rand(2, 3, 16, 16) * 0.2 + 0.1, id="low-contrast-positive"),
        pytest.param(random_images(2, seed=1)[:0], id="empty batch"),
    ],
)
def test_normalised_images_do_not_warn(images):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_images(images, (16, 16))


def test_warning_points_at_the_callers_line_once(env):
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for _ in range(3):
            env.model(torch.rand(2, 3, 16, 16))  # one line: one warning
    warned = [w for w in caught if issubclass(w.category, vl.InputWarning)]
    assert len(warned) == 1
    assert warned[0].filename == __file__


def test_warning_can_be_silenced(env):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=vl.InputWarning)
        env.model(torch.rand(2, 3, 16, 16))


def test_check_finite_passes_through():
    x = torch.randn(3)
    assert check_finite(x, "x") is x
    assert check_finite(torch.arange(3), "ints") is not None
    assert check_finite(torch.empty(0), "empty").numel() == 0


def test_encode_output_is_checked(env, monkeypatch):
    """A text tower that overflows (NaN) is refused rather than passed downstream."""
    backend = env.clip._backend
    monkeypatch.setattr(
        type(backend), "encode", lambda self, model, inputs, normalize: torch.full((1, D), NAN)
    )
    with pytest.raises(ValueError, match="text embeddings contains"):
        env.clip.encode(["a"])


# ---------------------------------------------------------------- the shipped model
@pytest.fixture(scope="module")
def shapes_clip():
    try:
        return vl.load_shapes_clip()
    except (OSError, FileNotFoundError) as err:  # pragma: no cover - the weights ship
        pytest.skip(f"shipped shapes model unavailable: {err}")


def test_shipped_model_warns_on_raw_pixels_only(shapes_clip):
    model, _ = shapes_clip
    scenes = vl.shapes.generate(4, seed=0)
    preprocessed = torch.stack([model.preprocess(scenes.to_pil(i)) for i in range(len(scenes))])
    raw = torch.as_tensor(scenes.images).permute(0, 3, 1, 2).float()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            model(preprocessed)  # the model's own preprocessing never warns
    with pytest.warns(vl.InputWarning, match="0..1"), torch.no_grad():
        model(raw / 255)
    with pytest.warns(vl.InputWarning, match="0..255"), torch.no_grad():
        model(raw)
