"""Writing shards on a background thread, so that the next shard's forward passes overlap the
serialisation, ``fsync`` and checksum of the previous one.

At most one shard is being written while the next one is computed: :meth:`ShardWriter.submit`
first waits for the previous write, so memory holds at most two shards' products whatever the
dataset's size. Each write is still atomic (a temporary file, ``fsync``, ``os.replace``: see
:mod:`vision_lens.streaming.shards`), so a pass killed at any moment leaves only complete shards
under their final names, and a resumed pass skips exactly those. A write that fails raises in the
calling thread at the next :meth:`~ShardWriter.submit` or at :meth:`~ShardWriter.close`.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from torch import Tensor

from vision_lens.streaming.shards import file_sha256, write_tensors

__all__ = ["ShardWriter"]


def _write(path: Path, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> str:
    write_tensors(path, tensors, metadata)
    return file_sha256(path)  # read back from the page cache, not the disk


class ShardWriter:
    """Writes shards one at a time on a background thread; remembers each file's SHA-256.

    Use as a context manager: leaving it waits for the last write (also when the body raised,
    so a shard handed over is either complete or not there).

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> folder = Path(tempfile.mkdtemp())
        >>> with ShardWriter() as writer:
        ...     writer.submit(folder / "a.safetensors", {"x": torch.zeros(2)}, {"run": "r"})
        >>> sorted(writer.sha256) == ["a.safetensors"] and (folder / "a.safetensors").exists()
        True
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vision_lens-shards")
        self._pending: Future | None = None
        self._pending_name: str | None = None
        self.sha256: dict[str, str] = {}

    def _wait(self) -> None:
        if self._pending is not None:
            future, name = self._pending, self._pending_name
            self._pending, self._pending_name = None, None
            self.sha256[name] = future.result()  # re-raises the write's error here

    def submit(self, path: Path, tensors: dict[str, Tensor], metadata: dict[str, Any]) -> None:
        """Write ``tensors`` to ``path`` (atomically) once the previous write is done; returns
        as soon as this one has started."""
        self._wait()
        self._pending = self._pool.submit(_write, path, tensors, metadata)
        self._pending_name = path.name

    def close(self) -> None:
        """Wait for the last write (raising its error) and stop the thread."""
        try:
            self._wait()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
            return
        try:  # the body failed: finish the write in flight, but keep the body's error
            self.close()
        except Exception:  # noqa: BLE001 - the body's error is the one to report
            pass
