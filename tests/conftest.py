"""Shared fixtures for the whole suite.

Layout (mirrors the library's layers, see ARCHITECTURE.md):

- ``tests/unit``: one module of the library at a time, on tiny random models.
- ``tests/parity``: converted models against their source (open_clip, timm, Hugging Face), driven
  by the one architecture registry in ``tests/support/architectures.py``.
- ``tests/e2e``: the CLI, notebooks, docs, scripts and the headless browser.
- ``tests/support``: helpers imported by tests (``from support.architectures import ...``); this
  directory is on ``sys.path`` because pytest inserts the rootdir of this ``conftest.py``.
"""

import pytest
import torch
from support.tiny import random_images, tiny_model

import vision_lens as vl


@pytest.fixture(scope="module")
def tiny_vit() -> vl.HookedViT:
    """The default tiny model (``HookedViTConfig.tiny()``, seed 0); build variants with
    ``support.tiny.tiny_model(**overrides)``."""
    return tiny_model()


@pytest.fixture(scope="module")
def tiny_images() -> torch.Tensor:
    """Four 16 x 16 random images for :func:`tiny_vit`."""
    return random_images(4)
