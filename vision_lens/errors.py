"""The library's own exception and warning types, one per kind of mistake.

Builtin types cover the usual cases and are what users already catch: ``TypeError`` (an argument
of the wrong type), ``ValueError`` (a value out of its domain: an empty list, a wrong shape, a
non-finite number), ``IndexError`` (a layer or head the model does not have),
``FileNotFoundError`` (a path that does not exist). The types below name what builtins cannot;
each subclasses the builtin a caller would otherwise expect, so ``except ValueError`` still
catches them. ``docs/errors.md`` lists which call raises which.
"""

from __future__ import annotations


class UnsupportedModelError(ValueError):
    """The model's image tower cannot be converted into a HookedViT."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be read as the model it is loaded into (empty, truncated, not a
    checkpoint, another architecture, missing or extra keys). The message names the file."""


class StaleCacheError(RuntimeError):
    """A cache was decomposed after the model's weights changed: its activations no longer
    belong to the model, so a decomposition would silently not sum to the cached output."""


class IncompleteCacheError(KeyError):
    """A cache lacks activations (or positions) a decomposition needs; the message names them
    and how to cache them."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class HookOutputError(ValueError):
    """A hook function returned a tensor of another shape or dtype than its hook point gave it;
    the message names the hook point."""


class InputWarning(UserWarning):
    """Input that is probably a mistake but could be intended (e.g. images that look
    un-normalised). Silence with ``warnings.filterwarnings("ignore", category=InputWarning)``."""


__all__ = [
    "CheckpointError",
    "HookOutputError",
    "IncompleteCacheError",
    "InputWarning",
    "StaleCacheError",
    "UnsupportedModelError",
]
