"""The shipped shapes-world CLIP: its open_clip name, config and weights.

The config JSON (``weights/<SHAPES_MODEL_NAME>.json``) is registered with open_clip, so the model
loads through ``open_clip.create_model(SHAPES_MODEL_NAME, pretrained=str(shapes_weights_path()))``
and ``HookedViT.from_open_clip`` exactly like a real checkpoint. Retrain it with
``scripts/train_shapes_clip.py`` (see :mod:`vision_lens.shapes.train`).

Example:
    >>> from vision_lens.shapes.pretrained import load_shapes_open_clip
    >>> model, preprocess = load_shapes_open_clip()  # doctest: +SKIP
    >>> tokenizer = shapes_tokenizer()  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

from vision_lens.shapes.train import SHAPES_MODEL_NAME

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
    """Path of the shipped float16 safetensors weights."""
    return _WEIGHTS_DIR / "shapes_clip.safetensors"


def shapes_config_path() -> Path:
    """Path of the shipped open_clip model-config JSON (its stem is the model name)."""
    return _WEIGHTS_DIR / f"{SHAPES_MODEL_NAME}.json"


def shapes_eval_path() -> Path:
    """Path of the shipped evaluation report (``scripts/eval_shapes_clip.py``)."""
    return _WEIGHTS_DIR / "shapes_clip_eval.json"


def register_shapes_config() -> str:
    """Registers the shapes-world config with open_clip (idempotent); returns the model name."""
    import open_clip

    if SHAPES_MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(shapes_config_path())
    return SHAPES_MODEL_NAME


def load_shapes_open_clip(device: str | None = None):
    """The shipped model as a plain open_clip model.

    Args:
        device: Torch device (default CPU).

    Returns:
        ``(model, preprocess)``: the ``CLIP`` in eval mode and its eval image transform (for a
        64x64 image the same as :func:`vision_lens.shapes.train.images_to_tensor`).
    """
    import open_clip

    name = register_shapes_config()
    model, _, preprocess = open_clip.create_model_and_transforms(
        name, pretrained=str(shapes_weights_path()), device=device, weights_only=True
    )
    model.eval()
    return model, preprocess


def shapes_tokenizer():
    """open_clip's tokenizer for the shapes-world model (context length 64)."""
    import open_clip

    return open_clip.get_tokenizer(register_shapes_config())
