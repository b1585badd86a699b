"""Reading checkpoint files and checking them against the model they are loaded into.

Every failure is a :class:`~vision_lens.errors.CheckpointError` (or ``FileNotFoundError`` for a
path that does not exist) whose message names the file, what is wrong with it and how to fix it;
the library's own exception is chained (``raise ... from``). Nothing is resized or skipped
silently: a checkpoint whose position embeddings are for another patch grid is refused, naming
both image sizes.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from vision_lens.errors import CheckpointError

# What torch.load raises on a file that is not a (complete) torch checkpoint: truncated zip
# archives (RuntimeError/OSError), legacy pickles cut short (EOFError, UnpicklingError), text
# (KeyError: an invalid pickle opcode), ... torch.load(weights_only=True) runs no code of the
# file, so these can only come from reading it.
_TORCH_READ_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    OSError,
    RuntimeError,
    KeyError,
    IndexError,
    ValueError,
    TypeError,
    AttributeError,
)

_RESAVE = "save it again (torch.save(model.state_dict(), path) or safetensors) or re-download it"


def checkpoint_error(path: str | os.PathLike, problem: str, fix: str = _RESAVE) -> CheckpointError:
    """``CheckpointError("Checkpoint '<path>' <problem>; <fix>.")``."""
    return CheckpointError(f"Checkpoint {os.fspath(path)!r} {problem}; {fix}.")


def check_file(path: str | os.PathLike) -> str:
    """``path`` as a str after checking it is an existing, non-empty file.

    Raises:
        FileNotFoundError: Nothing exists at ``path``.
        CheckpointError: ``path`` is a directory or an empty file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Checkpoint {path!r} does not exist (resolved: {os.path.abspath(path)!r}); check "
            "the path."
        )
    if os.path.isdir(path):
        raise checkpoint_error(
            path,
            "is a directory, not a checkpoint file",
            "pass the weights file inside it (e.g. its .safetensors or .pt file)",
        )
    if os.path.getsize(path) == 0:
        raise checkpoint_error(path, "is empty (0 bytes): it was not saved or downloaded fully")
    return path


def read_checkpoint(path: str | os.PathLike) -> Any:
    """The object stored in a ``.safetensors`` file or a torch file, read without running code
    (``torch.load(weights_only=True)``), on the CPU.

    Raises:
        FileNotFoundError: Nothing exists at ``path``.
        CheckpointError: The file is a directory, empty, truncated, not a checkpoint, a
            safetensors file with a broken header, or a pickle holding more than tensors.
    """
    path = check_file(path)
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except SafetensorError as err:
            raise checkpoint_error(
                path, f"is not a valid safetensors file, truncated or corrupted ({err})"
            ) from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):
            raise checkpoint_error(
                path,
                "holds pickled objects other than tensors (loading them could run code, so it "
                "was refused)",
                "save only the weights (torch.save(model.state_dict(), path) or safetensors)",
            ) from err
        raise checkpoint_error(path, f"is not a torch checkpoint or is truncated ({err})") from err
    except _TORCH_READ_ERRORS as err:
        raise checkpoint_error(
            path,
            f"is not a torch checkpoint or is truncated ({type(err).__name__}: {err})",
        ) from err


def as_state_dict(
    obj: Any, path: str | os.PathLike, wrappers: Iterable[str] = ("state_dict",)
) -> dict[str, Tensor]:
    """The state dict in a checkpoint's object: the object itself, or the entry under the first
    of ``wrappers`` it has (training checkpoints); a ``module.`` prefix (DataParallel) removed.

    Raises:
        CheckpointError: It is not a non-empty mapping of names to tensors.
    """
    if isinstance(obj, Mapping):
        for key in wrappers:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        what = "an empty mapping" if isinstance(obj, Mapping) else f"a {type(obj).__name__}"
        raise checkpoint_error(path, f"holds {what}, not a state dict of tensors")
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, Tensor))]
    if bad:
        raise checkpoint_error(
            path,
            f"is not a state dict of tensors (entry {bad[0]!r} is a {type(obj[bad[0]]).__name__})",
        )
    if all(k.startswith("module.") for k in obj):
        return {k[len("module.") :]: v for k, v in obj.items()}
    return dict(obj)


def _grid(n_tokens: int, prefix: int) -> tuple[int, int] | None:
    side = math.isqrt(max(n_tokens - prefix, 0))
    return (side, side) if side * side == n_tokens - prefix and side else None


def _examples(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def check_state_dict(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    path: str | os.PathLike,
    arch: str,
    *,
    position_keys: Mapping[str, tuple[int, tuple[int, int]]] = {},
    size_fix: str = "",
) -> None:
    """Refuse a state dict that ``model.load_state_dict(strict=True)`` would reject, or that
    would need its position embeddings resized, with a message naming the file and the keys.

    Args:
        model: The model it is for.
        state_dict: The checkpoint's tensors, in ``model``'s naming.
        path: The file (for the message).
        arch: The architecture's name (for the message).
        position_keys: Learned position-embedding keys -> ``(prefix tokens, patch size)``; a
            checkpoint that differs from the model in these alone is refused as made for another
            image size, naming both.
        size_fix: How to load it at another size (the end of that message).

    Raises:
        CheckpointError: Keys missing, unexpected, or of other shapes.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        k
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return
    if not (missing or unexpected) and shapes and set(shapes) <= set(position_keys):
        key = shapes[0]
        prefix, patch = position_keys[key]
        have, want = state_dict[key].shape, expected[key].shape
        got = _grid(have[-2] if len(have) > 1 else have[0], prefix)
        need = _grid(want[-2] if len(want) > 1 else want[0], prefix)
        if got and need:
            raise checkpoint_error(
                path,
                f"was made for {got[0] * patch[0]}x{got[1] * patch[1]} px images (a "
                f"{got[0]}x{got[1]} patch grid) but {arch} takes {need[0] * patch[0]}x"
                f"{need[1] * patch[1]} px (a {need[0]}x{need[1]} grid); position embeddings are "
                "not resized silently",
                size_fix
                or "load it with the architecture of its own image size, then resample "
                "explicitly with image_size=...",
            )
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(
            f"{len(shapes)} tensor(s) of another shape (e.g. {k}: checkpoint "
            f"{tuple(state_dict[k].shape)}, model {tuple(expected[k].shape)})"
        )
    if missing:
        parts.append(f"{len(missing)} key(s) missing ({_examples(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) ({_examples(unexpected)})")
    raise checkpoint_error(
        path,
        f"does not match {arch}: " + "; ".join(parts),
        f"pass the architecture the checkpoint was saved from, or a complete checkpoint for {arch}",
    )


def load_checked(model: nn.Module, state_dict: Mapping[str, Tensor], path: str, arch: str) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` after :func:`check_state_dict`'s
    checks passed; a remaining refusal (e.g. a dtype torch cannot copy) names the file."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:
        raise checkpoint_error(
            path,
            f"cannot be loaded into {arch} ({err})",
            f"pass a checkpoint saved from {arch}",
        ) from err
