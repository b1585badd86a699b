"""What a cache remembers of the weights its activations came from.

:class:`WeightRecord` lets an :class:`~vision_lens.ActivationCache` refuse to decompose
(:class:`vision_lens.StaleCacheError`) once the model's weights changed after caching: the
parameters' autograd version counters, dtypes and shapes, plus a cheap fingerprint of the values
the decompositions read (an edit through ``.data`` does not bump the version counter).
"""

from __future__ import annotations

import re
import weakref
from typing import Any

import torch
from torch import Tensor

from vision_lens.errors import StaleCacheError

# Weights a decomposition reads (besides everything outside ``blocks.``): their values are
# fingerprinted, so even an edit the autograd version counter misses (``p.data *= 2``) is caught.
_READ_IN_BLOCKS = re.compile(r"^blocks\.\d+\.attn\.(out_weight|b_O)$")


_PROBES: dict[tuple[int, torch.device, torch.dtype], Tensor] = {}


def _fingerprint(tensor: Tensor) -> Tensor:
    """The weight's rows (``[n, rest]`` view) projected on a fixed random vector: one BLAS
    matrix-vector product, no copy. A scaled, zeroed or permuted head, a single changed entry,
    any edit except one orthogonal to the probe changes it."""
    x = tensor.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    m = x.reshape(1, -1) if x.dim() == 0 else x.reshape(x.shape[0], -1)
    key = (m.shape[1], m.device, m.dtype)
    probe = _PROBES.get(key)
    if probe is None:
        gen = torch.Generator().manual_seed(m.shape[1])
        probe = torch.rand(m.shape[1], generator=gen, dtype=torch.float64) + 0.5
        probe = _PROBES[key] = probe.to(m.device, m.dtype)
    return m @ probe


class WeightRecord:
    """What a cache remembers of the weights its activations came from, to refuse decomposing
    it (:class:`vision_lens.StaleCacheError`) once they changed.

    Recorded when the cache is made (``run_with_cache``, ``run_with_decomposition_cache`` or an
    ``ActivationCache(cache_dict, model)`` built by hand, which is assumed to come from the
    model's current weights) and carried by ``to``, ``remove_batch_dim`` and
    ``apply_slice_to_batch_dim``:

    * every parameter: the object itself (a weak reference), its dtype, shape and autograd
      version counter ``p._version``, bumped by every in-place change autograd sees: optimizer
      steps, ``with torch.no_grad(): p.mul_(2)``, ``p.copy_``, ``load_state_dict`` (even of
      identical values: refused, to be safe). ``requires_grad_`` changes nothing and is
      harmless. ``model.to(dtype)`` keeps the counters but changes the dtype: refused, unless
      converted back exactly. A device move keeps values, counters and objects: a decomposition
      after one is correct.
    * the values of what a decomposition reads (each block's ``attn.out_weight`` and ``b_O``,
      every weight outside the blocks) and of every buffer: each row projected on a fixed
      random vector (compared to float rounding). This catches edits the version counter does
      not see (``W.data *= 2``: ``.data`` has its own counter) and buffers replaced by device
      moves.

    Cost: a Python loop over the parameters (about a microsecond each) and one matrix-vector
    product over about a twelfth of the weights (ViT-B/16: 7M of 86M values, one memory-bound
    pass: milliseconds on a CPU), when the cache is made and at the start of each
    ``decompose_*`` call; a few float per row of memory. Not caught: a ``.data`` edit of a
    weight no decomposition reads (the decompositions still sum exactly to the cached output
    then), or an edit orthogonal to the random probe.
    """

    def __init__(self, model: Any):
        with torch.no_grad():
            self._params = {
                name: (weakref.ref(p), p.dtype, tuple(p.shape), p._version)
                for name, p in model.named_parameters()
            }
            # name -> (fingerprint, relative tolerance, absolute tolerance), so that a check
            # compares without re-deriving the scale of each recorded fingerprint.
            self._fingerprints = {}
            for name, tensor in self._valued(model):
                if tensor.numel() == 0:
                    continue
                old = _fingerprint(tensor)
                tol = 1e-9 if old.dtype == torch.float64 else 1e-5
                scale = float(old.abs().nan_to_num(0.0, 0.0, 0.0).max())
                self._fingerprints[name] = (old, tol, tol * scale)

    @staticmethod
    def _valued(model: Any):
        for name, p in model.named_parameters():
            if not name.startswith("blocks.") or _READ_IN_BLOCKS.match(name):
                yield name, p
        yield from model.named_buffers()

    def changes(self, model: Any) -> list[str]:
        """What changed since the record, one phrase per weight (empty: nothing)."""
        changed = []
        current = dict(model.named_parameters())
        for name in self._params.keys() - current.keys():
            changed.append(f"{name} removed")
        for name in current.keys() - self._params.keys():
            changed.append(f"{name} added")
        for name, (ref, dtype, shape, version) in self._params.items():
            p = current.get(name)
            if p is None:
                continue
            if ref() is not p:
                changed.append(f"{name} replaced by another tensor")
            elif p.dtype != dtype:
                changed.append(f"{name} converted from {dtype} to {p.dtype}")
            elif tuple(p.shape) != shape:
                changed.append(f"{name} reshaped from {list(shape)} to {list(p.shape)}")
            elif p._version != version:
                changed.append(f"{name} edited in place")
        if changed:
            return changed
        with torch.no_grad():
            for name, tensor in self._valued(model):
                record = self._fingerprints.get(name)
                if record is None:
                    continue
                old, rtol, atol = record
                new = _fingerprint(tensor).to(old.device, old.dtype)
                if new.shape != old.shape or not torch.allclose(
                    new, old, rtol=rtol, atol=atol, equal_nan=True
                ):
                    changed.append(f"{name} values changed")
        return changed

    def check(self, model: Any) -> None:
        """Raise :class:`vision_lens.StaleCacheError` naming what changed, if anything did."""
        changed = self.changes(model)
        if changed:
            shown = ", ".join(changed[:5]) + (
                f" and {len(changed) - 5} more" if len(changed) > 5 else ""
            )
            raise StaleCacheError(
                f"This cache is stale: the model's weights changed after it was cached ({shown}). "
                "The decompositions read the model's current weights, but the cached "
                "activations came from the old ones, so the terms would no longer sum to the "
                "cached output. Re-run run_with_cache after editing weights (or "
                "model.run_with_decomposition_cache(images))."
            )


__all__ = ["WeightRecord"]
