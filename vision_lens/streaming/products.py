"""The named products of a collection pass, and what one batch gives of each.

Per-image products (one row per image, stored in every shard):

* ``"heads"``: :meth:`~vision_lens.ActivationCache.decompose_heads` ``[n, layer, head, d_embed]``,
  or projected on ``directions [k, d_embed]``: ``[n, layer, head, k]``.
* ``"layers"``: :meth:`~vision_lens.ActivationCache.decompose_layers` per image
  ``[n, component, d_embed]`` (or ``k``); the component labels are in the manifest.
* ``"tokens"``: :meth:`~vision_lens.ActivationCache.decompose_tokens` ``[n, pos, d_embed]``
  (or ``k``).
* ``"embed"``: the model's output ``[n, d_embed]``.
* ``"labels"``: the dataset's labels ``[n]`` (items ``(image, label)`` or dicts with ``"label"``).
* ``"hook:<hook name>"``: any hook point's activation ``[n, ...]``.

Statistics (float64 sums over images, merged by addition):

* ``"head_moments"``: per (layer, head) ``count [layer, head]``, ``sum [layer, head, d_embed]``
  and ``outer [layer, head, d_embed, d_embed]`` (the sum of outer products) of each head's direct
  effect: the mean and covariance TextSpan needs, without keeping ``[n, layer, head, d]``.
* ``"mean:<hook name>"``: ``count []`` and ``sum [...]`` of that activation, for mean-ablation.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from vision_lens.streaming.projections import FoldedProjection
from vision_lens.utils.checks import check_finite

if TYPE_CHECKING:
    from vision_lens.hooked_vit import HookedViT
    from vision_lens.streaming.capture import Captured

__all__ = ["PER_IMAGE", "STATISTICS", "Products", "parse_products"]

PER_IMAGE = ("heads", "layers", "tokens", "embed", "labels")
STATISTICS = ("head_moments",)
PREFIXES = ("hook:", "mean:")


@dataclass(frozen=True)
class Products:
    """The parsed ``what`` of :func:`~vision_lens.streaming.collect`: names in the order given."""

    names: tuple[str, ...]

    @property
    def per_image(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if n in PER_IMAGE or n.startswith("hook:"))

    @property
    def statistics(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if n in STATISTICS or n.startswith("mean:"))

    @property
    def hooks(self) -> tuple[str, ...]:
        """Hook points whose activations a batch must capture."""
        return tuple(dict.fromkeys(n.split(":", 1)[1] for n in self.names if ":" in n))

    @property
    def decomposes(self) -> bool:
        return any(n in ("heads", "layers", "tokens", "head_moments") for n in self.names)


def parse_products(what: str | Sequence[str], model: HookedViT) -> Products:
    """Check ``what`` (names, or one comma-separated string) against the products and the
    model's hook points.

    Raises:
        TypeError: ``what`` is not a string or a sequence of strings.
        ValueError: No product, a product named twice, or an unknown one (with close matches).

    Example:
        >>> import vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> parse_products("heads,embed,mean:blocks.0.hook_resid_post", model).statistics
        ('mean:blocks.0.hook_resid_post',)
    """
    if isinstance(what, str):
        names = [part.strip() for part in what.split(",") if part.strip()]
    elif isinstance(what, Sequence) and all(isinstance(n, str) for n in what):
        names = [n.strip() for n in what]
    else:
        raise TypeError(f"what must be product names (strings), got {what!r}.")
    if not names:
        raise ValueError(f"what names no product; choose from {', '.join(PER_IMAGE + STATISTICS)}.")
    if len(set(names)) != len(names):
        raise ValueError(f"what {names!r} names a product twice; name each once.")
    hook_names = model.hook_names()
    for name in names:
        prefix, _, hook = name.partition(":")
        if hook and f"{prefix}:" in PREFIXES:
            if hook not in hook_names:
                close = difflib.get_close_matches(hook, hook_names, n=3, cutoff=0.6)
                hint = (
                    f"did you mean {' or '.join(repr(f'{prefix}:{c}') for c in close)}?"
                    if close
                    else "see model.hook_names()"
                )
                raise ValueError(f"{name!r}: {hook!r} is not a hook point of this model; {hint}")
        elif name not in PER_IMAGE + STATISTICS:
            known = [*PER_IMAGE, *STATISTICS, "hook:<hook name>", "mean:<hook name>"]
            close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
            hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
            raise ValueError(f"Unknown product {name!r}; {hint}products are {', '.join(known)}.")
    return Products(tuple(names))


def check_directions(directions: Tensor | None, d_embed: int) -> Tensor | None:
    """``directions [k, d_embed]`` as given, or ``None``.

    Example:
        >>> check_directions(torch.ones(3, 4), 5)
        Traceback (most recent call last):
        ...
        ValueError: directions are 4 wide but the model's output is 5 wide (d_embed); pass [k, 5].
    """
    if directions is None:
        return None
    check_finite(directions, "directions")
    if directions.dim() == 1:
        directions = directions[None]
    if directions.dim() != 2 or directions.shape[0] == 0:
        raise ValueError(
            f"directions must be [k, d_embed] with k >= 1, got {tuple(directions.shape)}."
        )
    if directions.shape[1] != d_embed:
        raise ValueError(
            f"directions are {directions.shape[1]} wide but the model's output is {d_embed} wide "
            f"(d_embed); pass [k, {d_embed}]."
        )
    return directions


def batch_products(
    products: Products,
    kept: Captured,
    labels: Tensor | None,
    *,
    projection: FoldedProjection,
    dtype: torch.dtype,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """What one batch gives: per-image products (``dtype``, on the CPU) and the batch's
    statistics (float64 sums, on the CPU; keys ``"<product>/<part>"``).

    ``kept`` is what :class:`~vision_lens.streaming.capture.BatchCapture` kept of the batch's
    forward pass. ``heads``, ``tokens`` and ``head_moments`` come from ``projection`` (the
    model's weights folded once per pass with the readout and the directions), equal to the
    cache's ``decompose_heads`` / ``decompose_tokens`` (projected) to float rounding.
    """
    directions, ln_mode = projection.directions, projection.ln_mode
    embed, hooks = kept.embed, kept.hooks

    def project(x: Tensor) -> Tensor:
        if directions is None:
            return x
        return x @ directions.to(x).T

    def keep(x: Tensor) -> Tensor:
        return x.detach().to("cpu", dtype).contiguous()

    rows: dict[str, Tensor] = {}
    stats: dict[str, Tensor] = {}
    terms = None
    if any(n in products.names for n in ("heads", "tokens", "head_moments")):
        terms = projection.compute(
            kept.readout(),
            kept.pattern,
            kept.values,
            heads="heads" in products.names,
            heads_full="head_moments" in products.names,
            tokens="tokens" in products.names,
        )
    for name in products.names:
        if name == "heads":
            rows[name] = keep(terms.heads)
        elif name == "layers":
            rows[name] = keep(
                project(kept.cache().decompose_layers(ln_mode=ln_mode).terms.transpose(0, 1))
            )
        elif name == "tokens":
            rows[name] = keep(terms.tokens)
        elif name == "embed":
            rows[name] = keep(embed)
        elif name == "labels":
            if labels is None:
                raise ValueError(
                    "what names 'labels' but the dataset's items carry none; pass items "
                    "(image, label) or dicts with a 'label', or drop 'labels'."
                )
            rows[name] = labels.detach().cpu().contiguous()
        elif name.startswith("hook:"):
            rows[name] = keep(hooks[name[5:]])
        elif name == "head_moments":
            h = terms.heads_full.detach().to(torch.float64)
            n = h.shape[0]
            stats[f"{name}/count"] = torch.full(h.shape[1:3], n, dtype=torch.int64)
            stats[f"{name}/sum"] = h.sum(0).cpu()
            stats[f"{name}/outer"] = torch.einsum("blhd,blhe->lhde", h, h).cpu()
        elif name.startswith("mean:"):
            a = hooks[name[5:]].detach().to(torch.float64)
            stats[f"{name}/count"] = torch.tensor(a.shape[0], dtype=torch.int64)
            stats[f"{name}/sum"] = a.sum(0).cpu()
    return rows, stats


def describe(
    products: Products, directions: Tensor | None, layer_labels: Sequence[str] | None
) -> dict[str, Any]:
    """What the manifest records of each product (its kind; the parts of a statistic; the
    component labels of ``"layers"``)."""
    out: dict[str, Any] = {}
    for name in products.names:
        if name == "layers":
            out[name] = {"kind": "per_image", "components": list(layer_labels or [])}
        elif name in STATISTICS or name.startswith("mean:"):
            out[name] = {
                "kind": "statistic",
                "parts": ["count", "sum"] + (["outer"] if name == "head_moments" else []),
            }
        else:
            out[name] = {"kind": "per_image"}
        if name in ("heads", "layers", "tokens"):
            out[name]["projected"] = directions is not None
    return out
