"""Helpers for tests that compare HookedViT with open_clip (random weights, no downloads).

Import as ``from oc_helpers import ...`` (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import copy
import gc

import open_clip
import torch
from open_clip.model import _build_vision_tower
from torch import Tensor, nn


def vision_config(name: str, **overrides) -> tuple[int, dict, bool]:
    """``(embed_dim, vision_cfg, quick_gelu)`` of an open_clip config, with ``vision_cfg`` keys
    replaced by ``overrides`` (e.g. ``image_size=288``, ``no_ln_pre=True``)."""
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise KeyError(f"open_clip has no config {name!r}")
    vision_cfg = copy.deepcopy(cfg["vision_cfg"])
    vision_cfg.update(overrides)
    return cfg["embed_dim"], vision_cfg, bool(cfg.get("quick_gelu", False))


def build_visual(name: str, *, seed: int = 0, perturb: bool = True, **overrides) -> nn.Module:
    """open_clip's image tower alone (no text tower), random weights, eval mode.

    With ``perturb`` the parameters open_clip initialises to constants (LayerNorm 1/0, attention
    biases 0, layer-scale gammas) get random values, so that a conversion that drops or misplaces
    one of them shows up in the outputs.
    """
    embed_dim, vision_cfg, quick_gelu = vision_config(name, **overrides)
    torch.manual_seed(seed)
    visual = _build_vision_tower(embed_dim, vision_cfg, quick_gelu=quick_gelu).eval()
    if perturb:
        perturb_(visual, seed=seed + 1)
    return visual


@torch.no_grad()
def perturb_(module: nn.Module, seed: int = 1) -> nn.Module:
    """Randomise the parameters a fresh open_clip tower has at constant values, in place."""
    gen = torch.Generator().manual_seed(seed)

    def noise(p: Tensor, std: float) -> Tensor:
        return (torch.randn(p.shape, generator=gen, dtype=torch.float64) * std).to(p.dtype)

    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "gamma":  # LayerScale: values of both signs, far from the 1e-5 init
            p.copy_(noise(p, 0.5))
        elif p.ndim == 1 and leaf == "weight":  # LayerNorm gamma
            p.copy_(1.0 + noise(p, 0.2))
        elif p.ndim == 1 and (leaf.endswith("bias") or leaf == "bias"):
            p.add_(noise(p, 0.1))
    return module


def images(batch: int, size: tuple[int, int] | int, *, seed: int = 0, dtype=torch.float32):
    """Normalised-image-like random inputs ``[batch, 3, H, W]``."""
    h, w = (size, size) if isinstance(size, int) else size
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, h, w, generator=gen, dtype=torch.float64).to(dtype)


@torch.no_grad()
def open_clip_block_outputs(visual: nn.Module, x: Tensor) -> tuple[Tensor, list[Tensor]]:
    """open_clip's image embedding and the output of every residual block ``[batch, pos, d]``."""
    outs: list[Tensor] = []
    batch_first = getattr(visual.transformer, "batch_first", True)

    def save(_module, _inputs, output):
        outs.append(output if batch_first else output.transpose(0, 1))

    handles = [blk.register_forward_hook(save) for blk in visual.transformer.resblocks]
    try:
        embed = visual(x)
    finally:
        for h in handles:
            h.remove()
    return embed, outs


def max_err(a: Tensor, b: Tensor) -> float:
    return (a.detach().double() - b.detach().double()).abs().max().item()


def free_memory() -> None:
    gc.collect()
