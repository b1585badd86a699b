"""Parity and exact decomposition for every row of the architecture registry.

For each row (``tests/architectures.py``), in float32 and float64: ``HookedViT(x)`` equals the
source model's own output, the residual stream after every block equals the source's, and the
decompositions sum to the output (layers in both ``ln_mode``s; heads plus attention bias shares
to their layer; tokens to heads; heads x tokens to heads).
"""

from __future__ import annotations

import pytest
import torch
from support.architectures import ARCHITECTURES, Arch

F32_TOL = 1e-5
F64_TOL = 1e-10


def _images(size: tuple[int, int], dtype: torch.dtype, batch: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(batch, 3, *size, generator=gen, dtype=torch.float64).to(dtype)


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().double() - b.detach().double()).abs().max().item()


@pytest.fixture(scope="module", params=ARCHITECTURES, ids=lambda a: f"{a.source}:{a.label}")
def built(request):
    arch: Arch = request.param
    source = arch.build().eval()
    return arch, source


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_parity_and_decomposition(built, dtype):
    arch, source = built
    source = source.to(dtype)
    try:
        model = arch.convert(source)
        x = _images(arch.image_size(source), dtype)
        with torch.no_grad():
            ref, blocks = arch.reference(source, x)
            out, cache = model.run_with_cache(x)
            plain = model(x)
    finally:
        source.float()
    scale = max(1.0, ref.abs().max().item())
    tol = (F32_TOL if dtype == torch.float32 else F64_TOL) * scale
    assert out.dtype == dtype
    assert _err(plain, ref) <= tol, f"{arch.label}: output differs from the source"
    assert _err(out, ref) <= tol, f"{arch.label}: hooked output differs from the source"
    assert len(blocks) == model.cfg.n_layers
    for layer, block in enumerate(blocks):
        resid = cache[f"blocks.{layer}.hook_resid_post"]
        block_scale = max(1.0, block.abs().max().item())
        assert _err(resid, block) <= tol / scale * block_scale * 10, f"block {layer}"

    dtol = tol * 10
    for mode in ("center", "split"):
        terms, labels = cache.decompose_layers(ln_mode=mode)
        assert _err(terms.sum(0), ref) <= dtol, f"{mode}: layers do not sum to the output"
        heads = cache.decompose_heads(ln_mode=mode)
        attn = torch.stack([terms[labels.index(f"L{i}_attn")] for i in range(len(blocks))], 1)
        bias = cache.attention_bias_terms(ln_mode=mode)
        assert _err(heads.sum(2) + bias, attn) <= dtol, f"{mode}: heads do not sum to layers"
        tokens = cache.decompose_tokens(ln_mode=mode)
        assert tokens.shape[1] == model.cfg.n_pos == len(cache.token_names())
        assert _err(tokens.sum(1), heads.sum((1, 2))) <= dtol
        joint = cache.decompose_heads_tokens(layers=[-1], ln_mode=mode)
        assert _err(joint.sum(3)[:, 0], heads[:, -1]) <= dtol
    # The slim decomposition cache gives the same terms.
    _, slim = model.run_with_decomposition_cache(x)
    assert _err(slim.decompose_layers(ln_mode=mode).terms, terms) <= dtol


def test_supported_models_page_lists_every_row():
    """docs/supported-models.md is generated from this registry; regenerate it when a row is
    added (``python scripts/make_supported_models.py``)."""
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "supported-models.md").read_text()
    missing = [a.label for a in ARCHITECTURES if f"| {a.label.replace('|', '/')} |" not in page]
    assert not missing, f"rows missing from docs/supported-models.md: {missing}"


def test_derived_entries_equal_stored(built):
    """``run_with_cache`` derives ``hook_result``, ``hook_pattern``, ``mlp.hook_post`` and
    ``hook_resid_mid`` on read; they equal, bit for bit, the tensors stored when every hook is
    named explicitly (which stores them), and so do all other entries and the output."""
    arch, source = built
    model = arch.convert(source)
    x = _images(arch.image_size(source), torch.float32)
    with torch.no_grad():
        out, lazy = model.run_with_cache(x)
        out_full, full = model.run_with_cache(x, names_filter=model.hook_names())
    derived = lazy.derived_names()
    assert derived and not full.derived_names()
    assert any(name.endswith("attn.hook_result") for name in derived)
    assert list(lazy.keys()) == list(full.keys())
    assert torch.equal(out, out_full)
    for name in full.keys():
        assert torch.equal(lazy[name], full[name]), f"{arch.label}: {name} differs"
    assert not lazy.derived_names()
