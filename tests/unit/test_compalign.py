"""CompAlign: planted maps recovered, the orthogonality penalty, early stopping, save/load,
streaming, errors, and an end-to-end pass from a tiny HookedViT."""

from __future__ import annotations

import pytest
import torch
from support.tiny import random_images, tiny_model

from vision_lens.analysis import (
    CompAlign,
    alignment_report,
    component_scores,
    decompose_components,
    select_components,
)
from vision_lens.analysis.direct_effects import Components
from vision_lens.cache import ComponentId
from vision_lens.errors import CheckpointError

IDS = ["L2H0", "L2H1", "L2_mlp", "rest"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Thousands of tiny steps: thread hand-offs would dominate on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _orthogonal(c: int, d_src: int, d_clip: int, gen: torch.Generator) -> torch.Tensor:
    q = torch.linalg.qr(torch.randn(c, d_clip, d_src, generator=gen)).Q  # [c, d_clip, d_src]
    return q.transpose(1, 2)  # [c, d_src, d_clip], W W^T = I


def _planted(n: int, weight: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, weight.shape[0], weight.shape[1], generator=gen)
    return x, torch.einsum("ncs,csd->nd", x, weight)


def test_recovers_planted_orthogonal_maps():
    gen = torch.Generator().manual_seed(0)
    planted = 3.0 * _orthogonal(4, 8, 12, gen)  # CLIP's scale is arbitrary: cosine ignores it
    x, z = _planted(1500, planted, seed=1)
    aligner = CompAlign(IDS, d_source=8, d_clip=12, seed=5)
    hist = aligner.fit(x, z, epochs=40, lr=2e-2, patience=100, progress=False)
    assert hist.val_cosine[-1] > 0.99
    x_new, z_new = _planted(400, planted, seed=2)  # fresh images
    report = alignment_report(aligner, x_new, z_new)
    assert report.cosine > 0.99 and report.n == 400
    # each component's map is recovered, not only their sum (up to CLIP's scale)
    mapped, ids = aligner.align(x_new)
    assert ids == IDS and all(isinstance(i, ComponentId) for i in ids)
    truth = torch.einsum("ncs,csd->ncd", x_new, planted)
    per_component = torch.nn.functional.cosine_similarity(mapped, truth, dim=-1).mean(0)
    assert per_component.min() > 0.98
    ratio = aligner.weight.detach() / planted
    torch.testing.assert_close(aligner.weight.detach(), planted / 3.0, atol=0.08, rtol=0)
    assert torch.isfinite(ratio).all()


def test_orthogonality_penalty_drives_maps_to_isometries():
    gen = torch.Generator().manual_seed(3)
    planted = torch.randn(2, 6, 9, generator=gen)  # far from orthogonal
    x, z = _planted(600, planted, seed=4)
    loose = CompAlign(["a", "b"], 6, 9, seed=1)
    loose.fit(x, z, epochs=30, lr=2e-2, lam=0.0, patience=100, progress=False)
    strict = CompAlign(["a", "b"], 6, 9, seed=1)
    strict.fit(x, z, epochs=30, lr=2e-2, lam=10.0, patience=100, progress=False)
    w = strict.weight.detach()
    gram = w @ w.transpose(1, 2)  # [c, d_src, d_src]: f^T f with d_src <= d_clip
    torch.testing.assert_close(gram, torch.eye(6).expand(2, 6, 6), atol=0.05, rtol=0)
    assert float(strict.penalty().detach()) < 0.1 < float(loose.penalty().detach())
    # the squared form and the wide case (d_source > d_clip: f f^T = I)
    wide = CompAlign(["a"], 10, 4, seed=0)
    assert float(wide.penalty("squared").detach()) < 1e-8
    with torch.no_grad():
        wide.weight.mul_(2.0)
    assert float(wide.penalty("squared").detach()) == pytest.approx(
        4 * 9, rel=1e-4
    )  # (4 - 1)^2 * 4
    assert float(wide.penalty().detach()) == pytest.approx(6.0, rel=1e-4)  # sqrt(36)


def test_early_stopping_stops_and_keeps_best_maps():
    gen = torch.Generator().manual_seed(7)
    x, z = torch.randn(400, 2, 5, generator=gen), torch.randn(400, 3, generator=gen)  # no signal
    aligner = CompAlign(["a", "b"], 5, 3)
    hist = aligner.fit(
        x, z, epochs=500, lr=1e-2, eval_every=5, patience=3, batch_size=32, progress=False
    )
    assert hist.stopped_early and hist.epochs < 500
    assert len(hist.val_cosine) >= 4
    assert hist.best_step in hist.steps
    # the kept maps are those of the best held-out cosine: re-evaluating gives it back
    perm = torch.randperm(400, generator=torch.Generator().manual_seed(0))[:40]
    kept = alignment_report(aligner, x[perm], z[perm]).cosine
    assert kept == pytest.approx(max(hist.val_cosine), abs=1e-5)


def test_streaming_batches_and_explicit_validation():
    gen = torch.Generator().manual_seed(0)
    planted = _orthogonal(2, 4, 6, gen)
    x, z = _planted(640, planted, seed=9)
    batches = list(zip(x.split(64), z.split(64), strict=True))
    aligner = CompAlign(["a", "b"], 4, 6)
    hist = aligner.fit(batches, epochs=40, lr=2e-2, eval_every=9, patience=50, progress=False)
    assert hist.val_cosine[-1] > 0.99  # the first batch is held out
    explicit = CompAlign(["a", "b"], 4, 6)
    hist = explicit.fit(x[64:], z[64:], validation=(x[:64], z[:64]), epochs=3, progress=False)
    assert hist.epochs == 3 and len(hist.val_cosine) == 3


def test_save_load_round_trip(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x, z = torch.randn(100, 4, 3, generator=gen), torch.randn(100, 5, generator=gen)
    aligner = CompAlign(IDS, 3, 5)
    aligner.fit(x, z, epochs=2, progress=False)
    folder = aligner.save(tmp_path / "aligner")
    back = CompAlign.load(folder)
    assert back.ids == IDS and [i.kind for i in back.ids] == ["head", "head", "mlp", "rest"]
    assert back.ids[1].layer == 2 and back.ids[1].head == 1
    torch.testing.assert_close(back.weight, aligner.weight)
    torch.testing.assert_close(back.align(x).terms, aligner.align(x).terms)
    assert back.history.val_cosine == aligner.history.val_cosine
    with pytest.raises(FileNotFoundError):
        CompAlign.load(tmp_path / "missing")
    (folder / "compalign.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError):
        CompAlign.load(folder)


def test_clear_errors():
    aligner = CompAlign(["a", "b"], 4, 3)
    x, z = torch.randn(10, 2, 4), torch.randn(10, 3)
    with pytest.raises(ValueError, match="d_source=4"):
        aligner.fit(torch.randn(10, 2, 5), z, progress=False)
    with pytest.raises(ValueError, match="d_clip = 3"):
        aligner.fit(x, torch.randn(10, 4), progress=False)
    with pytest.raises(ValueError, match="same images"):
        aligner.fit(x, z[:9], progress=False)
    bad = x.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        aligner.fit(bad, z, progress=False)
    with pytest.raises(ValueError, match="empty"):
        aligner.fit(x[:0], z[:0], progress=False)
    with pytest.raises(ValueError, match="zero vector"):
        aligner.fit(x, torch.cat([torch.zeros(1, 3), z[1:]]), progress=False)
    with pytest.raises(ValueError, match="No training batches"):
        aligner.fit([], progress=False)
    with pytest.raises(TypeError, match="pairs"):
        aligner.fit([x, x], progress=False)
    with pytest.raises(ValueError, match="empty"):
        CompAlign([], 4, 3)
    with pytest.raises(TypeError):
        aligner.align([[1.0]])
    with pytest.raises(ValueError, match="labels"):
        alignment_report(aligner, x, z, torch.randn(2, 3), None)


def test_select_components():
    labels = ["embed", "L0H0", "L0H1", "L0_attn_bias", "L0_mlp", "L1H0", "L1H1", "L1_attn_bias"]
    labels += ["L1_mlp", "bias"]
    comps = Components(torch.randn(10, 3, 4), labels)
    out = select_components(comps, last_blocks=1)
    assert out.labels == ["L1H0", "L1H1", "L1_attn_bias", "L1_mlp", "rest"]
    torch.testing.assert_close(out.total(), comps.total())
    assert select_components(comps, heads=False, mlps=False).labels == [
        "L0_attn",
        "L1_attn",
        "rest",
    ]
    assert select_components(comps, ids=["L0H1", "rest"]).labels == ["L0H1", "rest"]
    assert select_components(comps, mlps=False, attention=True, rest=False).n_images == 3
    with pytest.raises(ValueError, match="No component"):
        select_components(comps, ids=["L5H0"])


def test_end_to_end_tiny_vit_into_a_random_space():
    model = tiny_model(seed=0)
    images = random_images(96, seed=1)
    comps = decompose_components(model, images, head_layers=[-1], batch_size=48, progress=False)
    comps = select_components(comps, last_blocks=1)  # L1 heads, bias share, MLP, rest
    gen = torch.Generator().manual_seed(0)
    target_map = torch.randn(model.cfg.d_embed, 6, generator=gen)
    clip = comps.total() @ target_map  # a "CLIP" space: a random linear view of the output
    aligner = CompAlign.for_components(comps, d_clip=6)
    hist = aligner.fit(comps, clip, epochs=20, lr=1e-2, batch_size=16, progress=False)
    assert hist.val_cosine[-1] > hist.val_cosine[0]
    aligned = aligner.align(comps)
    assert aligned.terms.shape == (96, len(comps.labels), 6)
    _, cache = model.run_with_decomposition_cache(images[:4])
    torch.testing.assert_close(aligner.align(cache).terms, aligned.terms[:4], atol=1e-4, rtol=1e-4)
    scores = component_scores(aligned, {"p": torch.randn(3, 6, generator=gen)})
    assert scores.table.shape == (1, len(comps.labels)) and torch.isfinite(scores.table).all()


def test_select_components_follows_the_order_of_ids():
    from vision_lens.analysis.direct_effects import Components
    from vision_lens.analysis.selection import select_components

    terms = torch.randn(4, 3, 5)
    c = Components(terms, ["embed", "L0_attn", "L0_mlp", "L1_mlp"])
    out = select_components(c, ids=["L1_mlp", "rest", "L0_attn"])
    assert out.labels == ["L1_mlp", "rest", "L0_attn"]
    torch.testing.assert_close(out.terms[0], terms[3])
    torch.testing.assert_close(out.terms[1], terms[0] + terms[2])
    torch.testing.assert_close(out.terms[2], terms[1])
    with pytest.raises(ValueError, match="twice"):
        select_components(c, ids=["L1_mlp", "L1_mlp"])


def test_align_and_report_pair_maps_with_their_components_in_any_order():
    from vision_lens.analysis.direct_effects import Components

    terms = torch.randn(3, 16, 4)
    c = Components(terms, ["L0_mlp", "L1_mlp", "rest"])
    aligner = CompAlign(["L1_mlp", "rest", "L0_mlp"], 4, 3)
    aligned = aligner.align(c)
    expected = torch.einsum("ns,sd->nd", terms[1], aligner.weight[0].detach())
    torch.testing.assert_close(aligned.terms[:, 0], expected)
    z = aligned.terms.sum(1)
    assert alignment_report(aligner, c, z).cosine == pytest.approx(1.0, abs=1e-5)


def test_load_keeps_the_saved_maps_exactly(tmp_path):
    aligner = CompAlign(["L0_mlp", "rest"], 4, 3, seed=3)
    loaded = CompAlign.load(aligner.save(tmp_path))
    assert torch.equal(loaded.weight, aligner.weight)
    with pytest.raises(ValueError, match="weight must be"):
        CompAlign(["L0_mlp"], 4, 3, weight=torch.zeros(2, 4, 3))
