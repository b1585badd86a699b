"""``vision-lens report`` on ViTs that are not CLIPs, read through CompAlign: the shipped shapes
pair, a random timm ViT and a random Hugging Face DINOv2 (each with a CompAlign written here),
and every refusal, through the command's entry point."""

from __future__ import annotations

import re

import pytest
import torch

from vision_lens import cli, shapes
from vision_lens.analysis import CompAlign
from vision_lens.apps import report_beyond
from vision_lens.shapes.pretrained import shapes_weights_path
from vision_lens.shapes.pretrained_vit import shapes_vit_compalign_path, shapes_vit_weights_path

needs_shapes_pair = pytest.mark.skipif(
    not (
        shapes_weights_path().is_file()
        and shapes_vit_weights_path().is_file()
        and shapes_vit_compalign_path().is_dir()
    ),
    reason="shipped shapes CLIP, shapes ViT or its CompAlign missing",
)

D_CLIP = 128  # the shapes CLIP's embedding width (the default text side)
TEXTS = ["a red object", "a circle", "a blue object"]
# timm's own tiny test ViT: 6 layers, 2 heads, width 64, 224 x 224 images in 16 x 16 patches.
TIMM_IDS = ["L5H0", "L5H1", "L5_mlp", "L4H0", "L4H1", "L4_attn_bias", "L3_mlp", "rest"]


def _figures(page: str) -> int:
    return len(re.findall(r'class="plotly-graph-div"', page))


def _sections(page: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", page)


def _percentages(page: str) -> list[float]:
    return [float(v) / 100 for v in re.findall(r"<td>(-?[\d.]+)%</td>", page)]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = cli.main(["report", *argv])
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def timm_vit(tmp_path_factory) -> str:
    """A random ``test_vit`` checkpoint (with its classifier: the report drops it)."""
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    model = timm.create_model("test_vit", pretrained=False)
    path = tmp_path_factory.mktemp("timm") / "test_vit.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    scenes = shapes.generate(5, seed=3)
    for i in range(len(scenes)):
        scenes.to_pil(i).save(folder / f"scene{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return str(folder)


def _compalign(folder, ids=TIMM_IDS, d_source=64, d_clip=D_CLIP) -> str:
    return str(CompAlign(ids, d_source=d_source, d_clip=d_clip, seed=1).save(folder))


# ---------------------------------------------------------------------- the shipped pair
@needs_shapes_pair
def test_shapes_vit_report_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report_beyond, "N_EVAL", 48)  # fewer held-out scenes: a quick run
    out = tmp_path / "beyond.html"
    assert cli.main(["report", "--model", "shapes-vit", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    page = out.read_text(encoding="utf-8")
    shipped = CompAlign.load(shapes_vit_compalign_path())
    # Header: the source model, the CompAlign (count, fit history) and the CLIP.
    assert "vl-shapes-vit" in page and "vl-shapes-ViT-6L-64" in page
    assert f"{len(shipped.ids)} components" in page
    assert "shapes_vit_compalign" in page and f"d_clip {shipped.d_clip}" in page
    if shipped.history is not None and shipped.history.steps:
        assert "best held-out cosine" in page
    assert "48 held-out single-object scenes" in page
    sections = _sections(page)
    properties = ("color", "shape", "position")
    expected = [
        "Scenes",
        "Alignment quality",
        *[f"Component scores: {p}" for p in properties],
        "Top components per property",
        "Mean-ablating layers, cumulatively (through CompAlign)",
        *[f"Where each text is found: {p}" for p in properties],
    ]
    assert sections == expected
    assert _figures(page) == len(expected) - 2  # all but the scenes and the table
    # Self-contained: plotly.js inline, no script fetched from the network.
    assert page.count("plotly.js v") >= 1
    assert not re.search(r"<script[^>]+src=\"http", page)
    # Zero-shot accuracies through the mapped sum and of the CLIP itself, per property.
    accuracies = _percentages(page)
    assert len(accuracies) == 2 * len(properties)
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    cosine = float(re.search(r"over 48 images: (-?\d+\.\d+)", page).group(1))
    assert -1.0 <= cosine <= 1.0


@needs_shapes_pair
def test_shapes_vit_inputs_are_labelled_scenes():
    inputs = report_beyond.shapes_beyond_inputs(3, 12)
    assert list(inputs.properties) == ["color", "shape", "position"]
    for prop, texts in inputs.properties.items():
        assert inputs.labels[prop].shape == (12,)
        assert set(inputs.queries[prop]) <= set(texts)
        assert 1 <= len(inputs.queries[prop]) <= report_beyond.MAX_QUERIES


# ---------------------------------------------------------------------- user models
@needs_shapes_pair
def test_timm_vit_with_a_compalign_and_an_image_folder(tmp_path, timm_vit, image_folder, capsys):
    compalign = _compalign(tmp_path / "ca")
    out = tmp_path / "timm.html"
    argv = ["--model", "timm:test_vit", "--pretrained", timm_vit, "--compalign", compalign]
    code, err = _run(
        [*argv, "--images", image_folder, "--texts", *TEXTS, "--out", str(out)], capsys
    )
    assert code == 0, err
    page = out.read_text(encoding="utf-8")
    assert "test_vit" in page and "8 components (4 heads, 2 MLPs, 1 attn biases, rest)" in page
    assert "no stored fit history" in page and "5 user images" in page
    assert _sections(page) == [
        "Scenes",
        "Alignment quality",
        "Component scores: texts",
        "Top components per property",
        "Mean-ablating layers, cumulatively (through CompAlign)",
        "Where each text is found: texts",
    ]
    assert all(text in page for text in TEXTS)
    (agreement,) = _percentages(page)  # with the CLIP's own zero-shot choice
    assert 0.0 <= agreement <= 1.0


@needs_shapes_pair
def test_hugging_face_vit_with_a_compalign(tmp_path, image_folder, capsys):
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        mlp_ratio=2,
        image_size=28,
        patch_size=7,
    )
    folder = tmp_path / "dinov2"
    torch.manual_seed(0)
    transformers.Dinov2Model(config).save_pretrained(folder)
    processor = transformers.BitImageProcessor(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}
    )
    processor.save_pretrained(folder)
    ids = ["L1H0", "L1H1", "L1_mlp", "L0_mlp", "rest"]
    compalign = _compalign(tmp_path / "ca", ids, d_source=32)
    out = tmp_path / "hf.html"
    argv = ["--model", f"hf:{folder}", "--compalign", compalign, "--images", image_folder]
    code, err = _run([*argv, "--texts", "a red object", "a circle", "--out", str(out)], capsys)
    assert code == 0, err
    page = out.read_text(encoding="utf-8")
    assert "Where each text is found: texts" in page and "5 components" in page


# ---------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--compalign", "{ca}"], "reads a non-CLIP model through CompAlign, but the default"),
        (["--model", "ViT-B-32", "--compalign", "{ca}"], "--model 'ViT-B-32' is a CLIP"),
        (["--clip-model", "ViT-B-32"], "--clip-model 'ViT-B-32' reads a non-CLIP model"),
        (["--model", "timm:test_vit"], "is not a CLIP: it has no text tower"),
        (["--model", "hf:some/model", "--images", "{img}", "--texts", "a", "b"], "add --compalign"),
        (["--model", "timm:test_vit", "--compalign", "{ca}"], "needs --images FOLDER and --texts"),
        (
            ["--model", "timm:nope_vit", "--compalign", "{ca}"],
            "'timm:nope_vit' is not a timm model",
        ),
        (["--model", "timm:"], "names no model; e.g. --model timm:"),
        (["--model", "shapes-vit", "--pretrained", "x.pt"], "does not apply to --model shapes-vit"),
        (["--model", "shapes-vit", "--clip-pretrained", "openai"], "needs --clip-model"),
        (["--model", "shapes-vit", "--clip-model", "ViT-B-322"], "did you mean 'ViT-B-32'"),
        (["--model", "shapes-vit", "--compalign", "{tmp}/none"], "No CompAlign folder"),
    ],
)
def test_refusals_before_any_model_loads(tmp_path, image_folder, capsys, argv, message):
    values = {"ca": _compalign(tmp_path / "ca"), "img": image_folder, "tmp": str(tmp_path)}
    out = tmp_path / "r.html"
    code, err = _run([*(a.format(**values) for a in argv), "--out", str(out)], capsys)
    assert code == 2 and err.startswith("vision-lens report: error:")
    assert message in err, err
    assert not out.exists()


@needs_shapes_pair
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(d_source=32), "maps 32-wide source components, but --model timm:test_vit outputs 64"),
        (dict(d_clip=64), "64-wide CLIP space, but the default shapes CLIP embeds images in 128"),
        (dict(ids=["L9H0", "rest"]), "component 'L9H0' names layer 9, but --model timm:test_vit"),
        (dict(ids=["L5H3", "rest"]), "component 'L5H3' names head 3, but --model timm:test_vit"),
    ],
)
def test_refusals_of_a_compalign_for_another_model(
    tmp_path, timm_vit, image_folder, capsys, kwargs, message
):
    compalign = _compalign(tmp_path / "ca", **kwargs)
    out = tmp_path / "r.html"
    argv = ["--model", "timm:test_vit", "--pretrained", timm_vit, "--compalign", compalign]
    code, err = _run(
        [*argv, "--images", image_folder, "--texts", *TEXTS, "--out", str(out)], capsys
    )
    assert code == 2 and err.startswith("vision-lens report: error:")
    assert message in err, err
    assert not out.exists()


def test_a_clip_report_is_not_dispatched():
    assert report_beyond.check_beyond_options() is False
    assert report_beyond.check_beyond_options("ViT-B-16", "openai") is False
    assert report_beyond.source_kind("timm:x") == "timm"


def test_timm_vit_read_by_an_open_clip_model(tmp_path, timm_vit, image_folder, capsys):
    """``--clip-model``: any open_clip CLIP (here ViT-B-32 with random weights) is the text side."""
    compalign = _compalign(tmp_path / "ca", d_clip=512)
    out = tmp_path / "b32.html"
    argv = ["--model", "timm:test_vit", "--pretrained", timm_vit, "--compalign", compalign]
    argv += ["--clip-model", "ViT-B-32", "--images", image_folder, "--texts", *TEXTS[:2]]
    code, err = _run([*argv, "--out", str(out)], capsys)
    assert code == 0, err
    page = out.read_text(encoding="utf-8")
    assert "Text side: ViT-B-32 (d_embed 512)" in page and "d_clip 512" in page
    assert "Where each text is found: texts" in page


@needs_shapes_pair
def test_a_compalign_into_another_clip_space_is_refused_before_loading(tmp_path, capsys):
    out = tmp_path / "r.html"
    code, err = _run(
        ["--model", "shapes-vit", "--clip-model", "ViT-B-32", "--out", str(out)], capsys
    )
    assert code == 2 and not out.exists()
    assert "128-wide CLIP space, but --clip-model ViT-B-32 embeds images in 512 dimensions" in err
