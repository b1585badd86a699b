"""``vision-lens textspan`` and ``vision-lens ablate`` (:mod:`vision_lens.apps.pipelines`): end to
end on the shipped model and a tiny image folder, resumed by rerunning, mistakes exit 2 with one
line before any model loads."""

from __future__ import annotations

import json

import pytest

from vision_lens import cli, models, shapes
from vision_lens.shapes.pretrained import shapes_weights_path
from vision_lens.text_pools import text_pool

needs_weights = pytest.mark.skipif(
    not shapes_weights_path().is_file(), reason="shipped shapes weights missing"
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """12 single-object scenes: flat in ``flat/``, and by colour in ``classes/<colour>/``."""
    root = tmp_path_factory.mktemp("images")
    scenes = shapes.generate(12, seed=0, n_objects=1)
    for i in range(len(scenes)):
        image = scenes.to_pil(i)
        colour = scenes.attributes[i][0]["color"]
        (root / "flat").mkdir(exist_ok=True)
        (root / "classes" / colour).mkdir(parents=True, exist_ok=True)
        image.save(root / "flat" / f"{i:02d}.png")
        image.save(root / "classes" / colour / f"{i:02d}.png")
    return root


def _snapshot(folder):
    """Each file of a collection with its modification time and size."""
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.iterdir())}


@needs_weights
def test_textspan_writes_tables_and_resumes(folders, tmp_path, capsys):
    out = tmp_path / "ts"
    pool = tmp_path / "pool.txt"  # a file pool (a small one: fast)
    pool.write_text("# shapes\n" + "\n".join(text_pool("shapes")[:80]) + "\n\n")
    argv = ["textspan", "--images", str(folders / "flat"), "--out", str(out), "--pool", str(pool)]
    argv += ["--m", "3", "--batch-size", "4", "--quiet"]
    assert cli.main(argv) == 0
    assert "wrote" in capsys.readouterr().out
    result = json.loads((out / "textspan.json").read_text())
    assert result["config"]["n_images"] == 12 and result["m"] == 3
    assert result["config"]["n_texts"] == 80
    assert len(result["heads"]) == 6 * 4 and len(result["heads"][0]["texts"]) == 3
    assert "| L5H3 |" in (out / "textspan.md").read_text()
    assert "<table>" in (out / "textspan.html").read_text()
    before = _snapshot(out / "collect")
    assert json.loads((out / "collect" / "manifest.json").read_text())["complete"]
    assert cli.main(argv) == 0  # the finished pass is reused, not recomputed
    assert _snapshot(out / "collect") == before
    assert json.loads((out / "textspan.json").read_text())["heads"] == result["heads"]


@needs_weights
def test_ablate_writes_table_and_resumes(folders, tmp_path, capsys):
    out = tmp_path / "ab"
    argv = ["ablate", "--images", str(folders / "classes"), "--out", str(out)]
    argv += ["--batch-size", "4", "--quiet"]
    assert cli.main(argv) == 0
    result = json.loads((out / "ablation.json").read_text())
    rows = {row["ablated"]: row for row in result["rows"]}
    assert result["n_images"] == 12 and len(result["classes"]) >= 2
    assert rows["nothing"]["components"] == []
    assert rows["all MLPs"]["components"] == [f"L{i}_mlp" for i in range(6)]
    kept4 = rows["all attention layers except the last 4"]["components"]
    assert kept4 == ["L0_attn", "L1_attn"]
    assert all(0 <= row["accuracy"] <= 1 for row in result["rows"])
    assert "| all MLPs | 6 |" in (out / "ablation.md").read_text()
    before = _snapshot(out / "collect")
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert _snapshot(out / "collect") == before
    assert json.loads((out / "ablation.json").read_text())["rows"] == result["rows"]


@needs_weights
def test_ablate_with_a_labels_file(folders, tmp_path):
    """A flat folder with FILE,CLASS lines gives the same table as the class subfolders."""
    classes = sorted(p.name for p in (folders / "classes").iterdir())
    lines = [f"{p.name},{p.parent.name}" for p in (folders / "classes").glob("*/*.png")]
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ab"
    argv = ["ablate", "--images", str(folders / "flat"), "--labels", str(labels), "--out"]
    argv += [str(out), "--classes", *classes, "--batch-size", "4", "--quiet"]
    assert cli.main(argv) == 0
    result = json.loads((out / "ablation.json").read_text())
    assert result["n_images"] == 12 and result["classes"] == classes


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["textspan", "--pool", "nope"], "--pool 'nope' is neither a file nor a shipped pool"),
        (["textspan", "--images", "/no/such/folder"], "--images '/no/such/folder' does not exist"),
        (["textspan", "--out", "FILE"], "is a file; pass a folder"),
        (["ablate", "--images", "FLAT"], "has no class subfolders"),
        (["ablate", "--classes", "a red object"], "--classes gives 1 texts for"),
        (["ablate", "--pretrained", "x"], "--pretrained needs --model"),
        (["ablate", "--dtype", "int8"], "--dtype: invalid choice"),
    ],
)
def test_mistakes_exit_2_with_one_line_before_loading(
    folders, tmp_path, capsys, monkeypatch, argv, message
):
    def refuse(*args, **kwargs):
        raise AssertionError("the model loaded before the options were checked")

    monkeypatch.setattr(models, "load_clip_or_shapes", refuse)
    (tmp_path / "FILE").write_text("x")
    command, *extra = argv
    images = folders / ("flat" if command == "textspan" else "classes")
    options = {"--images": str(images), "--out": str(tmp_path / "out")}
    for key, value in zip(extra[::2], extra[1::2], strict=True):
        value = {"FILE": str(tmp_path / "FILE"), "FLAT": str(folders / "flat")}.get(value, value)
        options[key] = value
    try:
        code = cli.main([command, *[part for item in options.items() for part in item]])
    except SystemExit as exit_:  # argparse refuses malformed values itself
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"vision-lens {command}: error:"), err
    assert message in err[0]
