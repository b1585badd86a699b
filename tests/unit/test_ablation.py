"""Head-level ablations and spurious-cue removal, checked against hand computations."""

from __future__ import annotations

import pytest
import torch
from support.tiny import tiny_model

from vision_lens.analysis import (
    Components,
    ablated_embedding,
    accuracy_vs_m,
    cumulative_attention_ablation,
    decompose_components,
    group_accuracy,
    head_ablation_accuracy,
    heads_by_keywords,
    mean_ablate,
    mlp_ablation,
    replace_heads,
    split_heads,
    spurious_ablation,
    textspan,
    textspan_replacement_accuracy,
    zero_shot_accuracy,
)
from vision_lens.analysis.textspan import TextSpanResult


@pytest.fixture(scope="module")
def tiny():
    model = tiny_model(n_layers=3)
    images = torch.randn(7, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return model, images


def _synthetic(seed=0, n=40, d=6):
    g = torch.Generator().manual_seed(seed)
    labels = ["embed", "L0H0", "L0H1", "L0_attn_bias", "L0_mlp", "L1H0", "L1H1", "L1_mlp", "bias"]
    terms = torch.randn(len(labels), n, d, generator=g)
    return Components(terms, labels)


# ---------------------------------------------------------------------- Components
def test_components_basics_and_errors():
    c = _synthetic()
    assert c.heads == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert c.head_indices([(1, 1), (0, 0)]) == [6, 1]
    assert c.mlp_indices() == [4, 7] and c.mlp_indices([1]) == [7]
    outputs, heads = c.head_outputs()
    assert outputs.shape == (4, 40, 6) and heads == c.heads
    assert torch.equal(outputs[2], c.terms[5])
    with pytest.raises(KeyError, match="No component 'L5H0'"):
        c.head_indices([(5, 0)])
    with pytest.raises(KeyError, match="not components"):
        c.mlp_indices([4])
    with pytest.raises(ValueError, match="2 labels for 3 components"):
        Components(torch.randn(3, 2, 2), ["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        Components(torch.randn(2, 2, 2), ["a", "a"])
    with pytest.raises(ValueError, match="no head terms"):
        Components(torch.randn(2, 2, 2), ["embed", "bias"]).head_outputs()
    layer_terms, layer_labels = c.to_layers()
    assert layer_labels == ["embed", "L0_attn", "L0_mlp", "L1_attn", "L1_mlp", "bias"]
    torch.testing.assert_close(layer_terms[1], c.terms[1:4].sum(0))
    torch.testing.assert_close(layer_terms.sum(0), c.total())
    sub = c.subset([3, 1])
    assert torch.equal(sub.terms, c.terms[:, [3, 1]])


def test_split_heads_and_decompose_components_on_a_model(tiny):
    model, images = tiny
    embed, cache = model.run_with_decomposition_cache(images)
    terms, labels = cache.decompose_layers()
    heads = cache.decompose_heads(layers=[0, 2])
    bias = cache.attention_bias_terms(layers=[0, 2])
    with_bias = split_heads(terms, labels, heads, [0, 2], bias, embed)
    residual = split_heads(terms, labels, heads, [0, 2])
    assert with_bias.labels == residual.labels
    assert with_bias.labels[:6] == ["embed", "L0H0", "L0H1", "L0H2", "L0H3", "L0_attn_bias"]
    assert "L1_attn" in with_bias.labels and "L1H0" not in with_bias.labels
    torch.testing.assert_close(with_bias.terms, residual.terms, atol=1e-5, rtol=0)
    torch.testing.assert_close(with_bias.total(), embed, atol=1e-5, rtol=0)
    back, back_labels = with_bias.to_layers()
    assert back_labels == labels
    torch.testing.assert_close(back, terms, atol=1e-5, rtol=0)

    batched = decompose_components(model, images, head_layers=[0, -1], batch_size=3, progress=False)
    assert batched.labels == with_bias.labels
    torch.testing.assert_close(batched.terms, with_bias.terms, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.embed, embed)
    split = decompose_components(
        model, images, head_layers=[1], ln_mode="split", batch_size=4, progress=False
    )
    torch.testing.assert_close(split.total(), embed, atol=1e-5, rtol=0)
    # in split mode the heads own b_O: the bias share is zero
    assert split.terms[split.index("L1_attn_bias")].abs().max() < 1e-6
    everything = decompose_components(model, images, progress=False)
    assert len(everything.heads) == 12
    with pytest.raises(IndexError, match="does not exist"):
        decompose_components(model, images, head_layers=[3], progress=False)
    with pytest.raises(ValueError, match="same index twice"):  # refused as everywhere else
        decompose_components(model, images, head_layers=[2, -1], progress=False)
    # head layers are sorted: the result does not depend on their order
    swapped = decompose_components(model, images, head_layers=[-1, 0], progress=False)
    assert swapped.labels == batched.labels
    assert torch.equal(
        swapped.terms, decompose_components(model, images, [0, 2], progress=False).terms
    )
    # no head layers: the layer terms alone
    none = decompose_components(model, images, head_layers=[], progress=False)
    assert none.labels == labels and none.heads == []
    with pytest.warns(DeprecationWarning, match="unit_output"):
        old = decompose_components(model, images, [1], normalize=True, progress=False)
    new = decompose_components(model, images, [1], unit_output=True, progress=False)
    assert torch.equal(old.terms, new.terms)
    with pytest.raises(ValueError, match="heads must be"):
        split_heads(terms, labels, heads, [0])


# ---------------------------------------------------------------------- ablated embeddings
def test_ablated_embedding_hand_computations():
    c = _synthetic()
    t = c.terms
    torch.testing.assert_close(ablated_embedding(c), c.total())  # nothing ablated
    # ablating a head = replacing it by its mean over the images
    expected = t.sum(0) - t[5] + t[5].mean(0)
    torch.testing.assert_close(ablated_embedding(c, ["L1H0"]), expected)
    torch.testing.assert_close(ablated_embedding(c, [(1, 0)]), expected)
    torch.testing.assert_close(ablated_embedding(c, [5]), expected)
    # means from a reference set
    ref = _synthetic(seed=1, n=10)
    expected = t.sum(0) - t[5] - t[4] + ref.terms[5].mean(0) + ref.terms[4].mean(0)
    torch.testing.assert_close(ablated_embedding(c, [(1, 0), "L0_mlp"], reference=ref), expected)
    torch.testing.assert_close(
        ablated_embedding(c, [(1, 0), "L0_mlp"], reference=ref.terms), expected
    )
    # keep: everything else mean-ablated; replace overrides
    new = torch.randn(40, 6)
    expected = t.mean(1).sum(0) - t[1].mean(0) + t[1] - t[2].mean(0) + new
    torch.testing.assert_close(ablated_embedding(c, keep=["L0H0"], replace={(0, 1): new}), expected)
    with pytest.raises(ValueError, match="replacement for L0H1"):
        ablated_embedding(c, replace={(0, 1): torch.randn(3, 6)})
    with pytest.raises(KeyError, match="No component"):
        ablated_embedding(c, ["L9_mlp"])
    with pytest.raises(ValueError, match="same labels"):
        ablated_embedding(c, [1], reference=Components(t, [f"x{i}" for i in range(9)]))


def test_mean_ablate_and_ablated_embedding_agree_exactly():
    c = _synthetic()
    ref = _synthetic(seed=1, n=10)
    for ablate in ([], [5], [1, 4, 8], list(range(9))):
        mask = torch.zeros(9, dtype=torch.bool)
        mask[ablate] = True
        want = ablated_embedding(c, ablate, reference=ref)
        assert torch.equal(mean_ablate(c.terms, ablate, ref.terms), want)
        assert torch.equal(mean_ablate(c.terms, mask, ref.terms), want)


def test_agrees_with_layer_level_mean_ablate():
    c = _synthetic()
    layer_terms, labels = c.to_layers()
    layer = ablated_embedding(Components(layer_terms, labels), ["L0_attn", "L1_mlp"])
    torch.testing.assert_close(layer, mean_ablate(layer_terms, [1, 4]))
    heads_of_l0 = ablated_embedding(c, ["L0H0", "L0H1", "L0_attn_bias", "L1_mlp"])
    torch.testing.assert_close(heads_of_l0, layer)


def _classification_setup(n=60, seed=3):
    """Head L1H0 carries the class; everything else is noise around a constant."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    weights = torch.eye(3, 6)
    c = _synthetic(seed=seed, n=n)
    c.terms.mul_(0.05)
    c.terms[5] += 2.0 * torch.nn.functional.one_hot(labels, 6).float()
    c.terms[0] += 0.3 * torch.randn(n, 6, generator=g)
    return c, weights, labels


def test_head_ablation_accuracy():
    c, weights, labels = _classification_setup()
    full = zero_shot_accuracy(c.total(), weights, labels)
    assert full == 1.0
    assert head_ablation_accuracy(c, [], weights, labels) == full
    assert head_ablation_accuracy(c, [(0, 0), (1, 1)], weights, labels) == pytest.approx(
        zero_shot_accuracy(ablated_embedding(c, [(0, 0), (1, 1)]), weights, labels)
    )
    ablated = head_ablation_accuracy(c, [(1, 0)], weights, labels)
    hand = c.total() - c.terms[5] + c.terms[5].mean(0)
    assert ablated == zero_shot_accuracy(hand, weights, labels)
    assert ablated < 0.6  # the class signal is gone


def test_mlp_ablation():
    c, weights, labels = _classification_setup()
    c.terms[7] += 5.0 * torch.nn.functional.one_hot((labels + 1) % 3, 6).float()  # a bad MLP
    result = mlp_ablation(c, weights, labels)
    assert result["ablated"] == ["L0_mlp", "L1_mlp"]
    assert result["base"] == zero_shot_accuracy(c.total(), weights, labels)
    hand = c.total() - c.terms[4] - c.terms[7] + c.terms[4].mean(0) + c.terms[7].mean(0)
    assert result["mlps_ablated"] == zero_shot_accuracy(hand, weights, labels)
    assert result["mlps_ablated"] > result["base"]
    assert mlp_ablation(c, weights, labels, layers=[0])["ablated"] == ["L0_mlp"]


def test_replace_heads():
    c = _synthetic()
    new = {(0, 0): torch.randn(40, 6), (1, 1): torch.randn(40, 6)}
    rest = [0, 2, 3, 4, 5, 7, 8]
    expected = c.terms[rest].mean(1).sum(0) + new[(0, 0)] + new[(1, 1)]
    torch.testing.assert_close(replace_heads(c, new), expected)
    kept = c.total() - c.terms[1] - c.terms[6] + new[(0, 0)] + new[(1, 1)]
    torch.testing.assert_close(replace_heads(c, new, ablate_rest=False), kept)


def test_textspan_replacement_and_accuracy_vs_m():
    c, weights, labels = _classification_setup(n=80)
    outputs, heads = c.head_outputs()
    pool = torch.randn(30, 6, generator=torch.Generator().manual_seed(5))
    result = textspan(outputs, pool, m=6, rank=None, heads=heads)
    rest = [0, 3, 4, 7, 8]
    for m in (1, 3):
        projected = result.project(outputs, m=m)
        hand = c.terms[rest].mean(1).sum(0) + projected.sum(0)
        expected = zero_shot_accuracy(hand, weights, labels)
        assert textspan_replacement_accuracy(c, result, weights, labels, m=m) == expected
    curve = accuracy_vs_m(c, result, weights, labels, ms=[1, 3, 6])
    assert curve["m"] == [1, 3, 6]
    assert curve["base"] == 1.0
    exact = zero_shot_accuracy(c.terms[rest].mean(1).sum(0) + outputs.sum(0), weights, labels)
    assert curve["heads_only"] == exact
    assert curve["accuracy"][-1] == exact  # m = d_embed spans everything
    assert curve["heads"] == ["L0H0", "L0H1", "L1H0", "L1H1"]
    assert accuracy_vs_m(c, result, weights, labels)["m"] == [6]
    unlabelled = textspan(outputs, pool, m=6, rank=None)
    with pytest.raises(ValueError, match="no head labels"):
        accuracy_vs_m(c, unlabelled, weights, labels)
    shuffled = accuracy_vs_m(c, unlabelled, weights, labels, ms=[6], heads=heads)
    assert shuffled["accuracy"] == [exact]


def test_existing_layer_functions_still_work():
    terms = torch.randn(6, 10, 3)
    labels = ["embed", "L0_attn", "L0_mlp", "L1_attn", "L1_mlp", "bias"]
    accs = cumulative_attention_ablation(terms, labels, torch.eye(3), torch.zeros(10).long())
    assert len(accs) == 3
    assert torch.allclose(mean_ablate(terms, []), terms.sum(0))


# ---------------------------------------------------------------------- spurious cues
def test_group_accuracy_by_hand():
    embeddings = torch.tensor([[1.0, 0], [0, 1], [1, 0], [0, 1], [0, 1]])
    r = group_accuracy(embeddings, torch.eye(2), [0, 1, 1, 1, 0], [0, 0, 1, 1, 2])
    assert r.per_group == {0: 1.0, 1: 0.5, 2: 0.0}
    assert r.counts == {0: 2, 1: 2, 2: 1}
    assert r.worst == 0.0 and r.average == pytest.approx(0.6)
    with pytest.raises(ValueError, match="must match"):
        group_accuracy(embeddings, torch.eye(2), [0, 1], [0, 1])


def _result_with_texts(rows, texts, heads):
    n, m = len(rows), len(rows[0])
    return TextSpanResult(
        indices=torch.tensor(rows),
        explained_variance=torch.ones(n, m),
        total_variance=torch.ones(n),
        basis=torch.zeros(n, m, 2),
        mean=torch.zeros(n, 2),
        texts=texts,
        heads=heads,
    )


def test_heads_by_keywords():
    texts = [
        "a photo of a lake",  # 0
        "green grass fields",  # 1
        "a red object",  # 2
        "a season of change",  # 3: 'sea' must not match 'season'
        "two circles",  # 4
        "Photo taken in Paris",  # 5
        "waves in the SEA",  # 6
    ]
    result = _result_with_texts(
        [[0, 1, 2], [2, 3, 4], [6, 5, 4], [0, 4, 2]], texts, [(2, 0), (2, 1), (3, 0), (3, 1)]
    )
    found = heads_by_keywords(result, ["lake", "grass", "field", "sea", "photo taken in"], top=3)
    assert found.heads == [(2, 0), (3, 0)]  # min_matches=2 by default
    assert found.matches["L2H0"] == ["a photo of a lake", "green grass fields"]
    assert found.counts == {"L2H0": 2, "L2H1": 0, "L3H0": 2, "L3H1": 1}
    loose = heads_by_keywords(result, ["lake"], top=1, min_matches=1)
    assert loose.heads == [(2, 0), (3, 1)]
    assert heads_by_keywords(result, ["lake", "sea"], top=1, min_matches=1).heads == [
        (2, 0),
        (3, 0),
        (3, 1),
    ]
    with pytest.raises(ValueError, match="at least one keyword"):
        heads_by_keywords(result, [" "])


def _spurious_setup(n=200, seed=0):
    """Head L1H0 encodes the place (spurious), L1H1 the label; the classifier reads both.

    Groups: 2 * label + place. On this 'test split' the place mostly disagrees with the label.
    """
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    place = torch.where(torch.rand(n, generator=g) < 0.8, 1 - labels, labels)
    groups = 2 * labels + place
    c = _synthetic(seed=seed, n=n, d=4)
    c.terms.mul_(0.01)
    signs = lambda v: (2.0 * v - 1).float()  # noqa: E731
    c.terms[5, :, 0] += 1.5 * signs(place)  # place head writes along the class axis (spurious)
    c.terms[6, :, 0] += 1.0 * signs(labels)  # label head, weaker
    weights = torch.tensor([[-1.0, 0, 0, 0], [1.0, 0, 0, 0]])
    return c, weights, labels, groups


def test_spurious_ablation_helps_and_random_baseline_is_seeded():
    c, weights, labels, groups = _spurious_setup()
    report = spurious_ablation(c, [(1, 0)], weights, labels, groups, n_random=5, seed=3)
    assert report.before.worst < 0.1  # groups where place disagrees are all wrong
    assert report.after.worst == 1.0 and report.after.average == 1.0
    hand = ablated_embedding(c, [(1, 0)])
    assert report.after == group_accuracy(hand, weights, labels, groups)
    assert report.before == group_accuracy(c.total(), weights, labels, groups)
    assert len(report.random) == 5 and all(len(h) == 1 for h in report.random_heads)
    assert report.best_random.worst == max(r.worst for r in report.random)
    again = spurious_ablation(c, [(1, 0)], weights, labels, groups, n_random=5, seed=3)
    assert again.random_heads == report.random_heads
    for heads, r in zip(report.random_heads, report.random, strict=True):
        assert r == group_accuracy(ablated_embedding(c, heads), weights, labels, groups)
    limited = spurious_ablation(
        c, [(1, 0)], weights, labels, groups, candidates=[(0, 0), (0, 1)], n_random=4
    )
    assert all(h[0] in [(0, 0), (0, 1)] for h in limited.random_heads)
    data = report.to_dict()
    assert data["heads"] == ["L1H0"] and data["after"]["worst"] == 1.0
    assert "| 1 selected heads ablated | 100.0% |" in report.to_markdown()
    with pytest.raises(ValueError, match="Cannot draw 5"):
        spurious_ablation(c, c.heads + [(0, 0)], weights, labels, groups)
    with pytest.raises(KeyError, match="No component"):
        spurious_ablation(c, [(7, 7)], weights, labels, groups)
