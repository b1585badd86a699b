"""Deciding when a hook point is observed, so that optional work is skipped when it is not."""

from __future__ import annotations

from torch.nn.modules import module as _torch_module
from transformer_lens.hook_points import HookPoint


def is_hooked(*hook_points: HookPoint) -> bool:
    """Whether any of ``hook_points`` has a forward or backward hook attached.

    Components use this to choose between a fused fast path and an explicit path that produces
    the activation of an observed hook point. Hooks registered through TransformerLens
    (``add_hook``, ``hooks()``, ``run_with_cache``) and plain torch hooks are both seen, as are
    global torch module hooks, so no hook can be silently skipped.
    """
    if (
        _torch_module._global_forward_hooks
        or _torch_module._global_backward_hooks
        or _torch_module._global_forward_pre_hooks
        or getattr(_torch_module, "_global_backward_pre_hooks", None)
    ):
        return True
    # Backward pre-hooks count too: a fused path never calls the hook point, so a gradient hook
    # of any kind would silently never fire.
    return any(
        hp._forward_hooks or hp._backward_hooks or hp._forward_pre_hooks or hp._backward_pre_hooks
        for hp in hook_points
    )
