"""Seeds: generated in a mask or label image, in balls around points or in a box, or read from a
text file. Always RAS mm."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from . import rng
from .errors import InputError
from .files import load_table
from .geometry import apply_affine, as_affine
from .stopping import mask_voxels

PLACEMENTS = ("random", "grid")


def seeds_from_mask(mask, affine, seeds_per_voxel: int = 1, placement: str = "random", rng_seed: int = 0,
                    label: int | None = None, rule: str = "mrtrix") -> np.ndarray:
    """``seeds_per_voxel`` seeds in every voxel of ``mask`` (inside as ``rule``'s tool reads a seed
    image, ``stopping.mask_voxels``: MRtrix3's |value| >= 0.5, DIPY's > 0; or == ``label``), (N, 3) RAS mm.

    ``random``: uniform within each voxel (MRtrix3 ``-seed_random_per_voxel``); the draws depend only
    on ``rng_seed`` and the voxel. ``grid``: a regular n x n x n lattice per voxel with
    ``seeds_per_voxel`` = n**3 (``-seed_grid_per_voxel``; n = 1 puts one seed at each voxel centre).
    Seeds are ordered by voxel (C order), then by draw.
    """
    m = np.asarray(mask)
    if placement not in PLACEMENTS:
        raise InputError(f"seed placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    if seeds_per_voxel < 1:
        raise InputError(f"seeds per voxel must be at least 1, got {seeds_per_voxel}")
    voxels = _seed_voxels(m, label, rule)
    if placement == "grid":
        n = round(seeds_per_voxel ** (1.0 / 3.0))
        if n ** 3 != seeds_per_voxel:
            raise InputError(f"grid placement needs a cube number of seeds per voxel (1, 8, 27, ...), got {seeds_per_voxel}")
        ticks = (np.arange(n) + 0.5) / n - 0.5
        offsets = np.stack(np.meshgrid(ticks, ticks, ticks, indexing="ij"), -1).reshape(-1, 3)
    else:
        flat = np.ravel_multi_index(voxels.T, m.shape)
        keys = (flat[:, None] * seeds_per_voxel + np.arange(seeds_per_voxel)).reshape(-1)
        offsets = rng.uniform(rng_seed, keys, stream=1, n=3) - 0.5
        offsets = offsets.reshape(len(voxels), seeds_per_voxel, 3)
    ijk = voxels[:, None, :] + offsets
    return apply_affine(as_affine(affine), ijk.reshape(-1, 3))


class RandomSeeds:
    """Seeds drawn at random in a seed image (tckgen -seed_image with -seeds or -select): seed k lies in
    a voxel drawn uniformly among the image's seed voxels (as ``seeds_from_mask`` selects them), at a
    uniform point within it. Draws are keyed by (``rng_seed``, k) alone, so ``draw(start, stop)`` gives
    seeds start..stop-1 of one endless sequence whatever the blocks it is asked for in."""

    def __init__(self, mask, affine, rng_seed: int = 0, label: int | None = None, rule: str = "mrtrix"):
        self.voxels = _seed_voxels(np.asarray(mask), label, rule)
        self.affine = as_affine(affine)
        self.rng_seed = rng_seed

    def draw(self, start: int, stop: int) -> np.ndarray:
        """Seeds ``start`` .. ``stop`` - 1, (stop - start, 3) RAS mm."""
        u = rng.uniform(self.rng_seed, np.arange(start, stop, dtype=np.int64), stream=4, n=4)
        voxel = np.minimum((u[:, 0] * len(self.voxels)).astype(np.int64), len(self.voxels) - 1)
        return apply_affine(self.affine, self.voxels[voxel] + u[:, 1:] - 0.5)


def _seed_voxels(m: np.ndarray, label: int | None, rule: str) -> np.ndarray:
    """(V, 3) indices of the seed voxels of the 3-D image ``m``: == ``label``, or inside as ``rule``'s tool
    reads a seed image; InputError when there are none."""
    if m.ndim != 3:
        raise InputError(f"a seed image must be 3-D, got shape {m.shape}")
    fractional = int((m != np.round(m)).sum()) if label is not None and np.issubdtype(m.dtype, np.floating) else 0
    if fractional:
        warnings.warn(f"the seed image holds {fractional} voxels of non-integer value (a label map resampled "
                      f"with interpolation?); label {label} matches its exact value only", stacklevel=3)
    selected = (m == label) if label is not None else mask_voxels(m, rule, "seed image")
    voxels = np.argwhere(selected)
    if len(voxels) == 0:
        what = f"label {label}" if label is not None else "non-zero voxel"
        raise InputError(f"the seed image has no {what}: no seeds to track from")
    return voxels


def read_seed_file(path) -> tuple[np.ndarray, np.ndarray | None]:
    """Seeds from a text file of ``x y z`` or ``x y z dx dy dz`` rows (RAS mm; ``#`` comments; directions
    0 0 0 on every row mean none). Returns (points (N, 3), directions (N, 3) or None)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such seed file")
    try:
        rows = load_table(path, dtype=np.float64, comments="#", ndmin=2)  # an empty file is said below
    except ValueError as exc:
        raise InputError(f"{path}: cannot read seed rows ({exc}); expected 'x y z' or 'x y z dx dy dz' per line") from exc
    if rows.size == 0:
        raise InputError(f"{path}: the seed file holds no seeds")
    if rows.shape[1] not in (3, 6):
        raise InputError(f"{path}: seed rows have {rows.shape[1]} columns; expected 3 (x y z) or 6 (x y z dx dy dz)")
    if not np.isfinite(rows).all():
        raise InputError(f"{path}: the seed file holds non-finite values")
    directions = rows[:, 3:] if rows.shape[1] == 6 else None
    if directions is not None:
        zero = ~directions.any(axis=1)
        if zero.all():
            directions = None  # 0 0 0 on every row: no direction given
        elif zero.any():
            raise InputError(f"{path}: row {int(np.argmax(zero))} has the direction 0 0 0; give a direction on "
                             "every row or on none")
    return rows[:, :3], directions


def outside_grid(points: np.ndarray, affine, shape) -> np.ndarray:
    """(N,) bool: points whose nearest voxel lies outside a grid of ``shape``."""
    v = apply_affine(np.linalg.inv(as_affine(affine)), points)
    return ((v <= -0.5) | (v >= np.asarray(shape[:3]) - 0.5)).any(-1)


def seeds_in_spheres(centres, radius: float, count: int, rng_seed: int = 0, indices=None) -> np.ndarray:
    """``count`` seeds uniform in the ball of ``radius`` mm around each (M, 3) RAS centre, as
    (M * count, 3) RAS mm ordered by centre (Slicer's fiducial seeding). The draws of a centre depend
    only on ``rng_seed`` and its entry of ``indices`` (default 0..M-1), so a moved centre keeps its
    seed pattern."""
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 3)
    if not (np.isfinite(radius) and radius >= 0):
        raise InputError(f"the seed radius must be a non-negative number of mm, got {radius}")
    if count < 1:
        raise InputError(f"seeds per point must be at least 1, got {count}")
    ids = np.arange(len(c)) if indices is None else np.asarray(indices, dtype=np.int64).reshape(-1)
    keys = (ids[:, None] * count + np.arange(count)).reshape(-1)
    return np.repeat(c, count, axis=0) + _in_ball(radius, rng_seed, keys, stream=2)


class BallSeeds:
    """Seeds drawn uniformly in the ball of ``radius`` mm about ``centre`` (RAS mm; tckgen -seed_sphere);
    ``draw(start, stop)`` as ``RandomSeeds.draw``: seed k depends on (``rng_seed``, k) alone."""

    def __init__(self, centre, radius: float, rng_seed: int = 0):
        self.centre = np.asarray(centre, dtype=np.float64).reshape(3)
        if not (np.isfinite(self.centre).all() and np.isfinite(radius) and radius >= 0):
            raise InputError(f"a seed sphere needs a finite centre and radius >= 0 mm, got {centre}, {radius}")
        self.radius, self.rng_seed = float(radius), rng_seed

    def draw(self, start: int, stop: int) -> np.ndarray:
        """Seeds ``start`` .. ``stop`` - 1, (stop - start, 3) RAS mm."""
        return self.centre + _in_ball(self.radius, self.rng_seed, np.arange(start, stop, dtype=np.int64), stream=5)


def _in_ball(radius: float, rng_seed: int, keys: np.ndarray, stream: int) -> np.ndarray:
    """(len(keys), 3) offsets uniform in the ball of ``radius`` mm, one per key of draw ``stream``."""
    u = rng.uniform(rng_seed, keys, stream=stream, n=3)
    return (radius * np.cbrt(u[:, 0]))[:, None] * rng.on_sphere(u[:, 1:])


def seeds_in_box(box_to_world, size, count: int, rng_seed: int = 0) -> np.ndarray:
    """``count`` seeds uniform in an oriented box, (count, 3) RAS mm: ``box_to_world`` (4, 4) maps box
    coordinates (origin at the centre) to RAS, ``size`` (3,) is the edge lengths in those coordinates."""
    if count < 1:
        raise InputError(f"the box needs at least one seed, got {count}")
    u = rng.uniform(rng_seed, np.arange(count), stream=3, n=3)
    return apply_affine(as_affine(box_to_world), (u - 0.5) * np.asarray(size, dtype=np.float64).reshape(3))
