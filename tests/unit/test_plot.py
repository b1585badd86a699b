"""vision_lens.plot: figure contents (trace types, values, colour scales, hover texts), errors,
renderer control and static PNG export (the last needs kaleido and a Chrome/Chromium)."""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
import torch
from PIL import Image
from support.tiny import tiny_model

from vision_lens import plot
from vision_lens.analysis.textspan import textspan

HAVE_KALEIDO = importlib.util.find_spec("kaleido") is not None
needs_browser = pytest.mark.skipif(
    not HAVE_KALEIDO or plot.find_browser() is None,
    reason="static export needs kaleido>=1 and a Chrome/Chromium (apt-get install chromium)",
)


def _decode(trace: go.Image) -> np.ndarray:
    """Pixels of an image trace's PNG data URI."""
    head, data = trace.source.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))


@pytest.fixture(scope="module")
def model():
    # A non-square patch grid (2 x 4), so that a transposed reshape cannot pass.
    return tiny_model(n_layers=3, image_size=(16, 32))


@pytest.fixture(scope="module")
def run(model):
    images = torch.randn(3, 3, 16, 32, generator=torch.Generator().manual_seed(1))
    _, cache = model.run_with_cache(images)
    return images, cache


# ---------------------------------------------------------------------- head_grid
def test_head_grid_values_and_colour_scale():
    scores = np.array([[0.5, 1.0, 2.0], [3.0, 0.1, 0.2]])
    trace = plot.head_grid(scores).data[0]
    assert trace.type == "heatmap"
    np.testing.assert_array_equal(trace.z, scores)
    assert list(trace.x) == ["H0", "H1", "H2"] and list(trace.y) == ["L0", "L1"]
    assert trace.zmid is None  # positive scores: sequential scale
    assert trace.colorscale[0][1] == go.Heatmap(colorscale="Viridis").colorscale[0][1]

    signed = plot.head_grid(torch.tensor([[-1.0, 4.0], [0.5, -2.0]])).data[0]
    assert signed.zmid == 0.0 and signed.zmin == -4.0 and signed.zmax == 4.0
    assert plot.head_grid(scores, signed=True).data[0].zmin == -3.0
    assert plot.head_grid(scores, layers=[7, 9]).data[0].y == ("L7", "L9")


def test_head_grid_nested_list_labels_are_escaped_and_truncated():
    labels = [[["a", "b", "c"], "solo", None], [["<b>x</b>"], [], ["y"]]]
    trace = plot.head_grid(np.ones((2, 3)), labels=labels, top=2).data[0]
    assert list(trace.text[0]) == ["a<br>b", "solo", ""]
    assert trace.text[1][0] == "&lt;b&gt;x&lt;/b&gt;"
    assert "%{text}" in trace.hovertemplate
    assert "%{text}" not in plot.head_grid(np.ones((2, 3))).data[0].hovertemplate


def _result(heads, n_text=8, m=3, texts=True):
    pool = torch.eye(n_text, 12, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    outputs = torch.stack(
        [torch.randn(40, 4, generator=g, dtype=torch.float64) @ pool[i : i + 4] for i in range(2)]
    )
    return textspan(
        outputs,
        pool,
        m=m,
        rank=None,
        texts=[f"text {i}" for i in range(n_text)] if texts else None,
        heads=heads,
    )


def test_head_grid_textspan_labels():
    result = _result(heads=[(9, 1), (10, 3)])
    fig = plot.head_grid(np.zeros((2, 4)), labels=result, layers=[9, 10])
    text = fig.data[0].text
    for row, (layer, head) in enumerate(result.heads):
        cell = text[layer - 9][head]
        texts = result.texts_for(layer, head)
        assert cell.split("<br>")[:3] == texts
        assert f"{float(result.explained_fraction[row, -1]):.0%} of variance" in cell
    assert text[0][0] == "" and text[1][1] == ""  # heads TextSpan did not cover

    # the same texts from to_dict() and from a {(layer, head): texts} mapping
    for labels in (result.to_dict(), {(9, 1): result.texts_for(9, 1)}):
        other = plot.head_grid(np.zeros((2, 4)), labels=labels, layers=[9, 10]).data[0].text
        assert other[0][1].startswith("<br>".join(result.texts_for(9, 1)))
    by_name = plot.head_grid(np.zeros((2, 4)), labels={"L10H3": "hello"}, layers=[9, 10])
    assert by_name.data[0].text[1][3] == "hello"


def test_head_grid_unlabelled_textspan_rows_are_layer_major():
    result = _result(heads=None)  # 2 rows, read as a 1 x 2 grid
    text = plot.head_grid(np.zeros((1, 2)), labels=result).data[0].text
    assert text[0][1].startswith("<br>".join(result.texts_for(1)))
    with pytest.raises(ValueError, match="unlabelled rows"):
        plot.head_grid(np.zeros((2, 2)), labels=result)
    nameless = plot.head_grid(np.zeros((1, 2)), labels=_result(None, texts=False)).data[0].text
    assert nameless[0][0].startswith("text #")


def test_head_grid_errors():
    with pytest.raises(ValueError, match=r"\[layer, head\]"):
        plot.head_grid(np.zeros(4))
    with pytest.raises(ValueError, match="matching scores"):
        plot.head_grid(np.zeros((2, 3)), labels=[["a"] * 3])
    with pytest.raises(ValueError, match="not in the grid"):
        plot.head_grid(np.zeros((2, 3)), labels={(5, 0): "x"})
    with pytest.raises(ValueError, match="not in the grid"):
        plot.head_grid(np.zeros((2, 3)), labels={(0, 3): "x"})
    with pytest.raises(ValueError, match="is not"):
        plot.head_grid(np.zeros((2, 3)), labels={"layer0": "x"})
    with pytest.raises(ValueError, match="3 layers given for 2 rows"):
        plot.head_grid(np.zeros((2, 3)), layers=[0, 1, 2])


# ---------------------------------------------------------------------- token_heatmap
def test_token_heatmap_signed_scores_centred_at_zero():
    scores = np.array([[-3.0, 1.0], [0.5, 2.0]])
    fig = plot.token_heatmap(np.zeros((20, 40, 3), np.uint8), scores)
    image, heat = fig.data
    assert (image.type, heat.type) == ("image", "heatmap")
    np.testing.assert_array_equal(heat.z, scores)
    assert heat.zmid == 0.0 and (heat.zmin, heat.zmax) == (-3.0, 3.0)
    # the cells cover the image: centres at (i + 0.5) * cell size, in pixel coordinates
    assert heat.x0 + 1.5 * heat.dx == pytest.approx(40 - 0.5) and heat.dx == 20
    assert heat.y0 + 1.5 * heat.dy == pytest.approx(20 - 0.5) and heat.dy == 10

    positive = plot.token_heatmap(np.zeros((8, 8, 3), np.uint8), np.arange(1.0, 5.0)).data[1]
    assert positive.zmid is None and (positive.zmin, positive.zmax) == (1.0, 4.0)
    assert positive.z.shape == (2, 2)  # flat square scores become a grid
    forced = plot.token_heatmap(np.zeros((8, 8, 3), np.uint8), np.arange(1.0, 5.0), signed=True)
    assert forced.data[1].zmid == 0.0 and forced.data[1].zmin == -4.0


def test_token_heatmap_image_formats():
    chw = torch.zeros(3, 6, 4)
    chw[0] = 1.0  # red
    pixels = _decode(plot.token_heatmap(chw, np.zeros((2, 2))).data[0])
    assert pixels.shape == (6, 4, 3)
    assert (pixels[..., 0] == 255).all() and (pixels[..., 1:] == 0).all()
    with pytest.raises(ValueError, match="square grid"):
        plot.token_heatmap(np.zeros((8, 8, 3), np.uint8), np.zeros(5))
    with pytest.raises(ValueError, match="RGB image"):
        plot.token_heatmap(np.zeros((8, 8)), np.zeros((2, 2)))


# ---------------------------------------------------------------------- attention_pattern
@pytest.mark.parametrize(
    "query, token", [(0, 0), (None, 0), (5, 5), (-1, 8), ((1, 2), 1 + 1 * 4 + 2), ((0, 0), 1)]
)
@pytest.mark.parametrize("layer", [1, -1])
def test_attention_pattern_is_the_cached_row(run, query, token, layer):
    images, cache = run
    kwargs = {} if query is None else {"query": query}
    fig = plot.attention_pattern(cache, layer, 3, batch_index=2, **kwargs)
    heat = fig.data[0]
    assert heat.type == "heatmap"
    row = cache[f"blocks.{layer % 3}.attn.hook_pattern"][2, 3, token]
    np.testing.assert_allclose(heat.z, row[1:].reshape(2, 4).numpy(), rtol=0, atol=0)
    assert heat.zmin == 0.0
    assert f"{float(row[0]):.1%}" in fig.layout.title.text  # the class token's share
    assert float(row.sum()) == pytest.approx(1.0, abs=1e-5)
    markers = [t for t in fig.data if t.type == "scatter"]
    if token == 0:
        assert not markers
    else:  # the cross sits on the query's cell
        r, c = divmod(token - 1, 4)
        assert (markers[0].x[0], markers[0].y[0]) == (c, r)


def test_attention_pattern_on_image(run):
    images, cache = run
    fig = plot.attention_pattern(cache, 0, 1, query=(1, 3), image=images[0])
    image, heat, marker = fig.data
    assert (image.type, heat.type, marker.type) == ("image", "heatmap", "scatter")
    np.testing.assert_array_equal(
        heat.z, cache["blocks.0.attn.hook_pattern"][0, 1, 8, 1:].reshape(2, 4).numpy()
    )
    assert _decode(image).shape == (16, 32, 3)
    # patch (1, 3) of 8 px patches: centre at pixel (8 + 3.5, 24 + 3.5)
    assert (marker.x[0], marker.y[0]) == (24 + 3.5, 8 + 3.5)
    assert heat.x0 + 3 * heat.dx == marker.x[0] and heat.y0 + heat.dy == marker.y[0]


def test_attention_pattern_cache_variants(model, run):
    images, cache = run
    _, single = model.run_with_cache(images[:1], remove_batch_dim=True)
    fig = plot.attention_pattern(single, 2, 0, query=3)
    expected = single["blocks.2.attn.hook_pattern"][0, 3, 1:].reshape(2, 4)
    np.testing.assert_array_equal(fig.data[0].z, expected.numpy())

    _, small = model.run_with_decomposition_cache(images)
    fig = plot.attention_pattern(small, 1, 2, batch_index=1)
    np.testing.assert_array_equal(
        fig.data[0].z, small["blocks.1.attn.hook_pattern"][1, 2, 0, 1:].reshape(2, 4).numpy()
    )
    with pytest.raises(ValueError, match="only the class-token query row.*run_with_cache"):
        plot.attention_pattern(small, 1, 2, query=(0, 1))

    # a plain mapping has no model config: a 2 x 4 grid cannot be inferred...
    plain = {"blocks.0.attn.hook_pattern": cache["blocks.0.attn.hook_pattern"]}
    with pytest.raises(ValueError, match="Cannot lay 8 patch tokens out on a grid"):
        plot.attention_pattern(plain, 0, 0)
    square = torch.softmax(torch.randn(1, 2, 10, 10), -1)  # ...a 3 x 3 one can
    fig = plot.attention_pattern({"blocks.4.attn.hook_pattern": square}, 4, 1, query=(2, 0))
    np.testing.assert_array_equal(fig.data[0].z, square[0, 1, 7, 1:].reshape(3, 3).numpy())


def test_attention_pattern_errors(model, run):
    images, cache = run
    _, partial = model.run_with_cache(images[:1], names_filter="blocks.0.attn.hook_pattern")
    with pytest.raises(KeyError, match=r"blocks.2.attn.hook_pattern.*run_with_cache") as info:
        plot.attention_pattern(partial, 2, 0)
    assert "blocks.0.attn.hook_pattern" in str(info.value)  # says what the cache does have
    with pytest.raises(IndexError, match="Layer 3 does not exist.*3 layers"):
        plot.attention_pattern(cache, 3, 0)
    with pytest.raises(IndexError, match="Head 4 does not exist.*4 heads"):
        plot.attention_pattern(cache, 0, 4)
    with pytest.raises(IndexError, match="query token 9 is out of range.*9 tokens"):
        plot.attention_pattern(cache, 0, 0, query=9)
    with pytest.raises(IndexError, match=r"\(2, 0\) is outside the 2 x 4"):
        plot.attention_pattern(cache, 0, 0, query=(2, 0))
    with pytest.raises(IndexError, match="batch_index 3 is out of range for 3"):
        plot.attention_pattern(cache, 0, 0, batch_index=3)
    with pytest.raises(TypeError, match="query must be"):
        plot.attention_pattern(cache, 0, 0, query="cls")
    with pytest.raises(TypeError, match="layer must be an int"):
        plot.attention_pattern(cache, 1.0, 0)
    with pytest.raises(TypeError, match="head must be an int"):
        plot.attention_pattern(cache, 0, 1.5)  # not silently head 1
    by_tensor = plot.attention_pattern(cache, 0, torch.tensor([0.1, 0.9, 0.2, 0.0]).argmax())
    np.testing.assert_array_equal(
        by_tensor.data[0].z, plot.attention_pattern(cache, 0, 1).data[0].z
    )


# ---------------------------------------------------------------------- textspan_table
def test_textspan_table_matches_result():
    result = _result(heads=[(9, 1), (10, 3)], m=4)
    fig = plot.textspan_table(result)
    (table,) = fig.data
    assert table.type == "table"
    assert list(table.header.values) == [
        "head",
        "#",
        "text",
        "variance explained",
        "fraction of total",
    ]
    heads, ranks, texts, variance, fraction = (list(col) for col in table.cells.values)
    assert heads == ["L9H1"] * 4 + ["L10H3"] * 4
    assert ranks == [1, 2, 3, 4] * 2
    assert texts == result.texts_for(9, 1) + result.texts_for(10, 3)
    expected = result.explained_fraction.flatten().tolist()
    assert fraction == [f"{v:.1%}" for v in expected]
    assert [float(v) for v in variance] == pytest.approx(
        result.explained_variance.flatten().tolist(), rel=1e-3
    )
    assert all(a <= b for a, b in zip(expected[:4], expected[1:4], strict=False))  # cumulative

    one = plot.textspan_table(result, heads="L10H3", top=2).data[0]
    assert list(one.cells.values[2]) == result.texts_for(10, 3, top=2)
    assert "first 2" in plot.textspan_table(result, top=2).layout.title.text
    by_row = plot.textspan_table(result, heads=[1, (9, 1)]).data[0]
    assert list(by_row.cells.values[0]) == ["L10H3"] * 4 + ["L9H1"] * 4


def test_textspan_table_without_texts_and_errors():
    nameless = plot.textspan_table(_result(heads=None, texts=False)).data[0]
    assert list(nameless.cells.values[0])[:1] == ["head 0"]
    assert all(text.startswith("text #") for text in nameless.cells.values[2])
    escaped = _result(heads=[(0, 0), (0, 1)])
    escaped.texts = ["<i>a</i>"] * len(escaped.texts)
    assert plot.textspan_table(escaped).data[0].cells.values[2][0] == "&lt;i&gt;a&lt;/i&gt;"
    result = _result(heads=[(9, 1), (10, 3)])
    with pytest.raises(KeyError, match="L9H2 is not in this result"):
        plot.textspan_table(result, heads=[(9, 2)])
    with pytest.raises(TypeError, match="TextSpanResult"):
        plot.textspan_table({"heads": []})
    with pytest.raises(ValueError, match="top must be"):
        plot.textspan_table(result, top=0)


# ---------------------------------------------------------------------- retrieval_grid
def test_retrieval_grid_mixed_images_titles_scores():
    uint8 = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    chw = torch.zeros(3, 12, 10)
    chw[2] = 1.0  # blue
    pil = Image.fromarray(uint8[::-1].copy())
    fig = plot.retrieval_grid(
        [uint8, chw, pil], scores=[None, 0.5, 0.25], titles=["query", "<a>", "c"], ncols=2
    )
    assert [t.type for t in fig.data] == ["image"] * 3
    np.testing.assert_array_equal(_decode(fig.data[0]), uint8)
    assert (_decode(fig.data[1])[..., 2] == 255).all()
    np.testing.assert_array_equal(_decode(fig.data[2]), uint8[::-1])
    assert [a.text for a in fig.layout.annotations] == ["query", "&lt;a&gt;<br>0.5", "c<br>0.25"]
    # row-major layout over 2 columns: the third image starts the second row
    assert [(t.xaxis, t.yaxis) for t in fig.data] == [("x", "y"), ("x2", "y2"), ("x3", "y3")]
    assert fig.layout.xaxis3.domain == fig.layout.xaxis.domain
    assert fig.layout.yaxis3.domain[1] < fig.layout.yaxis.domain[0]


def test_retrieval_grid_batch_tensor_and_errors():
    fig = plot.retrieval_grid(torch.rand(4, 3, 8, 8), scores=torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert len(fig.data) == 4 and [a.text for a in fig.layout.annotations][-1] == "4"
    big = plot.retrieval_grid([np.zeros((400, 200, 3), np.uint8)], max_side=100)
    assert _decode(big.data[0]).shape == (100, 50, 3)
    with pytest.raises(ValueError, match="2 titles for 3 images"):
        plot.retrieval_grid(torch.rand(3, 3, 8, 8), titles=["a", "b"])
    with pytest.raises(ValueError, match="2 scores for 3 images"):
        plot.retrieval_grid(torch.rand(3, 3, 8, 8), scores=[1, 2])
    with pytest.raises(ValueError, match="ncols"):
        plot.retrieval_grid(torch.rand(3, 3, 8, 8), ncols=0)
    with pytest.raises(ValueError, match="at least one image"):
        plot.retrieval_grid([])


# ---------------------------------------------------------------------- display
def test_set_renderer_and_show(monkeypatch):
    previous = pio.renderers.default
    try:
        assert plot.set_renderer("vscode") == previous
        assert pio.renderers.default == "vscode"
        assert plot.set_renderer("notebook+png") == "vscode"
        assert pio.renderers.default == "notebook+png"
        with pytest.raises(ValueError, match="Unknown plotly renderer 'nope'.*vscode"):
            plot.set_renderer("nope")
        assert pio.renderers.default == "notebook+png"
    finally:
        pio.renderers.default = previous

    shown = []
    monkeypatch.setattr(go.Figure, "show", lambda self, renderer=None: shown.append(renderer))
    fig = plot.head_grid(np.ones((1, 2)))
    assert plot.show(fig, renderer="browser") is None and shown == ["browser"]
    with pytest.raises(ValueError, match="Unknown plotly renderer"):
        plot.show(fig, renderer="nope")
    with pytest.raises(TypeError, match="static=True"):
        plot.show(fig, scale=2)


def test_show_static_displays_png(monkeypatch):
    pytest.importorskip("IPython")
    import IPython.display

    png = io.BytesIO()
    Image.new("RGB", (3, 2), "red").save(png, format="PNG")
    calls, displayed = [], []
    # show() calls the to_png of its own module
    monkeypatch.setattr(
        plot.display, "to_png", lambda fig, **kw: calls.append(kw) or png.getvalue()
    )
    monkeypatch.setattr(IPython.display, "display", displayed.append)
    fig = plot.head_grid(np.ones((1, 2)))
    image = plot.show(fig, static=True, scale=2)
    assert isinstance(image, IPython.display.Image) and image.data == png.getvalue()
    assert displayed == [image] and calls == [{"scale": 2}]
    assert plot.show(fig, renderer="png") is not None and len(calls) == 2


def test_find_browser_and_missing_browser(monkeypatch, tmp_path):
    fake = tmp_path / "my-chrome"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BROWSER_PATH", str(fake))
    assert plot.find_browser() == str(fake)
    monkeypatch.setenv("BROWSER_PATH", str(tmp_path / "absent"))
    assert plot.find_browser() is None
    monkeypatch.delenv("BROWSER_PATH")
    if os.path.isfile("/usr/bin/chromium"):
        assert os.path.realpath(plot.find_browser()).startswith(("/usr/bin/chromium", "/usr/lib"))
    monkeypatch.setattr(plot.export, "find_browser", lambda: None)  # what to_png looks up
    fig = plot.head_grid(np.ones((1, 2)))
    if not HAVE_KALEIDO:
        with pytest.raises(ImportError, match="kaleido>=1"):
            plot.to_png(fig)
        return
    with pytest.raises(RuntimeError, match="apt-get install chromium.*BROWSER_PATH"):
        plot.to_png(fig)
    with pytest.raises(RuntimeError, match="No browser at"):
        plot.to_png(fig, browser_path=tmp_path / "absent")


def test_find_browser_falls_back_to_a_chrome_kaleido_downloaded(monkeypatch, tmp_path):
    chromium = pytest.importorskip("choreographer.browsers.chromium")
    if not hasattr(chromium, "get_chrome_download_path"):
        pytest.skip("this choreographer keeps its download elsewhere")
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(plot.browser, "BROWSER_PATHS", ())
    download = tmp_path / "chrome-linux64" / "chrome"
    monkeypatch.setattr(chromium, "get_chrome_download_path", lambda **kw: download)
    monkeypatch.setattr(chromium, "get_old_chrome_download_path", lambda: None)
    assert plot.find_browser() is None  # nothing downloaded (and nothing else found)
    download.parent.mkdir()
    download.write_text("#!/bin/sh\n")
    download.chmod(0o755)
    assert plot.find_browser() == str(download)


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie nobody reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc
        return True


@pytest.mark.skipif(os.name == "nt", reason="POSIX process groups")
def test_a_stuck_browser_is_stopped_with_its_helper_processes():
    """What to_png does to a browser that did not finish in time: the browser (started, as
    choreographer does, in a new session) and the helper processes it started all stop."""
    from vision_lens.plot.export import _stop_browser

    browser = subprocess.Popen(
        ["sh", "-c", "sleep 300 & echo $!; wait"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    helper = int(browser.stdout.readline())
    try:
        _stop_browser(browser)
        assert browser.poll() is not None
        deadline = time.monotonic() + 10
        while _alive(helper) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(helper)
    finally:  # on failure, do not leave the test's own processes behind
        if browser.poll() is None:
            browser.kill()
            browser.wait()
        if _alive(helper):
            os.kill(helper, signal.SIGKILL)
        browser.stdout.close()


@needs_browser
def test_to_png_renders_with_a_real_browser(tmp_path):
    fig = plot.head_grid(np.array([[-1.0, 1.0]]), title="two heads")
    path = tmp_path / "heads.png"
    data = plot.to_png(fig, path, width=300, height=200, scale=2)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and path.read_bytes() == data
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    assert pixels.shape == (400, 600, 3)
    # the diverging scale's two ends are drawn: a red and a blue region
    r, g, b = pixels.transpose(2, 0, 1)
    red, blue = (r > g + 50) & (r > b + 50), (b > r + 50) & (b > g + 30)
    assert red.sum() > 1000 and blue.sum() > 1000
