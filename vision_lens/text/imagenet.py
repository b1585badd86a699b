"""ImageNet zero-shot metadata: open_clip's 1000 class names and its prompt templates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

#: The values :func:`imagenet_templates` accepts for ``kind``.
TEMPLATE_KINDS = ("openai", "simple")


def imagenet_classnames() -> list[str]:
    """The 1000 ImageNet class names used for CLIP zero-shot evaluation.

    These are open_clip's ``IMAGENET_CLASSNAMES`` (the cleaned-up names from the OpenAI CLIP
    notebook, in ImageNet class-index order).

    Returns:
        A new list of 1000 strings (safe to modify).

    Example:
        >>> names = imagenet_classnames()
        >>> len(names), names[0]
        (1000, 'tench')
    """
    from open_clip import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def imagenet_templates(kind: Literal["openai", "simple"] = "openai") -> list[Callable[[str], str]]:
    """open_clip's ImageNet zero-shot prompt templates.

    Args:
        kind: ``"openai"`` for the 80 templates of the CLIP paper (``OPENAI_IMAGENET_TEMPLATES``)
            or ``"simple"`` for open_clip's 7-template subset (``SIMPLE_IMAGENET_TEMPLATES``).

    Returns:
        A new list of callables ``classname -> prompt``.

    Raises:
        ValueError: ``kind`` is neither ``"openai"`` nor ``"simple"``.

    Example:
        >>> templates = imagenet_templates("simple")
        >>> len(templates), templates[0]("dog")
        (7, 'itap of a dog.')
    """
    from open_clip import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    if kind == "openai":
        return list(OPENAI_IMAGENET_TEMPLATES)
    if kind == "simple":
        return list(SIMPLE_IMAGENET_TEMPLATES)
    raise ValueError(f"Unknown template kind {kind!r}; use one of {list(TEMPLATE_KINDS)}.")


__all__ = ["TEMPLATE_KINDS", "imagenet_classnames", "imagenet_templates"]
