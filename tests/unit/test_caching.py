"""What ``run_with_cache`` stores and what it derives on read (vision_lens.caching,
vision_lens.cache_entries): derived entries equal stored ones under every cache operation, are
stored instead whenever something observes them, and reduced-precision caches decompose in
float32 within their stated error."""

from __future__ import annotations

import pytest
import torch
from support.tiny import random_images

import vision_lens as vl
from vision_lens.cache_entries import Derivation, LazyEntries

DERIVED = {"attn.hook_result", "attn.hook_pattern", "mlp.hook_post", "hook_resid_mid"}


@pytest.fixture(scope="module")
def model():
    cfg = vl.HookedViTConfig.tiny(n_layers=2, n_heads=2)
    return vl.HookedViT(cfg).init_weights(seed=0).eval()


@pytest.fixture(scope="module")
def images():
    return random_images(3)


def _full(model, images, **kwargs):
    """A cache that stores every entry (every hook named explicitly)."""
    with torch.no_grad():
        return model.run_with_cache(images, names_filter=model.hook_names(), **kwargs)


def _assert_same(lazy, full, exact=True):
    """Same keys and tensors: bit for bit, or (``exact=False``, after slicing the batch, where a
    product computed at another shape may round its last bit differently) to float rounding."""
    assert list(lazy.keys()) == list(full.keys())
    for name in full.keys():
        if exact:
            assert torch.equal(lazy[name], full[name]), name
        else:
            torch.testing.assert_close(lazy[name], full[name], rtol=1e-6, atol=1e-9)


def test_every_derivable_entry_is_derived_and_equal(model, images):
    with torch.no_grad():
        out, lazy = model.run_with_cache(images)
    out_full, full = _full(model, images)
    derived = lazy.derived_names()
    assert {name.split(".", 2)[2] for name in derived} == DERIVED
    assert len(derived) == 4 * model.cfg.n_layers
    assert torch.equal(out, out_full)
    _assert_same(lazy, full)
    assert lazy.derived_names() == []  # read once, then held


def test_stack_head_results_reads_derived_results(model, images):
    with torch.no_grad():
        _, lazy = model.run_with_cache(images)
    _, full = _full(model, images)
    assert torch.equal(lazy.stack_head_results(), full.stack_head_results())


@pytest.mark.parametrize(
    "op",
    [
        lambda c: c.to("cpu"),
        lambda c: c.apply_slice_to_batch_dim(slice(1, 3)),
        lambda c: c.apply_slice_to_batch_dim(0),
    ],
    ids=["to", "batch-slice", "batch-index"],
)
def test_cache_operations_keep_entries_derived_and_equal(model, images, op):
    with torch.no_grad():
        _, lazy = model.run_with_cache(images)
    _, full = _full(model, images)
    lazy, full = op(lazy), op(full)
    assert lazy.derived_names()
    _assert_same(lazy, full, exact=False)


def test_remove_batch_dim_keeps_entries_derived(model, images):
    with torch.no_grad():
        _, lazy = model.run_with_cache(images[:1])
    _, full = _full(model, images[:1])
    lazy.remove_batch_dim()
    full.remove_batch_dim()
    assert lazy.derived_names() and not lazy.has_batch_dim
    _assert_same(lazy, full)
    with torch.no_grad():
        _, dropped = model.run_with_cache(images[:1], remove_batch_dim=True)
    assert dropped.derived_names()
    _assert_same(dropped, full)


@pytest.mark.parametrize("pos_slice", [slice(0, 2), 0, [1, 3]], ids=["slice", "int", "list"])
def test_pos_slice_derived_equal_stored(model, images, pos_slice):
    with torch.no_grad():
        _, lazy = model.run_with_cache(images, pos_slice=pos_slice)
    _, full = _full(model, images, pos_slice=pos_slice)
    # hook_result (a matrix product: its last bits depend on the shape) is stored when positions
    # are sliced; the elementwise entries stay derived.
    assert "blocks.0.attn.hook_result" not in lazy.derived_names()
    assert "blocks.0.attn.hook_pattern" in lazy.derived_names()
    _assert_same(lazy, full)
    # Entries without a position axis are not cut (TransformerLens would cut their features).
    assert lazy["hook_pooled"].shape == (3, model.cfg.d_model)


def test_a_hook_on_the_entry_or_its_sources_makes_it_stored(model, images):
    seen = []
    name = "blocks.0.attn.hook_result"
    with torch.no_grad():
        _, cache = model.run_with_cache(images)
        model.add_hook(name, lambda t, hook: seen.append(t.shape))
        model.add_hook("blocks.1.attn.hook_attn_scores", lambda t, hook: t * 2)
        try:
            _, observed = model.run_with_cache(images)
        finally:
            model.reset_hooks()
    assert name in cache.derived_names()
    assert seen == [(3, model.cfg.n_pos, 2, model.cfg.d_model)]  # the hook fired
    assert name not in observed.derived_names()
    # hook_pattern of layer 1 is stored: its source was changed by a hook.
    assert "blocks.1.attn.hook_pattern" not in observed.derived_names()
    scores = observed["blocks.1.attn.hook_attn_scores"]
    assert torch.allclose(observed["blocks.1.attn.hook_pattern"], scores.softmax(-1))


def test_explicit_names_store_and_predicates_derive(model, images):
    name = "blocks.0.attn.hook_result"
    with torch.no_grad():
        _, named = model.run_with_cache(images, names_filter=[name, "blocks.0.attn.hook_z"])
        _, predicate = model.run_with_cache(images, names_filter=lambda n: "attn.hook_" in n)
        _, no_source = model.run_with_cache(images, names_filter=lambda n: n.endswith("result"))
        out, plain = model.run_with_cache(images, return_cache_object=False)
    assert named.derived_names() == []
    assert name in predicate.derived_names()
    assert no_source.derived_names() == []  # hook_z not selected: the result itself is stored
    assert isinstance(plain, dict) and name in plain  # a plain dict holds every entry
    _, full = _full(model, images)
    assert torch.equal(plain[name], full[name])


def test_incl_bwd_stores_and_gradients_reach_the_result(model, images):
    x = images.clone().requires_grad_(True)
    _, cache = model.run_with_cache(
        x, incl_bwd=True, metric=lambda out: out.sum(), names_filter=lambda n: "hook_" in n
    )
    model.zero_grad()
    assert cache.derived_names() == []
    assert "blocks.1.attn.hook_result_grad" in cache


def test_a_tensor_hook_set_by_a_forward_hook_fires(model, images):
    grads = []

    def watch(tensor, hook):
        tensor.register_hook(grads.append)

    x = images.clone().requires_grad_(True)
    model.run_with_hooks(x, fwd_hooks=[("blocks.0.attn.hook_result", watch)]).sum().backward()
    model.zero_grad()
    assert len(grads) == 1 and grads[0].abs().sum() > 0


def test_patching_the_result_still_changes_the_output(model, images):
    def zero_head(tensor, hook):
        tensor[:, :, 0] = 0

    def zero_z(tensor, hook):
        tensor[:, :, 0] = 0

    with torch.no_grad():
        base = model(images)
        patched = model.run_with_hooks(images, fwd_hooks=[("blocks.0.attn.hook_result", zero_head)])
        via_z = model.run_with_hooks(images, fwd_hooks=[("blocks.0.attn.hook_z", zero_z)])
    assert not torch.allclose(base, patched)
    assert torch.allclose(patched, via_z, atol=1e-6)


def test_a_stale_cache_refuses_to_derive_the_result(model, images):
    with torch.no_grad():
        _, cache = model.run_with_cache(images)
        before = cache["blocks.1.attn.hook_pattern"]  # no weights read: fine after an edit
        model.blocks[0].attn.out_weight.mul_(2)
    try:
        with pytest.raises(vl.StaleCacheError):
            cache["blocks.0.attn.hook_result"]
    finally:
        with torch.no_grad():
            model.blocks[0].attn.out_weight.div_(2)
    assert before.shape[1] == model.cfg.n_heads


def test_reduced_precision_cache(model, images):
    with torch.no_grad():
        out, low = model.run_with_cache(images, cache_dtype=torch.bfloat16)
        _, full = model.run_with_cache(images)
    assert "blocks.0.attn.hook_pattern" not in low.derived_names()  # softmax would amplify
    assert "blocks.0.attn.hook_result" in low.derived_names()
    assert all(low[n].dtype == torch.bfloat16 for n in low.keys())
    heads_low = low.decompose_heads()
    heads = full.decompose_heads()
    assert heads_low.dtype == torch.float32
    # The docstring's bound: about 2^-8 of the embedding's norm per term in bfloat16.
    bound = 2**-8 * 4 * out.norm(dim=-1).max()
    assert (heads_low - heads).abs().max() <= bound
    result = low["blocks.0.attn.hook_result"].float()
    assert torch.allclose(result, full["blocks.0.attn.hook_result"], rtol=2**-6, atol=1e-3)


@pytest.mark.parametrize("bad", ["bfloat16", torch.int8, 16])
def test_cache_dtype_must_be_a_floating_dtype(model, images, bad):
    with pytest.raises(TypeError, match="cache_dtype"):
        model.run_with_cache(images, cache_dtype=bad)


def test_values_are_not_kept_as_views_of_the_fused_qkv(model, images):
    with torch.no_grad():
        _, cache = model.run_with_cache(images, names_filter="blocks.0.attn.hook_v")
    v = cache["blocks.0.attn.hook_v"]
    assert v.untyped_storage().nbytes() == v.numel() * v.element_size()


def test_lazy_entries_mapping_protocol():
    calls = []

    def double(a):
        calls.append(1)
        return 2 * a

    entries = LazyEntries(
        {"a": torch.ones(2), "c": torch.zeros(1)},
        {"b": Derivation(("a",), double)},
        order=["a", "b", "c", "unused"],
    )
    assert list(entries) == ["a", "b", "c"] and len(entries) == 3
    assert "b" in entries and "unused" not in entries
    moved = entries.map_stored(lambda name, t: t + 1)
    assert moved.derived_names() == ["b"] and torch.equal(moved["b"], torch.full((2,), 4.0))
    assert torch.equal(entries["b"], torch.full((2,), 2.0)) and entries["b"] is entries["b"]
    assert len(calls) == 2  # once per mapping, then held
    entries["b"] = torch.ones(1)
    assert torch.equal(entries["b"], torch.ones(1))
    del entries["a"]
    assert list(entries) == ["b", "c"]
    with pytest.raises(KeyError):
        entries["missing"]
    orphan = LazyEntries({}, {"x": Derivation(("gone",), double)})
    with pytest.raises(KeyError, match="'gone'"):
        orphan["x"]
