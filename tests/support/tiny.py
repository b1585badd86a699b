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
