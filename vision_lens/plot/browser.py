"""Finding the Chrome/Chromium that static export (:func:`~vision_lens.plot.to_png`, through
kaleido) drives headless."""

from __future__ import annotations

import os
import shutil

#: Executable names searched on ``PATH`` for static export, in order.
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
#: Places a Chrome/Chromium is often installed outside ``PATH``.
BROWSER_PATHS = (
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/snap/bin/chromium",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
)


def find_browser() -> str | None:
    """The Chrome/Chromium executable static export will use, or ``None``.

    Looked up in this order: the ``BROWSER_PATH`` environment variable (also honoured by
    kaleido/choreographer), the names in :data:`BROWSER_NAMES` on ``PATH`` (Debian's
    ``/usr/bin/chromium`` is found here), the usual install locations in :data:`BROWSER_PATHS`,
    then a Chrome downloaded by ``plotly_get_chrome`` / ``kaleido_get_chrome``.

    Returns:
        The executable's path, or ``None`` when there is none (or ``BROWSER_PATH`` names a
        missing file).

    Example:
        >>> import os
        >>> path = find_browser()
        >>> path is None or os.path.isfile(path)
        True
    """
    env = os.environ.get("BROWSER_PATH")
    if env:
        return env if os.path.isfile(env) else None
    for name in BROWSER_NAMES:
        path = shutil.which(name)
        if path:
            return path
    for path in BROWSER_PATHS:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return _downloaded_chrome()


def _downloaded_chrome() -> str | None:
    """The Chrome that ``kaleido_get_chrome`` / ``plotly_get_chrome`` downloaded (into
    choreographer's folder), or ``None``.

    ``Chromium.find_browser`` is choreographer's public way to ask for it (``verify_local``:
    only the download, raising when there is none; our own search above covers the rest).
    """
    try:
        from choreographer.browsers import Chromium

        found = Chromium.find_browser(skip_local=False, verify_local=True)
    except Exception:  # noqa: BLE001 (choreographer missing, changed, or no download: none)
        return None
    return str(found) if found else None
