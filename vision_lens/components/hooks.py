"""Hook points: deciding when one is observed, and refusing hooks that return the wrong thing."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from torch import Tensor
from torch.nn.modules import module as _torch_module
from torch.utils.hooks import RemovableHandle
from transformer_lens.hook_points import HookPoint

from vision_lens.errors import HookOutputError


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


def wants_grad(point: HookPoint, tensor: Tensor) -> bool:
    """Whether a gradient at ``tensor``, the output of ``point``, is asked for: a backward hook
    on the hook point (or a global one), or a tensor hook or ``retain_grad`` that a forward hook
    put on it. Then the tensor must stay on the path to the output."""
    if _torch_module._global_backward_hooks or getattr(
        _torch_module, "_global_backward_pre_hooks", None
    ):
        return True
    if point._backward_hooks or point._backward_pre_hooks:
        return True
    return bool(tensor._backward_hooks) or tensor.retains_grad


def _describe(t: Tensor) -> str:
    return f"shape {tuple(t.shape)}, dtype {t.dtype}, device {t.device}"


def _hook_name(hook: Callable) -> str:
    if isinstance(hook, functools.partial):
        hook = hook.func
    return getattr(hook, "__name__", None) or repr(hook)


def _check(point: HookPoint, hook: Callable, result: Any, given: Any, kind: str) -> None:
    """Raise :class:`HookOutputError` unless ``result`` (what ``hook`` returned, not None) is a
    tensor (or a 1-tuple of one) of the shape, dtype and device of ``given``."""
    if not isinstance(given, Tensor):  # nothing to compare with: a hook point passes tensors
        return
    name = point.name if point.name is not None else f"<unnamed {type(point).__name__}>"
    what = "gradient" if kind.startswith("backward") else "activation"
    if isinstance(result, (tuple, list)):
        if len(result) != 1:
            raise HookOutputError(
                f"The {kind} {_hook_name(hook)} on hook point {name!r} returned "
                f"{type(result).__name__} of {len(result)} items, but the hook point carries one "
                f"{what} ({_describe(given)}). Return None to only observe, or one tensor of "
                f"that shape and dtype to edit it."
            )
        (result,) = result
        if result is None and kind.startswith(
            "backward"
        ):  # (None,) drops the gradient: torch allows it
            return
    if not isinstance(result, Tensor):
        raise HookOutputError(
            f"The {kind} {_hook_name(hook)} on hook point {name!r} returned "
            f"{type(result).__name__}, but a hook must return None (to only observe) or a "
            f"tensor of the {what}'s {_describe(given)} (to edit it)."
        )
    if result.shape != given.shape or result.dtype != given.dtype or result.device != given.device:
        raise HookOutputError(
            f"The {kind} {_hook_name(hook)} on hook point {name!r} returned a tensor of "
            f"{_describe(result)}, but the hook point gave it a {what} of {_describe(given)}. "
            f"The model would broadcast or cast it silently (e.g. one head's pattern for every "
            f"head), so it is refused. Return None to only observe, or a tensor of the same "
            f"shape, dtype and device to edit: change the given tensor in place or a clone of "
            f"it (`t = t.clone(); t[:, 0] = 0; return t`), and broadcast or cast explicitly "
            f"if that is what you mean (`new.expand_as(t).to(t)`)."
        )


class CheckedHookPoint(HookPoint):
    """A :class:`~transformer_lens.hook_points.HookPoint` that refuses a hook's return value of
    another shape, dtype or device than the tensor the hook was given.

    A drop-in replacement: ``forward`` is the identity as before, and every hook, whether added
    through TransformerLens (``add_hook``, ``hooks()``, ``run_with_hooks``, permanent hooks) or
    with plain torch (``register_forward_hook``, ``register_forward_pre_hook``,
    ``register_full_backward_hook``, ``register_full_backward_pre_hook``), is wrapped at
    registration so that a return value that would be broadcast or cast silently raises
    :class:`~vision_lens.errors.HookOutputError` naming the hook point. Returning None (observe)
    or a tensor like the given one (edit) works as before. With no hook attached nothing changes:
    the check runs only inside hooks, so an unhooked forward costs what it did.

    Example:
        >>> import torch
        >>> hp = CheckedHookPoint()
        >>> hp.name = "blocks.0.attn.hook_pattern"
        >>> _ = hp.add_hook(lambda t, hook: t[:, :1])
        >>> hp(torch.ones(2, 4))
        Traceback (most recent call last):
        ...
        vision_lens.errors.HookOutputError: The forward hook ... on hook point
        'blocks.0.attn.hook_pattern' returned a tensor of shape (2, 1), ...
        >>> hp.remove_hooks()
        >>> _ = hp.add_hook(lambda t, hook: 2 * t)
        >>> hp(torch.ones(2, 4)).sum().item()
        16.0
    """

    def _checked(
        self,
        hook: Callable,
        kind: str,
        given: Callable[[tuple], Tensor | None],
        new: Callable[[Any], Any] = lambda result: result,
    ) -> Callable:
        """``hook`` wrapped so that ``new(result)`` is checked against ``given(hook_args)``."""

        def checked(*args: Any) -> Any:
            result = hook(*args)
            if result is not None:
                before, after = given(args), new(result)
                if before is not None and after is not None:
                    _check(self, hook, after, before, kind)
            return result

        functools.update_wrapper(checked, hook, updated=())
        return checked

    def register_forward_hook(
        self, hook: Callable, *, prepend: bool = False, with_kwargs: bool = False, **kwargs: Any
    ) -> RemovableHandle:
        # (module, args[, kwargs], output): the output is last either way.
        checked = self._checked(hook, "forward hook", given=lambda a: a[-1])
        return super().register_forward_hook(
            checked, prepend=prepend, with_kwargs=with_kwargs, **kwargs
        )

    def register_forward_pre_hook(
        self, hook: Callable, *, prepend: bool = False, with_kwargs: bool = False
    ) -> RemovableHandle:
        def first_input(a: tuple) -> Tensor | None:
            return a[1][0] if a[1] else None

        if with_kwargs:
            # The hook returns (new_args, new_kwargs).
            def new(result: Any) -> Any:
                args = result[0] if isinstance(result, tuple) and len(result) == 2 else ()
                return args[0] if isinstance(args, tuple) and args else None

            checked = self._checked(hook, "forward pre-hook", first_input, new)
        else:
            checked = self._checked(hook, "forward pre-hook", first_input)
        return super().register_forward_pre_hook(checked, prepend=prepend, with_kwargs=with_kwargs)

    def register_full_backward_hook(self, hook: Callable, prepend: bool = False) -> RemovableHandle:
        def incoming(a: tuple) -> Tensor | None:
            # The result replaces grad_input; a hook point is the identity, so the gradient it
            # is compared with is the one that came in.
            _, grad_input, grad_output = a
            if grad_input and grad_input[0] is not None:
                return grad_input[0]
            return grad_output[0] if grad_output else None

        checked = self._checked(hook, "backward hook", incoming)
        return super().register_full_backward_hook(checked, prepend=prepend)

    def register_full_backward_pre_hook(
        self, hook: Callable, prepend: bool = False
    ) -> RemovableHandle:
        checked = self._checked(
            hook, "backward pre-hook", given=lambda a: a[1][0] if a[1] else None
        )
        return super().register_full_backward_pre_hook(checked, prepend=prepend)
