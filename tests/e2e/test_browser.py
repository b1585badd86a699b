"""Figures and reports render in a real browser: headless Chromium, no JavaScript errors.

Each page gets two small probe scripts: one at the top of ``<head>`` records every ``error``
event (script errors and failed resource loads), unhandled promise rejection and
``console.error`` call; one at the end of ``<body>`` waits for the page to load and every
``.plotly-graph-div`` to hold plotly's ``svg.main-svg`` (or gives up after 8 s), then writes a
JSON summary into a ``<pre id="vl-probe">``. Chromium runs the page with ``--dump-dom`` and
``--virtual-time-budget`` (timers run without waiting) and the summary is read back from the
dumped DOM. No network is used: plotly.js must be inline. The last test breaks pages on purpose
and checks that the probe catches each breakage, so the checks cannot pass vacuously.

Skipped (with the reason) when no Chromium/Chrome is on ``PATH``.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support.tiny import tiny_model

import vision_lens as vl
from vision_lens import plot

BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM = next((path for path in map(shutil.which, BROWSER_NAMES) if path), None)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason=f"no Chromium/Chrome on PATH (looked for {', '.join(BROWSER_NAMES)}); install one, "
    "e.g. apt-get install chromium",
)

PROBE_HEAD = """<script>/* vision_lens test probe: record errors */
window.__vlErrors = [];
window.addEventListener('error', function (e) {
  var what = e.message || (e.target && (e.target.src || e.target.href || e.target.tagName));
  window.__vlErrors.push('error: ' + (what || e.type));
}, true);
window.addEventListener('unhandledrejection', function (e) {
  var r = e.reason;
  window.__vlErrors.push('unhandled rejection: ' + (r && (r.stack || r.message) || r));
});
(function () {
  var original = console.error;
  console.error = function () {
    window.__vlErrors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    return original.apply(console, arguments);
  };
})();
</script>"""

PROBE_TAIL = """<script>/* vision_lens test probe: report */
(function () {
  var start = Date.now();
  function plots() {
    return Array.prototype.slice.call(document.querySelectorAll('.plotly-graph-div'));
  }
  function drawn(div) { return !!(div.querySelector('svg.main-svg') && div._fullLayout); }
  function report() {
    var out = {
      errors: window.__vlErrors,
      plotly: window.Plotly ? window.Plotly.version : null,
      plots: plots().map(function (div) {
        return {
          id: div.id,
          mainSvg: div.querySelectorAll('svg.main-svg').length,
          data: div.data ? div.data.length : 0,
          fullData: div._fullData ? div._fullData.length : 0,
          // trace types as given and as plotly.js drew them (an unknown type falls back)
          types: (div.data || []).map(function (t) { return t.type || 'scatter'; }),
          drawnTypes: (div._fullData || []).filter(function (t) {
            return t.visible !== false && t._module;
          }).map(function (t) { return t.type; })
        };
      })
    };
    var pre = document.createElement('pre');
    pre.id = 'vl-probe';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  function poll() {
    var all = plots();
    if ((all.length && all.every(drawn)) || Date.now() - start > 8000) { report(); }
    else { setTimeout(poll, 50); }
  }
  window.addEventListener('load', function () { setTimeout(poll, 0); });
})();
</script>"""


def _with_probe(page: str) -> str:
    """The page with the error recorder first in ``<head>`` and the reporter last in ``<body>``."""
    head = re.search(r"<head[^>]*>", page, re.IGNORECASE)
    if head is None:
        page = PROBE_HEAD + page
    else:
        page = page[: head.end()] + PROBE_HEAD + page[head.end() :]
    end = page.lower().rfind("</body>")
    return page + PROBE_TAIL if end < 0 else page[:end] + PROBE_TAIL + page[end:]


def render(page_path: Path, tmp_path: Path) -> dict:
    """Load a page (with the probe) in headless Chromium and return the probe's summary."""
    probed = tmp_path / f"probed_{page_path.name}"
    probed.write_text(_with_probe(page_path.read_text(encoding="utf-8")), encoding="utf-8")
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--virtual-time-budget=30000",
        "--dump-dom",
        probed.as_uri(),
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        dom, stderr = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the browser and the helpers it started
        process.communicate()
        pytest.fail(f"Chromium did not finish rendering {page_path.name} within 180 s.")
    found = re.search(r'<pre id="vl-probe">(.*?)</pre>', dom, re.DOTALL)
    assert found is not None, (
        f"The probe never reported for {page_path.name} (scripts did not run?). Chromium exit "
        f"code {process.returncode}; stderr tail:\n{stderr[-2000:]}"
    )
    return json.loads(html.unescape(found[1]))


def assert_rendered(summary: dict, n_plots: int) -> None:
    """No JavaScript errors; plotly.js loaded; ``n_plots`` figures, each drawn with its traces."""
    assert summary["errors"] == [], f"JavaScript errors: {summary['errors']}"
    assert summary["plotly"], "plotly.js was not loaded"
    plots = summary["plots"]
    assert len(plots) == n_plots, f"expected {n_plots} plotly figures, found {len(plots)}"
    for fig in plots:
        assert fig["mainSvg"] >= 1, f"figure {fig['id']} has no svg.main-svg: not rendered"
        assert fig["data"] >= 1 and fig["fullData"] == fig["data"], f"figure {fig} lost traces"
        assert fig["drawnTypes"] == fig["types"], f"figure {fig['id']} did not draw its traces"


def _n_figures(page: str) -> int:
    return page.count('class="plotly-graph-div"')


def _assert_offline(page: str) -> None:
    sources = re.findall(r"<script[^>]*\bsrc=[\"']([^\"']+)", page)
    assert not sources, f"the page loads scripts from elsewhere (no network here): {sources}"
    assert "Plotly.newPlot" in page


@pytest.fixture(scope="module")
def tiny():
    model = tiny_model(image_size=32)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(images)
    return images, cache


def _vision_lens_command() -> list[str]:
    """The ``vision-lens`` console script (next to this Python first), else ``python -m``."""
    here = shutil.which("vision-lens", path=str(Path(sys.executable).parent))
    script = here or shutil.which("vision-lens")
    return [script] if script else [sys.executable, "-m", "vision_lens.cli"]


def test_report_renders(tmp_path):
    """``vision-lens report`` on the shipped shapes model, with two images and two texts (the
    fastest settings the command offers)."""
    folder = tmp_path / "images"
    folder.mkdir()
    scenes = vl.shapes.generate(2, seed=0, n_objects=2)
    for i in range(2):
        scenes.to_pil(i).save(folder / f"scene{i}.png")
    out = tmp_path / "report.html"
    command = _vision_lens_command() + [
        "report",
        "--out",
        str(out),
        "--images",
        str(folder),
        "--texts",
        "a red object",
        "a blue object",
        "--max-images",
        "2",
        "--batch-size",
        "2",
        "--device",
        "cpu",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr[-3000:]}"
    page = out.read_text(encoding="utf-8")
    _assert_offline(page)
    n_figures = _n_figures(page)
    assert n_figures == 4, f"the report should hold 4 figures, found {n_figures}"
    assert_rendered(render(out, tmp_path), n_figures)


def test_exported_figure_renders(tiny, tmp_path):
    """A vision_lens.plot figure saved with ``write_html`` (plotly.js inline) renders alone."""
    images, cache = tiny
    fig = plot.attention_pattern(cache, 1, 2, query=(1, 2), image=images[0])
    path = tmp_path / "attention.html"
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    page = path.read_text(encoding="utf-8")
    _assert_offline(page)
    assert_rendered(render(path, tmp_path), 1)


def test_every_figure_kind_renders(tiny, tmp_path):
    """One page with every new kind of figure (heatmaps with hover labels, image overlays,
    tables, subplot grids): plotly.js must draw them all without errors."""
    images, cache = tiny
    result = vl.textspan(
        torch.randn(2, 20, 8, generator=torch.Generator().manual_seed(0)),
        torch.eye(8),
        m=3,
        rank=None,
        texts=[f"<text {i}>" for i in range(8)],
        heads=[(1, 0), (1, 3)],
    )
    figures = [
        plot.head_grid(np.random.default_rng(0).normal(size=(2, 4)), labels=result),
        plot.token_heatmap(images[1], np.random.default_rng(1).normal(size=(4, 4))),
        plot.attention_pattern(cache, 0, 1),
        plot.textspan_table(result),
        plot.retrieval_grid(images, scores=[None, 0.5, 0.25], titles=["query", "a", "b"]),
    ]
    body = "".join(
        fig.to_html(full_html=False, include_plotlyjs=index == 0)
        for index, fig in enumerate(figures)
    )
    path = tmp_path / "figures.html"
    path.write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{body}</body></html>",
        encoding="utf-8",
    )
    _assert_offline(path.read_text(encoding="utf-8"))
    assert_rendered(render(path, tmp_path), len(figures))


def _break(page: str, how: str) -> str:
    if how == "script error":
        return page.replace("</body>", "<script>notAFunction();</script></body>")
    if how == "no plotly.js":
        start = re.search(r"<script[^>]*>/\*\*\s*\* plotly\.js v", page).start()  # the bundle
        end = page.index("</script>", start) + len("</script>")
        return page[:start] + page[end:]
    if how == "no newPlot":
        return re.sub(r"Plotly\.newPlot\(", "(function(){})(", page)
    if how == "unknown trace type":
        return page.replace('"type":"heatmap"', '"type":"nosuchtrace"', 1)
    raise ValueError(how)


@pytest.mark.parametrize(
    "how, message",
    [
        (None, None),  # the intact page passes
        ("script error", "JavaScript errors.*notAFunction"),
        ("no plotly.js", "JavaScript errors.*Plotly is not defined"),
        ("no newPlot", "has no svg.main-svg"),
        ("unknown trace type", "did not draw its traces"),
    ],
)
def test_probe_catches_broken_pages(tmp_path, how, message):
    """The checks fail on a broken page, for the right reason: a script error, missing
    plotly.js, a figure never drawn, a trace plotly.js cannot draw."""
    page = plot.head_grid(np.ones((2, 2))).to_html(include_plotlyjs=True, full_html=True)
    if how is None:
        assert_rendered(_summary_of(page, tmp_path, "intact.html"), 1)
        return
    broken = _break(page, how)
    assert broken != page
    with pytest.raises(AssertionError, match=message):
        assert_rendered(_summary_of(broken, tmp_path, "broken.html"), 1)


def _summary_of(page: str, tmp_path: Path, name: str) -> dict:
    path = tmp_path / name
    path.write_text(page, encoding="utf-8")
    return render(path, tmp_path)
