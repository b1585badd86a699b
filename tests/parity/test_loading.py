"""Loading HookedViT from open_clip: names, local checkpoints, OpenAI format, refusals."""

from __future__ import annotations

import open_clip
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from support.oc_helpers import build_visual, images, max_err, perturb_, vision_config
from torch import nn

import vision_lens as vl
from vision_lens.loading.open_clip import check_open_clip_config

F32_TOL = 1e-5
MISSING = "does not exist|neither an existing checkpoint file"


@pytest.fixture(scope="module")
def clip_b32():
    """A random open_clip ViT-B-32 CLIP (text tower included), with perturbed constants."""
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-32").eval()
    perturb_(clip.visual, seed=2)
    return clip


@pytest.fixture(scope="module")
def x2():
    return images(2, 224, seed=7)


@pytest.fixture(scope="module")
def reference(clip_b32, x2):
    with torch.no_grad():
        return clip_b32.encode_image(x2)


@pytest.fixture(scope="module")
def checkpoints(clip_b32, tmp_path_factory):
    """The same weights saved as .pt, .safetensors and a training-style {"state_dict": ...}."""
    root = tmp_path_factory.mktemp("ckpt")
    state = clip_b32.state_dict()
    paths = {
        "pt": root / "vit_b32.pt",
        "safetensors": root / "vit_b32.safetensors",
        "wrapped": root / "vit_b32_epoch3.pt",
    }
    torch.save(state, paths["pt"])
    # safetensors refuses tensors that share storage; CLIP has none, but be explicit.
    save_file({k: v.contiguous().clone() for k, v in state.items()}, paths["safetensors"])
    torch.save({"epoch": 3, "state_dict": state}, paths["wrapped"])
    return paths


# ----------------------------------------------------------------------------- in-memory
@torch.no_grad()
def test_from_open_clip_model_matches_encode_image(clip_b32, x2, reference):
    model = vl.HookedViT.from_open_clip_model(clip_b32)
    assert reference.std() > 0.1
    assert max_err(model(x2), reference) <= F32_TOL
    # Normalised embeddings (what zero-shot classification uses) too.
    normed = clip_b32.encode_image(x2, normalize=True)
    assert max_err(nn.functional.normalize(model(x2), dim=-1), normed) <= F32_TOL


@torch.no_grad()
def test_from_open_clip_random_weights():
    model = vl.HookedViT.from_open_clip("ViT-B-32")
    cfg = model.cfg
    assert isinstance(model, vl.HookedViT)
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_mlp, cfg.d_embed) == (
        12,
        768,
        12,
        3072,
        512,
    )
    assert (cfg.image_size, cfg.patch_size, cfg.act_fn) == ((224, 224), (32, 32), "gelu")
    assert cfg.model_name == "ViT-B-32"
    assert not model.training
    assert model(images(1, 224)).shape == (1, 512)


def test_from_open_clip_dtype():
    model = vl.HookedViT.from_open_clip("ViT-B-32", dtype=torch.float64)
    assert model.dtype == torch.float64 == model.cfg.dtype
    assert all(p.dtype == torch.float64 for p in model.parameters())
    with torch.no_grad():
        assert model(images(1, 224)).dtype == torch.float64


# ------------------------------------------------------------------------------ local files
@pytest.mark.parametrize("kind", ["pt", "safetensors", "wrapped"])
@torch.no_grad()
def test_from_open_clip_local_checkpoint(kind, checkpoints, x2, reference):
    path = checkpoints[kind]
    model = vl.HookedViT.from_open_clip("ViT-B-32", pretrained=str(path))
    assert max_err(model(x2), reference) <= F32_TOL
    assert str(path) in model.cfg.model_name


@torch.no_grad()
def test_checkpoint_path_as_pathlib_and_relative(checkpoints, x2, reference, monkeypatch):
    path = checkpoints["pt"]
    model = vl.HookedViT.from_open_clip("ViT-B-32", pretrained=path)  # pathlib.Path
    assert max_err(model(x2), reference) <= F32_TOL
    monkeypatch.chdir(path.parent)
    model = vl.HookedViT.from_open_clip("ViT-B-32", pretrained=path.name)  # "vit_b32.pt"
    assert max_err(model(x2), reference) <= F32_TOL


def test_missing_checkpoint_is_a_clear_file_not_found(tmp_path, monkeypatch):
    missing = tmp_path / "nope" / "model.safetensors"
    with pytest.raises(FileNotFoundError, match=MISSING) as info:
        vl.HookedViT.from_open_clip("ViT-B-32", pretrained=str(missing))
    assert str(missing) in str(info.value) and "laion2b_s34b_b79k" in str(info.value)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=MISSING):
        vl.HookedViT.from_open_clip("ViT-B-32", pretrained="model.pt")  # relative, no "/"


@torch.no_grad()
def test_openai_format_checkpoint(clip_b32, tmp_path):
    """OpenAI's checkpoints (ViT-B-32 'openai' tag) are a QuickGELU CLIP in OpenAI's key layout;
    open_clip.load_openai_model reads them. Use a random one saved locally."""
    torch.manual_seed(4)
    source = open_clip.create_model("ViT-B-32-quickgelu").eval()
    perturb_(source.visual, seed=5)
    path = tmp_path / "openai_vit_b32.pt"
    torch.save(source.state_dict(), path)
    loaded = open_clip.load_openai_model(str(path), precision="fp32", device="cpu").eval()
    model = vl.HookedViT.from_open_clip_model(loaded)
    assert model.cfg.act_fn == "quick_gelu"
    x = images(2, 224, seed=8)
    assert max_err(model(x), loaded.encode_image(x)) <= F32_TOL


# ----------------------------------------------------------------------------- preprocess
@torch.no_grad()
def test_preprocess_maps_pil_to_model_input(clip_b32):
    model = vl.HookedViT.from_open_clip_model(clip_b32)
    assert callable(model.preprocess)
    rng = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (300, 400, 3), generator=rng, dtype=torch.uint8).numpy()
    tensor = model.preprocess(Image.fromarray(pixels))
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (3, 224, 224)
    assert tensor.dtype == torch.float32
    assert model(tensor[None]).shape == (1, 512)
    # Same transform as open_clip's own eval transform for this model.
    _, _, oc_preprocess = open_clip.create_model_and_transforms("ViT-B-32")
    assert torch.equal(tensor, oc_preprocess(Image.fromarray(pixels)))


def test_preprocess_of_a_visual_only_tower_uses_its_image_size():
    visual = build_visual("ViT-B-32", image_size=(160, 256), layers=1)
    model = vl.HookedViT.from_open_clip_model(visual)
    img = Image.new("RGB", (512, 400), color=(10, 200, 30))
    assert model.preprocess(img).shape == (3, 160, 256)


# ------------------------------------------------------------------ newly supported names
@pytest.mark.parametrize(
    "name, overrides, readout",
    [
        ("ViT-L-14-CLIPA", dict(layers=1, width=64, head_width=16, image_size=56), "avg"),
        ("ViT-B-32", dict(layers=1, width=64, head_width=16, image_size=64, qk_norm=True), "cls"),
    ],
)
@torch.no_grad()
def test_formerly_refused_towers_convert(name, overrides, readout):
    visual = build_visual(name, **overrides)
    model = vl.HookedViT.from_open_clip_model(visual)
    assert model.cfg.readout == readout
    x = images(2, visual.image_size, seed=3)
    assert max_err(model(x), visual(x)) <= F32_TOL
    check_open_clip_config(name)  # the config check agrees


def test_siglip_config_passes_the_config_check(monkeypatch):
    def no_build(*a, **k):
        raise AssertionError("the config check must not create the model")

    monkeypatch.setattr(open_clip, "create_model", no_build)
    check_open_clip_config("ViT-B-16-SigLIP")
    check_open_clip_config("EVA01-g-14")


# ---------------------------------------------------------------------------- refusals
@pytest.mark.parametrize(
    "name, phrase",
    [
        ("RN50", "ModifiedResNet"),
        ("RN50x4-quickgelu", "ModifiedResNet"),
        ("convnext_base", "timm ConvNeXt"),
        ("MobileCLIP-S1", "timm FastVit"),
        ("ViTamin-S", "hybrid"),
        ("EVA02-B-16", "mixes the heads"),
        ("coca_ViT-B-32", "attentional pooler"),
    ],
)
def test_unsupported_names_are_refused_from_the_config(name, phrase, monkeypatch):
    # The refusal must come from the config alone, before anything is built.
    def no_build(*a, **k):
        raise AssertionError("a model was built before refusing")

    monkeypatch.setattr(open_clip, "create_model", no_build)
    with pytest.raises(vl.UnsupportedModelError, match=phrase) as info:
        vl.HookedViT.from_open_clip(name)
    assert repr(name) in str(info.value)
    assert "HookedViT supports open_clip VisionTransformer" in str(info.value)  # what is
    with pytest.raises(vl.UnsupportedModelError):
        check_open_clip_config(name)


def test_custom_block_config_is_refused(monkeypatch):
    """No built-in config uses open_clip's custom blocks; fake one with an MLP LayerNorm
    (qk_norm and scale_heads are a plain block in disguise and convert)."""
    real = open_clip.get_model_config

    def fake(name):
        cfg = real("ViT-B-32")
        cfg["vision_cfg"]["scale_fc"] = True
        return cfg if name == "ViT-B-32-scalefc" else real(name)

    monkeypatch.setattr(open_clip, "get_model_config", fake)
    with pytest.raises(vl.UnsupportedModelError, match="MLPs have an inner LayerNorm"):
        vl.HookedViT.from_open_clip("ViT-B-32-scalefc")


@pytest.mark.parametrize(
    "overrides, phrase",
    [
        ({"scaled_cosine_attn": True}, "scaled cosine attention"),
        ({"scale_attn": True}, "post-attention LayerNorm"),
        ({"pool_type": "none"}, "pool_type='none'"),
        ({"attentional_pool": True}, "attentional pooler"),
    ],
    ids=["cosine", "scale_attn", "pool_none", "attn_pool"],
)
def test_unsupported_built_towers_are_refused(overrides, phrase):
    visual = build_visual("ViT-B-32", perturb=False, layers=1, **overrides)
    with pytest.raises(vl.UnsupportedModelError, match=phrase) as info:
        vl.HookedViT.from_open_clip_model(visual)
    assert "Cannot convert" in str(info.value)


def test_built_resnet_is_refused():
    embed_dim, vision_cfg, _ = vision_config("RN50")
    from open_clip.model import _build_vision_tower

    visual = _build_vision_tower(embed_dim, {**vision_cfg, "layers": [1, 1, 1, 1], "width": 8})
    with pytest.raises(vl.UnsupportedModelError, match="ModifiedResNet"):
        vl.HookedViT.from_open_clip_model(visual)


@pytest.mark.parametrize("module", [nn.Linear(3, 4), nn.Sequential()], ids=["linear", "seq"])
def test_non_clip_module_is_refused(module):
    with pytest.raises(vl.UnsupportedModelError, match="neither an open_clip CLIP"):
        vl.HookedViT.from_open_clip_model(module)


def test_unsupported_error_is_a_value_error():
    assert issubclass(vl.UnsupportedModelError, ValueError)
