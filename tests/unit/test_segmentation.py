"""Zero-shot segmentation from the token decomposition, the baselines, and ``eval-seg``.

Random models only: small ``HookedViT``s (float64 where sums are compared) with a fake text tower
(fixed random unit vectors per string), and one tiny registered open_clip config for the paths
that go through real text encoding, ``model.preprocess`` and the CLI.
"""

from __future__ import annotations

import json
import zlib

import open_clip
import pytest
import torch
import torch.nn.functional as F

import vision_lens as vl
from vision_lens.analysis.baselines import (
    attention_rollout,
    baseline_heatmaps,
    baseline_scores,
    chefer_relevance,
    gradcam,
    raw_attention,
)
from vision_lens.analysis.seg_metrics import SegmentationMetrics
from vision_lens.analysis.segmentation import binarize, segment, segment_heads, upsample_heatmaps
from vision_lens.apps.seg_eval import (
    METHODS,
    evaluate_segmentation,
    shapes_class_texts,
    shapes_data,
)
from vision_lens.shapes.pretrained import shapes_weights_path

D_EMBED = 16


def make_model(n_layers=3, seed=0, dtype=torch.float64, std=0.2):
    cfg = vl.HookedViTConfig(
        n_layers=n_layers,
        d_model=32,
        n_heads=4,
        d_mlp=64,
        d_embed=D_EMBED,
        image_size=(32, 24),
        patch_size=8,
    )
    model = vl.HookedViT(cfg).init_weights(seed=seed, std=std)
    with torch.no_grad():  # non-trivial LayerNorms and biases, so that misattributions show
        gen = torch.Generator().manual_seed(seed + 1)
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    return model.to(dtype)


class FakeText:
    """A stand-in text tower: a fixed random unit vector per string."""

    def __init__(self, d_embed=D_EMBED):
        self.d_embed = d_embed
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        rows = []
        for text in texts:
            gen = torch.Generator().manual_seed(zlib.crc32(text.encode()))
            rows.append(torch.randn(self.d_embed, generator=gen))
        return F.normalize(torch.stack(rows), dim=-1)


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def images():
    return torch.randn(
        5, 3, 32, 24, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )


def brute_force_token_terms(model, images):
    """Per-token direct effects (all layers, all heads), built from a full cache by hand:
    ``sum_l,h A[cls, i] v_i W_O`` through the frozen, centred final LayerNorm and projection."""
    _, cache = model.run_with_cache(images)
    total = 0
    for layer in range(model.cfg.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"][:, :, 0]  # [b, h, pos]
        values = cache[f"blocks.{layer}.attn.hook_v"]  # [b, pos, h, dh]
        W_O = model.blocks[layer].attn.W_O  # [h, dh, d]
        total = total + torch.einsum("bhp,bphe,hed->bpd", pattern, values, W_O)
    sigma = cache["ln_final.hook_scale"][:, 0]  # [b, 1]
    centred = total - total.mean(-1, keepdim=True)
    return ((centred * model.ln_final.w / sigma[:, None]) @ model.W_proj).detach(), cache


# ------------------------------------------------------------------ heatmaps = the decomposition
def test_patch_scores_equal_brute_force_token_terms(model, images):
    texts = F.normalize(torch.randn(3, D_EMBED, dtype=torch.float64), dim=-1)
    raw = segment(model, None, images, texts, subtract_reference=False, upsample=False)
    assert raw.shape == (5, 3, 4, 3) and raw.dtype == torch.float32
    terms, _ = brute_force_token_terms(model, images)
    expected = terms[:, 1:] @ texts.T  # [b, patches, text], row-major patch order
    assert torch.allclose(raw.flatten(2).transpose(1, 2).double(), expected, atol=1e-6, rtol=1e-5)


def test_patch_sum_is_the_patch_part_of_the_image_text_score(model, images):
    texts = F.normalize(torch.randn(2, D_EMBED, dtype=torch.float64), dim=-1)
    raw = segment(model, None, images, texts, subtract_reference=False, upsample=False)
    terms, cache = brute_force_token_terms(model, images)
    embed = model(images).detach()
    # embed = class-token term + patch terms + everything that is not a token of an attention
    # layer (embedding, MLPs, final LN bias, attention output biases)
    layers, labels = cache.decompose_layers()
    not_attention = sum(t for t, name in zip(layers, labels, strict=True) if "attn" not in name)
    rest = not_attention + cache.attention_bias_terms().sum(1) + terms[:, 0]
    patch_part = (embed - rest) @ texts.T  # [b, text]
    assert torch.allclose(raw.sum((-1, -2)).double(), patch_part, atol=1e-6, rtol=1e-5)


def test_reference_subtraction_is_the_mean_heatmap(model, images):
    texts, reference = torch.randn(2, D_EMBED), torch.randn(6, D_EMBED)
    raw = segment(model, None, images, texts, subtract_reference=False, upsample=False)
    ref = segment(model, None, images, reference, subtract_reference=False, upsample=False)
    out = segment(model, None, images, texts, reference_texts=reference, upsample=False)
    assert torch.allclose(out, raw - ref.mean(1, keepdim=True), atol=1e-5)
    default = segment(model, None, images, texts, upsample=False)  # reference = the texts
    assert torch.allclose(default, raw - raw.mean(1, keepdim=True), atol=1e-5)


def test_layers_select_the_summed_layers(model, images):
    texts = torch.randn(2, D_EMBED)
    parts = [
        segment(model, None, images, texts, layers=[layer], subtract_reference=False)
        for layer in range(3)
    ]
    full = segment(model, None, images, texts, subtract_reference=False)
    assert torch.allclose(sum(parts), full, atol=1e-5)
    assert not torch.allclose(parts[-1], full, atol=1e-5)


def test_upsampling_shapes_and_batching(model, images):
    texts = torch.randn(3, D_EMBED)
    grid = segment(model, None, images, texts, upsample=False)
    heat = segment(model, None, images, texts, batch_size=2)
    assert heat.shape == (5, 3, 32, 24) and heat.dtype == torch.float32
    assert heat.device == torch.device("cpu")
    assert torch.allclose(heat, upsample_heatmaps(grid, (32, 24)), atol=1e-6)
    assert torch.allclose(segment(model, None, images, texts, batch_size=5), heat, atol=1e-6)
    masks = binarize(heat[:, 0])
    assert masks.shape == (5, 32, 24) and masks.dtype == torch.bool


def test_upsample_of_a_constant_grid_is_constant():
    up = upsample_heatmaps(torch.full((2, 4, 3), 2.5), (32, 24))
    assert up.shape == (2, 32, 24) and torch.allclose(up, torch.full_like(up, 2.5))


def test_string_texts_shared_and_per_image(model, images):
    clip = FakeText()
    classes = ["a red circle", "a blue square", "a green star"]
    shared = segment(model, clip, images, classes)
    assert torch.allclose(shared, segment(model, None, images, clip.encode(classes)), atol=1e-6)
    # ImageNet protocol: one class text per image, the reference = every class text
    picks = [0, 2, 1, 1, 0]
    per_image = segment(model, clip, images, [[classes[i]] for i in picks], reference_texts=classes)
    assert per_image.shape == (5, 1, 32, 24)
    expected = torch.stack([shared[n, i] for n, i in enumerate(picks)])
    assert torch.allclose(per_image[:, 0], expected, atol=1e-5)
    # default reference for per-image lists: the distinct texts over all images
    assert torch.allclose(
        segment(model, clip, images, [[classes[i]] for i in picks]), per_image, atol=1e-5
    )
    # per-image texts follow their images across batches
    batched = segment(model, clip, images, [[classes[i]] for i in picks], classes, batch_size=2)
    assert torch.allclose(batched, per_image, atol=1e-6)


def test_segment_heads_sum_to_segment(model, images):
    texts, reference = torch.randn(3, D_EMBED), torch.randn(4, D_EMBED)
    for ln_mode in ("center", "split"):
        heads = segment_heads(model, None, images, texts, reference, ln_mode=ln_mode)
        assert heads.shape == (5, 3, 4, 3, 32, 24)
        full = segment(model, None, images, texts, reference, ln_mode=ln_mode)
        assert torch.allclose(heads.sum((1, 2)), full, atol=1e-5)


def test_segment_heads_selects_layers_and_heads(model, images):
    texts = torch.randn(2, D_EMBED)
    every = segment_heads(model, None, images, texts, upsample=False)
    some = segment_heads(model, None, images, texts, layers=[-1], heads=[2, 0], upsample=False)
    assert some.shape == (5, 1, 2, 2, 4, 3)
    assert torch.allclose(some, every[:, [2]][:, :, [2, 0]])
    with pytest.raises(ValueError, match="one list of texts"):
        segment_heads(model, FakeText(), images, [["a"], ["b"]] * 2 + [["c"]])
    with pytest.raises(IndexError, match="heads"):
        segment_heads(model, None, images, texts, heads=[4])


# ------------------------------------------------------------------ clear errors
def test_errors_name_the_fix(model, images):
    clip = FakeText()
    with pytest.raises(ValueError, match="width"):
        segment(model, None, images, torch.randn(2, D_EMBED + 1))
    with pytest.raises(ValueError, match="same CLIP"):
        segment(model, FakeText(d_embed=8), images, ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        segment(model, clip, images, [])
    with pytest.raises(ValueError, match="preprocess"):
        segment(model, clip, torch.randn(2, 3, 32, 32), ["a", "b"])
    with pytest.raises(ValueError, match="batch dimension"):
        segment(model, clip, images[0], ["a", "b"])
    with pytest.raises(ValueError, match="5 images"):
        segment(model, clip, images, [["a"], ["b"]], reference_texts=["a", "b"])
    with pytest.raises(ValueError, match="same, non-zero length"):
        segment(model, clip, images, [["a"], ["b", "c"], ["a"], ["a"], ["a"]])
    with pytest.raises(ValueError, match="reference_texts"):
        segment(model, clip, images, ["a single text"])
    with pytest.raises(ValueError, match="clip"):
        segment(model, None, images, ["a", "b"])
    with pytest.raises(ValueError, match="batch_size"):
        segment(model, clip, images, ["a", "b"], batch_size=0)
    with pytest.raises(ValueError, match="empty"):
        segment(model, clip, images[:0], ["a", "b"])


# ------------------------------------------------------------------ baselines
def _patterns(model, images):
    _, cache = model.run_with_cache(images, names_filter=lambda n: n.endswith("hook_pattern"))
    return [cache[f"blocks.{i}.attn.hook_pattern"] for i in range(model.cfg.n_layers)]


def test_rollout_on_one_layer_is_identity_augmented_attention(images):
    model = make_model(n_layers=1, seed=4)
    (pattern,) = _patterns(model, images)
    a = pattern.mean(1) + torch.eye(pattern.shape[-1], dtype=pattern.dtype)
    expected = (a / a.sum(-1, keepdim=True))[:, 0, 1:]
    out = attention_rollout(model, images, upsample=False)
    assert out.shape == (5, 4, 3)
    assert torch.allclose(out.flatten(1).double(), expected, atol=1e-6)
    assert torch.allclose(out.flatten(1).double(), (pattern.mean(1)[:, 0, 1:]) / 2, atol=1e-6)


def test_rollout_is_the_product_over_layers(model, images):
    patterns = _patterns(model, images)
    joint = None
    for pattern in patterns:
        a = pattern.mean(1) + torch.eye(pattern.shape[-1], dtype=pattern.dtype)
        a = a / a.sum(-1, keepdim=True)
        joint = a if joint is None else a @ joint
    out = attention_rollout(model, images, upsample=False)
    assert torch.allclose(out.flatten(1).double(), joint[:, 0, 1:], atol=1e-6)
    later = attention_rollout(model, images, start_layer=1, upsample=False)
    assert not torch.allclose(later, out)


def test_raw_attention_is_the_last_layers_class_row(model, images):
    patterns = _patterns(model, images)
    out = raw_attention(model, images, upsample=False)
    assert torch.allclose(out.flatten(1).double(), patterns[-1].mean(1)[:, 0, 1:], atol=1e-6)
    first = raw_attention(model, images, layer=0, upsample=False)
    assert torch.allclose(first.flatten(1).double(), patterns[0].mean(1)[:, 0, 1:], atol=1e-6)


def _grads_via_backward_hooks(model, images, names, text):
    """Reference gradients through TransformerLens backward hooks and .backward()."""
    acts, grads = {}, {}

    def fwd(tensor, hook):
        acts[hook.name] = tensor.detach()

    def bwd(grad, hook):
        grads[hook.name] = grad.detach()

    model = make_model(n_layers=model.cfg.n_layers)  # a private copy: .backward() fills .grad
    with model.hooks(fwd_hooks=[(n, fwd) for n in names], bwd_hooks=[(n, bwd) for n in names]):
        embed = model(images)
        (F.normalize(embed, dim=-1) * text).sum().backward()
    return acts, grads


def test_chefer_relevance_matches_hand_rule(model, images):
    text = F.normalize(torch.randn(5, D_EMBED, dtype=torch.float64), dim=-1)
    names = [f"blocks.{i}.attn.hook_pattern" for i in range(3)]
    acts, grads = _grads_via_backward_hooks(model, images, names, text)
    relevance = torch.eye(acts[names[0]].shape[-1], dtype=torch.float64).expand(5, -1, -1)
    for name in names:
        cam = (grads[name] * acts[name]).clamp(min=0).mean(1)
        relevance = relevance + cam @ relevance
    out = chefer_relevance(model, None, images, text, upsample=False)
    assert out.shape == (5, 4, 3)
    assert torch.allclose(out.flatten(1).double(), relevance[:, 0, 1:], atol=1e-6, rtol=1e-4)
    assert all(p.grad is None for p in model.parameters())  # no side effects on the model


def test_gradcam_matches_hand_rule(model, images):
    text = F.normalize(torch.randn(5, D_EMBED, dtype=torch.float64), dim=-1)
    name = "blocks.2.hook_resid_pre"
    acts, grads = _grads_via_backward_hooks(model, images, [name], text)
    weights = grads[name][:, 1:].mean(1, keepdim=True)
    expected = (acts[name][:, 1:] * weights).sum(-1).clamp(min=0)
    out = gradcam(model, None, images, text, upsample=False)
    assert torch.allclose(out.flatten(1).double(), expected, atol=1e-6, rtol=1e-4)
    assert (out >= 0).all()


def test_last_block_output_has_no_patch_gradient(model, images):
    # Why GradCAM uses the last block's input: nothing reads the patch tokens after it.
    name = "blocks.2.hook_resid_post"
    _, grads = _grads_via_backward_hooks(model, images, [name], torch.randn(5, D_EMBED))
    assert grads[name][:, 1:].abs().max() == 0 and grads[name][:, 0].abs().max() > 0


def test_named_baselines_are_baseline_heatmaps(model, images):
    clip, texts = FakeText(), [f"object {i}" for i in range(5)]
    named = {
        "raw_attention": raw_attention(model, images, layer=1, batch_size=2),
        "rollout": attention_rollout(model, images, start_layer=1, batch_size=2),
        "gradcam": gradcam(model, clip, images, texts, layer=1, batch_size=2),
        "chefer2021": chefer_relevance(model, clip, images, texts, batch_size=2),
    }
    options = {
        "raw_attention": {"layer": 1},
        "rollout": {"start_layer": 1},
        "gradcam": {"layer": 1},
    }
    for method, heat in named.items():
        texts_or_none = texts if method in ("gradcam", "chefer2021") else None
        one_pass = baseline_heatmaps(
            model, images, method, texts_or_none, clip, batch_size=5, **options.get(method, {})
        )
        assert torch.allclose(heat, one_pass, atol=1e-6), method


def test_baselines_shapes_finite_and_text_checks(model, images):
    clip = FakeText()
    texts = [f"object {i}" for i in range(5)]
    outs = [
        raw_attention(model, images),
        attention_rollout(model, images),
        gradcam(model, clip, images, texts, batch_size=2),
        chefer_relevance(model, clip, images, "one text for all"),
    ]
    for out in outs:
        assert out.shape == (5, 32, 24) and out.dtype == torch.float32
        assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="one text per image"):
        gradcam(model, clip, images, texts[:3])
    with pytest.raises(ValueError, match="one text per image"):
        chefer_relevance(model, clip, images, [["a"]] * 5)
    with pytest.raises(ValueError, match="explains a text"):
        baseline_heatmaps(model, images, "gradcam")
    with pytest.raises(ValueError, match="Unknown baseline"):
        baseline_scores(model, images, "lrp")
    with pytest.raises(IndexError, match="Layer"):
        raw_attention(model, images, layer=3)


# ------------------------------------------------------------------ the benchmark and the command
TINY = "vl-test-seg-tiny"
TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / f"{TINY}.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    return vl.load_clip(TINY)


def test_segment_with_real_text_tower_and_pil_images(tiny_clip):
    model, clip = tiny_clip
    scenes = vl.shapes.generate(3, seed=1, n_objects=1)
    pil = [scenes.to_pil(i) for i in range(3)]
    heat = segment(model, clip, pil, ["a red circle", "a blue square"])
    tensors = torch.stack([model.preprocess(p) for p in pil])
    assert heat.shape == (3, 2, 32, 32)
    assert torch.allclose(heat, segment(model, clip, tensors, ["a red circle", "a blue square"]))


def test_benchmark_decomposition_equals_public_segment(tiny_clip):
    model, clip = tiny_clip
    data = shapes_data(model, clip, n=6, seed=5, batch_size=4)
    result = evaluate_segmentation(model, data, methods=["decomposition"], progress=False)
    # the same through the public API: one class text per image, reference = all 64 classes
    batches = list(data.batches())
    images = torch.cat([b.images for b in batches])
    masks = torch.cat([b.masks for b in batches])
    labels = torch.cat([b.labels for b in batches])
    classes = shapes_class_texts()
    heat = segment(model, clip, images, [[classes[i]] for i in labels], reference_texts=classes)
    metrics = SegmentationMetrics()
    metrics.update(heat[:, 0], masks)
    expected = metrics.compute()
    for key, value in expected.items():
        got = result.metrics["decomposition"][key]
        assert got == pytest.approx(value, abs=1e-4), key  # float rounding, AP ties
    assert masks.shape == (6, 32, 32) and masks.any()
    assert result.examples["heatmaps"]["decomposition"].shape == (4, 32, 32)
    assert result.examples["images"].shape == (4, 32, 32, 3)


def test_eval_seg_command_writes_the_comparison(tiny_clip, tmp_path, capsys):
    from vision_lens.cli import main

    out = tmp_path / "results"
    argv = ["eval-seg", "--model", TINY, "--n", "5", "--batch-size", "4", "--quiet"]
    assert main([*argv, "--out-dir", str(out), "--n-examples", "2"]) == 0
    printed = capsys.readouterr().out
    assert "| Method |" in printed and "Attention rollout" in printed
    saved = json.loads((out / "segmentation.json").read_text())
    assert list(saved["metrics"]) == list(METHODS)
    for metrics in saved["metrics"].values():
        assert metrics["n_images"] == 5
        assert all(0 <= metrics[k] <= 1 for k in ("pixel_accuracy", "miou", "map"))
    page = (out / "segmentation.md").read_text()
    assert "vision-lens eval-seg --model vl-test-seg-tiny" in page and "Table 3" in page
    assert "Ablations" not in page and saved["ablations"] == {}
    assert (out / "segmentation_examples.html").stat().st_size < 500_000


def test_eval_seg_command_errors(tmp_path, capsys):
    from vision_lens.cli import main

    code = main(["eval-seg", "--model", "ViT-B-32", "--imagenet-seg", str(tmp_path / "no.mat")])
    assert code == 2 and "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval-seg", "--methods", "lrp"])


def test_ablations_include_the_method_itself(tiny_clip):
    model, clip = tiny_clip
    data = shapes_data(model, clip, n=5, seed=2, batch_size=3)
    result = evaluate_segmentation(
        model, data, methods=["decomposition", "rollout"], ablations=True, progress=False
    )
    same = result.ablations["all layers (the default)"]
    for key in ("pixel_accuracy", "miou", "map", "map_foreground", "miou_best_threshold"):
        assert same[key] == pytest.approx(result.metrics["decomposition"][key], abs=1e-4), key
    assert set(result.ablations) >= {
        "all layers, no reference subtraction",
        "last 1 layer",
        "layer 0 only",
        "layer 1 only",
    }
    sweep = result.metrics["rollout"]["sweep_miou"]
    assert max(sweep) == result.metrics["rollout"]["miou_best_threshold"]
    assert "Variants of our method" in result.markdown()


@pytest.mark.skipif(not shapes_weights_path().is_file(), reason="shipped shapes weights missing")
def test_eval_seg_default_run_on_the_shipped_model(tmp_path, capsys):
    """The command as a new user runs it (500 shapes scenes, about 20 s on 2 cores)."""
    from vision_lens.cli import main

    assert main(["eval-seg", "--out-dir", str(tmp_path), "--quiet"]) == 0
    assert "| Token decomposition" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "segmentation.json").read_text())["metrics"]
    assert {m["n_images"] for m in metrics.values()} == {500}
    # The shipped model localises: our method is far ahead of the weakest baselines and of
    # predicting no foreground at all (mIoU 48 at 3.9% foreground).
    ours = metrics["decomposition"]["miou"]
    assert ours > 0.55
    assert (
        ours > metrics["gradcam"]["miou"] + 0.05 and ours > metrics["raw_attention"]["miou"] + 0.05
    )
