"""Signed distance in mm to the surface of a lesion given as a label map.

The lesion is the union of its voxels' cubes (each voxel a box of its spacing about its centre), the
surface is that union's boundary, and a point's signed distance is its Euclidean distance to the
surface: positive outside, negative inside, 0 on it. This one definition serves ``difftract select
--distance-to``, ``selection.lesion_distances``, the per-point arrays the Slicer module writes, the
envelope's lesion distances and the smooth losses of ``planning.seeds`` (through ``signed_distance_map``).

Exact for grids without shear (oblique and flipped included): points are taken to voxel axes scaled
to mm, where the cubes are axis-aligned; only cubes with a face on the surface are candidates, found
with a k-d tree and refined until no farther cube can be nearer.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from ..errors import InputError
from ..geometry import apply_affine, as_affine, axes_rotation, voxel_sizes

#: strides along a streamline at which ``streamline_distances`` visits vertices, coarse to fine
STRIDES = (64, 16, 4, 1)
#: nearest cube centres examined in turn until no unexamined cube can be nearer
K_NEAREST = (8, 64, 512)
CHUNK = 8192


class _Cubes:
    """Axis-aligned cubes of size ``spacing`` (mm) about ``centres`` (scaled voxel coordinates)."""

    def __init__(self, centres: np.ndarray, spacing: np.ndarray):
        self.centres, self.half = centres, spacing / 2
        self.tree = cKDTree(centres)
        self.half_diagonal = float(np.linalg.norm(self.half))

    def _box(self, p: np.ndarray, index: np.ndarray) -> np.ndarray:
        gap = np.maximum(np.abs(p[:, None, :] - self.centres[index]) - self.half, 0.0)
        return np.sqrt((gap * gap).sum(-1))

    def _nearest(self, p: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Smallest box distance among the ``k`` nearest centres, and the k-th centre distance."""
        best, last = np.empty(len(p)), np.empty(len(p))
        for s in range(0, len(p), CHUNK):
            centre_d, index = self.tree.query(p[s:s + CHUNK], k=k, workers=-1)
            centre_d, index = centre_d.reshape(-1, k), index.reshape(-1, k)
            best[s:s + CHUNK], last[s:s + CHUNK] = self._box(p[s:s + CHUNK], index).min(1), centre_d[:, -1]
        return best, last

    def distance(self, p: np.ndarray) -> np.ndarray:
        """(P,) distance from each point to the union of the cubes (0 inside one)."""
        best, todo = np.full(len(p), np.inf), np.arange(len(p))
        for k in K_NEAREST:
            k = min(k, len(self.centres))
            best[todo], last = self._nearest(p[todo], k)
            # a cube nearer than ``best`` has its centre within best + half diagonal: unexamined ones?
            todo = todo[(k < len(self.centres)) & (last < best[todo] + self.half_diagonal)]
        for i in todo:
            near = self.tree.query_ball_point(p[i], best[i] + self.half_diagonal)
            best[i] = self._box(p[i:i + 1], np.asarray(near)[None, :]).min()
        return best


class LesionSurface:
    """The surface of a lesion label map; ``signed(points)`` gives mm, negative inside.

    mask: (X, Y, Z) array, non-zero in the lesion; affine: its voxel -> RAS mm (4, 4).
    """

    def __init__(self, mask, affine):
        m = np.asarray(mask) != 0
        if m.ndim != 3 or not m.any():
            raise InputError("the lesion must be a 3-D label map with at least one lesion voxel")
        affine = as_affine(affine)
        try:
            axes_rotation(affine)
        except InputError as exc:
            raise InputError("lesion distances need a lesion grid without shear") from exc
        spacing = voxel_sizes(affine)
        # RAS mm -> voxel axes scaled to mm (a rotation or reflection: distances are kept)
        self._to_scaled = np.diag(spacing) @ np.linalg.inv(affine[:3, :3])
        self._origin = affine[:3, 3]
        padded = np.pad(m, 1)                       # beyond the grid is outside the lesion
        structure = ndimage.generate_binary_structure(3, 1)
        inner = padded & ~ndimage.binary_erosion(padded, structure, border_value=0)
        outer = ~padded & ndimage.binary_dilation(padded, structure)
        self._lesion = _Cubes((np.argwhere(inner) - 1) * spacing, spacing)
        self._outside = _Cubes((np.argwhere(outer) - 1) * spacing, spacing)
        self.mask, self.affine, self._spacing = m, affine, spacing

    def _scaled(self, points) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return np.einsum("ij,pj->pi", self._to_scaled, p - self._origin)

    def signed(self, points) -> np.ndarray:
        """(P,) float64 signed distance in mm of (P, 3) RAS mm points to the lesion surface."""
        p = self._scaled(points)
        if not np.isfinite(p).all():
            raise InputError("lesion distances need finite points")
        index = np.floor(p / self._spacing + 0.5).astype(np.int64)
        inside = (index >= 0).all(1) & (index < self.mask.shape).all(1)
        inside[inside] = self.mask[tuple(index[inside].T)]
        d = np.empty(len(p))
        d[~inside] = self._lesion.distance(p[~inside])
        d[inside] = -self._outside.distance(p[inside])
        return d


def lesion_measure(lesion) -> Callable[[np.ndarray], np.ndarray]:
    """The distance in mm of (P, 3) RAS mm points to a lesion, prepared once (surface cubes or k-d tree).

    lesion: a ``LesionSurface``, a ``stopping.BinaryMask`` (its surface: signed, negative inside),
    (V, 3) RAS mm points, e.g. the vertices of a surface mesh (unsigned: no inside is defined), or a
    measure this function returned.
    """
    from ..stopping import BinaryMask

    if callable(lesion):
        return lesion
    if isinstance(lesion, BinaryMask):
        lesion = LesionSurface(lesion.array, lesion.affine)
    if isinstance(lesion, LesionSurface):
        return lesion.signed
    vertices = np.asarray(lesion, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 3 or len(vertices) == 0:
        raise InputError("the lesion must be a label map or a non-empty (V, 3) array of RAS mm points")
    tree = cKDTree(vertices)
    return lambda points: tree.query(np.asarray(points, dtype=np.float64).reshape(-1, 3), workers=-1)[0]


def point_distances(points, lesion) -> np.ndarray:
    """(P,) float64 distance in mm of (P, 3) RAS mm points to a lesion (as ``lesion_measure``)."""
    return lesion_measure(lesion)(points)


def streamline_distances(points: np.ndarray, lengths: np.ndarray, lesion) -> np.ndarray:
    """(N,) float64 smallest distance in mm from each streamline's vertices (P, 3) RAS mm, in runs of
    ``lengths`` (N,), to ``lesion`` (as ``lesion_measure``; inf for a streamline without vertices),
    measuring few vertices. Distances are 1-Lipschitz: a vertex at arc length a from one at distance
    d (or bounded below by d) is at least d - a away. Vertices are
    visited at strides ``STRIDES`` (every 64th and the last, then every 16th, ...): one is measured
    only when its bound from the nearest vertex of the previous stride is below its streamline's
    smallest distance so far."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.full(len(lengths), np.inf)
    if len(points) == 0:
        return out
    measure = lesion_measure(lesion)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    local = np.arange(len(points)) - starts
    last = np.repeat(lengths - 1, lengths)
    segment = np.r_[0.0, np.linalg.norm(np.diff(points, axis=0), axis=1)]
    segment[local == 0] = 0.0
    arc = np.cumsum(segment)
    lower = np.full(len(points), -np.inf)            # a lower bound of each vertex's distance
    previous = None
    for stride in STRIDES:
        level = np.flatnonzero((local % stride == 0) | (local == last) if previous is None
                               else (local % stride == 0) & (local % previous != 0) & (local != last))
        if previous is not None:
            parent = starts[level] + np.minimum(np.rint(local[level] / previous).astype(np.int64) * previous,
                                                last[level])
            lower[level] = np.maximum(lower[level], lower[parent] - np.abs(arc[level] - arc[parent]))
            level = level[lower[level] < out[owner[level]]]
        d = measure(points[level])
        lower[level] = d
        np.minimum.at(out, owner[level], d)
        previous = stride
    return out


def signed_distance_map(surface: LesionSurface, shape=None, affine=None) -> np.ndarray:
    """The signed distance (mm, float32) at every voxel centre of a grid (default the lesion's own).

    Trilinear interpolation of this map is a smooth surrogate of ``surface.signed`` for gradients.
    """
    shape = surface.mask.shape if shape is None else tuple(shape)
    affine = surface.affine if affine is None else as_affine(affine)
    centres = apply_affine(affine, np.indices(shape).reshape(3, -1).T)
    return surface.signed(centres).reshape(shape).astype(np.float32)
