"""SAEs: the splice leaves the forward pass unchanged, exposes features as cache entries, the
per-feature direct effects plus decoder bias and error sum to the residual stream's direct
effect (every readout kind), and SAELens-format folders load (with clear errors)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from support.tiny import FEATURE_CONFIGS, random_images, tiny_model

from vision_lens.analysis.sae import (
    StandardSAE,
    load_saelens_sae,
    run_with_sae_cache,
    sae_direct_effects,
    splice_sae,
)
from vision_lens.errors import CheckpointError

READOUTS = ["cls", "avg+fc_norm+rms", "map+qk_norm+gated+registers", "cls_dist+heads"]


def _model(name: str = "cls", n_layers: int = 3):
    return tiny_model(seed=1, std=0.1, n_layers=n_layers, **FEATURE_CONFIGS[name])


def _sae(model, d_sae: int = 48, seed: int = 0) -> StandardSAE:
    return StandardSAE.random(d_in=model.cfg.d_model, d_sae=d_sae, seed=seed)


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    scale = expected.abs().max()
    error = (actual - expected).abs().max()
    assert error <= tol * max(scale, 1.0), f"error {error:.3g} (scale {scale:.3g})"


def test_splice_keeps_output_and_caches_features():
    model = _model()
    images = random_images(3, seed=2)
    hook = "blocks.1.hook_resid_post"
    sae = _sae(model)
    expected = model(images)
    out, cache = run_with_sae_cache(model, images, {hook: sae})
    assert (out - expected).abs().max() <= 1e-6 * max(expected.abs().max(), 1.0)
    feats = cache[f"{hook}.sae.hook_features"]
    recon = cache[f"{hook}.sae.hook_reconstruction"]
    error = cache[f"{hook}.sae.hook_error"]
    n_pos = model.cfg.n_pos
    assert feats.shape == (3, n_pos, 48) and recon.shape == error.shape == (
        3,
        n_pos,
        model.cfg.d_model,
    )
    assert (feats >= 0).all() and (feats == 0).any()
    torch.testing.assert_close(recon + error, cache[hook], atol=1e-6, rtol=0)
    torch.testing.assert_close(feats, sae.encode(cache[hook]), atol=1e-5, rtol=1e-5)
    # the cache still decomposes exactly, and the hooks are gone afterwards
    terms, _ = cache.decompose_layers()
    _close(terms.sum(0), out)
    assert not splice_sae(model, hook, sae).hook_features.fwd_hooks
    torch.testing.assert_close(model(images), expected, atol=0, rtol=0)


def test_splice_as_hook_list_and_context_and_feature_edit():
    model = _model()
    images = random_images(2, seed=3)
    hook = "blocks.0.hook_mlp_out"
    splice = splice_sae(model, hook, _sae(model))
    expected = model(images)
    _close(model.run_with_hooks(images, fwd_hooks=list(splice)), expected, 1e-6)
    with splice:
        _close(model(images), expected, 1e-6)
    torch.testing.assert_close(model(images), expected, atol=0, rtol=0)
    # zeroing every feature leaves b_dec + error: the edit changes the output
    splice.hook_features.add_hook(lambda f, hook: torch.zeros_like(f))
    try:
        edited = model.run_with_hooks(images, fwd_hooks=list(splice))
    finally:
        splice.hook_features.remove_hooks("fwd")
    assert (edited - expected).abs().max() > 1e-3


@pytest.mark.parametrize("name", READOUTS)
@pytest.mark.parametrize("hook", ["blocks.1.hook_resid_post", "blocks.2.hook_resid_post"])
def test_feature_direct_effects_sum_to_residual_direct_effect(name, hook):
    model = _model(name)
    sae = _sae(model)
    out, cache = run_with_sae_cache(model, random_images(3, seed=4), {hook: sae})
    effects = sae_direct_effects(cache, hook, sae, chunk_size=7)
    assert effects.features.shape == (3, 48, model.cfg.d_embed)
    assert effects.error.abs().max() > 0  # a random SAE reconstructs badly: the error matters
    terms, labels = cache.decompose_layers()
    layer = int(hook.split(".")[1])
    upto = [
        i
        for i, lab in enumerate(labels)
        if lab.kind == "embed" or (lab.layer is not None and lab.layer <= layer)
    ]
    _close(effects.total(), terms[upto].sum(0))
    if layer == model.cfg.n_layers - 1:
        rest = [i for i, lab in enumerate(labels) if lab.kind in ("bias", "readout_mlp")]
        _close(effects.total() + terms[rest].sum(0), out)


def test_feature_effects_against_literal_and_directions():
    model = _model()
    hook = "blocks.1.hook_resid_post"
    sae = _sae(model, d_sae=8)
    _, cache = run_with_sae_cache(model, random_images(2, seed=5), {hook: sae})
    effects = sae_direct_effects(cache, hook, sae)
    # literal: a feature's term is f_i W_dec[i] at the class token, centred, frozen final norm
    x = cache[hook][:, 0]
    f = sae.encode(x)
    sigma = cache["ln_final.hook_scale"][:, 0]
    for i in range(8):
        c = f[:, i : i + 1] * sae.W_dec[i]
        c = c - c.mean(-1, keepdim=True)
        literal = (c / sigma * model.ln_final.w) @ model.W_proj
        _close(effects.features[:, i], literal.detach())
    dirs = torch.randn(5, model.cfg.d_embed, generator=torch.Generator().manual_seed(0))
    projected = sae_direct_effects(cache, hook, sae, directions=dirs)
    _close(projected.features, effects.features @ dirs.T)
    _close(projected.error, effects.error @ dirs.T)
    unit = sae_direct_effects(cache, hook, sae, unit_output=True)
    norm = model(random_images(2, seed=5)).norm(dim=-1)
    _close(unit.features * norm[:, None, None], effects.features)


def test_generic_affine_module_without_weights_attributes():
    class Tied(torch.nn.Module):  # encode/decode only, no W_dec/b_dec attributes
        def __init__(self, W):
            super().__init__()
            self.D = torch.nn.Parameter(W)

        def encode(self, x):
            return torch.relu(x @ self.D.T)

        def decode(self, f):
            return f @ self.D

    model = _model()
    sae = Tied(torch.randn(20, model.cfg.d_model, generator=torch.Generator().manual_seed(1)))
    hook = "blocks.0.hook_resid_post"
    _, cache = run_with_sae_cache(model, random_images(2, seed=6), {hook: sae})
    effects = sae_direct_effects(cache, hook, sae)
    terms, labels = cache.decompose_layers()
    _close(effects.total(), terms[:3].sum(0))
    assert effects.decoder_bias.abs().max() < 1e-6


def test_bad_input_errors():
    model = _model()
    sae = _sae(model)
    with pytest.raises(KeyError, match="Did you mean"):
        splice_sae(model, "blocks.1.hook_resid_pots", sae)
    with pytest.raises(ValueError, match=f"{model.cfg.d_model} wide"):
        splice_sae(model, "blocks.1.hook_resid_post", StandardSAE.random(d_in=7, d_sae=4))
    with pytest.raises(TypeError, match="encode"):
        splice_sae(model, "blocks.1.hook_resid_post", object())
    with pytest.raises(ValueError, match="non-empty"):
        run_with_sae_cache(model, random_images(1), {})
    hook = "blocks.1.hook_resid_post"
    _, cache = run_with_sae_cache(model, random_images(2), {hook: sae})
    with pytest.raises(ValueError, match="not a residual-stream term"):
        sae_direct_effects(cache, "blocks.1.ln1.hook_normalized", sae)
    with pytest.raises(ValueError, match="NaN"):
        sae_direct_effects(
            cache, hook, sae, directions=torch.full((2, model.cfg.d_embed), float("nan"))
        )
    with pytest.raises(ValueError, match="directions"):
        sae_direct_effects(cache, hook, sae, directions=torch.ones(2, 3))

    class Squared(torch.nn.Module):
        def encode(self, x):
            return x[..., :4] ** 2

        def decode(self, f):
            return torch.nn.functional.pad(f**2, (0, 28))

    with pytest.raises(ValueError, match="not affine"):
        sae_direct_effects(cache, hook, Squared())


# ------------------------------------------------------------------------ SAELens format
def _write(folder, tensors, cfg=None):
    folder.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, str(folder / "sae_weights.safetensors")
    )
    base = {
        "architecture": "standard",
        "d_in": 32,
        "d_sae": 8,
        "activation_fn": "relu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "metadata": {"hook_name": "blocks.1.hook_resid_post"},
    }
    (folder / "cfg.json").write_text(json.dumps(base if cfg is None else cfg))
    return folder


def _weights(d_in=32, d_sae=8):
    g = torch.Generator().manual_seed(0)
    return {
        "W_enc": torch.randn(d_in, d_sae, generator=g),
        "b_enc": torch.randn(d_sae, generator=g),
        "W_dec": torch.randn(d_sae, d_in, generator=g),
        "b_dec": torch.randn(d_in, generator=g),
    }


def test_load_saelens_folder_round_trip(tmp_path):
    model = _model()
    w = _weights()
    sae = load_saelens_sae(_write(tmp_path / "sae", w), model=model)
    assert sae.hook_name == "blocks.1.hook_resid_post" and (sae.d_in, sae.d_sae) == (32, 8)
    x = torch.randn(4, 32)
    expected = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])  # SAELens' standard SAE
    torch.testing.assert_close(sae.encode(x), expected)
    torch.testing.assert_close(sae.decode(expected), expected @ w["W_dec"] + w["b_dec"])
    again = load_saelens_sae(sae.save(tmp_path / "saved"))
    torch.testing.assert_close(again.encode(x), expected)
    assert json.loads((tmp_path / "saved" / "cfg.json").read_text())["architecture"] == "standard"


def test_load_saelens_errors(tmp_path):
    model = _model()
    with pytest.raises(FileNotFoundError):
        load_saelens_sae(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no cfg.json"):
        load_saelens_sae(tmp_path / "empty")
    w = _weights()
    del w["b_dec"]
    with pytest.raises(CheckpointError, match="lacks b_dec"):
        load_saelens_sae(_write(tmp_path / "missing", w))
    w = _weights()
    w["W_dec"] = torch.randn(8, 31)
    with pytest.raises(CheckpointError, match="d_in = 31"):
        load_saelens_sae(_write(tmp_path / "shapes", w))
    wide = _write(tmp_path / "wide", _weights(d_in=48), cfg={"d_in": 48, "d_sae": 8})
    with pytest.raises(CheckpointError, match="48-wide"):
        load_saelens_sae(wide, model=model, hook_name="blocks.0.hook_resid_post")
    w = _weights()
    w["W_enc"][0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN"):
        load_saelens_sae(_write(tmp_path / "nan", w))
    with pytest.raises(CheckpointError, match="topk"):
        load_saelens_sae(_write(tmp_path / "topk", _weights(), cfg={"architecture": "topk"}))
    bad = _write(tmp_path / "badjson", _weights())
    (bad / "cfg.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_saelens_sae(bad)


def test_shipped_shapes_sae_loads():
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "vision_lens/shapes/weights"
    folder = folder / "shapes_sae_L3_resid_post"
    if not folder.is_dir():
        pytest.skip("scripts/train_shapes_sae.py has not been run")
    sae = load_saelens_sae(folder)
    assert sae.hook_name == "blocks.3.hook_resid_post" and sae.d_in == 128
