"""The tracking engine: algorithm declarations (``algorithms``), compiled per-streamline kernels
(``kernels``, driven by ``engine``: numpy in, numpy out, no torch), the batched torch loop that is
their reference and the gradient path (``propagation``, ``methods``), and the public ``Tracker`` /
``track`` (``tracker``) that picks between them.

Importing this package loads neither torch nor numba; the names below resolve on first use.
"""
from __future__ import annotations

from .. import lazy_attributes

_LAZY = {
    "Tracker": "tracker",
    "track": "tracker",
    "point_limits": "engine",
    "KernelTracker": "engine",
    "ALGORITHMS": "algorithms",
    "algorithm": "algorithms",
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY, globals())
