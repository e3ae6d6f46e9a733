"""MRtrix3 Tensor_Det in a kernel: the principal eigenvector of the tensor fitted (OLS on -log S) to
the trilinearly interpolated DWI at each point, an FA cutoff, the sign chosen to continue forwards
(``methods.tensordet``'s arithmetic; the eigenvector by Jacobi rotations in float64)."""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from .common import CONTINUE, HIGH_CURVATURE, LOW_SIGNAL, OUTSIDE_IMAGE, dot3, jit, sample

#: cutoff (FA), cos(max_angle), ``binv`` (7, G) pseudo-inverse of MRtrix3's b-matrix
TensorData = namedtuple("TensorData", "cutoff cos_max binv")

JACOBI_SWEEPS = 32


@jit
def _rotate(a, v, p, q):
    """One Jacobi rotation zeroing a[p, q] of the symmetric 3 x 3 ``a``, accumulated into ``v``."""
    apq = a[3 * p + q]
    if apq == 0.0:
        return
    theta = (a[3 * q + q] - a[3 * p + p]) / (2.0 * apq)
    t = 1.0 / (abs(theta) + math.sqrt(theta * theta + 1.0))
    if theta < 0.0:
        t = -t
    c = 1.0 / math.sqrt(t * t + 1.0)
    s = t * c
    for k in range(3):  # columns p, q of a
        akp, akq = a[3 * k + p], a[3 * k + q]
        a[3 * k + p], a[3 * k + q] = c * akp - s * akq, s * akp + c * akq
    for k in range(3):  # rows p, q
        apk, aqk = a[3 * p + k], a[3 * q + k]
        a[3 * p + k], a[3 * q + k] = c * apk - s * aqk, s * apk + c * aqk
    a[3 * p + q] = a[3 * q + p] = 0.0
    for k in range(3):
        vkp, vkq = v[3 * k + p], v[3 * k + q]
        v[3 * k + p], v[3 * k + q] = c * vkp - s * vkq, s * vkp + c * vkq


@jit
def eigensystem(dxx, dyy, dzz, dxy, dxz, dyz, work):
    """Cyclic Jacobi rotations in float64 on the symmetric tensor: afterwards ``work[0], work[4],
    work[8]`` hold the eigenvalues and the columns of ``work[9:18]`` (row-major 3 x 3) the unit
    eigenvectors; returns the column of the largest eigenvalue (``work``: 18 float64)."""
    a, v = work[:9], work[9:18]
    a[0], a[1], a[2] = dxx, dxy, dxz
    a[3], a[4], a[5] = dxy, dyy, dyz
    a[6], a[7], a[8] = dxz, dyz, dzz
    for k in range(9):
        v[k] = 1.0 if k % 4 == 0 else 0.0
    scale = abs(a[0]) + abs(a[4]) + abs(a[8]) + abs(a[1]) + abs(a[2]) + abs(a[5])
    for _ in range(JACOBI_SWEEPS):
        if abs(a[1]) + abs(a[2]) + abs(a[5]) <= 1e-16 * scale:
            break
        _rotate(a, v, 0, 1)
        _rotate(a, v, 0, 2)
        _rotate(a, v, 1, 2)
    best = 0
    if a[4] > a[0]:
        best = 1
    if a[8] > a[4 * best]:
        best = 2
    return best


@jit
def principal_direction(dxx, dyy, dzz, dxy, dxz, dyz, work):
    """Unit eigenvector (float64) of the largest eigenvalue of the symmetric tensor (``eigensystem``)."""
    best = eigensystem(dxx, dyy, dzz, dxy, dxz, dyz, work)
    v = work[9:18]
    return v[best], v[3 + best], v[6 + best]


@jit(inline="always")
def _ols(M, K, s, y, dt, rows):
    """The first ``rows`` OLS coefficients of -log s (0 where s <= 0) in ``K``'s precision:
    ``dt[i] = binv[i] . y`` for y = -log s (written to ``y``)."""
    g = s.shape[0]
    for j in range(g):
        y[j] = -K.f(math.log(s[j])) if s[j] > K.zero else K.zero
    for i in range(rows):
        row = M.binv[i]
        acc = K.zero
        for j in range(g):
            acc += y[j] * row[j]
        dt[i] = acc


@jit
def _tensor(M, K, S, vol, px, py, pz):
    """Signal at the point, OLS tensor of -log S: (inside, FA, principal direction)."""
    s = S.c
    inside = sample(vol, K, px, py, pz, s)
    if not inside or s[0] != s[0]:
        return False, K.zero, K.zero, K.zero, K.zero
    dt = S.a
    _ols(M, K, s, S.b, dt, 7)
    md = (dt[0] + dt[1] + dt[2]) / K.three
    off = (dt[3] * dt[3] + dt[4] * dt[4]) + dt[5] * dt[5]
    norm2 = (dt[0] * dt[0] + dt[1] * dt[1]) + dt[2] * dt[2] + K.two * off
    a0, a1, a2 = dt[0] - md, dt[1] - md, dt[2] - md
    num = K.one_half * ((a0 * a0 + a1 * a1) + a2 * a2 + K.two * off)
    fa = K.f(math.sqrt(num / norm2)) if norm2 != K.zero else K.zero
    ux, uy, uz = principal_direction(np.float64(dt[0]), np.float64(dt[1]), np.float64(dt[2]), np.float64(dt[3]),
                                     np.float64(dt[4]), np.float64(dt[5]), S.d)
    return True, fa, K.f(ux), K.f(uy), K.f(uz)


@jit(inline="always")
def _column(dxx, dyy, dzz, dxy, dxz, dyz, lam, k):
    """Column ``k`` of D - lam I."""
    if k == 0:
        return dxx - lam, dxy, dxz
    if k == 1:
        return dxy, dyy - lam, dyz
    return dxz, dyz, dzz - lam


@jit
def eigen_sign(dxx, dyy, dzz, dxy, dxz, dyz, lam, ux, uy, uz):
    """+1 or -1: the sign Eigen's ``SelfAdjointEigenSolver::computeDirect`` gives the eigenvector u of
    eigenvalue ``lam`` (``extract_kernel``): of A = D - lam I, the column with the largest |diagonal|
    (the first of equal ones) crossed with the next column or the one after, whichever product is
    longer. In float64 here; Eigen's float32 on a scaled A can differ only at near-ties."""
    diag = (abs(dxx - lam), abs(dyy - lam), abs(dzz - lam))
    i0 = 0
    if diag[1] > diag[0]:
        i0 = 1
    if diag[2] > diag[i0]:
        i0 = 2
    rx, ry, rz = _column(dxx, dyy, dzz, dxy, dxz, dyz, lam, i0)
    ax, ay, az = _column(dxx, dyy, dzz, dxy, dxz, dyz, lam, (i0 + 1) % 3)
    bx, by, bz = _column(dxx, dyy, dzz, dxy, dxz, dyz, lam, (i0 + 2) % 3)
    c0 = (ry * az - rz * ay, rz * ax - rx * az, rx * ay - ry * ax)
    c1 = (ry * bz - rz * by, rz * bx - rx * bz, rx * by - ry * bx)
    n0 = c0[0] * c0[0] + c0[1] * c0[1] + c0[2] * c0[2]
    n1 = c1[0] * c1[0] + c1[1] * c1[1] + c1[2] * c1[2]
    kx, ky, kz = c0 if n0 > n1 else c1
    return 1.0 if kx * ux + ky * uy + kz * uz >= 0.0 else -1.0


@jit
def init(M, K, S, vol, px, py, pz, dx, dy, dz):
    """FA >= cutoff at the seed; the eigenvector with the sign Eigen's ``computeDirect`` gives it:
    MRtrix3's Tensor_Det keeps that sign whatever the start direction (its ``init`` returns before
    comparing with ``-seed_direction``), and the sign decides which half tckgen stores first."""
    inside, fa, ux, uy, uz = _tensor(M, K, S, vol, px, py, pz)
    if inside:
        dt, ev = S.a, S.d
        lam = max(ev[0], ev[4], ev[8])
        if eigen_sign(np.float64(dt[0]), np.float64(dt[1]), np.float64(dt[2]), np.float64(dt[3]),
                      np.float64(dt[4]), np.float64(dt[5]), lam, ux, uy, uz) < 0.0:
            ux, uy, uz = -ux, -uy, -uz
    return inside and fa >= M.cutoff, ux, uy, uz


@jit
def next_direction(M, K, S, vol, px, py, pz, dx, dy, dz, check_curvature):
    """LOW_SIGNAL below the FA cutoff; HIGH_CURVATURE when |cos(turn)| < cos(max_angle); the
    eigenvector flipped to continue forwards."""
    inside, fa, ux, uy, uz = _tensor(M, K, S, vol, px, py, pz)
    if not inside:
        return OUTSIDE_IMAGE, ux, uy, uz
    dot = dot3(dx, dy, dz, ux, uy, uz)
    status = LOW_SIGNAL if fa < M.cutoff else CONTINUE
    if check_curvature and status == CONTINUE and abs(dot) < M.cos_max:
        status = HIGH_CURVATURE
    if dot < K.zero:
        ux, uy, uz = -ux, -uy, -uz
    return status, ux, uy, uz


@jit
def sample_vjp(M, K, W, s, dx, dy, dz, bx, by, bz, sbar):
    """The backward of the direction at a point: ``sbar`` (G,) = u_bar . du/ds for u = +-e1, the
    principal eigenvector of the OLS tensor of the interpolated signal ``s`` flipped along the
    previous direction (dx, dy, dz): de1 = sum_j e_j (e_j' dT e1) / (l1 - l_j), through the OLS fit
    and -log s (0 where s <= 0). In float64 (``M`` with a float64 ``binv``); False for a tensor
    with a repeated largest eigenvalue."""
    g = s.shape[0]
    dt, work = W.b, W.d
    _ols(M, K, s, W.a[:g], dt, 6)
    best = eigensystem(dt[0], dt[1], dt[2], dt[3], dt[4], dt[5], work)
    v = work[9:18]
    e1x, e1y, e1z = v[best], v[3 + best], v[6 + best]
    if dot3(dx, dy, dz, e1x, e1y, e1z) < 0.0:  # the flip of ``next_direction``
        bx, by, bz = -bx, -by, -bz
    t00 = t01 = t02 = t10 = t11 = t12 = t20 = t21 = t22 = 0.0  # T_bar = sum_j a_j e_j e1'
    for j in range(3):
        if j == best:
            continue
        gap = work[4 * best] - work[4 * j]
        if gap == 0.0:
            return False
        ex, ey, ez = v[j], v[3 + j], v[6 + j]
        a = (ex * bx + ey * by + ez * bz) / gap
        t00 += a * ex * e1x
        t01 += a * ex * e1y
        t02 += a * ex * e1z
        t10 += a * ey * e1x
        t11 += a * ey * e1y
        t12 += a * ey * e1z
        t20 += a * ez * e1x
        t21 += a * ez * e1y
        t22 += a * ez * e1z
    dbar0, dbar1, dbar2, dbar3, dbar4, dbar5 = t00, t11, t22, t01 + t10, t02 + t20, t12 + t21
    for j in range(g):
        ybar = (dbar0 * M.binv[0, j] + dbar1 * M.binv[1, j] + dbar2 * M.binv[2, j] + dbar3 * M.binv[3, j]
                + dbar4 * M.binv[4, j] + dbar5 * M.binv[5, j])
        sbar[j] = -ybar / s[j] if s[j] > 0.0 else 0.0
    return True
