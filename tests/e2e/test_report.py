"""The ``vision-lens report`` command end to end (the browser check is tests/test_browser.py)."""

from __future__ import annotations

import re

import pytest

from vision_lens import cli, shapes
from vision_lens.shapes.pretrained import shapes_weights_path

needs_weights = pytest.mark.skipif(
    not shapes_weights_path().is_file(), reason="shipped shapes weights missing"
)

SECTIONS = (
    "Direct effect of each layer",
    "Mean-ablating attention layers, cumulatively",
    "Direct effect of each head",
    "Where each text is found",
)


def _figures(page: str) -> int:
    return len(re.findall(r'class="plotly-graph-div"', page))


@needs_weights
def test_report_with_no_arguments_uses_the_shipped_model(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default --out is report.html in the working folder
    assert cli.main(["report"]) == 0
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "vl-shapes-ViT-6L-64" in page
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in page
    assert _figures(page) == len(SECTIONS)
    # Self-contained: plotly.js inline once, no script fetched from the network.
    assert page.count("plotly.js v") >= 1
    assert not re.search(r"<script[^>]+src=\"http", page)
    assert page.count("data:image/png;base64,") >= 6  # the scenes
    assert "wrote" in capsys.readouterr().out


@needs_weights
def test_report_on_an_image_folder(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    scenes = shapes.generate(3, seed=5)
    for i in range(3):
        scenes.to_pil(i).save(folder / f"scene{i}.png")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "nested" / "r.html"
    out.parent.mkdir()  # --out's folder must exist (a typo in it is refused, not created)
    argv = ["report", "--images", str(folder), "--texts", "a red object", "a circle"]
    assert cli.main([*argv, "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "3 user images" in page
    assert "a red object" in page and "a circle" in page
    assert _figures(page) == len(SECTIONS)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--images", "/no/such/folder"], "does not exist"),
        (["--pretrained", "laion2b_s34b_b88k"], "--pretrained needs --model"),
        (["--model", "RN50"], "RN50"),
    ],
)
def test_report_errors_are_clear(tmp_path, capsys, argv, message):
    out = tmp_path / "r.html"
    assert cli.main(["report", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vision-lens report: error:") and message in err
    assert not out.exists()


def test_report_rejects_an_empty_folder(tmp_path, capsys):
    assert cli.main(["report", "--images", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    assert "No images" in capsys.readouterr().err


@needs_weights
def test_report_needs_two_texts_to_contrast(tmp_path, capsys):
    shapes.generate(1, seed=0).to_pil(0).save(tmp_path / "a.png")
    argv = ["report", "--images", str(tmp_path), "--texts", "a circle"]
    assert cli.main([*argv, "--out", str(tmp_path / "r.html")]) == 2
    assert "at least two --texts" in capsys.readouterr().err
