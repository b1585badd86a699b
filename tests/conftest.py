"""Shared fixtures for the whole suite.

Layout (mirrors the library's layers, see ARCHITECTURE.md):

- ``tests/unit``: one module of the library at a time, on tiny random models.
- ``tests/parity``: converted models against their source (open_clip, timm, Hugging Face), driven
  by the one architecture registry in ``tests/support/architectures.py``.
- ``tests/e2e``: the CLI, notebooks, docs, scripts and the headless browser.
- ``tests/support``: helpers imported by tests (``from support.architectures import ...``); this
  directory is on ``sys.path`` because pytest inserts the rootdir of this ``conftest.py``.
"""
