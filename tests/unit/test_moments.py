"""HeadMoments and TextSpan from moments: same picks as the in-memory TextSpan, sums that merge
exactly, storage round trips, clear errors; mean_ablate with precomputed (streamed) means."""

from __future__ import annotations

import pytest
import torch
from support.tiny import random_images, tiny_model

from vision_lens.analysis import (
    HeadMoments,
    decompose_components,
    head_outputs_dataset,
    mean_ablate,
    textspan,
    textspan_from_moments,
)


def _heads(n_heads, n_images, d, seed, offset=1.0, d_head=None):
    """Anisotropic head outputs with a non-zero mean; with ``d_head``, of rank ``d_head`` (as a
    real head writing from a ``d_head``-dimensional space)."""
    g = torch.Generator().manual_seed(seed)
    width = d if d_head is None else d_head
    scale = torch.rand(width, generator=g) * 2 + 0.1
    out = torch.randn(n_heads, n_images, width, generator=g) * scale
    if d_head is not None:
        out = out @ torch.randn(n_heads, d_head, d, generator=g)
    return out + offset * torch.randn(n_heads, 1, d, generator=g)


def _texts(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def _streamed(outputs, batch):
    moments = HeadMoments.zeros(outputs.shape[0], outputs.shape[2])
    for part in outputs.split(batch, dim=1):
        moments.update(part)
    return moments


# ---------------------------------------------------------------------- same picks as textspan
@pytest.mark.parametrize(
    "n_heads, n_images, d, n_text, m, rank, d_head, seed",
    [
        (3, 200, 48, 150, 20, 24, None, 0),
        (2, 120, 32, 60, 25, None, None, 1),  # no rank reduction
        (4, 150, 96, 300, 30, 80, None, 2),  # the paper's rank
        (2, 50, 64, 80, 12, 80, None, 3),  # rank > images
        (3, 300, 96, 200, 12, 80, 16, 4),  # rank > d_head: zero-variance directions dropped
        (9, 64, 16, 500, 10, None, None, 5),  # more heads than one chunk
    ],
)
def test_picks_identical_to_textspan(n_heads, n_images, d, n_text, m, rank, d_head, seed):
    outputs = _heads(n_heads, n_images, d, seed, d_head=d_head)
    pool = _texts(n_text, d, seed + 100)
    expected = textspan(outputs, pool, m, rank)
    got = textspan_from_moments(_streamed(outputs, 37), pool, m, rank)
    assert torch.equal(got.indices, expected.indices)
    torch.testing.assert_close(got.explained_variance, expected.explained_variance)
    torch.testing.assert_close(got.total_variance, expected.total_variance)
    torch.testing.assert_close(got.mean, expected.mean.double(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got.basis.float(), expected.basis, rtol=1e-4, atol=1e-4)
    assert got.reconstruction is None and got.rank == rank
    assert got.meta["n_images"] == n_images


def test_float64_outputs_agree_to_rounding():
    outputs = _heads(2, 100, 24, 7).double()
    pool = _texts(60, 24, 8)
    expected = textspan(outputs, pool, 10, 12)
    got = textspan_from_moments(HeadMoments.from_outputs(outputs), pool, 10, 12)
    assert torch.equal(got.indices, expected.indices)
    torch.testing.assert_close(got.explained_variance, expected.explained_variance, rtol=1e-10,
                               atol=1e-12)  # fmt: skip
    torch.testing.assert_close(got.basis, expected.basis, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("rank", [None, 80])
def test_planted_two_text_head_picks_them(rank):
    d, n_text = 96, 120
    pool = _texts(n_text, d, 11)
    unit = pool / pool.norm(dim=-1, keepdim=True)
    g = torch.Generator().manual_seed(12)
    planted = torch.randn(400, 2, generator=g) * torch.tensor([3.0, 1.5]) @ unit[[17, 42]]
    noise = _heads(2, 400, d, 13)  # two ordinary heads
    outputs = torch.cat([noise, (planted + 1e-3 * torch.randn(400, d, generator=g))[None]])
    result = textspan_from_moments(
        _streamed(outputs, 64), pool, m=2, rank=rank, heads=[(0, 0), (0, 1), (1, 3)]
    )
    assert result.indices[2].tolist() == [17, 42]
    assert result.explained_fraction[2, -1] > 0.999
    assert torch.equal(result.indices, textspan(outputs, pool, 2, rank).indices)


def test_second_pass_reconstruction_matches_textspan():
    outputs = _heads(2, 90, 20, 21)
    pool = _texts(50, 20, 22)
    expected = textspan(outputs, pool, 8, 10)
    got = textspan_from_moments(HeadMoments.from_outputs(outputs), pool, 8, 10, texts=None)
    projected = torch.cat([got.project(part.double()) for part in outputs.split(30, dim=1)], 1)
    torch.testing.assert_close(projected.float(), expected.reconstruction, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------- sums
def test_merge_of_splits_equals_whole():
    outputs = _heads(3, 101, 12, 31)
    whole = HeadMoments.from_outputs(outputs)
    a = HeadMoments.from_outputs(outputs[:, :40])
    b = HeadMoments.from_outputs(outputs[:, 40:77])
    c = HeadMoments.from_outputs(outputs[:, 77:])
    for merged in (a + b + c, a.merge(b.merge(c)), _streamed(outputs, 13)):
        assert merged.count == 101
        torch.testing.assert_close(merged.sum, whole.sum, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(merged.sum_outer, whole.sum_outer, rtol=1e-12, atol=1e-12)
    assert a.count == 40  # merge makes a new object
    x = outputs.double()
    torch.testing.assert_close(whole.mean, x.mean(1))
    torch.testing.assert_close(whole.second_moment, x.mT @ x / 101)
    centred = x - x.mean(1, keepdim=True)
    torch.testing.assert_close(whole.covariance, centred.mT @ centred / 101)
    one = HeadMoments.from_outputs(outputs[0])  # [images, d]: one head
    assert one.n_heads == 1 and one.d_embed == 12


def test_state_dict_round_trip(tmp_path):
    from safetensors.torch import load_file, save_file

    moments = HeadMoments.from_outputs(_heads(2, 30, 6, 41))
    state = moments.state_dict()
    assert state["count"].dtype == torch.int64 and state["count"].dim() == 0
    assert state["sum"].dtype == state["sum_outer"].dtype == torch.float64
    save_file(state, tmp_path / "shard.safetensors")
    for loaded in (state, load_file(tmp_path / "shard.safetensors")):
        back = HeadMoments.from_state_dict(loaded)
        assert back.count == 30
        assert torch.equal(back.sum, moments.sum) and torch.equal(back.sum_outer, moments.sum_outer)
    # count as a Python int or a one-element int64 tensor (as a collector may write it)
    for count in (30, torch.tensor([30])):
        assert HeadMoments.from_state_dict({**state, "count": count, "extra": torch.ones(1)}).count
    shards = [HeadMoments.from_outputs(_heads(2, 10, 6, s)).state_dict() for s in (1, 2)]
    total = sum((HeadMoments.from_state_dict(s) for s in shards), HeadMoments.zeros(2, 6))
    assert total.count == 20


# ---------------------------------------------------------------------- errors
def test_errors():
    pool = _texts(20, 8, 51)
    empty = HeadMoments.zeros(2, 8)
    with pytest.raises(ValueError, match="0 image"):
        _ = empty.mean
    with pytest.raises(ValueError, match="at least 2 images"):
        textspan_from_moments(empty, pool, 3)
    with pytest.raises(ValueError, match="at least 2 images"):
        textspan_from_moments(HeadMoments.from_outputs(torch.randn(2, 1, 8)), pool, 1)
    moments = HeadMoments.from_outputs(torch.randn(2, 30, 8))
    with pytest.raises(ValueError, match="width 8 but text embeddings have width 9"):
        textspan_from_moments(moments, _texts(20, 9, 52), 3)
    with pytest.raises(ValueError, match="m=25 is larger than the text pool"):
        textspan_from_moments(moments, pool, 25)
    with pytest.raises(ValueError, match="exceeds the dimension"):
        textspan_from_moments(moments, pool, 5, rank=4)
    with pytest.raises(ValueError, match="4 head labels given for 2 heads"):
        textspan_from_moments(moments, pool, 2, heads=[(0, 0), (0, 1)] * 2)
    with pytest.raises(TypeError, match="moments must be HeadMoments"):
        textspan_from_moments(moments.state_dict(), pool, 3)
    bad = moments.state_dict()
    bad["sum_outer"] = bad["sum_outer"].clone()
    bad["sum_outer"][1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        textspan_from_moments(HeadMoments.from_state_dict(bad), pool, 3)
    nan_pool = pool.clone()
    nan_pool[3, 0] = float("nan")
    with pytest.raises(ValueError, match="text_embeddings contains 1 NaN"):
        textspan_from_moments(moments, nan_pool, 3)
    nan_outputs = torch.randn(2, 5, 8)
    nan_outputs[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="head_outputs contains 1 NaN"):
        HeadMoments.from_outputs(nan_outputs)
    with pytest.raises(ValueError, match="batch_outputs contains 1 NaN"):
        moments.update(nan_outputs)
    with pytest.raises(ValueError, match="does not match"):
        moments.update(torch.randn(3, 4, 8))
    with pytest.raises(ValueError, match="cannot merge"):
        _ = moments + HeadMoments.zeros(2, 7)
    with pytest.raises(ValueError, match="sum_outer must be"):
        HeadMoments(3, torch.zeros(2, 8), torch.zeros(2, 8, 7))
    with pytest.raises(KeyError, match="sum_outer"):
        HeadMoments.from_state_dict({"count": torch.tensor(3), "sum": torch.zeros(2, 8)})
    with pytest.raises(TypeError, match="count"):
        HeadMoments(torch.tensor(2.0), torch.zeros(2, 8), torch.zeros(2, 8, 8))
    with pytest.raises(ValueError, match="count must be >= 0"):
        HeadMoments(-1, torch.zeros(2, 8), torch.zeros(2, 8, 8))


# ---------------------------------------------------------------------- mean_ablate(means=)
def test_mean_ablate_with_streamed_means_matches_reference_images():
    model = tiny_model(seed=0)
    terms = decompose_components(model, random_images(6, seed=1), progress=False).terms
    reference = decompose_components(model, random_images(20, seed=2), progress=False).terms
    # A streamed "mean:<hook>" product: count and a float64 sum per component, over batches.
    count, total = 0, torch.zeros(reference.shape[0], reference.shape[2], dtype=torch.float64)
    for batch in reference.split(7, dim=1):
        count += batch.shape[1]
        total += batch.double().sum(1)
    means = total / count
    ablate = [1, 3, 4]
    expected = mean_ablate(terms, ablate, reference)
    torch.testing.assert_close(mean_ablate(terms, ablate, means=means), expected)
    as_dict = {i: means[i] for i in ablate}
    torch.testing.assert_close(mean_ablate(terms, ablate, means=as_dict), expected)
    mask = torch.zeros(terms.shape[0], dtype=torch.bool)
    mask[ablate] = True
    torch.testing.assert_close(mean_ablate(terms, mask, means=means), expected)
    with pytest.raises(ValueError, match="not both"):
        mean_ablate(terms, ablate, reference, means=means)
    with pytest.raises(ValueError, match=r"No mean given for ablated component\(s\) \[4\]"):
        mean_ablate(terms, ablate, means={1: means[1], 3: means[3]})
    with pytest.raises(ValueError, match="means must be"):
        mean_ablate(terms, ablate, means=means[:, :-1])
    with pytest.raises(TypeError, match="component indices"):
        mean_ablate(terms, ablate, means={"blocks.0.hook_attn_out": means[1]})


def test_head_outputs_moments_from_model():
    model = tiny_model(seed=3)
    outputs, heads = head_outputs_dataset(model, random_images(40, seed=4), progress=False)
    pool = _texts(30, outputs.shape[-1], 5)
    expected = textspan(outputs, pool, 4, rank=None, heads=heads)
    got = textspan_from_moments(_streamed(outputs, 9), pool, 4, rank=None, heads=heads)
    assert torch.equal(got.indices, expected.indices)
    assert got.heads == heads
