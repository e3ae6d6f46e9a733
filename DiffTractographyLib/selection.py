"""Streamline selection with regions of interest, as MRtrix3's ``tckedit``, and distances to a lesion.

Regions test points given in RAS mm. A streamline is kept when it visits every include region
(AND), enters no exclude region (OR), and its length lies within the limits; with ``ends_only``
only its first and last vertices are tested. Vertices are tested, not the segments between them
(as ``tckedit``, which does not resample). The point tests reproduce MRtrix3 3.0.3's float32
arithmetic: a sphere contains p when ``|c - p|^2 <= r^2``; a mask contains p when the voxel
nearest to p (indices rounded half away from zero) is inside the grid and non-zero.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .errors import InputError
from .geometry import dot3
from .images import SUFFIXES as IMAGE_SUFFIXES
from .polylines import polyline_lengths, within_length
from .stopping import BinaryMask, Region, mask_voxels
from .streamlines import Tractogram


@dataclass(frozen=True)
class Sphere:
    """Ball of ``radius`` mm about ``centre`` (RAS mm), boundary included."""

    centre: tuple[float, float, float]
    radius: float

    def contains(self, points: torch.Tensor) -> torch.Tensor:
        """MRtrix3's ROI test: the float32 squared distance, summed as Eigen's ``squaredNorm``."""
        d = torch.tensor(self.centre, dtype=torch.float32, device=points.device) - points.float()
        r = torch.tensor(self.radius, dtype=torch.float32)
        return dot3(d, d) <= r * r


@dataclass(frozen=True)
class Box:
    """Axis-aligned box ``lower <= p <= upper`` per RAS axis (mm, boundary included)."""

    lower: tuple[float, float, float]
    upper: tuple[float, float, float]

    def contains(self, points: torch.Tensor) -> torch.Tensor:
        p = points.double()
        lower = torch.tensor(self.lower, dtype=torch.float64, device=p.device)
        upper = torch.tensor(self.upper, dtype=torch.float64, device=p.device)
        return ((p >= lower) & (p <= upper)).all(1)


@dataclass(frozen=True)
class OrientedBox:
    """Box of side lengths ``size`` (mm) centred on ``centre`` (RAS mm), its edges along the
    columns of the rotation ``axes`` (3, 3); boundary included."""

    centre: tuple[float, float, float]
    size: tuple[float, float, float]
    axes: tuple[tuple[float, float, float], ...]

    @classmethod
    def from_angles(cls, centre, size, angles_deg) -> "OrientedBox":
        """Edges rotated about the R, then A, then S axis by ``angles_deg`` (degrees, right-handed)."""
        rx, ry, rz = (math.radians(a) for a in angles_deg)
        cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
        rot_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        rot_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rot_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
        return cls(tuple(centre), tuple(size), tuple(map(tuple, rot_z @ rot_y @ rot_x)))

    def contains(self, points: torch.Tensor) -> torch.Tensor:
        axes = torch.tensor(self.axes, dtype=torch.float64, device=points.device)
        local = (points.double() - torch.tensor(self.centre, dtype=torch.float64, device=points.device)) @ axes
        half = torch.tensor(self.size, dtype=torch.float64, device=points.device) / 2
        return (local.abs() <= half).all(1)


@dataclass(frozen=True)
class AnyOf:
    """The union of regions, e.g. the seed balls of a list of control points."""

    regions: tuple

    def contains(self, points: torch.Tensor) -> torch.Tensor:
        inside = self.regions[0].contains(points)
        for region in self.regions[1:]:
            inside = inside | region.contains(points)
        return inside


def is_image(path: str) -> bool:
    """Whether ``path`` names an image file (NIfTI or MRtrix3) by its suffix."""
    return path.lower().endswith(IMAGE_SUFFIXES)


def load_mask(path, labels: Sequence[int] | None = None) -> BinaryMask:
    """A label volume (NIfTI or MRtrix3 image) as a region: its non-zero voxels, or those whose value is in
    ``labels``."""
    from .images import load_nifti

    data, affine = load_nifti(path, ndim=3, what="region")
    selected = np.isin(data, list(labels)) if labels else mask_voxels(data, "mrtrix", "region")  # as tckedit
    if not selected.any():
        which = f"with label {', '.join(map(str, labels))}" if labels else "that is non-zero"
        raise InputError(f"{path}: no voxel {which}")
    return BinaryMask(selected, affine, rule="mrtrix")


_NUMBERS = {"sphere": 4, "box": 6, "obox": 9}


def parse_region(spec: str) -> Region:
    """A region from its command-line text (``cli.select.REGION_HELP``)."""
    kind, _, rest = spec.partition(":")
    if kind in _NUMBERS:
        try:
            values = [float(v) for v in rest.split(",")]
        except ValueError:
            values = []
        if len(values) != _NUMBERS[kind] or not all(math.isfinite(v) for v in values):
            raise InputError(f"region {spec!r}: {kind} needs {_NUMBERS[kind]} comma-separated numbers")
        if kind == "sphere":
            if values[3] < 0:
                raise InputError(f"region {spec!r}: the sphere radius must not be negative")
            return Sphere(tuple(values[:3]), values[3])
        if kind == "box":
            lower, upper = tuple(values[0::2]), tuple(values[1::2])
            if any(a > b for a, b in zip(lower, upper)):
                raise InputError(f"region {spec!r}: each minimum must not exceed its maximum")
            return Box(lower, upper)
        if any(s < 0 for s in values[3:6]):
            raise InputError(f"region {spec!r}: box side lengths must not be negative")
        return OrientedBox.from_angles(values[:3], values[3:6], values[6:])
    path, labels = spec, None
    match = re.fullmatch(r"(.+):([0-9,]+)", spec)
    if match and is_image(match.group(1)):
        path, labels = match.group(1), [int(v) for v in match.group(2).split(",") if v]
    if not is_image(path) and is_image(spec.rpartition(":")[0]):
        raise InputError(f"region {spec!r}: give the labels as comma-separated whole numbers, e.g. "
                         f"{spec.rpartition(':')[0]}:3,5")
    if not is_image(path):
        raise InputError(f"region {spec!r}: unknown region; give an image file ({', '.join(IMAGE_SUFFIXES)}), "
                         "sphere:, box: or obox: (see --help)")
    return load_mask(path, labels)


def streamline_lengths(tractogram: Tractogram) -> torch.Tensor:
    """(N,) float32 length in mm as MRtrix3 computes it: float32 segment norms added one after the
    other in float32 (0 for a single point)."""
    return torch.from_numpy(polyline_lengths(tractogram.points.detach().cpu().numpy(), tractogram.lengths.cpu().numpy()))


def _visits(tractogram: Tractogram, region: Region, ends_only: bool, untested=None) -> torch.Tensor:
    """(N,) bool: streamline has a tested vertex inside ``region`` (``untested``: rows of ``points``
    that are not tested, e.g. the seeds)."""
    n = len(tractogram)
    if ends_only:
        lengths = tractogram.lengths
        has = torch.nonzero(lengths > 0).flatten()
        first = tractogram.offsets[:-1][has]
        last = first + lengths[has] - 1
        inside = region.contains(tractogram.points[first].detach()) | region.contains(tractogram.points[last].detach())
        out = torch.zeros(n, dtype=torch.bool, device=inside.device)
        out[has.to(inside.device)] = inside
        return out
    inside = region.contains(tractogram.points.detach()).long()
    if untested is not None:
        inside[torch.as_tensor(untested, device=inside.device)] = 0
    counts = torch.zeros(n, dtype=torch.long, device=inside.device)
    owner = torch.repeat_interleave(torch.arange(n, device=tractogram.lengths.device), tractogram.lengths)
    return counts.index_add_(0, owner.to(inside.device), inside) > 0


def select_streamlines(tractogram: Tractogram, include: Sequence[Region] = (), exclude: Sequence[Region] = (), *,
                       ends_only: bool = False, min_length: float | None = None,
                       max_length: float | None = None) -> torch.Tensor:
    """(N,) bool, True for the streamlines ``tckedit`` keeps with the same options.

    include: every region must be visited; exclude: none may be; ends_only: test only the first
    and last vertex; min_length / max_length: limits in mm, inclusive. ``tckedit`` widens the
    limits by 0.1 step size when the input file records one; here they are exact.
    """
    keep = torch.ones(len(tractogram), dtype=torch.bool)
    if min_length is not None or max_length is not None:
        keep = torch.from_numpy(within_length(tractogram.points.detach().cpu().numpy(), tractogram.lengths.cpu().numpy(),
                                              min_length, max_length))
    for region in include:
        keep &= _visits(tractogram, region, ends_only).cpu()
    for region in exclude:
        keep &= ~_visits(tractogram, region, ends_only).cpu()
    return keep


def tckgen_keeps(points: np.ndarray, lengths: np.ndarray, seed_at: np.ndarray, include: Sequence[Region] = (),
                 exclude: Sequence[Region] = ()) -> np.ndarray:
    """(N,) bool, True for the streamlines (``points`` (P, 3) RAS mm, ``lengths`` (N,)) that ``tckgen``
    keeps with ``-include`` / ``-exclude``: a vertex in every include region, and no vertex in an exclude
    region but the seed (``seed_at`` (N,): its vertex index), which tckgen tests for inclusion only.
    Otherwise tckedit's test (``select_streamlines``): tckgen tests the vertices as it adds them."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tractogram = Tractogram(torch.from_numpy(np.ascontiguousarray(points)), torch.from_numpy(offsets))
    keep = torch.ones(len(tractogram), dtype=torch.bool)
    for region in include:
        keep &= _visits(tractogram, region, False).cpu()
    seeds = offsets[:-1] + np.asarray(seed_at, dtype=np.int64)
    for region in exclude:
        keep &= ~_visits(tractogram, region, False, untested=seeds).cpu()
    return keep.numpy()


def selected(tractogram: Tractogram, include: Sequence[Region] = (), exclude: Sequence[Region] = ()) -> Tractogram:
    """The streamlines of ``tractogram`` that visit every ``include`` region and enter no ``exclude``
    region (``tractogram`` itself when there are none)."""
    return tractogram.subset(select_streamlines(tractogram, include, exclude)) if include or exclude else tractogram


def lesion_distances(tractogram: Tractogram, lesion) -> torch.Tensor:
    """(N,) float64 smallest distance in mm from each streamline's vertices to a lesion.

    lesion: a label map (``Mask`` or ``planning.distance.LesionSurface``: signed distance to its
    surface, negative inside) or (V, 3) RAS mm points, e.g. surface mesh vertices (unsigned); see
    ``planning.distance.point_distances``. Streamlines without vertices get inf.
    """
    from .planning.distance import streamline_distances

    return torch.from_numpy(streamline_distances(tractogram.points.detach().cpu().double().numpy(),
                                                 tractogram.lengths.cpu().numpy(), lesion))


def cluster_distances(distances: torch.Tensor, labels: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """(K,) smallest per-streamline distance within each cluster (inf for empty clusters)."""
    keep = labels >= 0
    out = torch.full((n_clusters,), float("inf"), dtype=distances.dtype)
    return out.scatter_reduce(0, labels[keep].cpu(), distances[keep].cpu(), "amin")
