"""Streamlines resampled to a fixed number of points equally spaced in arc length, bit for bit as
DIPY's ``set_number_of_points`` on float32 input: float32 coordinate differences, float64 segment
lengths (squares summed x, y then z), arc lengths and sample positions (the step added again and
again), float32 points; the end vertices are copied exactly.

numpy arrays in and out, one compiled pass over all streamlines (Numba, all cores); no torch.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .errors import InputError
from .streamlines import as_numpy

_jit = njit(cache=True, nogil=True, error_model="numpy")
_parallel_jit = njit(cache=True, nogil=True, parallel=True, error_model="numpy")


@_jit
def _segment_lengths(points, start, n, out) -> None:
    """Float64 length of each segment of points[start:start + n] into out (n - 1,): float32
    coordinate differences, float64 squares (the same for either walking direction)."""
    for j in range(n - 1):
        a, b = start + j, start + j + 1
        dx = np.float64(points[b, 0] - points[a, 0])
        dy = np.float64(points[b, 1] - points[a, 1])
        dz = np.float64(points[b, 2] - points[a, 2])
        out[j] = np.sqrt((dx * dx + dy * dy) + dz * dz)


@_jit
def _resample_one(points, start, n, segments, reverse, out) -> None:
    """DIPY's resampling of points[start:start + n] (segment lengths ``segments``) into ``out``
    (M, 3), walked from the last vertex when ``reverse``; NaN when its arc length is 0."""
    m = out.shape[0]
    total = 0.0
    for j in range(n - 1):
        total += segments[n - 2 - j] if reverse else segments[j]
    if not total > 0.0:
        out[:] = np.nan
        return
    step = total / (m - 1)
    position, k, arc_prev, arc_k = 0.0, 0, 0.0, 0.0
    for i in range(1, m - 1):
        position += step
        while arc_k < position and k < n - 1:  # to the first vertex k whose arc length reaches position
            arc_prev = arc_k
            arc_k += segments[n - 2 - k] if reverse else segments[k]
            k += 1
        a, b = (start + n - k, start + n - 1 - k) if reverse else (start + k - 1, start + k)
        if arc_k == position:
            out[i, :] = points[b]
        else:
            ratio = 1.0 - ((arc_k - position) / (arc_k - arc_prev))
            for d in range(3):
                out[i, d] = np.float64(points[a, d]) + ratio * np.float64(points[b, d] - points[a, d])
    out[0, :] = points[start + n - 1 if reverse else start]
    out[m - 1, :] = points[start if reverse else start + n - 1]


@_parallel_jit
def _resample_all(points, starts, lengths, forward, backward) -> None:
    """Each streamline into forward[i] and/or (walked backwards) backward[i]; an empty output is skipped."""
    for i in prange(len(lengths)):
        n = lengths[i]
        segments = np.empty(max(n - 1, 0))
        _segment_lengths(points, starts[i], n, segments)
        if len(forward):
            _resample_one(points, starts[i], n, segments, False, forward[i])
        if len(backward):
            _resample_one(points, starts[i], n, segments, True, backward[i])


def resample_both(points: np.ndarray, lengths: np.ndarray, nb_points: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """(N, nb_points, 3) float32 resamplings of each streamline of the flat (P, 3) RAS-mm ``points``
    (vertex counts ``lengths`` (N,)): walked forwards, and walked from its last vertex (not the same
    rounding as reversing the first: QuickBundles compares it as the flipped orientation), in one
    pass. Streamlines with fewer than two distinct points have no resampling: NaN rows."""
    return _resample(points, lengths, nb_points, (True, True))


def resample(points: np.ndarray, lengths: np.ndarray, nb_points: int = 12, *, reverse: bool = False) -> np.ndarray:
    """One of ``resample_both``'s resamplings: the backward one when ``reverse``."""
    return _resample(points, lengths, nb_points, (not reverse, reverse))[int(reverse)]


def _resample(points, lengths, nb_points: int, directions: tuple[bool, bool]) -> tuple[np.ndarray, np.ndarray]:
    if int(nb_points) < 2:
        raise InputError(f"streamlines must be resampled to at least 2 points, got {nb_points}")
    points = np.ascontiguousarray(points, dtype=np.float32)
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    out = tuple(np.empty((len(lengths) if wanted else 0, int(nb_points), 3), dtype=np.float32) for wanted in directions)
    _resample_all(points, starts, lengths, *out)
    return out


def resample_streamlines(tractogram, nb_points: int = 12, *, reverse: bool = False):
    """``resample`` of a ``Tractogram``: (N, nb_points, 3) float32 RAS mm, a tensor on the
    tractogram's device for a tensor tractogram (computed on the CPU), else a numpy array."""
    out = resample(as_numpy(tractogram.points), np.diff(as_numpy(tractogram.offsets)), nb_points, reverse=reverse)
    if isinstance(tractogram.points, np.ndarray):
        return out
    import torch

    return torch.from_numpy(out).to(tractogram.points.device)
