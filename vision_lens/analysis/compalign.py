"""CompAlign (Balasubramanian et al. 2024, §4): one linear map per component into CLIP space.

A model that is not a CLIP has no text tower to read its components with. CompAlign learns one
linear map ``f_i`` per component ``c_i`` (all in the source model's output space, width
``d_source``) into the image-embedding space of a CLIP model (width ``d_clip``), label-free, on
any images, with the paper's loss::

    L = mean_images [1 - cos(sum_i f_i(c_i), z_CLIP)] + lambda * sum_i ||f_i^T f_i - I||_F

The first term aligns the mapped sum with CLIP's embedding of the same image; the second keeps
each map close to an isometry, so that norms (and so the ranking of components) survive the map
(the paper's Theorem 1). Defaults follow the paper's appendix B: Adam, ``lr = 3e-4``,
``lambda = 1/768``, up to one epoch; the batch size is not given there (64 here).

Notes on what the paper leaves open:

* ``f_i(c) = c @ W_i`` with ``W_i`` ``[d_source, d_clip]``. When ``d_source > d_clip`` no map can
  satisfy ``f_i^T f_i = I`` (``[d_source, d_source]``, rank at most ``d_clip``); the penalty is
  then taken on the Gram matrix of the smaller side, ``f_i f_i^T``, whose minimisers (all
  singular values 1) are the same. ``penalty="squared"`` uses ``||.||_F^2`` instead.
* Maps start as random semi-orthogonal matrices (zero penalty), seeded.
* Components the selection leaves out are summed into one ``"rest"`` term (the paper's
  ``c_init``), so the mapped terms still sum to the mapped representation.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> comps = torch.randn(256, 3, 8, generator=g)  # [n, component, d_source]
    >>> W = torch.randn(3, 8, 6, generator=g)
    >>> clip = torch.einsum("ncs,csd->nd", comps, W)  # a planted CLIP embedding
    >>> aligner = CompAlign(["L0_mlp", "L1_mlp", "rest"], d_source=8, d_clip=6)
    >>> hist = aligner.fit(comps, clip, epochs=5, lr=3e-2, progress=False)
    >>> aligner.align(comps).terms.shape
    torch.Size([256, 3, 6])
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from vision_lens.analysis.direct_effects import Components
from vision_lens.analysis.selection import components_of_cache, select_components
from vision_lens.cache import ComponentId
from vision_lens.errors import CheckpointError
from vision_lens.utils.batching import progress_bar
from vision_lens.utils.checks import check_batch_size, check_finite

__all__ = [
    "AlignedComponents",
    "AlignmentReport",
    "CompAlign",
    "FitHistory",
    "alignment_report",
]

#: The files :meth:`CompAlign.save` writes into its folder.
WEIGHTS_FILE = "compalign.safetensors"
CONFIG_FILE = "compalign.json"
_NEAR_ZERO = 1e-12


# ---------------------------------------------------------------------- results
class AlignedComponents(NamedTuple):
    """What :meth:`CompAlign.align` returns (``terms, ids = ...`` unpacks it).

    Attributes:
        terms: ``[n, component, d_clip]``, each component mapped into CLIP space.
        ids: One :class:`ComponentId` per component.
    """

    terms: Float[Tensor, "n component d_clip"]
    ids: list[ComponentId]

    def total(self) -> Float[Tensor, "n d_clip"]:
        """The mapped representation: the sum over components."""
        return self.terms.sum(1)


@dataclass
class FitHistory:
    """What :meth:`CompAlign.fit` returns.

    Attributes:
        steps: The optimisation step of each evaluation.
        train_loss: Mean training loss (both terms) since the previous evaluation.
        val_cosine: Held-out mean cosine between the mapped sum and the CLIP embedding.
        best_step: The step whose maps were kept (the best held-out cosine).
        stopped_early: Training stopped because the held-out cosine stopped improving.
        epochs: Epochs run (the last one possibly partial).
    """

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_cosine: list[float] = field(default_factory=list)
    best_step: int = 0
    stopped_early: bool = False
    epochs: int = 0


@dataclass
class AlignmentReport:
    """What :func:`alignment_report` returns.

    Attributes:
        cosine: Mean cosine between the mapped sum and the CLIP embedding.
        accuracy: Zero-shot accuracy of the mapped sum against the text embeddings, or ``None``.
        clip_accuracy: Zero-shot accuracy of the CLIP embeddings themselves (the ceiling).
        n: Number of images.
    """

    cosine: float
    accuracy: float | None
    clip_accuracy: float | None
    n: int


# ---------------------------------------------------------------------- the aligner
def _as_batch(components: object, name: str = "source_components") -> Tensor:
    """``[n, component, d]`` from a tensor or :class:`Components` (``[component, n, d]``)."""
    if isinstance(components, Components):
        return components.terms.transpose(0, 1)
    if isinstance(components, AlignedComponents):
        raise TypeError(f"{name} are already aligned (AlignedComponents); pass source components.")
    if not isinstance(components, Tensor):
        raise TypeError(
            f"{name} must be a tensor [n, component, d_source] or Components, got "
            f"{type(components).__name__}."
        )
    if components.dim() != 3 or not components.is_floating_point():
        raise ValueError(
            f"{name} must be a float tensor [n, component, d_source], got "
            f"{tuple(components.shape)} {components.dtype}."
        )
    return components


class CompAlign(torch.nn.Module):
    """One linear map per component into a CLIP model's image-embedding space.

    Args:
        component_ids: One label per component (``"L10H3"``, ``"L11_mlp"``, ``"rest"``, ...).
        d_source: Width of the source components (the source model's output width).
        d_clip: Width of the CLIP image embedding.
        seed: Seed of the (semi-orthogonal) initial maps.
        weight: Maps ``[component, d_source, d_clip]`` to start from instead (copied).

    Attributes:
        weight: ``[component, d_source, d_clip]``; component ``i`` maps ``c -> c @ weight[i]``.
        ids: The :class:`ComponentId` of each map.
        history: The :class:`FitHistory` of the last :meth:`fit`, or ``None``.

    Example:
        >>> aligner = CompAlign(["L1H0", "L1_mlp"], d_source=4, d_clip=3)
        >>> aligner.align(torch.randn(5, 2, 4)).terms.shape
        torch.Size([5, 2, 3])
    """

    def __init__(
        self,
        component_ids: Sequence[str],
        d_source: int,
        d_clip: int,
        *,
        seed: int = 0,
        weight: Tensor | None = None,
    ) -> None:
        super().__init__()
        if isinstance(component_ids, str):
            raise TypeError("component_ids must be a list of labels, not one string.")
        self.ids = [ComponentId.parse(str(i)) for i in component_ids]
        if not self.ids:
            raise ValueError("component_ids is empty: CompAlign needs at least one component.")
        if len(set(self.ids)) != len(self.ids):
            raise ValueError("component_ids must be unique.")
        for name, value in (("d_source", d_source), ("d_clip", d_clip)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
        self.d_source, self.d_clip = d_source, d_clip
        shape = (len(self.ids), d_source, d_clip)
        if weight is None:
            weight = torch.empty(shape)
            gen = torch.Generator().manual_seed(seed)
            for w in weight:  # semi-orthogonal: the penalty starts at zero
                q, _ = torch.linalg.qr(
                    torch.randn(max(d_source, d_clip), min(d_source, d_clip), generator=gen)
                )
                w.copy_(q if d_source >= d_clip else q.T)
        elif tuple(weight.shape) != shape or not weight.is_floating_point():
            raise ValueError(f"weight must be a float tensor {shape}, got {tuple(weight.shape)}.")
        self.weight = torch.nn.Parameter(weight.detach().clone())
        self.history: FitHistory | None = None

    @classmethod
    def for_components(cls, components: Components, d_clip: int, *, seed: int = 0) -> CompAlign:
        """An aligner with one map per component of ``components`` (see
        :func:`select_components`).

        Example:
            >>> c = Components(torch.randn(2, 5, 4), ["L0_mlp", "rest"])
            >>> CompAlign.for_components(c, d_clip=3).ids
            ['L0_mlp', 'rest']
        """
        return cls(components.labels, components.terms.shape[-1], d_clip, seed=seed)

    # -------------------------------------------------------------- maps and loss
    def forward(
        self, components: Float[Tensor, "n component d_source"]
    ) -> Float[Tensor, "n component d_clip"]:
        """Each component through its map: ``[n, component, d_clip]``."""
        return torch.einsum("ncs,csd->ncd", components.to(self.weight), self.weight)

    def penalty(self, kind: Literal["frobenius", "squared"] = "frobenius") -> Tensor:
        """``sum_i ||G_i - I||_F`` (or squared) with ``G_i`` the Gram matrix of map ``i`` on its
        smaller side (``f_i^T f_i`` when ``d_source <= d_clip``).

        Example:
            >>> float(CompAlign(["a"], 4, 6).penalty().detach()) < 1e-5
            True
        """
        w = self.weight
        gram = w @ w.transpose(1, 2) if self.d_source <= self.d_clip else w.transpose(1, 2) @ w
        eye = torch.eye(gram.shape[-1], dtype=w.dtype, device=w.device)
        sq = (gram - eye).pow(2).sum((1, 2))
        return sq.sum() if kind == "squared" else sq.clamp_min(1e-24).sqrt().sum()

    def _check(self, x: Tensor, z: Tensor | None) -> None:
        if x.shape[1:] != (len(self.ids), self.d_source):
            raise ValueError(
                f"source components are {tuple(x.shape)}; this aligner expects [n, "
                f"{len(self.ids)} components, d_source={self.d_source}]."
            )
        if x.shape[0] == 0:
            raise ValueError("source components are empty (n = 0).")
        check_finite(x, "source_components")
        if z is None:
            return
        if not isinstance(z, Tensor) or z.dim() != 2 or not z.is_floating_point():
            raise ValueError("clip_embeddings must be a float tensor [n, d_clip].")
        if z.shape[1] != self.d_clip:
            raise ValueError(
                f"clip_embeddings have width {z.shape[1]}; this aligner maps into d_clip = "
                f"{self.d_clip}."
            )
        if z.shape[0] != x.shape[0]:
            raise ValueError(
                f"{x.shape[0]} images of source components but {z.shape[0]} CLIP embeddings: "
                "pass the same images in the same order."
            )
        check_finite(z, "clip_embeddings")
        if bool((z.norm(dim=-1) <= _NEAR_ZERO).any()):
            raise ValueError("clip_embeddings hold a zero vector: its cosine is undefined.")

    def _cosines(self, x: Tensor, z: Tensor) -> Tensor:
        return F.cosine_similarity(self(x).sum(1), z.to(self.weight), dim=-1)

    # -------------------------------------------------------------- training
    def fit(
        self,
        source_components: Tensor | Components | Iterable[tuple[Tensor, Tensor]],
        clip_embeddings: Float[Tensor, "n d_clip"] | None = None,
        *,
        epochs: int = 1,
        lr: float = 3e-4,
        lam: float = 1 / 768,
        penalty: Literal["frobenius", "squared"] = "frobenius",
        batch_size: int = 64,
        val_fraction: float = 0.1,
        validation: tuple[Tensor, Tensor] | None = None,
        eval_every: int = 50,
        patience: int = 5,
        min_delta: float = 1e-5,
        seed: int = 0,
        device: str | torch.device | None = None,
        progress: bool = True,
    ) -> FitHistory:
        """Train the maps (Adam) on the paper's loss, with early stopping on held-out images.

        Args:
            source_components: ``[n, component, d_source]`` (or :class:`Components`, whose
                labels must be this aligner's ids), or an iterable of ``(components, clip)``
                batches (re-iterated each epoch; a DataLoader), for streaming.
            clip_embeddings: ``[n, d_clip]`` CLIP image embeddings of the same images (with
                tensors).
            epochs: Passes over the training images (the paper: up to one, on 50k images).
            lr: Adam's learning rate (the paper: ``3e-4``).
            lam: Weight of the orthogonality penalty (the paper: ``1/768``).
            penalty: ``"frobenius"`` (the paper's ``||.||_F``) or ``"squared"``.
            batch_size: Images per step with tensors.
            val_fraction: Held-out share of the images (tensors), drawn with ``seed``.
            validation: Held-out ``(components, clip)``; required for an iterable unless the
                first batch is to serve (it then is held out, not trained on).
            eval_every: Steps between held-out evaluations (and at each epoch's end).
            patience: Evaluations without an improvement of ``min_delta`` before stopping.
            min_delta: Improvement in held-out cosine that counts.
            seed: Seed of the split and the shuffling.
            device: Where to train (default: the maps' device); the maps stay there.
            progress: Show a progress bar (steps).

        Returns:
            The :class:`FitHistory` (also ``self.history``); the maps are those of the best
            held-out cosine.

        Raises:
            ValueError: Width or ``n`` mismatches, NaN/inf, empty data, a bad hyper-parameter.
            FloatingPointError: The loss became NaN (lower ``lr``).

        Example:
            >>> x, z = torch.randn(64, 2, 4), torch.randn(64, 3)
            >>> aligner = CompAlign(["a", "b"], d_source=4, d_clip=3)
            >>> aligner.fit(x, z, epochs=2, progress=False).epochs
            2
        """
        check_batch_size(batch_size)
        for name, value in (("epochs", epochs), ("eval_every", eval_every), ("patience", patience)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
        if not (lr > 0 and math.isfinite(lr)) or not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"lr must be > 0 and lam >= 0 (finite), got lr={lr!r}, lam={lam!r}.")
        if penalty not in ("frobenius", "squared"):
            raise ValueError(f"penalty must be 'frobenius' or 'squared', got {penalty!r}.")
        if device is not None:
            self.to(device)
        dev = self.weight.device
        gen = torch.Generator().manual_seed(seed)
        if isinstance(source_components, Tensor | Components):
            if isinstance(source_components, Components) and list(source_components.labels) != (
                self.ids
            ):
                raise ValueError(
                    f"Components labels {source_components.labels[:6]} differ from this "
                    f"aligner's ids {self.ids[:6]}."
                )
            x = _as_batch(source_components)
            if clip_embeddings is None:
                raise ValueError("clip_embeddings is required with tensor source components.")
            self._check(x, clip_embeddings)
            if validation is None:
                if not 0 < val_fraction < 1:
                    raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}.")
                perm = torch.randperm(x.shape[0], generator=gen)
                n_val = max(1, round(val_fraction * x.shape[0]))
                if n_val >= x.shape[0]:
                    raise ValueError(f"{x.shape[0]} image(s) leave none to train on.")
                val = (x[perm[:n_val]], clip_embeddings[perm[:n_val]])
                x, z = x[perm[n_val:]], clip_embeddings[perm[n_val:]]
            else:
                z = clip_embeddings
            n_train = x.shape[0]

            def batches() -> Iterable[tuple[Tensor, Tensor]]:
                order = torch.randperm(n_train, generator=gen)
                for i in range(0, n_train, batch_size):
                    idx = order[i : i + batch_size]
                    yield x[idx], z[idx]

            total = math.ceil(n_train / batch_size) * epochs
        else:
            if clip_embeddings is not None:
                raise ValueError(
                    "With an iterable of batches, clip_embeddings come in the batches."
                )
            stream = source_components
            val, hold_first = validation, validation is None
            total = None

            def batches() -> Iterable[tuple[Tensor, Tensor]]:
                nonlocal val
                for i, pair in enumerate(stream):
                    if not isinstance(pair, tuple | list) or len(pair) != 2:
                        raise TypeError(
                            "An iterable source must yield (components [b, component, d_source], "
                            f"clip [b, d_clip]) pairs, got {type(pair).__name__}."
                        )
                    xb, zb = _as_batch(pair[0]), pair[1]
                    if hold_first and i == 0:  # held out in every epoch, kept from the first
                        val = (xb, zb) if val is None else val
                        continue
                    yield xb, zb

        if validation is not None:
            val = (_as_batch(validation[0], "validation[0]"), validation[1])
            self._check(*val)
        opt = torch.optim.Adam([self.weight], lr=lr)
        hist = FitHistory()
        best = (-math.inf, self.weight.detach().clone())
        step, since, running, bad = 0, 0, 0.0, 0
        bar = progress_bar(total, "CompAlign", enabled=progress, unit="step")

        def evaluate() -> bool:
            nonlocal best, bad, running, since
            if val is None:
                raise ValueError("The iterable yielded no batches (nothing to hold out or train).")
            with torch.no_grad():
                cos = float(self._cosines(val[0].to(dev), val[1].to(dev)).mean())
            hist.steps.append(step)
            hist.train_loss.append(running / max(since, 1))
            hist.val_cosine.append(cos)
            running, since = 0.0, 0
            bar.set_postfix(val_cos=f"{cos:.4f}")
            if cos > best[0] + min_delta:
                best, bad, hist.best_step = (cos, self.weight.detach().clone()), 0, step
            else:
                bad += 1
            return bad >= patience

        try:
            for epoch in range(epochs):
                hist.epochs = epoch + 1
                seen = 0
                for xb, zb in batches():
                    self._check(xb, zb)
                    xb, zb = xb.to(dev), zb.to(dev)
                    loss = (1 - self._cosines(xb, zb)).mean() + lam * self.penalty(penalty)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"The CompAlign loss became {float(loss)} at step {step}: lower lr "
                            f"(now {lr}) or check the inputs' scale."
                        )
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    step, since, seen = step + 1, since + 1, seen + 1
                    running += float(loss.detach())
                    bar.update(1)
                    if step % eval_every == 0 and evaluate():
                        hist.stopped_early = True
                        return hist
                if seen == 0 and epoch == 0:
                    raise ValueError("No training batches: the data is empty.")
                if seen == 0:
                    break  # a one-shot iterable: nothing more to learn from
                if step % eval_every and evaluate():
                    hist.stopped_early = True
                    return hist
            return hist
        finally:
            bar.close()
            with torch.no_grad():
                self.weight.copy_(best[1])
            self.history = hist

    # -------------------------------------------------------------- use
    def align(self, components: Tensor | Components | Any) -> AlignedComponents:
        """Map components into CLIP space.

        Args:
            components: ``[n, component, d_source]``, :class:`Components` with this aligner's
                labels, or an :class:`~vision_lens.ActivationCache` of the source model (its
                components are selected by this aligner's ids; heads split as needed).

        Returns:
            :class:`AlignedComponents`: ``terms`` ``[n, component, d_clip]`` and ``ids``.

        Example:
            >>> import vision_lens as vl
            >>> model = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
            >>> _, cache = model.run_with_decomposition_cache(torch.randn(2, 3, 16, 16))
            >>> aligner = CompAlign(["L1H0", "L1H1", "L1H2", "L1H3", "rest"], 16, 5)
            >>> aligner.align(cache).terms.shape
            torch.Size([2, 5, 5])
        """
        if hasattr(components, "decompose_layers"):
            components = components_of_cache(components, self.ids)
        if isinstance(components, Components) and list(components.labels) != self.ids:
            components = select_components(components, ids=self.ids)
        x = _as_batch(components, "components")
        self._check(x, None)
        with torch.no_grad():
            return AlignedComponents(self(x), list(self.ids))

    def save(self, path: str | Path) -> Path:
        """Write ``path/compalign.safetensors`` (the maps) and ``path/compalign.json`` (ids,
        widths, the last fit's history).

        Example:
            >>> import tempfile
            >>> folder = CompAlign(["L0_mlp"], 4, 3).save(tempfile.mkdtemp())
            >>> CompAlign.load(folder).ids
            ['L0_mlp']
        """
        from safetensors.torch import save_file

        folder = Path(path)
        if folder.is_file():
            raise IsADirectoryError(f"{folder} is a file; CompAlign.save writes a folder.")
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"weight": self.weight.detach().contiguous().cpu()}, str(folder / WEIGHTS_FILE))
        meta = {
            "format": "vision_lens.CompAlign/1",
            "component_ids": [
                {"label": str(i), "kind": i.kind, "layer": i.layer, "head": i.head}
                for i in self.ids
            ],
            "d_source": self.d_source,
            "d_clip": self.d_clip,
            "history": None if self.history is None else vars(self.history),
        }
        (folder / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, path: str | Path) -> CompAlign:
        """Read what :meth:`save` wrote.

        Raises:
            FileNotFoundError: No such folder or file.
            vision_lens.CheckpointError: The files are not a CompAlign or disagree.
        """
        from safetensors.torch import load_file

        folder = Path(path)
        if not folder.exists():
            raise FileNotFoundError(f"No CompAlign folder at {folder}.")
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder} has no {name} (written by CompAlign.save).")
        try:
            meta = json.loads((folder / CONFIG_FILE).read_text())
            ids = [ComponentId(c["kind"], c["layer"], c["head"]) for c in meta["component_ids"]]
            weight = load_file(str(folder / WEIGHTS_FILE))["weight"]
            d_source, d_clip = int(meta["d_source"]), int(meta["d_clip"])
        except Exception as error:  # json, safetensors (SafetensorError) and key errors alike
            raise CheckpointError(f"{folder} is not a saved CompAlign ({error}).") from None
        if tuple(weight.shape) != (len(ids), d_source, d_clip):
            raise CheckpointError(
                f"{folder}: weight is {tuple(weight.shape)} but the metadata says "
                f"({len(ids)}, {d_source}, {d_clip})."
            )
        out = cls(ids, d_source, d_clip, weight=weight.float())
        if meta.get("history"):
            out.history = FitHistory(**meta["history"])
        return out


def alignment_report(
    aligner: CompAlign,
    components: Tensor | Components,
    clip_embeddings: Float[Tensor, "n d_clip"],
    text_embeddings: Float[Tensor, "n_classes d_clip"] | None = None,
    labels: Int[Tensor, " n"] | None = None,
) -> AlignmentReport:
    """How well the mapped sum stands in for CLIP's embedding on (held-out) images.

    Args:
        aligner: A fitted :class:`CompAlign`.
        components: Source components ``[n, component, d_source]`` (or :class:`Components`).
        clip_embeddings: CLIP image embeddings ``[n, d_clip]`` of the same images.
        text_embeddings: Class prompts' CLIP text embeddings ``[n_classes, d_clip]``.
        labels: ``[n]`` class indices; with ``text_embeddings``, zero-shot accuracy (argmax of
            cosine) of the mapped sum and of CLIP itself.

    Returns:
        An :class:`AlignmentReport`.

    Example:
        >>> aligner = CompAlign(["a"], 4, 3)
        >>> x, z = torch.randn(8, 1, 4), torch.randn(8, 3)
        >>> r = alignment_report(aligner, x, z, torch.randn(2, 3), torch.zeros(8, dtype=int))
        >>> r.n, 0 <= r.accuracy <= 1
        (8, True)
    """
    if isinstance(components, Components) and list(components.labels) != aligner.ids:
        components = select_components(components, ids=aligner.ids)
    x = _as_batch(components, "components")
    aligner._check(x, clip_embeddings)
    with torch.no_grad():
        mapped = aligner(x).sum(1)
        cos = float(F.cosine_similarity(mapped, clip_embeddings.to(mapped), dim=-1).mean())
    if (text_embeddings is None) != (labels is None):
        raise ValueError("Pass text_embeddings and labels together (or neither).")
    if text_embeddings is None:
        return AlignmentReport(cos, None, None, x.shape[0])
    if text_embeddings.dim() != 2 or text_embeddings.shape[1] != aligner.d_clip:
        raise ValueError(
            f"text_embeddings must be [n_classes, d_clip={aligner.d_clip}], got "
            f"{tuple(text_embeddings.shape)}."
        )
    check_finite(text_embeddings, "text_embeddings")
    labels = torch.as_tensor(labels)
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must be [n={x.shape[0]}], got {tuple(labels.shape)}.")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= len(text_embeddings)):
        raise ValueError(f"labels must be class indices in [0, {len(text_embeddings)}).")
    text = F.normalize(text_embeddings.to(mapped), dim=-1)
    labels = labels.to(mapped.device)

    def accuracy(emb: Tensor) -> float:
        return float((F.normalize(emb, dim=-1) @ text.T).argmax(-1).eq(labels).float().mean())

    return AlignmentReport(cos, accuracy(mapped), accuracy(clip_embeddings.to(mapped)), x.shape[0])
