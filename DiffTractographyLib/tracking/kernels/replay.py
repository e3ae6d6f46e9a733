"""The backward pass of a kernel run, by replay of its recorded points (``../shared/docs/ENGINE.md``).

Each step of a half-streamline is ``p[k+1] = p[k] + s U(F(p[k]), d[k])``: F samples the field
(trilinear in the position), U is the method's direction and d[k] the previous direction, which
only selects (the peak the search starts from, the eigenvector's sign, the cone) and carries no
gradient. The adjoint runs from the last point kept back to the seed:
``lambda[k] = dL/dp[k] + lambda[k+1] + dU/dp[k]' s lambda[k+1]``, and the step's vector-Jacobian
product with cotangent ``s lambda[k+1]`` gives the sample's cotangent c_bar (``sample_vjp`` of
the method family: closed forms in float64, pmf's relaxation in its columns' precision) and from it
the position's, ``sum_corners (c_bar . values_corner) dw_corner/dp``. RK4 chains through its four
stage points and the normalisation (the stage directions are recomputed with the forward's
arithmetic). Every step records its cell, corner weights and c_bar into a sink: on the CPU
``Records`` (per-step rows that ``scatter`` adds to the field's gradient without write conflicts),
on CUDA ``kernels.cuda``'s sink, which adds each step to the gradient at once with atomic additions.
Where U reads the field at a detached position (pmf: dU/dp = 0), every lambda is a suffix sum of
dL/dp and the steps' backwards are independent: on the CPU, consecutive steps from one cone go to
the method's backward together (``replay_batched_half``).

Previous directions are the point differences (the forward's step directions to rounding; detmax
and prob snap them to their vertex), so nothing beyond the points is stored by the forward.
"""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from . import pmf, sdstream, tensordet
from .common import Scratch, corner_rows, corner_weight, jit, locate
from .dense import BATCH
from .rows import stage_direction

parallel_jit = njit(cache=True, nogil=True, parallel=True, error_model="numpy")

#: work arrays of the backward: the sample ``c`` (C,) and ``d`` in float64, method work ``a``, ``b`` in
#: the method's working precision (that of its c_bar)
Adjoint = namedtuple("Adjoint", "c a b d")
#: the recorded run: points (P, 3), per streamline offsets (S + 1,), lengths, points before the
#: seed, each half's start direction (S, 2, 3), seed ids and peak numbers
Run = namedtuple("Run", "points offsets lengths before half_starts seed_ids peaks")
#: the CPU's sink: per recorded step its cell (the flat index of its first corner, -1 for none),
#: corner weights (8,) float64 and c_bar (C,) in the method's working precision
Records = namedtuple("Records", "cells weights cbars")
#: a group of up to ``dense.BATCH`` steps replayed together (``replay_batched_half``): their samples
#: (B, C) float64, the method's work (B, D) twice, previous directions and cotangents (B, 3), step numbers
#: and cells (B,)
Batch = namedtuple("Batch", "cs pmf y directions cotangents steps cells")


# -- where a step's records go -----------------------------------------------------------------------
def buffers(sink, at):
    """The (c_bar, corner weights) arrays the step recorded at ``at`` writes."""


@overload(buffers, jit_options={"cache": True})
def _buffers(sink, at):
    if isinstance(sink, types.BaseNamedTuple) and sink.instance_class is Records:
        return lambda sink, at: (sink.cbars[at], sink.weights[at])


def deposit(sink, at, cell):
    """Hand the step recorded at ``at`` (its buffers written, ``cell`` its first corner or -1) to the sink."""


@overload(deposit, jit_options={"cache": True})
def _deposit(sink, at, cell):
    if isinstance(sink, types.BaseNamedTuple) and sink.instance_class is Records:
        def impl(sink, at, cell):
            sink.cells[at] = cell
        return impl


# -- the method's backward, chosen by the type of its data ------------------------------------------
def sample_vjp(M, K, W, c, dx, dy, dz, ux, uy, uz, bx, by, bz, seed_id, branch, step, cbar):
    """c_bar (C,) of the direction at a sample ``c`` for the cotangent b (RAS), given the previous
    direction d and the direction u the forward took; False where the backward is undefined."""


@overload(sample_vjp, jit_options={"cache": True})
def _sample_vjp(M, K, W, c, dx, dy, dz, ux, uy, uz, bx, by, bz, seed_id, branch, step, cbar):
    kind = M.instance_class
    if kind is pmf.PmfAdjoint:
        def impl(M, K, W, c, dx, dy, dz, ux, uy, uz, bx, by, bz, seed_id, branch, step, cbar):
            return pmf.sample_vjp(M, K, W, c, dx, dy, dz, bx, by, bz, seed_id, branch, step, cbar)
    elif kind is sdstream.SDStreamAdjoint:
        def impl(M, K, W, c, dx, dy, dz, ux, uy, uz, bx, by, bz, seed_id, branch, step, cbar):
            return sdstream.sample_vjp(M, K, W, c, ux, uy, uz, bx, by, bz, cbar)
    else:
        def impl(M, K, W, c, dx, dy, dz, ux, uy, uz, bx, by, bz, seed_id, branch, step, cbar):
            return tensordet.sample_vjp(M, K, W, c, dx, dy, dz, bx, by, bz, cbar)
    return impl


def position_free(M):
    """Whether the method's direction reads the field at a detached position (dU/dp = 0: ``pmf``)."""


@overload(position_free, jit_options={"cache": True})
def _position_free(M):
    free = M.instance_class is pmf.PmfAdjoint
    return lambda M: free


def batched(M):
    """Whether consecutive steps of the method share work in the backward: detmax's (pmf without draws;
    prob's draws change the cone at almost every step)."""
    return False


@overload(batched, jit_options={"cache": True})
def _batched(M):
    if M.instance_class is pmf.PmfAdjoint:
        return lambda M: not M.sample
    return lambda M: False


def previous_direction(M, dx, dy, dz):
    """(vertex, direction) of the previous step from a point difference: for ``pmf`` the vertex it
    is (to rounding; -1 for none) and the direction snapped to it, for the others (-1, the direction)."""


@overload(previous_direction, jit_options={"cache": True})
def _previous_direction(M, dx, dy, dz):
    if M.instance_class is not pmf.PmfAdjoint:
        return lambda M, dx, dy, dz: (-1, dx, dy, dz)

    def impl(M, dx, dy, dz):
        v, cos = pmf.looked_up(M, dx, dy, dz, 1e-5)  # most steps: the vertex of the direction's cell
        if v >= 0:
            a = M.vertices[v]
            return (v, a[0], a[1], a[2]) if cos >= 0.0 else (v, -a[0], -a[1], -a[2])
        best, at = -1.0, 0
        for v in range(M.vertices.shape[0]):
            a = M.vertices[v]
            cos = abs(dx * a[0] + dy * a[1] + dz * a[2])
            if cos > best:
                best, at = cos, v
        if best < 1.0 - 1e-5:
            return -1, dx, dy, dz
        a = M.vertices[at]
        if dx * a[0] + dy * a[1] + dz * a[2] < 0.0:
            return at, -a[0], -a[1], -a[2]
        return at, a[0], a[1], a[2]
    return impl


# -- one step -----------------------------------------------------------------------------------------
@jit(inline="always")
def _interpolate(vol, K, i0, i1, j0, j1, k0, k1, fx, fy, fz, c, weights):
    """The sample ``c`` (C,) in float64 from the located cell's corners (one pass, the sums in
    registers), their weights into ``weights`` (8,)."""
    for corner in range(8):
        weights[corner] = corner_weight(vol, K, corner, fx, fy, fz)
    w0, w1, w2, w3 = np.float64(weights[0]), np.float64(weights[1]), np.float64(weights[2]), np.float64(weights[3])
    w4, w5, w6, w7 = np.float64(weights[4]), np.float64(weights[5]), np.float64(weights[6]), np.float64(weights[7])
    r0, r1, r2, r3, r4, r5, r6, r7 = corner_rows(vol, i0, i1, j0, j1, k0, k1)
    for ch in range(c.shape[0]):
        c[ch] = ((w0 * r0[ch] + w1 * r1[ch]) + (w2 * r2[ch] + w3 * r3[ch])) + \
                ((w4 * r4[ch] + w5 * r5[ch]) + (w6 * r6[ch] + w7 * r7[ch]))


@jit
def step_vjp(MB, KB, K, W, vol, px, py, pz, dx, dy, dz, ux, uy, uz, bx, by, bz, seed_id, branch, step, cbar,
             weights):
    """The backward of U at one point for the cotangent b: records the corner weights (8,) and
    c_bar (C,); returns the flat index of the point's first corner (-1: nothing to scatter) and the
    position's cotangent, sum over corners of (c_bar . values_corner) dw_corner/dp (3,)."""
    inside, i0, i1, j0, j1, k0, k1, fx, fy, fz, vx, vy, vz = locate(vol, K, px, py, pz)
    if not inside:
        return -1, 0.0, 0.0, 0.0
    nx, ny, nz = vol.dims[0], vol.dims[1], vol.dims[2]
    c = W.c
    n = c.shape[0]
    _interpolate(vol, K, i0, i1, j0, j1, k0, k1, fx, fy, fz, c, weights)
    if not sample_vjp(MB, KB, W, c, dx, dy, dz, ux, uy, uz, bx, by, bz, seed_id, branch, step, cbar):
        return -1, 0.0, 0.0, 0.0
    gx = gy = gz = 0.0
    if not position_free(MB):
        r0, r1, r2, r3, r4, r5, r6, r7 = corner_rows(vol, i0, i1, j0, j1, k0, k1)
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0  # c_bar . values of each corner: eight independent sums
        for ch in range(n):
            cb = cbar[ch]
            s0 += cb * r0[ch]
            s1 += cb * r1[ch]
            s2 += cb * r2[ch]
            s3 += cb * r3[ch]
            s4 += cb * r4[ch]
            s5 += cb * r5[ch]
            s6 += cb * r6[ch]
            s7 += cb * r7[ch]
        free_x = 1.0 if 0.0 <= vx <= nx - 1 else 0.0  # the fraction is held at 0 outside the inner cells
        free_y = 1.0 if 0.0 <= vy <= ny - 1 else 0.0
        free_z = 1.0 if 0.0 <= vz <= nz - 1 else 0.0
        a = vol.ras_to_voxel
        for corner in range(8):
            if weights[corner] == 0.0:  # a weight the mrtrix rule zeroed, or a zero fraction's corner
                continue
            along = (s0, s1, s2, s3, s4, s5, s6, s7)[corner]
            wx = fx if corner & 1 else 1.0 - fx
            wy = fy if corner & 2 else 1.0 - fy
            wz = fz if corner & 4 else 1.0 - fz
            ex = (1.0 if corner & 1 else -1.0) * free_x * wy * wz * along  # dw / dv, times c_bar . values
            ey = (1.0 if corner & 2 else -1.0) * free_y * wx * wz * along
            ez = (1.0 if corner & 4 else -1.0) * free_z * wx * wy * along
            gx += ex * a[0, 0] + ey * a[1, 0] + ez * a[2, 0]  # dw / dp = dw / dv . dv / dp
            gy += ex * a[0, 1] + ey * a[1, 1] + ez * a[2, 1]
            gz += ex * a[0, 2] + ey * a[1, 2] + ez * a[2, 2]
    return (i0 * ny + j0) * nz + k0, gx, gy, gz


@jit
def _unit(x, y, z):
    n = math.sqrt(x * x + y * y + z * z)
    return x / n, y / n, z / n


@jit(inline="always")
def _step_from(MB, K, points, i, sign, k, sx, sy, sz):
    """(vertex, direction) of the previous step at step ``k`` of a half (point ``i``): (-1, the start
    direction (sx, sy, sz)) at the seed, else the last step's (``previous_direction``)."""
    if k == 0:
        return -1, sx, sy, sz
    back = i - sign
    ex, ey, ez = _unit(np.float64(points[i, 0]) - points[back, 0], np.float64(points[i, 1]) - points[back, 1],
                       np.float64(points[i, 2]) - points[back, 2])
    v, ex, ey, ez = previous_direction(MB, ex, ey, ez)
    return v, K.f(ex), K.f(ey), K.f(ez)


# -- one half-streamline ------------------------------------------------------------------------------
@jit
def replay_half(M, K, S, MB, KB, W, vol, P, points, start, sign, n, sx, sy, sz, grad, seed_id, branch, sink,
                record):
    """The adjoint of one half: ``n`` steps from the seed at ``points[start]`` along
    ``points[start + sign k]``, from start direction (sx, sy, sz), for the points' cotangents
    ``grad``; steps go to ``sink`` from ``record`` on. Returns the seed's cotangent through this half
    (without its own dL/dp)."""
    if n == 0:
        return 0.0, 0.0, 0.0
    s = np.float64(P.step)
    h = np.float64(P.half_step)
    last = start + sign * n
    lx, ly, lz = np.float64(grad[last, 0]), np.float64(grad[last, 1]), np.float64(grad[last, 2])
    for k in range(n - 1, -1, -1):
        i = start + sign * k
        px, py, pz = points[i, 0], points[i, 1], points[i, 2]
        dx, dy, dz = _step_from(MB, K, points, i, sign, k, sx, sy, sz)[1:]
        bx, by, bz = s * lx, s * ly, s * lz
        if not P.rk4:
            nxt = i + sign
            ux, uy, uz = _unit(np.float64(points[nxt, 0]) - px, np.float64(points[nxt, 1]) - py,
                               np.float64(points[nxt, 2]) - pz)
            at = record + (n - 1 - k)
            cbar, weights = buffers(sink, at)
            cell, gx, gy, gz = step_vjp(MB, KB, K, W, vol, px, py, pz, dx, dy, dz, ux, uy, uz, bx, by, bz, seed_id,
                                        branch, k, cbar, weights)
            deposit(sink, at, cell)
        else:  # the stages of ``rows.rk4_direction``, recomputed, then their adjoints in reverse
            hk = P.half_step
            k1x, k1y, k1z = stage_direction(M, K, S, vol, px, py, pz, dx, dy, dz, seed_id, branch, k)[1:]
            q2x, q2y, q2z = px + k1x * hk, py + k1y * hk, pz + k1z * hk
            k2x, k2y, k2z = stage_direction(M, K, S, vol, q2x, q2y, q2z, dx, dy, dz, seed_id, branch, k)[1:]
            q3x, q3y, q3z = px + k2x * hk, py + k2y * hk, pz + k2z * hk
            k3x, k3y, k3z = stage_direction(M, K, S, vol, q3x, q3y, q3z, dx, dy, dz, seed_id, branch, k)[1:]
            mx, my, mz = _unit(np.float64(k2x + k3x), np.float64(k2y + k3y), np.float64(k2z + k3z))
            mx, my, mz = K.f(mx), K.f(my), K.f(mz)
            q4x, q4y, q4z = px + k3x * P.step, py + k3y * P.step, pz + k3z * P.step
            k4x, k4y, k4z = stage_direction(M, K, S, vol, q4x, q4y, q4z, mx, my, mz, seed_id, branch, k)[1:]
            nx_ = np.float64(k1x) + 2.0 * k2x + 2.0 * k3x + k4x
            ny_ = np.float64(k1y) + 2.0 * k2y + 2.0 * k3y + k4y
            nz_ = np.float64(k1z) + 2.0 * k2z + 2.0 * k3z + k4z
            norm = math.sqrt(nx_ * nx_ + ny_ * ny_ + nz_ * nz_)
            ux, uy, uz = nx_ / norm, ny_ / norm, nz_ / norm
            along = bx * ux + by * uy + bz * uz
            ax, ay, az = (bx - along * ux) / norm, (by - along * uy) / norm, (bz - along * uz) / norm  # n_bar
            at = record + 4 * (n - 1 - k)
            cbar, weights = buffers(sink, at + 3)
            cell, g4x, g4y, g4z = step_vjp(MB, KB, K, W, vol, q4x, q4y, q4z, mx, my, mz, k4x, k4y, k4z, ax, ay, az,
                                           seed_id, branch, k, cbar, weights)
            deposit(sink, at + 3, cell)
            cbar, weights = buffers(sink, at + 2)
            cell, g3x, g3y, g3z = step_vjp(MB, KB, K, W, vol, q3x, q3y, q3z, dx, dy, dz, k3x, k3y, k3z,
                                           2.0 * ax + s * g4x, 2.0 * ay + s * g4y, 2.0 * az + s * g4z,
                                           seed_id, branch, k, cbar, weights)
            deposit(sink, at + 2, cell)
            cbar, weights = buffers(sink, at + 1)
            cell, g2x, g2y, g2z = step_vjp(MB, KB, K, W, vol, q2x, q2y, q2z, dx, dy, dz, k2x, k2y, k2z,
                                           2.0 * ax + h * g3x, 2.0 * ay + h * g3y, 2.0 * az + h * g3z,
                                           seed_id, branch, k, cbar, weights)
            deposit(sink, at + 1, cell)
            cbar, weights = buffers(sink, at)
            cell, g1x, g1y, g1z = step_vjp(MB, KB, K, W, vol, px, py, pz, dx, dy, dz, k1x, k1y, k1z,
                                           ax + h * g2x, ay + h * g2y, az + h * g2z, seed_id, branch, k, cbar, weights)
            deposit(sink, at, cell)
            gx, gy, gz = g1x + g2x + g3x + g4x, g1y + g2y + g3y + g4y, g1z + g2z + g3z + g4z
        lx, ly, lz = lx + gx, ly + gy, lz + gz
        if k > 0:
            lx, ly, lz = lx + grad[i, 0], ly + grad[i, 1], lz + grad[i, 2]
    return lx, ly, lz


def replay_steps(M, K, S, MB, KB, W, B, vol, P, points, start, sign, n, sx, sy, sz, grad, seed_id, branch, sink,
                 record):
    """``replay_half``; with a position-free method (pmf), ``Records`` and a ``Batch`` ``B``,
    ``replay_batched_half``."""


@overload(replay_steps, jit_options={"cache": True})
def _replay_steps(M, K, S, MB, KB, W, B, vol, P, points, start, sign, n, sx, sy, sz, grad, seed_id, branch, sink,
                  record):
    if (MB.instance_class is pmf.PmfAdjoint and isinstance(sink, types.BaseNamedTuple)
            and sink.instance_class is Records and isinstance(B, types.BaseNamedTuple) and B.instance_class is Batch):
        def impl(M, K, S, MB, KB, W, B, vol, P, points, start, sign, n, sx, sy, sz, grad, seed_id, branch, sink,
                 record):
            if P.rk4 or not batched(MB):
                return replay_half(M, K, S, MB, KB, W, vol, P, points, start, sign, n, sx, sy, sz, grad, seed_id,
                                   branch, sink, record)
            return replay_batched_half(MB, K, KB, W, B, vol, P, points, start, sign, n, sx, sy, sz, grad, seed_id,
                                       branch, sink, record)
    else:
        def impl(M, K, S, MB, KB, W, B, vol, P, points, start, sign, n, sx, sy, sz, grad, seed_id, branch, sink,
                 record):
            return replay_half(M, K, S, MB, KB, W, vol, P, points, start, sign, n, sx, sy, sz, grad, seed_id, branch,
                               sink, record)
    return impl


@jit
def replay_batched_half(MB, K, KB, W, B, vol, P, points, start, sign, n, sx, sy, sz, grad, seed_id, branch, sink,
                        record):
    """``replay_half`` of a position-free method (dU/dp = 0: each lambda is the sum of the cotangents
    of the points after it, so the steps' backwards do not depend on each other): consecutive steps
    whose previous direction is the same vertex share its cone's columns, and go to
    ``pmf.batch_sample_vjp`` up to ``dense.BATCH`` at a time, the columns read once for all."""
    if n == 0:
        return 0.0, 0.0, 0.0
    s = np.float64(P.step)
    last = start + sign * n
    lx, ly, lz = np.float64(grad[last, 0]), np.float64(grad[last, 1]), np.float64(grad[last, 2])
    ny, nz = vol.dims[1], vol.dims[2]
    k = n - 1
    while k >= 0:
        first = record + (n - 1 - k)  # steps replay from the last: records in order
        count = 0
        row = -1
        while count < BATCH and k >= 0:
            i = start + sign * k
            r, dx, dy, dz = _step_from(MB, K, points, i, sign, k, sx, sy, sz)  # the vertex the step
            r = r if k > 0 else pmf.cone_row(MB, dx, dy, dz)  # came along, also where the lookup missed it
            if r < 0 or (count > 0 and r != row):
                break
            row = r
            inside, i0, i1, j0, j1, k0, k1, fx, fy, fz = locate(vol, K, points[i, 0], points[i, 1], points[i, 2])[:10]
            c = B.cs[count]
            if inside:
                _interpolate(vol, K, i0, i1, j0, j1, k0, k1, fx, fy, fz, c, sink.weights[first + count])
            else:
                c[:] = 0.0
            B.cells[count] = (i0 * ny + j0) * nz + k0 if inside else -1
            B.directions[count, 0], B.directions[count, 1], B.directions[count, 2] = dx, dy, dz
            B.cotangents[count, 0], B.cotangents[count, 1], B.cotangents[count, 2] = s * lx, s * ly, s * lz
            B.steps[count] = k
            if k > 0:
                lx, ly, lz = lx + grad[i, 0], ly + grad[i, 1], lz + grad[i, 2]
            count += 1
            k -= 1
        if count == 0:  # step k's previous direction (i, dx, dy, dz as the loop left them) is no vertex:
            cbar, weights = buffers(sink, first)  # this step alone, over every vertex
            cell = step_vjp(MB, KB, K, W, vol, points[i, 0], points[i, 1], points[i, 2], dx, dy, dz, dx, dy, dz,
                            s * lx, s * ly, s * lz, seed_id, branch, k, cbar, weights)[0]  # pmf reads no u
            deposit(sink, first, cell)
            if k > 0:
                lx, ly, lz = lx + grad[i, 0], ly + grad[i, 1], lz + grad[i, 2]
            k -= 1
            continue
        pmf.batch_sample_vjp(MB, W, B.cs, count, row, B.directions, B.cotangents, seed_id, branch, B.steps, B.pmf,
                             B.y, sink.cbars[first:first + count])
        for q in range(count):
            deposit(sink, first + q, B.cells[q] if B.steps[q] >= 0 else -1)
    return lx, ly, lz


@jit
def replay_row_half(M, K, S, MB, KB, W, B, vol, P, run, r, half, grad, sink, record):
    """The adjoint of half ``half`` (0: the one stored after the seed) of the streamline ``r`` of
    ``run`` (``Run``); returns its contribution to the seed's cotangent. ``B``: a ``Batch`` (the CPU)
    or None."""
    after_first = P.forward_after_seed or P.unidirectional
    start = run.offsets[r] + run.before[r]
    if half == 0:
        n, sign, kernel_half = run.lengths[r] - 1 - run.before[r], 1, 0 if after_first else 1
    else:
        n, sign, kernel_half = run.before[r], -1, 1 if after_first else 0
    hs = run.half_starts[r, half]
    return replay_steps(M, K, S, MB, KB, W, B, vol, P, run.points, start, sign, n, hs[0], hs[1], hs[2], grad,
                        run.seed_ids[r], 2 * run.peaks[r] + kernel_half, sink, record)


@parallel_jit
def replay_rows(M, K, MB, KB, vol, P, sizes, adjoint_sizes, run, rows, records, grad, seed_grad, sink):
    """The adjoint of both halves of the streamlines ``rows`` (all cores): ``seed_grad`` (len(rows),
    2, 3) receives each half's contribution to its seed; the steps of half h of ``rows[i]`` go to
    ``sink`` (``Records``) from ``records[2 i + h]`` on."""
    for t in prange(2 * rows.shape[0]):
        dtype = run.points.dtype
        S = Scratch(np.empty(sizes[0], dtype), np.empty(sizes[1], dtype), np.empty(sizes[2], dtype),
                    np.empty(sizes[3], dtype), np.empty(sizes[4], np.float64),
                    np.empty(sizes[5], np.float32))
        precision = sink.cbars.dtype  # the method's working precision
        W = Adjoint(np.empty(adjoint_sizes[0]), np.empty(adjoint_sizes[1], precision),
                    np.empty(adjoint_sizes[2], precision), np.empty(adjoint_sizes[3]))
        grouped = BATCH if batched(MB) else 0
        B = Batch(np.empty((grouped, adjoint_sizes[0])), np.empty((grouped, adjoint_sizes[1]), precision),
                  np.empty((grouped, adjoint_sizes[1]), precision), np.empty((grouped, 3)), np.empty((grouped, 3)),
                  np.empty(grouped, np.int64), np.empty(grouped, np.int64))
        gx, gy, gz = replay_row_half(M, K, S, MB, KB, W, B, vol, P, run, rows[t // 2], t % 2, grad, sink, records[t])
        seed_grad[t // 2, t % 2, 0], seed_grad[t // 2, t % 2, 1], seed_grad[t // 2, t % 2, 2] = gx, gy, gz


@parallel_jit
def scatter(cells, weights, cbars, ny, nz, threads, out):
    """Add every record's ``weights[r, corner] * cbars[r]`` to the rows of ``out`` (X Y Z, C) at its
    cell's eight corners, in record order. Without write conflicts and without sorting: first the
    records whose cell has an even x index, then the odd ones (a cell's corners span planes x and
    x + 1, so within one pass cells in different pairs of planes share no row), each thread taking
    the pairs of planes x // 2 = its number modulo ``threads`` (Numba's thread count)."""
    f = out.dtype.type  # weights in ``out``'s precision (products in the wider of it and c_bar's)
    for odd in range(2):
        for t in prange(threads):
            for r in range(cells.shape[0]):
                cell = cells[r]
                if cell < 0:
                    continue
                i0 = cell // (ny * nz)
                if (i0 & 1) != odd or (i0 >> 1) % threads != t:
                    continue
                j0, k0 = (cell // nz) % ny, cell % nz
                source = cbars[r]
                for corner in range(8):
                    w = f(weights[r, corner])
                    if w == 0.0:
                        continue
                    target = out[((i0 + (corner & 1)) * ny + j0 + ((corner >> 1) & 1)) * nz + k0 + ((corner >> 2) & 1)]
                    for ch in range(out.shape[1]):
                        target[ch] += w * source[ch]
