"""DIPY's pmf direction getters in a kernel: the FOD on the vertices of a discrete sphere, the
relative threshold, the ``max_angle`` cone; ``detmax`` takes the largest admissible vertex, ``prob``
draws one by Gumbel-max from the counter-based stream of ``methods.prob``. ``seed_peaks`` is DIPY's
``peak_directions`` at seeds given without a direction (one streamline per peak)."""
from __future__ import annotations

import math
from collections import namedtuple
from functools import partial

import numpy as np
from numba import njit

from ..sphere import LOOKUP_CELLS
from .common import (CONTINUE, HIGH_CURVATURE, LOW_SIGNAL, OUTSIDE_IMAGE, corner_index, corner_weight, jit, locate,
                     log_positive, sample, stream_key, uniform)
from .dense import batch_column_sums, batch_row_sums, column_sums, row_sums

#: cutoff (relative pmf threshold), cos(max_angle); ``inclusive`` cone |cos| >= cos_max (prob) or >
#: (detmax); ``sample``: Gumbel-max draw (prob) instead of the maximum; ``rng_seed``; ``basis``
#: (C, D) SH basis on the vertices and its rows per vertex ``vertex_basis`` (D, C), the largest norm
#: of a vertex's basis ``basis_norm`` and the largest |basis| of each coefficient ``basis_max`` (C,)
#: float64, at least ``BASIS_MAX_FLOOR``; each cone's basis columns
#: ``cone_basis`` (D, C, K) (float32 for detmax's screening, the working precision for prob);
#: ``vertices`` (D, 3) in RAS; the cone table (D, K) with counts, and the vertex lookup grid (empty:
#: none) of ``sphere``; ``rotation`` SH frame -> RAS and ``voxel_size`` (DIPY's second-half start);
#: for ``seed_peaks``: ``sphere_vertices`` (D, 3) float64 in the SH frame and ``edges`` (E, 2), DIPY's
#: relative peak threshold and cos(minimum separation); prob's per-voxel bounds ``voxel_top`` (X Y Z,
#: 3) float32, NaN until a step first needs the voxel (``_voxel_bound``)
PmfData = namedtuple("PmfData", "cutoff cos_max inclusive sample rng_seed basis vertex_basis basis_norm basis_max "
                                "cone_basis vertices cone cone_count lookup rotation voxel_size sphere_vertices edges "
                                "peak_threshold cos_separation voxel_top")
#: the backward's data: ``PmfData``'s choice rules, ``basis`` (C, D), ``vertices`` (D, 3) RAS float64
#: and as columns ``vertex_columns`` (3, D), the ``temperature`` of the relaxation the backward pass
#: differentiates (``methods.pmf``; 1 / T a whole number), and as ``PmfData`` the cone table, each
#: cone's basis columns ``cone_basis`` (D, C, K) with its vertices as columns ``cone_vertices``
#: (D, 3, K) (zero-padded), and the vertex lookup grid of the RAS vertices. The columns (``basis``,
#: ``vertex_columns``, ``cone_*``) hold the relaxation's working precision: float64, or float32 on
#: the CPU for a gradient below float64 (``tracking.replay``)
PmfAdjoint = namedtuple("PmfAdjoint", "cutoff cos_max inclusive sample rng_seed basis vertices vertex_columns "
                                      "temperature cone cone_basis cone_vertices lookup")

#: at most this many peaks at a seed: directions 25 degrees apart, antipodes identified, fit ~42
MAX_PEAKS = 48


@jit
def _sphere(basis, K, c, pmf):
    """The pmf on every vertex (``c @ basis``, ``basis`` (C, D); each sum in coefficient order) into
    ``pmf``; returns its largest value (NaN if any is, at least 0)."""
    n = pmf.shape[0]
    column_sums(basis, c, n, pmf)
    if _nans(pmf, n) > 0:
        return K.f(np.nan)
    return _largest_of(pmf, n, K.zero)


@partial(njit, cache=True, nogil=True, error_model="numpy", _nrt=False)
def _nans(values, n):
    """How many of ``values[:n]`` are NaN (branch-free, vectorised)."""
    count = np.int32(0)
    for i in range(n):
        count += np.int32(values[i] != values[i])
    return count


@partial(njit, cache=True, nogil=True, error_model="numpy", _nrt=False, fastmath={"nnan"})
def _largest_of(values, n, start):
    """The largest of ``start`` and ``values[:n]`` (none NaN): eight running maxima side by side, whose
    comparisons do not wait on each other."""
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = start
    whole = n - n % 8
    for i in range(0, whole, 8):
        t0, t1, t2, t3 = max(t0, values[i]), max(t1, values[i + 1]), max(t2, values[i + 2]), max(t3, values[i + 3])
        t4, t5, t6, t7 = max(t4, values[i + 4]), max(t5, values[i + 5]), max(t6, values[i + 6]), max(t7, values[i + 7])
    for i in range(whole, n):
        t0 = max(t0, values[i])
    return max(max(max(t0, t1), max(t2, t3)), max(max(t4, t5), max(t6, t7)))


@jit
def _pmf(M, K, S, vol, px, py, pz):
    """The pmf (D,) at a point into ``S.a`` and the largest value (NaN if any is, at least 0)."""
    inside = sample(vol, K, px, py, pz, S.c)
    return inside, _sphere(M.basis, K, S.c, S.a)


@jit(inline="always")
def _cell_vertex(lookup, one, cells_half, dx, dy, dz):
    """The vertex the ``lookup`` grid holds for the cell of the unit direction d (-1: none), the cell
    found in the precision of ``one`` and ``cells_half`` (``LOOKUP_CELLS`` / 2)."""
    g = LOOKUP_CELLS
    i = min(max(np.int64(math.floor((dx + one) * cells_half)), 0), g - 1)
    j = min(max(np.int64(math.floor((dy + one) * cells_half)), 0), g - 1)
    k = min(max(np.int64(math.floor((dz + one) * cells_half)), 0), g - 1)
    return lookup[(i * g + j) * g + k]


@jit
def _cone_row(lookup, vertices, K, dx, dy, dz):
    """The row of the cone table when (dx, dy, dz) is exactly a vertex or its antipode, else -1 (the
    method's ``lookup`` grid and ``vertices``; arrays rather than the method tuple, as every call
    per step that is not inlined)."""
    if lookup.shape[0] == 0:
        return -1
    v = _cell_vertex(lookup, K.one, K.cells_half, dx, dy, dz)
    if v < 0:
        return -1
    a = vertices[v]
    if (a[0] == dx and a[1] == dy and a[2] == dz) or (a[0] == -dx and a[1] == -dy and a[2] == -dz):
        return v
    return -1


@jit
def looked_up(M, dx, dy, dz, tolerance):
    """(vertex, cos) of the vertex whose lookup cell holds the unit direction, when |cos| >= 1 -
    ``tolerance`` (within 0.26 degrees for 1e-5: at most one vertex of a DIPY sphere), else (-1, 0).
    float64, whatever the run's precision."""
    if M.lookup.shape[0] == 0:
        return -1, 0.0
    v = _cell_vertex(M.lookup, 1.0, LOOKUP_CELLS * 0.5, np.float64(dx), np.float64(dy), np.float64(dz))
    if v < 0:
        return -1, 0.0
    a = M.vertices[v]
    cos = dx * a[0] + dy * a[1] + dz * a[2]
    return (v, cos) if abs(cos) >= 1.0 - tolerance else (-1, 0.0)


@jit(inline="always")
def _outside(cos, cos_max, inclusive):
    """Whether |cos| ``cos`` lies outside the cone: below ``cos_max`` (``inclusive``), else at or below."""
    return (cos < cos_max) if inclusive else (cos <= cos_max)


@jit(inline="always")
def _outside_cone(M, dx, dy, dz, v):
    a = M.vertices[v]
    return _outside(abs((dx * a[0] + dy * a[1]) + dz * a[2]), M.cos_max, M.inclusive)


@jit(inline="always")
def _forwards(M, K, v, dx, dy, dz):
    a = M.vertices[max(v, 0)]
    ux, uy, uz = a[0], a[1], a[2]
    if not (ux * dx + uy * dy) + uz * dz > K.zero:  # DIPY: v if v . d > 0 else -v
        ux, uy, uz = -ux, -uy, -uz
    return ux, uy, uz


#: screening in float32 needs sum_j |c_j| basis_max_j in this range (no overflow, no underflow)
SCREEN_RANGE = (1e-30, 1e30)
#: the least ``basis_max``: a coefficient that passes the screen's range (|c_j| <= 1e30 / 1e-8) is finite in float32
BASIS_MAX_FLOOR = 1e-8
#: float32's unit roundoff
EPS32 = 2.0 ** -24


@jit(inline="always")
def _vertex_value(M, K, c, v):
    """The pmf at vertex ``v`` as ``_sphere`` computes it (the same sum in the same order)."""
    value = K.zero
    row = M.vertex_basis[v]
    for j in range(c.shape[0]):
        value += c[j] * row[j]
    return value


@partial(njit, cache=True, nogil=True, error_model="numpy", _nrt=False, fastmath={"reassoc"})
def _magnitudes(c, basis_max):
    """(sum_j |c_j| ``basis_max`` _j, sum_j c_j^2) in float64, summed in any order (vectorised;
    bounds need no particular rounding); NaN in, NaN out."""
    scale = 0.0
    squares = 0.0
    for j in range(c.shape[0]):
        x = np.float64(c[j])
        scale += abs(x) * basis_max[j]
        squares += x * x
    return scale, squares


@partial(njit, cache=True, nogil=True, error_model="numpy", _nrt=False)
def _at_least(values, n, cut):
    """(how many of ``values[:n]`` are >= ``cut``, the sum of their indices): branch-free, vectorised;
    with one such value the sum is its index."""
    count = np.int32(0)
    index = np.int32(0)
    for i in range(n):
        at = np.int32(values[i] >= cut)
        count += at
        index += at * np.int32(i)
    return count, index


@jit(inline="always")
def _max_in_cone(M, K, S, row, n):
    """detmax's choice within the cone of vertex ``row`` when the cone alone decides it: the vertex
    with the largest pmf (the lowest on ties, values as ``_sphere``'s) if that pmf is at least
    ``cutoff`` times an upper bound of the pmf on the whole sphere (|c| max_d |basis_d|,
    Cauchy-Schwarz), so that DIPY's relative threshold passes whatever the other vertices hold;
    else -1. The cone is screened in float32 (vectorised over its contiguous columns); only the
    vertices within twice the rounding bound (C + 4) eps32 sum_j |c_j| max_d |basis_jd| of the
    float32 maximum can be the maximum. When one vertex alone is, and its float32 value less the
    bound passes the threshold, it is chosen as it is (most steps); else those vertices are evaluated
    in the working precision."""
    c = S.c
    scale, squares = _magnitudes(c, M.basis_max)  # basis_max >= 1e-8: every |c_j| <= 1e38, finite in float32
    if not (scale >= SCREEN_RANGE[0] and scale <= SCREEN_RANGE[1]):
        return -1
    values = S.w
    basis = M.cone_basis[row]
    width = basis.shape[1]  # the cone's count padded with zero columns to a multiple of 8: whole vectors
    column_sums(basis, c, width, values)  # each coefficient rounded to float32
    top = _largest_of(values, width, values[0])  # the padding's zeros matter not: a largest value <= 0 is refused below
    rounding = (c.shape[0] + 4) * EPS32 * scale
    cut = np.float64(top) - 2.0 * rounding
    threshold = M.cutoff * (math.sqrt(squares) * M.basis_norm * (1.0 + 1e-4))
    count, only = _at_least(values, n, cut)
    if count == 1:
        low = np.float64(values[only]) - rounding  # the exact value is at least this
        if low > 0.0 and low >= threshold:
            return M.cone[row, only]
    best = K.f(-np.inf)
    chosen = -1
    for i in range(n):
        if values[i] >= cut:
            v = M.cone[row, i]
            value = _vertex_value(M, K, c, v)
            if value > best:
                best, chosen = value, v
    if not best > K.zero:
        return -1
    if best >= threshold:
        return chosen
    return -1


@jit
def _voxel_bound(cache, basis, basis_max, coeffs, pmf, voxel):
    """``_top_bound``'s terms of one voxel, computed once in float64 (``pmf`` (D,) work space) and
    kept in ``cache`` rounded upwards to float32 (threads that race write the same values): an upper
    bound of the pmf of the voxel's coefficients ``coeffs`` (C,) on every vertex of ``basis`` (C, D)
    (NaN for a voxel holding NaN), sum_j |c_j| ``basis_max`` _j, and the vertex of the largest value.
    (Arrays rather than the method tuple: this is called for up to eight voxels a step.)"""
    n = pmf.shape[0]
    for d in range(n):
        pmf[d] = 0.0
    q = 0.0
    for j in range(coeffs.shape[0]):
        cj, row = np.float64(coeffs[j]), basis[j]
        q += abs(cj) * basis_max[j]
        for d in range(n):
            pmf[d] += cj * np.float64(row[d])
    t = -np.inf
    peak = 0
    for d in range(n):
        if pmf[d] != pmf[d]:
            t = np.nan
            break
        if pmf[d] > t:
            t, peak = pmf[d], d
    t += 2.0 ** -40 * q  # the float64 sums' own rounding
    t = t * (1.0 + 2.0 ** -22) if t > 0.0 else t * (1.0 - 2.0 ** -22)  # float32 then rounds no lower
    cache[voxel, 2] = np.float32(peak)
    cache[voxel, 1] = np.float32(q * (1.0 + 2.0 ** -22))
    cache[voxel, 0] = np.float32(t)
    return np.float64(cache[voxel, 0]), np.float64(cache[voxel, 1])


@jit
def _top_bound(cache, basis, basis_max, K, work, vol, px, py, pz):
    """An upper bound of the largest pmf value ``_sphere`` computes at a point inside the image: the
    pmf is linear in the interpolated coefficients, so the exact values are at most sum_k w_k T_k
    over the eight corners (T_k the voxel's maximum, w_k the weights ``sample`` uses), and the
    rounding of the interpolation and of the sums adds at most (C + 16) eps32 sum_k w_k Q_k
    (Q_k = sum_j |c_kj| max_d |basis_jd|). NaN when a corner holds NaN. ``cache``, ``basis``,
    ``basis_max``: the method's ``voxel_top``, ``basis``, ``basis_max``; ``work`` (D,) float64."""
    inside, i0, i1, j0, j1, k0, k1, fx, fy, fz, vx, vy, vz = locate(vol, K, px, py, pz)
    ny, nz = vol.dims[1], vol.dims[2]
    values = vol.values
    top = 0.0
    spread = 0.0
    for corner in range(8):
        w = np.float64(corner_weight(vol, K, corner, fx, fy, fz))
        if w == 0.0:
            continue
        voxel = corner_index(corner, i0, i1, j0, j1, k0, k1, ny, nz)
        t, q = np.float64(cache[voxel, 0]), np.float64(cache[voxel, 1])
        if not (t == t and q == q):
            t, q = _voxel_bound(cache, basis, basis_max, values[voxel], work, voxel)
        top += w * t
        spread += w * q
    return top + (values.shape[1] + 16) * EPS32 * 1.001 * spread


@jit
def _corner_peaks(M, K, S, vol, px, py, pz):
    """The largest pmf (as ``_sphere`` computes it) among the vertices where the eight corners' own
    pmfs peak (after ``_top_bound`` at the same point): a lower bound of the whole sphere's largest."""
    inside, i0, i1, j0, j1, k0, k1, fx, fy, fz, vx, vy, vz = locate(vol, K, px, py, pz)
    ny, nz = vol.dims[1], vol.dims[2]
    low = K.zero
    for corner in range(8):
        if corner_weight(vol, K, corner, fx, fy, fz) == K.zero:
            continue
        v = np.int64(M.voxel_top[corner_index(corner, i0, i1, j0, j1, k0, k1, ny, nz), 2])
        low = max(low, _vertex_value(M, K, S.c, v))
    return low


@jit(inline="always")
def _undecided(K, values, n, below, above):
    """Whether a cone value lies between the lowest and the highest possible threshold (a branch-free
    count, vectorised)."""
    count = np.int32(0)
    for i in range(n):
        value = values[i]
        count += np.int32((value > K.zero) & (value >= below) & (np.float64(value) < above))
    return count > 0


@partial(njit, cache=True, nogil=True, error_model="numpy", _nrt=False, fastmath={"reassoc", "nnan"})
def _gumbel_bounds(values, draws, upper, n, below):
    """Bounds of each admissible vertex's Gumbel-max score p / -log(u) (p > 0 and p >= ``below``), as
    1 - u <= -log u <= (1 - u) / u gives them: the upper bound p / (1 - u) into ``upper`` (float32,
    -1 for the others), and the largest lower bound p u / (1 - u), shrunk by 1e-6 for rounding, as
    the result: a vertex whose upper bound lies below it cannot win. One vectorised pass (the
    inputs hold no NaN)."""
    floor = 0.0
    for i in range(n):
        p = np.float64(values[i])
        u = draws[i]
        admissible = p > 0.0 and p >= below
        ratio = p / (1.0 - u)
        upper[i] = np.float32(ratio) if admissible else np.float32(-1.0)
        floor = max(floor, ratio * u if admissible else 0.0)
    return floor * (1.0 - 1e-6)


@jit(inline="always")
def _draw_in_cone(M, K, S, vol, px, py, pz, row, n, seed_id, branch, step):
    """prob's draw within the cone of vertex ``row`` when the cone alone decides it, else -1. The
    relative threshold needs the pmf's largest value on the whole sphere; it lies between the cone's
    largest (or the largest at the corners' peaks) and ``_top_bound``: when no cone vertex falls
    between ``cutoff`` times the one and ``cutoff`` times the other, the cone's values (from its own
    columns, each the same sum as ``_sphere``'s) decide the draw exactly as the whole sphere would."""
    values = S.a
    basis = M.cone_basis[row]  # the cone's columns, zero-padded: the padding adds nothing to the largest
    low = _sphere(basis, K, S.c, values[:basis.shape[1]])  # the whole sphere's largest is at least this
    if not low == low:
        return -1
    high = _top_bound(M.voxel_top, M.basis, M.basis_max, K, S.d, vol, px, py, pz)
    if not high == high:
        return -1
    below = M.cutoff * low  # the threshold can be no lower than this, no higher than ``above``
    above = np.float64(M.cutoff) * max(high, 0.0) * (1.0 + 1e-6)
    if _undecided(K, values, n, below, above):  # the largest may lie outside the cone: try the corners' peaks
        below = M.cutoff * max(low, _corner_peaks(M, K, S, vol, px, py, pz))
        if _undecided(K, values, n, below, above):
            return -1
    key = stream_key(M.rng_seed, seed_id, ((step + 1) << 16) + branch)
    draws = S.d
    cone = M.cone[row]
    for i in range(n):  # every cone vertex's draw first: a loop without branches, vectorised
        draws[i] = uniform(key, cone[i])
    upper = S.w
    floor = _gumbel_bounds(values, draws, upper, n, np.float64(below))
    best = -np.inf
    chosen = -1
    for i in range(n):  # ``next_direction``'s draw over the vertices that can win (most are skipped here)
        if np.float64(upper[i]) * (1.0 + 1e-6) < floor:
            continue
        value = values[i]
        if not (value > K.zero and value >= below):
            continue
        u = draws[i]
        if np.float64(value) / (1.0 - u) <= best:
            continue
        score = np.float64(value) / -math.log(u)
        if score > best:
            best, chosen = score, cone[i]
    return chosen


@jit(inline="always")
def next_direction(M, K, S, vol, px, py, pz, dx, dy, dz, seed_id, branch, step):
    """The chosen vertex, flipped to continue forwards; LOW_SIGNAL when no vertex is admissible,
    HIGH_CURVATURE when only vertices outside the cone would be, OUTSIDE_IMAGE outside the image.

    Stepping from a vertex, the cone's vertices alone usually decide (``_max_in_cone``,
    ``_draw_in_cone``: 99.99% and ~88% of steps on phantom_cross's FOD); otherwise the whole
    sphere is evaluated. Both give the same vertex."""
    inside = sample(vol, K, px, py, pz, S.c)
    row = _cone_row(M.lookup, M.vertices, K, dx, dy, dz)
    pmf = S.a
    n = M.cone_count[row] if row >= 0 else pmf.shape[0]
    if inside and row >= 0:
        if M.sample:
            chosen = _draw_in_cone(M, K, S, vol, px, py, pz, row, n, seed_id, branch, step)
        else:
            chosen = _max_in_cone(M, K, S, row, n)
        if chosen >= 0:
            ux, uy, uz = _forwards(M, K, chosen, dx, dy, dz)
            return CONTINUE, ux, uy, uz
    top = _sphere(M.basis, K, S.c, pmf)
    floor = M.cutoff * top
    cone = M.cone[max(row, 0)]
    key = stream_key(M.rng_seed, seed_id, ((step + 1) << 16) + branch) if M.sample else 0
    best = -np.inf
    chosen = -1
    for i in range(n):
        v = cone[i] if row >= 0 else i
        if row < 0 and _outside_cone(M, dx, dy, dz, v):
            continue
        value = pmf[v]
        if M.sample:  # Gumbel-max: argmax log p + G = argmax p / E, E = -log(u) exponential
            if not (value > K.zero and value >= floor):
                continue
            u = uniform(key, v)
            if np.float64(value) / (1.0 - u) <= best:  # E >= 1 - u: this vertex cannot win, skip the log
                continue
            score = np.float64(value) / -math.log(u)
        else:
            score = np.float64(value)
        if score > best:
            best, chosen = score, v
    ok = chosen >= 0 if M.sample else (best > 0.0 and best >= floor)
    ux, uy, uz = _forwards(M, K, chosen, dx, dy, dz)
    if not inside:
        return OUTSIDE_IMAGE, ux, uy, uz
    if not ok:
        return (HIGH_CURVATURE if top > K.zero else LOW_SIGNAL), ux, uy, uz
    return CONTINUE, ux, uy, uz


@jit
def reverse(M, K, sx, sy, sz, fx, fy, fz):
    """DIPY's second-half start: F[0] - F[1] normalised in voxel coordinates (the reversed first step
    through the SH frame and the voxel sizes), or the reversed seed direction without a first step."""
    if fx != fx:
        return -sx, -sy, -sz
    r, vs = M.rotation, M.voxel_size
    bx = -(fx * r[0, 0] + fy * r[1, 0] + fz * r[2, 0]) / vs[0]
    by = -(fx * r[0, 1] + fy * r[1, 1] + fz * r[2, 1]) / vs[1]
    bz = -(fx * r[0, 2] + fy * r[1, 2] + fz * r[2, 2]) / vs[2]
    n = K.f(math.sqrt(bx * bx + by * by + bz * bz))
    bx, by, bz = bx / n, by / n, bz / n
    return (bx * r[0, 0] + by * r[0, 1] + bz * r[0, 2], bx * r[1, 0] + by * r[1, 1] + bz * r[1, 2],
            bx * r[2, 0] + by * r[2, 1] + bz * r[2, 2])


@jit
def seed_peaks(M, K, S, vol, px, py, pz, out):
    """DIPY's ``peak_directions`` (relative peak threshold, minimum separation, antipodes identified)
    of the pmf at a seed, thresholded like the getter: the peak vertices into ``out``, their count.
    Local maxima are >= every neighbour and > one; none (a flat pmf) gives vertex 0, as DIPY."""
    _, top = _pmf(M, K, S, vol, px, py, pz)
    pmf = S.a
    n_vertices = pmf.shape[0]
    floor = M.cutoff * top
    values = S.d
    state = S.b  # -1 below a neighbour, 0 equal to all so far, 1 a maximum candidate
    low = np.inf
    for d in range(n_vertices):
        values[d] = 0.0 if pmf[d] < floor else np.float64(pmf[d])
        state[d] = 0
        low = min(low, values[d])
    for e in range(M.edges.shape[0]):
        i, j = M.edges[e, 0], M.edges[e, 1]
        if values[i] < values[j]:
            state[i] = -1
            if state[j] == 0:
                state[j] = 1
        elif values[i] > values[j]:
            if state[i] == 0:
                state[i] = 1
            state[j] = -1
        elif values[i] != values[i] or values[j] != values[j]:
            out[0] = 0
            return 1
    count = 0
    for d in range(n_vertices):  # maxima by value, descending; equal values keep index order
        if state[d] > 0:
            hole = count
            while hole > 0 and values[d] > values[out[hole - 1]]:
                if hole < out.shape[0]:
                    out[hole] = out[hole - 1]
                hole -= 1
            if hole < out.shape[0]:
                out[hole] = d
            count += 1
    if count == 0:
        out[0] = 0
        return 1
    count = min(count, out.shape[0])
    if count == 1:
        return 1
    low = max(low, 0.0)
    threshold = M.peak_threshold * (values[out[0]] - low)
    kept = 1  # search_descending: the first value below the threshold, never before 1
    while kept < count and values[out[kept]] - low >= threshold:
        kept += 1
    unique = 0
    for i in range(kept):
        a = M.sphere_vertices[out[i]]
        separate = True
        for j in range(unique):
            b = M.sphere_vertices[out[j]]
            if abs(a[0] * b[0] + a[1] * b[1] + a[2] * b[2]) > M.cos_separation:
                separate = False
                break
        if separate:
            out[unique] = out[i]
            unique += 1
    return unique


@partial(njit, cache=True, nogil=True, error_model="numpy", _nrt=False, fastmath={"reassoc", "contract"})
def _relaxation(pmf, width, vx, vy, vz, dx, dy, dz, cutoff, temperature, sample, draws, bx, by, bz, y):
    """The relaxation's backward from the candidates' pmf (those outside the support at most 0):
    ``y`` receives pmf_bar for the cotangent b of the direction; False (``y`` zero) when the support
    is empty. In the precision of the candidates' arrays (``pmf``, their RAS coordinates (vx, vy,
    vz), ``y``), by passes without branches (vectorised; sums in any order); ``draws`` (float64)
    the candidates' uniforms (prob), overwritten.

    With scores s_i = pmf_i f_i (f_i = 1 / -log u_i for prob, 1 for detmax) and r_i = s_i / max s
    over the support, the weights are y_i = r_i ** (1 / T) (1 / T a whole number: by squaring, no
    logarithm or exponential per vertex), and pmf_bar_i = r_i ** (1 / T - 1) (f_i / max s) (y_bar_i
    - y . y_bar) / (T sum y), without a division per vertex."""
    f = pmf.dtype.type
    zero, one = f(0.0), f(1.0)
    inverse = np.int64(round(1.0 / temperature))
    top = _largest_of(pmf, width, zero)  # a step the forward took has no NaN in its pmf
    floor = f(cutoff) * top
    if sample:  # scores p / -log u; a vertex whose upper bound p / (1 - u) lies 2 ** (50 T) times below
        for i in range(width):  # the largest lower bound p u / (1 - u) weighs < 2 ** -50: left out
            p = pmf[i]
            y[i] = p / (1.0 - draws[i]) if (p > zero) & (p >= floor) else -1.0
        low = 0.0
        for i in range(width):
            low = max(low, y[i] * draws[i])
        low *= 2.0 ** (-50.0 / inverse)
        for i in range(width):
            factor = 1.0 / -log_positive(draws[i])
            y[i] = pmf[i] * factor if (y[i] > zero) & (y[i] >= low) else zero
            draws[i] = factor
        best = _largest_of(y, width, zero)
    else:
        for i in range(width):
            p = pmf[i]
            y[i] = p if (p > zero) & (p >= floor) else zero
        best = top if cutoff <= 1.0 else zero  # the largest pmf is the support's largest score
    # no support, or a largest score so small (subnormal) that 1 / (T max s) would overflow
    if not best >= (2.0 ** -120 if pmf.itemsize == 4 else 2.0 ** -1000):
        for i in range(width):
            y[i] = zero
        return False
    power = inverse - 1  # r ** (1 / T - 1): a factor r ** (2 ** k) per bit k
    b0, b1, b2 = (power & 1) != 0, (power & 2) != 0, (power & 4) != 0
    b3, b4, b5 = (power & 8) != 0, (power & 16) != 0, (power & 32) != 0
    scale = one / best
    ex, ey, ez = f(dx), f(dy), f(dz)
    total = sx = sy = sz = zero  # sum_i y_i and sum_i y_i s_i v_i, s_i the sign of v_i along d
    for i in range(width):
        r = y[i] * scale
        q = r
        a = q if b0 else one
        q *= q
        a = a * q if b1 else a
        q *= q
        a = a * q if b2 else a
        q *= q
        a = a * q if b3 else a
        q *= q
        a = a * q if b4 else a
        q *= q
        a = a * q if b5 else a
        a = a if r > zero else zero
        weight = a * r
        total += weight
        weight = weight if (ex * vx[i] + ey * vy[i]) + ez * vz[i] > zero else -weight
        sx += weight * vx[i]
        sy += weight * vy[i]
        sz += weight * vz[i]
        y[i] = a
    total, sx, sy, sz = np.float64(total), np.float64(sx), np.float64(sy), np.float64(sz)
    norm = math.sqrt(sx * sx + sy * sy + sz * sz)
    if not norm >= 1e-300 * total:
        for i in range(width):
            y[i] = zero
        return True
    along = (bx * sx + by * sy + bz * sz) / norm
    k = total / norm  # d_bar = (b - (b . soft) soft) / |soft before normalising|
    gx, gy, gz = (bx - along * sx / norm) * k, (by - along * sy / norm) * k, (bz - along * sz / norm) * k
    mean = f((gx * sx + gy * sy + gz * sz) / total)  # y . y_bar: zero but for rounding (d_bar is normal to soft)
    factor = f(1.0 / (np.float64(best) * total * temperature))
    gx, gy, gz = f(gx), f(gy), f(gz)
    for i in range(width):  # softmax's backward, y_bar_i = s_i v_i . d_bar
        along = gx * vx[i] + gy * vy[i] + gz * vz[i]
        bar = y[i] * factor * ((along if (ex * vx[i] + ey * vy[i]) + ez * vz[i] > zero else -along) - mean)
        y[i] = bar * f(draws[i]) if sample else bar
    return True


@partial(njit, cache=True, nogil=True, error_model="numpy", _nrt=False)
def _relaxed_vjp(c, basis, vx, vy, vz, width, dx, dy, dz, cos_max, inclusive, test_cone, cutoff, temperature,
                 sample, draws, bx, by, bz, pmf, y, cbar):
    """``sample_vjp`` over the candidate vertices: ``basis`` (C, >= width) their basis columns, (vx, vy,
    vz) their RAS coordinates (zero columns add nothing), ``draws`` their uniforms (prob); with
    ``test_cone``, those outside the cone of d are dropped; ``pmf``, ``y`` work space."""
    column_sums(basis, c, width, pmf)
    if test_cone:
        for i in range(width):
            pmf[i] = 0.0 if _outside(abs(dx * vx[i] + dy * vy[i] + dz * vz[i]), cos_max, inclusive) else pmf[i]
    ok = _relaxation(pmf, width, vx, vy, vz, dx, dy, dz, cutoff, temperature, sample, draws, bx, by, bz, y)
    row_sums(basis, y, width, cbar)  # c_bar = basis . pmf_bar
    return ok


@jit
def _cone_draws(M, seed_id, branch, step, row, width, draws):
    """prob's uniforms of the step's draw for the columns of cone ``row`` (0.5 in the padding), or
    for every vertex when ``row`` < 0."""
    key = stream_key(M.rng_seed, seed_id, ((step + 1) << 16) + branch)
    if row >= 0:
        cone = M.cone[row]
        for i in range(cone.shape[0]):
            draws[i] = uniform(key, cone[i])
        for i in range(cone.shape[0], width):
            draws[i] = 0.5
    else:
        for i in range(width):
            draws[i] = uniform(key, i)


@jit
def sample_vjp(M, K, W, c, dx, dy, dz, bx, by, bz, seed_id, branch, step, cbar):
    """The backward of the relaxation ``methods.pmf`` defines for the vertex choice: ``cbar`` (C,) =
    u_bar . d soft / dc for soft = normalize(sum_i y_i s_i v_i), y = softmax((log pmf_i + g_i) / T)
    over the relaxation's support (the cone around the previous direction (dx, dy, dz), the pmf at
    least ``cutoff`` times the cone's largest), s_i the sign along that direction, g the Gumbel noise
    of the step's draw (prob) or 0 (detmax). When d is a vertex (to float32 rounding) its cone's
    columns are the candidates, else every vertex is, tested against the cone. In the precision of
    the columns of ``M`` (a ``PmfAdjoint``); False when the support is empty."""
    row = cone_row(M, dx, dy, dz)
    if row >= 0:
        basis, vertices, width = M.cone_basis[row], M.cone_vertices[row], M.cone_basis.shape[2]
    else:
        basis, vertices, width = M.basis, M.vertex_columns, M.basis.shape[1]
    if M.sample:
        _cone_draws(M, seed_id, branch, step, row, width, W.d)
    return _relaxed_vjp(c, basis, vertices[0], vertices[1], vertices[2], width, dx, dy, dz, M.cos_max, M.inclusive,
                        row < 0, M.cutoff, M.temperature, M.sample, W.d, bx, by, bz, W.a, W.b, cbar)


@jit(inline="always")
def cone_row(M, dx, dy, dz):
    """The vertex whose cone table serves the backward of a step from direction d (a vertex, also
    once rounded to float32 as prob's steps are), or -1: every vertex, tested against the cone."""
    return looked_up(M, dx, dy, dz, 1e-6)[0]


@jit
def batch_sample_vjp(M, W, cs, count, row, directions, cotangents, seed_id, branch, steps, pmf, y, cbars):
    """``sample_vjp`` of ``count`` (<= ``dense.BATCH``) steps from the same cone ``row`` (>= 0): their
    samples ``cs`` (B, C), previous directions and cotangents (B, 3) and step numbers; c_bar into the
    rows of ``cbars`` (count, C), the cone's columns read once for all (``pmf``, ``y`` (B, D) work
    space). A step whose support is empty gets -1 in ``steps``."""
    basis, vertices, width = M.cone_basis[row], M.cone_vertices[row], M.cone_basis.shape[2]
    batch_column_sums(basis, cs, count, width, pmf)
    for q in range(count):
        if M.sample:
            _cone_draws(M, seed_id, branch, steps[q], row, width, W.d)
        d, b = directions[q], cotangents[q]
        if not _relaxation(pmf[q], width, vertices[0], vertices[1], vertices[2], d[0], d[1], d[2], M.cutoff,
                           M.temperature, M.sample, W.d, b[0], b[1], b[2], y[q]):
            steps[q] = -1
    batch_row_sums(basis, y, count, width, cbars)
