"""MRtrix3 SD_Stream in a kernel: the FOD peak nearest the previous direction, by MRtrix3's
``Math::SH::get_peak`` on the precomputed Legendre table or exact Legendre functions, with the
optional exact Newton polish.

Two arithmetics of the same search: away from the SH frame's z axis that of ``peaks.PeakFinder``
(combined Legendre rows, trigonometry by recurrence: the same peaks to a few ulps, at half the
cost); in float32, near the axis and for a seed's search, MRtrix3's own, operation for operation
(its term order, float products and double promotions, the platform's float trigonometry). Near
the axis the float search is chaotic: where (az, el) coordinates degenerate it wanders about the
pole, and whether and where it stops depends on every rounding, so only MRtrix3's own roundings
stop it where, and when, ``tckgen`` does; a seed's search from a start far from any peak can wander
as long (once per streamline, so cheap)."""
from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import types
from numba.extending import overload

from .common import CONTINUE, HIGH_CURVATURE, LOW_SIGNAL, OUTSIDE_IMAGE, dot3, jit, sample

MAX_ITERATIONS = 50
#: sine of an iterate's elevation from the SH frame's z axis below which the search goes on in
#: MRtrix3's arithmetic: well before the chaotic zone (~1e-3 rad), so that it enters it with
#: MRtrix3's bits rather than a few ulps off them
MRTRIX_NEAR_POLE = 0.2
_NEAR_POLE_SIN2 = MRTRIX_NEAR_POLE ** 2

#: cutoff (FOD amplitude) and cos(max_angle); ``rotation`` (3, 3) SH frame -> RAS when ``rotate``;
#: the (l, m) terms of ``SH::derivatives`` in its order (cos/sin coefficient slots, m as an index and
#: in the working precision, m^2; the sqrt2 scale in float64 per m); the Legendre rows: ``table``
#: (n, 3 T + n_mpos), per elevation (``inc`` rad apart) the three combined rows and then P_l^m as
#: MRtrix3's ``PrecomputedAL`` holds them, or, exact, ``combine`` (3 T, n_mpos) with the recurrence
#: factors ``factors`` (lmax + 1, lmax + 1) and ``first_factors`` (lmax + 1,) of ``sh.legendre``;
#: for MRtrix3's arithmetic, per term the factors and then the P_l^m slots of its sums, ``ladder``
#: (T, 10) (``sh.ladder_terms``); ``polish`` exact Newton iterations.
#: (Every field is an argument of each per-step call: a field more costs every step, which is why
#: what the backward alone needs is in ``SDStreamAdjoint``.)
SDStreamData = namedtuple("SDStreamData", "cutoff cos_max rotate rotation cos_slot sin_slot order m m2 trig_scale "
                                          "precomputed table inc combine ladder lmax y00 "
                                          "first_factors factors polish")
#: the backward's float64 data: ``SDStreamData``'s frame and terms, ``sh.legendre``'s recurrence
#: factors with the reciprocals ``inverse_factors`` of the factor before each, the P_m^m ratios
#: ``seed_steps`` (lmax + 1,) and the term of each Legendre slot ``slot_term``
SDStreamAdjoint = namedtuple("SDStreamAdjoint", "rotate rotation cos_slot sin_slot order m m2 trig_scale lmax y00 "
                                                "first_factors factors inverse_factors seed_steps slot_term")


@jit
def legendre(M, K, x, out, values):
    """``sh.legendre`` at one ``x`` = cos(elevation): P_l^m for even l, slot l^2/4 + m, into ``out``
    (MRtrix3's ``Plm_sph``: the P_m^m seed in float64, the recurrence in the working precision)."""
    lmax = M.lmax
    x2 = x * x
    one_minus = 1.0 - np.float64(x2)
    for m in range(lmax + 1):
        if m:
            helper = 1.0
            for k in range(2, 2 * m + 1, 2):
                helper = one_minus * (k - 1) / k * helper
            pm = K.f(np.float64(M.y00) * math.sqrt((2 * m + 1) * helper))
            if x2 >= K.one:
                pm = K.zero
            elif m & 1:
                pm = -pm
        else:
            pm = M.y00
        values[m] = pm
        if m < lmax:
            f = M.first_factors[m]
            values[m + 1] = x * f * pm
            for n in range(m + 2, lmax + 1):
                nxt = x * values[n - 1] - values[n - 2] / f
                f = M.factors[m, n]
                values[n] = nxt * f
        for l in range(m + (m & 1), lmax + 1, 2):
            out[l * l // 4 + m] = values[l]


@jit(inline="always")
def _legendre_rows(M, K, el, q, work, exact):
    """The three combined Legendre rows (3 T,) of ``SH::derivatives`` at elevation ``el`` into ``q``:
    blended from the table (``PrecomputedAL``) or, ``exact`` or without a table, exact."""
    t3 = M.m.shape[0] * 3
    if M.precomputed and not exact:
        x = el / M.inc
        i = 0 if x != x else min(max(np.int64(x), 0), M.table.shape[0] - 2)
        frac = min(x - K.f(i), K.one)
        w0 = K.one - frac
        r0, r1 = M.table[i], M.table[i + 1]  # 1-D rows: contiguous loops (2-D indexing defeats vectorisation)
        for j in range(t3):
            q[j] = w0 * r0[j] + frac * r1[j]
        return
    n = M.combine.shape[1]
    al = work[:n]
    legendre(M, K, K.f(math.cos(el)), al, work[n:])
    for j in range(t3):
        row = M.combine[j]
        acc = K.zero
        for s in range(n):
            acc += row[s] * al[s]
        q[j] = acc


@jit(inline="always")
def _legendre_values(M, K, el, al, values):
    """P_l^m (``sh.legendre`` slots) at elevation ``el`` into ``al`` as MRtrix3 reads them:
    ``PrecomputedAL::get`` (row int(el / inc) times 1 - f plus the next times f) or ``Plm_sph``
    at cos(el)."""
    if not M.precomputed:
        legendre(M, K, K.f(math.cos(el)), al, values)
        return
    x = el / M.inc
    rows, first = M.table.shape[0], M.m.shape[0] * 3
    i = min(max(np.int64(x), 0), rows - 1)
    frac = x - K.f(i) if i < rows - 1 else K.zero
    w0 = K.f(1.0 - np.float64(frac))  # f1 = 1.0 - f2: in double
    r0, r1 = M.table[i, first:], M.table[min(i + 1, rows - 1), first:]
    for j in range(al.shape[0]):
        al[j] = w0 * r0[j] + frac * r1[j] if frac != K.zero else r0[j]


@jit(inline="always")
def _ladder_sums(M, K, vp, vm, cm, sm, al, atpole):
    """``SH::derivatives``' sums term by term, in its order and roundings, from the rows ``cm``,
    ``sm`` (sqrt2 cos(m az), sqrt2 sin(m az)) and P_l^m ``al``: (f, df/del, sum m y P (at the pole
    sum y dP), d2f/del2, sum m y dP, sum m^2 x P), x and y the term's cos / sin combinations."""
    amp = d_el = d2_el = d_az = d2_elaz = d2_az = K.zero
    j = 0
    while j < M.m.shape[0] and M.order[j] == 0:  # m = 0: its (..) / 2.0 promotes the sum to double
        v, f = vp[j], M.ladder[j]
        p0, p1, p2 = al[np.int64(f[5])], al[np.int64(f[6])], al[np.int64(f[7])]
        amp += v * p0
        d_el += v * f[1] * p1
        d2_el = K.f(np.float64(d2_el) + np.float64(v * (f[2] * p2 - f[0] * p0)) / 2.0)
        j += 1
    for j in range(j, M.m.shape[0]):
        caz, saz = cm[M.order[j]], sm[M.order[j]]
        x = vp[j] * caz + vm[j] * saz
        y = vm[j] * caz - vp[j] * saz
        f = M.ladder[j]
        p = al[np.int64(f[5])]
        amp += x * p
        dp = (f[1] * al[np.int64(f[6])] - f[2] * al[np.int64(f[7])]) * K.f(-0.5)  # tmp /= -2.0: exact
        d_el += x * dp
        d2_el += x * (((-f[0]) * p + f[3] * al[np.int64(f[8])] + f[4] * al[np.int64(f[9])]) * K.f(0.25))
        if atpole:
            d_az += y * dp
        else:
            my = M.m[j] * y
            d2_elaz += my * dp
            d_az += my * p
            d2_az += x * M.m[j] * M.m[j] * p
    return amp, d_el, d_az, d2_el, d2_elaz, d2_az


@jit(inline="always")
def _ascent(K, d_el, d_az):
    """``get_peak``'s unit ascent direction (del, daz) from the gradient, and the slope along it."""
    norm = K.f(math.sqrt(d_el * d_el + d_az * d_az))
    a_az = d_az / norm if norm != K.zero else K.zero
    a_el = d_el / norm if norm != K.zero else K.zero
    return a_el, a_az, a_az * d_az + a_el * d_el


@jit(inline="always")
def _move(K, ux, uy, uz, ca, sa, ce, se, a_el, a_az, slope, curv):
    """``get_peak``'s move: the Newton step dt = |slope / curv| (at most ``K.max_dir_change``) along
    the ascent from u at azimuth (cos, sin) ``ca``, ``sa`` and elevation ``ce``, ``se``, normalised:
    (u', dt)."""
    dt = -slope / curv if curv != K.zero else K.zero
    dt = abs(dt)
    if dt > K.max_dir_change:  # NaN stays NaN (MRtrix3's std::min)
        dt = K.max_dir_change
    a_el, a_az = a_el * dt, a_az * dt
    mx = ux + (a_el * ca * ce - a_az * sa)
    my = uy + (a_el * sa * ce + a_az * ca)
    mz = uz - a_el * se
    n = K.f(math.sqrt(dot3(mx, my, mz, mx, my, mz)))
    return mx / n, my / n, mz / n, dt


@jit
def _mrtrix_iterate(M, K, vp, vm, ux, uy, uz, work):
    """One iteration of ``get_peak`` in MRtrix3's arithmetic: ``_iterate``'s values, to the bit of
    ``tckgen`` where the platform's float trigonometry is glibc's (Linux)."""
    lmax = M.lmax
    cm, sm = work[:lmax + 1], work[lmax + 1:2 * lmax + 2]
    n = M.combine.shape[1]
    al, values = work[2 * lmax + 2:2 * lmax + 2 + n], work[2 * lmax + 2 + n:]
    az, el = K.f(math.atan2(uy, ux)), K.f(math.acos(uz))
    ca, sa, ce, se = K.f(math.cos(az)), K.f(math.sin(az)), K.f(math.cos(el)), K.f(math.sin(el))
    for m in range(lmax + 1):
        cm[m] = K.f(np.float64(K.f(math.cos(K.f(m) * az))) * M.trig_scale[m])
        sm[m] = K.f(np.float64(K.f(math.sin(K.f(m) * az))) * M.trig_scale[m])
    _legendre_values(M, K, el, al, values)
    atpole = se < K.pole
    amp, d_el, d_az, h_el, h_elaz, h_az = _ladder_sums(M, K, vp, vm, cm, sm, al, atpole)
    if atpole:
        h_elaz, h_az = K.zero, K.zero
    else:
        d_az, h_elaz, h_az = d_az / se, h_elaz / se, -h_az / (se * se)
    a_el, a_az, slope = _ascent(K, d_el, d_az)
    curv = K.f(np.float64(a_az * a_az * h_az) + 2.0 * np.float64(a_az) * np.float64(a_el) * np.float64(h_elaz)
               + np.float64(a_el * a_el * h_el))  # the 2.0 takes the sum to double
    ux, uy, uz, dt = _move(K, ux, uy, uz, ca, sa, ce, se, a_el, a_az, slope, curv)
    return ux, uy, uz, amp, dt


def single_precision(K) -> bool:
    """Whether the working precision is float32, MRtrix3's (a compile-time constant in kernels)."""
    return K.zero.dtype == np.float32


@overload(single_precision, jit_options={"cache": True}, inline="always")
def _single_precision(K):
    single = K[1] == types.float32
    return lambda K: single


@jit(inline="always")
def _exact_rows(M, ce, se, q):
    """The combined Legendre rows (3 T,) at cos / sin elevation (``ce``, ``se``) in float64, for the
    backward pass: P_l^m and its first and second derivatives in the elevation carried together
    through ``legendre``'s recurrence (its divisions as precomputed reciprocals, the P_m^m seeds
    t_m sin^m with t_m = Y00 prod ``seed_steps``), stored at term ``slot_term[l^2/4 + m]``."""
    t = M.m.shape[0]
    tm = M.y00
    pw1 = pw2 = 0.0  # sin^(m-1), sin^(m-2)
    pw = 1.0  # sin^m
    for m in range(M.lmax + 1):
        if m:
            tm *= M.seed_steps[m]
            pw2, pw1, pw = pw1, pw, pw * se
        p0 = tm * pw
        d0 = tm * m * pw1 * ce if m else 0.0
        e0 = tm * m * ((m - 1) * pw2 * ce * ce - pw) if m else 0.0
        if m % 2 == 0:
            j = M.slot_term[m * m // 4 + m]
            q[j], q[t + j], q[2 * t + j] = p0, d0, e0
        if m == M.lmax:
            break
        f = M.first_factors[m]
        p1, d1, e1 = f * ce * p0, f * (ce * d0 - se * p0), f * (ce * e0 - 2.0 * se * d0 - ce * p0)
        if m % 2 == 1:
            j = M.slot_term[(m + 1) * (m + 1) // 4 + m]
            q[j], q[t + j], q[2 * t + j] = p1, d1, e1
        for k in range(m + 2, M.lmax + 1):
            f, r = M.factors[m, k], M.inverse_factors[m, k]
            p0, d0, e0, p1, d1, e1 = (p1, d1, e1, f * (ce * p1 - r * p0), f * (ce * d1 - se * p1 - r * d0),
                                      f * (ce * e1 - 2.0 * se * d1 - ce * p1 - r * e0))
            if k % 2 == 0:
                j = M.slot_term[k * k // 4 + m]
                q[j], q[t + j], q[2 * t + j] = p1, d1, e1


@jit(inline="always")
def _trig(M, K, ca, sa, cm, sm):
    """sqrt2 cos(m az), sqrt2 sin(m az) for m = 0..lmax into ``cm``, ``sm``, stored in the working
    precision: by the angle-addition recurrence in double from cos(az) ``ca``, sin(az) ``sa``
    (MRtrix3 evaluates cos(m az) with m az rounded to float: the two differ by that rounding, ~1e-7
    relative, a tenth of the cost)."""
    c1, s1 = np.float64(ca), np.float64(sa)
    cp, sp = 1.0, 0.0
    for m in range(M.lmax + 1):
        cm[m] = K.f(cp * M.trig_scale[m])
        sm[m] = K.f(sp * M.trig_scale[m])
        cp, sp = cp * c1 - sp * s1, sp * c1 + cp * s1


@jit(inline="always")
def _coefficients(M, K, c, vp, vm):
    """The coefficients of each (l, m) term from the SH vector ``c``: cos part ``vp``, sin part
    ``vm`` (0 for m = 0)."""
    for j in range(M.m.shape[0]):
        vp[j] = c[M.cos_slot[j]]
        vm[j] = c[M.sin_slot[j]] if M.sin_slot[j] >= 0 else K.zero


@jit(inline="always")
def _sums(M, K, vp, vm, cm, sm, q):
    """``SH::derivatives``' sums over the terms, from the trigonometric rows ``cm``, ``sm`` and the
    Legendre rows ``q`` (3 T,): (f, df/del, sum m y P, d2f/del2, sum m y dP, sum m^2 x P, the pole's
    azimuth term), with x, y the term's cos / sin combination at the azimuth."""
    t = M.m.shape[0]
    amp = d_el = d2_el = d_az = d2_elaz = d2_az = pole_az = K.zero
    for j in range(t):
        caz, saz = cm[M.order[j]], sm[M.order[j]]
        x = vp[j] * caz + vm[j] * saz
        y = vm[j] * caz - vp[j] * saz
        q0, q1, q2 = q[j], q[t + j], q[2 * t + j]
        amp += x * q0
        d_el += x * q1
        d2_el += x * q2
        my = M.m[j] * y
        d_az += my * q0
        d2_elaz += my * q1
        d2_az += M.m2[j] * x * q0
        pole_az += y * q1
    return amp, d_el, d_az, d2_el, d2_elaz, d2_az, pole_az


@jit(inline="always")
def derivatives(M, K, vp, vm, ca, sa, el, se, q, work, exact):
    """Amplitude and the plain coordinate derivatives of ``SH::derivatives`` (f, df/del,
    (1/sin el) df/daz, d2f/del2, (1/sin el) d2f/del daz, (1/sin2 el) d2f/daz2) of prepared
    coefficients at azimuth (cos ``ca``, sin ``sa``) and elevation ``el`` (sin ``se``)."""
    lmax = M.lmax
    cm, sm = work[:lmax + 1], work[lmax + 1:2 * lmax + 2]
    _trig(M, K, ca, sa, cm, sm)
    _legendre_rows(M, K, el, q, work[2 * lmax + 2:], exact)
    amp, d_el, d_az, d2_el, d2_elaz, d2_az, pole_az = _sums(M, K, vp, vm, cm, sm, q)
    if se < K.pole:
        return amp, d_el, pole_az, d2_el, K.zero, K.zero
    return amp, d_el, d_az / se, d2_el, d2_elaz / se, -d2_az / (se * se)


@jit(inline="always")
def _iterate(M, K, vp, vm, ux, uy, uz, q, work):
    """One iteration of ``get_peak``: the moved direction, the amplitude before the move, the step.
    The azimuth's cosine and sine come from u itself (MRtrix3 takes them of atan2: the same to a few
    ulps), and so does the elevation's cosine; its sine is MRtrix3's sin(acos(u_z)): near the SH
    frame's z axis the rounding of u_z sets acos(u_z), and sqrt(u_x^2 + u_y^2) differs from its sine
    by far more than an ulp (~3% at 1e-3 rad; 2e-4 against 0 where u_z rounds to 1), enough for the
    search there to stop at another point or not to converge."""
    el = K.f(math.acos(uz))
    r = K.f(math.sqrt(ux * ux + uy * uy))
    ca, sa = (ux / r, uy / r) if r > K.zero else (K.one, K.zero)  # atan2(0, 0) = 0 at the pole
    ce, se = uz, K.f(math.sin(el))
    amp, d_el, d_az, h_el, h_elaz, h_az = derivatives(M, K, vp, vm, ca, sa, el, se, q, work, False)
    a_el, a_az, slope = _ascent(K, d_el, d_az)
    curv = a_az * a_az * h_az + K.two * a_az * a_el * h_elaz + a_el * a_el * h_el
    ux, uy, uz, dt = _move(K, ux, uy, uz, ca, sa, ce, se, a_el, a_az, slope, curv)
    return ux, uy, uz, amp, dt


@jit
def _solve_negative_definite(K, h00, h01, h11, w0, w1):
    """z = H^-1 w for a 2 x 2 H taken as negative definite (eigenvalues clamped below -1e-8 |H|)."""
    half_trace = 0.5 * (h00 + h11)
    radius = math.sqrt(0.25 * (h00 - h11) * (h00 - h11) + h01 * h01)
    lo, hi = half_trace - radius, half_trace + radius
    if h01 != 0.0:
        ex, ey = h01, lo - h00
    elif h00 <= h11:
        ex, ey = 1.0, 0.0
    else:
        ex, ey = 0.0, 1.0
    n = math.sqrt(ex * ex + ey * ey)
    ex, ey = ex / n, ey / n
    scale = max(abs(lo), abs(hi), 1e-30)
    lo, hi = min(lo, -1e-8 * scale), min(hi, -1e-8 * scale)
    a = (ex * w0 + ey * w1) / lo  # components along the eigenvectors (ex, ey) of lo and (-ey, ex) of hi
    b = (-ey * w0 + ex * w1) / hi
    return K.f(ex * a - ey * b), K.f(ey * a + ex * b)


@jit
def _polish(M, K, vp, vm, ux, uy, uz, q, work):
    """``PeakFinder._polish``: exact Newton steps on the sphere, then the amplitude there."""
    amp = K.zero
    for i in range(M.polish + 1):
        az = K.f(math.atan2(uy, ux))
        el = K.f(math.acos(min(max(uz, -K.one), K.one)))
        amp, g_el, g_az, h_el, h_elaz, h_az = derivatives(M, K, vp, vm, K.f(math.cos(az)), K.f(math.sin(az)), el,
                                                          K.f(math.sin(el)), q, work, True)
        if i == M.polish:
            break
        s_el, s_az = _solve_negative_definite(K, h_el, h_elaz, h_az, g_el, g_az)
        if K.f(math.sin(el)) < K.pole:
            s_el, s_az = K.zero, K.zero
        s_el, s_az = -s_el, -s_az
        ca, sa, ce, se = K.f(math.cos(az)), K.f(math.sin(az)), K.f(math.cos(el)), K.f(math.sin(el))
        ux = ux + s_el * (ca * ce) + s_az * (-sa)
        uy = uy + s_el * (sa * ce) + s_az * ca
        uz = uz + s_el * (-se) + s_az * K.zero
        n = K.f(math.sqrt(dot3(ux, uy, uz, ux, uy, uz)))
        ux, uy, uz = ux / n, uy / n, uz / n
    return ux, uy, uz, amp


@jit(inline="always")
def peak(M, K, S, ux, uy, uz, mrtrix):
    """MRtrix3's peak search from (ux, uy, uz) (SH frame) on the coefficients in ``S.c``: the peak
    direction, its amplitude and whether the search converged (else NaN, NaN). In float32, in
    MRtrix3's arithmetic throughout with ``mrtrix``, else from where it comes near the z axis."""
    t = M.m.shape[0]
    vp, vm = S.a, S.b
    _coefficients(M, K, S.c, vp, vm)
    q, work = S.q[:3 * t], S.q[3 * t:]
    for _ in range(MAX_ITERATIONS):
        mrtrix = single_precision(K) and (mrtrix or ux * ux + uy * uy < _NEAR_POLE_SIN2)
        if mrtrix:
            ux, uy, uz, amp, dt = _mrtrix_iterate(M, K, vp, vm, ux, uy, uz, work)
        else:
            ux, uy, uz, amp, dt = _iterate(M, K, vp, vm, ux, uy, uz, q, work)
        if dt < K.peak_tolerance:
            if M.polish:
                ux, uy, uz, amp = _polish(M, K, vp, vm, ux, uy, uz, q, work)
            return ux, uy, uz, amp, True
    nan = K.f(np.nan)
    return nan, nan, nan, nan, False


@jit(inline="always")
def _direction(M, K, S, vol, px, py, pz, dx, dy, dz, mrtrix):
    """``SDStream._peak``: data at the point, peak search from (dx, dy, dz) (RAS), status."""
    inside = sample(vol, K, px, py, pz, S.c)
    if not inside or S.c[0] != S.c[0]:
        return OUTSIDE_IMAGE, dx, dy, dz
    r = M.rotation
    if M.rotate:  # RAS -> SH frame: d @ R
        dx, dy, dz = (dx * r[0, 0] + dy * r[1, 0] + dz * r[2, 0], dx * r[0, 1] + dy * r[1, 1] + dz * r[2, 1],
                      dx * r[0, 2] + dy * r[1, 2] + dz * r[2, 2])
    ux, uy, uz, amp, ok = peak(M, K, S, dx, dy, dz, mrtrix)
    if M.rotate:  # back to RAS: u @ R.T
        ux, uy, uz = (ux * r[0, 0] + uy * r[0, 1] + uz * r[0, 2], ux * r[1, 0] + uy * r[1, 1] + uz * r[1, 2],
                      ux * r[2, 0] + uy * r[2, 1] + uz * r[2, 2])
    if not amp >= M.cutoff:  # a failed search (NaN) is low signal too
        return LOW_SIGNAL, ux, uy, uz
    return CONTINUE, ux, uy, uz


@jit
def init(M, K, S, vol, px, py, pz, dx, dy, dz):
    status, ux, uy, uz = _direction(M, K, S, vol, px, py, pz, dx, dy, dz, True)  # once a seed: exact
    return status == CONTINUE, ux, uy, uz


@jit
def next_direction(M, K, S, vol, px, py, pz, dx, dy, dz, check_curvature):
    status, ux, uy, uz = _direction(M, K, S, vol, px, py, pz, dx, dy, dz, False)
    if check_curvature and status == CONTINUE and dot3(dx, dy, dz, ux, uy, uz) < M.cos_max:
        status = HIGH_CURVATURE
    return status, ux, uy, uz


@jit
def sample_vjp(M, K, W, c, ux, uy, uz, bx, by, bz, cbar):
    """The backward of the peak at a point: ``cbar`` (C,) = u_bar . du*/dc for the peak u* (RAS,
    unit) of the interpolated coefficients ``c`` and a cotangent u_bar (RAS), by the implicit
    function theorem at u* (``peaks._ImplicitPeak``): du*/dc = -E H^-1 dg/dc with g the gradient
    of the amplitude in the orthonormal tangent frame E = (e_el, e_az) and H its Riemannian
    Hessian, from exact Legendre functions. In float64 (``M`` an ``SDStreamAdjoint``, ``K`` the
    float64 constants); False at a pole of the SH frame (sin(elevation) < 1e-12), where the frame is
    undefined."""
    r = M.rotation
    if M.rotate:  # RAS -> SH frame: v @ R
        ux, uy, uz = (ux * r[0, 0] + uy * r[1, 0] + uz * r[2, 0], ux * r[0, 1] + uy * r[1, 1] + uz * r[2, 1],
                      ux * r[0, 2] + uy * r[1, 2] + uz * r[2, 2])
        bx, by, bz = (bx * r[0, 0] + by * r[1, 0] + bz * r[2, 0], bx * r[0, 1] + by * r[1, 1] + bz * r[2, 1],
                      bx * r[0, 2] + by * r[1, 2] + bz * r[2, 2])
    se = math.sqrt(ux * ux + uy * uy)
    if se < 1e-12:
        return False
    ce = min(max(uz, -1.0), 1.0)
    ca, sa = ux / se, uy / se
    t = M.m.shape[0]
    lmax = M.lmax
    q, work = W.a[:3 * t], W.b
    cm, sm = work[:lmax + 1], work[lmax + 1:2 * lmax + 2]
    vp, vm = work[2 * lmax + 2:2 * lmax + 2 + t], work[2 * lmax + 2 + t:2 * lmax + 2 + 2 * t]
    _trig(M, K, ca, sa, cm, sm)
    _exact_rows(M, ce, se, q)
    _coefficients(M, K, c, vp, vm)
    _, g_el, g_az, h_el, h_elaz, h_az, _ = _sums(M, K, vp, vm, cm, sm, q)
    g_az, h_elaz, h_az = g_az / se, h_elaz / se, -h_az / (se * se)  # f_az, f_el_az / se, f_az_az / se^2
    cot = ce / se  # the Riemannian Hessian in (e_el, e_az): the coordinate one with its connection terms
    h01 = h_elaz - cot * g_az
    h11 = h_az + cot * g_el
    w0 = bx * (ce * ca) + by * (ce * sa) - bz * se  # u_bar along e_el = (ce ca, ce sa, -se)
    w1 = -bx * sa + by * ca  # along e_az = (-sa, ca, 0)
    z0, z1 = _solve_negative_definite(K, h_el, h01, h11, w0, w1)
    for j in range(t):  # cbar = -(z0 dg_el/dc + z1 dg_az/dc)
        caz, saz = cm[M.order[j]], sm[M.order[j]]
        q0, q1 = q[j], q[t + j]
        mq = M.m[j] * q0 / se
        cbar[M.cos_slot[j]] = -(z0 * caz * q1 - z1 * mq * saz)
        if M.sin_slot[j] >= 0:
            cbar[M.sin_slot[j]] = -(z0 * saz * q1 + z1 * mq * caz)
    return True
