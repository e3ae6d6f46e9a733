"""What every kernel shares: the typed constants, trilinear sampling of a volume, the stopping
regions and the counter-based random draws.

Every function here is compiled once for the CPU (``numba.njit``, cached on disk) and serves the
CUDA kernels unchanged (numba-cuda compiles ``njit`` functions called from a kernel for the GPU).
Arithmetic follows the torch implementation operation by operation, in the working precision
``K.f`` (float32 like MRtrix3, or float64 like DIPY): every floating constant comes from ``K`` so that
no float64 literal widens a float32 expression, and every voxel transform is in float64 as in the
references.
"""
from __future__ import annotations

import math
import warnings
from collections import namedtuple
from functools import partial

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.errors import NumbaIRAssumptionWarning
from numba.extending import intrinsic, register_jitable

from ... import rng
from ...stopping import Status

#: compile options of every kernel function: on-disk cache, no GIL, IEEE division (x / 0 = inf, no
#: exception), no fast-math (the references' rounding is part of the result), and no reference
#: counting: these functions only read arrays their caller owns (and views of them), and counting
#: the arrays of the data tuples at every call would cost more than the arithmetic
jit = partial(njit, cache=True, nogil=True, error_model="numpy", _nrt=False)

# Numba's IR inliner (``inline="always"``, which keeps the method tuples out of per-step calls) leaves
# the inlined variables out of the caller's scope and says so in a pedantic warning at compile time
warnings.filterwarnings("ignore", message=r"variable '.*' is not in scope", category=NumbaIRAssumptionWarning)

CONTINUE = int(Status.CONTINUE)
OUTSIDE_IMAGE = int(Status.OUTSIDE_IMAGE)
LOW_SIGNAL = int(Status.LOW_SIGNAL)
HIGH_CURVATURE = int(Status.HIGH_CURVATURE)
EXIT_MASK = int(Status.EXIT_MASK)
MAX_LENGTH = int(Status.MAX_LENGTH)

#: constants in the working precision; ``f`` is the float type itself (``K.f(x)`` casts)
Consts = namedtuple("Consts", "f zero half one two three one_half weight_floor peak_tolerance max_dir_change "
                              "pole tiny cells_half")


def make_consts(dtype) -> Consts:
    f = np.dtype(dtype).type
    return Consts(f, f(0.0), f(0.5), f(1.0), f(2.0), f(3.0), f(1.5), f(1e-6), f(1e-4), f(0.2), f(1e-4), f(1e-30),
                  f(32.0))


#: a 4-D volume sampled by trilinear interpolation: values (X Y Z, C) channels-last rows, dims (3,),
#: the RAS -> voxel transform (3, 4) float64, and for the ``mrtrix`` rule the support mask (X Y Z,)
#: (voxels with a non-zero or NaN channel; one False entry for the ``dipy`` rule)
Volume = namedtuple("Volume", "values dims ras_to_voxel support mrtrix")

#: the stopping regions, all of which must contain a point: binary masks (concatenated flat bool
#: data with offsets, dims (M, 3), rule (M,) 0 mrtrix / 1 dipy, MRtrix3's float32 crop transform
#: (M, 3, 4) and crop origin (M, 3), float64 RAS -> voxel (M, 3, 4)) and threshold maps (flat
#: float64 data concatenated with offsets, dims, transforms, thresholds)
Regions = namedtuple("Regions", "n_masks mask_data mask_offsets mask_dims mask_rule mask_crop mask_origin "
                                "mask_to_voxel n_maps map_data map_offsets map_dims map_to_voxel map_threshold")

#: per-row work arrays: ``c`` field samples, ``a``/``b``/``q`` method work space (working
#: precision), ``d`` float64 and ``w`` float32 work space
Scratch = namedtuple("Scratch", "c a b q d w")


@jit(inline="always")
def dot3(ax, ay, az, bx, by, bz):
    """a . b in the order of Eigen's unrolled 3-vector reduction, a_x b_x + (a_y b_y + a_z b_z):
    MRtrix3's ``dot``, ``squaredNorm`` and so ``normalize``, whose rounding steers its peak search
    near the SH frame's z axis."""
    return ax * bx + (ay * by + az * bz)


@jit(inline="always")
def round_half_away(v):
    """C's ``std::round`` of a float64 as int64 (halves away from zero)."""
    if v < 0.0:
        return -np.int64(math.floor(-v + 0.5))
    return np.int64(math.floor(v + 0.5))


@jit
def round_half_even(v):
    """numpy's ``rint`` of a float64 as int64 (halves to even); branch-free."""
    f = math.floor(v)
    r = np.int64(f)
    d = v - f
    return r + np.int64((d > 0.5) | ((d == 0.5) & (r & 1 == 1)))


@jit(inline="always")
def to_voxel(a, px, py, pz):
    """RAS mm -> float64 voxel coordinates through ``a`` (3, 4)."""
    x, y, z = np.float64(px), np.float64(py), np.float64(pz)
    return (x * a[0, 0] + y * a[0, 1] + z * a[0, 2] + a[0, 3],
            x * a[1, 0] + y * a[1, 1] + z * a[1, 2] + a[1, 3],
            x * a[2, 0] + y * a[2, 1] + z * a[2, 2] + a[2, 3])


@jit(inline="always")
def _axis(v, n, mrtrix):
    """Bounds test, the two voxel indices (the edge voxel extends over the outer half voxel) and the
    blend fraction of one voxel coordinate."""
    inside = (v > -0.5 if mrtrix else v >= -0.5) and v < n - 0.5
    base = math.floor(v)
    f = v - base
    if v < 0.0 or v > n - 1:
        f = 0.0
    b = np.int64(base) if inside else 0
    return inside, min(max(b, 0), n - 1), min(max(b + 1, 0), n - 1), f


@jit(inline="always")
def corner_index(corner, i0, i1, j0, j1, k0, k1, ny, nz):
    """Flat index of corner ``corner`` (x inner, then y, z outer: MRtrix3's order)."""
    i = i1 if corner & 1 else i0
    j = j1 if corner & 2 else j0
    k = k1 if corner & 4 else k0
    return (i * ny + j) * nz + k


@jit(inline="always")
def locate(vol, K, px, py, pz):
    """Where a RAS-mm point falls in ``vol``: (inside, the two voxel indices and the blend fraction
    of each axis, the float64 voxel coordinates). ``mrtrix`` rule: strict lower bound and the
    nearest voxel in the support."""
    vx, vy, vz = to_voxel(vol.ras_to_voxel, px, py, pz)
    nx, ny, nz = vol.dims[0], vol.dims[1], vol.dims[2]
    inx, i0, i1, fx = _axis(vx, nx, vol.mrtrix)
    iny, j0, j1, fy = _axis(vy, ny, vol.mrtrix)
    inz, k0, k1, fz = _axis(vz, nz, vol.mrtrix)
    inside = inx and iny and inz
    if inside and vol.mrtrix:
        ri = min(max(round_half_away(vx), 0), nx - 1)
        rj = min(max(round_half_away(vy), 0), ny - 1)
        rk = min(max(round_half_away(vz), 0), nz - 1)
        inside = vol.support[(ri * ny + rj) * nz + rk]
    return inside, i0, i1, j0, j1, k0, k1, fx, fy, fz, vx, vy, vz


@jit(inline="always")
def corner_weight(vol, K, corner, fx, fy, fz):
    """Trilinear weight of ``corner`` in the working precision (x * (z * y), formed from float64
    fractions; ``mrtrix`` rule: under 1e-6 set to 0)."""
    wx = K.f(fx) if corner & 1 else K.f(1.0 - fx)
    wy = K.f(fy) if corner & 2 else K.f(1.0 - fy)
    wz = K.f(fz) if corner & 4 else K.f(1.0 - fz)
    w = wx * (wz * wy)
    if vol.mrtrix and w < K.weight_floor:
        w = K.zero
    return w


@jit(inline="always")
def corner_rows(vol, i0, i1, j0, j1, k0, k1):
    """The eight corners' rows of ``vol.values`` in ``corner_index``'s order."""
    ny, nz = vol.dims[1], vol.dims[2]
    values = vol.values
    return (values[(i0 * ny + j0) * nz + k0], values[(i1 * ny + j0) * nz + k0],
            values[(i0 * ny + j1) * nz + k0], values[(i1 * ny + j1) * nz + k0],
            values[(i0 * ny + j0) * nz + k1], values[(i1 * ny + j0) * nz + k1],
            values[(i0 * ny + j1) * nz + k1], values[(i1 * ny + j1) * nz + k1])


@jit(inline="always")
def sample(vol, K, px, py, pz, out):
    """Trilinear interpolation of ``vol`` at a RAS-mm point into ``out`` (C,); returns ``inside``
    (0 everywhere outside). ``interpolation.VolumeField.sample``'s arithmetic: weights formed in
    float64 and cast, products in the working precision, corners c = x + 2 y + 4 z summed in order;
    ``mrtrix`` rule: strict lower bound, nearest voxel in the support, weights under 1e-6 set to 0,
    and the corners summed as MRtrix3's ``Interp::Linear::value()`` does (``mrtrix_corner_sum``)."""
    inside, i0, i1, j0, j1, k0, k1, fx, fy, fz, vx, vy, vz = locate(vol, K, px, py, pz)
    if not inside:
        for ch in range(out.shape[0]):
            out[ch] = K.zero
        return False
    w0, w1 = corner_weight(vol, K, 0, fx, fy, fz), corner_weight(vol, K, 1, fx, fy, fz)
    w2, w3 = corner_weight(vol, K, 2, fx, fy, fz), corner_weight(vol, K, 3, fx, fy, fz)
    w4, w5 = corner_weight(vol, K, 4, fx, fy, fz), corner_weight(vol, K, 5, fx, fy, fz)
    w6, w7 = corner_weight(vol, K, 6, fx, fy, fz), corner_weight(vol, K, 7, fx, fy, fz)
    r0, r1, r2, r3, r4, r5, r6, r7 = corner_rows(vol, i0, i1, j0, j1, k0, k1)
    if vol.mrtrix:  # one pass each, the sums in registers
        for ch in range(out.shape[0]):
            out[ch] = mrtrix_corner_sum(w0 * r0[ch], w1 * r1[ch], w2 * r2[ch], w3 * r3[ch], w4 * r4[ch], w5 * r5[ch],
                                        w6 * r6[ch], w7 * r7[ch])
    else:
        for ch in range(out.shape[0]):
            out[ch] = ((((((w0 * r0[ch] + w1 * r1[ch]) + w2 * r2[ch]) + w3 * r3[ch]) + w4 * r4[ch]) + w5 * r5[ch])
                       + w6 * r6[ch]) + w7 * r7[ch]
    return True


@jit(inline="always")
def mrtrix_corner_sum(t0, t1, t2, t3, t4, t5, t6, t7):
    """The weighted corners (c = x + 2 y + 4 z) summed as MRtrix3 3.0's ``Interp::Linear::value()``
    does: Eigen's dot of two 8-vectors, two SSE packets of 4 added lane by lane, then the lanes
    pairwise, ((t0 + t4) + (t2 + t6)) + ((t1 + t5) + (t3 + t7)) (bit-equal to ``tcksample``)."""
    return ((t0 + t4) + (t2 + t6)) + ((t1 + t5) + (t3 + t7))


@jit(inline="always")
def _mask_value(R, m, i, j, k):
    """Mask ``m`` at voxel (i, j, k) of its grid (False outside it)."""
    dims = R.mask_dims[m]
    if i < 0 or j < 0 or k < 0 or i >= dims[0] or j >= dims[1] or k >= dims[2]:
        return False
    return R.mask_data[R.mask_offsets[m] + (i * dims[1] + j) * dims[2] + k]


@jit(inline="always")
def _in_mask(R, m, px, py, pz):
    # each rule ends in its own lookup: with one shared tail LLVM computes both rules' voxels on every
    # call (a select instead of a branch), 60 ns instead of 9
    if R.mask_rule[m] == 0:  # MRtrix3: float32 transform of the cropped image, halves away from zero
        a = R.mask_crop[m]
        x, y, z = np.float32(px), np.float32(py), np.float32(pz)
        i = round_half_away(np.float64((a[0, 0] * x + a[0, 1] * y) + a[0, 2] * z + a[0, 3])) + R.mask_origin[m, 0]
        j = round_half_away(np.float64((a[1, 0] * x + a[1, 1] * y) + a[1, 2] * z + a[1, 3])) + R.mask_origin[m, 1]
        k = round_half_away(np.float64((a[2, 0] * x + a[2, 1] * y) + a[2, 2] * z + a[2, 3])) + R.mask_origin[m, 2]
        return _mask_value(R, m, i, j, k)
    vx, vy, vz = to_voxel(R.mask_to_voxel[m], px, py, pz)  # DIPY: float64 voxel coordinates, halves to even
    return _mask_value(R, m, round_half_even(vx), round_half_even(vy), round_half_even(vz))


@jit
def _above_threshold(R, m, px, py, pz):
    """DIPY's ThresholdStoppingCriterion: float64 trilinear value (DIPY's bounds) > threshold."""
    nx, ny, nz = R.map_dims[m, 0], R.map_dims[m, 1], R.map_dims[m, 2]
    vx, vy, vz = to_voxel(R.map_to_voxel[m], px, py, pz)
    inx, i0, i1, fx = _axis(vx, nx, False)
    iny, j0, j1, fy = _axis(vy, ny, False)
    inz, k0, k1, fz = _axis(vz, nz, False)
    if not (inx and iny and inz):
        return False
    value = 0.0
    for corner in range(8):
        w = ((fx if corner & 1 else 1.0 - fx)
             * ((fz if corner & 4 else 1.0 - fz) * (fy if corner & 2 else 1.0 - fy)))
        term = w * R.map_data[R.map_offsets[m] + corner_index(corner, i0, i1, j0, j1, k0, k1, ny, nz)]
        value = term if corner == 0 else value + term
    return value > R.map_threshold[m]


@jit(inline="always")
def contains(R, px, py, pz):
    """Whether every stopping region contains the RAS-mm point (True when there are none)."""
    for m in range(R.n_masks):
        if not _in_mask(R, m, px, py, pz):
            return False
    for m in range(R.n_maps):
        if not _above_threshold(R, m, px, py, pz):
            return False
    return True


# the counter-based hash of ``rng``, compiled where a kernel calls it (the same functions serve numpy and torch)
mix = register_jitable(rng.mix)
stream_key = register_jitable(rng.stream_key)
draw_bits = register_jitable(rng.draw_bits)


@jit
def uniform(key, draw):
    """Draw ``draw`` of the stream ``key`` as a float64 in (0, 1) (``rng.uniform``)."""
    return (np.float64(draw_bits(key, draw)) + 0.5) * (1.0 / 4294967296.0)


@intrinsic
def _float_bits(typingctx, x):
    """The IEEE 754 bits of a float64, as an int64."""
    if x != types.float64:
        return None
    return types.int64(x), lambda context, builder, signature, args: builder.bitcast(args[0], ir.IntType(64))


@intrinsic
def _bits_float(typingctx, x):
    """The float64 whose IEEE 754 bits an int64 holds."""
    if x != types.int64:
        return None
    return types.float64(x), lambda context, builder, signature, args: builder.bitcast(args[0], ir.DoubleType())


_SQRT2 = math.sqrt(2.0)
_LN2 = math.log(2.0)


@partial(njit, cache=True, nogil=True, error_model="numpy", _nrt=False, inline="always")
def log_positive(x):
    """log ``x`` of a normal positive float64 within 2 ulp, without branches (a loop over it
    vectorises where ``math.log`` calls libm per element): x = m 2^e with m in [sqrt(1/2), sqrt(2)),
    log m = 2 atanh(s) for s = (m - 1) / (m + 1), |s| <= 0.172, its series to s^23 (< 1e-18)."""
    bits = _float_bits(x)
    e = (bits >> 52) - 1023
    m = _bits_float((bits & 0xFFFFFFFFFFFFF) | 0x3FF0000000000000)
    big = m > _SQRT2
    m = m * 0.5 if big else m
    e = e + 1 if big else e
    s = (m - 1.0) / (m + 1.0)
    z = s * s
    series = 1.0 / 23.0
    for k in range(10, 0, -1):
        series = series * z + 1.0 / (2 * k + 1)
    return np.float64(e) * _LN2 + 2.0 * s + 2.0 * s * z * series
