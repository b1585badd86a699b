"""Retrieval through heads, against brute force."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vision_lens.analysis import image_neighbors, text_to_image


def _data(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _brute_neighbors(outputs, queries, k, exclude_self, normalize):
    x = F.normalize(outputs, dim=-1) if normalize else outputs
    indices, scores = [], []
    for q in queries:
        s = [(float(x[q] @ x[j]), j) for j in range(len(x)) if not (exclude_self and j == q)]
        s.sort(key=lambda t: -t[0])
        indices.append([j for _, j in s[:k]])
        scores.append([v for v, _ in s[:k]])
    return indices, scores


@pytest.mark.parametrize("exclude_self", [True, False])
@pytest.mark.parametrize("normalize", [True, False])
def test_image_neighbors_brute_force(exclude_self, normalize):
    outputs = _data(50, 8)
    queries = [0, 7, 49, 3]
    result = image_neighbors(
        outputs, queries, k=6, exclude_self=exclude_self, normalize=normalize, chunk_size=3
    )
    indices, scores = _brute_neighbors(outputs, queries, 6, exclude_self, normalize)
    assert result.indices.tolist() == indices
    torch.testing.assert_close(result.scores, torch.tensor(scores))
    if not exclude_self and not normalize:
        # without exclusion an image is usually its own nearest neighbour by inner product
        assert result.indices.shape == (4, 6)


def test_image_neighbors_all_queries_and_groups():
    outputs = _data(3, 30, 5, seed=1)  # three heads
    result = image_neighbors(outputs, k=4, chunk_size=7)
    assert result.indices.shape == (3, 30, 4)
    for h in range(3):
        indices, scores = _brute_neighbors(outputs[h], range(30), 4, True, False)
        assert result.indices[h].tolist() == indices
        torch.testing.assert_close(result.scores[h], torch.tensor(scores))
    # never the query itself
    assert not (result.indices == torch.arange(30)[None, :, None]).any()


def test_head_set_retrieval_sums_heads():
    outputs = _data(4, 25, 6, seed=2)
    combined = outputs[[1, 3]].sum(0)
    result = image_neighbors(combined, [5], k=3)
    indices, _ = _brute_neighbors(combined, [5], 3, True, False)
    assert result.indices.tolist() == indices


@pytest.mark.parametrize("normalize", [True, False])
def test_text_to_image_brute_force(normalize):
    outputs = _data(2, 40, 8, seed=3)
    texts = _data(5, 8, seed=4)
    result = text_to_image(outputs, texts, k=7, normalize=normalize, chunk_size=2)
    assert result.indices.shape == (2, 5, 7)
    for h in range(2):
        x = F.normalize(outputs[h], dim=-1) if normalize else outputs[h]
        t = F.normalize(texts, dim=-1) if normalize else texts
        for i in range(5):
            s = sorted(((float(x[j] @ t[i]), j) for j in range(40)), key=lambda v: -v[0])
            assert result.indices[h, i].tolist() == [j for _, j in s[:7]]
            torch.testing.assert_close(
                result.scores[h, i], torch.tensor([v for v, _ in s[:7]]), rtol=1e-5, atol=1e-6
            )
    single = text_to_image(outputs[0], texts[0], k=2)
    assert single.indices.shape == (1, 2)


def test_errors():
    outputs = _data(10, 4)
    with pytest.raises(ValueError, match="larger than the number of candidate images"):
        image_neighbors(outputs, k=10)  # 9 others
    assert image_neighbors(outputs, k=10, exclude_self=False).indices.shape == (10, 10)
    with pytest.raises(ValueError, match="k must be a positive int"):
        image_neighbors(outputs, k=0)
    with pytest.raises(IndexError, match="out of range"):
        image_neighbors(outputs, [10])
    with pytest.raises(ValueError, match=r"\[images, d_embed\]"):
        image_neighbors(outputs[None, None])
    with pytest.raises(ValueError, match="same CLIP model"):
        text_to_image(outputs, _data(3, 5))
    with pytest.raises(TypeError, match="must be a tensor"):
        image_neighbors(outputs.tolist())
