"""One forward pass of a collection, keeping what the requested products read and nothing more.

:meth:`~vision_lens.HookedViT.run_with_decomposition_cache` keeps every entry any decomposition
reads and builds an :class:`~vision_lens.ActivationCache` (which records the weights) per batch.
A pass asks for the same products on every batch, so :class:`BatchCapture` hooks only what they
read, with the same row rules (values of every token; other per-position entries at the
readout's query rows only), and writes each layer's values and pattern rows straight into one
stacked buffer per pass (reused while the batch size stays the same), which the folded head and
token terms (:mod:`vision_lens.streaming.projections`) read in a few batched operations:

* ``values`` ``[batch, pos, layer, head, d_head]`` (``blocks.L.attn.hook_v``);
* ``pattern`` ``[batch, layer, head, query, pos]`` (``blocks.L.attn.hook_pattern`` rows);
* ``entries``: the final residual stream and norm scale at the query rows (and an attention
  pool's pattern and MLP output), from which :meth:`Captured.readout` freezes the readout as the
  cache does; with ``"layers"`` also the embedding, attention and MLP outputs, for
  :meth:`Captured.cache`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from vision_lens.cache import ActivationCache
    from vision_lens.hooked_vit import HookedViT
    from vision_lens.readout import LinearReadout
    from vision_lens.streaming.products import Products

__all__ = ["BatchCapture", "Captured"]

HEAD_TERMS = ("heads", "tokens", "head_moments")


@dataclass
class Captured:
    """What one batch's forward pass kept (see the module docstring)."""

    model: HookedViT
    embed: Tensor
    entries: dict[str, Tensor]
    hooks: dict[str, Tensor]
    values: Tensor | None = None
    pattern: Tensor | None = None
    _lin: LinearReadout | None = field(default=None, repr=False)

    def readout(self) -> LinearReadout:
        """The readout frozen at this batch's statistics (as ``cache.frozen_readout()``)."""
        if self._lin is None:
            model, entries = self.model, self.entries
            last = model.cfg.n_layers - 1
            self._lin = model.readout.linear(
                entries[f"blocks.{last}.hook_resid_post"],
                entries["ln_final.hook_scale"],
                model.ln_final,
                model.W_proj,
                model.b_proj,
                pool_pattern=entries.get("readout.attn.hook_pattern"),
                mlp_out=entries.get("readout.hook_mlp_out"),
            )
        return self._lin

    def cache(self) -> ActivationCache:
        """An :class:`~vision_lens.ActivationCache` of the kept entries (``decompose_layers``)."""
        from vision_lens.cache import ActivationCache

        return ActivationCache(dict(self.entries), self.model)


class BatchCapture:
    """The hooks of a pass over ``model`` for ``products``; :meth:`run` runs one batch.

    Example:
        >>> import torch, vision_lens as vl
        >>> from vision_lens.streaming.products import parse_products
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> capture = BatchCapture(model, parse_products("tokens", model))
        >>> kept = capture.run(torch.randn(3, 3, 16, 16))
        >>> kept.values.shape, kept.pattern.shape  # [b, pos, layer, head, d_head], [b, layer, ...]
        (torch.Size([3, 5, 2, 4, 8]), torch.Size([3, 2, 4, 1, 5]))
    """

    def __init__(self, model: HookedViT, products: Products):
        self.model = model
        self.products = products
        cfg = model.cfg
        self.rows = model.readout.query_positions
        self.head_terms = any(n in products.names for n in HEAD_TERMS)
        self.layers = "layers" in products.names
        last = cfg.n_layers - 1
        names: list[str] = []
        if self.head_terms or self.layers:
            names += [f"blocks.{last}.hook_resid_post", "ln_final.hook_scale"]
            if cfg.readout == "map":
                names += ["readout.attn.hook_pattern", "readout.hook_mlp_out"]
        if self.layers:
            names.append("blocks.0.hook_resid_pre")
            for layer in range(cfg.n_layers):
                names += [f"blocks.{layer}.hook_attn_out", f"blocks.{layer}.hook_mlp_out"]
        self.entry_names = list(dict.fromkeys(names))
        self._values: Tensor | None = None
        self._pattern: Tensor | None = None

    def _buffers(self, like_v: Tensor, like_pattern: Tensor) -> tuple[Tensor, Tensor]:
        """The stacked buffers for a batch shaped like these layer-0 tensors (reused while the
        batch size, dtype and device stay the same)."""
        L = self.model.cfg.n_layers
        b, pos, h, e = like_v.shape
        n_query = self.rows.stop - self.rows.start
        v_shape, p_shape = (b, pos, L, h, e), (b, L, h, n_query, like_pattern.shape[-1])
        values, pattern = self._values, self._pattern
        if (
            values is None
            or values.shape != v_shape
            or values.dtype != like_v.dtype
            or values.device != like_v.device
            or pattern.dtype != like_pattern.dtype
        ):
            values = self._values = like_v.new_empty(v_shape)
            pattern = self._pattern = like_pattern.new_empty(p_shape)
        return values, pattern

    def run(self, images: Tensor, hook_names: tuple[str, ...] = ()) -> Captured:
        """Run ``images`` through the model (under ``torch.no_grad``) keeping what the products
        read, and the activations of ``hook_names`` whole (``hook:``/``mean:`` products).

        The stacked buffers are reused by the next call: read a batch's ``values`` and
        ``pattern`` before running the next one.
        """
        rows = self.rows
        entries: dict[str, Tensor] = {}
        hooks: dict[str, Tensor] = {}
        stacked: dict[str, Tensor] = {}
        pending: dict[int, Tensor] = {}  # layer -> hook_v seen before its pattern

        def keep_rows(tensor: Tensor, hook: Any) -> None:
            if hook.name.startswith("readout.") or tensor.dim() != 3:
                entries[hook.name] = tensor.detach().clone()
            else:  # [batch, pos, d]: the readout's rows, copied (a view keeps the whole alive)
                entries[hook.name] = tensor.detach()[:, rows].clone()

        def keep_v(tensor: Tensor, hook: Any) -> None:
            pending[int(hook.name.split(".")[1])] = tensor.detach()

        def keep_pattern(tensor: Tensor, hook: Any) -> None:
            layer = int(hook.name.split(".")[1])
            v = pending.pop(layer)
            if "values" not in stacked:
                stacked["values"], stacked["pattern"] = self._buffers(v, tensor)
            stacked["values"][:, :, layer] = v
            stacked["pattern"][:, layer] = tensor.detach()[:, :, rows]

        def keep_whole(tensor: Tensor, hook: Any) -> None:
            hooks[hook.name] = tensor.detach()

        fwd = [(name, keep_rows) for name in self.entry_names]
        if self.head_terms:
            for layer in range(self.model.cfg.n_layers):
                fwd.append((f"blocks.{layer}.attn.hook_v", keep_v))
                fwd.append((f"blocks.{layer}.attn.hook_pattern", keep_pattern))
        fwd += [(name, keep_whole) for name in hook_names]
        context = self.model.hooks(fwd_hooks=fwd) if fwd else contextlib.nullcontext()
        with torch.no_grad(), context:
            embed = self.model(images)
        return Captured(
            self.model,
            embed,
            entries,
            hooks,
            values=stacked.get("values"),
            pattern=stacked.get("pattern"),
        )
