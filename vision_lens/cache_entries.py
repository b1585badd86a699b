"""The mapping behind an :class:`~vision_lens.ActivationCache`: stored tensors, plus entries that
are cheap exact functions of stored ones and are computed when first read.

``run_with_cache`` does not store every hook point's tensor. ``blocks.L.attn.hook_result``
(``[batch, pos, head, d_model]``, ``n_heads`` times the size of ``hook_attn_out``) is
``hook_z @ W_O`` per head; ``hook_pattern`` is the softmax of ``hook_attn_scores``;
``mlp.hook_post`` is the activation function of ``mlp.hook_pre``; ``hook_resid_mid`` is
``hook_resid_pre + hook_attn_out``. When the sources are cached anyway and nothing else observes
the target, the cache keeps a :class:`Derivation` instead of the tensor, and
:class:`LazyEntries` computes it with the same operations as the forward pass on first read
(then keeps it). Its keys, ``in``, ``len`` and iteration list derived entries like stored
ones, so the cache looks exactly as if everything had been stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Derivation:
    """How to compute a cache entry from other entries.

    Attributes:
        sources: Names of the entries it is computed from.
        compute: ``compute(*source_tensors) -> tensor``, the forward pass's own operations.
        reads_weights: Whether ``compute`` reads the model's weights (then a stale cache refuses
            to derive it, see :class:`vision_lens.StaleCacheError`).
        shape_sensitive: Whether ``compute`` is a matrix product, whose last bits depend on the
            shape it runs at: derived only when the cache keeps the forward's positions.
        amplifies_rounding: Whether rounded sources give a markedly less accurate result than
            rounding the entry itself (a softmax of rounded scores): such an entry is stored,
            not derived, in a reduced-precision cache.
    """

    sources: tuple[str, ...]
    compute: Callable[..., Tensor]
    reads_weights: bool = False
    shape_sensitive: bool = False
    amplifies_rounding: bool = False


class LazyEntries(MutableMapping):
    """A ``{hook name: tensor}`` mapping in which some entries are :class:`Derivation` s,
    computed on first read and then stored.

    Args:
        stored: The tensors, in hook order.
        derived: Entries to compute on read, by name.
        order: All names in hook order (default: stored, then derived).
        guard: Called before computing an entry that reads weights (the cache's freshness
            check).

    Example:
        >>> import torch
        >>> entries = LazyEntries({"a": torch.ones(2)},
        ...                       {"b": Derivation(("a",), lambda a: 2 * a)})
        >>> list(entries), entries.derived_names()
        (['a', 'b'], ['b'])
        >>> entries["b"]
        tensor([2., 2.])
        >>> entries.derived_names()
        []
    """

    def __init__(
        self,
        stored: dict[str, Tensor],
        derived: dict[str, Derivation] | None = None,
        order: list[str] | None = None,
        guard: Callable[[], None] | None = None,
    ):
        self._stored = dict(stored)
        self._derived = dict(derived or {})
        known = [*self._stored, *self._derived]
        # Hook order first (names of ``order`` that hold nothing are dropped), then the rest.
        present = set(known)
        self._order = {name: None for name in (order or []) if name in present}
        self._order.update((name, None) for name in known)
        self.guard = guard

    # ------------------------------------------------------------------ mapping protocol
    def __getitem__(self, name: str) -> Tensor:
        if name in self._stored:
            return self._stored[name]
        derivation = self._derived.get(name)
        if derivation is None:
            raise KeyError(name)
        if derivation.reads_weights and self.guard is not None:
            self.guard()
        missing = [s for s in derivation.sources if s not in self]
        if missing:
            raise KeyError(
                f"{name!r} is computed from {', '.join(map(repr, missing))}, which this cache no "
                "longer has (it was deleted). Run the model again."
            )
        value = derivation.compute(*(self[s] for s in derivation.sources))
        self._stored[name] = value
        del self._derived[name]
        return value

    def __setitem__(self, name: str, value: Tensor) -> None:
        self._derived.pop(name, None)
        self._stored[name] = value
        self._order.setdefault(name, None)

    def __delitem__(self, name: str) -> None:
        if name not in self._stored and name not in self._derived:
            raise KeyError(name)
        self._stored.pop(name, None)
        self._derived.pop(name, None)
        del self._order[name]

    def __contains__(self, name: object) -> bool:
        return name in self._stored or name in self._derived

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)

    def __repr__(self) -> str:
        return f"LazyEntries({len(self._stored)} stored, derived: {self.derived_names()})"

    # ------------------------------------------------------------------ lazy-aware views
    def derived_names(self) -> list[str]:
        """Names of the entries not computed yet (they cost no memory until read)."""
        return [name for name in self._order if name in self._derived]

    def stored_items(self) -> list[tuple[str, Tensor]]:
        """The entries held as tensors now, in hook order (reading none of the derived ones)."""
        return [(name, self._stored[name]) for name in self._order if name in self._stored]

    def map_stored(self, fn: Callable[[str, Tensor], Tensor]) -> LazyEntries:
        """A new mapping with ``fn(name, tensor)`` applied to every stored tensor and the same
        derivations: moving or slicing a cache keeps derived entries derived (each derivation
        commutes with device moves and with slicing the batch or positions)."""
        stored = {name: fn(name, tensor) for name, tensor in self._stored.items()}
        return LazyEntries(stored, self._derived, list(self._order), self.guard)
