"""Structural types for the objects analysis functions take from outside the image tower.

Analysis code is typed against these Protocols (and the concrete :class:`~vision_lens.HookedViT`
and :class:`~vision_lens.ActivationCache`) rather than ``Any``: a :class:`~vision_lens.CLIPText`
satisfies :class:`TextEncoder`, and so does any small stand-in a test or a user writes (for
example fixed random text embeddings), without subclassing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from jaxtyping import Float
from torch import Tensor

Template = str | Callable[[str], str]
"""A zero-shot prompt template: a format string with a ``"{}"`` placeholder for the class name
(``"a photo of a {}."``) or a callable ``classname -> prompt`` (as in open_clip's templates)."""


@runtime_checkable
class TextEncoder(Protocol):
    """What analysis needs from a CLIP text tower: text embeddings in the image-embedding space.

    Example:
        >>> import torch
        >>> class Fixed:
        ...     def encode(self, texts, normalize=True, batch_size=256, progress=False):
        ...         return torch.ones(len(texts), 4)
        ...     def zero_shot_weights(self, classnames, templates, progress=False, batch_size=256):
        ...         return torch.ones(len(classnames), 4)
        >>> isinstance(Fixed(), TextEncoder)
        True
    """

    def encode(
        self,
        texts: str | Sequence[str],
        normalize: bool = True,
        batch_size: int = 256,
        progress: bool = False,
    ) -> Float[Tensor, "n_text d_embed"]: ...

    def zero_shot_weights(
        self,
        classnames: str | Sequence[str],
        templates: Template | Sequence[Template],
        progress: bool = False,
        batch_size: int = 256,
    ) -> Float[Tensor, "n_classes d_embed"]: ...


__all__ = ["Template", "TextEncoder"]
