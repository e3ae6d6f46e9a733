"""One streamline per call, seed to both tips: the rules of ``tracker._track_chunk`` and
``propagation.propagate`` (MRtrix3's ``Exec::gen_track_unidir``, DIPY's ``generate_streamline``)
for one row, independent of the method, which is chosen at compile time by the type of its data.

Output layout: a row owns a slot of ``2 * budget + 1`` points with the seed at ``budget``; the half
stored after the seed grows forwards from there, the half stored before it backwards (so MRtrix3's
reversed first half costs nothing). The streamline is ``slot[begin:end]``.
"""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba.core.target_extension import current_target
from numba.extending import overload

from ...stopping import StreamlineStatus
from . import pmf, sdstream, tensordet
from .common import CONTINUE, EXIT_MASK, HIGH_CURVATURE, MAX_LENGTH, contains, dot3, jit

ACCEPTED = int(StreamlineStatus.ACCEPTED)
SEED_REJECTED = int(StreamlineStatus.SEED_REJECTED)
TOO_SHORT = int(StreamlineStatus.TOO_SHORT)

#: the propagation rules: ``step`` mm (working precision), ``budget`` new points per half,
#: ``min_points`` of a kept streamline, the algorithm's semantics (``algorithms.Algorithm``) and
#: the options; ``half_step`` and ``rk4_cos_max`` for RK4
Rules = namedtuple("Rules", "step budget min_points shared_budget reverse_uses_first_step forward_after_seed "
                            "unidirectional rk4 half_step rk4_cos_max")


# -- the method, chosen by the type of its data ----------------------------------------------------
def method_init(M, K, S, vol, px, py, pz, dx, dy, dz):
    """(ok, seed direction) at a seed from a start direction."""
    if isinstance(M, pmf.PmfData):
        return True, dx, dy, dz
    return (sdstream.init if isinstance(M, sdstream.SDStreamData) else tensordet.init)(
        M, K, S, vol, px, py, pz, dx, dy, dz)


def method_next(M, K, S, vol, px, py, pz, dx, dy, dz, check_curvature, seed_id, branch, step):
    """(status, direction) of the step from a point given the previous direction."""
    if isinstance(M, pmf.PmfData):
        return pmf.next_direction(M, K, S, vol, px, py, pz, dx, dy, dz, seed_id, branch, step)
    return (sdstream.next_direction if isinstance(M, sdstream.SDStreamData) else tensordet.next_direction)(
        M, K, S, vol, px, py, pz, dx, dy, dz, check_curvature)


def method_reverse(M, K, sx, sy, sz, fx, fy, fz):
    """Start direction of the second half from the seed direction and the first half's first step."""
    if isinstance(M, pmf.PmfData):
        return pmf.reverse(M, K, sx, sy, sz, fx, fy, fz)
    return -sx, -sy, -sz


@overload(method_init, jit_options={"cache": True})
def _method_init(M, K, S, vol, px, py, pz, dx, dy, dz):
    kind = M.instance_class
    if kind is pmf.PmfData:
        return lambda M, K, S, vol, px, py, pz, dx, dy, dz: (True, dx, dy, dz)
    impl = sdstream.init if kind is sdstream.SDStreamData else tensordet.init
    return lambda M, K, S, vol, px, py, pz, dx, dy, dz: impl(M, K, S, vol, px, py, pz, dx, dy, dz)


def _on_the_cpu(expr, caller, callee) -> bool:
    """``method_next``'s inlining: on the CPU it keeps the method's tuple out of a call per step.
    numba-cuda (0.30) mistypes an inlined overload whose body calls an inlined function (the pmf
    step: ``mul(omitted, omitted)`` at lowering), so on CUDA the method is a device function."""
    return current_target() == "cpu"


@overload(method_next, jit_options={"cache": True}, inline=_on_the_cpu)
def _method_next(M, K, S, vol, px, py, pz, dx, dy, dz, check_curvature, seed_id, branch, step):
    kind = M.instance_class
    if kind is pmf.PmfData:
        def impl(M, K, S, vol, px, py, pz, dx, dy, dz, check_curvature, seed_id, branch, step):
            return pmf.next_direction(M, K, S, vol, px, py, pz, dx, dy, dz, seed_id, branch, step)
        return impl
    direction = sdstream.next_direction if kind is sdstream.SDStreamData else tensordet.next_direction

    def impl(M, K, S, vol, px, py, pz, dx, dy, dz, check_curvature, seed_id, branch, step):
        return direction(M, K, S, vol, px, py, pz, dx, dy, dz, check_curvature)
    return impl


@overload(method_reverse, jit_options={"cache": True})
def _method_reverse(M, K, sx, sy, sz, fx, fy, fz):
    if M.instance_class is pmf.PmfData:
        return lambda M, K, sx, sy, sz, fx, fy, fz: pmf.reverse(M, K, sx, sy, sz, fx, fy, fz)
    return lambda M, K, sx, sy, sz, fx, fy, fz: (-sx, -sy, -sz)


# -- stepping ---------------------------------------------------------------------------------------
@jit
def _normalised(K, x, y, z):
    n = K.f(math.sqrt(dot3(x, y, z, x, y, z)))
    return x / n, y / n, z / n


@jit
def stage_direction(M, K, S, vol, px, py, pz, dx, dy, dz, seed_id, branch, step):
    """``method_next`` without the curvature test, as a call of its own: RK4's stages (forward and
    replay) share this one compiled copy of the method rather than inline it at every stage."""
    return method_next(M, K, S, vol, px, py, pz, dx, dy, dz, False, seed_id, branch, step)


@jit
def rk4_direction(M, K, S, vol, P, px, py, pz, dx, dy, dz, seed_id, branch, step):
    """MRtrix3's ``next_rk4``: four evaluations, their weighted mean, and a final evaluation at the end
    point whose direction must stay within ``max_angle`` of the first."""
    s1, k1x, k1y, k1z = stage_direction(M, K, S, vol, px, py, pz, dx, dy, dz, seed_id, branch, step)
    if s1 != CONTINUE:
        return s1, k1x, k1y, k1z
    h = P.half_step
    s2, k2x, k2y, k2z = stage_direction(M, K, S, vol, px + k1x * h, py + k1y * h, pz + k1z * h, dx, dy, dz,
                                        seed_id, branch, step)
    if s2 != CONTINUE:
        return s2, k1x, k1y, k1z
    s3, k3x, k3y, k3z = stage_direction(M, K, S, vol, px + k2x * h, py + k2y * h, pz + k2z * h, dx, dy, dz,
                                        seed_id, branch, step)
    if s3 != CONTINUE:
        return s3, k1x, k1y, k1z
    mx, my, mz = _normalised(K, k2x + k3x, k2y + k3y, k2z + k3z)
    s = P.step
    s4, k4x, k4y, k4z = stage_direction(M, K, S, vol, px + k3x * s, py + k3y * s, pz + k3z * s, mx, my, mz,
                                        seed_id, branch, step)
    if s4 != CONTINUE:
        return s4, k1x, k1y, k1z
    ux, uy, uz = _normalised(K, k1x + k2x * K.two + k3x * K.two + k4x, k1y + k2y * K.two + k3y * K.two + k4y,
                             k1z + k2z * K.two + k3z * K.two + k4z)
    s5, ex, ey, ez = stage_direction(M, K, S, vol, px + ux * s, py + uy * s, pz + uz * s, ux, uy, uz,
                                     seed_id, branch, step)
    if s5 != CONTINUE:
        return s5, ux, uy, uz
    if dot3(k1x, k1y, k1z, ex, ey, ez) < P.rk4_cos_max:
        return HIGH_CURVATURE, ux, uy, uz
    return CONTINUE, ux, uy, uz


@jit
def propagate(M, K, S, vol, R, P, px, py, pz, dx, dy, dz, budget, slot, centre, sign, seed_id, branch):
    """Track one half from a point along a unit direction for at most ``budget`` new points, written
    to ``slot[centre + sign * (1 ... n)]``: (n, status, direction of the first step or NaN).
    A failed direction ends the half at the current point; a step leaving the regions is dropped
    (EXIT_MASK); the point that fills the budget is kept (MAX_LENGTH)."""
    nan = K.f(np.nan)
    fx, fy, fz = nan, nan, nan
    n = 0
    for k in range(budget):
        if P.rk4:
            status, ux, uy, uz = rk4_direction(M, K, S, vol, P, px, py, pz, dx, dy, dz, seed_id, branch, k)
        else:
            status, ux, uy, uz = method_next(M, K, S, vol, px, py, pz, dx, dy, dz, True, seed_id, branch, k)
        if status != CONTINUE:
            return n, status, fx, fy, fz
        nx, ny, nz = px + ux * P.step, py + uy * P.step, pz + uz * P.step
        if not contains(R, nx, ny, nz):
            return n, EXIT_MASK, fx, fy, fz
        if k == 0:
            fx, fy, fz = ux, uy, uz
        n += 1
        at = centre + sign * n
        slot[at, 0], slot[at, 1], slot[at, 2] = nx, ny, nz
        px, py, pz, dx, dy, dz = nx, ny, nz, ux, uy, uz
    return n, MAX_LENGTH, fx, fy, fz


@jit
def track_row(M, K, S, vol, R, P, px, py, pz, dx, dy, dz, seed_id, peak, slot, starts):
    """Track the streamline of one start row (a seed, or one of its peaks) into ``slot``:
    (begin, end, status of the first half, of the second (-1: none), fate ``StreamlineStatus``).
    ``starts`` (2, 3) receives the start direction of each half (what a replay of the steps needs)."""
    centre = P.budget
    if not contains(R, px, py, pz):
        return centre, centre + 1, -1, -1, SEED_REJECTED
    ok, sx, sy, sz = method_init(M, K, S, vol, px, py, pz, dx, dy, dz)
    if not ok:
        return centre, centre + 1, -1, -1, SEED_REJECTED
    starts[0, 0], starts[0, 1], starts[0, 2] = sx, sy, sz
    slot[centre, 0], slot[centre, 1], slot[centre, 2] = px, py, pz
    branch = 2 * peak  # random-draw keys: branch 2 j + h for half h of the seed's j-th start
    first_after = P.forward_after_seed or P.unidirectional
    n1, status1, fx, fy, fz = propagate(M, K, S, vol, R, P, px, py, pz, sx, sy, sz, P.budget, slot, centre,
                                        1 if first_after else -1, seed_id, branch)
    n2, status2 = 0, -1
    if not P.unidirectional:
        rx, ry, rz = method_reverse(M, K, sx, sy, sz, fx, fy, fz)
        starts[1, 0], starts[1, 1], starts[1, 2] = rx, ry, rz
        budget, cap = P.budget, P.budget
        if P.shared_budget:  # MRtrix3 counts both halves against one budget
            cap = max(P.budget - n1, 1)
            budget = min(cap + 1, P.budget)
        n2, status2 = propagate(M, K, S, vol, R, P, px, py, pz, rx, ry, rz, budget, slot, centre,
                                -1 if first_after else 1, seed_id, branch + 1)[:2]
        if n2 > cap:
            n2, status2 = cap, MAX_LENGTH
    before, after = (n2, n1) if first_after else (n1, n2)
    fate = ACCEPTED if before + 1 + after >= P.min_points else TOO_SHORT
    return centre - before, centre + 1 + after, status1, status2, fate
