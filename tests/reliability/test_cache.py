"""Nothing silent in caching and decomposing: every misuse of ``run_with_cache`` and the
``ActivationCache.decompose_*`` methods gets a clear error, every result is right or refused.

* A weight edit after caching (in place, through ``.data``, an optimizer step,
  ``load_state_dict``, a dtype change) makes the cache stale: ``StaleCacheError``.
* A cache the decomposition cannot use (hooks filtered out, ``pos_slice``) is refused with
  ``IncompleteCacheError`` naming what is missing and how to get it.
* ``names_filter`` typos raise with close matches; a predicate matching nothing warns.
* ``incl_bwd=True`` needs a scalar ``metric``; with one, gradients are cached as ``*_grad``.
"""

from __future__ import annotations

import re

import pytest
import torch
from support.tiny import random_images, tiny_model

import vision_lens as vl
from vision_lens.errors import IncompleteCacheError, InputWarning, StaleCacheError

STALE = r"stale.*Re-run run_with_cache after editing weights"


@pytest.fixture
def model():
    return tiny_model()


@pytest.fixture
def images():
    return random_images(2)


def _decompose_all(cache: vl.ActivationCache) -> None:
    cache.decompose_layers()
    cache.decompose_heads()
    cache.decompose_tokens()
    cache.decompose_heads_tokens()
    cache.attention_bias_terms()


# ---------------------------------------------------------------------------- positive
@pytest.mark.parametrize("how", ["full", "decomposition", "filtered"])
@pytest.mark.parametrize("ln_mode", ["center", "split"])
def test_unchanged_model_decomposes_exactly(model, images, how, ln_mode):
    if how == "full":
        out, cache = model.run_with_cache(images)
    elif how == "decomposition":
        out, cache = model.run_with_decomposition_cache(images)
    else:
        out, cache = model.run_with_cache(images, names_filter=model.decomposition_hooks())
    with torch.no_grad():
        terms, _ = cache.decompose_layers(ln_mode=ln_mode)
        torch.testing.assert_close(terms.sum(0), out.detach(), atol=1e-5, rtol=1e-5)
        heads = cache.decompose_heads(ln_mode=ln_mode).sum((1, 2))
        tokens = cache.decompose_tokens(ln_mode=ln_mode).sum(1)
        torch.testing.assert_close(heads, tokens, atol=1e-5, rtol=1e-5)
        joint = cache.decompose_heads_tokens(ln_mode=ln_mode).sum((1, 2, 3))
        torch.testing.assert_close(joint, tokens, atol=1e-5, rtol=1e-5)


def test_harmless_changes_keep_the_cache_usable(model, images):
    """requires_grad_, a dtype round trip that is exact, and a zero_grad change no weight."""
    out, cache = model.run_with_cache(images)
    model.requires_grad_(False)
    model.to(torch.float64).to(torch.float32)
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        torch.testing.assert_close(cache.decompose_layers().terms.sum(0), out.detach())


@pytest.mark.parametrize("how", ["run_with_cache", "decomposition"])
def test_remove_batch_dim_decomposes_like_the_batch(model, how):
    x = random_images(1)
    _, batched = model.run_with_cache(x)
    if how == "run_with_cache":
        out, single = model.run_with_cache(x, remove_batch_dim=True)
    else:
        out, single = model.run_with_decomposition_cache(x)
        single = single.remove_batch_dim()
    assert single.has_batch_dim is False
    with torch.no_grad():
        torch.testing.assert_close(
            single.decompose_layers().terms, batched.decompose_layers().terms[:, 0]
        )
        torch.testing.assert_close(single.decompose_layers().terms.sum(0), out[0].detach())
        torch.testing.assert_close(single.decompose_heads(), batched.decompose_heads()[0])
        torch.testing.assert_close(single.decompose_tokens(), batched.decompose_tokens()[0])


# ---------------------------------------------------------------------------- stale caches
def _scale_data(m):
    m.blocks[0].attn.W_O.data *= 2  # .data: invisible to the version counter


def _no_grad_inplace(m):
    with torch.no_grad():
        m.blocks[1].attn.b_O.add_(0.1)


def _mlp_inplace(m):  # a weight no decomposition reads: its activations are still stale
    with torch.no_grad():
        m.blocks[0].mlp.W_in.mul_(1.5)


def _zero_head_data(m):
    m.blocks[1].attn.out_weight.data[:, :8] = 0


def _optimizer_step(m):
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    m(random_images(1)).sum().backward()
    opt.step()


def _load_other_weights(m):
    m.load_state_dict(tiny_model(seed=1).state_dict())


def _load_same_weights(m):  # refused to be safe: the counters moved
    m.load_state_dict(m.state_dict())


def _to_float64(m):
    m.to(torch.float64)


def _half_round_trip(m):
    m.half().float()


def _proj_data(m):
    m.W_proj.data.neg_()


def _ln_final_copy(m):
    with torch.no_grad():
        m.ln_final.w.copy_(torch.full_like(m.ln_final.w, 2.0))


def _replace_param(m):
    m.W_proj = torch.nn.Parameter(m.W_proj.detach().clone())


STALE_EDITS = {
    "W_O.data *= 2": (_scale_data, "blocks.0.attn.out_weight values changed"),
    "no_grad add_": (_no_grad_inplace, "blocks.1.attn.b_O edited in place"),
    "mlp in place": (_mlp_inplace, "blocks.0.mlp.in_weight edited in place"),
    "zero a head via .data": (_zero_head_data, "blocks.1.attn.out_weight values changed"),
    "optimizer step": (_optimizer_step, "edited in place"),
    "load_state_dict other": (_load_other_weights, "edited in place"),
    "load_state_dict same": (_load_same_weights, "edited in place"),
    "to(float64)": (_to_float64, "converted from torch.float32 to torch.float64"),
    "half round trip": (_half_round_trip, "values changed"),
    "W_proj.data.neg_": (_proj_data, "W_proj values changed"),
    "ln_final copy_": (_ln_final_copy, "ln_final.w edited in place"),
    "parameter replaced": (_replace_param, "W_proj replaced"),
}

DECOMPOSITIONS = {
    "layers": lambda c: c.decompose_layers(),
    "heads": lambda c: c.decompose_heads(),
    "tokens": lambda c: c.decompose_tokens(),
    "heads_tokens": lambda c: c.decompose_heads_tokens(torch.ones(2, 16)),
    "attention_bias_terms": lambda c: c.attention_bias_terms(),
}


@pytest.mark.parametrize("edit", list(STALE_EDITS))
@pytest.mark.parametrize("cached_by", ["run_with_cache", "run_with_decomposition_cache"])
def test_weight_edit_after_caching_is_refused(model, images, edit, cached_by):
    _, cache = getattr(model, cached_by)(images)
    make, what = STALE_EDITS[edit]
    make(model)
    with pytest.raises(
        StaleCacheError,
        match=r"stale.*" + re.escape(what) + r".*Re-run run_with_cache after editing weights",
    ):
        cache.decompose_layers()


@pytest.mark.parametrize("method", list(DECOMPOSITIONS))
def test_every_decomposition_checks_freshness(model, images, method):
    _, cache = model.run_with_cache(images)
    _scale_data(model)
    with pytest.raises(StaleCacheError, match=STALE):
        DECOMPOSITIONS[method](cache)


@pytest.mark.parametrize(
    "derive",
    {
        "to": lambda c: c.to("cpu"),
        "apply_slice_to_batch_dim": lambda c: c.apply_slice_to_batch_dim(slice(0, 1)),
        "apply_slice int": lambda c: c.apply_slice_to_batch_dim(0),
        "remove_batch_dim": lambda c: c.apply_slice_to_batch_dim(slice(0, 1)).remove_batch_dim(),
    }.items(),
    ids=lambda item: item[0],
)
def test_derived_caches_carry_the_record(model, images, derive):
    _, cache = model.run_with_cache(images)
    derived = derive[1](cache)
    with torch.no_grad():
        derived.decompose_layers()  # fresh: fine
    _no_grad_inplace(model)
    with pytest.raises(StaleCacheError, match=STALE):
        derived.decompose_heads()


def test_stale_tl_helpers_refuse(model, images):
    _, cache = model.run_with_cache(images)
    _no_grad_inplace(model)
    with pytest.raises(StaleCacheError, match=STALE):
        cache.compute_head_results()
    with pytest.raises(StaleCacheError):
        cache.check_fresh()


# ---------------------------------------------------------------------------- incomplete caches
INCOMPLETE = {
    "names_filter: patterns only": (
        dict(names_filter=lambda n: n.endswith("hook_pattern")),
        r"'blocks.0.hook_resid_pre'|'blocks.1.hook_resid_post'",
    ),
    "names_filter: one hook left out": (
        dict(
            names_filter=[
                n for n in tiny_model().decomposition_hooks() if n != "blocks.1.attn.hook_v"
            ]
        ),
        r"'blocks.1.attn.hook_v'",
    ),
    "pos_slice slice": (dict(pos_slice=(0, 3)), r"pos_slice=slice\(0, 3, None\)"),
    "pos_slice int": (dict(pos_slice=0), r"pos_slice=\[?0\]?, which drops"),
    "pos_slice list": (dict(pos_slice=[0, 1]), r"pos_slice=\[0, 1\]"),
}


@pytest.mark.parametrize("case", list(INCOMPLETE))
def test_incomplete_cache_is_refused_naming_what_is_missing(model, images, case):
    kwargs, missing = INCOMPLETE[case]
    _, cache = model.run_with_cache(images, **kwargs)
    with pytest.raises(IncompleteCacheError, match=missing) as info:
        cache.decompose_heads()
    message = str(info.value)
    assert "run_with_decomposition_cache" in message
    assert "decomposition_hooks()" in message
    assert isinstance(info.value, KeyError)  # still caught by ``except KeyError``


def test_missing_hooks_listed_all_at_once(model, images):
    _, cache = model.run_with_cache(images, names_filter="hook_pooled")
    with pytest.raises(IncompleteCacheError) as info:
        cache.decompose_layers()
    for name in model.decomposition_hooks():
        assert repr(name) in str(info.value)


def test_pos_slice_keeping_every_position_decomposes(model, images):
    out, cache = model.run_with_cache(images, pos_slice=(0, model.cfg.n_pos))
    with torch.no_grad():
        torch.testing.assert_close(cache.decompose_layers().terms.sum(0), out.detach())


# ---------------------------------------------------------------------------- names_filter
@pytest.mark.parametrize(
    "names_filter, error, pattern",
    [
        (
            "blocks.0.attn.hook_patern",
            ValueError,
            r"'blocks.0.attn.hook_patern'.*did you mean 'blocks.0.attn.hook_pattern'",
        ),
        (
            ["hook_embed", "blocks.9.hook_resid_post"],
            ValueError,
            r"1 hook point.*'blocks.9.hook_resid_post'",
        ),
        (("blocks.1.mlp.hook_psot",), ValueError, r"did you mean 'blocks.1.mlp.hook_post'"),
        (["hook_embed", 3], ValueError, r"must be strings"),
        (3, ValueError, r"names_filter must be"),
    ],
)
def test_names_filter_misuse_raises(model, images, names_filter, error, pattern):
    with pytest.raises(error, match=pattern):
        model.run_with_cache(images, names_filter=names_filter)


@pytest.mark.parametrize("names_filter", [lambda n: n.endswith("hook_patern"), []])
def test_names_filter_matching_nothing_warns(model, images, names_filter):
    with pytest.warns(InputWarning, match="nothing is cached"):
        _, cache = model.run_with_cache(images, names_filter=names_filter)
    assert len(cache) == 0


def test_valid_names_filter_caches_exactly_those(model, images):
    names = ["hook_embed", "blocks.1.attn.hook_pattern"]
    _, cache = model.run_with_cache(images, names_filter=tuple(names))
    assert sorted(cache.keys()) == sorted(names)


# ---------------------------------------------------------------------------- incl_bwd
@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(incl_bwd=True), ValueError, r"needs metric=.*run_with_hooks"),
        (dict(metric=lambda out: out.sum()), ValueError, r"only used with incl_bwd=True"),
        (dict(incl_bwd=True, metric="sum"), TypeError, r"metric must be a callable"),
        (dict(incl_bwd=True, metric=lambda out: out), ValueError, r"scalar tensor.*\(2, 16\)"),
        (dict(incl_bwd=True, metric=lambda out: 1.0), ValueError, r"scalar tensor.*float"),
        (dict(incl_bwd=True, metric=lambda out: out.sum().detach()), RuntimeError, r"no gradient"),
    ],
)
def test_incl_bwd_misuse_raises(model, images, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        model.run_with_cache(images, **kwargs)
    assert not model.hook_dict["hook_pooled"].fwd_hooks  # hooks removed after the error


def test_incl_bwd_under_no_grad_raises(model, images):
    with torch.no_grad(), pytest.raises(RuntimeError, match="torch.no_grad"):
        model.run_with_cache(images, incl_bwd=True, metric=lambda out: out.sum())


def test_incl_bwd_caches_gradients_of_the_metric(model, images):
    direction = torch.randn(model.cfg.d_embed)
    names = ["hook_pooled", "blocks.1.hook_resid_post", "blocks.0.attn.hook_pattern"]
    out, cache = model.run_with_cache(
        images, names_filter=names, incl_bwd=True, metric=lambda o: (o @ direction).sum()
    )
    assert sorted(cache.keys()) == sorted(names + [n + "_grad" for n in names])
    for name in names:
        assert cache[name + "_grad"].shape == cache[name].shape
    # d(metric)/d(image_embed) through the projection: W_proj @ direction per image.
    expected = (model.W_proj @ direction).detach().expand(2, -1)
    ln_free = cache["hook_pooled_grad"]  # hook_pooled is after ln_final for a cls readout
    torch.testing.assert_close(ln_free, expected)
    # Only the class token's residual reaches the output.
    grad = cache["blocks.1.hook_resid_post_grad"]
    assert grad[:, 1:].abs().max() == 0 and grad[:, 0].abs().max() > 0
    # The forward output is the model's; gradients reached the parameters, as with backward().
    torch.testing.assert_close(out.detach(), model(images).detach())
    assert model.W_proj.grad is not None
