"""Deprecation helpers: a renamed keyword keeps working for one release, with a warning."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")


def renamed_keyword(
    old: str, new: str, removed_in: str = "0.3"
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorator: accept keyword ``old`` as ``new`` with a ``DeprecationWarning``.

    Passing both is a ``TypeError`` (which one was meant cannot be guessed).

    Example:
        >>> import warnings
        >>> @renamed_keyword("normalize", "unit_output")
        ... def f(x, unit_output=False):
        ...     return unit_output
        >>> with warnings.catch_warnings(record=True):
        ...     f(1, normalize=True)
        True
    """

    def decorate(function: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(function)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if old in kwargs:
                warnings.warn(
                    f"{function.__name__}: {old}= is now {new}= ({old}= is removed in "
                    f"{removed_in}).",
                    DeprecationWarning,
                    stacklevel=2,
                )
                if new in kwargs:
                    raise TypeError(f"Pass {new}= alone: {old}= is its deprecated name.")
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return wrapper

    return decorate
