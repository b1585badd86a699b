"""Both towers of a CLIP/SigLIP model from one load: a HookedViT and a CLIPText.

- :func:`load_shapes_clip`: the small CLIP trained on the shapes world, shipped with the package.
- :func:`load_shapes_vit`: the small ViT classifier trained on the shapes world (timm, no text).

- :func:`load_clip`: an open_clip model by name (CLIP, SigLIP, ...).
- :func:`load_clip_hf`: a Hugging Face ``transformers`` ``CLIPModel`` or ``SiglipModel`` (hub id,
  local directory or built model).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vision_lens.hooked_vit import HookedViT
from vision_lens.loading.open_clip import (
    create_open_clip,
    default_preprocess,
)
from vision_lens.text import CLIPText
from vision_lens.text.backends import Tokenizer
from vision_lens.text.sources import (
    HF_TWO_TOWER_CLASSES,
    drop_hf_image_tower,
    hf_text_kind,
    hf_tokenizer,
    hub_kwargs,
    load_hf_model,
    open_clip_tokenizer,
)


def load_clip(
    model_name: str,
    pretrained: str | None = None,
    *,
    tokenizer: Callable[..., torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    cache_dir: str | None = None,
) -> tuple[HookedViT, CLIPText]:
    """Load an open_clip model once and return its image tower as a :class:`HookedViT` and its
    text tower as a :class:`CLIPText`.

    Args:
        model_name: An open_clip architecture name, e.g. ``"ViT-B-16"``.
        pretrained: An open_clip pretrained tag (downloaded on first use), a local checkpoint
            path, or ``None`` for random weights.
        tokenizer: The text tokenizer (default ``open_clip.get_tokenizer(model_name)``, which for
            SigLIP models downloads a Hugging Face tokenizer: offline, pass it here).
        device: Target device (default CPU).
        dtype: Target dtype (default float32).
        cache_dir: open_clip's download cache directory.

    Returns:
        ``(model, clip)``; ``model.preprocess`` is open_clip's eval transform for these weights.

    Raises:
        vision_lens.UnsupportedModelError: The image tower cannot be converted.
        FileNotFoundError: ``pretrained`` is neither a tag nor an existing file.
        vision_lens.errors.CheckpointError: The local checkpoint cannot be read or does not fit
            ``model_name`` (another architecture or image size, missing keys); the message
            names the file and the fix.
        OSError: open_clip's tokenizer for the model cannot be loaded (pass ``tokenizer=``).

    See Also:
        :func:`load_clip_hf` for Hugging Face ``transformers`` CLIP and SigLIP models.

    Example:
        >>> model, clip = load_clip("ViT-B-32")  # random weights  # doctest: +SKIP
        >>> texts = clip.encode(["a dog", "a cat"])  # doctest: +SKIP
    """
    source = create_open_clip(model_name, pretrained, cache_dir)
    if tokenizer is None:
        tokenizer = open_clip_tokenizer(model_name, cache_dir=cache_dir)
    provenance = model_name if pretrained is None else f"{model_name} ({_display(pretrained)})"
    model = HookedViT.from_open_clip_model(
        source,
        model_name=provenance,
        preprocess=default_preprocess(source.visual),
        device=device,
        dtype=dtype,
        copy=False,
    )
    source.visual = None  # its weights now live in `model`; encode_text never reads it
    if device is not None or dtype is not None:
        source.to(device=device, dtype=dtype)
    clip = CLIPText.from_open_clip_model(source, tokenizer)
    return model, clip.eval()


def load_clip_hf(
    name_or_path_or_model: str | os.PathLike | nn.Module,
    tokenizer: Tokenizer | None = None,
    *,
    padding: bool | str | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    **from_pretrained_kwargs: Any,
) -> tuple[HookedViT, CLIPText]:
    """Load a Hugging Face CLIP or SigLIP model once and return its image tower as a
    :class:`HookedViT` and its text side as a :class:`CLIPText`.

    The counterpart of :func:`load_clip` for ``transformers`` checkpoints: the model is loaded
    once, its vision part converted with ``vision_lens.loading.hf.hf_to_hooked`` (the
    HookedViT reproduces ``get_image_features``), then its image tower is dropped and the rest
    wrapped by :meth:`CLIPText.from_hf` (``encode`` reproduces ``get_text_features``, and
    ``classify`` the model's ``logits_per_image``, bias included for SigLIP).

    Args:
        name_or_path_or_model: A hub id, a local ``save_pretrained`` directory, or a built
            ``CLIPModel`` / ``SiglipModel``. A built model is not modified (its image tower is
            kept and the HookedViT shares its weights), only put in eval mode.
        tokenizer: The text tokenizer (default ``AutoTokenizer.from_pretrained`` of the name or
            path, or of a built model's ``config._name_or_path``).
        padding: Tokenizer padding (default ``"max_length"`` for SigLIP, ``True`` for CLIP; see
            :meth:`CLIPText.from_hf`).
        device: Target device (default: CPU when loaded, else where the model is).
        dtype: Target dtype (default: the model's).
        **from_pretrained_kwargs: Passed to ``from_pretrained`` (``revision``, ``cache_dir``,
            ``torch_dtype``, ...).

    Returns:
        ``(model, clip)``; for a name or path, ``model.preprocess`` is the checkpoint's image
        processor (when it has one).

    Raises:
        vision_lens.UnsupportedModelError: The model is not a ``CLIPModel`` / ``SiglipModel``
            (e.g. a ``Dinov2Model``, or a text- or vision-only class), or its image tower
            cannot be converted.
        FileNotFoundError: A local path that does not exist.
        vision_lens.errors.CheckpointError: A local directory without a config or with a
            weights file that cannot be read (empty, truncated, corrupted); the message names it.

    Example:
        >>> model, clip = load_clip_hf("google/siglip-base-patch16-224")  # doctest: +SKIP
        >>> weights = clip.encode(["a photo of a dog", "a photo of a cat"])  # doctest: +SKIP
        >>> probs = clip.probabilities(model(images), weights)  # sigmoid  # doctest: +SKIP
    """
    from vision_lens.loading.base import LoadedTower
    from vision_lens.loading.hf import check_hf_source, hf_preprocess, hf_to_hooked
    from vision_lens.loading.open_clip import UnsupportedModelError

    if isinstance(name_or_path_or_model, nn.Module):
        if from_pretrained_kwargs:
            raise TypeError(
                f"from_pretrained arguments {sorted(from_pretrained_kwargs)} need a name or "
                "path, not a built model."
            )
        source = name_or_path_or_model.eval()
        kind = hf_text_kind(source)
        if kind not in HF_TWO_TOWER_CLASSES:
            raise UnsupportedModelError(
                f"load_clip_hf needs both towers, a CLIPModel or SiglipModel; got {kind}. Use "
                "CLIPText.from_hf for a text-only model and HookedViT.from_hf for an image model."
            )
        path, preprocess = None, None
    else:
        # A local directory: its config and weights files are there and readable.
        check_hf_source(name_or_path_or_model, from_pretrained_kwargs.get("subfolder"))
        path = os.fspath(name_or_path_or_model)
        source = load_hf_model(path, text_only=False, **from_pretrained_kwargs)
        preprocess = hf_preprocess(path, **hub_kwargs(from_pretrained_kwargs))
        if tokenizer is None:
            tokenizer = hf_tokenizer(path, **from_pretrained_kwargs)
    cfg, state_dict, _ = hf_to_hooked(source, model_name=path)
    model = HookedViT.from_loaded(
        LoadedTower(cfg, state_dict, preprocess), device=device, dtype=dtype
    )
    if path is not None:
        drop_hf_image_tower(source)  # its weights now live in `model`
    if device is not None or dtype is not None:
        source.to(device=device, dtype=dtype)
    clip = CLIPText.from_hf(source, tokenizer, padding=padding)
    return model, clip.eval()


def load_shapes_clip(device: str | torch.device | None = None) -> tuple[HookedViT, CLIPText]:
    """Load the small CLIP trained on the shapes world, shipped with the package.

    It goes through the same open_clip path as any model (a registered open_clip config and a
    local safetensors checkpoint), so everything shown on it works on real CLIPs too.

    Args:
        device: Torch device (default CPU).

    Returns:
        ``(model, clip)``: a :class:`vision_lens.HookedViT` (with ``model.preprocess``) and a
        :class:`vision_lens.CLIPText`.

    Example:
        >>> import vision_lens as vl
        >>> model, clip = vl.load_shapes_clip()  # doctest: +SKIP
        >>> scenes = vl.shapes.generate(4, seed=0)  # doctest: +SKIP
    """
    from vision_lens.shapes.pretrained import (
        SHAPES_MODEL_NAME,
        register_shapes_config,
        shapes_weights_path,
    )

    register_shapes_config()
    return load_clip(SHAPES_MODEL_NAME, str(shapes_weights_path()), device=device)


def load_shapes_vit(device: str | torch.device | None = None, *, head: bool = True) -> HookedViT:
    """Load the small ViT classifier trained on the shapes world (a plain timm ViT, not a CLIP).

    A timm ``VisionTransformer`` (4 register tokens, no class token, average pooling, one linear
    head over the concatenated class logits of shape, colour, size, position, texture,
    background and object count) converted with :meth:`HookedViT.from_timm`; the logit slice of
    each attribute is in ``vl.shapes.pretrained_vit.shapes_vit_config().slices``.

    Args:
        device: Torch device (default CPU).
        head: Keep the classifier head (``model(x)`` gives the logits); ``False`` gives the
            pooled, ``fc_norm``-ed features (what a linear probe reads).

    Returns:
        A :class:`vision_lens.HookedViT` (with ``model.preprocess``) whose ``model(x)`` equals
        the timm model's.

    Example:
        >>> import vision_lens as vl
        >>> model = vl.load_shapes_vit()  # doctest: +SKIP
        >>> from vision_lens.shapes.encoding import images_to_tensor
        >>> x = images_to_tensor(vl.shapes.generate(2, seed=0).images)
        >>> model(x).shape  # doctest: +SKIP
        torch.Size([2, 41])
    """
    from vision_lens.shapes.pretrained_vit import load_shapes_timm_vit

    return HookedViT.from_timm(load_shapes_timm_vit(device, head=head), device=device)


def load_clip_or_shapes(
    model_name: str | None = None,
    pretrained: str | None = None,
    *,
    device: str | torch.device | None = None,
) -> tuple[HookedViT, CLIPText]:
    """:func:`load_clip` for ``model_name``, or the shipped shapes-world CLIP when it is ``None``
    (the default model of the ``vision-lens`` commands).

    Raises:
        ValueError: ``pretrained`` given without ``model_name`` (the shapes model has its own
            weights).

    Example:
        >>> load_clip_or_shapes(pretrained="laion2b_s34b_b88k")
        Traceback (most recent call last):
        ...
        ValueError: --pretrained needs --model (the shapes model has its own weights).
    """
    if model_name is not None:
        return load_clip(model_name, pretrained, device=device)
    if pretrained is not None:
        raise ValueError("--pretrained needs --model (the shapes model has its own weights).")
    return load_shapes_clip(device=device)


def _display(pretrained: str) -> str:
    """A pretrained tag as given; a checkpoint shipped in the package relative to it (reports
    written from the shipped model then read the same on every machine)."""
    package = Path(__file__).resolve().parent
    path = Path(pretrained)
    if path.is_file() and path.resolve().is_relative_to(package):
        return str(path.resolve().relative_to(package.parent))
    return pretrained
