"""Exactness of the direct-effect decomposition (docs/decomposition.md; Gandelsman et al. 2024,
§3 and A.1).

Three layers of checks:

* **Invariants on real architectures** (random open_clip towers with perturbed LayerNorms, biases
  and layer-scale gammas, see ``oc_helpers.perturb_``): the layer terms sum to open_clip's own
  image embedding; heads (+ the attention bias share) sum to their layer; tokens and heads are two
  reductions of the same head x token tensor; projecting on directions commutes with the
  decomposition; ``normalize`` gives the unit embedding. float32 within ``1e-5`` and float64
  within ``1e-10``, both relative to ``max(1, max|embedding|)``.
* **A literal reference**: per (layer, head, token) loops over raw cached activations that apply
  the LayerNorm treatment exactly as the spec writes it, with ``mu`` and ``sigma`` recomputed from
  the residual stream (never read from the library), compared per element.
* **Plumbing**: the three ways of getting a cache agree, ``remove_batch_dim``/``to``/batch
  slicing keep working, errors are clear, shapes and labels are as documented.

Every exactness test also asserts that what it could miss is large: the terms a wrong
implementation would drop or misplace (``b_O``, ``beta``, ``mu`` shares, the centring) are many
times the tolerance, so a loose comparison cannot pass by accident.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import open_clip
import pytest
import torch
import torch.nn.functional as F
from support.arch_open_clip import CLIP_TOWERS, full_size
from support.oc_helpers import build_visual, free_memory, images, max_err, perturb_

import vision_lens as vl
from vision_lens.cache import LayerTerms

MODES = ("center", "split")
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
# What a mistake must exceed so that the tolerance cannot hide it.
MARGIN = 100
# The same for single (layer, head, token) elements, held to a much tighter tolerance.
ELEMENT_MARGIN = 10

# Rows of support.arch_open_clip.FULL_SIZE, at real size (the paper's towers).
ARCHS = full_size(*CLIP_TOWERS, "ViT-B-32+layer-scale", "ViT-B-16@160")
# The three kinds of cache are compared on these (a full cache of every hook is big).
CACHE_ARCHS = ("ViT-B-32", "ViT-B-16@160")
# float64 copies of these run in the slow suite only (memory and time on CPU).
SLOW_FLOAT64 = {"ViT-L-14", "ViT-B-16"}


def _run_params(labels=tuple(ARCHS), dtypes=(torch.float32, torch.float64)):
    params = []
    for dtype in dtypes:
        for label in labels:
            marks = [pytest.mark.slow] if dtype is torch.float64 and label in SLOW_FLOAT64 else []
            name = f"{label}-{str(dtype).removeprefix('torch.')}"
            params.append(pytest.param((label, dtype), id=name, marks=marks))
    return params


def scale_of(y: torch.Tensor) -> float:
    return max(1.0, y.detach().abs().max().item())


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| relative to max(1, max |b|)."""
    return max_err(a, b) / scale_of(b)


def _everything(cache, mode="center", directions=None):
    """Every decomposition of ``cache`` by name; ``heads_tokens`` projected on ``directions``
    (default: two all-ones rows)."""
    if directions is None:
        directions = torch.ones(2, cache.model.cfg.d_embed)
    return {
        "layers": cache.decompose_layers(ln_mode=mode)[0],
        "heads": cache.decompose_heads(ln_mode=mode),
        "bias": cache.attention_bias_terms(ln_mode=mode),
        "tokens": cache.decompose_tokens(ln_mode=mode),
        "heads_tokens": cache.decompose_heads_tokens(directions=directions, ln_mode=mode),
    }


# ---------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These tests run many small ops; on a small shared CPU, torch's intra-op thread pool waits on
    descheduled workers at every op (measured: ~6 min with 2 threads on 2 busy cores vs ~70 s with
    one). Results do not depend on it; the previous setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Run:
    """One architecture in one dtype: the open_clip embedding, the HookedViT and its caches
    (built lazily, kept for the module)."""

    def __init__(self, label: str, dtype: torch.dtype):
        config, overrides, batch = ARCHS[label]
        self.label, self.dtype = label, dtype
        self.tol = TOL[dtype]
        visual = build_visual(config, **overrides).to(dtype)
        self.x = images(batch, tuple(visual.image_size), seed=1, dtype=dtype)
        with torch.no_grad():
            self.ref = visual(self.x)  # open_clip's encode_image (unnormalised)
        self.model = vl.HookedViT.from_open_clip_model(visual)
        del visual
        with torch.no_grad():
            self.out = self.model(self.x)
            self.out_decomp, self.decomp = self.model.run_with_decomposition_cache(self.x)
        self.scale = scale_of(self.ref)
        self._caches: dict[str, vl.ActivationCache] = {"decomp": self.decomp}

    def cache(self, kind: str) -> vl.ActivationCache:
        if kind not in self._caches:
            names = None if kind == "full" else self.model.decomposition_hooks()
            with torch.no_grad():
                _, self._caches[kind] = self.model.run_with_cache(self.x, names_filter=names)
        return self._caches[kind]

    def err(self, a: torch.Tensor, b: torch.Tensor) -> float:
        """Error relative to the embedding's scale."""
        return max_err(a, b) / self.scale

    def check(self, a: torch.Tensor, b: torch.Tensor, what: str) -> float:
        err = self.err(a, b)
        assert err <= self.tol, f"{self.label} {self.dtype}: {what}: error {err:.3g} > {self.tol}"
        return err


_BUILT: dict[tuple[str, torch.dtype], Run] = {}


def _get_run(label: str, dtype: torch.dtype) -> Run:
    """The Run for (label, dtype), built once for the module: the fixtures below select
    different subsets of ARCHS and pytest interleaves them, so every build is kept until the
    module ends (about 6 GB in the default run)."""
    if (label, dtype) not in _BUILT:
        _BUILT[label, dtype] = Run(label, dtype)
    return _BUILT[label, dtype]


@pytest.fixture(scope="module", autouse=True)
def _drop_runs():
    yield
    _BUILT.clear()
    free_memory()


@pytest.fixture(scope="module", params=_run_params())
def run(request):
    """Every architecture in float32 and float64."""
    return _get_run(*request.param)


@pytest.fixture(scope="module", params=_run_params(labels=CACHE_ARCHS))
def cache_run(request):
    """The architectures the three kinds of cache are compared on (the cache plumbing does not
    depend on the tower; a full cache of every hook is big)."""
    return _get_run(*request.param)


@pytest.fixture(scope="module", params=_run_params(dtypes=(torch.float32,)))
def run32(request):
    """Every architecture in float32 (shapes and labels do not depend on dtype)."""
    return _get_run(*request.param)


@pytest.fixture(params=MODES)
def mode(request):
    return request.param


# ------------------------------------------------------------------------ invariants per arch
@torch.no_grad()
def test_layers_sum_to_open_clip_embedding(run, mode):
    # The model itself matches open_clip (otherwise the comparison below means little).
    run.check(run.out, run.ref, "HookedViT(x) vs open_clip visual(x)")
    run.check(run.out_decomp, run.ref, "run_with_decomposition_cache output vs open_clip")
    # (The other two kinds of cache give the same terms: test_caches_give_the_same_decompositions.)
    terms, labels = run.decomp.decompose_layers(ln_mode=mode)
    total = terms.sum(0)
    run.check(total, run.ref, f"{mode}: sum of layer terms vs open_clip")
    run.check(total, run.out, f"{mode}: sum of layer terms vs model(x)")
    assert terms.dtype == run.dtype

    # Every term matters: leaving any single one out would break the sum by far more than the tol.
    terms, labels = run.decomp.decompose_layers(ln_mode=mode)
    sizes = terms.abs().amax(dim=(1, 2)) / run.scale
    if mode == "split":
        assert labels[-1] == "bias" and sizes[-1] == 0
        sizes = sizes[:-1]
    assert sizes.min() > MARGIN * run.tol, dict(zip(labels, sizes.tolist(), strict=False))
    if mode == "split":
        # The whole of mu and beta, X = (beta - gamma mu / sigma) @ P, is handed out in shares
        # s = 1/(2L+1); a wrong share (e.g. 1/(2L)) would break the sum by (2L+1) s X - X = X/(2L).
        model, n_layers = run.model, run.model.cfg.n_layers
        z = run.decomp[f"blocks.{n_layers - 1}.hook_resid_post"][:, 0].double()
        mu = z.mean(-1, keepdim=True)
        sigma = (z.var(-1, unbiased=False, keepdim=True) + model.cfg.eps).sqrt()
        gamma, beta = model.ln_final.w.double(), model.ln_final.b.double()
        whole = (beta - gamma * mu / sigma) @ model.W_proj.double()
        assert whole.abs().max() / (2 * n_layers) / run.scale > MARGIN * run.tol


@torch.no_grad()
def test_modes_differ_and_agree_on_the_total(run):
    center, _ = run.decomp.decompose_layers(ln_mode="center")
    split, _ = run.decomp.decompose_layers(ln_mode="split")
    # Same total, different hand-out of mu and beta: a mode switch that is ignored would fail.
    run.check(center.sum(0), split.sum(0), "center total vs split total")
    assert run.err(center[:-1], split[:-1]) > MARGIN * run.tol


@torch.no_grad()
def test_heads_plus_bias_share_equal_attention_layer(run, mode):
    cache = run.decomp
    terms, labels = cache.decompose_layers(ln_mode=mode)
    heads = cache.decompose_heads(ln_mode=mode)  # [batch, layer, head, d_embed]
    bias = cache.attention_bias_terms(ln_mode=mode)  # [batch, layer, d_embed]
    n_layers = run.model.cfg.n_layers
    attn = torch.stack([terms[labels.index(f"L{layer}_attn")] for layer in range(n_layers)], 1)
    run.check(heads.sum(2) + bias, attn, f"{mode}: heads + bias share vs L_attn")
    if mode == "split":
        assert torch.count_nonzero(bias) == 0
    else:
        # b_O is perturbed: dropping the bias share would fail.
        assert bias.abs().max() / run.scale > MARGIN * run.tol
        # And the heads alone are not the layer.
        assert run.err(heads.sum(2), attn) > MARGIN * run.tol


@torch.no_grad()
def test_tokens_and_heads_are_two_reductions_of_one_tensor(run, mode):
    cache = run.decomp
    n_layers = run.model.cfg.n_layers
    tokens = cache.decompose_tokens(ln_mode=mode)
    heads = cache.decompose_heads(ln_mode=mode)
    run.check(tokens.sum(1), heads.sum((1, 2)), f"{mode}: tokens.sum(pos) vs heads.sum(l, h)")

    subset = [0, -1, -3, 2]
    tokens_sub = cache.decompose_tokens(layers=subset, ln_mode=mode)
    heads_sub = cache.decompose_heads(layers=subset, ln_mode=mode)
    run.check(tokens_sub.sum(1), heads_sub.sum((1, 2)), f"{mode}: subset {subset}")
    # heads(layers=...) picks exactly those layers, in that order.
    wanted = [layer % n_layers for layer in subset]
    run.check(heads_sub, heads[:, wanted], f"{mode}: heads(layers=subset) vs heads[:, subset]")
    # tokens over a subset are the sum of single-layer token terms.
    singles = sum(cache.decompose_tokens(layers=layer, ln_mode=mode) for layer in subset)
    run.check(tokens_sub, singles, f"{mode}: tokens(subset) vs sum of single layers")
    # The subset really is a subset (selection is not ignored).
    assert run.err(tokens_sub, tokens) > MARGIN * run.tol


@torch.no_grad()
def test_heads_tokens_full_and_projected(run, mode):
    cache = run.decomp
    cfg = run.model.cfg
    gen = torch.Generator().manual_seed(7)
    texts = F.normalize(torch.randn(5, cfg.d_embed, generator=gen, dtype=run.dtype), dim=-1)

    layers = [-1, 1]  # the full d_embed-wide tensor only for two layers
    full = cache.decompose_heads_tokens(layers=layers, ln_mode=mode)
    assert full.shape == (run.x.shape[0], 2, cfg.n_heads, cfg.n_pos, cfg.d_embed)
    heads = cache.decompose_heads(layers=layers, ln_mode=mode)
    run.check(full.sum(3), heads, f"{mode}: heads_tokens.sum(pos) vs heads")
    tokens = cache.decompose_tokens(layers=layers, ln_mode=mode)
    run.check(full.sum((1, 2)), tokens, f"{mode}: heads_tokens.sum(l, h) vs tokens")

    projected = cache.decompose_heads_tokens(directions=texts, layers=layers, ln_mode=mode)
    run.check(projected, full @ texts.T, f"{mode}: projected vs full @ T.T")
    # All layers, projected only: summed over pos it is the heads projected.
    projected_all = cache.decompose_heads_tokens(directions=texts, ln_mode=mode)
    assert projected_all.shape == (run.x.shape[0], cfg.n_layers, cfg.n_heads, cfg.n_pos, 5)
    heads_all = cache.decompose_heads(ln_mode=mode)
    run.check(projected_all.sum(3), heads_all @ texts.T, f"{mode}: projected.sum(pos) vs heads")
    # A 1-D direction is one direction.
    single = cache.decompose_heads_tokens(directions=texts[0], layers=layers, ln_mode=mode)
    run.check(single, projected[..., :1], f"{mode}: 1-D direction")


@torch.no_grad()
def test_unit_output_gives_unit_embedding(run, mode):
    cache = run.decomp
    unit = run.ref / run.ref.norm(dim=-1, keepdim=True)
    terms, _ = cache.decompose_layers(ln_mode=mode, unit_output=True)
    err = rel_err(terms.sum(0), unit)
    assert err <= run.tol, err
    norm = run.ref.norm(dim=-1)
    assert (norm - 1).abs().min() > 0.1  # normalising really changes something
    heads = cache.decompose_heads(ln_mode=mode)
    heads_n = cache.decompose_heads(ln_mode=mode, unit_output=True)
    assert rel_err(heads_n * norm[:, None, None, None], heads) <= run.tol
    tokens = cache.decompose_tokens(ln_mode=mode, unit_output=True)
    assert rel_err(tokens * norm[:, None, None], cache.decompose_tokens(ln_mode=mode)) <= run.tol
    bias = cache.attention_bias_terms(ln_mode=mode, unit_output=True)
    bias_raw = cache.attention_bias_terms(ln_mode=mode)
    assert rel_err(bias * norm[:, None, None], bias_raw) <= run.tol
    texts = F.normalize(torch.ones(2, run.model.cfg.d_embed, dtype=run.dtype), dim=-1)
    ht = cache.decompose_heads_tokens(directions=texts, layers=-1, ln_mode=mode, unit_output=True)
    ht_raw = cache.decompose_heads_tokens(directions=texts, layers=-1, ln_mode=mode)
    assert rel_err(ht * norm[:, None, None, None, None], ht_raw) <= run.tol


@torch.no_grad()
def test_caches_give_the_same_decompositions(cache_run, mode):
    run = cache_run
    gen = torch.Generator().manual_seed(3)
    texts = torch.randn(4, run.model.cfg.d_embed, generator=gen, dtype=run.dtype)
    want = _everything(run.decomp, mode, directions=texts)
    for kind in ("full", "filtered"):
        got = _everything(run.cache(kind), mode, directions=texts)
        for key, value in want.items():
            run.check(got[key], value, f"{mode}: {kind} cache vs decomposition cache, {key}")
    # The decomposition cache keeps only class-token rows where that is all that is used.
    pattern = run.decomp["blocks.0.attn.hook_pattern"]
    assert pattern.shape[2] == 1
    assert set(run.decomp.keys()) == set(run.model.decomposition_hooks())
    assert set(run.cache("filtered").keys()) == set(run.model.decomposition_hooks())


@torch.no_grad()
def test_shapes_and_labels(run32):
    run = run32
    cfg = run.model.cfg
    b, n_layers, h, p, d = run.x.shape[0], cfg.n_layers, cfg.n_heads, cfg.n_pos, cfg.d_embed
    cache = run.decomp
    layer_terms = cache.decompose_layers()
    assert isinstance(layer_terms, LayerTerms)
    terms, labels = layer_terms
    assert terms is layer_terms.terms and labels is layer_terms.labels
    expected = ["embed"] + [f"L{i}_{k}" for i in range(n_layers) for k in ("attn", "mlp")]
    assert labels == expected + ["bias"]
    assert terms.shape == (2 * n_layers + 2, b, d)
    assert cache.decompose_heads().shape == (b, n_layers, h, d)
    assert cache.decompose_heads(layers=[-2, 0, 3]).shape == (b, 3, h, d)
    assert cache.decompose_heads(layers=-1).shape == (b, 1, h, d)
    assert cache.attention_bias_terms().shape == (b, n_layers, d)
    assert cache.decompose_tokens().shape == (b, p, d)
    assert cache.decompose_tokens(layers=range(-4, 0)).shape == (b, p, d)
    texts = torch.randn(7, d)
    assert cache.decompose_heads_tokens(directions=texts).shape == (b, n_layers, h, p, 7)
    assert cache.decompose_heads_tokens(layers=[0]).shape == (b, 1, h, p, d)


# ------------------------------------------------------------------- the full CLIP model
@torch.no_grad()
def test_layers_sum_to_clip_encode_image():
    """Against ``CLIP.encode_image`` of a whole open_clip model, converted from the CLIP object."""
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-32").eval()
    perturb_(clip.visual, seed=4)
    model = vl.HookedViT.from_open_clip_model(clip)
    x = images(2, 224, seed=2)
    ref = clip.encode_image(x)
    unit = clip.encode_image(x, normalize=True)
    del clip
    _, cache = model.run_with_decomposition_cache(x)
    for mode in MODES:
        terms, _ = cache.decompose_layers(ln_mode=mode)
        assert rel_err(terms.sum(0), ref) <= 1e-5
        terms, _ = cache.decompose_layers(ln_mode=mode, unit_output=True)
        assert rel_err(terms.sum(0), unit) <= 1e-5
        heads = cache.decompose_heads(ln_mode=mode, unit_output=True)
        bias = cache.attention_bias_terms(ln_mode=mode, unit_output=True)
        attn = torch.stack([terms[1 + 2 * layer] for layer in range(model.cfg.n_layers)], 1)
        assert rel_err(heads.sum(2) + bias, attn) <= 1e-5


# ------------------------------------------------------------------------ literal reference
class Reference(NamedTuple):
    heads_tokens: torch.Tensor  # [batch, layer, head, pos, d_embed]
    layers: torch.Tensor  # [component, batch, d_embed]: embed, L0_attn, L0_mlp, ..., bias
    bias_shares: torch.Tensor  # [batch, layer, d_embed]: attention_bias_terms
    embedding: torch.Tensor  # [batch, d_embed]: the model's output, recomputed here
    c_sum: torch.Tensor  # [batch, layer, d_model]: sum_{h,i} c_{l,h,i} + b_O (raw)


def literal_reference(model: vl.HookedViT, cache, ln_mode: str) -> Reference:
    """The spec, written out: slow loops, float64, nothing taken from the library's maths.

    Reads only raw activations (``hook_pattern``, ``hook_v``, ``hook_resid_pre/attn_out/mlp_out``,
    ``hook_resid_post``) and the weights; ``mu`` and ``sigma`` of the final LayerNorm are
    recomputed from the class token's last residual stream.
    """
    cfg = model.cfg
    n_layers, n_heads = cfg.n_layers, cfg.n_heads

    def f64(t):
        return t.detach().to(torch.float64)

    def act(name):
        return f64(cache[name])

    z = act(f"blocks.{n_layers - 1}.hook_resid_post")[:, 0]  # [batch, d_model]
    batch = z.shape[0]
    mu = z.mean(-1)
    sigma = torch.sqrt(((z - mu[:, None]) ** 2).mean(-1) + cfg.eps)
    gamma, beta, proj = f64(model.ln_final.w), f64(model.ln_final.b), f64(model.W_proj)
    s = 1.0 / (2 * n_layers + 1)
    n_pos = act("blocks.0.attn.hook_pattern").shape[-1]
    hn = n_heads * n_pos

    per_element = torch.zeros(batch, n_layers, n_heads, n_pos, cfg.d_model, dtype=torch.float64)
    c_sum = torch.zeros(batch, n_layers, cfg.d_model, dtype=torch.float64)
    bias_shares = torch.zeros(batch, n_layers, cfg.d_model, dtype=torch.float64)
    for b in range(batch):
        for layer in range(n_layers):
            W_O = f64(model.blocks[layer].attn.W_O)  # [head, d_head, d_model]
            b_O = f64(model.blocks[layer].attn.b_O)
            pattern = act(f"blocks.{layer}.attn.hook_pattern")
            v = act(f"blocks.{layer}.attn.hook_v")
            c_sum[b, layer] = b_O
            if ln_mode == "center":
                bias_shares[b, layer] = gamma * (b_O - b_O.mean()) / sigma[b]
            for h in range(n_heads):
                for i in range(n_pos):
                    c = pattern[b, h, 0, i] * v[b, i, h] @ W_O[h]
                    c_sum[b, layer] += c
                    if ln_mode == "center":
                        term = gamma * (c - c.mean()) / sigma[b]
                    else:
                        term = gamma * (c + b_O / hn - s * mu[b] / hn) / sigma[b] + s * beta / hn
                    per_element[b, layer, h, i] = term

    layer_terms = [act("blocks.0.hook_resid_pre")[:, 0]]
    for layer in range(n_layers):
        layer_terms.append(act(f"blocks.{layer}.hook_attn_out")[:, 0])
        layer_terms.append(act(f"blocks.{layer}.hook_mlp_out")[:, 0])
    mapped = []
    for c in layer_terms:  # [batch, d_model]
        if ln_mode == "center":
            mapped.append(gamma * (c - c.mean(-1, keepdim=True)) / sigma[:, None])
        else:
            mapped.append(gamma * (c - s * mu[:, None]) / sigma[:, None] + s * beta)
    bias = beta.expand(batch, -1) if ln_mode == "center" else torch.zeros_like(z)
    mapped.append(bias)
    embedding = (gamma * (z - mu[:, None]) / sigma[:, None] + beta) @ proj
    return Reference(
        heads_tokens=per_element @ proj,
        layers=torch.stack(mapped) @ proj,
        bias_shares=bias_shares @ proj,
        embedding=embedding,
        c_sum=c_sum,
    )


def perturbed_tiny(dtype: torch.dtype, seed: int = 0) -> vl.HookedViT:
    """A 3-layer random HookedViT whose LayerNorm gammas/betas are not 1/0 and whose attention
    patterns are far from uniform (std 0.3), so every ingredient of the spec matters."""
    cfg = vl.HookedViTConfig(
        n_layers=3,
        d_model=48,
        n_heads=4,
        d_mlp=96,
        d_embed=24,
        image_size=32,
        patch_size=8,
        eps=1e-4,  # larger than usual, so that an eps mistake would show
    )
    model = vl.HookedViT(cfg).init_weights(seed=seed, std=0.3)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".w"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith(".b"):
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
        # An offset, so that the residual stream has a clearly nonzero mean (random open_clip
        # towers have mu ~ 0, where a mistake in the mu share would be invisible).
        model.ln_pre.b += 1.0
    return model.to(dtype)


@pytest.fixture(scope="module")
def b32_single():
    """ViT-B-32 (perturbed), batch 1, with every hook cached: few tokens, loops stay cheap."""
    visual = build_visual("ViT-B-32", seed=11)
    model = vl.HookedViT.from_open_clip_model(visual)
    del visual
    x = images(1, 224, seed=12)
    with torch.no_grad():
        out, cache = model.run_with_cache(x)
    return model, x, out, cache


def _reference_cases():
    cases = [
        pytest.param("tiny", torch.float32, id="tiny-float32"),
        pytest.param("tiny", torch.float64, id="tiny-float64"),
        pytest.param("b32", torch.float32, id="ViT-B-32-batch1-float32"),
        pytest.param("b16", torch.float32, id="ViT-B-16-batch2-float32", marks=pytest.mark.slow),
    ]
    return cases


@pytest.fixture
def reference_setup(request, which, dtype):
    if which == "tiny":
        model = perturbed_tiny(dtype)
        x = images(2, 32, seed=5, dtype=dtype)
        with torch.no_grad():
            out, cache = model.run_with_cache(x)
        return model, x, out, cache
    if which == "b32":
        return request.getfixturevalue("b32_single")
    visual = build_visual("ViT-B-16", seed=13)
    model = vl.HookedViT.from_open_clip_model(visual)
    x = images(2, 224, seed=14)
    with torch.no_grad():
        out, cache = model.run_with_cache(x)
    return model, x, out, cache


@pytest.mark.parametrize(("which", "dtype"), _reference_cases())
@torch.no_grad()
def test_matches_literal_reference(reference_setup, which, dtype, mode):
    model, x, out, cache = reference_setup
    cfg = model.cfg
    tol = TOL[dtype] * scale_of(out)
    ref = literal_reference(model, cache, mode)

    # The raw activations are what the spec says they are.
    z_cls = cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"][:, 0]
    assert max_err(ref.embedding, out) <= tol
    assert max_err(ref.layers.sum(0), out) <= tol
    attn_out = torch.stack([cache["attn_out", i][:, 0] for i in range(cfg.n_layers)], 1)
    assert max_err(ref.c_sum, attn_out) <= TOL[dtype] * scale_of(z_cls)
    # Attention rows are far from uniform, so a token-index mix-up would show.
    row = cache["pattern", -1][:, :, 0]
    assert (row.amax(-1) / row.amin(-1)).min() > 1.5

    # Per element, and every reduction. A (layer, head, token) element is ~1/(L H N) of the
    # embedding, so elements are held to the tolerance relative to the largest element, not to the
    # embedding: far tighter.
    elem_tol = TOL[dtype] * ref.heads_tokens.abs().max().item()
    got = cache.decompose_heads_tokens(ln_mode=mode)
    assert max_err(got, ref.heads_tokens) <= elem_tol
    heads, tokens = ref.heads_tokens.sum(3), ref.heads_tokens.sum((1, 2))
    assert max_err(cache.decompose_heads(ln_mode=mode), heads) <= TOL[dtype] * scale_of(heads)
    assert max_err(cache.decompose_tokens(ln_mode=mode), tokens) <= TOL[dtype] * scale_of(tokens)
    assert max_err(cache.decompose_layers(ln_mode=mode)[0], ref.layers) <= tol
    assert max_err(cache.attention_bias_terms(ln_mode=mode), ref.bias_shares) <= tol
    gen = torch.Generator().manual_seed(0)
    texts = F.normalize(torch.randn(3, cfg.d_embed, generator=gen, dtype=torch.float64), dim=-1)
    projected = cache.decompose_heads_tokens(directions=texts.to(dtype), ln_mode=mode)
    assert max_err(projected, ref.heads_tokens @ texts.T) <= elem_tol

    # What a wrong implementation would get wrong is far above the tolerance, per element.
    z = cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"][:, 0].double()
    sigma = torch.sqrt(z.var(-1, unbiased=False) + cfg.eps)
    gamma, beta = model.ln_final.w.double(), model.ln_final.b.double()
    proj = model.W_proj.double()
    hn = cfg.n_heads * cfg.n_pos
    s = 1 / (2 * cfg.n_layers + 1)
    b_O = model.blocks[-1].attn.b_O.double()
    if mode == "split":
        pieces = {
            "b_O share": (gamma * b_O / hn / sigma[:, None]) @ proj,
            "beta share": (s * beta / hn) @ proj,
        }
    else:
        # The centring of each element: mean_d(c_{l,h,i}) * gamma / sigma @ P.
        W_O = model.blocks[-1].attn.W_O.double()
        row = cache["pattern", -1][:, :, 0].double()
        means = torch.einsum("bhi,bihe,he->bhi", row, cache["v", -1].double(), W_O.mean(-1))
        direction = (gamma / sigma[:, None]) @ proj  # [batch, d_embed]
        pieces = {
            "centring": means[..., None] * direction[:, None, None],
            "bias term": beta @ proj,
            "attention bias share": ref.bias_shares,
        }
        if which == "tiny":
            # Visible per element only in the tiny model: open_clip towers' residual stream has
            # mean ~ 0, and with 12+ layers 1/(2L) - 1/(2L+1) is small (the layer-level sums catch
            # that one: see test_layers_sum_to_open_clip_embedding).
            mu = z.mean(-1, keepdim=True)
            pieces["mu share"] = (gamma * s * mu / hn / sigma[:, None]) @ proj
            wrong_s = 1 / (2 * cfg.n_layers) - s  # forgetting the embedding's share
            pieces["share 1/(2L)"] = (wrong_s / hn * (beta - gamma * mu / sigma[:, None])) @ proj
    for what, piece in pieces.items():
        assert piece.abs().max() > ELEMENT_MARGIN * elem_tol, what
    if dtype is torch.float64:  # in float64 even a forgotten eps would be visible
        mu = z.mean(-1, keepdim=True)
        no_eps = (gamma * (z - mu) / z.var(-1, unbiased=False, keepdim=True).sqrt() + beta) @ proj
        assert max_err(no_eps, out) > MARGIN * tol

    if mode == "split":
        # The paper's formulation (A.1, eq. 9): LN(x) = [gamma/sigma] * x - [mu gamma/sigma - beta],
        # the constant handed out in equal shares; the (l, h, i) terms plus the embedding and MLP
        # terms give the image embedding.
        mlp = ref.layers[2:-1:2].sum(0)
        total = ref.heads_tokens.sum((1, 2, 3)) + ref.layers[0] + mlp
        assert max_err(total, out) <= tol
        mu = z.mean(-1, keepdim=True)
        constant = mu * gamma / sigma[:, None] - beta  # [batch, d_model]
        pieces_sum = torch.zeros_like(total)
        n_terms = 2 * cfg.n_layers + 1
        layer_inputs = [cache["resid_pre", 0][:, 0]] + [
            cache["mlp_out", i][:, 0] for i in range(cfg.n_layers)
        ]
        for c in layer_inputs:
            pieces_sum += ((gamma / sigma[:, None]) * c.double() - constant / n_terms) @ proj
        for layer in range(cfg.n_layers):
            W_O = model.blocks[layer].attn.W_O.double()
            b_O = model.blocks[layer].attn.b_O.double()
            pattern = cache["pattern", layer][:, :, 0].double()  # [batch, head, pos]
            v = cache["v", layer].double()  # [batch, pos, head, d_head]
            c = torch.einsum("bhi,bihe,hed->bhid", pattern, v, W_O) + b_O / hn
            x_lhi = (gamma / sigma[:, None, None, None]) * c - constant[:, None, None] / (
                n_terms * hn
            )
            pieces_sum += (x_lhi @ proj).sum((1, 2))
        assert max_err(pieces_sum, out) <= tol
        assert max_err(pieces_sum, total) <= tol


# --------------------------------------------------------------------------------- plumbing
@pytest.fixture(scope="module")
def tiny():
    model = perturbed_tiny(torch.float32, seed=3)
    x = images(2, 32, seed=6)
    with torch.no_grad():
        out, cache = model.run_with_decomposition_cache(x)
    return model, x, out, cache


@torch.no_grad()
def test_remove_batch_dim(b32_single, mode):
    model, x, out, full = b32_single
    want = _everything(full, mode)
    _, cache = model.run_with_cache(x, remove_batch_dim=True)
    _, decomp = model.run_with_decomposition_cache(x)
    decomp = decomp.remove_batch_dim()
    for c in (cache, decomp):
        assert isinstance(c, vl.ActivationCache) and c.has_batch_dim is False
        got = _everything(c, mode)
        assert got["layers"].shape == want["layers"][:, 0].shape  # [component, d_embed]
        for key in ("heads", "bias", "tokens", "heads_tokens"):
            assert got[key].shape == want[key].shape[1:], key
        assert max_err(got["layers"], want["layers"][:, 0]) <= 1e-5 * scale_of(out)
        for key in ("heads", "bias", "tokens", "heads_tokens"):
            assert max_err(got[key], want[key][0]) <= 1e-5 * scale_of(out), key


@torch.no_grad()
def test_to_and_batch_slicing_keep_the_class(tiny):
    model, x, out, cache = tiny
    want = _everything(cache)
    moved = cache.to("cpu")
    assert isinstance(moved, vl.ActivationCache)  # TL's `to` returns self: still ours
    for key, value in _everything(moved).items():
        assert torch.equal(value, want[key]), key
    # Batch slicing goes through TransformerLens, which builds a new cache object.
    first = cache.apply_slice_to_batch_dim(slice(0, 1))
    assert isinstance(first, vl.ActivationCache) and first.has_batch_dim
    second = cache.apply_slice_to_batch_dim(1)
    assert isinstance(second, vl.ActivationCache) and not second.has_batch_dim
    got_first, got_second = _everything(first), _everything(second)
    for key, value in want.items():
        batch_dim = 1 if key == "layers" else 0
        assert max_err(got_first[key], value.narrow(batch_dim, 0, 1)) <= 1e-6, key
        assert max_err(got_second[key], value.select(batch_dim, 1)) <= 1e-6, key


@pytest.mark.parametrize(
    "missing",
    [
        "blocks.0.hook_resid_pre",
        "ln_final.hook_scale",
        "blocks.2.hook_resid_post",
        "blocks.1.attn.hook_pattern",
        "blocks.0.attn.hook_v",
        "blocks.2.hook_attn_out",
        "blocks.1.hook_mlp_out",
    ],
)
def test_missing_hook_raises_key_error_naming_it_and_the_fix(tiny, missing):
    model, _, _, cache = tiny
    assert missing in model.decomposition_hooks()
    partial = vl.ActivationCache({k: v for k, v in cache.cache_dict.items() if k != missing}, model)
    calls = {
        "layers": lambda: partial.decompose_layers(),
        "heads": lambda: partial.decompose_heads(),
        "tokens": lambda: partial.decompose_tokens(),
        "heads_tokens": lambda: partial.decompose_heads_tokens(directions=torch.ones(1, 24)),
    }
    raised = 0
    for call in calls.values():
        try:
            call()
        except KeyError as error:
            message = str(error)
            assert repr(missing) in message
            assert "run_with_decomposition_cache" in message
            assert "decomposition_hooks()" in message
            raised += 1
    assert raised >= 1


def test_decomposition_cache_holds_no_more_than_it_shows(tiny):
    """run_with_decomposition_cache keeps copies of the class-token rows, not views that would
    keep every full activation (and, for hook_v, the fused qkv) alive."""
    model, _, _, cache = tiny
    assert cache["blocks.1.attn.hook_pattern"].shape == (2, model.cfg.n_heads, 1, model.cfg.n_pos)
    assert cache["blocks.1.hook_mlp_out"].shape == (2, 1, model.cfg.d_model)
    for name, tensor in cache.items():
        assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size(), name


def test_cache_of_other_hooks_raises_key_error(tiny):
    model, x, _, _ = tiny
    _, cache = model.run_with_cache(x, names_filter=lambda name: name.endswith("hook_pattern"))
    with pytest.raises(KeyError, match=re.escape("run_with_decomposition_cache")):
        cache.decompose_heads()


@torch.no_grad()
def test_deprecated_keywords_still_work(tiny):
    """``normalize=`` (now ``unit_output=``) and ``return_labels=`` are kept for one release."""
    _, _, _, cache = tiny
    terms, labels = cache.decompose_layers(unit_output=True)
    with pytest.warns(DeprecationWarning, match="return_labels"):
        assert torch.equal(cache.decompose_layers(unit_output=True, return_labels=False), terms)
    with pytest.warns(DeprecationWarning, match="return_labels"):
        assert cache.decompose_layers(return_labels=True).labels == labels
    with pytest.warns(DeprecationWarning, match="unit_output"):
        assert torch.equal(cache.decompose_layers(normalize=True).terms, terms)
    texts = torch.ones(2, cache.model.cfg.d_embed)
    for method, kwargs in [
        ("decompose_heads", {}),
        ("attention_bias_terms", {}),
        ("decompose_tokens", {}),
        ("decompose_heads_tokens", {"directions": texts}),
    ]:
        want = getattr(cache, method)(unit_output=True, **kwargs)
        with pytest.warns(DeprecationWarning, match=f"{method}: normalize= is now unit_output="):
            assert torch.equal(getattr(cache, method)(normalize=True, **kwargs), want)
    with pytest.raises(TypeError, match="unit_output= alone"), pytest.warns(DeprecationWarning):
        cache.decompose_heads(normalize=True, unit_output=True)


def test_repeated_layer_is_refused(tiny):
    _, _, _, cache = tiny
    with pytest.raises(ValueError, match="same index twice"):
        cache.decompose_heads(layers=[0, -3])


@pytest.mark.parametrize(
    "method", ["decompose_layers", "decompose_heads", "attention_bias_terms", "decompose_tokens"]
)
def test_bad_ln_mode(tiny, method):
    _, _, _, cache = tiny
    with pytest.raises(ValueError, match="ln_mode must be one of"):
        getattr(cache, method)(ln_mode="paper")
    with pytest.raises(ValueError, match="ln_mode"):
        cache.decompose_heads_tokens(directions=torch.ones(1, 24), ln_mode="Center")


@pytest.mark.parametrize("method", ["decompose_heads", "attention_bias_terms", "decompose_tokens"])
@pytest.mark.parametrize("layers", [3, -4, [0, 3], [100]])
def test_out_of_range_layer(tiny, method, layers):
    _, _, _, cache = tiny
    with pytest.raises(IndexError, match=r"valid indices -3\.\.2"):
        getattr(cache, method)(layers=layers)
    with pytest.raises(IndexError, match="does not exist"):
        cache.decompose_heads_tokens(layers=layers)


@pytest.mark.parametrize("method", ["decompose_heads", "attention_bias_terms", "decompose_tokens"])
def test_empty_layer_selection(tiny, method):
    _, _, _, cache = tiny
    with pytest.raises(ValueError, match="layers is empty"):
        getattr(cache, method)(layers=[])
    with pytest.raises(ValueError, match="layers is empty"):
        cache.decompose_heads_tokens(layers=range(0))


@pytest.mark.parametrize(
    ("directions", "phrase"),
    [
        (torch.ones(2, 23), r"shape \[k, 24\]"),
        (torch.ones(2, 48), r"shape \[k, 24\]"),  # d_model wide, not d_embed
        (torch.ones(24, 2), r"shape \[k, 24\]"),  # transposed
        (torch.ones(1, 2, 24), r"shape \[k, 24\]"),
        (torch.ones(0, 24), "empty"),
        (torch.ones(0), r"shape \[k, 24\]"),
    ],
)
def test_bad_directions(tiny, directions, phrase):
    _, _, _, cache = tiny
    with pytest.raises(ValueError, match=phrase):
        cache.decompose_heads_tokens(directions=directions)


def test_directions_must_be_a_tensor(tiny):
    _, _, _, cache = tiny
    with pytest.raises(TypeError, match="tensor"):
        cache.decompose_heads_tokens(directions=[[1.0] * 24])


@torch.no_grad()
def test_directions_of_another_dtype_are_cast(tiny):
    _, _, _, cache = tiny
    texts = torch.randn(3, 24, dtype=torch.float64)
    got = cache.decompose_heads_tokens(directions=texts, layers=-1)
    assert got.dtype == torch.float32
    full = cache.decompose_heads_tokens(layers=-1)
    assert max_err(got, full @ texts.float().T) <= 1e-5


def test_decompositions_are_differentiable(tiny):
    """A cache of activations that carry gradients (built by hand: run_with_cache detaches) gives
    differentiable decompositions, equal to the no-grad ones."""
    model, x, _, nograd = tiny
    x = x.clone().requires_grad_(True)
    store = {}

    def keep(tensor, hook):
        store[hook.name] = tensor

    model.run_with_hooks(x, fwd_hooks=[(name, keep) for name in model.decomposition_hooks()])
    cache = vl.ActivationCache(store, model)
    texts = torch.randn(3, 24, generator=torch.Generator().manual_seed(0))
    for mode in MODES:
        scores = cache.decompose_heads_tokens(directions=texts, layers=[0, -1], ln_mode=mode)
        heads = cache.decompose_heads(ln_mode=mode)
        tokens = cache.decompose_tokens(ln_mode=mode)
        with torch.no_grad():
            want = nograd.decompose_heads_tokens(directions=texts, layers=[0, -1], ln_mode=mode)
        assert scores.requires_grad and heads.requires_grad and tokens.requires_grad
        assert max_err(scores, want) <= 1e-6
        total = scores.sum() + heads.sum() + tokens.sum()
        (grad,) = torch.autograd.grad(total, x, retain_graph=True)
        assert grad.abs().sum() > 0
