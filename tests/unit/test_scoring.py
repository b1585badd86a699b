"""component_scores against a literal implementation of Algorithm 2, planted structure, the
variance variant, errors, and the figures of vision_lens.plot.scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vision_lens as vl
from vision_lens.analysis import ComponentScores, component_scores
from vision_lens.analysis.direct_effects import Components
from vision_lens.analysis.scoring import orthonormal_basis


def _literal(
    components: np.ndarray, texts: dict[str, np.ndarray], variance: bool = False
) -> np.ndarray:
    """Algorithm 2 as written, one loop per property, component and direction (numpy)."""
    z = components.sum(1)
    out = np.zeros((len(texts), components.shape[1]))
    for p, b in enumerate(texts.values()):
        basis: list[np.ndarray] = []  # classical Gram-Schmidt in the given order
        for v in b:
            w = v.astype(np.float64)
            for _ in range(2):
                for q in basis:
                    w = w - (w @ q) * q
            if np.linalg.norm(w) > 1e-8 * np.linalg.norm(v):
                basis.append(w / np.linalg.norm(w))
        B = np.stack(basis)
        s_z = z @ B.T
        for c in range(components.shape[1]):
            s_c = components[:, c] @ B.T
            if variance:
                cov = sum(np.cov(s_z[:, j], s_c[:, j], bias=True)[0, 1] for j in range(len(B)))
                out[p, c] = cov / sum(np.var(s_z[:, j]) for j in range(len(B)))
            else:
                r = [np.corrcoef(s_z[:, j], s_c[:, j])[0, 1] for j in range(len(B))]
                out[p, c] = np.mean(r)
    return out


def test_matches_literal_algorithm():
    g = torch.Generator().manual_seed(0)
    comps = torch.randn(80, 5, 12, generator=g) * torch.linspace(0.3, 2.0, 12)
    texts = {"color": torch.randn(4, 12, generator=g), "shape": torch.randn(7, 12, generator=g)}
    literal_texts = {k: v.numpy() for k, v in texts.items()}
    res = component_scores(comps, texts)
    np.testing.assert_allclose(
        res.table.numpy(), _literal(comps.numpy(), literal_texts), atol=1e-10
    )
    var = component_scores(comps, texts, method="variance")
    np.testing.assert_allclose(
        var.table.numpy(), _literal(comps.numpy(), literal_texts, variance=True), atol=1e-10
    )
    torch.testing.assert_close(var.table.sum(1), torch.ones(2, dtype=torch.float64))
    assert res.dims == [4, 7] and res.properties == ["color", "shape"]
    assert res.ids == ["C0", "C1", "C2", "C3", "C4"]


def test_planted_property_components_score_highest():
    g = torch.Generator().manual_seed(1)
    n, d = 300, 12
    comps = 0.05 * torch.randn(n, 4, d, generator=g)
    comps[:, 0, 0:3] += torch.randn(n, 3, generator=g)  # carries the colour subspace
    comps[:, 1, 3:6] += torch.randn(n, 3, generator=g)  # carries the shape subspace
    comps[:, 2, 6:] += torch.randn(n, 6, generator=g)  # carries neither
    comps[:, 3] = torch.randn(d, generator=g)  # a constant (a bias term)
    basis = torch.eye(d)
    texts = {  # four texts in a 3-d span: one is dependent and skipped
        "color": torch.randn(4, 3, generator=g) @ basis[0:3],
        "shape": torch.randn(4, 3, generator=g) @ basis[3:6],
    }
    ids = ["L1H0", "L1H1", "L1_mlp", "bias"]
    for method in ("correlation", "variance"):
        res = component_scores(comps, texts, ids=ids, method=method)
        assert res.dims == [3, 3]
        assert res.rank_components("color")[0][0] == "L1H0"
        assert res.rank_components("shape")[0][0] == "L1H1"
        assert res.rank_properties("L1H0")[0][0] == "color"
        assert res.rank_properties("L1H1")[0][0] == "shape"
        assert abs(res.scores("color")["bias"]) < 1e-12  # constant: no correlation or variance
        assert torch.isfinite(res.table).all()
        assert res.gaps("color")[0] > 0.5
    res = component_scores(comps, texts, ids=ids)
    assert res.table[0, 0] > 0.99  # colour varies only through L1H0
    assert res.ids[0].kind == "head" and res.ids[0].layer == 1


def test_representation_and_component_inputs():
    g = torch.Generator().manual_seed(2)
    comps = torch.randn(40, 3, 6, generator=g)
    texts = {"p": torch.randn(2, 6, generator=g)}
    z = comps.sum(1)
    torch.testing.assert_close(
        component_scores(comps, texts, z).table, component_scores(comps, texts).table
    )
    as_components = Components(comps.transpose(0, 1), ["embed", "L0_mlp", "bias"])
    res = component_scores(as_components, texts)
    assert res.ids == ["embed", "L0_mlp", "bias"]
    torch.testing.assert_close(res.table, component_scores(comps, texts).table)
    assert not torch.allclose(component_scores(comps, texts, z * 0 + comps[:, 0]).table, res.table)


def test_orthonormal_basis():
    g = torch.Generator().manual_seed(3)
    b = torch.randn(5, 8, generator=g)
    q = orthonormal_basis(torch.cat([b, b[:2] * 3 + b[2:4]]))  # two dependent rows
    assert q.shape == (5, 8)
    torch.testing.assert_close(q @ q.T, torch.eye(5, dtype=torch.float64))


def test_errors():
    comps = torch.randn(10, 2, 4)
    with pytest.raises(ValueError, match="method"):
        component_scores(comps, {"p": torch.randn(2, 4)}, method="spearman")
    with pytest.raises(ValueError, match="d=4"):
        component_scores(comps, {"p": torch.randn(2, 5)})
    with pytest.raises(ValueError, match="non-empty"):
        component_scores(comps, {})
    with pytest.raises(ValueError, match="span nothing"):
        component_scores(comps, {"p": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="n >= 2"):
        component_scores(comps[:1], {"p": torch.randn(2, 4)})
    with pytest.raises(ValueError, match="representation"):
        component_scores(comps, {"p": torch.randn(2, 4)}, torch.randn(9, 4))
    bad = comps.clone()
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="infinite"):
        component_scores(bad, {"p": torch.randn(2, 4)})
    with pytest.raises(ValueError, match="ids"):
        component_scores(comps, {"p": torch.randn(2, 4)}, ids=["a"])
    with pytest.raises(TypeError):
        component_scores(comps.numpy(), {"p": torch.randn(2, 4)})
    res = component_scores(comps, {"p": torch.randn(2, 4)})
    with pytest.raises(KeyError):
        res.rank_components("q")
    with pytest.raises(KeyError):
        res.rank_properties("L9H9")


def _scores() -> ComponentScores:
    ids = ["L0H0", "L0H1", "L0H2", "L2H0", "L2H2", "L2_mlp", "rest"]
    table = torch.linspace(-0.5, 1.0, 14, dtype=torch.float64).reshape(2, 7)
    return ComponentScores(table, ["color", "shape"], ids, "correlation", [3, 2])


def test_score_heatmap():
    fig = vl.plot.score_heatmap(_scores(), "shape")
    z = np.asarray(fig.data[0].z, dtype=float)
    assert z.shape == (2, 3) and list(fig.data[0].y) == ["L0", "L2"]
    assert np.isnan(z[1, 1])  # L2H1 is not a component
    assert z[1, 2] == pytest.approx(float(_scores().table[1, 4]))
    with pytest.raises(ValueError, match="property"):
        vl.plot.score_heatmap(_scores(), "texture")
    no_heads = ComponentScores(
        torch.zeros(1, 2, dtype=torch.float64), ["p"], ["L0_mlp", "rest"], "variance", [1]
    )
    with pytest.raises(ValueError, match="no head"):
        vl.plot.score_heatmap(no_heads, "p")
    with pytest.raises(TypeError):
        vl.plot.score_heatmap(torch.zeros(2, 2), "p")


def test_top_components_chart():
    fig = vl.plot.top_components_chart(_scores(), top=3)
    assert len(fig.data) == 2 and all(trace.type == "bar" for trace in fig.data)
    assert list(fig.data[0].y)[-1] == "rest"  # best on top (plotly draws bottom-up)
    assert len(vl.plot.top_components_chart(_scores(), ["shape"]).data) == 1
    with pytest.raises(TypeError):
        vl.plot.top_components_chart(_scores(), "shape")
    with pytest.raises(ValueError):
        vl.plot.top_components_chart(_scores(), top=0)
