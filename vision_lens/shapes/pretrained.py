"""The shipped shapes-world CLIP: its open_clip name, config and weights.

The config JSON (``weights/<SHAPES_MODEL_NAME>.json``) is registered with open_clip, so the model
loads through ``open_clip.create_model(SHAPES_MODEL_NAME, pretrained=str(shapes_weights_path()))``
and ``HookedViT.from_open_clip`` exactly like a real checkpoint. Retrain it with
``scripts/train_shapes_clip.py`` (see :mod:`vision_lens.shapes.train`).

Example:
    >>> from vision_lens.shapes.pretrained import load_shapes_open_clip, shapes_tokenizer
    >>> model, preprocess = load_shapes_open_clip()
    >>> tokenizer = shapes_tokenizer()
    >>> model.encode_text(tokenizer(["a red circle"])).shape
    torch.Size([1, 128])
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from vision_lens.shapes.clip_model import SHAPES_MODEL_NAME, register_config

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from vision_lens.shapes.encoding import Tokenizer

__all__ = [
    "SHAPES_MODEL_NAME",
    "register_shapes_config",
    "shapes_config_path",
    "shapes_eval_path",
    "shapes_weights_path",
    "load_shapes_open_clip",
    "shapes_tokenizer",
]

_WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


def shapes_weights_path() -> Path:
    """Path of the shipped float16 safetensors weights.

    Example:
        >>> shapes_weights_path().name
        'shapes_clip.safetensors'
    """
    return _WEIGHTS_DIR / "shapes_clip.safetensors"


def shapes_config_path() -> Path:
    """Path of the shipped open_clip model-config JSON (its stem is the model name).

    Example:
        >>> shapes_config_path().stem == SHAPES_MODEL_NAME
        True
    """
    return _WEIGHTS_DIR / f"{SHAPES_MODEL_NAME}.json"


def shapes_eval_path() -> Path:
    """Path of the shipped evaluation report (``scripts/eval_shapes_clip.py``).

    Example:
        >>> shapes_eval_path().suffix
        '.json'
    """
    return _WEIGHTS_DIR / "shapes_clip_eval.json"


def register_shapes_config() -> str:
    """Registers the shapes-world config with open_clip (idempotent); returns the model name.

    Example:
        >>> import open_clip
        >>> register_shapes_config() in open_clip.list_models()
        True
    """
    return register_config(shapes_config_path())


def load_shapes_open_clip(
    device: str | torch.device | None = None,
) -> tuple[torch.nn.Module, Callable[[Image.Image], torch.Tensor]]:
    """The shipped model as a plain open_clip model.

    Args:
        device: Torch device (default CPU).

    Returns:
        ``(model, preprocess)``: the ``CLIP`` in eval mode and its eval image transform (for a
        64x64 image the same as :func:`vision_lens.shapes.encoding.images_to_tensor`).

    Example:
        >>> model, preprocess = load_shapes_open_clip()
        >>> model.training, model.visual.image_size
        (False, (64, 64))
    """
    import open_clip

    check_device(device)
    name = register_shapes_config()
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=str(shapes_weights_path()), device=device, weights_only=True
    )
    model.eval()
    return model, preprocess


def check_device(device: object) -> None:
    """Refuse a device that is not a torch device of this machine (before any weights load).

    Raises:
        TypeError: Not a string, ``torch.device`` or ``None``.
        ValueError: Not a device name, or CUDA/MPS (or that CUDA index) is not available here.

    Example:
        >>> check_device("cpu")
    """
    import torch

    if device is None or isinstance(device, torch.device):
        parsed = device
    elif isinstance(device, str):
        try:
            parsed = torch.device(device)
        except RuntimeError:
            raise ValueError(
                f"device {device!r} is not a torch device; use 'cpu', 'cuda', 'cuda:N' or 'mps'."
            ) from None
    else:
        raise TypeError(
            f"device must be a string such as 'cpu' or 'cuda', a torch.device or None, got "
            f"{type(device).__name__} {device!r}."
        )
    if parsed is None or parsed.type == "cpu":
        return
    if parsed.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r}: CUDA is not available here; use 'cpu'.")
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"device {device!r}: this machine has {count} CUDA device(s) (cuda:0..cuda:"
                f"{count - 1})."
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available here; use 'cpu'.")


def shapes_tokenizer() -> Tokenizer:
    """open_clip's tokenizer for the shapes-world model (context length 64).

    Example:
        >>> shapes_tokenizer()(["a red circle"]).shape
        torch.Size([1, 64])
    """
    import open_clip

    return open_clip.get_tokenizer(register_shapes_config())
