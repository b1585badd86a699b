"""The one architecture registry: every family the parity tests cover, from every source.

Each row says how to build a small source model with random weights (every constant-initialised
parameter perturbed, so a dropped bias or norm shows), how to convert it, and what the source
itself outputs (and its residual stream after every block). ``tests/test_parity.py`` runs every
row in float32 and float64; adding a family is adding a row to one of the per-source tables
(``OPEN_CLIP_ROWS`` in ``arch_open_clip.py``, ``TIMM_ROWS`` in ``arch_timm.py``, ``HF_ROWS`` in
``arch_hf.py``). ``scripts/make_supported_models.py`` renders the same table into
``docs/supported-models.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

import vision_lens as vl


class Arch(NamedTuple):
    """One registry row."""

    source: str  # "open_clip", "timm" or "hf"
    label: str
    build: Callable[[], nn.Module]  # the source model, eval mode, float32
    convert: Callable[[nn.Module], vl.HookedViT]
    reference: Callable[[nn.Module, Tensor], tuple[Tensor, list[Tensor]]]  # output, blocks
    image_size: Callable[[nn.Module], tuple[int, int]]
    slow: bool = False


@torch.no_grad()
def _with_block_outputs(
    model: nn.Module, blocks: nn.Module, x: Tensor
) -> tuple[Tensor, list[Tensor]]:
    """``model(x)`` and the output of every block in ``blocks`` (forward hooks, removed after)."""
    outs: list[Tensor] = []
    handles = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in blocks]
    try:
        return model(x), outs
    finally:
        for handle in handles:
            handle.remove()


# ----------------------------------------------------------------------------------- open_clip
def _open_clip_rows() -> list[Arch]:
    from support.arch_open_clip import OPEN_CLIP_ROWS, build_tower
    from support.oc_helpers import build_visual, open_clip_block_outputs

    classic = [
        ("ViT-B-32 (4 layers)", "ViT-B-32", {"layers": 4}),
        ("ViT-B-32-quickgelu (4 layers)", "ViT-B-32-quickgelu", {"layers": 4}),
        ("ViT-M-16-alt (layer scale)", "ViT-M-16-alt", {"layers": 4}),
    ]
    rows = [(label, name, over, build_visual) for label, name, over in classic]
    rows += [(label, name, over, build_tower) for label, name, over in OPEN_CLIP_ROWS]

    def reference(visual: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        if hasattr(visual, "transformer"):
            return open_clip_block_outputs(visual, x)
        return _with_block_outputs(visual, visual.trunk.blocks, x)

    def size(visual: nn.Module) -> tuple[int, int]:
        if hasattr(visual, "image_size"):
            s = visual.image_size
        else:
            s = visual.trunk.patch_embed.img_size
        return (s, s) if isinstance(s, int) else tuple(s)

    return [
        Arch(
            "open_clip",
            label,
            (lambda n=name, o=over, b=build: b(n, **o)),
            vl.HookedViT.from_open_clip_model,
            reference,
            size,
        )
        for label, name, over, build in rows
    ]


# ----------------------------------------------------------------------------------- timm
def _timm_rows() -> list[Arch]:
    from support.arch_timm import TIMM_ROWS, make_timm_model

    def reference(model: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        return _with_block_outputs(model, model.blocks, x)

    def size(model: nn.Module) -> tuple[int, int]:
        return tuple(model.patch_embed.img_size)

    return [
        Arch(
            "timm",
            label,
            (lambda n=name, k=kwargs: make_timm_model(n, k)),
            vl.HookedViT.from_timm,
            reference,
            size,
        )
        for label, name, kwargs in TIMM_ROWS
    ]


# ----------------------------------------------------------------------------------- HF
def _hf_rows() -> list[Arch]:
    from support.arch_hf import HF_ROWS, hf_reference, image_size

    def reference(model: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        out, hidden = hf_reference(model, x)
        return out, list(hidden[1:])

    return [
        Arch("hf", label, build, vl.HookedViT.from_hf, reference, image_size)
        for label, build in HF_ROWS
    ]


ARCHITECTURES: list[Arch] = _open_clip_rows() + _timm_rows() + _hf_rows()
