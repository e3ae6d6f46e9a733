"""QuickBundles' sequential pass, compiled (Numba), with DIPY's decisions exactly.

DIPY visits the streamlines one after the other. Each one is compared with every centroid, first
as it is (features x) and then walked backwards (features xf, its reversal resampled): the nearest
centroid wins (the first one on ties; the reversal only when strictly nearer). Below ``threshold``
(strictly) the streamline joins that cluster, whose centroid becomes the float32 running mean
``(c * size + f) / (size + 1)`` of its members in the orientation they joined with; otherwise it
founds a cluster, its centroid the orientation nearer to the nearest existing centroid.

The same decisions here, with most distances skipped: a centroid whose centre of mass is farther
than the threshold (plus the streamline's own x / xf centre shift) cannot be joined, nor one whose
group bound (``metric``) is above the best distance found so far, and a distance stops being added
up once it exceeds that best. A founder's orientation needs the nearest centroid at any distance:
the centroid with the nearest centre gives a first upper bound, and only the centroids whose bounds
are within it are measured.

Independent QuickBundles (one per group of streamlines: the clusters of the level above in a
hierarchy) run in parallel, one group per thread.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .metric import group_bound, group_sums, may_reach, pointwise_distance

_jit = njit(cache=True, nogil=True, error_model="numpy")
_parallel_jit = njit(cache=True, nogil=True, parallel=True, error_model="numpy")


@_jit
def _centre(s, out) -> None:
    """Centre of mass of bound features s (G, 3) into out (3,) float64."""
    for d in range(3):
        out[d] = 0.0
        for j in range(s.shape[0]):
            out[d] += s[j, d]


@_jit
def _gap_sq(a, b) -> float:
    """Squared distance of two (3,) points."""
    dx, dy, dz = a[0] - b[0], a[1] - b[1], a[2] - b[2]
    return dx * dx + dy * dy + dz * dz


@_jit
def _nearest(centroids, bounds, centres, k, f, sf, cf, start) -> float:
    """Distance (mm) from features f (bound features sf, centre cf) to the nearest of the clusters
    0..k-1, exact; the search starts from cluster ``start``."""
    best = pointwise_distance(centroids[start], f, False, np.inf)
    for c in range(k):
        if c != start and may_reach(np.sqrt(_gap_sq(centres[c], cf)), best) \
                and may_reach(group_bound(sf, bounds[c]), best):
            best = min(best, pointwise_distance(centroids[c], f, False, best))
    return best


@_jit
def quickbundles_pass(x, xf, sx, sxf, members, threshold, labels, label_offset, centroids, sizes, founders) -> int:
    """QuickBundles over the streamlines ``members`` (indices, in visiting order).

    x, xf: (N, M, 3) float32 features of each streamline and of its reversal; sx, sxf: their (N, G, 3)
    bound features. Sets labels[i] = label_offset + its cluster (0..k-1) for each member, and per
    cluster its centroid (M, 3) float32, size and founding streamline (room for ``len(members)``
    clusters). Returns k, the number of clusters.
    """
    room = len(members)
    candidates = np.empty(room, np.int64)
    bounds = np.empty((room, sx.shape[1], 3))
    centres = np.empty((room, 3))
    cx, cxf = np.empty(3), np.empty(3)
    k = 0
    for i in members:
        _centre(sx[i], cx)
        _centre(sxf[i], cxf)
        reach = threshold * (1.0 + 1e-5) + 1e-6 + np.sqrt(_gap_sq(cx, cxf))
        reach_sq = reach * reach
        n = 0
        for c in range(k):
            if _gap_sq(centres[c], cx) <= reach_sq:
                candidates[n] = c
                n += 1
        best, best_c, flip = threshold, -1, False
        for orientation in range(2):
            f, sf = (xf[i], sxf[i]) if orientation else (x[i], sx[i])
            for j in range(n):
                c = candidates[j]
                if may_reach(group_bound(sf, bounds[c]), best):
                    d = pointwise_distance(centroids[c], f, False, best)
                    if d < best:
                        best, best_c, flip = d, c, orientation == 1
        if best_c >= 0:  # join: the float32 running mean
            size = np.float32(sizes[best_c])
            f = xf[i] if flip else x[i]
            centroid = centroids[best_c]
            for p in range(centroid.shape[0]):
                for d in range(3):
                    centroid[p, d] = (centroid[p, d] * size + f[p, d]) / (size + np.float32(1.0))
            sizes[best_c] += 1
            group_sums(centroid, bounds[best_c])
            _centre(bounds[best_c], centres[best_c])
            labels[i] = label_offset + best_c
            continue
        if k:  # found, in the orientation nearer to the nearest centroid
            start = 0
            for c in range(1, k):
                if _gap_sq(centres[c], cx) < _gap_sq(centres[start], cx):
                    start = c
            flip = _nearest(centroids, bounds, centres, k, xf[i], sxf[i], cxf, start) < \
                _nearest(centroids, bounds, centres, k, x[i], sx[i], cx, start)
        centroids[k] = xf[i] if flip else x[i]
        bounds[k] = sxf[i] if flip else sx[i]
        centres[k] = cxf if flip else cx
        sizes[k], founders[k], labels[i] = 1, i, label_offset + k
        k += 1
    return k


@_parallel_jit
def quickbundles_groups(x, xf, sx, sxf, order, group_start, threshold, labels, centroids, sizes, founders):
    """One ``quickbundles_pass`` per group, in parallel: group g visits order[group_start[g]:
    group_start[g + 1]] and owns the cluster slots of the same range (labels are slots). Returns the
    (n_groups,) cluster counts."""
    n_groups = len(group_start) - 1
    counts = np.zeros(n_groups, np.int64)
    for g in prange(n_groups):
        a, b = group_start[g], group_start[g + 1]
        counts[g] = quickbundles_pass(x, xf, sx, sxf, order[a:b], threshold, labels, a, centroids[a:b], sizes[a:b],
                                      founders[a:b])
    return counts
