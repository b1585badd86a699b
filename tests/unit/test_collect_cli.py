"""``vision-lens collect``: a folder of images into shards, resumed by rerunning; mistakes exit
2 with one line before any model loads."""

from __future__ import annotations

import pytest
import torch

import vision_lens as vl
from vision_lens import cli, models, shapes
from vision_lens.shapes.pretrained import shapes_weights_path
from vision_lens.streaming.data import ImageFolder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("images")
    for i in range(3):
        shapes.generate(1, seed=i).to_pil(0).save(path / f"{i}.png")
    return path


@pytest.mark.skipif(not shapes_weights_path().is_file(), reason="shipped shapes weights missing")
def test_collect_writes_and_resumes(folder, tmp_path, capsys):
    argv = [
        "collect",
        "--images",
        str(folder),
        "--what",
        "heads,embed,head_moments",
        "--out",
        str(tmp_path),
        "--batch-size",
        "2",
        "--quiet",
    ]
    assert cli.main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    run = vl.open_collected(tmp_path)
    assert run["heads"].shape[0] == 3 and run.head_moments()["count"].max() == 3
    model, _ = vl.load_shapes_clip()
    images = torch.stack([model.preprocess(image) for image in ImageFolder(folder)])
    torch.testing.assert_close(run["embed"].load(), model(images), atol=1e-5, rtol=1e-5)
    assert cli.main(argv) == 0  # finished: returns at once


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--what", "haeds"], "--what 'haeds' is not a product; did you mean 'heads'"),
        (["--what", ","], "--what names no product"),
        (["--images", "/no/such/folder"], "--images '/no/such/folder' does not exist"),
        (["--out", "FILE"], "is a file; pass a folder"),
        (["--out", "FILE/sub"], "is inside the file"),
        (["--batch-size", "0"], "--batch-size: '0' must be at least 1"),
        (["--dtype", "int8"], "--dtype: invalid choice"),
    ],
)
def test_mistakes_exit_2_with_one_line_before_loading(
    folder, tmp_path, capsys, monkeypatch, extra, message
):
    def refuse(*args, **kwargs):
        raise AssertionError("the model loaded before the options were checked")

    monkeypatch.setattr(models, "load_clip_or_shapes", refuse)
    (tmp_path / "FILE").write_text("x")
    options = {"--images": str(folder), "--what": "heads", "--out": str(tmp_path / "out")}
    for key, value in zip(extra[::2], extra[1::2], strict=True):
        options[key] = str(tmp_path / value) if value.startswith("FILE") else value
    argv = ["collect", *[part for item in options.items() for part in item]]
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse refuses malformed values itself
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vision-lens collect: error:"), err
    assert message in err[0]
