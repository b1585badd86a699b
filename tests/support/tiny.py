"""Tiny random HookedViTs for unit tests: one definition instead of a copy per test module."""

from __future__ import annotations

import torch

import vision_lens as vl


def tiny_config(**overrides) -> vl.HookedViTConfig:
    """``HookedViTConfig.tiny`` (two layers, four heads of width 8, 2 x 2 patches: every
    decomposition path in milliseconds) with ``overrides``."""
    return vl.HookedViTConfig.tiny(**overrides)


def tiny_model(
    *, seed: int = 0, std: float | None = None, preprocess=None, **overrides
) -> vl.HookedViT:
    """A random :func:`tiny_config` model (``init_weights(seed, std)``; ``std=None``: default)."""
    model = vl.HookedViT(tiny_config(**overrides), preprocess=preprocess)
    return model.init_weights(seed=seed) if std is None else model.init_weights(seed=seed, std=std)


def random_images(
    n: int, height: int = 16, width: int | None = None, seed: int = 0
) -> torch.Tensor:
    """``[n, 3, height, width]`` standard-normal images from a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, height, width or height, generator=gen)


# Architectures whose hook points differ (tests/unit/test_hooks.py, tests/reliability/...).
FEATURE_CONFIGS = {
    "cls": dict(),
    "map+qk_norm+gated+registers": dict(
        readout="map",
        class_token=False,
        n_registers=2,
        qk_norm=True,
        gated_mlp=True,
        act_fn="silu",
        patch_bias=True,
    ),
    "avg+fc_norm+rms": dict(readout="avg", final_ln_after_pool=True, norm_type="RMS"),
    "cls_dist+heads": dict(dist_token=True, readout="cls_dist", dist_head=True, proj_bias=True),
    "rope+qk_norm+mlp_norm+map": dict(
        rope="half", rope_per_head=True, qk_norm=True, mlp_norm=True, readout="map"
    ),
}
