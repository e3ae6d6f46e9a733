"""Surgical planning on a tractogram: density maps (``density``), signed distance to a lesion
(``distance``), the uncertainty envelope of a bundle (``envelope``), seeds placed by gradient
(``seeds``) and their MRML side (``scene``). RAS mm throughout. Names resolve on first use, so
importing the package loads neither torch nor numba."""
from __future__ import annotations

from .. import lazy_attributes

_LAZY = {
    "density_map": "density",
    "LesionSurface": "distance",
    "point_distances": "distance",
    "signed_distance_map": "distance",
    "streamline_distances": "distance",
    "envelope": "envelope",
    "Envelope": "envelope",
    "optimise_seeds": "seeds",
    "SeedResult": "seeds",
}

__all__ = sorted(_LAZY)

__getattr__ = lazy_attributes(__name__, _LAZY, globals())
