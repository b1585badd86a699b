"""timm loader: every supported row matches timm exactly; everything else is refused by name.

The HookedViT checks import ``vision_lens.hooked_vit`` lazily so that collection does not depend
on the core model. ``_reference_forward`` is a minimal, independent reading of the HookedViT
state-dict format (see ``vision_lens/loading/timm.py``), so the converter is checked on its own
as well as through HookedViT.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from support.arch_timm import TIMM_ROWS, make_timm_model
from torch import Tensor, nn

from vision_lens.config import HookedViTConfig
from vision_lens.loading.base import LoadedTower
from vision_lens.loading.open_clip import UnsupportedModelError
from vision_lens.loading.timm import load_timm, timm_to_hooked

timm = pytest.importorskip("timm")

DTYPES = {"float32": torch.float32, "float64": torch.float64}
IDS = [row[0] for row in TIMM_ROWS]


def _tolerance(dtype: torch.dtype, ref: Tensor) -> float:
    if dtype == torch.float64:
        return 1e-10
    return 1e-5 * max(1.0, ref.abs().max().item())


def _images(cfg: HookedViTConfig, dtype: torch.dtype, batch: int = 2) -> Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(batch, 3, *cfg.image_size, generator=generator, dtype=torch.float64).to(
        dtype
    )


def _timm_run(model: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """timm's output and the residual stream after every block."""
    resids: list[Tensor] = []
    handles = [
        block.register_forward_hook(lambda _m, _i, out: resids.append(out.detach()))
        for block in model.blocks
    ]
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        for handle in handles:
            handle.remove()
    return out, resids


def _every_row(test):
    """Run ``test(row, dtype_name)`` on every row in float32 and float64, in the slow suite (the
    registry's tests/parity/test_parity.py runs these rows in the default suite)."""
    test = pytest.mark.parametrize("row", TIMM_ROWS, ids=IDS)(test)
    test = pytest.mark.parametrize("dtype_name", DTYPES)(test)
    return pytest.mark.slow(test)


class _Case(NamedTuple):
    """A row converted at one dtype, with test images and timm's output on them."""

    label: str
    dtype: torch.dtype
    tower: LoadedTower
    x: Tensor
    ref: Tensor
    ref_resids: list[Tensor]


def _case(row: tuple[str, str, dict], dtype_name: str) -> _Case:
    label, name, kwargs = row
    dtype = DTYPES[dtype_name]
    source = make_timm_model(name, kwargs, dtype)
    tower = timm_to_hooked(source, name)
    x = _images(tower.cfg, dtype)
    return _Case(label, dtype, tower, x, *_timm_run(source, x))


def _assert_matches_timm(case: _Case, out: Tensor, resids: list[Tensor]) -> None:
    """``out`` and the residual stream after every block equal timm's, within the tolerance."""
    assert out.shape == case.ref.shape
    assert (out - case.ref).abs().max().item() <= _tolerance(case.dtype, case.ref), case.label
    for layer, (got, want) in enumerate(zip(resids, case.ref_resids, strict=True)):
        error = (got - want).abs().max().item()
        assert error <= _tolerance(case.dtype, want), (case.label, layer)


# ---------------------------------------------------------------------------------------------
# An independent reading of the state-dict format.


def _norm(cfg: HookedViTConfig, sd: dict[str, Tensor], prefix: str, x: Tensor) -> Tensor:
    if cfg.norm_type == "RMS":
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + cfg.eps) * sd[f"{prefix}.w"]
    return F.layer_norm(x, x.shape[-1:], sd[f"{prefix}.w"], sd[f"{prefix}.b"], cfg.eps)


def _act(name: str, x: Tensor) -> Tensor:
    if name == "quick_gelu":
        return x * torch.sigmoid(1.702 * x)
    if name == "gelu_tanh":
        return F.gelu(x, approximate="tanh")
    return {"gelu": F.gelu, "silu": F.silu, "relu": F.relu}[name](x)


def _attend(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    scores = torch.einsum("bhqe,bhke->bhqk", q, k) / math.sqrt(q.shape[-1])
    z = torch.einsum("bhqk,bhke->bqhe", scores.softmax(-1), v)
    return z.flatten(2)


def _rope(layout: str, cos: Tensor, sin: Tensor, x: Tensor) -> Tensor:
    """Rotate channel pairs ``(a, b) -> (a cos - b sin, b cos + a sin)``; ``x`` is
    ``[batch, head, pos, d_head]``, the tables ``[1 or head, pos, d_head]`` (one angle per pair,
    repeated on both channels of the pair)."""
    if layout == "half":
        a, b = x.chunk(2, -1)
        c, s = cos.chunk(2, -1)[0], sin.chunk(2, -1)[0]
        return torch.cat([a * c - b * s, b * c + a * s], -1)
    a, b = x[..., 0::2], x[..., 1::2]
    c, s = cos[..., 0::2], sin[..., 0::2]
    return torch.stack([a * c - b * s, b * c + a * s], -1).flatten(-2)


def _reference_forward(
    cfg: HookedViTConfig, sd: dict[str, Tensor], x: Tensor
) -> tuple[Tensor, list[Tensor]]:
    patches = F.conv2d(x, sd["embed.W_E"], sd.get("embed.b_E"), stride=cfg.patch_size)
    patches = patches.flatten(2).transpose(1, 2)
    batch = x.shape[0]
    prefix = []
    for key in ("embed.cls_token", "embed.dist_token"):
        if key in sd:
            prefix.append(sd[key].expand(batch, 1, -1))
    if cfg.n_registers:
        prefix.append(sd["embed.registers"].expand(batch, -1, -1))
    h = torch.cat([*prefix, patches], dim=1) + sd["embed.W_pos"]
    if cfg.ln_pre:
        h = _norm(cfg, sd, "ln_pre", h)
    resids = []
    for layer in range(cfg.n_layers):
        p = f"blocks.{layer}"
        a = _norm(cfg, sd, f"{p}.ln1", h)
        qkv = torch.einsum("bpd,thed->tbhpe", a, sd[f"{p}.attn.qkv_weight"])
        q, k, v = qkv + sd[f"{p}.attn.qkv_bias"][:, None, :, None, :]
        if cfg.qk_norm:
            q = _norm(cfg, sd, f"{p}.attn.q_norm", q)
            k = _norm(cfg, sd, f"{p}.attn.k_norm", k)
        if cfg.rope is not None:
            tables = sd[f"{p}.attn.rope_cos"], sd[f"{p}.attn.rope_sin"]
            q, k = _rope(cfg.rope, *tables, q), _rope(cfg.rope, *tables, k)
        h = h + _attend(q, k, v) @ sd[f"{p}.attn.out_weight"].T + sd[f"{p}.attn.b_O"]
        m = _norm(cfg, sd, f"{p}.ln2", h)
        pre = m @ sd[f"{p}.mlp.in_weight"].T + sd[f"{p}.mlp.b_in"]
        if cfg.gated_mlp:
            gate = m @ sd[f"{p}.mlp.gate_weight"].T + sd[f"{p}.mlp.b_gate"]
            post = _act(cfg.act_fn, gate) * pre
        else:
            post = _act(cfg.act_fn, pre)
        if cfg.mlp_norm:
            post = _norm(cfg, sd, f"{p}.mlp.ln", post)
        h = h + post @ sd[f"{p}.mlp.out_weight"].T + sd[f"{p}.mlp.b_out"]
        resids.append(h)
    if not cfg.final_ln_after_pool:
        h = _norm(cfg, sd, "ln_final", h)
    b_proj = sd.get("b_proj", 0)
    if cfg.readout == "cls_dist":
        if cfg.dist_head:
            out = h[:, 0] @ sd["W_proj"] + b_proj + h[:, 1] @ sd["readout.W_dist"]
            return (out + sd.get("readout.b_dist", 0)) / 2, resids
        return ((h[:, 0] + h[:, 1]) / 2) @ sd["W_proj"], resids
    if cfg.readout == "cls":
        pooled = h[:, 0]
    elif cfg.readout == "avg":
        pooled = h[:, cfg.n_prefix :].mean(1)
    else:
        tokens = h  # the MAP head attends to every token (timm pool_include_prefix=True)
        w, b = sd["readout.attn.qkv_weight"], sd["readout.attn.qkv_bias"]
        latent = sd["readout.latent"].expand(batch, 1, -1)
        q = torch.einsum("bpd,hed->bhpe", latent, w[0]) + b[0][None, :, None]
        k = torch.einsum("bpd,hed->bhpe", tokens, w[1]) + b[1][None, :, None]
        v = torch.einsum("bpd,hed->bhpe", tokens, w[2]) + b[2][None, :, None]
        z = _attend(q, k, v) @ sd["readout.attn.out_weight"].T + sd["readout.attn.b_O"]
        m = _norm(cfg, sd, "readout.ln", z)
        hidden = _act(
            cfg.readout_act_fn, m @ sd["readout.mlp.in_weight"].T + sd["readout.mlp.b_in"]
        )
        pooled = (z + hidden @ sd["readout.mlp.out_weight"].T + sd["readout.mlp.b_out"])[:, 0]
    if cfg.final_ln_after_pool:
        pooled = _norm(cfg, sd, "ln_final", pooled)
    return pooled @ sd["W_proj"] + b_proj, resids


# ---------------------------------------------------------------------------------------------
# Converter checks (no HookedViT needed).


@_every_row
def test_state_dict_reproduces_timm(row, dtype_name):
    case = _case(row, dtype_name)
    cfg, sd, _ = case.tower
    assert cfg.dtype == case.dtype
    assert all(t.dtype == case.dtype for t in sd.values())
    with torch.no_grad():
        out, resids = _reference_forward(cfg, sd, case.x)
    _assert_matches_timm(case, out, resids)


def test_config_read_from_modules():
    model = make_timm_model("vit_small_patch14_reg4_dinov2", dict(depth=2, img_size=56))
    cfg = timm_to_hooked(model).cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_head) == (2, 384, 6, 64)
    assert (cfg.image_size, cfg.patch_size, cfg.n_registers) == ((56, 56), (14, 14), 4)
    assert cfg.class_token and not cfg.dist_token and cfg.readout == "cls"
    assert cfg.eps == 1e-6 and cfg.patch_bias and not cfg.ln_pre
    assert cfg.model_name == "vit_small_patch14_reg4_dinov2"

    swiglu = make_timm_model(
        "vit_small_patch14_dinov2", TIMM_ROWS[IDS.index("dinov2 giant-style SwiGLUPacked")][2]
    )
    cfg = timm_to_hooked(swiglu).cfg
    assert cfg.gated_mlp and cfg.act_fn == "silu" and cfg.d_mlp == 1024

    clip = make_timm_model("vit_base_patch16_clip_quickgelu_224", dict(depth=1, img_size=32))
    cfg = timm_to_hooked(clip).cfg
    assert cfg.ln_pre and not cfg.patch_bias and cfg.act_fn == "quick_gelu" and cfg.eps == 1e-5

    siglip = make_timm_model("vit_base_patch16_siglip_224", dict(depth=1, img_size=32))
    cfg = timm_to_hooked(siglip).cfg
    assert cfg.readout == "map" and not cfg.class_token
    assert (cfg.readout_n_heads, cfg.readout_d_mlp, cfg.readout_act_fn) == (12, 3072, "gelu")


def test_layer_scale_is_folded():
    model = make_timm_model("deit3_small_patch16_224", dict(depth=1, img_size=32))
    sd = timm_to_hooked(model).state_dict
    block = model.blocks[0]
    torch.testing.assert_close(
        sd["blocks.0.attn.out_weight"], block.attn.proj.weight * block.ls1.gamma[:, None]
    )
    torch.testing.assert_close(sd["blocks.0.mlp.b_out"], block.mlp.fc2.bias * block.ls2.gamma)
    assert not any("gamma" in key or "ls1" in key for key in sd)


def test_no_embed_class_prefix_rows_are_zero():
    model = make_timm_model(
        "vit_small_patch16_224", dict(depth=1, img_size=32, no_embed_class=True, reg_tokens=2)
    )
    w_pos = timm_to_hooked(model).state_dict["embed.W_pos"]
    assert w_pos.shape == (3 + 4, 384)
    assert (w_pos[:3] == 0).all()
    torch.testing.assert_close(w_pos[3:], model.pos_embed[0].detach())


def test_state_dict_is_a_copy():
    model = make_timm_model("test_vit", dict(img_size=32))
    sd = timm_to_hooked(model).state_dict
    sd["embed.W_E"].zero_()
    assert model.patch_embed.proj.weight.abs().sum() > 0


def test_preprocess_matches_image_size():
    from PIL import Image

    tower = load_timm("test_vit", img_size=48)
    assert isinstance(tower, LoadedTower)
    image = Image.new("RGB", (90, 70), color=(200, 30, 60))
    assert tuple(tower.preprocess(image).shape) == (3, 48, 48)


def test_load_timm_from_local_checkpoint(tmp_path):
    kwargs = dict(depth=1, img_size=32, num_classes=0)
    source = make_timm_model("vit_small_patch16_224", kwargs)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    cfg, sd, _ = load_timm("vit_small_patch16_224", pretrained=str(path), **kwargs)
    expected = timm_to_hooked(source).state_dict
    assert sd.keys() == expected.keys()
    for key in sd:
        torch.testing.assert_close(sd[key], expected[key], rtol=0, atol=0)


def test_load_timm_rejects_kwargs_with_a_model():
    with pytest.raises(ValueError, match="model name"):
        load_timm(make_timm_model("test_vit", dict(img_size=32)), num_classes=0)


# ---------------------------------------------------------------------------------------------
# Refusals.

REFUSALS = [
    ("swin", "swin_tiny_patch4_window7_224", dict(depths=(1, 1, 1, 1)), "SwinTransformer"),
    ("resnet", "resnet18", {}, "ResNet"),
    ("convnext", "test_convnext", {}, "ConvNeXt"),
    ("maxvit", "test_maxvit", {}, "MaxxVit"),
    ("ResPostBlock", "vit_base_patch16_rpn_224", dict(depth=1), "ResPostBlock"),
    ("relpos", "test_vit_relpos", {}, "VisionTransformerRelPos"),
    (
        "eva02 clip (attention inner norm)",
        "eva02_base_patch16_clip_224",
        dict(depth=1),
        "mixes the heads",
    ),
    ("eva02 enormous (post-norm)", "eva02_enormous_patch14_clip_224", dict(depth=1), "PostNorm"),
    ("hybrid stem", "vit_tiny_r_s16_p8_224", dict(depth=1), "HybridEmbed"),
    (
        "ParallelScalingBlock",
        "vit_small_patch16_224",
        dict(depth=1, block_fn="parallel_scaling"),
        "ParallelScalingBlock",
    ),
    ("scale_attn_norm", "vit_small_patch16_224", dict(depth=1, scale_attn_norm=True), "scale_norm"),
    ("no pooling", "vit_small_patch16_224", dict(depth=1, global_pool=""), "per-token"),
    ("max pooling", "vit_small_patch16_224", dict(depth=1, global_pool="max"), "'max'"),
    (
        "MAP over patches only",
        "test_vit3",
        dict(depth=1, pool_include_prefix=False),
        "pool_include_prefix=False",
    ),
    (
        "avg with prefix",
        "vit_small_patch16_224",
        dict(depth=1, global_pool="avg", pool_include_prefix=True),
        "pool_include_prefix",
    ),
    ("no final norm", "vit_small_patch16_224", dict(depth=1, final_norm=False), "no final norm"),
    ("sigmoid MLP", "vit_small_patch16_224", dict(depth=1, act_layer="sigmoid"), "Sigmoid"),
    ("patch norm", "vit_small_patch16_224", dict(depth=1, embed_norm_layer="layernorm"), "embed"),
]


def _create(name: str, kwargs: dict) -> nn.Module:
    from timm.models import vision_transformer as vt

    kwargs = dict(kwargs)
    if kwargs.get("block_fn") == "parallel_scaling":
        kwargs["block_fn"] = vt.ParallelScalingBlock
    return timm.create_model(name, pretrained=False, **kwargs)


@pytest.mark.parametrize("case", REFUSALS, ids=[case[0] for case in REFUSALS])
def test_refusals_name_the_reason(case):
    _, name, kwargs, reason = case
    model = _create(name, kwargs)
    with pytest.raises(UnsupportedModelError) as info:
        timm_to_hooked(model, name)
    message = str(info.value)
    assert name in message and reason in message
    assert "HookedViT supports" in message


def test_load_timm_refuses_by_name():
    with pytest.raises(UnsupportedModelError, match="resnet18"):
        load_timm("resnet18")


# ---------------------------------------------------------------------------------------------
# Through HookedViT (the core model).


def _hooked(tower: LoadedTower):
    from vision_lens.hooked_vit import HookedViT

    return HookedViT.from_loaded(tower)


@_every_row
def test_hooked_vit_matches_timm(row, dtype_name):
    case = _case(row, dtype_name)
    hooked = _hooked(case.tower)
    with torch.no_grad():
        out = hooked(case.x)
        _, cache = hooked.run_with_cache(case.x)
    resids = [cache[f"blocks.{layer}.hook_resid_post"] for layer in range(len(case.ref_resids))]
    _assert_matches_timm(case, out, resids)
