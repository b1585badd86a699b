"""Nothing silent in the figures: every misuse of a ``vision_lens.plot`` function gets a clear
error naming the argument, the value and the fix, with one exception type per kind of mistake
(docs/errors.md): wrong types, wrong shapes, mismatched lengths, empty input, NaN/Inf, bad sizes,
layers/heads/tokens that do not exist, bad output paths.

One table: (id, call(env), expected exception type, message regex). No browser is started: the
arguments of ``to_png`` are checked before it looks for one.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from support.tiny import random_images, tiny_model

from vision_lens import plot
from vision_lens.analysis.textspan import textspan

NAN = float("nan")
INF = float("inf")
IMG = np.zeros((16, 16, 3), np.uint8)  # one uint8 HWC image
S44 = np.arange(16.0).reshape(4, 4) - 8  # a 4 x 4 patch grid of scores
ABC = ["a", "b", "c"]
TERMS = np.ones((3, 4, 8))  # [component, batch, d_embed]
IMAGES2 = np.zeros((2, 8, 8, 3), np.uint8)
MASKS2 = np.ones((2, 8, 8))
HEAT2 = {"ours": np.linspace(0, 1, 128).reshape(2, 8, 8)}
PATTERN = "blocks.0.attn.hook_pattern"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A tiny model's attention cache, a TextSpan result, a figure and a folder."""
    model = tiny_model()  # 2 layers, 4 heads, a 2 x 2 patch grid (5 tokens)
    _, cache = model.run_with_cache(random_images(2))
    texts = torch.eye(6, 8)
    outputs = torch.randn(2, 30, 2, generator=torch.Generator().manual_seed(0)) @ texts[[0, 3]]
    result = textspan(outputs, texts, m=2, rank=None, heads=[(0, 0), (0, 1)], texts=list("uvwxyz"))
    return SimpleNamespace(
        cache=cache,
        result=result,
        fig=plot.head_grid(np.ones((1, 2))),
        folder=tmp_path_factory.mktemp("figures"),
    )


def _pattern(shape, value=0.0):
    return {PATTERN: torch.full(shape, value)}


# (id, call(env), expected type, message regex)
CASES = [
    # ------------------------------------------------------------ upsample_patch_scores
    (
        "upsample-none",
        lambda e: plot.upsample_patch_scores(None, (8, 8)),
        TypeError,
        "scores must be a tensor.*NoneType",
    ),
    (
        "upsample-text",
        lambda e: plot.upsample_patch_scores([[1, "a"]], (8, 8)),
        TypeError,
        "scores must be numbers",
    ),
    (
        "upsample-empty",
        lambda e: plot.upsample_patch_scores(np.zeros(0), (8, 8)),
        ValueError,
        r"scores is empty \(shape \(0,\)\)",
    ),
    (
        "upsample-nan",
        lambda e: plot.upsample_patch_scores(np.full((4, 4), NAN), (8, 8)),
        ValueError,
        "scores contains 16 NaN and 0 infinite",
    ),
    (
        "upsample-size-int",
        lambda e: plot.upsample_patch_scores(S44, 8),
        TypeError,
        r"size must be \(H, W\).*got 8",
    ),
    (
        "upsample-size-zero",
        lambda e: plot.upsample_patch_scores(S44, (0, 8)),
        ValueError,
        r"size must be \(H, W\), two positive ints, got 0",
    ),
    (
        "upsample-size-three",
        lambda e: plot.upsample_patch_scores(S44, (8, 8, 8)),
        ValueError,
        "got 3 values",
    ),
    (
        "upsample-size-float",
        lambda e: plot.upsample_patch_scores(S44, (8.5, 8)),
        TypeError,
        "got 8.5 in",
    ),
    (
        "upsample-not-square",
        lambda e: plot.upsample_patch_scores(np.zeros(5), (8, 8)),
        ValueError,
        r"5 patch scores do not form a square grid; pass \[rows, cols\]",
    ),
    # ------------------------------------------------------------ token_heatmap
    (
        "heatmap-image-none",
        lambda e: plot.token_heatmap(None, S44),
        TypeError,
        "image must be a PIL image.*NoneType",
    ),
    (
        "heatmap-image-path",
        lambda e: plot.token_heatmap("cat.png", S44),
        TypeError,
        "image must be a PIL image.*'cat.png'",
    ),
    (
        "heatmap-image-batch",
        lambda e: plot.token_heatmap(torch.randn(1, 3, 16, 16), S44),
        ValueError,
        r"image is a batch of shape \(1, 3, 16, 16\).*image\[0\]",
    ),
    (
        "heatmap-image-grey",
        lambda e: plot.token_heatmap(np.zeros((16, 16)), S44),
        ValueError,
        r"RGB image \[H, W, 3\].*got shape \(16, 16\)",
    ),
    (
        "heatmap-image-nan",
        lambda e: plot.token_heatmap(torch.full((3, 16, 16), NAN), S44),
        ValueError,
        "image contains 768 NaN",
    ),
    (
        "heatmap-image-empty",
        lambda e: plot.token_heatmap(np.zeros((0, 0, 3), np.uint8), S44),
        ValueError,
        "image is empty",
    ),
    (
        "heatmap-scores-3d",
        lambda e: plot.token_heatmap(IMG, np.zeros((2, 4, 4))),
        ValueError,
        r"scores must have 1 or 2 dimension\(s\) \[rows, cols\], got shape \(2, 4, 4\)",
    ),
    (
        "heatmap-scores-inf",
        lambda e: plot.token_heatmap(IMG, np.array([[1, INF], [0, 1]])),
        ValueError,
        "scores contains 0 NaN and 1 infinite",
    ),
    (
        "heatmap-scores-empty",
        lambda e: plot.token_heatmap(IMG, np.zeros((0, 4))),
        ValueError,
        "scores is empty",
    ),
    (
        "heatmap-opacity-range",
        lambda e: plot.token_heatmap(IMG, S44, opacity=2),
        ValueError,
        r"opacity must be in \[0, 1\], got 2",
    ),
    (
        "heatmap-opacity-text",
        lambda e: plot.token_heatmap(IMG, S44, opacity="0.5"),
        TypeError,
        "opacity must be a number, got '0.5'",
    ),
    (
        "heatmap-signed-text",
        lambda e: plot.token_heatmap(IMG, S44, signed="no"),
        TypeError,
        "signed must be True, False or None, got 'no'",
    ),
    # ------------------------------------------------------------ token_heatmap_grid
    (
        "grid-texts-string",
        lambda e: plot.token_heatmap_grid([IMG], np.zeros((1, 3, 4, 4)), "abc"),
        TypeError,
        "texts must be a list of strings, got str 'abc'.*wrap it in a list",
    ),
    (
        "grid-texts-none",
        lambda e: plot.token_heatmap_grid([IMG], np.zeros((1, 1, 4, 4)), None),
        TypeError,
        "texts must be a list",
    ),
    (
        "grid-images-none",
        lambda e: plot.token_heatmap_grid(None, np.zeros((1, 1, 4, 4)), ["a"]),
        TypeError,
        "images must be a list of images",
    ),
    (
        "grid-scores-1d",
        lambda e: plot.token_heatmap_grid([IMG], np.zeros(16), ["a"]),
        ValueError,
        r"scores must have 3 or 4 dimension\(s\) \[n_images, n_texts, rows, cols\]",
    ),
    (
        "grid-texts-mismatch",
        lambda e: plot.token_heatmap_grid([IMG], np.zeros((1, 3, 4, 4)), ["a"]),
        ValueError,
        r"scores \(1, 3\) do not match 1 images x 1 texts",
    ),
    (
        "grid-no-texts",
        lambda e: plot.token_heatmap_grid([IMG], np.zeros((1, 0, 4, 4)), []),
        ValueError,
        "scores is empty",
    ),
    (
        "grid-nan",
        lambda e: plot.token_heatmap_grid([IMG], np.full((1, 1, 4, 4), NAN), ["a"]),
        ValueError,
        "scores contains 16 NaN",
    ),
    # ------------------------------------------------------------ head_grid
    (
        "heads-none",
        lambda e: plot.head_grid(None),
        TypeError,
        r"scores must be a tensor.*\[layer, head\], got NoneType",
    ),
    (
        "heads-complex",
        lambda e: plot.head_grid(np.zeros((1, 2), complex)),
        TypeError,
        "scores must be real numbers",
    ),
    (
        "heads-1d",
        lambda e: plot.head_grid(np.zeros(4)),
        ValueError,
        r"scores must have 2 dimension\(s\) \[layer, head\], got shape \(4,\)",
    ),
    (
        "heads-empty",
        lambda e: plot.head_grid(np.zeros((2, 0))),
        ValueError,
        r"scores is empty \(shape \(2, 0\)\)",
    ),
    (
        "heads-nan",
        lambda e: plot.head_grid(np.full((2, 2), NAN)),
        ValueError,
        "scores contains 4 NaN",
    ),
    (
        "heads-layers-string",
        lambda e: plot.head_grid(np.zeros((2, 2)), layers="01"),
        TypeError,
        "layers must be a list of ints.*'01'",
    ),
    (
        "heads-layers-bool",
        lambda e: plot.head_grid(np.zeros((2, 2)), layers=[True, False]),
        TypeError,
        "layers must be ints, got True",
    ),
    (
        "heads-layers-repeated",
        lambda e: plot.head_grid(np.zeros((2, 2)), layers=[3, 3]),
        ValueError,
        r"layers \[3, 3\] names the same layer twice",
    ),
    (
        "heads-layers-negative",
        lambda e: plot.head_grid(np.zeros((1, 2)), layers=[-1]),
        ValueError,
        "pass non-negative indices",
    ),
    (
        "heads-layers-count",
        lambda e: plot.head_grid(np.zeros((2, 2)), layers=[1, 2, 3]),
        ValueError,
        "3 layers given for 2 rows of scores",
    ),
    (
        "heads-top-zero",
        lambda e: plot.head_grid(np.zeros((1, 2)), labels=[["a", "b"]], top=0),
        ValueError,
        r"top must be an int >= 1 \(or None\), got 0",
    ),
    (
        "heads-top-bool",
        lambda e: plot.head_grid(np.zeros((1, 2)), top=True),
        TypeError,
        "top must be an int >= 1.*got True",
    ),
    (
        "heads-signed-text",
        lambda e: plot.head_grid(np.zeros((1, 2)), signed="yes"),
        TypeError,
        "signed must be True, False or None",
    ),
    (
        "heads-labels-string",
        lambda e: plot.head_grid(np.zeros((1, 2)), labels="ab"),
        TypeError,
        "labels must be a TextSpanResult.*got str 'ab'",
    ),
    (
        "heads-labels-int-texts",
        lambda e: plot.head_grid(np.zeros((1, 2)), labels={(0, 0): 5}),
        TypeError,
        r"labels entry for \(0, 0\) must be a string or a list of strings, got int 5",
    ),
    (
        "heads-labels-float-key",
        lambda e: plot.head_grid(np.zeros((1, 2)), labels={(0.7, 1.2): "x"}),
        ValueError,
        r"labels key \(0.7, 1.2\) is not \(layer, head\).*must be ints",
    ),
    (
        "heads-labels-outside",
        lambda e: plot.head_grid(np.zeros((1, 2)), labels={(0, 5): "x"}),
        ValueError,
        r"\(0, 5\).*not in the grid",
    ),
    (
        "heads-labels-bad-dict",
        lambda e: plot.head_grid(np.zeros((1, 2)), labels={"heads": [5]}),
        ValueError,
        r"to_dict\(\) but its heads lack",
    ),
    # ------------------------------------------------------------ textspan_table
    (
        "table-not-a-result",
        lambda e: plot.textspan_table(None),
        TypeError,
        "takes a TextSpanResult.*NoneType",
    ),
    (
        "table-head-bool",
        lambda e: plot.textspan_table(e.result, heads=True),
        TypeError,
        r"head True is not a \(layer, head\) pair",
    ),
    (
        "table-head-float",
        lambda e: plot.textspan_table(e.result, heads=[0.5]),
        TypeError,
        "head 0.5 is not",
    ),
    (
        "table-head-triple",
        lambda e: plot.textspan_table(e.result, heads=[(0, 0, 0)]),
        TypeError,
        r"head \(0, 0, 0\) is not",
    ),
    (
        "table-head-missing",
        lambda e: plot.textspan_table(e.result, heads=(5, 5)),
        KeyError,
        "L5H5 is not in this result; it has L0H0, L0H1",
    ),
    (
        "table-row-missing",
        lambda e: plot.textspan_table(e.result, heads=7),
        IndexError,
        "row 7 out of range for 2 heads",
    ),
    (
        "table-heads-empty",
        lambda e: plot.textspan_table(e.result, heads=[]),
        ValueError,
        "heads is empty.*or None for all",
    ),
    (
        "table-top-float",
        lambda e: plot.textspan_table(e.result, top=1.5),
        TypeError,
        "top must be an int >= 1.*got 1.5",
    ),
    (
        "table-height-zero",
        lambda e: plot.textspan_table(e.result, height=0),
        ValueError,
        "height must be an int >= 10.*got 0",
    ),
    (
        "table-height-text",
        lambda e: plot.textspan_table(e.result, height="500"),
        TypeError,
        "height must be an int >= 10.*got '500'",
    ),
    # ------------------------------------------------------------ layer_contributions
    (
        "layers-terms-2d",
        lambda e: plot.layer_contributions(np.zeros((3, 8)), ABC),
        ValueError,
        r"terms must have 3 dimension\(s\) \[component, batch, d_embed\]",
    ),
    (
        "layers-terms-empty-batch",
        lambda e: plot.layer_contributions(np.zeros((3, 0, 8)), ABC),
        ValueError,
        r"terms is empty \(shape \(3, 0, 8\)\)",
    ),
    (
        "layers-terms-nan",
        lambda e: plot.layer_contributions(np.full((3, 4, 8), NAN), ABC),
        ValueError,
        "terms contains 96 NaN",
    ),
    (
        "layers-labels-count",
        lambda e: plot.layer_contributions(TERMS, ["a", "b"]),
        ValueError,
        r"labels has 2 entries but there are 3 components",
    ),
    (
        "layers-labels-string",
        lambda e: plot.layer_contributions(TERMS, "abc"),
        TypeError,
        "labels must be a list of strings, got str 'abc'",
    ),
    (
        "layers-labels-repeated",
        lambda e: plot.layer_contributions(np.ones((2, 4, 8)), ["a", "a"]),
        ValueError,
        r"labels name \['a'\] more than once",
    ),
    (
        "layers-embed-batch",
        lambda e: plot.layer_contributions(TERMS, ABC, np.ones((5, 8))),
        ValueError,
        r"embed is \(5, 8\) but terms are \(3, 4, 8\).*\(4, 8\)",
    ),
    (
        "layers-embed-broadcast",
        lambda e: plot.layer_contributions(TERMS, ABC, np.ones((1, 8))),
        ValueError,
        r"embed must be \[batch, d_embed\] = \(4, 8\)",
    ),
    (
        "layers-embed-zero",
        lambda e: plot.layer_contributions(TERMS, ABC, np.zeros((4, 8))),
        ValueError,
        r"embed has zero norm for image\(s\) \[0, 1, 2, 3\]",
    ),
    # ------------------------------------------------------------ line_chart
    (
        "line-curves-list",
        lambda e: plot.line_chart([1, 2], [0, 1]),
        TypeError,
        "curves must be a mapping of curve name -> y values, got list",
    ),
    ("line-curves-empty", lambda e: plot.line_chart({}, [0, 1]), ValueError, "curves is empty"),
    (
        "line-x-string",
        lambda e: plot.line_chart({"a": [1, 2]}, "ab"),
        TypeError,
        "x must be a list of x values.*got str 'ab'",
    ),
    (
        "line-length",
        lambda e: plot.line_chart({"a": [1, 2, 3]}, [0, 1]),
        ValueError,
        r"curves\['a'\] has 3 values for 2 x values",
    ),
    (
        "line-values-string",
        lambda e: plot.line_chart({"a": "12"}, [0, 1]),
        TypeError,
        r"curves\['a'\] must be a list of numbers.*got str '12'",
    ),
    (
        "line-values-2d",
        lambda e: plot.line_chart({"a": np.zeros((2, 2))}, [0, 1]),
        ValueError,
        r"curves\['a'\] must have 1 dimension",
    ),
    (
        "line-values-nan",
        lambda e: plot.line_chart({"a": [1, NAN]}, [0, 1]),
        ValueError,
        r"curves\['a'\] contains nan.*None where a point is missing",
    ),
    # ------------------------------------------------------------ attention_pattern
    (
        "attention-cache-none",
        lambda e: plot.attention_pattern(None, 0, 0),
        TypeError,
        "cache must be the ActivationCache.*NoneType",
    ),
    (
        "attention-layer",
        lambda e: plot.attention_pattern(e.cache, 5, 0),
        IndexError,
        "Layer 5 does not exist: the model has 2 layers",
    ),
    (
        "attention-head",
        lambda e: plot.attention_pattern(e.cache, 0, 9),
        IndexError,
        "Head 9 does not exist: the model has 4 heads",
    ),
    (
        "attention-head-list",
        lambda e: plot.attention_pattern(e.cache, 0, [0, 1]),
        TypeError,
        r"head must be an int, got \[0, 1\]",
    ),
    (
        "attention-query-floats",
        lambda e: plot.attention_pattern(e.cache, 0, 0, query=(0.5, 1.5)),
        TypeError,
        r"query must be .*\(row, col\) patch of two ints, got \(0.5, 1.5\)",
    ),
    (
        "attention-query-outside",
        lambda e: plot.attention_pattern(e.cache, 0, 0, query=(2, 0)),
        IndexError,
        r"\(2, 0\) is outside the 2 x 2 patch grid",
    ),
    (
        "attention-batch-float",
        lambda e: plot.attention_pattern(e.cache, 0, 0, batch_index=0.7),
        TypeError,
        "batch_index must be an int, got 0.7",
    ),
    (
        "attention-batch-bool",
        lambda e: plot.attention_pattern(e.cache, 0, 0, batch_index=True),
        TypeError,
        "batch_index must be an int, got True",
    ),
    (
        "attention-batch-range",
        lambda e: plot.attention_pattern(e.cache, 0, 0, batch_index=5),
        IndexError,
        "batch_index 5 is out of range for 2 images",
    ),
    (
        "attention-opacity",
        lambda e: plot.attention_pattern(e.cache, 0, 0, opacity=5),
        ValueError,
        r"opacity must be in \[0, 1\], got 5",
    ),
    (
        "attention-image-batch",
        lambda e: plot.attention_pattern(e.cache, 0, 0, image=random_images(2)),
        ValueError,
        "image is a batch of shape",
    ),
    (
        "attention-pattern-nan",
        lambda e: plot.attention_pattern(_pattern((1, 2, 5, 5), NAN), 0, 0),
        ValueError,
        r"hook_pattern\[0, 0, 0\] \(the attention row drawn\) contains 5 NaN",
    ),
    (
        "attention-pattern-numpy",
        lambda e: plot.attention_pattern({PATTERN: np.zeros((1, 2, 5, 5))}, 0, 0),
        TypeError,
        "hook_pattern must be a tensor, got ndarray",
    ),
    (
        "attention-negative-layer-no-model",
        lambda e: plot.attention_pattern(_pattern((1, 2, 5, 5)), -1, 0),
        IndexError,
        "layer -1 counts from the end.*pass a non-negative layer",
    ),
    # ------------------------------------------------------------ segmentation_examples
    (
        "segmentation-heatmaps-array",
        lambda e: plot.segmentation_examples(IMAGES2, MASKS2, np.ones((2, 8, 8))),
        TypeError,
        "heatmaps must be a mapping of method name",
    ),
    (
        "segmentation-masks-2d",
        lambda e: plot.segmentation_examples(IMAGES2[:1], np.ones((8, 8)), HEAT2),
        ValueError,
        r"masks must have 3 dimension\(s\) \[n, H, W\]",
    ),
    (
        "segmentation-count",
        lambda e: plot.segmentation_examples(np.zeros((3, 8, 8, 3), np.uint8), MASKS2, HEAT2),
        ValueError,
        "3 images but 2 masks",
    ),
    (
        "segmentation-resolution",
        lambda e: plot.segmentation_examples(np.zeros((2, 16, 16, 3), np.uint8), MASKS2, HEAT2),
        ValueError,
        r"images\[0\] is \(16, 16\) pixels but masks are \(8, 8\)",
    ),
    (
        "segmentation-heatmap-shape",
        lambda e: plot.segmentation_examples(IMAGES2, MASKS2, {"a": np.ones((2, 4, 4))}),
        ValueError,
        r"heatmaps\['a'\] is \(2, 4, 4\) but masks are \(2, 8, 8\)",
    ),
    (
        "segmentation-heatmap-nan",
        lambda e: plot.segmentation_examples(IMAGES2, MASKS2, {"a": np.full((2, 8, 8), NAN)}),
        ValueError,
        r"heatmaps\['a'\] contains 128 NaN",
    ),
    (
        "segmentation-mask-nan",
        lambda e: plot.segmentation_examples(IMAGES2, np.full((2, 8, 8), NAN), HEAT2),
        ValueError,
        "masks contains 128 NaN",
    ),
    (
        "segmentation-texts-string",
        lambda e: plot.segmentation_examples(IMAGES2, MASKS2, HEAT2, "ab"),
        TypeError,
        "texts must be a list of strings, got str",
    ),
    (
        "segmentation-texts-count",
        lambda e: plot.segmentation_examples(IMAGES2, MASKS2, HEAT2, ["a"]),
        ValueError,
        "texts has 1 entries but there are 2 images",
    ),
    (
        "segmentation-alpha",
        lambda e: plot.segmentation_examples(IMAGES2, MASKS2, HEAT2, alpha=3),
        ValueError,
        r"alpha must be in \[0, 1\], got 3",
    ),
    (
        "segmentation-max-side",
        lambda e: plot.segmentation_examples(IMAGES2, MASKS2, HEAT2, max_side=0),
        ValueError,
        "max_side must be an int >= 1, got 0",
    ),
    (
        "segmentation-empty",
        lambda e: plot.segmentation_examples(IMAGES2[:0], MASKS2[:0], {"a": np.ones((0, 8, 8))}),
        ValueError,
        "masks is empty",
    ),
    # ------------------------------------------------------------ retrieval_grid
    (
        "retrieval-images-none",
        lambda e: plot.retrieval_grid(None),
        TypeError,
        "images must be a list of images.*NoneType",
    ),
    (
        "retrieval-one-image",
        lambda e: plot.retrieval_grid(torch.rand(3, 8, 8)),
        ValueError,
        r"images has shape \(3, 8, 8\): that is one image.*\[image\]",
    ),
    (
        "retrieval-ncols-text",
        lambda e: plot.retrieval_grid(torch.rand(2, 3, 8, 8), ncols="2"),
        TypeError,
        "ncols must be an int >= 1, got '2'",
    ),
    (
        "retrieval-ncols-zero",
        lambda e: plot.retrieval_grid(torch.rand(2, 3, 8, 8), ncols=0),
        ValueError,
        "ncols must be an int >= 1, got 0",
    ),
    (
        "retrieval-scores-inf",
        lambda e: plot.retrieval_grid(torch.rand(2, 3, 8, 8), scores=[1, INF]),
        ValueError,
        r"scores contains inf.*None or NaN: no score",
    ),
    (
        "retrieval-scores-scalar",
        lambda e: plot.retrieval_grid(torch.rand(1, 3, 8, 8), scores=0.5),
        TypeError,
        "scores must be a list of numbers, one per image, got 0.5",
    ),
    (
        "retrieval-scores-text",
        lambda e: plot.retrieval_grid(torch.rand(2, 3, 8, 8), scores=["a", "b"]),
        TypeError,
        "scores must be numbers.*got 'a'",
    ),
    (
        "retrieval-scores-2d",
        lambda e: plot.retrieval_grid(torch.rand(2, 3, 8, 8), scores=np.zeros((2, 2))),
        ValueError,
        r"scores must have 1 dimension\(s\)",
    ),
    (
        "retrieval-titles-string",
        lambda e: plot.retrieval_grid(torch.rand(2, 3, 8, 8), titles="ab"),
        TypeError,
        "titles must be a list of strings",
    ),
    (
        "retrieval-panel-size",
        lambda e: plot.retrieval_grid(torch.rand(2, 3, 8, 8), panel_size=-10),
        ValueError,
        "panel_size must be an int >= 10, got -10",
    ),
    (
        "retrieval-image-nan",
        lambda e: plot.retrieval_grid(torch.full((1, 3, 8, 8), NAN)),
        ValueError,
        r"images\[0\] contains 192 NaN",
    ),
    # ------------------------------------------------------------ set_renderer, show
    (
        "renderer-none",
        lambda e: plot.set_renderer(None),
        TypeError,
        "renderer must be a plotly renderer name.*NoneType",
    ),
    (
        "renderer-unknown",
        lambda e: plot.set_renderer("nope"),
        ValueError,
        "Unknown plotly renderer 'nope'. Available:",
    ),
    (
        "show-not-a-figure",
        lambda e: plot.show({"data": []}, renderer="json"),
        TypeError,
        "show takes a plotly Figure.*got dict",
    ),
    (
        "show-renderer-int",
        lambda e: plot.show(e.fig, renderer=3),
        TypeError,
        "renderer must be a plotly renderer name.*int 3",
    ),
    (
        "show-unknown-option",
        lambda e: plot.show(e.fig, static=True, foo=3),
        TypeError,
        r"unexpected keyword argument\(s\) \['foo'\].*width, height, scale",
    ),
    # ------------------------------------------------------------ to_png (before any browser)
    (
        "png-not-a-figure",
        lambda e: plot.to_png(None),
        TypeError,
        "to_png takes a plotly Figure.*NoneType",
    ),
    (
        "png-path-folder",
        lambda e: plot.to_png(e.fig, e.folder),
        IsADirectoryError,
        r"is a folder; pass a file name such as .*figure\.png",
    ),
    (
        "png-path-no-parent",
        lambda e: plot.to_png(e.fig, e.folder / "nope" / "a.png"),
        FileNotFoundError,
        "folder .*nope' does not exist; create it first",
    ),
    (
        "png-path-extension",
        lambda e: plot.to_png(e.fig, e.folder / "a.jpg"),
        ValueError,
        r"does not end in \.png.*a\.png",
    ),
    (
        "png-path-int",
        lambda e: plot.to_png(e.fig, 3),
        TypeError,
        r"path must be a file path \(str or os.PathLike\), got 3",
    ),
    (
        "png-width-zero",
        lambda e: plot.to_png(e.fig, width=0),
        ValueError,
        r"width must be an int >= 10 pixels \(or None\), got 0",
    ),
    (
        "png-height-text",
        lambda e: plot.to_png(e.fig, height="500"),
        TypeError,
        "height must be an int >= 10 pixels.*'500'",
    ),
    (
        "png-scale-negative",
        lambda e: plot.to_png(e.fig, scale=-1),
        ValueError,
        "scale must be a positive, finite number, got -1",
    ),
    (
        "png-timeout-zero",
        lambda e: plot.to_png(e.fig, timeout=0),
        ValueError,
        "timeout must be a positive, finite number, got 0",
    ),
]


@pytest.mark.parametrize(
    ("call", "expected", "message"),
    [
        pytest.param(call, expected, message, id=case_id)
        for case_id, call, expected, message in CASES
    ],
)
def test_bad_input_is_refused_clearly(env, call, expected, message):
    with pytest.raises(expected, match=message):
        call(env)


def test_table_ids_are_unique_and_many():
    ids = [case[0] for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 40


# Input that is unusual but valid keeps working (no over-eager refusals).
VALID = [
    (
        "upsample-batched",
        lambda e: plot.upsample_patch_scores(np.zeros((2, 4, 4)), (8, 8)).shape,
        (2, 8, 8),
    ),
    ("heatmap-list-of-lists", lambda e: len(plot.token_heatmap(IMG, S44.tolist()).data), 2),
    (
        "heatmap-flat-scores",
        lambda e: plot.token_heatmap(IMG, np.arange(16.0)).data[1].z.shape,
        (4, 4),
    ),
    (
        "grid-flat-patches",
        lambda e: len(plot.token_heatmap_grid([IMG], np.zeros((1, 2, 16)), ["a", "b"]).data),
        5,
    ),
    (
        "heads-one-layer-int",
        lambda e: list(plot.head_grid(np.ones((1, 2)), layers=11).data[0].y),
        ["L11"],
    ),
    ("heads-int-scores", lambda e: plot.head_grid(np.ones((1, 2), int)).data[0].z.shape, (1, 2)),
    (
        "line-tensor-values",
        lambda e: list(plot.line_chart({"a": torch.tensor([1.0, 2.0])}, torch.arange(2)).data[0].y),
        [1.0, 2.0],
    ),
    (
        "line-gap",
        lambda e: list(plot.line_chart({"a": [1.0, None]}, ["x", "y"]).data[0].y),
        [1.0, None],
    ),
    (
        "line-0d-tensors",
        lambda e: list(
            plot.line_chart({"a": [torch.tensor(1.0), np.float32(2)]}, [0, 1]).data[0].y
        ),
        [1.0, 2.0],
    ),
    (
        "retrieval-tensor-scores",
        lambda e: len(
            plot.retrieval_grid(torch.rand(2, 3, 8, 8), scores=[None, torch.tensor(0.5)]).data
        ),
        2,
    ),
    (
        "retrieval-nan-score",
        lambda e: len(plot.retrieval_grid(torch.rand(2, 3, 8, 8), scores=[NAN, 0.5]).data),
        2,
    ),
    (
        "attention-tensor-query",
        lambda e: (
            plot.attention_pattern(e.cache, 0, torch.tensor(1), query=torch.tensor([1, 1]))
            .data[-1]
            .type
        ),
        "scatter",
    ),
    (
        "segmentation-label-mask",
        lambda e: len(plot.segmentation_examples(IMAGES2, MASKS2 * 3, HEAT2).data),
        6,
    ),
]


@pytest.mark.parametrize(("call", "expected"), [pytest.param(c, x, id=i) for i, c, x in VALID])
def test_valid_input_still_works(env, call, expected):
    result = call(env)
    assert (tuple(result) if isinstance(result, tuple) else result) == expected


def test_figures_are_figures(env):
    assert isinstance(plot.layer_contributions(TERMS, ABC, TERMS.sum(0)), go.Figure)
