"""The tracking engine: algorithm declarations (``algorithms``), compiled per-streamline kernels
(``kernels``, driven by ``engine``: numpy in, numpy out, no torch), the batched torch loop that is
their reference and the gradient path (``propagation``, ``methods``), and the public ``Tracker`` /
``track`` (``tracker``) that picks between them.

Importing this package loads neither torch nor numba; the names below resolve on first use.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "Tracker": "tracker",
    "track": "tracker",
    "point_limits": "engine",
    "KernelTracker": "engine",
    "ALGORITHMS": "algorithms",
    "algorithm": "algorithms",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
