"""attribute_variance: closed form vs brute-force projection, planted structure, errors."""

from __future__ import annotations

import pytest
import torch

from vision_lens.analysis import AttributeVariance, attribute_variance


def _brute_force(outputs: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
    """Project every centred output vector on the contrast span with a projection matrix."""
    t = torch.nn.functional.normalize(texts.double(), dim=-1)
    c = (t - t.mean(0)).T  # [d, n]
    projector = c @ torch.linalg.pinv(c)  # [d, d], onto the column span of c
    x = outputs.double() - outputs.double().mean(1, keepdim=True)
    return (x @ projector).pow(2).sum((1, 2)) / x.pow(2).sum((1, 2))


def test_matches_brute_force_projection():
    g = torch.Generator().manual_seed(0)
    outputs = torch.randn(5, 60, 24, generator=g) * torch.linspace(0.2, 2, 24)
    sets = {"a": torch.randn(6, 24, generator=g), "b": torch.randn(3, 24, generator=g)}
    res = attribute_variance(outputs, sets)
    for col, texts in enumerate(sets.values()):
        torch.testing.assert_close(res.fractions[:, col], _brute_force(outputs, texts))
    assert res.dims == [5, 2]  # n classes give n - 1 contrasts
    torch.testing.assert_close(res.chance, torch.tensor([5 / 24, 2 / 24], dtype=torch.float64))


def test_planted_heads_are_found_and_labelled():
    g = torch.Generator().manual_seed(1)
    d = 32
    color = torch.randn(4, d, generator=g)
    shape = torch.randn(5, d, generator=g)
    unit = torch.nn.functional.normalize

    def along(texts):  # variance along the texts' contrasts, plus small isotropic noise
        t = unit(texts, dim=-1)
        coeffs = torch.randn(200, len(texts), generator=g)
        return coeffs @ (t - t.mean(0)) + 0.05 * torch.randn(200, d, generator=g)

    outputs = torch.stack([along(color), along(shape), torch.randn(200, d, generator=g)])
    res = attribute_variance(outputs, {"color": color, "shape": shape}, heads=["h0", "h1", "h2"])
    assert res.fractions[0, 0] > 0.9 and res.fractions[1, 1] > 0.9
    assert res.roles() == ["color", "shape", "mixed"]  # the isotropic head sits near chance
    assert (res.fractions[2] < 3 * res.chance).all()
    table = res.to_markdown()
    assert "| *chance* |" in table and "| h0 |" in table and "color (3-d)" in table


def test_contrast_ignores_the_shared_direction():
    texts = torch.eye(6)[:3] + torch.tensor([0, 0, 0, 5.0, 0, 0])  # share a big common part
    shared = torch.nn.functional.normalize(texts, dim=-1).mean(0)
    outputs = torch.randn(40, 1) * shared  # varies only along the texts' common direction
    assert attribute_variance(outputs, {"t": texts}).fractions.item() == pytest.approx(0, abs=1e-12)
    plain = attribute_variance(outputs, {"t": texts}, contrast=False)
    assert plain.fractions.item() == pytest.approx(1.0) and plain.dims == [3]


def test_single_head_input_and_duplicate_texts():
    texts = torch.randn(3, 8)
    res = attribute_variance(torch.randn(30, 8), {"t": torch.cat([texts, texts])})
    assert res.fractions.shape == (1, 1) and res.dims == [2]  # duplicates add no dimension


@pytest.mark.parametrize(
    "outputs, sets, match",
    [
        (torch.randn(2, 10, 8), {}, "at least one text set"),
        (torch.randn(2, 10, 8), {"c": torch.randn(3, 6)}, "width 6 .* d_embed 8"),
        (torch.randn(2, 10, 8), {"c": torch.randn(1, 8)}, "one text: contrasts"),
        (torch.randn(2, 10, 8), {"c": torch.randn(0, 8)}, "non-empty"),
        (torch.randn(8), {"c": torch.randn(3, 8)}, r"\[head, images, d_embed\]"),
        (torch.ones(2, 10, 8), {"c": torch.randn(3, 8)}, r"rows \[0, 1\] do not vary"),
    ],
)
def test_errors_are_clear(outputs, sets, match):
    with pytest.raises(ValueError, match=match):
        attribute_variance(outputs, sets)


def test_roles_thresholds():
    f = torch.tensor([[0.30, 0.25], [0.10, 0.01], [0.5, 0.0]], dtype=torch.float64)
    res = AttributeVariance(f, ["a", "b"], [1, 1], torch.zeros(2))
    assert res.roles() == ["mixed", "mixed", "a"]  # no lead; too small; clear
    assert res.roles(min_fraction=0.05, min_lead=1.1) == ["a", "a", "a"]
