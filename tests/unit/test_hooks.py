"""Every hook point fires for every kind of hook: forward, backward and backward pre-hooks.

A fused fast path skips the hook points it fuses over, so it must step aside whenever any hook
of any kind is attached; otherwise a gradient hook would silently never run.
"""

from __future__ import annotations

import pytest
import torch
from support.tiny import FEATURE_CONFIGS, tiny_model

import vision_lens as vl

CONFIGS = FEATURE_CONFIGS


def _model(kwargs: dict) -> vl.HookedViT:
    return tiny_model(d_model=16, n_heads=2, d_mlp=32, d_embed=8, std=0.2, **kwargs)


@pytest.mark.parametrize("kind", ["fwd", "bwd", "bwd_pre"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_every_hook_point_fires(config, kind):
    model = _model(CONFIGS[config])
    x = torch.randn(2, 3, 16, 16)
    names = list(model.hook_dict)
    assert any(n.startswith("readout.") for n in names) == (CONFIGS[config].get("readout") == "map")
    silent = []
    for name in names:
        point = model.hook_dict[name]
        fired = []
        if kind == "fwd":
            handle = point.register_forward_hook(lambda *a, f=fired: f.append(1))
        elif kind == "bwd":
            handle = point.register_full_backward_hook(lambda *a, f=fired: f.append(1))
        else:
            handle = point.register_full_backward_pre_hook(lambda *a, f=fired: f.append(1))
        try:
            out = model(x)
            if kind != "fwd":
                out.pow(2).sum().backward()
        finally:
            handle.remove()
            model.zero_grad(set_to_none=True)
        if not fired:
            silent.append(name)
    assert not silent, f"{kind} hooks never fired on: {silent}"


@pytest.mark.parametrize("config", list(CONFIGS))
def test_hooks_do_not_change_the_output(config):
    model = _model(CONFIGS[config])
    x = torch.randn(2, 3, 16, 16)
    plain = model(x)
    hooked, cache = model.run_with_cache(x)
    torch.testing.assert_close(hooked, plain, atol=1e-5, rtol=1e-5)
    assert len(cache) == len(model.hook_dict)


@pytest.mark.parametrize(
    "layers,error",
    [
        ("10", TypeError),
        (True, TypeError),
        ([0.9], TypeError),
        ([1, 1], ValueError),
        ([], ValueError),
    ],
)
def test_layer_selection_is_never_guessed(layers, error):
    model = _model({})
    _, cache = model.run_with_cache(torch.randn(1, 3, 16, 16))
    with pytest.raises(error):
        cache.decompose_heads(layers=layers)
    assert cache.decompose_heads(layers=torch.tensor([1, 0])).shape[1] == 2
