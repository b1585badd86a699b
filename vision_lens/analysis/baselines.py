"""Heatmap baselines for zero-shot segmentation, as compared in Chefer et al. 2021 and Table 3 of
Gandelsman et al. 2024. Every method gives one ``[H, W]`` heatmap per image, for one text per
image where the method is text-specific.

* :func:`raw_attention`: last layer's attention from the class token to the patches, mean over
  heads.
* :func:`attention_rollout` (Abnar & Zuidema 2020): per layer ``Â = norm_rows(mean_h A + I)``;
  the product ``Â_L ... Â_1``; its class-token row over the patches.
* :func:`gradcam` (Selvaraju et al. 2017, on tokens): the activations ``a`` of the patch tokens
  entering the last block, weighted per channel by the gradient of the image-text cosine
  similarity averaged over patches, summed over channels, ReLU. (The last block's *output*
  cannot be used: with class-token pooling nothing downstream reads the patch tokens there, so
  their gradient is zero.)
* :func:`chefer_relevance` (Chefer et al. 2021, gradient-weighted attention relevance):
  ``R = I``; for each layer ``R += mean_h((dS/dA) * A)^+ @ R``; the class-token row of ``R`` over
  the patches. ``S`` is the cosine similarity between the image embedding and the text.

All read attention patterns and activations through hook points (``run_with_hooks``); gradients
are taken with ``torch.autograd.grad`` on the hooked tensors, so the model's parameters never
receive ``.grad``. :func:`baseline_scores` scores one batch; :func:`baseline_heatmaps` runs any
method over a set of images, and the four functions above name it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from vision_lens.analysis.heatmaps import gather_heatmaps, model_images, text_directions
from vision_lens.protocols import TextEncoder
from vision_lens.utils.checks import layer_indices

if TYPE_CHECKING:
    from PIL.Image import Image
    from transformer_lens.hook_points import HookPoint

    from vision_lens.hooked_vit import HookedViT

__all__ = [
    "BASELINES",
    "attention_rollout",
    "baseline_heatmaps",
    "baseline_scores",
    "chefer_relevance",
    "chefer_rule",
    "gradcam",
    "raw_attention",
    "rollout",
]

#: Baseline method names, as used by :func:`baseline_scores` and ``vision-lens eval-seg``.
BASELINES = ("chefer2021", "gradcam", "raw_attention", "rollout")
_NEEDS_TEXT = ("chefer2021", "gradcam")


def _pattern(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_pattern"


def baseline_scores(
    model: HookedViT,
    images: Float[Tensor, "batch 3 height width"],
    method: str,
    directions: Float[Tensor, "batch d_embed"] | None = None,
    *,
    layer: int = -1,
    start_layer: int = 0,
) -> Float[Tensor, "batch n_patches"]:
    """One batch of one baseline, on the patch tokens (class token excluded), not upsampled.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        images: Preprocessed images ``[batch, 3, H, W]``.
        method: One of :data:`BASELINES`.
        directions: Unit text embeddings, one per image ``[batch, d_embed]`` (``chefer2021`` and
            ``gradcam`` only).
        layer: ``raw_attention``: the layer whose attention is shown; ``gradcam``: the block
            whose *input* activations are used. Default the last.
        start_layer: ``rollout``: first layer of the product.

    Returns:
        ``[batch, n_patches]`` float32 scores (patch order = row-major patch grid).

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny(n_heads=2)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> baseline_scores(model, torch.randn(2, 3, 16, 16), "rollout").shape
        torch.Size([2, 4])
    """
    if method not in BASELINES:
        raise ValueError(f"Unknown baseline {method!r}; choose from {list(BASELINES)}.")
    if model.cfg.readout != "cls" and method != "gradcam":
        raise ValueError(
            f"The {method} baseline reads the class token's attention row, but this model's "
            f"output is read by a {model.cfg.readout!r} readout; use method='gradcam' or the "
            "token decomposition (vl.segment)."
        )
    patches = model.readout.patch_positions
    n_layers = model.cfg.n_layers
    layer, start_layer = layer_indices([layer, start_layer], n_layers, unique=False)
    if method in _NEEDS_TEXT:
        if directions is None:
            raise ValueError(f"{method} needs one text direction per image ([batch, d_embed]).")
        if directions.shape != (images.shape[0], model.cfg.d_embed):
            raise ValueError(
                f"{method} needs directions [batch={images.shape[0]}, d_embed="
                f"{model.cfg.d_embed}], got {tuple(directions.shape)}."
            )
    if method == "raw_attention":
        names = [_pattern(layer)]
    elif method == "rollout":
        names = [_pattern(i) for i in range(start_layer, n_layers)]
    elif method == "chefer2021":
        names = [_pattern(i) for i in range(n_layers)]
    else:
        names = [f"blocks.{layer}.hook_resid_pre"]

    store: dict[str, Tensor] = {}

    def save(tensor: Tensor, hook: HookPoint) -> None:
        store[hook.name] = tensor

    fwd_hooks = [(name, save) for name in names]
    if method in _NEEDS_TEXT:
        with torch.enable_grad():
            x = images.detach().to(device=model.device, dtype=model.dtype).requires_grad_(True)
            embed = model.run_with_hooks(x, fwd_hooks=fwd_hooks)
            target = (F.normalize(embed, dim=-1) * directions.to(embed)).sum()
            grads = torch.autograd.grad(target, [store[name] for name in names])
        acts = [store[name].detach() for name in names]
    else:
        with torch.no_grad():
            model.run_with_hooks(images, fwd_hooks=fwd_hooks)
        acts = [store[name] for name in names]
        grads = ()

    if method == "raw_attention":
        scores = acts[0].mean(1)[:, 0, patches]
    elif method == "rollout":
        scores = rollout(acts)[:, 0, patches]
    elif method == "chefer2021":
        scores = chefer_rule(acts, [g.detach() for g in grads])[:, 0, patches]
    else:
        act, grad = acts[0][:, patches], grads[0].detach()[:, patches]  # [batch, patch, d]
        weights = grad.mean(1, keepdim=True)  # [batch, 1, d]
        scores = (act * weights).sum(-1).clamp(min=0)
    return scores.float()


def rollout(
    patterns: Sequence[Float[Tensor, "batch head pos pos"]],
) -> Float[Tensor, "batch pos pos"]:
    """Attention rollout: ``prod_l norm_rows(mean_h A_l + I)``, last layer leftmost.

    Example:
        >>> A = torch.softmax(torch.randn(1, 2, 3, 3), -1)
        >>> torch.allclose(rollout([A]), (A.mean(1) + torch.eye(3)) / 2)
        True
    """
    joint = None
    for pattern in patterns:
        a = pattern.float().mean(1)
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(-1, keepdim=True)
        joint = a if joint is None else a @ joint
    if joint is None:
        raise ValueError("rollout needs at least one attention pattern.")
    return joint


def chefer_rule(
    patterns: Sequence[Float[Tensor, "batch head pos pos"]],
    grads: Sequence[Float[Tensor, "batch head pos pos"]],
) -> Float[Tensor, "batch pos pos"]:
    """Chefer et al. 2021 relevance: ``R = I``, then per layer ``R += mean_h((G * A)^+) @ R``.

    Example:
        >>> A = torch.softmax(torch.randn(1, 2, 3, 3), -1)
        >>> R = chefer_rule([A], [torch.ones_like(A)])
        >>> torch.allclose(R, torch.eye(3) + A.mean(1))
        True
    """
    relevance = None
    for pattern, grad in zip(patterns, grads, strict=True):
        cam = (grad.float() * pattern.float()).clamp(min=0).mean(1)
        if relevance is None:
            eye = torch.eye(cam.shape[-1], dtype=cam.dtype, device=cam.device)
            relevance = eye.expand_as(cam).clone()
        relevance = relevance + cam @ relevance
    if relevance is None:
        raise ValueError("chefer_rule needs at least one layer.")
    return relevance


def baseline_heatmaps(
    model: HookedViT,
    images: Float[Tensor, "N 3 height width"] | Sequence[Image],
    method: str,
    texts: Sequence[str] | str | Tensor | None = None,
    clip: TextEncoder | None = None,
    batch_size: int = 32,
    *,
    upsample: bool = True,
    device: str | torch.device | None = "cpu",
    progress: bool = False,
    **options: int,
) -> Float[Tensor, "N height width"]:
    """Heatmaps of one baseline over a set of images: :func:`baseline_scores` batch by batch, on
    the patch grid, upsampled to the input size. :func:`raw_attention`,
    :func:`attention_rollout`, :func:`gradcam` and :func:`chefer_relevance` call it.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        images: Preprocessed images ``[N, 3, H, W]`` (or PIL images).
        method: One of :data:`BASELINES`.
        texts: ``chefer2021`` and ``gradcam``: one text per image (``N`` strings or
            ``[N, d_embed]``), or one for all.
        clip: The matching :class:`vision_lens.CLIPText` (``None`` if ``texts`` are embeddings).
        batch_size: Images per forward (and backward) pass.
        upsample: Bilinearly upsample to the input size (else ``[N, rows, cols]``).
        device: Where the heatmaps are gathered.
        progress: Show a tqdm progress bar.
        **options: ``layer`` or ``start_layer``, as in :func:`baseline_scores`.

    Returns:
        ``[N, H, W]`` float32 heatmaps, or ``[N, rows, cols]`` with ``upsample=False``.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny(n_heads=2)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> baseline_heatmaps(model, torch.randn(3, 3, 16, 16), "raw_attention", layer=0).shape
        torch.Size([3, 16, 16])
    """
    images = model_images(model, images)
    directions = None
    if method in _NEEDS_TEXT:
        if texts is None:
            raise ValueError(f"{method} explains a text: pass one text per image (or one).")
        directions = _one_text_per_image(model, clip, texts, images.shape[0])

    def scores(batch: Tensor, index: slice) -> Tensor:
        dirs = None if directions is None else directions[index]
        return baseline_scores(model, batch, method, dirs, **options)

    return gather_heatmaps(model, images, scores, batch_size, method, upsample, device, progress)


def _one_text_per_image(
    model: HookedViT,
    clip: TextEncoder | None,
    texts: Sequence[str] | str | Tensor | None,
    n: int,
) -> Float[Tensor, "n d_embed"]:
    """Unit directions ``[n, d_embed]`` from one text per image (or one text for all)."""
    if isinstance(texts, str):
        texts = [texts]
    if isinstance(texts, Tensor) and texts.dim() == 1:
        texts = texts[None]
    if isinstance(texts, Tensor) and texts.dim() == 3:
        raise ValueError("Pass one text embedding per image: [N, d_embed], not [N, k, d_embed].")
    if not isinstance(texts, Tensor) and texts and not isinstance(texts[0], str):
        raise ValueError(
            "Baselines explain one text per image: pass list[str] of length N (or one string)."
        )
    directions, _ = text_directions(model, clip, texts)
    if directions.shape[0] == 1:
        directions = directions.expand(n, -1)
    if directions.shape[0] != n:
        raise ValueError(
            f"Got {directions.shape[0]} texts for {n} images: pass one text per image (or one "
            "text for all)."
        )
    return directions


def raw_attention(
    model: HookedViT,
    images: Float[Tensor, "N 3 height width"] | Sequence[Image],
    layer: int = -1,
    batch_size: int = 32,
    *,
    upsample: bool = True,
    device: str | torch.device | None = "cpu",
    progress: bool = False,
) -> Float[Tensor, "N height width"]:
    """Raw attention: class-token attention to each patch in ``layer``, mean over heads.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        images: Preprocessed images ``[N, 3, H, W]`` (or PIL images).
        layer: Which layer (default the last).
        batch_size: Images per forward pass.
        upsample: Upsample to the input size (else ``[N, rows, cols]``).
        device: Where the heatmaps are gathered.
        progress: Show a tqdm progress bar.

    Returns:
        ``[N, H, W]`` heatmaps (text-independent).

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny(n_heads=2)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> raw_attention(model, torch.randn(3, 3, 16, 16)).shape
        torch.Size([3, 16, 16])
    """
    loop = {"upsample": upsample, "device": device, "progress": progress}
    return baseline_heatmaps(
        model, images, "raw_attention", batch_size=batch_size, layer=layer, **loop
    )


def attention_rollout(
    model: HookedViT,
    images: Float[Tensor, "N 3 height width"] | Sequence[Image],
    start_layer: int = 0,
    batch_size: int = 32,
    *,
    upsample: bool = True,
    device: str | torch.device | None = "cpu",
    progress: bool = False,
) -> Float[Tensor, "N height width"]:
    """Attention rollout (Abnar & Zuidema 2020), class-token row over the patches.

    Per layer the head-averaged attention plus the identity (the residual connection),
    row-normalised; the product over layers ``start_layer..L-1`` (:func:`rollout`).

    Args:
        model: A :class:`vision_lens.HookedViT`.
        images: Preprocessed images ``[N, 3, H, W]`` (or PIL images).
        start_layer: First layer of the product.
        batch_size: Images per forward pass.
        upsample: Upsample to the input size (else ``[N, rows, cols]``).
        device: Where the heatmaps are gathered.
        progress: Show a tqdm progress bar.

    Returns:
        ``[N, H, W]`` heatmaps (text-independent).

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny(n_heads=2)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> attention_rollout(model, torch.randn(3, 3, 16, 16), upsample=False).shape
        torch.Size([3, 2, 2])
    """
    loop = {"upsample": upsample, "device": device, "progress": progress}
    return baseline_heatmaps(
        model, images, "rollout", batch_size=batch_size, start_layer=start_layer, **loop
    )


def gradcam(
    model: HookedViT,
    clip: TextEncoder | None,
    images: Float[Tensor, "N 3 height width"] | Sequence[Image],
    texts: Sequence[str] | str | Tensor,
    layer: int = -1,
    batch_size: int = 32,
    *,
    upsample: bool = True,
    device: str | torch.device | None = "cpu",
    progress: bool = False,
) -> Float[Tensor, "N height width"]:
    """GradCAM on the patch tokens entering block ``layer``, for each image's text.

    ``cam_i = ReLU(sum_d a_{i,d} * mean_j dS/da_{j,d})`` over patch tokens ``i, j``, where
    ``a = blocks.{layer}.hook_resid_pre`` and ``S`` is the cosine similarity between the image
    embedding and the text embedding.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        clip: The matching :class:`vision_lens.CLIPText` (``None`` if ``texts`` are embeddings).
        images: Preprocessed images ``[N, 3, H, W]`` (or PIL images).
        texts: One text per image (``N`` strings or ``[N, d_embed]``), or one for all.
        layer: Block whose input is used (default the last block).
        batch_size: Images per forward and backward pass.
        upsample: Upsample to the input size (else ``[N, rows, cols]``).
        device: Where the heatmaps are gathered.
        progress: Show a tqdm progress bar.

    Returns:
        ``[N, H, W]`` non-negative heatmaps.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny(n_heads=2)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> gradcam(model, None, torch.randn(3, 3, 16, 16), torch.randn(3, 16)).shape
        torch.Size([3, 16, 16])
    """
    loop = {"upsample": upsample, "device": device, "progress": progress}
    return baseline_heatmaps(model, images, "gradcam", texts, clip, batch_size, layer=layer, **loop)


def chefer_relevance(
    model: HookedViT,
    clip: TextEncoder | None,
    images: Float[Tensor, "N 3 height width"] | Sequence[Image],
    texts: Sequence[str] | str | Tensor,
    batch_size: int = 16,
    *,
    upsample: bool = True,
    device: str | torch.device | None = "cpu",
    progress: bool = False,
) -> Float[Tensor, "N height width"]:
    """Chefer et al. 2021 gradient-weighted attention relevance for each image's text.

    ``R = I``; for each layer ``R += mean_h((dS/dA) * A)^+ @ R`` (:func:`chefer_rule`), with
    ``A`` the attention pattern and ``S`` the image-text cosine similarity; the class-token row
    over the patches.

    Args:
        model: A :class:`vision_lens.HookedViT`.
        clip: The matching :class:`vision_lens.CLIPText` (``None`` if ``texts`` are embeddings).
        images: Preprocessed images ``[N, 3, H, W]`` (or PIL images).
        texts: One text per image (``N`` strings or ``[N, d_embed]``), or one for all.
        batch_size: Images per forward and backward pass (every layer's pattern and its
            gradient, ``2 * layers * heads * pos^2`` floats per image, are held at once).
        upsample: Upsample to the input size (else ``[N, rows, cols]``).
        device: Where the heatmaps are gathered.
        progress: Show a tqdm progress bar.

    Returns:
        ``[N, H, W]`` non-negative heatmaps.

    Example:
        >>> import vision_lens as vl
        >>> cfg = vl.HookedViTConfig.tiny(n_heads=2)
        >>> model = vl.HookedViT(cfg).init_weights(seed=0)
        >>> chefer_relevance(model, None, torch.randn(3, 3, 16, 16), torch.randn(16)).shape
        torch.Size([3, 16, 16])
    """
    loop = {"upsample": upsample, "device": device, "progress": progress}
    return baseline_heatmaps(model, images, "chefer2021", texts, clip, batch_size, **loop)
