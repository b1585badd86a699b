"""vision_lens.streaming's fast paths: head and token terms with the weights folded once per pass
equal the cache's decompositions (projected after the fact), on every readout kind and in both
LayerNorm modes; the background shard writer keeps writes atomic and resumable."""

from __future__ import annotations

import pytest
import torch
from support.tiny import FEATURE_CONFIGS, random_images, tiny_model

import vision_lens as vl
from vision_lens.streaming.projections import FoldedProjection
from vision_lens.streaming.shards import file_sha256, read_shard_metadata, shard_name
from vision_lens.streaming.writer import ShardWriter

CONFIGS = {**FEATURE_CONFIGS, "map3": dict(readout="map", readout_n_heads=2)}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("ln_mode", ["center", "split"])
@pytest.mark.parametrize("k", [None, 3, 40])
def test_folded_terms_equal_the_cache(name, ln_mode, k):
    model = tiny_model(seed=1, std=0.2, n_layers=3, **CONFIGS[name])
    gen = torch.Generator().manual_seed(2)
    D = None if k is None else torch.randn(k, model.cfg.d_embed, generator=gen)
    images = random_images(5, **_size(model))
    _, cache = model.run_with_decomposition_cache(images)
    projection = FoldedProjection(model, D, ln_mode)
    for _ in range(2):  # the second batch reuses the folds
        terms = projection.terms(cache, heads=True, heads_full=True, tokens=True)
        heads = cache.decompose_heads(ln_mode=ln_mode)
        tokens = cache.decompose_tokens(ln_mode=ln_mode)
        scale = max(1.0, float(heads.abs().max()), float(tokens.abs().max()))
        tol = dict(atol=1e-5 * scale, rtol=1e-5)
        torch.testing.assert_close(terms.heads_full, heads, **tol)
        if D is not None:
            heads, tokens = heads @ D.T, tokens @ D.T
        torch.testing.assert_close(terms.heads, heads, **tol)
        torch.testing.assert_close(terms.tokens, tokens, **tol)
        _, cache = model.run_with_decomposition_cache(random_images(4, seed=1, **_size(model)))


def _size(model):
    height, width = model.cfg.image_size
    return dict(height=height, width=width)


def test_folded_terms_on_a_full_cache_and_only_what_is_asked():
    model = tiny_model(seed=0)
    D = torch.randn(4, model.cfg.d_embed, generator=torch.Generator().manual_seed(0))
    _, cache = model.run_with_cache(random_images(3))
    terms = FoldedProjection(model, D, "center").terms(cache, tokens=True)
    assert terms.heads is None and terms.heads_full is None
    torch.testing.assert_close(terms.tokens, cache.decompose_tokens() @ D.T, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="ln_mode"):
        FoldedProjection(model, D, "centre")


def test_folded_terms_refuse_a_stale_cache():
    model = tiny_model(seed=0)
    _, cache = model.run_with_decomposition_cache(random_images(2))
    projection = FoldedProjection(model, None, "center")
    projection.terms(cache, heads=True)
    with torch.no_grad():
        model.blocks[0].attn.out_weight.mul_(2)
    with pytest.raises(vl.StaleCacheError):
        projection.terms(cache, heads=True)


def test_writer_writes_in_order_and_records_checksums(tmp_path):
    tensors = [{"x": torch.full((3, 2), float(i))} for i in range(3)]
    with ShardWriter() as writer:
        for i, t in enumerate(tensors):
            writer.submit(tmp_path / shard_name(i), t, {"run": "r", "start": i, "stop": i + 1})
    for i in range(3):
        path = tmp_path / shard_name(i)
        assert read_shard_metadata(path) == {"run": "r", "start": i, "stop": i + 1}
        assert writer.sha256[path.name] == file_sha256(path)
    assert not list(tmp_path.glob(".*.tmp"))


def test_writer_error_raises_in_the_caller_and_body_errors_win(tmp_path):
    missing = tmp_path / "no" / "such" / "folder"
    writer = ShardWriter()
    writer.submit(missing / "a.safetensors", {"x": torch.zeros(1)}, {})
    with pytest.raises(FileNotFoundError):
        writer.close()
    # The body's error is the one raised; the write in flight still completes.
    with pytest.raises(KeyError, match="body"), ShardWriter() as writer:
        writer.submit(tmp_path / "b.safetensors", {"x": torch.zeros(1)}, {"run": "b"})
        raise KeyError("body")
    assert read_shard_metadata(tmp_path / "b.safetensors") == {"run": "b"}


def test_interrupted_pass_resumes_bit_identical(tmp_path, monkeypatch):
    """A pass that fails after some shards were handed to the writer keeps them complete, and
    rerunning it skips them and ends equal to an uninterrupted pass."""
    from vision_lens.streaming import run as run_module

    model = tiny_model(seed=0)
    images = random_images(14)
    what = "heads,tokens,head_moments"
    D = torch.randn(5, model.cfg.d_embed, generator=torch.Generator().manual_seed(0))
    kw = dict(batch_size=2, shard_size=4, directions=D, progress=False)
    reference = vl.collect(model, images, what, tmp_path / "ref", **kw)

    real_shard, calls = run_module._shard, []

    def failing_shard(*args, **kwargs):
        calls.append(args[3])
        if len(calls) == 3:
            raise RuntimeError("interrupted")
        return real_shard(*args, **kwargs)

    monkeypatch.setattr(run_module, "_shard", failing_shard)
    with pytest.raises(RuntimeError, match="interrupted"):
        vl.collect(model, images, what, tmp_path / "resumed", **kw)
    assert [p.name for p in sorted((tmp_path / "resumed").glob("shard-*"))] == [
        shard_name(0),
        shard_name(1),
    ]
    monkeypatch.setattr(run_module, "_shard", real_shard)
    resumed = vl.collect(model, images, what, tmp_path / "resumed", **kw)
    assert [s["sha256"] for s in reference.manifest["shards"]] == [
        s["sha256"] for s in resumed.manifest["shards"]
    ]
    for name in ("heads", "tokens"):
        assert torch.equal(reference[name].load(), resumed[name].load())
    assert all(
        torch.equal(reference.head_moments()[k], resumed.head_moments()[k])
        for k in reference.head_moments()
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int64, torch.bool])
def test_tensor_hash_is_unchanged(dtype):
    """Hashing the bytes in place gives the digest of the copied bytes (runs made before resume
    with the same identity)."""
    import hashlib

    from vision_lens.streaming.shards import tensor_hash

    x = (torch.randn(3, 5, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
    digest = hashlib.sha256(f"{x.dtype}{tuple(x.shape)}".encode())
    digest.update(x.reshape(-1).view(torch.uint8).numpy().tobytes())
    assert tensor_hash(x) == digest.hexdigest()
    assert tensor_hash(x[:, 1:]) == tensor_hash(x[:, 1:].contiguous())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_collect_on_every_readout_equals_the_cache(name, tmp_path):
    """The lean capture (stacked values and pattern rows, the readout frozen from the kept
    entries) gives the cache's decompositions on every readout kind."""
    model = tiny_model(seed=1, std=0.2, n_layers=3, **CONFIGS[name])
    images = random_images(7, **_size(model))
    D = torch.randn(6, model.cfg.d_embed, generator=torch.Generator().manual_seed(3))
    run = vl.collect(
        model,
        images,
        "heads,tokens,layers,head_moments,hook:blocks.1.attn.hook_v",
        tmp_path,
        batch_size=3,
        directions=D,
        ln_mode="split",
        progress=False,
    )
    _, cache = model.run_with_cache(images)
    heads = cache.decompose_heads(ln_mode="split")
    tokens = cache.decompose_tokens(ln_mode="split")
    layers = cache.decompose_layers(ln_mode="split").terms.transpose(0, 1)
    scale = max(1.0, float(heads.abs().max()), float(tokens.abs().max()))
    tol = dict(atol=1e-5 * scale, rtol=1e-5)
    torch.testing.assert_close(run["heads"].load(), heads @ D.T, **tol)
    torch.testing.assert_close(run["tokens"].load(), tokens @ D.T, **tol)
    torch.testing.assert_close(run["layers"].load(), layers @ D.T, **tol)
    torch.testing.assert_close(run.head_moments()["sum"], heads.double().sum(0), **tol)
    torch.testing.assert_close(
        run["hook:blocks.1.attn.hook_v"].load(), cache["blocks.1.attn.hook_v"]
    )


def test_capture_keeps_the_cache_entries_and_reuses_its_buffers():
    from vision_lens.streaming.capture import BatchCapture
    from vision_lens.streaming.products import parse_products

    model = tiny_model(seed=0)
    capture = BatchCapture(model, parse_products("heads", model))
    images = random_images(4)
    kept = capture.run(images)
    embed, cache = model.run_with_decomposition_cache(images)
    assert torch.equal(kept.embed, embed)
    for layer in range(model.cfg.n_layers):
        assert torch.equal(kept.values[:, :, layer], cache[f"blocks.{layer}.attn.hook_v"])
        assert torch.equal(kept.pattern[:, layer], cache[f"blocks.{layer}.attn.hook_pattern"])
    lin, _ = cache.frozen_readout()
    assert torch.equal(kept.readout().w, lin.w) and torch.equal(kept.readout().M, lin.M)
    values = kept.values
    again = capture.run(random_images(4, seed=1))
    assert again.values.data_ptr() == values.data_ptr()  # same batch size: reused
    assert capture.run(random_images(3)).values.shape[0] == 3  # another size: a new buffer
    # Only what the products read is hooked: no attention hook without head terms.
    assert capture.run(images, ()).values is not None
    embed_only = BatchCapture(model, parse_products("embed", model)).run(images)
    assert embed_only.values is None and embed_only.entries == {}
    assert torch.equal(embed_only.embed, model(images))  # the fused forward, unhooked
