"""Registry of small random Hugging Face ``transformers`` ViTs for the HF loader tests.

``HF_ROWS`` is a list of ``(label, builder)``; ``builder()`` returns a freshly built model in
eval mode (random weights, no downloads) whose constant-initialised parameters (norm weights and
biases, layer scales, class/register/probe tokens) are perturbed, so that a conversion that drops
or misplaces one of them changes the output. ``hf_reference(model, x)`` gives the output a
converted HookedViT must reproduce and the per-block residual streams.

Import as ``from arch_hf import HF_ROWS, hf_reference`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import transformers as tf
from torch import Tensor, nn

# Shared small sizes: every row builds and runs in well under a second on CPU.
_VIT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
# A tiny one-block tower (width 32: 2 heads of 16, an MLP of 64). The base of the two configs
# below, which tests that only build, save or refuse a model use too.
TINY_TOWER = dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=1)
# An image tower on 16 x 16 images (2 x 2 patches): a ViTConfig, DeiTConfig or SiglipVisionConfig.
TINY_VISION = dict(TINY_TOWER, image_size=16, patch_size=8)
# Token ids inside the tiny vocabulary (CLIP's defaults, 49406/49407, are not).
_TOKEN_IDS = dict(bos_token_id=0, eos_token_id=2, pad_token_id=1)
# A text tower over 99 tokens: the text side of the CLIP and SigLIP rows.
TINY_TEXT = dict(TINY_TOWER, vocab_size=99, max_position_embeddings=16, **_TOKEN_IDS)

# Token parameters (class, distillation, register, probe, mask) that perturb_ re-draws.
_TOKEN_NAMES = (
    "class_embedding",
    "cls_token",
    "distillation_token",
    "register_tokens",
    "probe",
    "mask_token",
)


@torch.no_grad()
def perturb_(model: nn.Module, seed: int = 1) -> nn.Module:
    """Randomise, in place, the parameters transformers initialises to constants."""
    gen = torch.Generator().manual_seed(seed)

    def noise(p: Tensor, std: float) -> Tensor:
        return (torch.randn(p.shape, generator=gen, dtype=torch.float64) * std).to(p.dtype)

    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            module.weight.copy_(1 + noise(module.weight, 0.2))
            module.bias.copy_(noise(module.bias, 0.1))
    norm_params = {
        id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()
    }
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if id(param) in norm_params:
            continue
        if leaf == "lambda1":  # DINOv2 layer scale
            param.copy_(noise(param, 0.5))
        elif leaf in _TOKEN_NAMES:
            param.copy_(noise(param, 0.5))
        elif leaf == "position_embeddings":  # DeiT initialises them to zeros
            param.add_(noise(param, 0.1))
        elif leaf.endswith("bias"):
            param.add_(noise(param, 0.1))
    return model


def _build(make: Callable[[], nn.Module], seed: int = 0) -> Callable[[], nn.Module]:
    def builder() -> nn.Module:
        torch.manual_seed(seed)
        return perturb_(make(), seed=seed + 1).eval()

    return builder


def _clip_vision(**kw) -> tf.CLIPVisionConfig:
    return tf.CLIPVisionConfig(
        **_VIT, intermediate_size=128, image_size=32, patch_size=8, projection_dim=24, **kw
    )


def _siglip_vision(**kw) -> tf.SiglipVisionConfig:
    return tf.SiglipVisionConfig(**_VIT, intermediate_size=128, image_size=32, patch_size=8, **kw)


def _dinov2(cls=tf.Dinov2Config, **kw):
    return cls(**_VIT, mlp_ratio=2, image_size=28, patch_size=7, **kw)


def _vit(cls=tf.ViTConfig, **kw):
    kw.setdefault("image_size", 32)
    return cls(**_VIT, intermediate_size=128, patch_size=8, num_labels=10, **kw)


HF_ROWS: list[tuple[str, Callable[[], nn.Module]]] = [
    (
        "clip-vision-proj-gelu",
        _build(lambda: tf.CLIPVisionModelWithProjection(_clip_vision(hidden_act="gelu"))),
    ),
    # HF CLIP's default activation is quick_gelu (OpenAI CLIP).
    ("clip-vision-quickgelu", _build(lambda: tf.CLIPVisionModel(_clip_vision()))),
    (
        "clip-model",
        _build(
            lambda: tf.CLIPModel(
                tf.CLIPConfig(
                    text_config=TINY_TEXT,
                    vision_config=_clip_vision().to_dict(),
                    projection_dim=24,
                )
            )
        ),
    ),
    ("siglip-vision", _build(lambda: tf.SiglipVisionModel(_siglip_vision()))),
    (
        "siglip-model",
        _build(
            lambda: tf.SiglipModel(
                tf.SiglipConfig(text_config=TINY_TEXT, vision_config=_siglip_vision().to_dict())
            )
        ),
    ),
    ("dinov2", _build(lambda: tf.Dinov2Model(_dinov2()))),
    ("dinov2-swiglu", _build(lambda: tf.Dinov2Model(_dinov2(use_swiglu_ffn=True)))),
    (
        "dinov2-registers",
        _build(
            lambda: tf.Dinov2WithRegistersModel(
                _dinov2(tf.Dinov2WithRegistersConfig, num_register_tokens=4)
            )
        ),
    ),
    ("vit-classifier", _build(lambda: tf.ViTForImageClassification(_vit()))),
    (
        "vit-classifier-nonsquare",
        _build(lambda: tf.ViTForImageClassification(_vit(image_size=[32, 48]))),
    ),
    # No query/key/value biases: the converter fills zeros.
    (
        "vit-model-nopool",
        _build(lambda: tf.ViTModel(_vit(qkv_bias=False), add_pooling_layer=False)),
    ),
    ("deit-classifier", _build(lambda: tf.DeiTForImageClassification(_vit(tf.DeiTConfig)))),
    (
        "deit-teacher",
        _build(lambda: tf.DeiTForImageClassificationWithTeacher(_vit(tf.DeiTConfig))),
    ),
]


def image_size(model: nn.Module) -> tuple[int, int]:
    """The native input size of a row's model."""
    config = model.config
    config = getattr(config, "vision_config", config)
    size = config.image_size
    return (size, size) if isinstance(size, int) else tuple(size)


@torch.no_grad()
def hf_reference(model: nn.Module, x: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``(output, hidden_states)`` of a row's model on pixels ``x``.

    ``output`` is what the converted HookedViT returns (see ``vision_lens.loading.hf``);
    ``hidden_states[i + 1]`` is the residual stream after block ``i`` (``hidden_states[0]`` is
    the input of block 0: after CLIP's ``pre_layrnorm``).
    """
    name = type(model).__name__
    if name in ("CLIPModel", "SiglipModel"):
        out = model.get_image_features(pixel_values=x)
        # transformers 5 returns a ModelOutput whose pooler_output is the image feature.
        out = out if isinstance(out, Tensor) else out.pooler_output
        hidden = model.vision_model(pixel_values=x, output_hidden_states=True).hidden_states
        return out, hidden
    result = model(pixel_values=x, output_hidden_states=True)
    if name == "CLIPVisionModelWithProjection":
        out = result.image_embeds
    elif name.endswith("ForImageClassification") or name.endswith("WithTeacher"):
        out = result.logits
    elif name in ("ViTModel", "DeiTModel"):
        out = result.last_hidden_state[:, 0]
    else:
        out = result.pooler_output
    return out, result.hidden_states
