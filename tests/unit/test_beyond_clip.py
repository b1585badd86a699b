"""Applications of CompAlign to any ViT (vision_lens.analysis.beyond_clip and
beyond_clip_ablation): retrieval and spurious mitigation on planted structure, token heatmaps
against the aligned totals on a tiny model, the layer curve and Spearman against literal loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.tiny import random_images, tiny_model

from vision_lens.analysis import (
    AlignedComponents,
    CompAlign,
    Components,
    ComponentScores,
    SegmentationMetrics,
    aligned_token_heatmaps,
    aligned_token_scores,
    component_retrieval,
    layer_ablation_curve,
    ranking_consistency,
    spurious_mitigation,
)
from vision_lens.analysis.beyond_clip import spearman


# ---------------------------------------------------------------------- retrieval
def _planted(n: int = 40, d: int = 8, seed: int = 0):
    """Component "L1H0" carries a colour (one of two axes), the others are loud noise."""
    g = torch.Generator().manual_seed(seed)
    colour = torch.arange(n) % 2
    terms = 3 * torch.randn(n, 4, d, generator=g)
    terms[:, 0] = torch.eye(d)[colour] + 0.05 * torch.randn(n, d, generator=g)
    return AlignedComponents(terms, ["L1H0", "L1H1", "L1_mlp", "rest"]), colour


def test_text_retrieval_through_planted_component():
    aligned, colour = _planted()
    red = torch.eye(8)[0]
    hits = component_retrieval(aligned, ["L1H0"], query_text_embedding=red, k=10)
    assert hits.indices.shape == (1, 10)
    assert bool((colour[hits.indices[0]] == 0).all())
    # through the whole representation the noise wins: not all hits are red
    everything = component_retrieval(aligned, [0, 1, 2, 3], query_text_embedding=red, k=10)
    assert not bool((colour[everything.indices[0]] == 0).all())
    # the scores are cosines of the chosen components' sum with the text
    z = aligned.terms[:, [0, 1]].sum(1)
    pair = component_retrieval(aligned, ["L1H0", "L1H1"], query_text_embedding=red[None], k=3)
    expected = torch.nn.functional.cosine_similarity(z, red[None], dim=-1).topk(3)
    torch.testing.assert_close(pair.scores[0], expected.values)
    assert pair.indices[0].tolist() == expected.indices.tolist()


def test_image_retrieval_through_planted_component():
    aligned, colour = _planted()
    hits = component_retrieval(aligned, ["L1H0"], query_images=[0, 1], k=5)
    assert hits.indices.shape == (2, 5)
    assert bool((colour[hits.indices[0]] == colour[0]).all())
    assert bool((colour[hits.indices[1]] == colour[1]).all())
    assert 0 not in hits.indices[0].tolist()  # the query itself is excluded
    # the source model's Components work the same way (the paper's §6.2)
    source = Components(aligned.terms.transpose(0, 1), aligned.ids)
    same = component_retrieval(source, ["L1H0"], query_images=[0, 1], k=5)
    assert torch.equal(same.indices, hits.indices)


def test_retrieval_errors():
    aligned, _ = _planted()
    with pytest.raises(ValueError, match="exactly one"):
        component_retrieval(aligned, ["L1H0"], k=2)
    with pytest.raises(ValueError, match="exactly one"):
        component_retrieval(
            aligned, ["L1H0"], query_text_embedding=torch.ones(8), query_images=[0], k=2
        )
    with pytest.raises(KeyError, match="L5H0"):
        component_retrieval(aligned, ["L5H0"], query_images=[0], k=2)
    with pytest.raises(ValueError, match="twice"):
        component_retrieval(aligned, ["L1H0", 0], query_images=[0], k=2)
    with pytest.raises(ValueError, match="larger than"):
        component_retrieval(aligned, ["L1H0"], query_images=[0], k=40)
    with pytest.raises(ValueError, match="NaN"):
        component_retrieval(aligned, ["L1H0"], query_text_embedding=torch.full((8,), np.nan))
    with pytest.raises(ValueError, match="empty"):
        component_retrieval(aligned, [], query_images=[0])
    with pytest.raises(ValueError, match="zero vector"):
        component_retrieval(aligned, ["L1H0"], query_text_embedding=torch.zeros(8))


# ---------------------------------------------------------------------- token heatmaps
@pytest.fixture(scope="module")
def cache():
    model = tiny_model(seed=0)
    _, cache = model.run_with_decomposition_cache(random_images(3, seed=1))
    return cache


IDS = ["L0_attn", "L1H0", "L1H2", "L1_attn_bias", "L1_mlp", "rest"]


def test_token_scores_sum_to_aligned_total(cache):
    aligner = CompAlign(IDS, d_source=16, d_clip=6, seed=3)
    with torch.no_grad():  # a random, non-isometric map
        aligner.weight.normal_(generator=torch.Generator().manual_seed(0))
    texts = torch.randn(2, 6, generator=torch.Generator().manual_seed(1))
    unit = torch.nn.functional.normalize(texts, dim=-1)
    aligned = aligner.align(cache).terms  # [batch, component, d_clip]
    for chosen in (None, ["L1H0", "L1H2"], ["L0_attn", "L1_mlp"], ["L1_mlp"]):
        scores = aligned_token_scores(cache, aligner, texts, chosen)
        index = [IDS.index(c) for c in (chosen or IDS)]
        expected = aligned[:, index].sum(1) @ unit.T  # [batch, n_text]
        assert scores.tokens.shape == (3, 2, cache.model.cfg.n_pos)
        torch.testing.assert_close(scores.total(), expected, atol=1e-4, rtol=1e-4)
    heads = aligned_token_scores(cache, aligner, texts[0], ["L1H0", "L1H2"])
    # a head is a sum over tokens: nothing is left outside them
    torch.testing.assert_close(heads.other, torch.zeros(3), atol=1e-5, rtol=0)
    assert heads.tokens.shape == (3, cache.model.cfg.n_pos)
    mlp = aligned_token_scores(cache, aligner, texts[0], ["L1_mlp"])
    assert bool((mlp.tokens == 0).all())


def test_token_heatmaps_grid_and_metrics(cache):
    aligner = CompAlign(IDS, d_source=16, d_clip=6)
    text = torch.randn(6)
    heat = aligned_token_heatmaps(cache, aligner, text, ["L1H0", "L1H2"])
    rows, cols = cache.model.cfg.grid_size
    assert heat.shape == (3, rows, cols)
    tokens = aligned_token_scores(cache, aligner, text, ["L1H0", "L1H2"]).tokens
    patches = tokens[:, cache.model.readout.patch_positions]
    torch.testing.assert_close(heat.flatten(1), patches)
    two = aligned_token_heatmaps(cache, aligner, torch.stack([text, -text]))
    assert two.shape == (3, 2, rows, cols)
    up = aligned_token_heatmaps(cache, aligner, text, upsample=True)
    assert up.shape == (3, *cache.model.cfg.image_size)
    metrics = SegmentationMetrics()
    metrics.update(up, torch.rand(3, *cache.model.cfg.image_size) > 0.5)
    assert metrics.compute()["n_images"] == 3
    # a reference subtraction moves the scores by the reference mean's
    ref = torch.randn(4, 6)
    shifted = aligned_token_heatmaps(cache, aligner, text, reference_embeddings=ref)
    assert not torch.allclose(shifted, aligned_token_heatmaps(cache, aligner, text))


def test_token_heatmap_errors(cache):
    aligner = CompAlign(IDS, d_source=16, d_clip=6)
    with pytest.raises(ValueError, match="d_clip = 6"):
        aligned_token_heatmaps(cache, aligner, torch.randn(5))
    with pytest.raises(ValueError, match="NaN"):
        aligned_token_heatmaps(cache, aligner, torch.full((6,), np.nan))
    with pytest.raises(ValueError, match="zero vector"):
        aligned_token_heatmaps(cache, aligner, torch.zeros(6))
    with pytest.raises(KeyError, match="L1H1"):
        aligned_token_heatmaps(cache, aligner, torch.randn(6), ["L1H1"])
    with pytest.raises(TypeError, match="CompAlign"):
        aligned_token_heatmaps(cache, aligner.weight, torch.randn(6))


# ---------------------------------------------------------------------- layer ablation
LABELS = ["embed", "L0H0", "L0H1", "L0_attn_bias", "L0_mlp", "L1_attn", "L1_mlp", "bias"]


def test_layer_ablation_curve_matches_literal_loop():
    g = torch.Generator().manual_seed(0)
    terms = torch.randn(len(LABELS), 30, 5, generator=g)
    c = Components(terms, LABELS)
    labels = torch.randint(0, 3, (30,), generator=g)
    weights = torch.randn(3, 5, generator=g)
    for order, layer_order in (("last_first", [1, 0]), ("first_last", [0, 1])):
        curve = layer_ablation_curve(c, labels, weights, order=order)
        expected = []
        for n in range(3):
            ablated = layer_order[:n]
            embedding = torch.zeros(30, 5)
            for i, label in enumerate(LABELS):
                layer = int(label[1]) if label.startswith("L") else None
                embedding += terms[i].mean(0) if layer in ablated else terms[i]
            predictions = (embedding @ weights.T).argmax(-1)
            expected.append((predictions == labels).float().mean().item())
        assert curve.layers == [layer_order[:n] for n in range(3)]
        assert curve.accuracy == pytest.approx(expected)
    # a callable classifier (with a bias) and a reference set
    ref = Components(torch.randn(len(LABELS), 7, 5, generator=g), LABELS)
    bias = torch.randn(3, generator=g)
    curve = layer_ablation_curve(c, labels, lambda e: e @ weights.T + bias, reference=ref)
    embedding = terms[[0, 7]].sum(0) + ref.terms[1:7].mean(1).sum(0)
    full = ((embedding @ weights.T + bias).argmax(-1) == labels).float().mean().item()
    assert curve.accuracy[-1] == pytest.approx(full)


def test_layer_ablation_errors():
    c = Components(torch.randn(3, 4, 2), ["embed", "L0_mlp", "bias"])
    with pytest.raises(ValueError, match="labels"):
        layer_ablation_curve(c, [0, 1], torch.eye(2))
    with pytest.raises(ValueError, match="classifier"):
        layer_ablation_curve(c, [0] * 4, torch.eye(3))
    with pytest.raises(ValueError, match="order"):
        layer_ablation_curve(c, [0] * 4, torch.eye(2), order="middle")
    with pytest.raises(ValueError, match="No component belongs"):
        layer_ablation_curve(Components(torch.randn(1, 4, 2), ["embed"]), [0] * 4, torch.eye(2))


# ---------------------------------------------------------------------- spurious mitigation
def _waterbirds(n: int = 200, seed: int = 0):
    """L0H3 carries the background (louder than the bird, which L1H1 carries)."""
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 2, (n,), generator=g)
    agree = torch.rand(n, generator=g) < 0.8  # the background mostly matches the bird
    place = torch.where(agree, label, 1 - label)
    ids = ["L0H0", "L0H1", "L0H2", "L0H3", "L1H0", "L1H1", "rest"]
    terms = 0.1 * torch.randn(len(ids), n, 4, generator=g)
    terms[3, :, :2] += 2 * torch.eye(2)[place]
    terms[5, :, :2] += torch.eye(2)[label]
    return Components(terms, ids), label, 2 * label + place


def test_spurious_mitigation_removes_planted_cue():
    c, label, groups = _waterbirds()
    spurious = torch.tensor([0.1, 0.2, 0.0, 0.9, 0.3, 0.4, 0.0])
    core = torch.tensor([0.0, 0.1, 0.0, 0.1, 0.0, 0.9, 0.0])
    r = spurious_mitigation(
        spurious, core, c, label, groups, 1, class_weights=torch.eye(4)[:2], n_random=4
    )
    assert r.ablated == ["L0H3"]
    assert r.before.worst < 0.1 and r.after.worst > 0.9
    torch.testing.assert_close(r.score, (spurious - core).double())
    assert len(r.random) == len(r.random_components) == 4
    for drawn, result in zip(r.random_components, r.random, strict=True):
        assert len(drawn) == 1 and "rest" not in drawn
        assert (result.worst > 0.9) == (drawn == ["L0H3"])
    # scores as {component: score} dicts (ComponentScores.scores(prop)); "rest" may be unscored
    as_dict = spurious_mitigation(
        dict(zip(c.labels[:-1], spurious.tolist(), strict=False)),
        dict(zip(c.labels[:-1], core.tolist(), strict=False)),
        c, label, groups, 2, class_weights=torch.eye(4)[:2], n_random=0,
    )  # fmt: skip
    assert as_dict.ablated == ["L0H3", "L1H0"] and as_dict.best_random is None


def test_spurious_mitigation_errors():
    c, label, groups = _waterbirds(40)
    s = torch.zeros(7)
    kw = dict(class_weights=torch.eye(4)[:2])
    with pytest.raises(ValueError, match="k must be in"):
        spurious_mitigation(s, s, c, label, groups, 7, **kw)
    with pytest.raises(ValueError, match="k must be in"):
        spurious_mitigation(s, s, c, label, groups, 0, **kw)
    with pytest.raises(ValueError, match="6 scores for 7"):
        spurious_mitigation(s[:6], s, c, label, groups, 1, **kw)
    with pytest.raises(ValueError, match="NaN"):
        spurious_mitigation(s.clone().fill_(np.nan), s, c, label, groups, 1, **kw)
    with pytest.raises(ValueError, match="must match"):
        spurious_mitigation(s, s, c, label[:10], groups, 1, **kw)
    with pytest.raises(KeyError, match="L0H0"):
        spurious_mitigation({"L0H1": 1.0}, s, c, label, groups, 1, **kw)
    with pytest.raises(ValueError, match="no score"):
        spurious_mitigation({x: 0.0 for x in c.labels[:-1]}, s, c, label, groups, 1,
                            candidates=["rest"], **kw)  # fmt: skip


# ---------------------------------------------------------------------- ranking consistency
def _literal_spearman(a: list[float], b: list[float]) -> float:
    def ranks(x: list[float]) -> list[float]:
        out = []
        for v in x:  # 1 + number below, plus half of the other ties
            below = sum(w < v for w in x)
            ties = sum(w == v for w in x)
            out.append(below + (ties + 1) / 2)
        return out

    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra) ** 0.5
    vb = sum((y - mb) ** 2 for y in rb) ** 0.5
    return cov / (va * vb)


def test_spearman_matches_literal_with_ties():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        a = torch.randint(0, 4, (12,), generator=g).double()  # many ties
        b = torch.randn(12, generator=g).double()
        assert spearman(a, b) == pytest.approx(_literal_spearman(a.tolist(), b.tolist()))
    assert np.isnan(spearman(torch.ones(4), torch.arange(4.0)))
    with pytest.raises(ValueError, match="must match"):
        spearman(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="NaN"):
        spearman(torch.tensor([1.0, np.nan]), torch.ones(2))


def test_ranking_consistency_matches_literal():
    g = torch.Generator().manual_seed(1)
    ids_a = ["L0H0", "L0H1", "L1H0", "L1H1", "L1_mlp"]
    ids_b = ["L1_mlp", "L1H1", "L0H0", "L1H0", "L0H1", "L2H0"]  # other order, one extra
    ta, tb = torch.randn(3, 5, generator=g).double(), torch.randn(3, 6, generator=g).double()
    a = ComponentScores(ta, ["color", "shape", "texture"], ids_a, "correlation", [1, 1, 1])
    b = ComponentScores(tb, ["shape", "color", "location"], ids_b, "correlation", [1, 1, 1])
    rho = ranking_consistency(a, b)
    assert list(rho) == ["color", "shape"]
    for prop in rho:
        sa, sb = a.scores(prop), b.scores(prop)
        expected = _literal_spearman([sa[c] for c in ids_a], [sb[c] for c in ids_a])
        assert rho[prop] == pytest.approx(expected)
    per_component = ranking_consistency(a, b, by="component")
    assert list(per_component) == ids_a
    assert per_component["L0H0"] == pytest.approx(
        _literal_spearman(
            [a.scores(p)["L0H0"] for p in ("color", "shape")],
            [b.scores(p)["L0H0"] for p in ("color", "shape")],
        )
    )
    assert ranking_consistency(a, a) == pytest.approx({p: 1.0 for p in a.properties})
    other = ComponentScores(ta[:, :1], ["color", "shape", "texture"], ["L9H9"], "correlation",
                            [1, 1, 1])  # fmt: skip
    with pytest.raises(ValueError, match="share"):
        ranking_consistency(a, other)
    with pytest.raises(TypeError, match="ComponentScores"):
        ranking_consistency(a, ta)
    with pytest.raises(ValueError, match="by must be"):
        ranking_consistency(a, b, by="image")
