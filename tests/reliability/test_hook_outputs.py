"""A hook's return value is used as it is or refused, never broadcast or cast silently.

Every hook point of a model with registers, a MAP readout, qk-norm, rope, a normed gated MLP is
exercised: a forward or backward hook that returns a tensor of another shape or dtype than the
hook point gave it raises :class:`HookOutputError` naming the hook point, while observing
(returning None) and editing (returning a tensor of the same shape) keep working.
"""

from __future__ import annotations

import functools
import re

import pytest
import torch
from support.tiny import FEATURE_CONFIGS, random_images, tiny_model
from transformer_lens.hook_points import HookPoint

from vision_lens.components.hooks import CheckedHookPoint, is_hooked
from vision_lens.errors import HookOutputError

# Every kind of hook point at once: MAP readout, registers, qk-norm, gated MLP, RoPE, MLP norm.
CONFIG = {
    **FEATURE_CONFIGS["map+qk_norm+gated+registers"],
    **FEATURE_CONFIGS["rope+qk_norm+mlp_norm+map"],
}
MODEL = tiny_model(d_model=16, n_heads=2, d_mlp=32, d_embed=8, std=0.2, **CONFIG)
NAMES = list(MODEL.hook_dict)
X = random_images(2)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors gain nothing from threads, and on a busy machine they lose a lot."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def model():
    yield MODEL
    MODEL.reset_hooks(including_permanent=True)
    MODEL.zero_grad(set_to_none=True)
    for point in MODEL.hook_dict.values():  # plain torch hooks too
        assert not (point._forward_hooks or point._backward_hooks), "a test leaked a hook"


def _one_slice(t: torch.Tensor) -> torch.Tensor:
    """``t`` cut to size 1 along its first non-batch axis of size > 1 (e.g. one head's pattern,
    one token): what would broadcast back silently; doubled along the last axis if there is none
    (``[batch, 1]``)."""
    dim = next((d for d in range(1, t.ndim) if t.shape[d] > 1), None)
    return torch.cat([t, t], dim=-1) if dim is None else t.narrow(dim, 0, 1)


WRONG_SHAPES = {"one_slice": _one_slice, "scalar": lambda t: t.sum(), "one_image": lambda t: t[:1]}


def _message_names(name: str) -> str:
    return re.escape(repr(name))


def test_every_hook_point_is_checked():
    assert len(NAMES) > 70 and any(n.startswith("readout.") for n in NAMES)
    unchecked = {n for n in NAMES if not isinstance(MODEL.hook_dict[n], CheckedHookPoint)}
    assert not unchecked, f"hook points built as a plain HookPoint: {unchecked}"


@pytest.mark.parametrize("name", NAMES)
def test_forward_hook_of_another_shape_is_refused(model, name):
    given = {}

    def observe(t, hook):
        given["shape"] = tuple(t.shape)

    model.run_with_hooks(X, fwd_hooks=[(name, observe)])
    for wrong in WRONG_SHAPES.values():
        with pytest.raises(HookOutputError, match=_message_names(name)) as info:
            model.run_with_hooks(X, fwd_hooks=[(name, lambda t, hook, f=wrong: f(t))])
        assert str(given["shape"]) in str(info.value)
        assert "Return None" in str(info.value)
    # A plain torch hook on the hook point is checked alike.
    handle = model.hook_dict[name].register_forward_hook(lambda mod, args, out: out[:1])
    try:
        with pytest.raises(HookOutputError, match=_message_names(name)):
            model(X)
    finally:
        handle.remove()


@pytest.mark.parametrize("name", NAMES)
def test_forward_hook_of_another_dtype_is_refused(model, name):
    with pytest.raises(HookOutputError, match=_message_names(name)) as info:
        model.run_with_hooks(X, fwd_hooks=[(name, lambda t, hook: t.double())])
    assert "torch.float64" in str(info.value) and "torch.float32" in str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_same_shape_edits_and_observers_keep_working(model, name):
    plain = model(X)
    seen = []
    observed = model.run_with_hooks(X, fwd_hooks=[(name, lambda t, hook: seen.append(t.shape))])
    torch.testing.assert_close(observed, plain, atol=1e-5, rtol=1e-5)
    assert len(seen) == 1
    # Noise, not an affine change: a norm right after the hook point would undo that.
    noise = 0.3 * torch.randn(seen[0], generator=torch.Generator().manual_seed(0))
    edited = model.run_with_hooks(X, fwd_hooks=[(name, lambda t, hook: t + noise)])
    assert edited.shape == plain.shape
    assert not torch.allclose(edited, plain, atol=1e-4), f"editing {name} changed nothing"
    assert not is_hooked(model.hook_dict[name])


@pytest.mark.parametrize("name", NAMES)
def test_backward_hook_of_another_shape_is_refused(model, name):
    for wrong in ("one_slice", "scalar"):
        model.add_hook(name, lambda g, hook, f=WRONG_SHAPES[wrong]: f(g), dir="bwd")
        out = model(X)
        with pytest.raises(HookOutputError, match=_message_names(name)) as info:
            out.pow(2).sum().backward()
        assert "gradient" in str(info.value)
        model.reset_hooks()
        model.zero_grad(set_to_none=True)
    # A plain torch backward pre-hook returning another dtype is refused too.
    handle = model.hook_dict[name].register_full_backward_pre_hook(
        lambda mod, grad_output: (grad_output[0].double(),)
    )
    try:
        out = model(X)
        with pytest.raises(HookOutputError, match=_message_names(name)):
            out.pow(2).sum().backward()
    finally:
        handle.remove()


def test_same_shape_backward_edit_keeps_working(model):
    name = "blocks.0.hook_resid_mid"
    weight = next(model.embed.parameters())  # every path from it runs through the hook point
    model(X).pow(2).sum().backward()
    plain = weight.grad.clone()
    model.zero_grad(set_to_none=True)
    model.add_hook(name, lambda g, hook: 2 * g, dir="bwd")
    model(X).pow(2).sum().backward()
    torch.testing.assert_close(weight.grad, 2 * plain)
    model.reset_hooks()
    model.zero_grad(set_to_none=True)
    model.add_hook(name, lambda g, hook: None, dir="bwd")  # observe only
    model(X).pow(2).sum().backward()
    torch.testing.assert_close(weight.grad, plain)


def test_hook_apis_keep_working(model):
    """Permanent, context-manager, prepended and partial hooks are wrapped alike, and
    ``reset_hooks`` removes them: afterwards the model takes its unhooked fast paths again."""
    name = "blocks.1.attn.hook_pattern"
    point = model.hook_dict[name]
    plain = model(X)

    def scale(t, hook, by):
        return t * by

    model.add_perma_hook(name, functools.partial(scale, by=0.5))
    model.reset_hooks()  # keeps permanent hooks
    assert is_hooked(point)
    halved = model(X)
    assert not torch.allclose(halved, plain)
    with model.hooks(fwd_hooks=[(name, lambda t, hook: t[:, :1])]):
        with pytest.raises(HookOutputError, match=_message_names(name)):
            model(X)
    torch.testing.assert_close(model(X), halved)
    point.add_hook(lambda t, hook: t.sum(), prepend=True)
    with pytest.raises(HookOutputError, match="partial|lambda"):
        model(X)
    model.reset_hooks(including_permanent=True)
    assert not is_hooked(point)
    torch.testing.assert_close(model(X), plain, atol=0, rtol=0)


def test_the_check_is_a_drop_in_hook_point():
    point = CheckedHookPoint()
    assert isinstance(point, HookPoint)
    x = torch.randn(3, 4)
    assert point(x) is x  # forward is the identity: nothing added when unhooked
    point.add_hook(lambda t, hook: 3.0)
    with pytest.raises(HookOutputError, match="returned float"):
        point(x)
    point.remove_hooks()
    point.add_hook(lambda t, hook: (t, t))
    with pytest.raises(HookOutputError, match="2 items"):
        point(x)
    point.remove_hooks()
    assert not is_hooked(point)
