"""DIPY's pmf direction getters in a kernel: the FOD on the vertices of a discrete sphere, the
relative threshold, the ``max_angle`` cone; ``detmax`` takes the largest admissible vertex, ``prob``
draws one by Gumbel-max from the counter-based stream of ``methods.prob``. ``seed_peaks`` is DIPY's
``peak_directions`` at seeds given without a direction (one streamline per peak)."""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from ..sphere import LOOKUP_CELLS
from .common import CONTINUE, HIGH_CURVATURE, LOW_SIGNAL, OUTSIDE_IMAGE, jit, sample, stream_key, uniform

#: cutoff (relative pmf threshold), cos(max_angle); ``inclusive`` cone |cos| >= cos_max (prob) or >
#: (detmax); ``sample``: Gumbel-max draw (prob) instead of the maximum; ``rng_seed``; ``basis``
#: (C, D) SH basis on the vertices, the largest norm of a vertex's basis ``basis_norm``, and for
#: detmax each cone's basis columns ``cone_basis`` (D, C, K); ``vertices`` (D, 3) in RAS; the cone table (D, K) with counts,
#: and the vertex lookup grid (empty: none) of ``sphere``; ``rotation`` SH frame -> RAS and
#: ``voxel_size`` (DIPY's second-half start); for ``seed_peaks``: ``sphere_vertices`` (D, 3) float64
#: in the SH frame and ``edges`` (E, 2), DIPY's relative peak threshold and cos(minimum separation)
PmfData = namedtuple("PmfData", "cutoff cos_max inclusive sample rng_seed basis basis_norm cone_basis vertices cone "
                                "cone_count lookup "
                                "rotation voxel_size sphere_vertices edges peak_threshold cos_separation")
#: the backward's float64 data: ``PmfData``'s choice rules, ``basis`` (C, D) and its rows per vertex
#: ``vertex_basis`` (D, C), ``vertices`` (D, 3) RAS, the ``temperature`` of the relaxation the
#: backward pass differentiates (``methods.pmf``), and as ``PmfData`` the cone table, each cone's
#: basis columns ``cone_basis`` (D, C, K) and the vertex lookup grid of the RAS vertices
PmfAdjoint = namedtuple("PmfAdjoint", "cutoff cos_max inclusive sample rng_seed basis vertex_basis vertices temperature "
                                      "cone cone_count cone_basis lookup")

#: at most this many peaks at a seed: directions 25 degrees apart, antipodes identified, fit ~42
MAX_PEAKS = 48


@jit
def _sphere(M, K, c, pmf):
    """The pmf on every vertex (``c @ basis``, axpys over the vertices: vectorised, each sum in
    coefficient order) into ``pmf``; returns its largest value (NaN if any is, at least 0)."""
    n = pmf.shape[0]
    for d in range(n):
        pmf[d] = K.zero
    for j in range(c.shape[0]):
        cj, row = c[j], M.basis[j]
        for d in range(n):
            pmf[d] += cj * row[d]
    top = K.zero
    for d in range(n):
        if pmf[d] != pmf[d]:
            return K.f(np.nan)
        if pmf[d] > top:
            top = pmf[d]
    return top


@jit
def _pmf(M, K, S, vol, px, py, pz):
    """The pmf (D,) at a point into ``S.a`` and the largest value (NaN if any is, at least 0)."""
    inside = sample(vol, K, px, py, pz, S.c)
    return inside, _sphere(M, K, S.c, S.a)


@jit
def _cone_row(M, K, dx, dy, dz):
    """The row of the cone table when (dx, dy, dz) is exactly a vertex or its antipode, else -1."""
    if M.lookup.shape[0] == 0:
        return -1
    g = LOOKUP_CELLS
    i = min(max(np.int64(math.floor((dx + K.one) * K.cells_half)), 0), g - 1)
    j = min(max(np.int64(math.floor((dy + K.one) * K.cells_half)), 0), g - 1)
    k = min(max(np.int64(math.floor((dz + K.one) * K.cells_half)), 0), g - 1)
    v = M.lookup[(i * g + j) * g + k]
    if v < 0:
        return -1
    a = M.vertices[v]
    if (a[0] == dx and a[1] == dy and a[2] == dz) or (a[0] == -dx and a[1] == -dy and a[2] == -dz):
        return v
    return -1


@jit
def looked_up(M, dx, dy, dz, tolerance):
    """(vertex, cos) of the vertex whose lookup cell holds the unit direction, when |cos| >= 1 -
    ``tolerance`` (within 0.26 degrees for 1e-5: at most one vertex of a DIPY sphere), else (-1, 0)."""
    if M.lookup.shape[0] == 0:
        return -1, 0.0
    g = LOOKUP_CELLS
    i = min(max(np.int64(math.floor((dx + 1.0) * (g * 0.5))), 0), g - 1)
    j = min(max(np.int64(math.floor((dy + 1.0) * (g * 0.5))), 0), g - 1)
    k = min(max(np.int64(math.floor((dz + 1.0) * (g * 0.5))), 0), g - 1)
    v = M.lookup[(i * g + j) * g + k]
    if v < 0:
        return -1, 0.0
    a = M.vertices[v]
    cos = dx * a[0] + dy * a[1] + dz * a[2]
    return (v, cos) if abs(cos) >= 1.0 - tolerance else (-1, 0.0)


@jit(inline="always")
def _outside_cone(M, dx, dy, dz, v):
    a = M.vertices[v]
    cos = abs((dx * a[0] + dy * a[1]) + dz * a[2])
    return (cos < M.cos_max) if M.inclusive else (cos <= M.cos_max)


@jit
def _best_in_cone(M, K, c, row, n, values):
    """detmax's choice among the cone of vertex ``row`` alone, from the cone's own basis columns
    (contiguous, so the sums vectorise; each in coefficient order, as ``_sphere``'s): (largest pmf,
    its vertex; the lowest vertex on ties)."""
    basis = M.cone_basis[row]
    width = basis.shape[1]  # the cone's count padded with zero columns to a multiple of 8: whole vectors
    for i in range(width):
        values[i] = K.zero
    for j in range(c.shape[0]):
        cj, column = c[j], basis[j]
        for i in range(width):
            values[i] += cj * column[i]
    best = K.f(-np.inf)
    chosen = -1
    for i in range(n):
        if values[i] > best:
            best, chosen = values[i], i
    return best, M.cone[row, max(chosen, 0)]


@jit(inline="always")
def _forwards(M, K, v, dx, dy, dz):
    a = M.vertices[max(v, 0)]
    ux, uy, uz = a[0], a[1], a[2]
    if not (ux * dx + uy * dy) + uz * dz > K.zero:  # DIPY: v if v . d > 0 else -v
        ux, uy, uz = -ux, -uy, -uz
    return ux, uy, uz


@jit
def next_direction(M, K, S, vol, px, py, pz, dx, dy, dz, seed_id, branch, step):
    """The chosen vertex, flipped to continue forwards; LOW_SIGNAL when no vertex is admissible,
    HIGH_CURVATURE when only vertices outside the cone would be, OUTSIDE_IMAGE outside the image.

    detmax, stepping from a vertex, first evaluates the cone's vertices only: when their maximum is at
    least ``cutoff`` times an upper bound of the pmf on the whole sphere (|c| max_d |basis_d|,
    Cauchy-Schwarz), it passes DIPY's relative threshold whatever the other vertices hold (99.99% of
    steps on phantom_cross's FOD); otherwise, and always for prob, the whole sphere is evaluated."""
    inside = sample(vol, K, px, py, pz, S.c)
    row = _cone_row(M, K, dx, dy, dz)
    pmf = S.a
    n = M.cone_count[row] if row >= 0 else pmf.shape[0]
    if not M.sample and row >= 0:
        best, chosen = _best_in_cone(M, K, S.c, row, n, pmf)
        if inside and best > K.zero:
            squares = 0.0
            for j in range(S.c.shape[0]):
                squares += np.float64(S.c[j]) * np.float64(S.c[j])
            if best >= M.cutoff * (math.sqrt(squares) * M.basis_norm * (1.0 + 1e-4)):
                ux, uy, uz = _forwards(M, K, chosen, dx, dy, dz)
                return CONTINUE, ux, uy, uz
    top = _sphere(M, K, S.c, pmf)
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


@jit
def sample_vjp(M, K, W, c, dx, dy, dz, bx, by, bz, seed_id, branch, step, cbar):
    """The backward of the relaxation ``methods.pmf`` defines for the vertex choice: ``cbar`` (C,) =
    u_bar . d soft / dc for soft = normalize(sum_i y_i s_i v_i), y = softmax((log pmf_i + g_i) / T)
    over the relaxation's support (the cone around the previous direction (dx, dy, dz), the pmf at
    least ``cutoff`` times the cone's largest), s_i the sign along that direction, g the Gumbel noise
    of the step's draw (prob) or 0 (detmax). Only the cone's vertices are evaluated. In float64
    (``M`` a ``PmfAdjoint``); False when the support is empty."""
    n = M.vertices.shape[0]
    pmf, y, at = W.a[:n], W.b[:n], W.d[:n]  # compacted: pmf and vertex (as float64) of each cone vertex
    count = 0
    top = 0.0
    row = looked_up(M, dx, dy, dz, 1e-9)[0]
    if row >= 0:  # the previous direction is a vertex: its cone's columns, axpys in coefficient order
        basis = M.cone_basis[row]
        count = M.cone_count[row]
        for i in range(basis.shape[1]):
            pmf[i] = 0.0
        for j in range(c.shape[0]):
            cj, column = c[j], basis[j]
            for i in range(basis.shape[1]):
                pmf[i] += cj * column[i]
        for i in range(count):
            at[i] = M.cone[row, i]
            top = max(top, pmf[i])
    else:
        for d in range(n):  # test every vertex; each value a sum in coefficient order
            if _outside_cone(M, dx, dy, dz, d):
                continue
            vertex_row = M.vertex_basis[d]
            value = 0.0
            for j in range(c.shape[0]):
                value += c[j] * vertex_row[j]
            pmf[count], at[count] = value, d
            top = max(top, value)
            count += 1
    floor = M.cutoff * top  # a step the forward took has no NaN in its pmf
    key = stream_key(M.rng_seed, seed_id, ((step + 1) << 16) + branch) if M.sample else 0
    best = -np.inf
    support = 0
    for k in range(count):  # the support (compacted in place) and its logits
        if not (pmf[k] > 0.0 and pmf[k] >= floor):
            continue
        d = np.int64(at[k])
        logit = math.log(pmf[k])
        if M.sample:
            logit -= math.log(-math.log(uniform(key, d)))
        pmf[support], at[support], y[support] = pmf[k], at[k], logit / M.temperature
        best = max(best, y[support])
        support += 1
    for j in range(c.shape[0]):
        cbar[j] = 0.0
    if support == 0:
        return False
    total = sx = sy = sz = 0.0
    for k in range(support):
        y[k] = math.exp(y[k] - best)
        total += y[k]
    for k in range(support):
        y[k] /= total
        a = M.vertices[np.int64(at[k])]
        sign = 1.0 if (dx * a[0] + dy * a[1]) + dz * a[2] > 0.0 else -1.0
        sx += y[k] * sign * a[0]
        sy += y[k] * sign * a[1]
        sz += y[k] * sign * a[2]
    norm = math.sqrt(sx * sx + sy * sy + sz * sz)
    if norm < 1e-300:
        return True
    sx, sy, sz = sx / norm, sy / norm, sz / norm
    along = bx * sx + by * sy + bz * sz
    gx, gy, gz = (bx - along * sx) / norm, (by - along * sy) / norm, (bz - along * sz) / norm  # d_bar
    mean = 0.0
    for k in range(support):  # y_bar . y, with y_bar_k = sign_k v_k . d_bar
        a = M.vertices[np.int64(at[k])]
        sign = 1.0 if (dx * a[0] + dy * a[1]) + dz * a[2] > 0.0 else -1.0
        mean += y[k] * sign * (gx * a[0] + gy * a[1] + gz * a[2])
    for k in range(support):  # the softmax's backward: pmf_bar = y (y_bar - y . y_bar) / (T pmf)
        d = np.int64(at[k])
        a = M.vertices[d]
        sign = 1.0 if (dx * a[0] + dy * a[1]) + dz * a[2] > 0.0 else -1.0
        yd = y[k] * (sign * (gx * a[0] + gy * a[1] + gz * a[2]) - mean) / (M.temperature * pmf[k])
        vertex_row = M.vertex_basis[d]  # cbar = basis . pmf_bar: axpys over the support's rows
        for j in range(c.shape[0]):
            cbar[j] += vertex_row[j] * yd
    return True
