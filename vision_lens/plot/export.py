"""Static export: figures rendered to PNG by kaleido (>= 1) in a headless Chrome/Chromium."""

from __future__ import annotations

import asyncio
import math
import numbers
import os
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go
import plotly.io as pio

from vision_lens.plot.browser import find_browser

if TYPE_CHECKING:
    import kaleido

_NO_BROWSER = (
    "Static export (PNG) renders figures in a headless Chrome/Chromium via kaleido, and none was "
    "found. Fix it by one of: installing Chromium (Debian/Ubuntu: `apt-get install chromium`), "
    "running `plotly_get_chrome` (or `kaleido_get_chrome`) to download a Chrome for kaleido, or "
    "setting the BROWSER_PATH environment variable (or to_png's browser_path=) to an existing "
    "Chrome/Chromium executable."
)


@dataclass
class _Render:
    """What the rendering thread leaves behind: its kaleido browser, then the PNG or the error."""

    browser: kaleido.Kaleido | None = None
    png: bytes | None = None
    error: BaseException | None = None


def _stop_browser(process: subprocess.Popen) -> None:
    """Stop a browser process together with the helper processes it started.

    choreographer starts the browser as the leader of a new session (POSIX) or process group
    (Windows), so the whole group is signalled: SIGTERM, then SIGKILL if it has not exited after
    6 s. Our own code because choreographer's equivalent is private
    (``choreographer.utils._kill``) and the public ``Browser.close()`` is a coroutine of the
    event loop that is stuck.
    """
    if os.name == "nt":
        subprocess.call(
            ["taskkill", "/F", "/T", "/PID", str(process.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=6,
        )
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:  # not a group leader after all: the process alone
        process.terminate()
    try:
        process.wait(timeout=6)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            process.kill()


def _render_with_kaleido(
    figure: dict[str, Any], opts: dict[str, str | float], browser: str, timeout: float
) -> bytes:
    """Render with a fresh kaleido browser in a worker thread (so it also works under a running
    event loop, as in Jupyter), killing the browser if it does not finish within ``timeout``.

    ``figure`` is ``fig.to_dict()`` (plotly's JSON: values of every kind).
    """
    import kaleido

    kopts: dict[str, str | float | bool] = {"path": browser, "timeout": timeout}
    # plotly.js from plotly.py's own bundle (offline); no MathJax (kaleido fetches it from a CDN
    # by default, which stalls without network) unless plotly.io.defaults asks for it.
    kopts["mathjax"] = pio.defaults.mathjax or False
    if pio.defaults.plotlyjs:
        kopts["plotlyjs"] = pio.defaults.plotlyjs
    state = _Render()

    async def render() -> bytes:
        state.browser = browser_process = kaleido.Kaleido(**kopts)
        async with browser_process as k:
            return await k.calc_fig(figure, opts=opts)

    def work() -> None:
        try:
            state.png = asyncio.run(asyncio.wait_for(render(), timeout))
        except BaseException as error:  # noqa: BLE001 (re-raised in the caller's thread)
            state.error = error

    thread = threading.Thread(target=work, name="vision_lens.plot.to_png", daemon=True)
    thread.start()
    thread.join(timeout + 15)  # wait_for's cancellation closes the browser; allow for that
    if thread.is_alive() or isinstance(state.error, (TimeoutError, asyncio.TimeoutError)):
        process = getattr(state.browser, "subprocess", None)
        if process is not None and process.poll() is None:
            _stop_browser(process)  # the browser this call started, and its helper processes
        raise RuntimeError(
            f"Rendering the PNG with {browser} did not finish within {timeout:g} s: the browser "
            f"did not start or did not answer. Check that it runs (`{browser} --headless "
            "--no-sandbox --dump-dom about:blank`), or pass a larger timeout= on a busy machine."
        )
    if state.error is not None:
        raise state.error
    assert state.png is not None  # work() stored either the PNG or the error
    return state.png


def _check_arguments(
    fig: object,
    path: object,
    width: object,
    height: object,
    scale: object,
    timeout: object,
) -> Path | None:
    """Refuse bad arguments of :func:`to_png` before starting a browser; ``path`` as a Path."""
    if not isinstance(fig, go.Figure):
        raise TypeError(
            f"to_png takes a plotly Figure (from a vision_lens.plot function), got "
            f"{type(fig).__name__}; wrap a figure dict with plotly.graph_objects.Figure(...)."
        )
    for name, value in (("width", width), ("height", height)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int >= 10 pixels (or None), got {value!r}.")
        if value < 10:
            raise ValueError(f"{name} must be an int >= 10 pixels (or None), got {value!r}.")
    for name, value in (("scale", scale), ("timeout", timeout)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a positive number, got {value!r}.")
        if not 0 < float(value) < math.inf:
            raise ValueError(f"{name} must be a positive, finite number, got {value!r}.")
    if path is None:
        return None
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a file path (str or os.PathLike), got {path!r}.")
    out = Path(path)
    if out.is_dir():
        raise IsADirectoryError(
            f"path {str(path)!r} is a folder; pass a file name such as {str(out / 'figure.png')!r}."
        )
    if out.suffix.lower() != ".png":
        raise ValueError(
            f"path {str(path)!r} does not end in .png but to_png writes PNG data; name the "
            f"file {str(out.with_suffix('.png'))!r} (for HTML use fig.write_html)."
        )
    if not out.parent.exists():
        raise FileNotFoundError(
            f"path {str(path)!r}: folder {str(out.parent)!r} does not exist; create it first "
            "or pick another path."
        )
    if not out.parent.is_dir():
        raise NotADirectoryError(f"path {str(path)!r}: {str(out.parent)!r} is not a folder.")
    return out


def to_png(
    fig: go.Figure,
    path: str | os.PathLike | None = None,
    *,
    width: int | None = None,
    height: int | None = None,
    scale: float = 1.0,
    browser_path: str | os.PathLike | None = None,
    timeout: float = 120,
) -> bytes:
    """Render a figure to PNG bytes (and write them to ``path``), with kaleido.

    kaleido >= 1 drives a headless Chrome/Chromium; the executable is ``browser_path`` or the one
    :func:`find_browser` finds (``BROWSER_PATH``, then ``chromium``/``google-chrome`` on
    ``PATH``, e.g. Debian's ``/usr/bin/chromium``). Each call starts the browser (1 to 3 s) and
    closes it. No network is needed.

    Args:
        fig: The figure.
        path: Where to write the PNG (optional).
        width: Width in layout pixels (default: the figure's, else 700).
        height: Height in layout pixels (default: the figure's, else 500).
        scale: Pixel density: ``2`` gives an image twice as wide and high.
        browser_path: Chrome/Chromium executable (default: :func:`find_browser`).
        timeout: Seconds allowed for starting the browser and rendering; the browser is
            stopped after that.

    Returns:
        The PNG bytes.

    Raises:
        TypeError: ``fig`` is not a Figure, or an argument has the wrong type.
        ValueError: ``path`` does not end in ``.png``; a size, scale or timeout out of range.
        IsADirectoryError, FileNotFoundError: ``path`` is a folder, or its folder is missing.
        ImportError: kaleido is not installed (``pip install "kaleido>=1"``).
        RuntimeError: No Chrome/Chromium was found, it failed to start or it did not finish in
            time; the message says how to fix it.

    Example:
        >>> import numpy as np
        >>> from vision_lens.plot import head_grid
        >>> png = to_png(head_grid(np.random.rand(2, 3)), "heads.png")  # doctest: +SKIP
        >>> png[:8]  # doctest: +SKIP
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    path = _check_arguments(fig, path, width, height, scale, timeout)
    try:
        import kaleido  # noqa: F401
        from choreographer.errors import BrowserFailedError, ChromeNotFoundError
    except ImportError as error:
        raise ImportError(
            'Static export needs kaleido >= 1: pip install "kaleido>=1" (it also needs a '
            "Chrome/Chromium; see vision_lens.plot.find_browser)."
        ) from error
    browser = str(browser_path) if browser_path is not None else find_browser()
    if browser is None or not os.path.isfile(browser):
        where = f"No browser at {browser!r}. " if browser is not None else ""
        raise RuntimeError(where + _NO_BROWSER)
    layout = fig.layout
    opts: dict[str, str | float] = {
        "format": "png",
        "width": width or layout.width or 700,
        "height": height or layout.height or 500,
        "scale": scale,
    }
    try:
        data = _render_with_kaleido(fig.to_dict(), opts, browser, timeout)
    except (ChromeNotFoundError, BrowserFailedError) as error:
        raise RuntimeError(
            f"kaleido could not start the browser {browser!r} ({type(error).__name__}). "
            + _NO_BROWSER
        ) from error
    if path is not None:
        path.write_bytes(data)
    return data
