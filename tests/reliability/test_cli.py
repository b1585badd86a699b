"""``vision-lens`` as a hostile user runs it: every mistake ends with exit code 2 and ONE line
``vision-lens <command>: error: <message>`` on stderr (no traceback), before any model loads;
unreadable images are skipped with one warning line; bugs keep their traceback; no command
writes outside the output it was given."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vision_lens import cli, shapes
from vision_lens.apps import report
from vision_lens.shapes.pretrained import shapes_weights_path

needs_weights = pytest.mark.skipif(
    not shapes_weights_path().is_file(), reason="shipped shapes weights missing"
)


# ---------------------------------------------------------------------------------------------
# Files a hostile user points the commands at


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb_png(path: Path, side: int = 20000) -> None:
    """A PNG of a few dozen bytes whose header claims ``side x side`` 1-bit pixels."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b""))
        + _png_chunk(b"IEND", b"")
    )


def good_png(path: Path, seed: int = 0) -> None:
    shapes.generate(1, seed=seed).to_pil(0).save(path)


def truncated_png(path: Path) -> None:
    good_png(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def sixteen_bit_png(path: Path) -> np.ndarray:
    """A 16-bit grayscale gradient (mode ``I;16``); returns its values scaled to 8 bits."""
    values = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (32, 1))
    image = Image.fromarray(values)
    assert image.mode == "I;16"
    image.save(path)
    return np.round(values / 257).astype(np.uint8)


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A working folder of bad inputs; the commands run with it as cwd."""
    (tmp_path / "file.txt").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    (tmp_path / "dir.html").mkdir()
    (tmp_path / "matdir.mat").mkdir()
    (tmp_path / "x.mat").write_text("not a .mat file")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.png").write_text("a text file renamed .png")
    truncated_png(bad / "b.png")
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    good_png(imgs / "good.png")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_cli(argv: list[str]) -> int:
    """``cli.main(argv)``'s exit code, also when argparse exits (a malformed command line)."""
    try:
        return cli.main(argv)
    except SystemExit as exit_:
        return exit_.code


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


SEVEN = ["t1", "t2", "t3", "t4", "t5", "t6", "t7"]

# (argv, regex the message after "error: " must match); {tmp} is the working folder.
CASES = [
    # The command itself
    ([], r"^vision-lens: error: choose a command: report, eval-seg, collect, textspan, ablate"),
    (["frobnicate"], r"^vision-lens: error: argument COMMAND: invalid choice: 'frobnicate'"),
    (["--bogus", "report"], r"unrecognized arguments: --bogus"),
    (["report", "--bogus"], r"unrecognized arguments: --bogus"),
    (["report", "--max-images"], r"argument --max-images: expected one argument"),
    # report: counts and sizes
    (["report", "--max-images", "0"], r"argument --max-images: '0' must be at least 1"),
    (["report", "--max-images", "-1"], r"argument --max-images: '-1' must be at least 1"),
    (["report", "--max-images", "two"], r"argument --max-images: 'two' is not a whole number"),
    (["report", "--batch-size", "0"], r"argument --batch-size: '0' must be at least 1"),
    (["report", "--batch-size", "-3"], r"argument --batch-size: '-3' must be at least 1"),
    # report: device and model
    (["report", "--device", "nonsense"], r"--device: 'nonsense' is not a torch device; use cpu"),
    (["report", "--device", "meta"], r"--device: 'meta' is not supported; use cpu"),
    (["report", "--model", "no-such-model"], r"--model 'no-such-model' is not an open_clip model"),
    (["report", "--model", "ViT-B-3"], r"--model 'ViT-B-3' .* did you mean 'ViT-B-32'"),
    (["report", "--model", "RN50"], r"--model 'RN50': Cannot convert .*convolutional"),
    (
        ["report", "--model", "ViT-B-32", "--pretrained", "nosuch"],
        r"--pretrained 'nosuch' is neither an existing checkpoint file nor .* Tags: \[",
    ),
    (
        ["report", "--pretrained", "laion2b"],
        r"--pretrained needs --model .*'laion2b'.* add --model",
    ),
    (["report", "--texts", "a", "b"], r"--texts a b needs --images .* add --images FOLDER"),
    (["report", "--max-images", "3"], r"--max-images 3 needs --images .* add --images FOLDER"),
    # report: the output file, refused before any work
    (["report", "--out", "{tmp}/dir.html"], r"--out '.*dir.html' is a folder; pass a file name"),
    (["report", "--out", "{tmp}/missing/r.html"], r"folder '.*missing' does not exist; create it"),
    (["report", "--out", "{tmp}/file.txt/r.html"], r"'.*file.txt' is a file, not a folder"),
    (
        ["report", "--out", "/proc/vl-report.html"],
        r"--out '/proc/vl-report.html' cannot be written",
    ),
    # report: the image folder
    (["report", "--images", "{tmp}/nope"], r"--images '.*nope' does not exist"),
    (["report", "--images", "{tmp}/file.txt"], r"--images '.*file.txt' is a file, not a folder"),
    (["report", "--images", "{tmp}/empty"], r"No images \(.png.*\) in '.*empty'; point --images"),
    (
        ["report", "--images", "{tmp}/bad"],
        r"None of the 2 image files .* a.png \(cannot identify image file\), b.png \(.*truncated",
    ),
    (
        ["report", "--images", "{tmp}/imgs", "--texts", "one"],
        r"at least two --texts \(got \['one'\]",
    ),
    (["report", "--images", "{tmp}/imgs", "--texts", *SEVEN], r"at most 6 --texts \(got 7\)"),
    (["report", "--images", "{tmp}/imgs", "--texts", "a", "a"], r"--texts repeats 'a'"),
    (["report", "--images", "{tmp}/imgs", "--texts", "a", " "], r"--texts holds an empty text"),
    # eval-seg
    (["eval-seg", "--n", "0"], r"argument --n: '0' must be at least 1"),
    (["eval-seg", "--n", "-5"], r"argument --n: '-5' must be at least 1"),
    (["eval-seg", "--batch-size", "0"], r"argument --batch-size: '0' must be at least 1"),
    (["eval-seg", "--n-examples", "-1"], r"argument --n-examples: '-1' must be 0 or more"),
    (["eval-seg", "--seed", "-1"], r"argument --seed: '-1' must be 0 or more"),
    (["eval-seg", "--layers", "0", "-1"], r"argument --layers: '-1' must be 0 or more"),
    (["eval-seg", "--methods", "magic"], r"argument --methods: invalid choice: 'magic'"),
    (["eval-seg", "--model", "no-such-model"], r"--model 'no-such-model' is not an open_clip"),
    (["eval-seg", "--device", "nonsense"], r"--device: 'nonsense' is not a torch device"),
    (["eval-seg", "--pretrained", "x.pt"], r"--pretrained needs --model"),
    (["eval-seg", "--out-dir", "{tmp}/file.txt"], r"--out-dir '.*file.txt' is a file; pass a fold"),
    (["eval-seg", "--out-dir", "{tmp}/file.txt/sub"], r"--out-dir '.*sub' is inside the file"),
    (["eval-seg", "--out-dir", "/proc/vl-seg"], r"--out-dir '/proc/vl-seg' cannot be written"),
    (["eval-seg", "--imagenet-seg", "{tmp}/nope.mat"], r"--imagenet-seg '.*nope.mat' not found"),
    (["eval-seg", "--imagenet-seg", "{tmp}/x.mat"], r"'.*x.mat' is not a MATLAB v7.3 \(HDF5\)"),
    (["eval-seg", "--imagenet-seg", "{tmp}/matdir.mat"], r"'.*matdir.mat' is a folder; pass"),
    (["eval-seg", "--templates", "simple"], r"--templates simple applies to ImageNet-segm.* add"),
    (["eval-seg", "--class-source", "label"], r"--class-source label applies to ImageNet"),
    (
        ["eval-seg", "--imagenet-seg", "{tmp}/x.mat", "--seed", "3"],
        r"--seed 3 applies to the shapes scenes only",
    ),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(c[0]) or "(none)" for c in CASES])
def test_a_mistake_is_one_error_line_and_exit_code_2(world, capsys, argv, message):
    if "/proc/" in " ".join(argv) and not Path("/proc").is_dir():
        pytest.skip("no /proc")
    argv = [arg.replace("{tmp}", str(world)) for arg in argv]
    before = _listing(world)
    assert run_cli(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    command = argv[0] if argv and argv[0] in ("report", "eval-seg") else None
    if "report" in argv:
        command = "report"
    prefix = f"vision-lens {command}: error: " if command else "vision-lens: error: "
    assert lines[0].startswith(prefix), lines[0]
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert _listing(world) == before  # refused before writing anything


# ---------------------------------------------------------------------------------------------
# Unreadable images: skipped, named in one warning line


def test_images_folder_loading_skips_bad_files_and_scales_16_bit(tmp_path):
    good_png(tmp_path / "c.png")
    expected = sixteen_bit_png(tmp_path / "d16.png")
    (tmp_path / "a.png").write_text("a text file renamed .png")
    truncated_png(tmp_path / "b.png")
    decompression_bomb_png(tmp_path / "bomb.png")
    (tmp_path / "x.png").mkdir()  # a folder named like an image
    with pytest.warns(UserWarning) as record:
        images = report.load_image_folder(tmp_path)
    assert len(images) == 2 and all(image.mode == "RGB" for image in images)
    gray = np.asarray(images[1])[..., 0]
    assert np.abs(gray.astype(int) - expected).max() <= 1  # scaled, not clipped to white
    assert gray.min() == 0 and gray.max() == 255
    (warning,) = record
    message = str(warning.message)
    assert message.startswith("skipped 4 of 6 images: a.png (cannot identify image file), ")
    assert "b.png (image file is truncated" in message
    assert "bomb.png (too many pixels, a possible decompression bomb)" in message
    assert "x.png (a folder, not a file)" in message


def test_max_images_counts_readable_images(tmp_path):
    (tmp_path / "a.png").write_text("junk")
    for i in range(3):
        good_png(tmp_path / f"g{i}.png", seed=i)
    with pytest.warns(UserWarning, match="skipped 1 of 3 images"):
        assert len(report.load_image_folder(tmp_path, max_images=2)) == 2


def test_report_skips_bad_images_with_one_warning_line(world, capsys, monkeypatch):
    folder = world / "mixed"
    folder.mkdir()
    good_png(folder / "c.png")
    good_png(folder / "e.png", seed=1)
    sixteen_bit_png(folder / "d.png")
    (folder / "a.png").write_text("junk")
    decompression_bomb_png(folder / "b.png")
    used = {}

    def fake_inputs(model, images, texts):
        used["images"] = images
        return None

    # The model and figures are not the point here: stub them (test_report.py runs them).
    monkeypatch.setattr("vision_lens.models.load_clip_or_shapes", lambda *a, **k: (None, None))
    monkeypatch.setattr(report, "folder_inputs", fake_inputs)
    monkeypatch.setattr(report, "build_report", lambda *a, **k: "<html></html>")
    out = world / "r.html"
    argv = ["report", "--images", str(folder), "--texts", "a", "b", "--out", str(out)]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "vision-lens report: warning: skipped 2 of 5 images: a.png (cannot identify image "
        "file), b.png (too many pixels, a possible decompression bomb)"
    ]
    assert len(used["images"]) == 3
    assert out.read_text() == "<html></html>"


# ---------------------------------------------------------------------------------------------
# Which exceptions are mistakes, and --debug


def _raise(error: BaseException):
    def run(*args, **kwargs):
        raise error

    return run


@pytest.mark.parametrize(
    "error, code",
    [
        (ValueError("bad value"), 2),
        (TypeError("bad type"), 2),
        (IndexError("layer 99 of 6"), 2),
        (FileNotFoundError(2, "No such file or directory", "x.pt"), 2),
        (PermissionError(13, "Permission denied", "x"), 2),
        (MemoryError(), 2),
        (KeyboardInterrupt(), 130),
    ],
)
def test_user_errors_are_one_line(world, capsys, monkeypatch, error, code):
    monkeypatch.setattr(report, "write_report", _raise(error))
    assert cli.main(["report"]) == code
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("vision-lens report: ")


@pytest.mark.parametrize(
    "error", [RuntimeError("torch internals"), AssertionError("bug"), KeyError("x")]
)
def test_bugs_keep_their_traceback(world, monkeypatch, error):
    monkeypatch.setattr(report, "write_report", _raise(error))
    with pytest.raises(type(error)):
        cli.main(["report"])


@pytest.mark.parametrize("argv", [["--debug", "report"], ["report", "--debug"]])
def test_debug_reraises_user_errors(world, monkeypatch, argv):
    monkeypatch.setattr(report, "write_report", _raise(ValueError("bad value")))
    with pytest.raises(ValueError, match="bad value"):
        cli.main(argv)


def test_no_traceback_reaches_stderr_unless_debug(tmp_path):
    argv = [sys.executable, "-m", "vision_lens.cli", "report", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    plain = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert plain.returncode == 2
    assert plain.stderr.splitlines() == [
        f"vision-lens report: error: --out {str(tmp_path)!r} is a folder; pass a file name such "
        f"as {str(tmp_path / 'report.html')!r}."
    ]
    debug = subprocess.run([*argv, "--debug"], capture_output=True, text=True, env=env)
    assert debug.returncode == 1
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1].startswith("IsADirectoryError: --out")


# ---------------------------------------------------------------------------------------------
# Nothing written outside the requested output


@needs_weights
def test_commands_write_only_their_output(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    good_png(images / "a.png")
    good_png(images / "b.png", seed=1)
    (tmp_path / "out").mkdir()
    before = _listing(tmp_path)
    argv = ["report", "--images", "images", "--texts", "a red object", "a circle"]
    assert cli.main([*argv, "--out", "out/r.html"]) == 0
    assert _listing(tmp_path) - before == {"out/r.html"}
    argv = ["eval-seg", "--n", "1", "--n-examples", "1", "--methods", "raw_attention"]
    assert cli.main([*argv, "--out-dir", "seg", "--quiet"]) == 0
    written = {"seg", "seg/segmentation.md", "seg/segmentation.json"}
    assert _listing(tmp_path) - before == {"out/r.html", *written, "seg/segmentation_examples.html"}
