"""Tests for vision_lens.text.CLIPText against open_clip's own text encoding.

All models are randomly initialised (no downloads): one ViT-B-32 for exactness at real size, and
tiny registered configs (CLIP, QuickGELU CLIP, CustomTextCLIP, a non-CLIP vocabulary) for
everything else.
"""

from __future__ import annotations

import json

import open_clip
import pytest
import torch
import torch.nn.functional as F

from vision_lens.text import CLIPText, imagenet_classnames, imagenet_templates

TEXTS = [
    "a photo of a dog",
    "a photo of a cat",
    "",
    "a diagram of a transformer with many attention heads " * 6,  # longer than 77 tokens
    "Ünïcödé, punctuation!? and    spaces",
    "a photo of a dog",  # duplicate: must give the same row as the first
]

_TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}
_TINY_VISION = {"image_size": 32, "layers": 1, "width": 64, "head_width": 32, "patch_size": 16}
_SIGLIP_TEXT = {
    **_TINY_TEXT,
    "context_length": 16,
    "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
    "tokenizer_kwargs": {"clean": "canonicalize"},
    "no_causal_mask": True,
    "proj_bias": True,
    "pool_type": "last",
    "norm_kwargs": {"eps": 1e-6},
}
TINY_CONFIGS = {
    "vl-test-tiny": {"embed_dim": 32, "vision_cfg": _TINY_VISION, "text_cfg": _TINY_TEXT},
    "vl-test-tiny-quickgelu": {
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": _TINY_VISION,
        "text_cfg": _TINY_TEXT,
    },
    "vl-test-tiny-custom": {
        "embed_dim": 48,
        "custom_text": True,
        "vision_cfg": _TINY_VISION,
        "text_cfg": _TINY_TEXT,
    },
    # SigLIP's text tower (open_clip ViT-B-16-SigLIP's text_cfg, shrunk; CLIP vocabulary size so
    # that SimpleTokenizer can stand in for its Hugging Face tokenizer, which is not offline).
    "vl-test-tiny-siglip": {
        "embed_dim": 24,
        "init_logit_bias": -10,
        "custom_text": True,
        "vision_cfg": _TINY_VISION,
        "text_cfg": _SIGLIP_TEXT,
    },
    "vl-test-tiny-smallvocab": {
        "embed_dim": 32,
        "custom_text": True,
        "vision_cfg": _TINY_VISION,
        "text_cfg": {**_TINY_TEXT, "vocab_size": 1000},
    },
}


@pytest.fixture(scope="module")
def tiny_names(tmp_path_factory):
    """Register the tiny architectures with open_clip (by name, like built-in configs)."""
    config_dir = tmp_path_factory.mktemp("open_clip_configs")
    for name, cfg in TINY_CONFIGS.items():
        (config_dir / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(config_dir)
    return list(TINY_CONFIGS)


def _make(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return open_clip.create_model(name, pretrained=None).eval()


@pytest.fixture(scope="module")
def vitb32():
    """A random ViT-B-32, its open_clip tokenizer and the CLIPText wrapping it."""
    clip = _make("ViT-B-32")
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    return clip, tokenizer, CLIPText.from_open_clip_model(clip, tokenizer)


@pytest.fixture(scope="module")
def tiny(tiny_names):
    """name -> (open_clip model, tokenizer, CLIPText) for the tiny CLIP-vocabulary configs."""
    out = {}
    for name in ("vl-test-tiny", "vl-test-tiny-quickgelu", "vl-test-tiny-custom"):
        clip = _make(name, seed=len(out))
        tokenizer = open_clip.get_tokenizer(name)
        out[name] = (clip, tokenizer, CLIPText.from_open_clip_model(clip, tokenizer))
    return out


def _reference(clip, tokenizer, texts, normalize=True):
    with torch.no_grad():
        return clip.encode_text(tokenizer(texts), normalize=normalize)


# ------------------------------------------------------------------ encode == open_clip
def test_encode_matches_open_clip_vitb32(vitb32):
    clip, tokenizer, text = vitb32
    out = text.encode(TEXTS)
    ref = _reference(clip, tokenizer, TEXTS)
    assert out.shape == (len(TEXTS), 512) == ref.shape
    assert text.d_embed == 512
    assert out.dtype == ref.dtype and out.device == ref.device
    assert torch.equal(out, ref)
    assert torch.allclose(out.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-5)
    assert (out[0] - out[-1]).abs().max() <= 1e-6  # same text, different batch row
    assert not torch.allclose(out[0], out[1])
    assert not out.requires_grad

    raw = text.encode(TEXTS[:2], normalize=False)
    assert torch.equal(raw, _reference(clip, tokenizer, TEXTS[:2], normalize=False))
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(2), atol=1e-3)
    assert (F.normalize(raw, dim=-1) - out[:2]).abs().max() <= 1e-6


@pytest.mark.parametrize("name", ["vl-test-tiny", "vl-test-tiny-quickgelu", "vl-test-tiny-custom"])
@pytest.mark.parametrize("normalize", [True, False])
def test_encode_matches_open_clip_tiny(tiny, name, normalize):
    clip, tokenizer, text = tiny[name]
    out = text.encode(TEXTS, normalize=normalize)
    ref = _reference(clip, tokenizer, TEXTS, normalize=normalize)
    assert out.shape == (len(TEXTS), TINY_CONFIGS[name]["embed_dim"])
    assert text.d_embed == TINY_CONFIGS[name]["embed_dim"]
    assert (out - ref).abs().max() <= 1e-6


def test_custom_text_clip_is_a_custom_text_model(tiny):
    clip, _, text = tiny["vl-test-tiny-custom"]
    assert isinstance(clip, open_clip.CustomTextCLIP)
    assert text.context_length == 77


def test_single_string_gives_one_row(tiny):
    _, _, text = tiny["vl-test-tiny"]
    one = text.encode("a photo of a dog")
    assert one.shape == (1, text.d_embed)
    assert torch.equal(one, text.encode(["a photo of a dog"]))
    assert torch.equal(text("a photo of a dog"), one)  # forward == encode


@pytest.mark.parametrize("batch_size", [1, 2, 4])
def test_batching_matches_one_batch(tiny, batch_size):
    _, _, text = tiny["vl-test-tiny"]
    texts = TEXTS[:5]
    one_batch = text.encode(texts, batch_size=256)
    batched = text.encode(texts, batch_size=batch_size, progress=batch_size == 2)
    assert batched.shape == one_batch.shape
    assert (batched - one_batch).abs().max() <= 1e-6


def test_encode_accepts_tuples_and_generators(tiny):
    _, _, text = tiny["vl-test-tiny"]
    expected = text.encode(TEXTS[:3])
    assert torch.equal(text.encode(tuple(TEXTS[:3])), expected)
    assert torch.equal(text.encode(t for t in TEXTS[:3]), expected)


def test_encode_result_usable_in_autograd(tiny):
    # Computed under no_grad, not inference_mode: the result can enter a later graph.
    _, _, text = tiny["vl-test-tiny"]
    emb = text.encode(TEXTS[:2])
    scale = torch.ones(text.d_embed, requires_grad=True)
    (emb * scale).sum().backward()
    assert torch.allclose(scale.grad, emb.sum(0))


# ------------------------------------------------------------------ zero-shot weights
def _hand_zero_shot(clip, tokenizer, classnames, templates):
    rows = []
    with torch.no_grad():
        for c in classnames:
            prompts = [t.format(c) if isinstance(t, str) else t(c) for t in templates]
            emb = F.normalize(clip.encode_text(tokenizer(prompts)), dim=-1)
            mean = emb.mean(dim=0)
            rows.append(mean / mean.norm())
    return torch.stack(rows)


@pytest.mark.parametrize("batch_size", [256, 5])  # 5 makes batches straddle classes
def test_zero_shot_weights_match_hand_loop(tiny, batch_size):
    clip, tokenizer, text = tiny["vl-test-tiny"]
    classnames = ["dog", "cat", "golden retriever", "airliner"]
    templates = ["a photo of a {}.", "a drawing of the {}", lambda c: f"itap of a {c}."]
    weights = text.zero_shot_weights(classnames, templates, batch_size=batch_size)
    ref = _hand_zero_shot(clip, tokenizer, classnames, templates)
    assert weights.shape == (4, text.d_embed)
    assert (weights - ref).abs().max() <= 1e-6
    assert torch.allclose(weights.norm(dim=-1), torch.ones(4), atol=1e-6)


def test_zero_shot_weights_callable_templates_match_open_clip(tiny):
    clip, tokenizer, text = tiny["vl-test-tiny-quickgelu"]
    classnames = imagenet_classnames()[:3]
    templates = imagenet_templates("simple")
    weights = text.zero_shot_weights(classnames, templates, batch_size=8, progress=True)
    ref = open_clip.build_zero_shot_classifier(clip, tokenizer, classnames, templates).T
    assert weights.shape == (3, text.d_embed)
    assert (weights - ref).abs().max() <= 1e-6


def test_zero_shot_weights_single_template_equals_normalized_encoding(tiny):
    _, _, text = tiny["vl-test-tiny-custom"]
    weights = text.zero_shot_weights(["dog", "cat"], "a photo of a {}.")
    expected = text.encode(["a photo of a dog.", "a photo of a cat."])
    assert (weights - expected).abs().max() <= 1e-6


# ------------------------------------------------------------------ loading
@pytest.mark.parametrize("filename", ["ckpt.pt", "ckpt.safetensors"])
def test_from_open_clip_local_checkpoint(tiny_names, tmp_path, filename):
    clip = _make("vl-test-tiny", seed=123)
    path = tmp_path / filename
    if filename.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(path))
    else:
        torch.save(clip.state_dict(), path)

    loaded = CLIPText.from_open_clip("vl-test-tiny", pretrained=str(path))
    in_memory = CLIPText.from_open_clip_model(clip, open_clip.get_tokenizer("vl-test-tiny"))
    assert torch.equal(loaded.encode(TEXTS), in_memory.encode(TEXTS))
    assert loaded.model.visual is None  # image tower dropped
    assert not loaded.training
    assert isinstance(loaded.tokenizer, open_clip.SimpleTokenizer)
    # pathlib.Path works too
    from_path = CLIPText.from_open_clip("vl-test-tiny", path)
    assert torch.equal(from_path.encode("x"), loaded.encode("x"))


def test_from_open_clip_random_weights_device_dtype(tiny_names):
    text = CLIPText.from_open_clip("vl-test-tiny-custom", device="cpu", dtype=torch.float64)
    assert isinstance(text.model, open_clip.CustomTextCLIP)
    assert text.model.visual is None
    assert text.dtype == torch.float64 and text.device == torch.device("cpu")
    out = text.encode(TEXTS[:2])
    assert out.dtype == torch.float64 and out.shape == (2, 48)
    assert text.logit_scale == pytest.approx(1 / 0.07)
    assert text.logit_bias is None


def test_to_dtype_moves_model(tiny_names):
    clip = _make("vl-test-tiny", seed=7)
    text = CLIPText.from_open_clip_model(clip)  # default tokenizer: CLIP BPE, context 77
    ref32 = text.encode(TEXTS[:3])
    text.to(torch.float64)
    assert text.dtype == torch.float64
    out64 = text.encode(TEXTS[:3])
    assert out64.dtype == torch.float64
    assert torch.allclose(out64.float(), ref32, atol=1e-5)


def test_default_tokenizer_matches_get_tokenizer(vitb32):
    clip, tokenizer, text = vitb32
    default = CLIPText.from_open_clip_model(clip)
    assert isinstance(default.tokenizer, open_clip.SimpleTokenizer)
    assert torch.equal(default.tokenizer(TEXTS), tokenizer(TEXTS))


def test_from_open_clip_model_keeps_reference(tiny):
    clip, _, text = tiny["vl-test-tiny"]
    assert text.model is clip
    assert clip.visual is not None  # a user's model keeps its image tower


# ------------------------------------------------------------------ similarity / classify
def test_similarity_is_cosine():
    gen = torch.Generator().manual_seed(0)
    images, texts = torch.randn(3, 16, generator=gen), torch.randn(5, 16, generator=gen)
    sim = CLIPText.similarity(images, texts)
    assert sim.shape == (3, 5)
    assert torch.allclose(sim, F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T)
    assert torch.allclose(CLIPText.similarity(images, texts, normalize=False), images @ texts.T)
    assert torch.allclose(CLIPText.similarity(images[0], texts), sim[:1])


def test_classify_matches_open_clip_logits(tiny):
    clip, tokenizer, text = tiny["vl-test-tiny"]
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        image_embeds = clip.encode_image(images)
        ref, _ = clip.get_logits(images, tokenizer(TEXTS[:3]))
    logits = text.classify(image_embeds, text.encode(TEXTS[:3]))
    assert logits.shape == (2, 3)
    assert torch.allclose(logits, ref, atol=1e-4)


def test_classify_adds_logit_bias(tiny_names):
    torch.manual_seed(3)
    clip = open_clip.create_model("vl-test-tiny", init_logit_bias=-2.5).eval()  # SigLIP-style
    text = CLIPText.from_open_clip_model(clip)
    assert text.logit_bias == pytest.approx(-2.5)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, _ = clip.get_logits(images, text.tokenizer(TEXTS[:3]))
        image_embeds = clip.encode_image(images)
    assert torch.allclose(text.classify(image_embeds, text.encode(TEXTS[:3])), ref, atol=1e-4)


def test_probabilities_softmax_for_clip(tiny):
    clip, tokenizer, text = tiny["vl-test-tiny"]
    assert text.logit_bias is None and not text.uses_sigmoid
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, _ = clip.get_logits(images, tokenizer(TEXTS[:3]))
        image_embeds = clip.encode_image(images)
    probs = text.probabilities(image_embeds, text.encode(TEXTS[:3]))
    assert torch.allclose(probs, ref.softmax(-1), atol=1e-5)
    assert torch.allclose(probs.sum(-1), torch.ones(2), atol=1e-6)


# ------------------------------------------------------------------ SigLIP (open_clip)
SIGLIP_TOKENIZER = open_clip.SimpleTokenizer(context_length=16)


@pytest.fixture(scope="module")
def siglip(tiny_names):
    """A shrunk open_clip SigLIP (CustomTextCLIP, TextTransformer, logit_bias) and its CLIPText."""
    clip = _make("vl-test-tiny-siglip", seed=11)
    with torch.no_grad():
        clip.logit_bias.fill_(-3.0)  # not the init value, so reading it is checked
        clip.logit_scale.fill_(2.0)
    return clip, CLIPText.from_open_clip_model(clip, SIGLIP_TOKENIZER)


def test_siglip_text_tower_encode_matches_open_clip(siglip):
    clip, text = siglip
    assert isinstance(clip, open_clip.CustomTextCLIP)
    assert type(clip.text).__name__ == "TextTransformer" and clip.text.pool_type == "last"
    assert text.context_length == 16 and text.d_embed == 24
    for normalize in (True, False):
        out = text.encode(TEXTS, normalize=normalize)
        ref = _reference(clip, SIGLIP_TOKENIZER, TEXTS, normalize=normalize)
        assert (out - ref).abs().max() <= 1e-6
    assert text.logit_bias == pytest.approx(-3.0) and text.uses_sigmoid
    assert text.logit_scale == pytest.approx(torch.tensor(2.0).exp().item())


def test_siglip_custom_text_clip_constructor():
    # The class open_clip builds for "ViT-B-16-SigLIP", built directly with small cfgs.
    torch.manual_seed(5)
    clip = open_clip.model.CustomTextCLIP(
        24, _TINY_VISION, _SIGLIP_TEXT, init_logit_bias=-10
    ).eval()
    text = CLIPText.from_open_clip_model(clip, SIGLIP_TOKENIZER)
    assert text.logit_bias == pytest.approx(-10.0) and text.uses_sigmoid
    ref = _reference(clip, SIGLIP_TOKENIZER, TEXTS)
    assert (text.encode(TEXTS) - ref).abs().max() <= 1e-6


def test_siglip_classify_and_sigmoid_probabilities(siglip):
    clip, text = siglip
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref, bias = clip.get_logits(images, SIGLIP_TOKENIZER(TEXTS[:4]))
        image_embeds = clip.encode_image(images)
        img = F.normalize(image_embeds, dim=-1)
        txt = F.normalize(clip.encode_text(SIGLIP_TOKENIZER(TEXTS[:4])), dim=-1)
        by_hand = clip.logit_scale.exp() * img @ txt.T + clip.logit_bias
    assert torch.allclose(ref, by_hand, atol=1e-5)
    weights = text.encode(TEXTS[:4])
    logits = text.classify(image_embeds, weights)
    assert (logits - ref).abs().max() <= 1e-4
    probs = text.probabilities(image_embeds, weights)
    assert (probs - ref.sigmoid()).abs().max() <= 1e-5
    assert not torch.allclose(probs.sum(-1), torch.ones(3))  # independent, not a distribution


def test_siglip_from_open_clip_by_name(siglip, tmp_path):
    clip, text = siglip
    path = tmp_path / "siglip.pt"
    torch.save(clip.state_dict(), path)
    loaded = CLIPText.from_open_clip("vl-test-tiny-siglip", path, tokenizer=SIGLIP_TOKENIZER)
    assert loaded.model.visual is None
    assert isinstance(loaded.model, open_clip.CustomTextCLIP)
    assert (loaded.encode(TEXTS) - text.encode(TEXTS)).abs().max() <= 1e-6
    assert loaded.logit_bias == pytest.approx(-3.0)


def test_siglip_tokenizer_unavailable(tiny_names, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(open_clip, "get_tokenizer", offline)
    with pytest.raises(OSError, match="Cannot load open_clip's tokenizer .* Pass tokenizer="):
        CLIPText.from_open_clip("vl-test-tiny-siglip")
    from vision_lens.models import load_clip

    with pytest.raises(OSError, match="Pass tokenizer="):
        load_clip("vl-test-tiny-siglip")


def test_load_clip_siglip_logits(siglip, tmp_path):
    from vision_lens.models import load_clip

    clip, _ = siglip
    path = tmp_path / "siglip.pt"
    torch.save(clip.state_dict(), path)
    model, text = load_clip("vl-test-tiny-siglip", str(path), tokenizer=SIGLIP_TOKENIZER)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref, _ = clip.get_logits(images, SIGLIP_TOKENIZER(TEXTS[:3]))
        logits = text.classify(model(images), text.encode(TEXTS[:3]))
    assert (logits - ref).abs().max() <= 1e-4


def test_similarity_width_mismatch():
    with pytest.raises(ValueError) as err:
        CLIPText.similarity(torch.randn(2, 512), torch.randn(3, 768))
    assert str(err.value) == (
        "image embeddings have width 512 but text embeddings have width 768: were they produced "
        "by the same CLIP model?"
    )


def test_similarity_bad_inputs():
    with pytest.raises(TypeError, match="image_embeds must be a tensor"):
        CLIPText.similarity([[1.0, 2.0]], torch.randn(3, 2))
    with pytest.raises(ValueError, match="text_embeds must be"):
        CLIPText.similarity(torch.randn(2, 4), torch.randn(3, 1, 4))


# ------------------------------------------------------------------ metadata helpers
def test_imagenet_metadata():
    names = imagenet_classnames()
    assert len(names) == 1000 and names[0] == "tench"
    names.append("mutated")
    assert len(imagenet_classnames()) == 1000  # returns a copy
    openai, simple = imagenet_templates(), imagenet_templates("simple")
    assert len(openai) == 80 and len(simple) == 7
    assert openai[0]("dog") == "a bad photo of a dog."
    with pytest.raises(ValueError, match="Unknown template kind 'fancy'"):
        imagenet_templates("fancy")


# ------------------------------------------------------------------ errors
def test_encode_errors(tiny):
    _, _, text = tiny["vl-test-tiny"]
    with pytest.raises(ValueError, match="empty text list"):
        text.encode([])
    with pytest.raises(TypeError, match="index 1"):
        text.encode(["ok", 3, "ok"])
    with pytest.raises(TypeError, match="got a tensor"):
        text.encode(torch.zeros(2, 77, dtype=torch.long))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        text.encode(["ok"], batch_size=0)


def test_zero_shot_errors(tiny):
    _, _, text = tiny["vl-test-tiny"]
    with pytest.raises(ValueError, match="empty template list"):
        text.zero_shot_weights(["dog"], [])
    with pytest.raises(ValueError, match=r"Template 1 .* has no '\{\}' placeholder"):
        text.zero_shot_weights(["dog"], ["a photo of a {}.", "a photo."])
    with pytest.raises(ValueError, match="not a valid format string"):
        text.zero_shot_weights(["dog"], ["a photo of a {name}."])
    with pytest.raises(TypeError, match="Template 0 is int"):
        text.zero_shot_weights(["dog"], [3])
    with pytest.raises(TypeError, match="Template 0 returned NoneType"):
        text.zero_shot_weights(["dog"], [lambda c: None])
    with pytest.raises(ValueError, match="empty class name list"):
        text.zero_shot_weights([], ["a photo of a {}."])
    with pytest.raises(TypeError, match="index 0"):
        text.zero_shot_weights([1], ["a photo of a {}."])


def test_not_a_text_model(tiny):
    clip, _, _ = tiny["vl-test-tiny"]
    with pytest.raises(TypeError, match="image tower; pass the full CLIP model"):
        CLIPText.from_open_clip_model(clip.visual)
    with pytest.raises(TypeError, match="needs an open_clip CLIP model"):
        CLIPText.from_open_clip_model(torch.nn.Linear(2, 2))


def test_tokenizer_mismatch_errors(tiny_names, tiny):
    small = _make("vl-test-tiny-smallvocab")
    with pytest.raises(ValueError, match="vocabulary has 1000 tokens"):
        CLIPText.from_open_clip_model(small)
    # Forcing the CLIP tokenizer on it: clear error instead of an IndexError inside torch.
    text = CLIPText.from_open_clip_model(small, open_clip.SimpleTokenizer(context_length=77))
    with pytest.raises(ValueError, match="vocabulary has 1000 entries"):
        text.encode("a photo of a dog")
    clip, _, _ = tiny["vl-test-tiny"]
    short = CLIPText.from_open_clip_model(clip, open_clip.SimpleTokenizer(context_length=16))
    with pytest.raises(ValueError, match="sequences of 16 tokens .* context length is 77"):
        short.encode("a photo of a dog")


def test_from_open_clip_bad_sources(tiny_names, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        CLIPText.from_open_clip("vl-test-tiny", pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="neither an open_clip pretrained tag"):
        CLIPText.from_open_clip("ViT-B-32", pretrained="not_a_tag")
    with pytest.raises(ValueError, match="Did you mean"):
        CLIPText.from_open_clip("ViT-B-23")
    with pytest.raises(ValueError, match="already names its weights"):
        CLIPText.from_open_clip("hf-hub:org/repo", pretrained="openai")
