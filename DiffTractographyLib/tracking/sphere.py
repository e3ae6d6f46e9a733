"""The discrete sphere of DIPY's pmf direction getters and the tables built on it (numpy; the torch
methods and the compiled kernels read the same tables).

``default_sphere`` is DIPY's ``default_sphere`` (the 362-vertex hemisphere of repulsion724 and its
edges), stored in ``data/default_sphere.npz`` so that tracking needs neither dipy nor its load time
(a test checks it against DIPY). Any object with ``vertices`` (D, 3) and ``edges`` (E, 2) serves,
a DIPY ``Sphere`` included.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

#: cells per axis of the grid that tells which vertex a direction is (at most one per cell)
LOOKUP_CELLS = 64
#: DIPY's ``peak_directions`` settings for the start directions at a seed
RELATIVE_PEAK_THRESHOLD = 0.5
MIN_SEPARATION_ANGLE = 25.0


@dataclass(frozen=True)
class Sphere:
    """Unit ``vertices`` (D, 3) float64 and mesh ``edges`` (E, 2) vertex pairs."""

    vertices: np.ndarray
    edges: np.ndarray


@lru_cache(maxsize=None)
def default_sphere() -> Sphere:
    """DIPY's ``default_sphere``: 362 vertices (a hemisphere of repulsion724) with its edges."""
    with np.load(Path(__file__).resolve().parents[1] / "data" / "default_sphere.npz") as f:
        return Sphere(np.array(f["vertices"], dtype=np.float64), np.array(f["edges"], dtype=np.uint16))


def cone_table(vertices: np.ndarray, cos_max: float, inclusive: bool) -> tuple[np.ndarray, np.ndarray]:
    """(D, K) vertices in the cone of each vertex, ascending, padded with the first, and their counts
    (D,). A vertex is in the cone when |cos| > cos_max (``inclusive``: >=). The cosines are DIPY's:
    the previous direction normalised as ``fast_numpy.normalize``, products summed in order."""
    v = np.asarray(vertices, dtype=np.float64)
    d = v * (1.0 / np.sqrt(v[:, 0] * v[:, 0] + v[:, 1] * v[:, 1] + v[:, 2] * v[:, 2]))[:, None]
    cos = np.abs(d[:, None, 0] * v[None, :, 0] + d[:, None, 1] * v[None, :, 1] + d[:, None, 2] * v[None, :, 2])
    inside = cos >= cos_max if inclusive else cos > cos_max
    counts = inside.sum(1)
    table = np.argsort(~inside, axis=1, kind="stable")[:, :int(counts.max())]
    table = np.where(np.arange(table.shape[1])[None, :] >= counts[:, None], table[:, :1], table)
    return table.astype(np.int64), counts.astype(np.int64)


def direction_cells(directions: np.ndarray) -> np.ndarray:
    """Cell of the lookup grid holding each unit direction (..., 3)."""
    g = LOOKUP_CELLS
    ijk = np.clip(np.floor((directions + 1.0) * (g / 2)), 0, g - 1).astype(np.int64)
    return (ijk[..., 0] * g + ijk[..., 1]) * g + ijk[..., 2]


def vertex_lookup(vertices: np.ndarray) -> np.ndarray | None:
    """(LOOKUP_CELLS ** 3,) index of the vertex whose +-vertex lies in each cell, -1 elsewhere; None
    when two share a cell (a very dense sphere: then every step tests all vertices). ``vertices``
    in the frame directions are looked up in (RAS for the trackers)."""
    cells = np.concatenate([direction_cells(vertices), direction_cells(-vertices)])
    if len(np.unique(cells)) < len(cells):
        return None
    lookup = np.full(LOOKUP_CELLS ** 3, -1, dtype=np.int64)
    lookup[cells] = np.tile(np.arange(len(vertices)), 2)
    return lookup
