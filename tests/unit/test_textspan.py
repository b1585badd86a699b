"""TextSpan: the vectorised implementation against the literal per-head loop, planted structure,
invariants and errors."""

from __future__ import annotations

import json
import zlib

import pytest
import torch
from support.textspan_reference import textspan_literal
from support.tiny import tiny_model

from vision_lens.analysis.textspan import (
    TextSpanResult,
    head_outputs_dataset,
    textspan,
    textspan_model,
)


def _heads(n_heads, n_images, d, seed, offset=1.0):
    """Head outputs with an anisotropic spectrum and a non-zero mean (like real heads)."""
    g = torch.Generator().manual_seed(seed)
    scale = torch.rand(d, generator=g) * 2 + 0.1
    out = torch.randn(n_heads, n_images, d, generator=g) * scale
    return out + offset * torch.randn(n_heads, 1, d, generator=g)


def _texts(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _planted(n_heads, n_images, pool, k, seed, noise=1e-3):
    """Each head writes along k of the pool's texts (different per head) plus small noise."""
    g = torch.Generator().manual_seed(seed)
    outputs, chosen = [], []
    unit = pool / pool.norm(dim=-1, keepdim=True)
    for _ in range(n_heads):
        idx = torch.randperm(pool.shape[0], generator=g)[:k]
        coefficients = torch.randn(n_images, k, generator=g) * (1 + torch.rand(k, generator=g))
        out = coefficients @ unit[idx] + noise * torch.randn(n_images, pool.shape[1], generator=g)
        outputs.append(out + torch.randn(pool.shape[1], generator=g))
        chosen.append(sorted(idx.tolist()))
    return torch.stack(outputs), chosen


# ---------------------------------------------------------------------- literal equivalence
@pytest.mark.parametrize(
    "n_heads, n_images, d, n_text, m, rank, seed",
    [
        (3, 200, 48, 150, 20, 24, 0),
        (2, 120, 32, 60, 25, None, 1),  # no rank reduction
        (4, 90, 40, 300, 30, 30, 2),
        (2, 50, 64, 80, 12, 80, 3),  # rank > images: the subspace is the images' row space
        (1, 300, 24, 40, 24, None, 4),  # m = d: the whole space
        (5, 64, 16, 500, 10, 12, 5),
    ],
)
def test_matches_literal_loop(n_heads, n_images, d, n_text, m, rank, seed):
    outputs = _heads(n_heads, n_images, d, seed)
    texts = _texts(n_text, d, seed + 100)
    result = textspan(outputs, texts, m, rank, head_chunk=2)
    for h in range(n_heads):
        ref = textspan_literal(outputs[h], texts, m, rank)
        assert result.indices[h].tolist() == ref["indices"].tolist(), f"head {h}"
        torch.testing.assert_close(
            result.explained_variance[h], ref["explained"], rtol=1e-9, atol=1e-9
        )
        torch.testing.assert_close(result.total_variance[h], ref["total"], rtol=1e-10, atol=0)
        torch.testing.assert_close(
            result.reconstruction[h].double(), ref["reconstruction"], rtol=0, atol=1e-5
        )


def test_matches_literal_loop_in_float64_and_unnormalised_texts():
    outputs = _heads(2, 100, 20, seed=7).double()
    texts = _texts(50, 20, seed=8) * torch.rand(50, 1, generator=torch.Generator().manual_seed(9))
    result = textspan(outputs, texts, 15, rank=16, normalize_texts=False)
    for h in range(2):
        ref = textspan_literal(outputs[h], texts, 15, rank=16, normalize=False)
        assert result.indices[h].tolist() == ref["indices"].tolist()
        torch.testing.assert_close(result.reconstruction[h], ref["reconstruction"])
    assert result.reconstruction.dtype == torch.float64


def test_head_chunk_does_not_change_results():
    outputs, texts = _heads(5, 80, 24, seed=11), _texts(70, 24, seed=12)
    a = textspan(outputs, texts, 10, rank=16, head_chunk=1)
    b = textspan(outputs, texts, 10, rank=16, head_chunk=8)
    assert torch.equal(a.indices, b.indices)
    torch.testing.assert_close(a.explained_variance, b.explained_variance)


def test_single_head_input_is_one_row():
    outputs, texts = _heads(1, 60, 16, seed=13), _texts(30, 16, seed=14)
    single = textspan(outputs[0], texts, 5, rank=8)
    batched = textspan(outputs, texts, 5, rank=8)
    assert single.indices.shape == (1, 5)
    assert torch.equal(single.indices, batched.indices)
    assert single.reconstruction.shape == (1, 60, 16)


# ---------------------------------------------------------------------- planted structure
@pytest.mark.parametrize("rank", [None, 32])
def test_recovers_planted_texts(rank):
    pool = _texts(300, 128, seed=20)
    outputs, chosen = _planted(4, 400, pool, k=6, seed=21)
    result = textspan(outputs, pool, m=6, rank=rank)
    for h in range(4):
        assert sorted(result.indices[h].tolist()) == chosen[h]
    assert (result.explained_fraction[:, -1] > 0.999).all()
    # The reconstruction recovers the noiseless outputs
    assert (result.reconstruction - outputs).abs().max() < 0.01


def test_planted_texts_come_first_with_larger_m():
    pool = _texts(200, 96, seed=22)
    outputs, chosen = _planted(3, 300, pool, k=4, seed=23, noise=1e-2)
    result = textspan(outputs, pool, m=12, rank=40)
    for h in range(3):
        assert sorted(result.indices[h, :4].tolist()) == chosen[h]


# ---------------------------------------------------------------------- invariants
def test_explained_variance_monotone_and_bounded():
    outputs, texts = _heads(4, 150, 32, seed=30), _texts(200, 32, seed=31)
    result = textspan(outputs, texts, 32, rank=None)
    steps = result.explained_variance.diff(dim=-1)
    assert (steps >= -1e-12).all()
    assert (result.explained_variance <= result.total_variance[:, None] * (1 + 1e-10)).all()
    assert (result.explained_variance > 0).all()
    # m = d texts span the whole space: everything is explained
    torch.testing.assert_close(result.explained_variance[:, -1], result.total_variance)
    # total variance is the mean squared deviation from the mean
    centred = outputs.double() - outputs.double().mean(1, keepdim=True)
    torch.testing.assert_close(result.total_variance, centred.pow(2).sum(-1).mean(-1))


def test_shapes_basis_and_mean():
    outputs, texts = _heads(3, 70, 20, seed=32), _texts(40, 20, seed=33)
    result = textspan(outputs, texts, 7, rank=12)
    assert result.indices.shape == (3, 7) and result.indices.dtype == torch.long
    assert result.explained_variance.shape == (3, 7)
    assert result.total_variance.shape == (3,)
    assert result.basis.shape == (3, 7, 20)
    assert result.reconstruction.shape == (3, 70, 20)
    gram = result.basis.double() @ result.basis.double().mT
    torch.testing.assert_close(
        gram, torch.eye(7, dtype=torch.float64).expand(3, 7, 7), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(result.mean, outputs.mean(1))
    for h in range(3):
        assert len(set(result.indices[h].tolist())) == 7  # never the same text twice


def test_duplicates_are_never_picked_twice():
    base = _texts(10, 16, seed=34)
    pool = torch.cat([base, base, 2 * base])  # every text three times (scaled copies too)
    outputs = _heads(2, 100, 16, seed=35)
    result = textspan(outputs, pool, 10, rank=None)
    for h in range(2):
        picks = [i % 10 for i in result.indices[h].tolist()]
        assert sorted(picks) == list(range(10))
        assert all(i < 10 for i in result.indices[h].tolist())  # ties go to the first copy


def test_pool_exhaustion_is_a_clear_error():
    pool = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [1.0, 1.0, 0, 0]])
    with pytest.raises(ValueError, match="no eligible text is left"):
        textspan(_heads(1, 30, 4, seed=36), pool, m=3, rank=None)


def test_project_prefix_equals_smaller_m_and_reconstruction():
    outputs, texts = _heads(3, 90, 24, seed=37), _texts(100, 24, seed=38)
    big = textspan(outputs, texts, 12, rank=16)
    small = textspan(outputs, texts, 5, rank=16)
    assert torch.equal(big.indices[:, :5], small.indices)
    torch.testing.assert_close(big.project(outputs, m=5), small.reconstruction, atol=1e-5, rtol=0)
    torch.testing.assert_close(big.project(outputs), big.reconstruction, atol=1e-5, rtol=0)
    torch.testing.assert_close(big.project(outputs, m=0), big.mean[:, None].expand_as(outputs))
    with pytest.raises(ValueError, match="m must be in"):
        big.project(outputs, m=13)
    with pytest.raises(ValueError, match="head order"):
        big.project(outputs[:2])


# ---------------------------------------------------------------------- labels and reports
def test_labels_lookup_and_reports():
    pool = _texts(50, 64, seed=40)
    outputs, chosen = _planted(2, 100, pool, k=3, seed=41)
    names = [f"text {i}" for i in range(50)]
    result = textspan(outputs, pool, 3, rank=None, texts=names, heads=[(10, 0), (11, 5)])
    assert sorted(result.texts_for(11, 5)) == sorted(names[i] for i in chosen[1])
    assert result.texts_for(0) == result.texts_for(10, 0)
    assert len(result.texts_for(10, 0, top=2)) == 2
    with pytest.raises(KeyError, match="L3H3 is not in this result"):
        result.texts_for(3, 3)
    data = result.to_dict()
    json.dumps(data)
    assert data["heads"][1]["label"] == "L11H5" and data["heads"][1]["layer"] == 11
    assert len(data["heads"][0]["texts"]) == 3
    md = result.to_markdown(top=2)
    assert "| L10H0 |" in md and "| L11H5 |" in md
    assert len(result.table(top=2)) == 4
    unlabelled = textspan(outputs, pool, 3, rank=None)
    with pytest.raises(ValueError, match="no text strings"):
        unlabelled.texts_for(0)
    with pytest.raises(KeyError, match="no head labels"):
        unlabelled.head_index(10, 0)


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(m=31), ValueError, "larger than the text pool"),
        (dict(m=0), ValueError, "m must be >= 1"),
        (dict(m=2.0), TypeError, "m must be an int"),
        (dict(texts_=torch.randn(30, 7)), ValueError, "width"),
        (dict(texts_=torch.randn(0, 8)), ValueError, "text pool is empty"),
        (dict(m=9, rank=None), ValueError, "exceeds the dimension"),
        (dict(m=5, rank=4), ValueError, "rank=None"),
        (dict(rank=0), ValueError, "rank must be >= 1"),
        (dict(outputs=torch.randn(2, 1, 8)), ValueError, "at least 2 images"),
        (dict(outputs=torch.randn(2, 3, 4, 8)), ValueError, r"\[head, images, d_embed\]"),
        (dict(outputs=[[0.0]]), TypeError, "must be a tensor"),
        (dict(texts=["a"] * 3), ValueError, "3 texts given for 30"),
        (dict(heads=[(0, 0)]), ValueError, "1 head labels given for 2"),
    ],
)
def test_errors(kwargs, error, match):
    args = dict(outputs=torch.randn(2, 20, 8), texts_=torch.randn(30, 8), m=3, rank=8)
    args.update(kwargs)
    outputs, texts_, m, rank = (
        args.pop("outputs"),
        args.pop("texts_"),
        args.pop("m"),
        args.pop("rank"),
    )
    with pytest.raises(error, match=match):
        textspan(outputs, texts_, m, rank, **args)


def test_zero_norm_and_nan_errors():
    texts = torch.randn(10, 8)
    texts[3] = 0
    with pytest.raises(ValueError, match="Text embedding 3 has zero norm"):
        textspan(torch.randn(2, 20, 8), texts, 3)
    outputs = torch.randn(2, 20, 8)
    outputs[1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        textspan(outputs, torch.randn(10, 8), 3)


# ---------------------------------------------------------------------- on a model
class _StubText:
    """Stands in for CLIPText: deterministic random unit embeddings per text."""

    def __init__(self, d):
        self.d = d

    def encode(self, texts, batch_size=256, progress=False):
        rows = [
            torch.randn(self.d, generator=torch.Generator().manual_seed(zlib.crc32(t.encode())))
            for t in texts
        ]
        out = torch.stack(rows)
        return out / out.norm(dim=-1, keepdim=True)


def test_textspan_model_equals_textspan_on_head_outputs():
    model = tiny_model()
    images = torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    texts = [f"description {i}" for i in range(40)]
    clip = _StubText(16)
    result = textspan_model(
        model, clip, images, texts, layers=[-1], m=4, rank=8, batch_size=5, progress=False
    )
    assert isinstance(result, TextSpanResult)
    assert result.heads == [(1, 0), (1, 1), (1, 2), (1, 3)]
    outputs, heads = head_outputs_dataset(model, images, layers=[1], progress=False)
    _, cache = model.run_with_decomposition_cache(images)
    torch.testing.assert_close(outputs, cache.decompose_heads(layers=[1])[:, 0].transpose(0, 1))
    direct = textspan(outputs, clip.encode(texts), 4, rank=8)
    assert torch.equal(result.indices, direct.indices)
    assert len(result.texts_for(1, 2)) == 4
    assert result.meta["n_images"] == 12
    with pytest.raises(IndexError, match="does not exist"):
        head_outputs_dataset(model, images, layers=[5], progress=False)
    with pytest.raises(ValueError, match="same index twice"):
        head_outputs_dataset(model, images, layers=[1, -1], progress=False)
    assert result.meta["unit_output"] is False
    unit, _ = head_outputs_dataset(model, images, layers=[1], unit_output=True, progress=False)
    with pytest.warns(DeprecationWarning, match="unit_output"):
        old, _ = head_outputs_dataset(model, images, layers=[1], normalize=True, progress=False)
    assert torch.equal(old, unit)
