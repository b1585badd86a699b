"""What ``HookedViT.run_with_cache`` stores, and how: its argument checks, the caching hooks, and
the plan of which entries are derived on read instead of stored.

Storing every hook point of a ViT-B/16 costs about as much memory again per hook as the
activations of a forward pass; the largest entry, the per-head ``hook_result``, is ``n_heads``
times ``hook_attn_out`` and is not even computed by a forward pass that does not observe it.
An entry that is a cheap exact function of entries cached anyway (see
:mod:`vision_lens.cache_entries`) is left out of the forward pass and computed when first read,
unless something observes it: a hook attached to it or to its sources, a ``names_filter`` that
names it explicitly, gradients (``incl_bwd``) or a plain-dict result
(``return_cache_object=False``).
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch import Tensor
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint
from transformer_lens.utilities.slice import Slice

from vision_lens.cache_entries import Derivation
from vision_lens.components import TransformerBlock
from vision_lens.components.attention import Attention
from vision_lens.components.hooks import is_hooked
from vision_lens.components.mlp import MLP
from vision_lens.errors import InputWarning

NamesFilter = str | Sequence[str] | Callable[[str], bool] | None

# Entries whose position axis is the query axis of a [batch, head, query, key] tensor.
_QUERY_AXIS = ("hook_attn_scores", "hook_pattern")


# ---------------------------------------------------------------------- argument checks
def check_names_filter(model: HookedRootModule, names_filter: Any) -> Any:
    """``names_filter`` checked against the model's hook points: unknown names raise (with close
    matches), a predicate matching nothing warns. Returns a name list or a predicate."""
    if names_filter is None:
        return None
    hooks = list(model.hook_dict)
    if callable(names_filter) and not isinstance(names_filter, str):
        if not any(names_filter(name) for name in hooks):
            warnings.warn(
                "names_filter matches no hook point, so nothing is cached. "
                "model.hook_names() lists them.",
                InputWarning,
                stacklevel=4,
            )
        return names_filter
    if isinstance(names_filter, str):
        names = [names_filter]
    elif isinstance(names_filter, list | tuple | set | frozenset):
        names = list(names_filter)
    else:
        raise ValueError(  # TransformerLens' type, kept for callers that catch it
            "names_filter must be a hook name, a list of hook names or a predicate "
            f"name -> bool, got {type(names_filter).__name__}."
        )
    wrong = [n for n in names if not isinstance(n, str)]
    if wrong:
        raise ValueError(f"names_filter names must be strings, got {wrong[:3]!r}.")
    unknown = [n for n in names if n not in model.hook_dict]
    if unknown:
        lines = []
        for name in unknown:
            close = difflib.get_close_matches(name, hooks, n=3)
            hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
            lines.append(f"{name!r}{hint}")
        raise ValueError(
            f"names_filter names {len(unknown)} hook point(s) this model does not have: "
            + "; ".join(lines)
            + ". model.hook_names() lists them."
        )
    if not names:
        warnings.warn(
            "names_filter is an empty list, so nothing is cached.", InputWarning, stacklevel=4
        )
    return names


def check_backward(incl_bwd: bool, metric: Any) -> None:
    """``incl_bwd`` needs a ``metric`` (the output is not a scalar), and only it uses one."""
    if incl_bwd and metric is None:
        raise ValueError(
            "run_with_cache(incl_bwd=True) needs metric=: the output is an embedding, not a "
            "scalar. Pass metric=lambda out: ... returning the scalar to backpropagate "
            "(e.g. lambda out: (out @ direction).sum()), or attach backward hooks with "
            "run_with_hooks(bwd_hooks=...) and call backward yourself."
        )
    if metric is not None:
        if not incl_bwd:
            raise ValueError("metric= is only used with incl_bwd=True; pass both or neither.")
        if not callable(metric):
            raise TypeError(f"metric must be a callable, got {type(metric).__name__}.")


def check_cache_dtype(cache_dtype: Any) -> torch.dtype | None:
    """``cache_dtype`` must be a floating torch dtype (or None: keep the forward's dtype)."""
    if cache_dtype is None:
        return None
    if not isinstance(cache_dtype, torch.dtype) or not cache_dtype.is_floating_point:
        raise TypeError(
            "cache_dtype must be a floating torch dtype such as torch.bfloat16 or "
            f"torch.float16, got {cache_dtype!r}."
        )
    return cache_dtype


def backward_metric(out: Tensor, metric: Callable[[Tensor], Tensor]) -> None:
    """Backpropagate ``metric(out)``, a scalar, checking that it is one and has a gradient."""
    value = metric(out)
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(
            f"metric must return a scalar tensor (one element) to backpropagate, got {shape}"
            ". Reduce it, e.g. with .sum() over the batch."
        )
    if not value.requires_grad:
        raise RuntimeError(
            "metric(output) has no gradient: run run_with_cache(incl_bwd=True) with "
            "gradients enabled (not under torch.no_grad() or torch.inference_mode()), with "
            "parameters (or the images) requiring grad, and a metric that does not detach."
        )
    value.reshape(()).backward()


def dropped_positions(n_pos: int, pos_slice: Slice) -> str | None:
    """A description of ``pos_slice`` if it drops (or squeezes out) positions, else None."""
    if pos_slice.mode == "identity":
        return None
    kept = pos_slice.apply(torch.arange(n_pos), dim=0)
    if pos_slice.mode != "int" and kept.dim() == 1 and torch.equal(kept, torch.arange(n_pos)):
        return None
    spec = pos_slice.slice
    if isinstance(spec, slice):
        return repr(spec)
    values = torch.as_tensor(spec).reshape(-1).tolist()
    return str(values[0]) if pos_slice.mode == "int" else str(values)


# ---------------------------------------------------------------------- derived entries
def _head_results(attn: Attention, z: Tensor) -> Tensor:
    """``hook_result`` from ``hook_z``: the forward pass's own einsum, on ``z``'s device, in at
    least the weights' precision, returned in ``z``'s dtype."""
    weights = attn.W_O.detach()
    dtype = torch.promote_types(z.dtype, weights.dtype)
    *lead, heads, d_head = z.shape
    # The forward's own [batch, pos, head, d_head] layout, so the numbers match it bit for bit.
    z4 = z.to(dtype).reshape(1, -1, heads, d_head)
    result = torch.einsum("bqhe,hed->bqhd", z4, weights.to(device=z.device, dtype=dtype))
    return result.reshape(*lead, heads, -1).to(z.dtype)


def _softmax(scores: Tensor) -> Tensor:
    return scores.softmax(dim=-1)


def _gated(act: Callable[[Tensor], Tensor], pre: Tensor, linear: Tensor) -> Tensor:
    return act(pre) * linear


def derivations(model: HookedRootModule) -> dict[str, Derivation]:
    """Every entry of ``model`` that is an exact function of other entries, by name."""
    out: dict[str, Derivation] = {}
    for prefix, module in model.named_modules():
        p = f"{prefix}."
        if isinstance(module, Attention):
            out[p + "hook_result"] = Derivation(
                (p + "hook_z",),
                partial(_head_results, module),
                reads_weights=True,
                shape_sensitive=True,
            )
            out[p + "hook_pattern"] = Derivation(
                (p + "hook_attn_scores",), _softmax, amplifies_rounding=True
            )
        elif isinstance(module, MLP):
            if module.gated:
                sources = (p + "hook_pre", p + "hook_pre_linear")
                out[p + "hook_post"] = Derivation(sources, partial(_gated, module.act))
            else:
                out[p + "hook_post"] = Derivation((p + "hook_pre",), module.act)
        elif isinstance(module, TransformerBlock):
            sources = (p + "hook_resid_pre", p + "hook_attn_out")
            out[p + "hook_resid_mid"] = Derivation(sources, torch.add)
    return out


def plan_derived(
    model: HookedRootModule,
    selected: list[str],
    explicit: set[str],
    *,
    reduced_precision: bool,
    sliced_positions: bool,
) -> dict[str, Derivation]:
    """The selected entries to derive on read rather than store.

    An entry is derived only if all its sources are selected too, nobody asked for it by name,
    and no hook observes it or its sources (a hook could change the tensor after the cache saw
    it). In reduced precision ``hook_pattern`` is stored: a softmax of rounded scores would carry
    more error than the rounded pattern. With ``pos_slice`` ``hook_result`` is stored: computed
    at another shape, its last bits could differ from the forward's.
    """
    chosen = set(selected)
    plan = {}
    for name, derivation in derivations(model).items():
        if name not in chosen or name in explicit:
            continue
        if not all(source in chosen for source in derivation.sources):
            continue
        if reduced_precision and derivation.amplifies_rounding:
            continue
        if sliced_positions and derivation.shape_sensitive:
            continue
        if is_hooked(*(model.hook_dict[n] for n in (name, *derivation.sources))):
            continue
        plan[name] = derivation
    return plan


# ---------------------------------------------------------------------- caching hooks
def _position_axis(name: str, tensor: Tensor, has_batch: bool) -> int | None:
    """The position axis of a cached entry, or None for entries without one (the pooled
    features, the readout's outputs, the image embedding)."""
    batch = 1 if has_batch else 0
    if name.startswith("ln_final."):
        # [batch, pos, d] before pooling; [batch, d] when the norm follows the pooling.
        return batch if tensor.dim() == batch + 2 else None
    if not (name.startswith(("blocks.", "ln_pre.")) or name in ("hook_embed", "hook_pos_embed")):
        return None
    axis = batch + (1 if name.endswith(_QUERY_AXIS) else 0)
    return axis if tensor.dim() > axis else None


def caching_hooks(
    names: list[str],
    store: dict[str, Tensor],
    *,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    remove_batch_dim: bool,
    pos_slice: Slice,
    incl_bwd: bool,
) -> tuple[list[tuple[str, Callable]], list[tuple[str, Callable]]]:
    """Forward (and backward) hooks that save each named entry into ``store``.

    As TransformerLens' caching hooks, with three differences: the position axis is known per
    entry (``pos_slice`` never cuts the feature axis of a pooled entry), entries are converted to
    ``dtype``/``device`` as they are made (so a reduced-precision or offloaded cache never holds
    a full-precision copy of every entry at once), and a view of a much larger tensor (a slice,
    or values out of the fused ``qkv``) is copied so it does not keep that tensor alive.
    """

    def save(tensor: Tensor, hook: HookPoint, suffix: str = "") -> None:
        kept = tensor.detach()
        if remove_batch_dim and kept.dim() > 0 and kept.shape[0] == 1:
            kept = kept[0]
        axis = _position_axis(hook.name, kept, has_batch=not remove_batch_dim)
        if axis is not None:
            kept = pos_slice.apply(kept, dim=axis)
        kept = kept.to(device=device, dtype=dtype)
        if kept.untyped_storage().nbytes() > 2 * kept.numel() * kept.element_size():
            kept = kept.clone()
        store[hook.name + suffix] = kept

    fwd = [(name, save) for name in names]
    bwd = [(name, partial(save, suffix="_grad")) for name in names] if incl_bwd else []
    return fwd, bwd


def selected_names(model: HookedRootModule, names_filter: Any) -> tuple[list[str], set[str]]:
    """The hook names a checked ``names_filter`` selects, in hook order, and those it names
    explicitly (a string or list; a predicate names none)."""
    if names_filter is None:
        return list(model.hook_dict), set()
    if callable(names_filter):
        return [n for n in model.hook_dict if names_filter(n)], set()
    explicit = set(names_filter)
    return [n for n in model.hook_dict if n in explicit], explicit
