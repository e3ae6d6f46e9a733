"""The MDF distance between resampled streamlines, in DIPY's arithmetic, and the lower bounds that
let QuickBundles skip most of its evaluations.

DIPY's ``AveragePointwiseEuclideanMetric``: the mean over the M points of the distance between
corresponding points, coordinate differences in float32, squares, sums and square roots in float64,
points added in order, then divided by M (mm). MDF (``dipy.segment.metric.mdf``) is the smaller of
that distance to b and to b's points in reverse order.

Bounds: with the M points split into consecutive groups g and S_g(x) = (1/M) sum over g of x_p,
the triangle inequality gives  MDF-term(x, c) >= sum_g |S_g(x) - S_g(c)| >= |centre(x) - centre(c)|
(the centre of mass is sum_g S_g). ``BOUND_MARGIN`` covers the float32 rounding of the distances.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ..errors import InputError
from ..streamlines import as_numpy

_jit = njit(cache=True, nogil=True, error_model="numpy")
_parallel_jit = njit(cache=True, nogil=True, parallel=True, error_model="numpy")

#: point groups of the bound features (at most one per point)
GROUPS = 4


@_jit
def pointwise_distance(a, b, flip, limit) -> float:
    """DIPY's mean pointwise distance of (M, 3) float32 ``a`` and ``b`` (b's points in reverse order
    when ``flip``), mm; +inf as soon as it is certainly not below ``limit`` (its running sum only
    grows, and rounding is monotone)."""
    m = a.shape[0]
    stop = limit * m * (1.0 + 1e-12)
    total = 0.0
    for p in range(m):
        q = m - 1 - p if flip else p
        dx = np.float64(a[p, 0] - b[q, 0])
        dy = np.float64(a[p, 1] - b[q, 1])
        dz = np.float64(a[p, 2] - b[q, 2])
        total += np.sqrt((dx * dx + dy * dy) + dz * dz)
        if total > stop:
            return np.inf
    return total / m


@_jit
def group_sums(x, out) -> None:
    """The bound features of one resampled streamline x (M, 3) into out (G, 3) float64: S_g(x)."""
    m, g = x.shape[0], out.shape[0]
    out[:] = 0.0
    for p in range(m):
        j = p * g // m
        for d in range(3):
            out[j, d] += np.float64(x[p, d])
    out /= m


@_jit
def group_bound(a, b) -> float:
    """Lower bound of the mean pointwise distance from bound features (G, 3) of two streamlines."""
    total = 0.0
    for j in range(a.shape[0]):
        dx, dy, dz = a[j, 0] - b[j, 0], a[j, 1] - b[j, 1], a[j, 2] - b[j, 2]
        total += np.sqrt(dx * dx + dy * dy + dz * dz)
    return total


@_jit
def may_reach(bound, limit) -> bool:
    """Whether a distance with lower bound ``bound`` may be below ``limit`` (rounding margin included)."""
    return bound <= limit * (1.0 + 1e-5) + 1e-6


@_parallel_jit
def _all_group_sums(x, out) -> None:
    for i in prange(len(x)):
        group_sums(x[i], out[i])


def bound_features(x: np.ndarray) -> np.ndarray:
    """(N, G, 3) float64 bound features S_g of resampled streamlines x (N, M, 3) float32."""
    out = np.empty((len(x), min(GROUPS, x.shape[1]), 3))
    _all_group_sums(x, out)
    return out


@_parallel_jit
def _mdf_table(a, b, out) -> None:
    for i in prange(len(a)):
        for k in range(len(b)):
            out[i, k] = min(pointwise_distance(a[i], b[k], False, np.inf), pointwise_distance(a[i], b[k], True, np.inf))


def mdf_distance(a, b):
    """Minimum average direct-flip distance between resampled streamlines, (N, K) float64 mm.

    a: (N, M, 3), b: (K, M, 3) RAS mm (e.g. from ``resample_streamlines``), numpy arrays or tensors
    (the answer is of a's kind, on its device). The flipped distance compares a with b's points in
    reverse order (DIPY's ``dipy.segment.metric.mdf``).
    """
    a_np, b_np = (np.ascontiguousarray(as_numpy(v), dtype=np.float32) for v in (a, b))
    if a_np.shape[1:] != b_np.shape[1:] or a_np.ndim != 3 or a_np.shape[-1] != 3:
        raise InputError(f"mdf_distance needs (N, M, 3) and (K, M, 3) arrays, got {a_np.shape} and {b_np.shape}")
    out = np.empty((len(a_np), len(b_np)))
    _mdf_table(a_np, b_np, out)
    if isinstance(a, np.ndarray):
        return out
    import torch

    return torch.from_numpy(out).to(a.device)
