"""The embedding lens: the logit lens for vision towers.

Each layer's residual stream is put through the model's own readout, as if the later blocks were
absent: the final norm is *recomputed* on that residual stream (the standard logit lens, not the
frozen statistics of the decompositions), then the pooling and the projection ``W_proj``. The
result is an image embedding per layer; dotted with text directions (e.g. a zero-shot classifier)
it says from which layer on the residual stream already points at the right class.

Stages: ``0`` is the embedding (``blocks.0.hook_resid_pre``, after ``ln_pre``), ``l + 1`` the
residual stream leaving block ``l`` (``blocks.l.hook_resid_post``); the last stage is the model's
output exactly.

* :func:`embedding_lens`: ``[stage, batch, n_directions]`` scores (or the embeddings).
* :func:`lens_accuracy`: zero-shot accuracy per stage.
* :func:`patch_lens`: every token's residual stream at one layer through the readout alone,
  ``[batch, pos, n_directions]`` maps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from vision_lens.utils.batching import batched
from vision_lens.utils.checks import check_batch_size, check_finite, layer_indices

if TYPE_CHECKING:
    from transformer_lens.hook_points import HookPoint

    from vision_lens.hooked_vit import HookedViT

__all__ = ["embedding_lens", "lens_accuracy", "lens_stage_names", "patch_lens"]


def lens_stage_names(model: HookedViT) -> list[str]:
    """Names of the lens stages: ``"embed"``, then ``"L0"`` .. ``"L{n_layers-1}"`` (the residual
    stream leaving each block).

    Example:
        >>> import vision_lens as vl
        >>> lens_stage_names(vl.HookedViT(vl.HookedViTConfig.tiny(n_layers=2)))
        ['embed', 'L0', 'L1']
    """
    return ["embed"] + [f"L{layer}" for layer in range(model.cfg.n_layers)]


def _stage_hooks(model: HookedViT) -> list[str]:
    """The hook of each stage, in stage order."""
    return ["blocks.0.hook_resid_pre"] + [
        f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)
    ]


def _check_directions(directions: object, d_embed: int) -> Tensor | None:
    """``directions`` as a finite ``[n_directions, d_embed]`` tensor (``None`` passes)."""
    if directions is None:
        return None
    if not isinstance(directions, Tensor):
        raise TypeError(
            "directions must be a tensor [n_directions, d_embed] (e.g. text embeddings), got "
            f"{type(directions).__name__}."
        )
    if directions.ndim != 2:
        hint = " (one direction: directions[None])" if directions.ndim == 1 else ""
        raise ValueError(
            f"directions must be [n_directions, d_embed], got shape {tuple(directions.shape)}"
            f"{hint}."
        )
    if directions.shape[-1] != d_embed:
        raise ValueError(
            f"directions have width {directions.shape[-1]} but the model's output has width "
            f"d_embed={d_embed}: were they made by the text tower of the same model?"
        )
    if directions.shape[0] == 0:
        raise ValueError("directions is empty: pass at least one direction.")
    return check_finite(directions, "directions")


def _readout(model: HookedViT, resid: Tensor) -> Tensor:
    """The model's readout of a residual stream ``[batch, pos, d_model]`` -> ``[batch, d_embed]``
    (the final norm recomputed on it), exactly as the forward pass computes its output."""
    pooled = model.readout.pool(resid, model.ln_final)
    return model.readout.project(pooled, model.W_proj, model.b_proj)


def _token_readout(model: HookedViT, resid: Tensor) -> Tensor:
    """The readout of each token alone: ``[batch, pos, d_model]`` -> ``[batch, pos, d_embed]``.

    What the readout makes of a residual stream in which every position it reads holds this token:
    the final norm of the token, then (attention pooling) the pool attending to it alone, or
    (separate class and distillation heads) both heads; then the projection.
    """
    batch, n_pos, d_model = resid.shape
    flat = resid.reshape(batch * n_pos, 1, d_model)
    readout = model.readout
    if readout.kind == "map":
        # One key: the pool's softmax is 1 on it, so this is v(token) W_O + b_O, then the MLP.
        pooled = readout.pool(flat, model.ln_final)
    else:
        normed = model.ln_final(flat[:, 0])
        pooled = torch.stack([normed, normed], 1) if readout.dist_head else normed
    out = readout.project(pooled, model.W_proj, model.b_proj)
    return out.reshape(batch, n_pos, -1)


def _scores(embeds: Tensor, directions: Tensor | None, unit_output: bool) -> Tensor:
    if unit_output:
        embeds = embeds / embeds.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    if directions is None:
        return embeds
    return embeds @ directions.to(embeds).T


def embedding_lens(
    model: HookedViT,
    images: Float[Tensor, "n 3 height width"] | Iterable[Any],
    directions: Float[Tensor, "n_directions d_embed"] | None = None,
    *,
    unit_output: bool = False,
    batch_size: int = 64,
    progress: bool = False,
    device: str | torch.device | None = "cpu",
) -> Float[Tensor, "stage n n_directions"]:
    """Each layer's residual stream through the model's readout, onto ``directions``.

    Stage ``0`` reads the embedding (``blocks.0.hook_resid_pre``), stage ``l + 1`` the residual
    stream leaving block ``l`` (``blocks.l.hook_resid_post``), through the readout with the
    final norm recomputed on it (the logit lens): ``readout.project(readout.pool(resid))``. The
    last stage is therefore the model's output itself. Names: :func:`lens_stage_names`.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        images: Preprocessed images ``[n, 3, H, W]`` or an iterable of batches.
        directions: ``[n_directions, d_embed]`` text directions (e.g. a zero-shot classifier's
            class embeddings), or ``None`` to return the lens embeddings themselves.
        unit_output: Divide each stage's embedding by its norm before the dot product (with
            unit-norm directions the scores are cosine similarities).
        batch_size: Images per forward pass.
        progress: Show a progress bar.
        device: Where the result is gathered (``None``: the model's device).

    Returns:
        ``[n_layers + 1, n, n_directions]`` scores, or ``[n_layers + 1, n, d_embed]`` embeddings
        without ``directions``.

    Raises:
        TypeError: ``directions`` is not a tensor; bad images (see
            :func:`vision_lens.utils.checks.check_images`).
        ValueError: ``directions`` not ``[n_directions, d_embed]`` of the model's width, or
            non-finite; bad images or ``batch_size``.

    Example:
        >>> import torch, vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> images = torch.randn(3, 3, 16, 16)
        >>> lens = embedding_lens(model, images)
        >>> lens.shape  # embed, L0, L1
        torch.Size([3, 3, 16])
        >>> torch.allclose(lens[-1], model(images))
        True
        >>> embedding_lens(model, images, torch.randn(5, 16)).shape
        torch.Size([3, 3, 5])
    """
    directions = _check_directions(directions, model.cfg.d_embed)
    check_batch_size(batch_size)
    hooks = _stage_hooks(model)
    parts: list[Tensor] = []
    for batch in batched(images, batch_size, "embedding lens", progress=progress):
        stages: dict[str, Tensor] = {}

        def read(resid: Tensor, hook: HookPoint, stages: dict = stages) -> None:
            stages[hook.name] = _scores(_readout(model, resid), directions, unit_output)

        with torch.no_grad():
            model.run_with_hooks(batch, fwd_hooks=[(name, read) for name in hooks])
        scores = torch.stack([stages[name] for name in hooks])
        parts.append(scores if device is None else scores.to(device))
    return torch.cat(parts, dim=1)


def lens_accuracy(
    model: HookedViT,
    images: Float[Tensor, "n 3 height width"] | Iterable[Any],
    directions: Float[Tensor, "n_classes d_embed"],
    labels: Int[Tensor, " n"] | Sequence[int],
    *,
    batch_size: int = 64,
    progress: bool = False,
) -> Float[Tensor, " stage"]:
    """Zero-shot accuracy of each stage of the :func:`embedding_lens`.

    An image counts as correct at a stage when its lens embedding there is most similar to its
    own class's direction (``argmax`` of the scores; the embedding's norm does not matter).

    Args:
        model: A :class:`vision_lens.HookedViT`.
        images: Preprocessed images ``[n, 3, H, W]`` or an iterable of batches.
        directions: ``[n_classes, d_embed]`` class directions (a zero-shot classifier).
        labels: ``[n]`` true class of each image, in ``0 .. n_classes - 1``.
        batch_size: Images per forward pass.
        progress: Show a progress bar.

    Returns:
        ``[n_layers + 1]`` accuracies in ``[0, 1]``, stage order as :func:`lens_stage_names`;
        the last is the model's own zero-shot accuracy.

    Raises:
        ValueError: ``labels`` not one class index per image or out of range; see
            :func:`embedding_lens` for the other arguments.

    Example:
        >>> import torch, vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> images = torch.randn(4, 3, 16, 16)
        >>> classes = torch.randn(3, 16)
        >>> labels = (model(images) @ classes.T).argmax(-1)  # the model's own predictions
        >>> lens_accuracy(model, images, classes, labels)[-1].item()
        1.0
    """
    if directions is None:
        raise TypeError("lens_accuracy needs directions [n_classes, d_embed] to classify with.")
    scores = embedding_lens(
        model, images, directions, batch_size=batch_size, progress=progress, device="cpu"
    )
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.shape[0] != scores.shape[1]:
        raise ValueError(
            f"labels must be one class index per image: got shape {tuple(labels.shape)} for "
            f"{scores.shape[1]} images."
        )
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class indices, got {labels.dtype}.")
    n_classes = scores.shape[-1]
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"labels must lie in 0..{n_classes - 1} (one per row of directions), got values "
            f"{labels.min().item()}..{labels.max().item()}."
        )
    return (scores.argmax(-1) == labels[None]).float().mean(1)


def patch_lens(
    model: HookedViT,
    images: Float[Tensor, "n 3 height width"] | Iterable[Any],
    directions: Float[Tensor, "n_directions d_embed"] | None = None,
    layer: int | Literal["embed"] = -1,
    *,
    unit_output: bool = False,
    batch_size: int = 64,
    progress: bool = False,
    device: str | torch.device | None = "cpu",
) -> Float[Tensor, "n pos n_directions"]:
    """Every token's residual stream at one layer through the readout, onto ``directions``.

    Each position ``p`` is read as if the readout saw only it: the final norm recomputed on
    ``resid[:, p]``, then the pooling of that one token (for an attention-pooling head, the pool
    attending to it alone; for separate class and distillation heads, both heads), then the
    projection. For a class-token readout, position 0 at the last layer is the model's output.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        images: Preprocessed images ``[n, 3, H, W]`` or an iterable of batches.
        directions: ``[n_directions, d_embed]`` text directions, or ``None`` for the per-token
            embeddings.
        layer: The block whose output (``blocks.{layer}.hook_resid_post``) is read (negative
            counts from the end), or ``"embed"`` for ``blocks.0.hook_resid_pre``.
        unit_output: Divide each token's embedding by its norm before the dot product.
        batch_size: Images per forward pass.
        progress: Show a progress bar.
        device: Where the result is gathered (``None``: the model's device).

    Returns:
        ``[n, pos, n_directions]`` (``[n, pos, d_embed]`` without directions), positions as
        ``model.readout.position_names()``: prefix tokens first, then the patches row by row
        (``model.readout.patch_positions`` selects those; see
        :func:`vision_lens.plot.patch_lens_grid`).

    Raises:
        TypeError, IndexError, ValueError: a bad ``layer`` (see
            :func:`vision_lens.utils.checks.layer_indices`); see :func:`embedding_lens`.

    Example:
        >>> import torch, vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> images = torch.randn(2, 3, 16, 16)
        >>> maps = patch_lens(model, images, torch.randn(3, 16), layer=0)
        >>> maps.shape  # class token + 2 x 2 patches
        torch.Size([2, 5, 3])
        >>> torch.allclose(patch_lens(model, images)[:, 0], model(images), atol=1e-6)
        True
    """
    directions = _check_directions(directions, model.cfg.d_embed)
    check_batch_size(batch_size)
    if isinstance(layer, str):
        if layer != "embed":
            raise ValueError(f"layer must be a layer index or 'embed', got {layer!r}.")
        hook = "blocks.0.hook_resid_pre"
    else:
        indices = layer_indices(layer, model.cfg.n_layers)
        if len(indices) != 1:
            raise ValueError(f"layer must be one layer (an int or 'embed'), got {layer!r}.")
        hook = f"blocks.{indices[0]}.hook_resid_post"
    parts: list[Tensor] = []
    for batch in batched(images, batch_size, "patch lens", progress=progress):
        found: list[Tensor] = []

        def read(resid: Tensor, hook: HookPoint, found: list = found) -> None:
            found.append(_scores(_token_readout(model, resid), directions, unit_output))

        with torch.no_grad():
            model.run_with_hooks(batch, fwd_hooks=[(hook, read)])
        parts.append(found[0] if device is None else found[0].to(device))
    return torch.cat(parts)
