"""SAELens' on-disk SAE format and its "standard" ReLU SAE, without needing ``sae-lens``.

* :class:`StandardSAE`: ``f = relu((x - b_dec) @ W_enc + b_enc)``, ``x_hat = f @ W_dec + b_dec``,
  with :meth:`StandardSAE.save` writing SAELens' folder (``cfg.json`` and
  ``sae_weights.safetensors`` with ``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_in]``,
  ``b_dec``).
* :func:`load_saelens_sae`: read such a folder, with :class:`vision_lens.CheckpointError` for a
  missing file, missing keys, inconsistent shapes, a width other than the hook's, NaN weights or
  an unsupported architecture.
* :func:`hook_width`: the width an SAE at a hook point must read.

Splicing, caching and direct effects are in :mod:`vision_lens.analysis.sae`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor, nn

from vision_lens.errors import CheckpointError

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"


class StandardSAE(nn.Module):
    """SAELens' "standard" ReLU SAE: ``f = relu((x - b_dec) @ W_enc + b_enc)`` (``b_dec`` is
    subtracted only with ``apply_b_dec_to_input``), ``x_hat = f @ W_dec + b_dec``.

    Args:
        W_enc: ``[d_in, d_sae]``.
        b_enc: ``[d_sae]``.
        W_dec: ``[d_sae, d_in]``.
        b_dec: ``[d_in]``.
        apply_b_dec_to_input: Subtract ``b_dec`` before encoding (SAELens' default).
        hook_name: The hook point it was trained on (kept in ``cfg.json``), or ``None``.

    Example:
        >>> import torch
        >>> sae = StandardSAE.random(d_in=8, d_sae=32, seed=0)
        >>> sae.encode(torch.randn(5, 8)).shape
        torch.Size([5, 32])
    """

    def __init__(
        self,
        W_enc: Float[Tensor, "d_in d_sae"],
        b_enc: Float[Tensor, " d_sae"],
        W_dec: Float[Tensor, "d_sae d_in"],
        b_dec: Float[Tensor, " d_in"],
        apply_b_dec_to_input: bool = True,
        hook_name: str | None = None,
    ):
        super().__init__()
        _check_weight_shapes(
            {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}, where="StandardSAE"
        )
        self.W_enc = nn.Parameter(W_enc.detach().clone())
        self.b_enc = nn.Parameter(b_enc.detach().clone())
        self.W_dec = nn.Parameter(W_dec.detach().clone())
        self.b_dec = nn.Parameter(b_dec.detach().clone())
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        self.hook_name = hook_name

    @classmethod
    def random(cls, d_in: int, d_sae: int, seed: int = 0, **kwargs: Any) -> StandardSAE:
        """A randomly initialised SAE (unit-norm decoder rows, encoder their transpose), e.g.
        for tests.

        Example:
            >>> StandardSAE.random(d_in=4, d_sae=16).W_dec.shape
            torch.Size([16, 4])
        """
        gen = torch.Generator().manual_seed(seed)
        W_dec = torch.randn(d_sae, d_in, generator=gen)
        W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
        b_enc = 0.1 * torch.randn(d_sae, generator=gen)
        b_dec = 0.1 * torch.randn(d_in, generator=gen)
        return cls(W_dec.T.clone(), b_enc, W_dec, b_dec, **kwargs)

    @property
    def d_in(self) -> int:
        """Width of the activations it reads."""
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        """Number of features."""
        return self.W_enc.shape[1]

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """Feature activations of ``x``."""
        x = x.to(self.W_enc.dtype)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return torch.relu(x @ self.W_enc + self.b_enc)

    def decode(self, features: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        """The reconstruction ``features @ W_dec + b_dec``."""
        return features @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        """``decode(encode(x))`` (no error term; see :func:`splice_sae` for that)."""
        return self.decode(self.encode(x))

    def save(self, path: str | Path) -> Path:
        """Write SAELens' format: ``path/cfg.json`` and ``path/sae_weights.safetensors``.

        Returns:
            The folder.

        Example:
            >>> import tempfile
            >>> sae = StandardSAE.random(d_in=4, d_sae=16)
            >>> folder = sae.save(tempfile.mkdtemp())
            >>> load_saelens_sae(folder).d_sae
            16
        """
        from safetensors.torch import save_file

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: getattr(self, k).detach().contiguous().cpu() for k in _SHAPES}
        save_file(tensors, str(folder / WEIGHTS_FILE))
        cfg = {
            "architecture": "standard",
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "dtype": str(self.W_enc.dtype).removeprefix("torch."),
            "device": "cpu",
            "activation_fn": "relu",
            "apply_b_dec_to_input": self.apply_b_dec_to_input,
            "normalize_activations": "none",
            "finetuning_scaling_factor": False,
            "hook_name": self.hook_name,
            "metadata": {"hook_name": self.hook_name, "model_name": "vision_lens"},
        }
        (folder / CFG_FILE).write_text(json.dumps(cfg, indent=2) + "\n")
        return folder


_SHAPES = {"W_enc": ("d_in", "d_sae"), "b_enc": ("d_sae",), "W_dec": ("d_sae", "d_in")}
_SHAPES["b_dec"] = ("d_in",)


def _check_weight_shapes(tensors: Mapping[str, Tensor], where: str) -> tuple[int, int]:
    """``(d_in, d_sae)`` of SAELens-layout weights, or :class:`CheckpointError` naming the
    inconsistent tensor."""
    sizes: dict[str, int] = {}
    for key, axes in _SHAPES.items():
        t = tensors[key]
        if not isinstance(t, Tensor) or t.dim() != len(axes):
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise CheckpointError(f"{where}: {key} must be [{', '.join(axes)}], got {shape}.")
        for axis, size in zip(axes, t.shape, strict=True):
            if sizes.setdefault(axis, size) != size:
                raise CheckpointError(
                    f"{where}: {key} has {axis} = {size}, but an earlier tensor has "
                    f"{axis} = {sizes[axis]} (shapes: "
                    + ", ".join(f"{k} {tuple(tensors[k].shape)}" for k in _SHAPES)
                    + ")."
                )
    return sizes["d_in"], sizes["d_sae"]


def hook_width(model: Any, hook_name: str) -> int | None:
    """Width of the last axis at ``hook_name`` (``d_model``, ``d_mlp`` or ``d_embed``), or
    ``None`` for hooks whose last axis is not a feature axis an SAE reads (queries, patterns).

    Raises:
        KeyError: ``hook_name`` is no hook point of ``model`` (with the closest names).

    Example:
        >>> import vision_lens as vl
        >>> model = vl.HookedViT(vl.HookedViTConfig.tiny())
        >>> hook_width(model, "blocks.1.hook_resid_post") == model.cfg.d_model
        True
    """
    if not isinstance(hook_name, str) or hook_name not in model.hook_dict:
        close = difflib.get_close_matches(str(hook_name), list(model.hook_dict), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"{hook_name!r} is no hook point of this model.{hint}")
    cfg = model.cfg
    last = hook_name.rsplit(".", 1)[-1]
    if last in ("hook_image_embed",):
        return cfg.d_embed
    if ".mlp." in hook_name and last in ("hook_pre", "hook_post", "hook_pre_linear"):
        return cfg.d_mlp
    if ".attn." in hook_name or last == "hook_scale":
        return None
    return cfg.d_model


_SUPPORTED = {
    "architecture": ("standard",),
    "activation_fn": ("relu",),
    "activation_fn_str": ("relu",),
    "normalize_activations": ("none",),
}


def load_saelens_sae(
    path: str | Path,
    model: Any | None = None,
    hook_name: str | None = None,
    device: str | torch.device | None = None,
) -> StandardSAE:
    """Load a standard (ReLU) SAE saved in SAELens' format, without needing ``sae-lens``.

    The folder holds ``cfg.json`` (``d_in``, ``d_sae``, ``architecture``, ``activation_fn``,
    ``apply_b_dec_to_input``, ``normalize_activations``, ``hook_name`` at the top or under
    ``metadata``) and ``sae_weights.safetensors`` (``W_enc [d_in, d_sae]``, ``b_enc``,
    ``W_dec [d_sae, d_in]``, ``b_dec``).

    Args:
        path: The folder.
        model: When given, the SAE's width is checked against its hook point.
        hook_name: The hook point (default: the config's ``hook_name``).
        device: Where to put the weights (default CPU).

    Returns:
        A :class:`StandardSAE` (``hook_name`` from the argument or the config).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        vision_lens.CheckpointError: A missing or unreadable file, missing keys, inconsistent
            shapes or a width other than the hook's, NaN weights, or an architecture other than
            standard ReLU (or activation normalisation, or a finetuning scale).

    Example:
        >>> import tempfile
        >>> folder = StandardSAE.random(d_in=8, d_sae=32, hook_name="blocks.0.hook_resid_post"
        ...                             ).save(tempfile.mkdtemp())
        >>> sae = load_saelens_sae(folder)
        >>> sae.hook_name, sae.d_sae
        ('blocks.0.hook_resid_post', 32)
    """
    from safetensors.torch import load_file

    folder = Path(path)
    if not folder.exists():
        raise FileNotFoundError(f"No SAE folder at {folder}.")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is a file; an SAELens SAE is a folder with {CFG_FILE}.")
    for name in (CFG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise CheckpointError(
                f"{folder} has no {name}: an SAELens SAE folder holds {CFG_FILE} and "
                f"{WEIGHTS_FILE}."
            )
    try:
        cfg = json.loads((folder / CFG_FILE).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{folder / CFG_FILE} is not valid JSON: {err}") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{folder / CFG_FILE} must hold a JSON object.")
    for key, allowed in _SUPPORTED.items():
        value = cfg.get(key)
        if value is not None and value not in allowed:
            raise CheckpointError(
                f"{folder / CFG_FILE}: {key} = {value!r} is not supported (only {allowed}); "
                "load it with sae-lens and pass the SAE object instead."
            )
    if cfg.get("finetuning_scaling_factor"):
        raise CheckpointError(f"{folder / CFG_FILE}: finetuning_scaling_factor is not supported.")
    try:
        tensors = load_file(str(folder / WEIGHTS_FILE))
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{folder / WEIGHTS_FILE} is not a safetensors file: {err}") from None
    missing = [k for k in _SHAPES if k not in tensors]
    if missing:
        raise CheckpointError(
            f"{folder / WEIGHTS_FILE} lacks {', '.join(missing)} (it has "
            f"{', '.join(sorted(tensors)) or 'nothing'}); a standard SAE needs "
            f"{', '.join(_SHAPES)}."
        )
    where = str(folder / WEIGHTS_FILE)
    d_in, d_sae = _check_weight_shapes(tensors, where)
    for key, size in (("d_in", d_in), ("d_sae", d_sae)):
        if key in cfg and cfg[key] != size:
            raise CheckpointError(f"{where}: {key} = {size}, but {CFG_FILE} says {cfg[key]}.")
    for key in _SHAPES:
        if not torch.isfinite(tensors[key]).all():
            raise CheckpointError(f"{where}: {key} holds NaN or infinite values.")
    meta = cfg.get("metadata") if isinstance(cfg.get("metadata"), dict) else {}
    name = hook_name or cfg.get("hook_name") or meta.get("hook_name")
    if model is not None and name is not None:
        try:
            width = hook_width(model, name)
        except KeyError as err:
            raise CheckpointError(f"{folder}: {err.args[0]}") from None
        if width is not None and width != d_in:
            raise CheckpointError(
                f"{where}: the SAE reads {d_in}-wide activations but {name!r} of this model is "
                f"{width} wide (another model or hook point?)."
            )
    sae = StandardSAE(
        tensors["W_enc"],
        tensors["b_enc"],
        tensors["W_dec"],
        tensors["b_dec"],
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        hook_name=name,
    )
    return sae.to(device) if device is not None else sae


__all__ = ["CFG_FILE", "WEIGHTS_FILE", "StandardSAE", "hook_width", "load_saelens_sae"]
