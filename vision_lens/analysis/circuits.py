"""Circuits: the OV and QK circuits of every head, composition scores between heads, and
activation patching between image pairs.

* :func:`ov_circuit`, :func:`qk_circuit`: TransformerLens ``FactoredMatrix`` objects
  ``[layer, head, d_model, d_model]``, built as ``HookedTransformer.OV``/``QK`` build them
  (``W_V @ W_O`` and ``W_Q @ W_K^T``, row-vector convention: ``x @ OV`` is what a head writes for
  a source token ``x``; ``q @ QK @ k^T`` its attention score before scaling).
* :func:`all_composition_scores`: Q-, K- and V-composition between every pair of heads, as
  TransformerLens' ``all_composition_scores`` (its ``composition_scores`` does the work).
* :func:`patch_activations`: run clean images once with a cache, then the corrupted images once
  per patch (a hook, optionally one head, optionally one position) with that activation taken
  from the clean run, and record a metric of the output: a :class:`PatchingScores`.

Patching is written here rather than through ``transformer_lens.patching``: its
``generic_activation_patch`` allocates its results on ``model.cfg.device`` (a ``HookedViTConfig``
has no device), sizes the position axis from the input's last dimension (an image's width, not
its tokens), and names activations by layer only (no ``hook_pooled``, no ``readout.*``).

The circuits use the weights as the model holds them: each block's input norm (``ln1``) is not
folded in, and biases are left out, as in TransformerLens without ``fold_ln``.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import FactoredMatrix
from transformer_lens.utilities import composition_scores, get_act_name

from vision_lens.errors import InputWarning
from vision_lens.utils.batching import progress_bar
from vision_lens.utils.checks import check_images, head_indices, layer_indices

if TYPE_CHECKING:
    from transformer_lens.hook_points import HookPoint

    from vision_lens.hooked_vit import HookedViT

__all__ = [
    "PatchingScores",
    "all_composition_scores",
    "ov_circuit",
    "patch_activations",
    "qk_circuit",
]

CompositionMode = Literal["Q", "K", "V"]

# Activations with a head axis, [batch, pos, head, d_head] (or d_model for the result).
_HEAD_VECTOR_HOOKS = (
    "hook_q",
    "hook_k",
    "hook_v",
    "hook_z",
    "hook_result",
    "hook_rot_q",
    "hook_rot_k",
)
# Activations [batch, head, query, key]: heads on axis 1, no single position axis.
_HEAD_PATTERN_HOOKS = ("hook_pattern", "hook_attn_scores")


def ov_circuit(model: HookedViT) -> FactoredMatrix:
    """The OV circuit of every head: ``W_V @ W_O`` as a factored matrix.

    Args:
        model: A :class:`vision_lens.HookedViT`.

    Returns:
        A ``FactoredMatrix`` of shape ``[layer, head, d_model, d_model]`` with ``A = W_V``
        ``[layer, head, d_model, d_head]`` and ``B = W_O`` ``[layer, head, d_head, d_model]``
        (layer scale folded into ``W_O``), as TransformerLens' ``HookedTransformer.OV``.

    Example:
        >>> import vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> ov = ov_circuit(model)
        >>> ov.shape, ov.rdim, ov.mdim
        (torch.Size([2, 4, 32, 32]), 32, 8)
        >>> torch.allclose(ov.AB[1, 2], model.W_V[1, 2] @ model.W_O[1, 2])
        True
    """
    return FactoredMatrix(model.W_V, model.W_O)


def qk_circuit(model: HookedViT) -> FactoredMatrix:
    """The QK circuit of every head: ``W_Q @ W_K^T`` as a factored matrix.

    For towers with qk-norm or rotary embeddings the attention score is not this bilinear form
    (a norm or a rotation acts between the projections and the dot product); the matrix is still
    returned, with an :class:`vision_lens.InputWarning`.

    Args:
        model: A :class:`vision_lens.HookedViT`.

    Returns:
        A ``FactoredMatrix`` of shape ``[layer, head, d_model, d_model]`` with ``A = W_Q`` and
        ``B = W_K^T``, as TransformerLens' ``HookedTransformer.QK``: ``x_q @ QK @ x_k^T`` is the
        score (before ``1/sqrt(d_head)`` and biases) of query input ``x_q`` on key input ``x_k``.

    Example:
        >>> import vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> qk = qk_circuit(model)
        >>> qk.shape
        torch.Size([2, 4, 32, 32])
        >>> torch.allclose(qk.AB[0, 1], model.W_Q[0, 1] @ model.W_K[0, 1].T)
        True
    """
    if model.cfg.qk_norm or model.cfg.rope is not None:
        what = "qk-norm" if model.cfg.qk_norm else "rotary position embeddings"
        warnings.warn(
            f"This model has {what}: its attention scores are not x_q @ W_Q @ W_K^T @ x_k^T, so "
            "the QK circuit (and Q-/K-composition scores) describe the projections only.",
            InputWarning,
            stacklevel=2,
        )
    return FactoredMatrix(model.W_Q, model.W_K.transpose(-2, -1))


def all_composition_scores(
    model: HookedViT, mode: CompositionMode
) -> Float[Tensor, "layer1 head1 layer2 head2"]:
    """Composition scores between every pair of heads (Elhage et al. 2021), as TransformerLens'
    ``HookedTransformer.all_composition_scores``.

    The score of an earlier head ``(l1, h1)`` into a later head ``(l2, h2)`` is
    ``||OV_1 @ R_2||_F / (||OV_1||_F ||R_2||_F)`` with ``R_2`` the later head's QK circuit
    (``mode="Q"``: the earlier head writes what the later one queries with), its transpose
    (``"K"``: what it keys on) or its OV circuit (``"V"``: what it moves). Computed by
    ``transformer_lens.utilities.composition_scores`` on the factored forms.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        mode: ``"Q"``, ``"K"`` or ``"V"``.

    Returns:
        ``[layer, head, layer, head]`` scores in ``[0, 1]``: entry ``[l1, h1, l2, h2]`` is
        ``(l1, h1)`` composing into ``(l2, h2)``, zero unless ``l1 < l2``.

    Raises:
        ValueError: ``mode`` is not ``"Q"``, ``"K"`` or ``"V"``.

    Example:
        >>> import vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> scores = all_composition_scores(model, "V")
        >>> scores.shape
        torch.Size([2, 4, 2, 4])
        >>> bool((scores[1] == 0).all()), bool((scores[0, :, 1] > 0).all())
        (True, True)
    """
    if mode not in ("Q", "K", "V"):
        raise ValueError(f"mode must be 'Q', 'K' or 'V', got {mode!r}.")
    with torch.no_grad():
        left = ov_circuit(model)
        if mode == "V":
            right = left
        else:
            qk = qk_circuit(model)
            right = qk if mode == "Q" else qk.T
        scores = composition_scores(left, right, broadcast_dims=True)
        layers = torch.arange(model.cfg.n_layers, device=scores.device)
        mask = layers[:, None, None, None] < layers[None, None, :, None]
        return torch.where(mask, scores, torch.zeros_like(scores))


# ---------------------------------------------------------------------------------- patching


@dataclass
class PatchingScores:
    """What :func:`patch_activations` returns.

    Attributes:
        scores: ``[hook, head, position]`` metric values, the head axis only when heads were
            patched one at a time and the position axis only when positions were.
        hook_names: The hook patched in each row of ``scores``.
        heads: The head of each entry of the head axis, or ``None`` (no head axis).
        positions: The position of each entry of the position axis, or ``None`` (no position
            axis: each patch covers every position).
        clean: The metric on the clean run.
        corrupted: The metric on the unpatched corrupted run.
    """

    scores: Tensor
    hook_names: list[str]
    heads: list[int] | None
    positions: list[int] | None
    clean: float
    corrupted: float

    def recovered(self) -> Tensor:
        """``(scores - corrupted) / (clean - corrupted)``: 0 where a patch does nothing, 1
        where it restores the clean metric.

        Raises:
            ZeroDivisionError: The clean and corrupted metrics are equal.
        """
        gap = self.clean - self.corrupted
        if gap == 0:
            raise ZeroDivisionError(
                "The clean and corrupted runs give the same metric: there is nothing to recover."
            )
        return (self.scores - self.corrupted) / gap

    @property
    def axis_names(self) -> list[str]:
        """Names of the axes of :attr:`scores`, e.g. ``["hook", "head", "position"]``."""
        axes = ["hook"]
        if self.heads is not None:
            axes.append("head")
        if self.positions is not None:
            axes.append("position")
        return axes


def _hook_list(
    model: HookedViT, hook_names: str | Sequence[str], layers: Sequence[int] | None
) -> list[str]:
    """Full hook names from full names and per-layer short names (``"resid_pre"``, ``"z"``)."""
    names = [hook_names] if isinstance(hook_names, str) else list(hook_names)
    if not names or any(not isinstance(n, str) for n in names):
        raise TypeError(
            f"hook_names must be a hook name or a non-empty list of them, got {hook_names!r}."
        )
    layer_ids = layer_indices(layers, model.cfg.n_layers)
    known = model.hook_dict
    out: list[str] = []
    for name in names:
        if name in known:
            out.append(name)
            continue
        expanded = (
            [get_act_name(name, layer) for layer in layer_ids]
            if "." not in name and not name.startswith("hook_")
            else [name]
        )
        missing = [n for n in expanded if n not in known]
        if missing:
            close = difflib.get_close_matches(missing[0], list(known), n=3)
            hint = f" Closest: {close}." if close else ""
            raise ValueError(
                f"{name!r} names no hook point of this model ({missing[0]!r} is not one). Pass a "
                "full name from model.hook_names() or a per-layer short name such as "
                f"'resid_pre', 'attn_out', 'mlp_out', 'z' or 'result'.{hint}"
            )
        out.extend(expanded)
    if len(set(out)) != len(out):
        raise ValueError(f"hook_names name the same hook twice: {out}.")
    return out


def _position_list(positions: object, n_pos: int) -> list[int] | None:
    if isinstance(positions, str):
        if positions != "all":
            raise ValueError(
                f"positions must be None, 'all' or position indices, got {positions!r}."
            )
        return None
    if positions is None:
        return list(range(n_pos))
    if isinstance(positions, int) and not isinstance(positions, bool):
        positions = [positions]
    if isinstance(positions, Tensor):
        positions = positions.tolist()
    values = list(positions)  # type: ignore[call-overload]
    if not values:
        raise ValueError("positions is empty: select at least one (None for each, 'all' for all).")
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"positions must be ints, got {value!r} in {values!r}.")
        if not -n_pos <= value < n_pos:
            raise IndexError(
                f"Position {value} does not exist: the model has {n_pos} positions "
                f"(valid indices {-n_pos}..{n_pos - 1}; model.readout.position_names() names "
                "them)."
            )
        out.append(value % n_pos)
    if len(set(out)) != len(out):
        raise ValueError(f"positions {values!r} name the same position twice.")
    return out


def _metric_value(metric: Callable[[Tensor], object], out: Tensor) -> float:
    value = metric(out)
    tensor = torch.as_tensor(value)
    if tensor.numel() != 1:
        raise ValueError(
            f"metric must return a scalar (e.g. a mean over the batch), got shape "
            f"{tuple(tensor.shape)}."
        )
    return float(tensor.detach().float().item())


def patch_activations(
    model: HookedViT,
    clean_images: Float[Tensor, "batch 3 height width"],
    corrupted_images: Float[Tensor, "batch 3 height width"],
    metric: Callable[[Float[Tensor, "batch d_embed"]], Tensor | float],
    hook_names: str | Sequence[str] = "resid_pre",
    positions: Sequence[int] | Literal["all"] | None = None,
    heads: Sequence[int] | Literal["each"] | None = None,
    *,
    layers: Sequence[int] | None = None,
    progress: bool = False,
) -> PatchingScores:
    """Activation patching between a clean and a corrupted batch of images.

    The clean images run once with a cache. Then, for each selected hook (and head, and
    position), the corrupted images run with that part of the activation replaced by its clean
    value, and ``metric`` of the output is recorded. Pair ``i`` of the batch is patched from
    clean image ``i``.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        clean_images: ``[batch, 3, H, W]`` preprocessed images.
        corrupted_images: ``[batch, 3, H, W]``, the same batch size.
        metric: Output ``[batch, d_embed]`` -> a scalar (tensor or float), e.g.
            ``lambda out: (out @ text_direction).mean()``.
        hook_names: Full hook names (``model.hook_names()``) and/or short per-layer names
            expanded over ``layers`` as TransformerLens' ``get_act_name`` does (``"resid_pre"``,
            ``"resid_mid"``, ``"resid_post"``, ``"attn_out"``, ``"mlp_out"``, ``"z"``,
            ``"result"``, ``"q"``, ``"k"``, ``"v"``, ``"pre"``, ``"post"``).
        positions: ``None``: every position, one at a time; a list of indices: those, one at a
            time (``model.readout.position_names()`` names them); ``"all"``: every position at
            once (no position axis).
        heads: For per-head hooks (``z``, ``q``, ``k``, ``v``, ``result``, ``pattern``,
            ``attn_scores``): ``"each"`` patches every head one at a time, a list of heads
            those; ``None`` patches all heads together (no head axis).
        layers: Layers a short name expands over (default: all; negative counts from the end).
        progress: Show a progress bar over the patched runs.

    Returns:
        A :class:`PatchingScores`: ``scores`` ``[hook, head?, position?]``, the clean and
        corrupted metrics, and ``recovered()`` scaling them to 0 (no effect) .. 1 (clean).

    Raises:
        TypeError: Bad images, ``hook_names``, ``positions`` or ``heads``.
        ValueError: Clean and corrupted batches of different shapes; a name that is no hook
            point; ``heads`` for a hook without heads; per-position patching of an activation
            without a position axis (attention patterns, ``hook_pooled``); a metric that does
            not return a scalar.
        IndexError: A position, head or layer the model does not have.

    Example:
        >>> import torch, vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> clean, corrupted = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
        >>> direction = model(clean).mean(0)
        >>> def metric(out):
        ...     return (out @ direction).mean()
        >>> result = patch_activations(model, clean, corrupted, metric, hook_names="resid_post")
        >>> result.scores.shape  # [layer, position]
        torch.Size([2, 5])
        >>> abs(result.scores[-1, 0].item() - result.clean) < 1e-5  # the class token carries it
        True
        >>> patch_activations(model, clean, corrupted, lambda out: out.sum(), "z", "all",
        ...                   "each").scores.shape  # [layer, head]
        torch.Size([2, 4])
    """
    clean_images = check_images(clean_images, model.cfg.image_size)
    corrupted_images = check_images(corrupted_images, model.cfg.image_size)
    if clean_images.shape != corrupted_images.shape:
        raise ValueError(
            f"clean_images {tuple(clean_images.shape)} and corrupted_images "
            f"{tuple(corrupted_images.shape)} differ: pass pairs, one corrupted image per clean "
            "image, in the same order."
        )
    if not callable(metric):
        raise TypeError(f"metric must be a function of the output, got {type(metric).__name__}.")
    names = _hook_list(model, hook_names, layers)
    position_ids = _position_list(positions, model.cfg.n_pos)
    if heads is None:
        head_ids = None
    elif isinstance(heads, str):
        if heads != "each":
            raise ValueError(f"heads must be None, 'each' or head indices, got {heads!r}.")
        head_ids = list(range(model.cfg.n_heads))
    else:
        head_ids = head_indices(heads, model.cfg.n_heads)
    for name in names:
        leaf = name.rsplit(".", 1)[-1]
        is_head = leaf in _HEAD_VECTOR_HOOKS or leaf in _HEAD_PATTERN_HOOKS
        if head_ids is not None and (not is_head or name.startswith("readout.")):
            raise ValueError(
                f"{name!r} has no head axis: heads= applies to per-head hooks (z, q, k, v, "
                "result, pattern, attn_scores) only."
            )
    with torch.no_grad():
        clean_out, cache = model.run_with_cache(clean_images, names_filter=names)
        clean = {name: cache[name] for name in names}
        for name, act in clean.items():
            no_pos = act.ndim < 3 or name.rsplit(".", 1)[-1] in _HEAD_PATTERN_HOOKS
            if position_ids is not None and no_pos:
                raise ValueError(
                    f"{name!r} ({tuple(act.shape)}) has no position axis [batch, pos, ...] to "
                    "patch one position at a time: pass positions='all'."
                )
        clean_value = _metric_value(metric, clean_out)
        corrupted_value = _metric_value(metric, model(corrupted_images))

        def patched(name: str, head: int | None, pos: int | None) -> float:
            source = clean[name]
            head_axis = 1 if name.rsplit(".", 1)[-1] in _HEAD_PATTERN_HOOKS else 2

            def hook(act: Tensor, hook: HookPoint) -> Tensor:
                index: list[object] = [slice(None)] * act.ndim
                if pos is not None:
                    index[1] = pos
                if head is not None:
                    index[head_axis] = head
                act = act.clone()
                act[tuple(index)] = source[tuple(index)].to(act)
                return act

            out = model.run_with_hooks(corrupted_images, fwd_hooks=[(name, hook)])
            return _metric_value(metric, out)

        head_axis_ids: list[int | None] = list(head_ids) if head_ids is not None else [None]
        pos_axis_ids: list[int | None] = list(position_ids) if position_ids is not None else [None]
        bar = progress_bar(
            len(names) * len(head_axis_ids) * len(pos_axis_ids),
            "patching",
            enabled=progress,
            unit="run",
        )
        values = torch.empty(len(names), len(head_axis_ids), len(pos_axis_ids))
        try:
            for i, name in enumerate(names):
                for j, head in enumerate(head_axis_ids):
                    for k, pos in enumerate(pos_axis_ids):
                        values[i, j, k] = patched(name, head, pos)
                        bar.update(1)
        finally:
            bar.close()
    if head_ids is None:
        values = values[:, 0]
    if position_ids is None:
        values = values[..., 0]
    return PatchingScores(values, names, head_ids, position_ids, clean_value, corrupted_value)
