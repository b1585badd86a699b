"""The files of a collection: ``shard-NNNNN.safetensors`` and ``manifest.json``.

A shard holds, for one contiguous block of images (whole batches), every per-image product
(``[n_block, ...]`` under the product's name) and the block's partial sums of every statistic
(under ``"<product>/<part>"``, e.g. ``"head_moments/outer"``). Its safetensors metadata holds one
JSON string under ``"vision_lens.streaming"``: ``run`` (the run id, a hash of the manifest's
identity), ``start`` and ``stop`` (image indices).
Every file is written to a temporary name and renamed (``os.replace``), so a file that exists
under its final name is complete.

``manifest.json`` holds the run's ``identity`` (model name, config and weight fingerprint; data
length and hash; products; directions; dtype; batch and shard size; ``ln_mode``), compared when a
run resumes, and what is informative only (versions, world size, the shards' sizes and SHA-256
checksums once complete, ``complete``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

if TYPE_CHECKING:
    from vision_lens.hooked_vit import HookedViT

__all__ = [
    "MANIFEST",
    "STATISTICS_FILE",
    "atomic_write_bytes",
    "check_identity",
    "file_sha256",
    "model_fingerprint",
    "read_manifest",
    "read_shard_metadata",
    "run_id",
    "shard_name",
    "tensor_hash",
    "write_manifest",
    "write_tensors",
]

MANIFEST = "manifest.json"
STATISTICS_FILE = "statistics.safetensors"
FORMAT_VERSION = 1
METADATA_KEY = "vision_lens.streaming"


def shard_name(index: int) -> str:
    """The file name of shard ``index``.

    Example:
        >>> shard_name(3)
        'shard-00003.safetensors'
    """
    return f"shard-{index:05d}.safetensors"


def tensor_hash(tensor: Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and bytes (on the CPU).

    Example:
        >>> tensor_hash(torch.zeros(2)) == tensor_hash(torch.zeros(2))
        True
    """
    x = tensor.detach().to("cpu").contiguous()
    digest = hashlib.sha256(f"{x.dtype}{tuple(x.shape)}".encode())
    if x.numel():  # the bytes in place (a memoryview), not a copy of them
        digest.update(memoryview(x.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()


def model_fingerprint(model: HookedViT) -> str:
    """SHA-256 over every parameter and buffer (names, dtypes, shapes, bytes): the same weights
    give the same fingerprint, any change another. One pass over the weights.

    Example:
        >>> import vision_lens as vl
        >>> a = vl.HookedViT(vl.HookedViTConfig.tiny()).init_weights(seed=0)
        >>> model_fingerprint(a) == model_fingerprint(a.init_weights(seed=1))
        False
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + b"\0" + tensor_hash(tensor).encode())
    return digest.hexdigest()


def run_id(identity: dict[str, Any]) -> str:
    """A short hash of the manifest's identity, stamped into every shard."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _tmp_path(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_tensors(path: Path, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> None:
    """Save ``tensors`` as one safetensors file, atomically. ``metadata`` is stored as one JSON
    string under ``"vision_lens.streaming"`` (one key: safetensors writes several keys in an
    arbitrary order, and the same shard must give the same bytes)."""
    tmp = _tmp_path(path)
    header = {METADATA_KEY: json.dumps(metadata, sort_keys=True)}
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=header)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_shard_metadata(path: Path) -> dict[str, Any] | None:
    """A shard's metadata (what :func:`write_tensors` stored), or ``None`` if it cannot be read
    (not a safetensors file, not written by a collection)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {})[METADATA_KEY])
    except Exception:  # noqa: BLE001 - any unreadable file counts as absent
        return None


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest in ``out``, or ``None`` when there is none.

    Raises:
        ValueError: A manifest that is not JSON (not written by this library).
    """
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{str(path)!r} is not a collection manifest ({error}); pass a new out or "
            "overwrite=True."
        ) from None
    if not isinstance(manifest, dict) or "identity" not in manifest:
        raise ValueError(
            f"{str(path)!r} is not a collection manifest; pass a new out or overwrite=True."
        )
    return manifest


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically."""
    manifest = {"format": FORMAT_VERSION, **manifest}
    atomic_write_bytes(
        out / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    )


_WHAT_DIFFERS = {
    "model": "model (its name, config or weights)",
    "data": "data (its length or content)",
    "products": "products (what)",
    "directions": "directions",
    "dtype": "dtype",
    "batch_size": "batch_size",
    "shard_size": "shard_size",
    "ln_mode": "ln_mode",
}


def check_identity(out: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse to resume a run whose manifest names another model, data, products or batching.

    Example:
        >>> check_identity(Path("runs/a"), {"batch_size": 8}, {"batch_size": 16})
        Traceback (most recent call last):
        ...
        ValueError: 'runs/a' holds a collection with another batch_size (was 8, now 16); ...
    """
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            what = _WHAT_DIFFERS.get(key, key)
            was, now = old.get(key), new.get(key)
            detail = f" (was {was!r}, now {now!r})" if len(repr(was)) + len(repr(now)) < 120 else ""
            raise ValueError(
                f"{str(out)!r} holds a collection with another {what}{detail}; resuming would "
                "mix two runs. Pass a new out, or overwrite=True (vision-lens collect "
                "--overwrite) to replace it."
            )
