"""CLIPText on Hugging Face ``transformers`` CLIP and SigLIP models, and ``load_clip_hf``.

Random tiny models built from config objects, and tokenizers built offline (a ``CLIPTokenizer``
from a tiny vocab.json/merges.txt; a word-level ``PreTrainedTokenizerFast`` standing in for
SigLIP's SentencePiece tokenizer, returning ``input_ids`` only as SigLIP's does). ``encode`` must
equal ``get_text_features(**tokenizer(texts, padding=..., return_tensors="pt"))`` and the two
towers from ``load_clip_hf`` must give the model's ``logits_per_image``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
import transformers as tf
from support.arch_hf import TINY_TOWER, TINY_VISION
from tokenizers import Tokenizer, models, pre_tokenizers, processors

from vision_lens.hooked_vit import HookedViT
from vision_lens.loading.open_clip import UnsupportedModelError
from vision_lens.models import load_clip_hf
from vision_lens.text import HF_TEXT_CLASSES, CLIPText

WORDS = ["a", "photo", "of", "the", "dog", "cat", "drawing", "bird", "red", "blue", "car"]
TEXTS = [
    "a photo of a dog",
    "a photo of the cat",
    "",
    "a red car " * 10,  # longer than the context length: truncated
    "a drawing of a blue bird",
    "a photo of a dog",  # duplicate: same row as the first
]
CONTEXT = 16
TOL = 1e-4

# support.arch_hf's tiny towers with two blocks; the image tower on 32 x 32 images.
_TEXT = dict(TINY_TOWER, num_hidden_layers=2, max_position_embeddings=CONTEXT)
_VISION = dict(TINY_VISION, num_hidden_layers=2, image_size=32)


# ------------------------------------------------------------------ tokenizers and models
@pytest.fixture(scope="module")
def clip_tokenizer(tmp_path_factory):
    """A real ``CLIPTokenizer`` (BPE) over a tiny vocabulary written to disk."""
    tmp = tmp_path_factory.mktemp("clip_tok")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for word in WORDS:
        vocab[f"{word}</w>"] = len(vocab)
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(f"{c}</w>", len(vocab))
    merges = ["#version: 0.2"]
    for word in WORDS:  # merge each word left to right, so it becomes one token
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            merges.append(f"{pieces[0]} {pieces[1]}")
            vocab.setdefault(merged, len(vocab))
            pieces = [merged] + pieces[2:]
    (tmp / "vocab.json").write_text(json.dumps(vocab))
    (tmp / "merges.txt").write_text("\n".join(dict.fromkeys(merges)) + "\n")
    tok = tf.CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"))
    tok.model_max_length = CONTEXT
    return tok


@pytest.fixture(scope="module")
def siglip_tokenizer():
    """A word-level fast tokenizer with SigLIP's conventions: ``</s>`` appended, pad id 0,
    ``input_ids`` only (no attention mask)."""
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return tf.PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_input_names=["input_ids"],
        model_max_length=CONTEXT,
    )


def _perturb_(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Randomise the constant-initialised parameters (norms, logit scale/bias)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name in ("logit_scale", "logit_bias"):
                p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _clip_config(tokenizer) -> tf.CLIPConfig:
    ids = dict(bos_token_id=0, eos_token_id=1, pad_token_id=1)
    text = dict(_TEXT, vocab_size=len(tokenizer), projection_dim=24, **ids)
    return tf.CLIPConfig(text_config=text, vision_config=_VISION, projection_dim=24)


def _siglip_config(tokenizer) -> tf.SiglipConfig:
    return tf.SiglipConfig(
        text_config=dict(_TEXT, vocab_size=len(tokenizer)), vision_config=_VISION
    )


@pytest.fixture(scope="module")
def clip_model(clip_tokenizer):
    torch.manual_seed(0)
    return _perturb_(tf.CLIPModel(_clip_config(clip_tokenizer)), seed=0)


@pytest.fixture(scope="module")
def siglip_model(siglip_tokenizer):
    torch.manual_seed(1)
    model = _perturb_(tf.SiglipModel(_siglip_config(siglip_tokenizer)), seed=1)
    with torch.no_grad():  # trained-like values (SigLIP initialises both to zero here)
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-2.5)
    return model


@pytest.fixture(scope="module")
def pairs(clip_model, clip_tokenizer, siglip_model, siglip_tokenizer):
    """family -> (HF model, tokenizer, reference padding)."""
    return {
        "clip": (clip_model, clip_tokenizer, True),
        "siglip": (siglip_model, siglip_tokenizer, "max_length"),
    }


def _reference(model, tokenizer, texts, padding, normalize=True):
    inputs = tokenizer(texts, padding=padding, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model.get_text_features(**inputs)
    out = out if isinstance(out, torch.Tensor) else out.pooler_output
    return F.normalize(out, dim=-1) if normalize else out


def _images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ encode == transformers
@pytest.mark.parametrize("family", ["clip", "siglip"])
@pytest.mark.parametrize("normalize", [True, False])
def test_encode_matches_get_text_features(pairs, family, normalize):
    model, tokenizer, padding = pairs[family]
    text = CLIPText.from_hf(model, tokenizer)
    assert text.source == "hf" and text.model is model
    out = text.encode(TEXTS, normalize=normalize)
    ref = _reference(model, tokenizer, TEXTS, padding, normalize=normalize)
    assert out.shape == ref.shape == (len(TEXTS), text.d_embed)
    assert (out - ref).abs().max() <= 1e-6
    assert (out[0] - out[-1]).abs().max() <= 1e-6
    assert not torch.allclose(out[0], out[1])
    assert not out.requires_grad
    assert text.context_length == CONTEXT


def test_d_embed_and_logit_parameters(pairs):
    clip = CLIPText.from_hf(pairs["clip"][0], pairs["clip"][1])
    siglip = CLIPText.from_hf(pairs["siglip"][0], pairs["siglip"][1])
    assert clip.d_embed == 24 and siglip.d_embed == 32
    assert clip.logit_scale == pytest.approx(pairs["clip"][0].logit_scale.exp().item())
    assert clip.logit_bias is None and not clip.uses_sigmoid
    assert siglip.logit_scale == pytest.approx(pairs["siglip"][0].logit_scale.exp().item())
    assert siglip.logit_bias == pytest.approx(pairs["siglip"][0].logit_bias.item())
    assert siglip.logit_bias == pytest.approx(-2.5) and siglip.uses_sigmoid


def test_siglip_pads_to_max_length(pairs):
    # SigLIP attends to its padding (no attention mask): the padding choice changes embeddings,
    # and the default is the one it was trained with.
    model, tokenizer, _ = pairs["siglip"]
    text = CLIPText.from_hf(model, tokenizer)
    assert text._backend.padding == "max_length"
    longest = _reference(model, tokenizer, TEXTS[:2], padding=True)
    assert (text.encode(TEXTS[:2]) - longest).abs().max() > 1e-3
    forced = CLIPText.from_hf(model, tokenizer, padding=True)
    assert (forced.encode(TEXTS[:2]) - longest).abs().max() <= 1e-6


def test_batching_and_zero_shot_weights(pairs):
    model, tokenizer, padding = pairs["clip"]
    text = CLIPText.from_hf(model, tokenizer)
    assert (text.encode(TEXTS, batch_size=2) - text.encode(TEXTS)).abs().max() <= 1e-5
    weights = text.zero_shot_weights(["dog", "cat"], ["a photo of a {}", "a drawing of a {}"])
    emb = _reference(model, tokenizer, ["a photo of a dog", "a drawing of a dog"], padding)
    mean = emb.mean(0)
    assert (weights[0] - mean / mean.norm()).abs().max() <= 1e-5


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_text_only_classes(pairs, family):
    model, tokenizer, padding = pairs[family]
    if family == "clip":
        text_model = tf.CLIPTextModelWithProjection(model.config.text_config)
        missing = text_model.load_state_dict(model.state_dict(), strict=False).missing_keys
        assert not missing
    else:
        text_model = model.text_model  # a SiglipTextModel
        assert isinstance(text_model, tf.SiglipTextModel)
    text = CLIPText.from_hf(text_model.eval(), tokenizer)
    inputs = tokenizer(TEXTS, padding=padding, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = text_model(**inputs)
    ref = out.text_embeds if family == "clip" else out.pooler_output
    assert (text.encode(TEXTS, normalize=False) - ref).abs().max() <= 1e-6
    assert (text.encode(TEXTS) - _reference(model, tokenizer, TEXTS, padding)).abs().max() <= 1e-6
    with pytest.raises(ValueError, match="has no logit_scale; it belongs to the full model"):
        text.classify(torch.randn(2, text.d_embed), text.encode(TEXTS[:2]))


def test_callable_tokenizer(pairs):
    model, tokenizer, padding = pairs["clip"]

    def ids_only(texts):
        return tokenizer(texts, padding=padding, return_tensors="pt")["input_ids"]

    text = CLIPText.from_hf(model, ids_only)
    ref = _reference(model, tokenizer, TEXTS[:3], padding)
    assert (text.encode(TEXTS[:3]) - ref).abs().max() <= 1e-6


def test_device_dtype(pairs):
    model, tokenizer, padding = pairs["siglip"]
    copy = tf.SiglipModel(model.config)
    copy.load_state_dict(model.state_dict())
    text = CLIPText.from_hf(copy, tokenizer, dtype=torch.float64, device="cpu")
    assert text.dtype == torch.float64 and text.device == torch.device("cpu")
    out = text.encode(TEXTS[:3])
    assert out.dtype == torch.float64
    assert (out.float() - _reference(model, tokenizer, TEXTS[:3], padding)).abs().max() <= 1e-5


# ------------------------------------------------------------------ loading from disk
@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_from_hf_directory(pairs, family, tmp_path):
    model, tokenizer, padding = pairs[family]
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    text = CLIPText.from_hf(str(tmp_path))
    assert type(text.model) is type(model)
    assert text.model.vision_model is None  # image tower dropped
    assert not text.training
    ref = _reference(model, tokenizer, TEXTS, padding)
    assert (text.encode(TEXTS) - ref).abs().max() <= 1e-6
    assert text.logit_scale == pytest.approx(model.logit_scale.exp().item())
    # A tokenizer passed explicitly wins; a pathlib.Path works too.
    explicit = CLIPText.from_hf(tmp_path, tokenizer)
    assert (explicit.encode(TEXTS) - ref).abs().max() <= 1e-6


def test_from_hf_directory_without_tokenizer(pairs, tmp_path):
    pairs["clip"][0].save_pretrained(tmp_path)
    with pytest.raises(OSError, match="Cannot load a tokenizer .* no tokenizer files"):
        CLIPText.from_hf(str(tmp_path))
    text = CLIPText.from_hf(str(tmp_path), pairs["clip"][1])  # tokenizer given: fine
    assert text.d_embed == 24


# ------------------------------------------------------------------ load_clip_hf: both towers
@pytest.mark.parametrize("family", ["clip", "siglip"])
@pytest.mark.parametrize("from_disk", [False, True], ids=["model", "directory"])
def test_load_clip_hf_logits_match(pairs, family, from_disk, tmp_path):
    model, tokenizer, padding = pairs[family]
    if from_disk:
        model.save_pretrained(tmp_path)
        tokenizer.save_pretrained(tmp_path)
        hooked, text = load_clip_hf(str(tmp_path))
        assert text.model is not model and text.model.vision_model is None
    else:
        hooked, text = load_clip_hf(model, tokenizer)
        assert text.model is model and model.vision_model is not None  # caller's model intact
    assert isinstance(hooked, HookedViT)
    images = _images()
    prompts = TEXTS[:4]
    inputs = tokenizer(prompts, padding=padding, truncation=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(pixel_values=images, **inputs)
        features = model.get_image_features(pixel_values=images)
        image_embeds = hooked(images)
    features = features if isinstance(features, torch.Tensor) else features.pooler_output
    assert (image_embeds - features).abs().max() <= TOL
    logits = text.classify(image_embeds, text.encode(prompts))
    assert logits.shape == (3, 4)
    err = (logits - ref.logits_per_image).abs().max().item()
    assert err <= TOL, f"{family}: logits max abs error {err:.3g}"
    probs = text.probabilities(image_embeds, text.encode(prompts))
    expected = (
        ref.logits_per_image.sigmoid() if family == "siglip" else ref.logits_per_image.softmax(-1)
    )
    assert (probs - expected).abs().max() <= TOL
    if family == "clip":
        assert torch.allclose(probs.sum(-1), torch.ones(3), atol=1e-6)


def test_load_clip_hf_dtype(pairs):
    model, tokenizer, _ = pairs["clip"]
    copy = tf.CLIPModel(model.config)
    copy.load_state_dict(model.state_dict())
    hooked, text = load_clip_hf(copy.eval(), tokenizer, dtype=torch.float64)
    assert text.dtype == torch.float64
    assert next(hooked.parameters()).dtype == torch.float64
    logits = text.classify(hooked(_images().double()), text.encode(TEXTS[:2]))
    assert logits.dtype == torch.float64


# ------------------------------------------------------------------ errors
def _dinov2():
    return tf.Dinov2Model(
        tf.Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=28)
    )


def test_model_without_text_tower_is_refused(pairs, tmp_path):
    with pytest.raises(UnsupportedModelError) as err:
        CLIPText.from_hf(_dinov2())
    message = str(err.value)
    assert message.startswith("Dinov2Model has no text tower CLIPText supports")
    assert all(name in message for name in HF_TEXT_CLASSES)
    assert isinstance(err.value, ValueError)
    vision = tf.CLIPVisionModel(pairs["clip"][0].config.vision_config)
    with pytest.raises(UnsupportedModelError, match="CLIPVisionModel has no text tower"):
        CLIPText(vision, pairs["clip"][1])
    plain_text = tf.CLIPTextModel(pairs["clip"][0].config.text_config)
    with pytest.raises(UnsupportedModelError, match="load it as CLIPTextModelWithProjection"):
        CLIPText.from_hf(plain_text, pairs["clip"][1])
    _dinov2().save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="is a Dinov2Model checkpoint"):
        CLIPText.from_hf(str(tmp_path))
    with pytest.raises(UnsupportedModelError, match="is a Dinov2Model checkpoint"):
        load_clip_hf(str(tmp_path))
    with pytest.raises(UnsupportedModelError, match="Dinov2Model has no text tower"):
        load_clip_hf(_dinov2())


def test_load_clip_hf_needs_both_towers(pairs, tmp_path):
    text_model = tf.SiglipTextModel(pairs["siglip"][0].config.text_config)
    with pytest.raises(UnsupportedModelError, match="needs both towers.*got SiglipTextModel"):
        load_clip_hf(text_model, pairs["siglip"][1])
    text_model.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="SiglipTextModel checkpoint"):
        load_clip_hf(str(tmp_path))


def test_missing_tokenizer_for_built_model(pairs):
    with pytest.raises(ValueError, match="No tokenizer given for this CLIPModel"):
        CLIPText.from_hf(pairs["clip"][0])


def test_encode_errors_hf(pairs):
    model, tokenizer, _ = pairs["siglip"]
    text = CLIPText.from_hf(model, tokenizer)
    with pytest.raises(ValueError, match="empty text list"):
        text.encode([])
    with pytest.raises(TypeError, match="index 1"):
        text.encode(["ok", 3])
    with pytest.raises(ValueError, match="empty class name list"):
        text.zero_shot_weights([], ["a photo of a {}"])
    bad = CLIPText.from_hf(model, lambda texts: torch.zeros(len(texts) + 1, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="for 1 texts it returned \\(2, 2\\)"):
        bad.encode("a dog")
    wrong_vocab = CLIPText.from_hf(model, lambda texts: torch.full((len(texts), 4), 10_000))
    with pytest.raises(ValueError, match="vocabulary has 14 entries"):
        wrong_vocab.encode("a dog")
    too_long = CLIPText.from_hf(model, lambda texts: torch.zeros(len(texts), 40, dtype=torch.long))
    with pytest.raises(ValueError, match="sequences of 40 tokens .* needs at most 16"):
        too_long.encode("a dog")
    with pytest.raises(TypeError, match="an input-id tensor or a mapping.*returned str"):
        CLIPText.from_hf(model, lambda texts: "nope").encode("a dog")


def test_bad_arguments(pairs, tmp_path):
    model, tokenizer, _ = pairs["clip"]
    with pytest.raises(TypeError, match="need a name or path"):
        CLIPText.from_hf(model, tokenizer, revision="main")
    with pytest.raises(TypeError, match="need a name or path"):
        load_clip_hf(model, tokenizer, revision="main")
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code=True refused"):
        CLIPText.from_hf(str(tmp_path), tokenizer, trust_remote_code=True)
    with pytest.raises(TypeError, match="padding= applies to Hugging Face models only"):
        CLIPText(torch.nn.Linear(2, 2), padding=True)


def test_logit_scale_matches_math(pairs):
    model, tokenizer, _ = pairs["siglip"]
    text = CLIPText.from_hf(model, tokenizer)
    assert math.isclose(text.logit_scale, math.exp(model.logit_scale.item()), rel_tol=1e-6)
