"""Streamline density maps on an image grid, as MRtrix3's ``tckmap`` (TDI contrast, voxel sum).

Each streamline is first upsampled by Hermite interpolation (tension 0.1) between its vertices, by
the ratio ``tckmap`` picks from the file's ``step_size``: ceil(step / (smallest voxel size x 0.333)),
or x 0.1 with ``precise``; without a step size (files of other tools, .trk/.trx) it is not upsampled.
Then, in float32 as MRtrix3 3.0.3 computes it:

- counts (default): a streamline counts once in every voxel nearest (halves away from zero) to one
  of its upsampled vertices;
- ``precise``: the length in mm of the streamline within each voxel, voxel exits found by bisection
  on the Hermite curve to 0.005 of the smallest voxel size (the SIFT paper's mapping);
- ``endpoints``: its first and last vertices only (a voxel holding both ends counts 2).

One compiled pass over all streamlines (Numba, all cores), chunked to bound memory.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..errors import InputError
from ..geometry import as_affine, realign_to_ras, restore_voxel_order, voxel_sizes

#: tckmap's upsampled step, as a fraction of the smallest voxel size (float32, as MRtrix3 stores it)
UPSAMPLE_FRACTION = float(np.float32(0.333))
PRECISE_FRACTION = float(np.float32(0.1))
HERMITE_TENSION = 0.1
#: voxel indices beyond this are clamped to it (the keys of voxels outside the grid fit in int64)
OUTSIDE_LIMIT = 1 << 19
#: upsampled vertices per chunk (bounds the scratch memory: 12 bytes each)
CHUNK_POINTS = 1 << 23
#: most upsampled vertices of one streamline (its scratch, about 2 GB, cannot be split across chunks)
STREAMLINE_POINTS = 1 << 26

_jit = njit(cache=True, nogil=True, error_model="numpy")
_parallel_jit = njit(cache=True, nogil=True, parallel=True, error_model="numpy")


def upsample_ratio(step_size: float | None, affine, precise: bool = False) -> int:
    """``tckmap``'s automatic upsampling ratio for streamlines of ``step_size`` mm on this grid."""
    if step_size is None or not math.isfinite(step_size) or step_size <= 0:
        return 1
    fraction = PRECISE_FRACTION if precise else UPSAMPLE_FRACTION
    return max(1, math.ceil(float(np.float32(step_size)) / (float(voxel_sizes(affine).min()) * fraction)))


@_jit
def _weights(mu):
    """MRtrix3's Hermite weights (float32, tension ``HERMITE_TENSION``) at ``mu`` in [0, 1] between
    the 2nd and 3rd of four control points."""
    t = np.float32(0.5) * np.float32(HERMITE_TENSION)
    f = np.float32(mu)
    p2 = f * f
    p3 = f * p2
    return ((np.float32(0.5) - t) * (np.float32(2.0) * p2 - p3 - f),
            np.float32(1.0) + (np.float32(1.5) + t) * p3 - (np.float32(2.5) + t) * p2,
            (np.float32(2.0) + np.float32(2.0) * t) * p2 + (np.float32(0.5) - t) * f - (np.float32(1.5) + t) * p3,
            (np.float32(0.5) - t) * (p3 - p2))


def hermite_weights(mu) -> np.ndarray:
    """(K, 4) float32 Hermite weights (``_weights``) at each of ``mu`` (K,), the upsampler's table."""
    return np.array([_weights(m) for m in np.atleast_1d(np.asarray(mu, dtype=np.float64))],
                    dtype=np.float32).reshape(-1, 4)


@_jit
def _combine(w, c0, c1, c2, c3, out):
    """The Hermite point of control points c0..c3 (3,) with weights ``w`` (4,) into ``out`` (3,),
    summed in MRtrix3's order."""
    for d in range(3):
        out[d] = ((w[0] * c0[d] + w[1] * c1[d]) + w[2] * c2[d]) + w[3] * c3[d]


@_jit
def _upsample(points, start, n, weights, out):
    """The Hermite-upsampled vertices of points[start:start + n] into ``out``; returns their count."""
    r = weights.shape[0] + 1
    if r == 1 or n == 1:
        for k in range(n):
            out[k] = points[start + k]
        return n
    m = 0
    c = np.empty((4, 3), np.float32)
    for k in range(n - 1):
        for d in range(3):
            c[1, d] = points[start + k, d]
            c[2, d] = points[start + k + 1, d]
            c[0, d] = points[start + k - 1, d] if k > 0 else c[1, d] + (c[1, d] - c[2, d])  # the upsampler's
            c[3, d] = points[start + k + 2, d] if k + 2 < n else c[2, d] + (c[2, d] - c[1, d])  # padding
        out[m] = c[1]
        m += 1
        for i in range(r - 1):
            _combine(weights[i], c[0], c[1], c[2], c[3], out[m])
            m += 1
    out[m] = points[start + n - 1]
    return m + 1


@_jit
def _voxel(m, x, y, z, shape):
    """Key of the voxel nearest to (x, y, z) through the float32 (3, 4) scanner -> voxel map (each row
    applied to (x, y, z, 1) in pairs, as tckmap's Eigen transform sums it: bisection for -precise homes
    in on voxel faces, where the last bit decides), halves away from zero as C's round: its flat
    index inside the grid; outside, a negative key of its own (indices clamped to +-2^19), so that
    precise mapping tells one outside voxel from the next as tckmap does."""
    flat = 0
    key = 0
    outside = False
    for a in range(3):
        v = (m[a, 0] * x + m[a, 1] * y) + (m[a, 2] * z + m[a, 3])  # Eigen's AffineCompact product
        if not abs(v) < OUTSIDE_LIMIT:  # also NaN
            v = np.float32(-OUTSIDE_LIMIT) if v < 0 else np.float32(OUTSIDE_LIMIT)
        i = int(np.floor(v + np.float32(0.5))) if v >= 0 else -int(np.floor(-v + np.float32(0.5)))
        outside = outside or i < 0 or i >= shape[a]
        flat = flat * shape[a] + i
        key = key * (2 * OUTSIDE_LIMIT + 1) + i + OUTSIDE_LIMIT
    return -1 - key if outside else flat


@_jit
def _squared(a, b):
    """float32 squared distance between two points."""
    s = np.float32(0.0)
    for d in range(3):
        s += (a[d] - b[d]) * (a[d] - b[d])
    return s


@_jit
def _precise(tck, n, m, shape, accuracy, voxels, values):
    """tckmap -precise on the upsampled ``tck[:n]``: (voxel, length mm) pairs; returns their count."""
    if n < 2:
        return 0
    front = tck[0] * np.float32(2.0) - tck[1]
    back = tck[n - 1] * np.float32(2.0) - tck[n - 2]
    p = 0
    mu = 0.0
    exit_point = tck[0].copy()
    p_min = np.empty(3, np.float32)
    p_max = np.empty(3, np.float32)
    p_mu = np.empty(3, np.float32)
    entry = np.empty(3, np.float32)
    prev = np.empty(3, np.float32)
    next_voxel = _voxel(m, tck[0, 0], tck[0, 1], tck[0, 2], shape)
    count = 0
    while True:
        entry[:] = exit_point
        prev[:] = exit_point
        length = 0.0
        this_voxel = next_voxel
        while p != n:
            next_voxel = _voxel(m, tck[p, 0], tck[p, 1], tck[p, 2], shape)
            if next_voxel != this_voxel:
                break
            length += float(np.sqrt(_squared(prev, tck[p])))
            prev[:] = tck[p]
            p += 1
            mu = 0.0
        end = p == n
        if end:
            exit_point[:] = tck[n - 1]
        else:
            mu_min, mu_max = mu, 1.0
            one = front if p == 1 else tck[p - 2]
            four = back if p == n - 1 else tck[p + 1]
            p_min[:] = prev
            p_max[:] = tck[p]
            while _squared(p_min, p_max) > accuracy:
                mu = 0.5 * (mu_min + mu_max)
                _combine(_weights(mu), one, tck[p - 1], tck[p], four, p_mu)
                v = _voxel(m, p_mu[0], p_mu[1], p_mu[2], shape)
                if v == this_voxel:
                    mu_min = mu
                    p_min[:] = p_mu
                else:
                    mu_max = mu
                    p_max[:] = p_mu
                    next_voxel = v
            exit_point[:] = p_max
        length += float(np.sqrt(_squared(prev, exit_point)))
        if this_voxel >= 0 and _squared(exit_point, entry) > 0:
            voxels[count] = this_voxel
            values[count] = length
            count += 1
        if end:
            return count


@_parallel_jit
def _map_chunk(points, starts, counts, bound, m, shape, weights, mode, accuracy, voxels, values, used):
    """Voxels (and values) of each streamline at voxels[bound[i]:bound[i] + used[i]]."""
    for s in prange(len(starts)):
        n = counts[s]
        base = bound[s]
        if mode == 2:                                   # endpoints
            used[s] = 0
            for e in range(min(n, 2)):
                k = starts[s] + e * (n - 1)
                v = _voxel(m, points[k, 0], points[k, 1], points[k, 2], shape)
                if v >= 0:
                    voxels[base + used[s]] = v
                    values[base + used[s]] = 1.0
                    used[s] += 1
            continue
        tck = np.empty((max(1, (n - 1) * (weights.shape[0] + 1) + 1), 3), np.float32)
        k = _upsample(points, starts[s], n, weights, tck)
        if mode == 1:
            used[s] = _precise(tck, k, m, shape, accuracy, voxels[base:], values[base:])
            continue
        if k < 2:                                       # tckmap maps no direction, hence nothing
            used[s] = 0
            continue
        found = np.empty(k, np.int64)
        for j in range(k):
            found[j] = _voxel(m, tck[j, 0], tck[j, 1], tck[j, 2], shape)
        found.sort()
        u = 0
        for j in range(k):
            if found[j] >= 0 and (u == 0 or found[j] != voxels[base + u - 1]):
                voxels[base + u] = found[j]
                values[base + u] = 1.0
                u += 1
        used[s] = u


def density_map(points, lengths, shape, affine, *, step_size: float | None = None, precise: bool = False,
                endpoints: bool = False, upsample: int | None = None) -> np.ndarray:
    """(X, Y, Z) map of streamlines (points (P, 3) RAS mm, lengths (N,)) on the grid ``shape`` with
    ``affine`` (voxel -> RAS mm): counts (uint32), or mm of streamline per voxel (float32) with
    ``precise``, or endpoint counts with ``endpoints``. ``step_size`` (mm) sets tckmap's automatic
    upsampling ratio; ``upsample`` overrides it (tckmap -upsample). The map is computed on the grid as
    MRtrix3 holds it (axes realigned to RAS, ``geometry.realign_to_ras``), so the float32 voxel
    arithmetic is tckmap's whatever the template's storage order; give the affine MRtrix3 reads
    (``images.mrtrix_affine``: voxel sizes from pixdim) to match tckmap on oblique templates."""
    if precise and endpoints:
        raise InputError("precise and endpoint mapping are mutually exclusive (as tckmap -precise / -ends_only)")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"the template must be a 3-D grid, got shape {shape}")
    template_affine = as_affine(affine)
    held, affine = realign_to_ras(np.broadcast_to(np.uint8(0), shape), template_affine)
    points = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 3)
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if lengths.sum() != len(points):
        raise InputError(f"the streamline lengths add up to {lengths.sum()} points, not {len(points)}")
    if upsample is not None and upsample < 1:
        raise InputError("the upsampling ratio must be at least 1")
    longest = int(lengths.max(initial=0))
    ratio = 1 if endpoints or longest < 2 else upsample or upsample_ratio(step_size, affine, precise)
    if (longest - 1) * ratio * (4 if precise else 1) > STREAMLINE_POINTS:
        largest = STREAMLINE_POINTS // ((longest - 1) * (4 if precise else 1))
        raise InputError(f"an upsampling ratio of {ratio} makes the longest streamline ({longest} points) "
                         f"{(longest - 1) * ratio + 1:,} vertices, more than one streamline's scratch holds; "
                         f"the largest ratio for these streamlines is {largest}")
    weights = hermite_weights(np.arange(1, ratio) / ratio).reshape(-1, 4)
    m = np.linalg.inv(affine)[:3].astype(np.float32)
    accuracy = (0.005 * float(voxel_sizes(affine).min())) ** 2
    mode = 1 if precise else 2 if endpoints else 0
    starts = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
    # scratch per streamline: its upsampled vertices (x 4 for the exits of precise mapping)
    need = np.where(lengths > 0, (np.maximum(lengths, 1) - 1) * ratio + 1, 0) * (4 if precise else 1) + 2
    total = np.zeros(held.size, np.float64 if precise else np.int64)
    first = 0
    while first < len(lengths):
        last = first + max(1, int(np.searchsorted(np.cumsum(need[first:]), CHUNK_POINTS)))
        bound = np.r_[0, np.cumsum(need[first:last])].astype(np.int64)
        voxels = np.empty(bound[-1], np.int64)
        values = np.empty(bound[-1], np.float64)
        used = np.zeros(last - first, np.int64)
        _map_chunk(points, starts[first:last], lengths[first:last], bound, m, np.asarray(held.shape, np.int64), weights,
                   mode, accuracy, voxels, values, used)
        keep = np.arange(bound[-1]) - np.repeat(bound[:-1], need[first:last]) < np.repeat(used, need[first:last])
        if precise:
            total += np.bincount(voxels[keep], values[keep], minlength=len(total))
        else:
            total += np.bincount(voxels[keep], minlength=len(total))
        first = last
    total = restore_voxel_order(total.reshape(held.shape), template_affine)
    return np.ascontiguousarray(total, dtype=np.float32 if precise else np.uint32)
