"""Kernel candidates on the CPU: the project's Numba Tensor_Det kernel against a port of the same
algorithm to NVIDIA Warp (one ``@wp.kernel`` thread per seed, device "cpu"), same DWI, same seeds,
same parameters, in one run; prints a table and saves a JSON record in benchmarks/results/.

    pip install warp-lang   # only this benchmark needs it
    python benchmarks/kernel_candidates.py [--seeds N]

Data: a 64^3 DWI with 2 mm voxels (``phantoms.dwi_phantom``: two straight bundles crossing at 90
degrees and an arc, 8 mm radius; one b=0 and 30 random b=1000 directions), the bundles' voxels as
mask, seeds uniform in the mask voxels, each started along the fibre direction of its voxel.
Numba: ``KernelTracker(algorithm="tensordet")`` with 1 thread and with every core. Warp: per step
the trilinear DWI (all volumes), the OLS tensor (7 x G pseudo-inverse), FA and ``wp.eig3`` (float64,
as the Numba kernel's Jacobi), stopping as Tensor_Det (FA, angle, image, mask, shared point budget);
it does not reproduce the Numba kernel's float32 rounding, so counts may differ slightly.
Each is timed on a warm call after a small first call (compilation or cache load, timed apart:
Numba caches in the package's __pycache__, Warp in ~/.cache/warp). ``cpu/wall`` is process CPU time
over wall time, the number of cores a call kept busy: Warp's CPU backend runs a launch on one thread.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

import numba
import numpy as np
import warp as wp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from DiffTractographyLib.fields import DWIField  # noqa: E402
from DiffTractographyLib.geometry import apply_affine  # noqa: E402
from DiffTractographyLib.phantoms import Bundle, dwi_phantom, fibre_fractions  # noqa: E402
from DiffTractographyLib.tracking.engine import KernelTracker  # noqa: E402
from records import commit, save  # noqa: E402

SHAPE = (64, 64, 64)
VOXEL = 2.0
PARAMS = dict(step_size=0.2, max_angle=45.0, cutoff=0.1, min_length=2.0, max_length=200.0)
WARM_UP_SEEDS = 64
T = TypeVar("T")

#: the 7 tensor-fit coefficients of one volume (a column of the pseudo-inverse)
vec7 = wp.types.vector(length=7, dtype=wp.float32)


def phantom() -> dict:
    """The DWI, its affine and gradient table, the bundle mask and the per-voxel fibre directions."""
    affine = np.diag([VOXEL] * 3 + [1.0])
    affine[:3, 3] = -VOXEL * (np.asarray(SHAPE) - 1) / 2  # grid centred at 0
    bundles = [Bundle.straight((-60, 0, 0), (60, 0, 0), radius=8.0),
               Bundle.straight((0, -60, 0), (0, 60, 0), radius=8.0),
               Bundle.arc((0, 30, -25), (1, 0, 0), (0, 0, 1), arc_radius=45.0, radius=8.0)]
    g = np.random.default_rng(0).normal(size=(30, 3))
    bvecs = np.r_[np.zeros((1, 3)), g / np.linalg.norm(g, axis=1, keepdims=True)]
    bvals = np.r_[0.0, np.full(30, 1000.0)]
    dwi = dwi_phantom(SHAPE, affine, bundles, bvals, bvecs)
    members, dirs = fibre_fractions(SHAPE, affine, bundles)
    return dict(dwi=dwi, affine=affine, bvals=bvals, bvecs=bvecs, mask=members.any(-1), members=members, dirs=dirs)


def seeds_in_mask(data: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` seeds (RAS mm) uniform in random mask voxels, each with the direction of the first
    bundle present in its voxel."""
    rng = np.random.default_rng(1)
    voxels = np.argwhere(data["mask"])[rng.integers(0, int(data["mask"].sum()), n)]
    points = apply_affine(data["affine"], voxels + rng.uniform(-0.5, 0.5, (n, 3)))
    i, j, k = voxels.T
    bundle = data["members"][i, j, k].argmax(-1)
    return points, data["dirs"][i, j, k, bundle]


def timed(call: Callable[[], T]) -> tuple[T, float, float]:
    """(result, wall seconds, process CPU seconds / wall seconds) of ``call()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = call()
    wall = time.perf_counter() - wall
    return out, wall, (time.process_time() - cpu) / wall


def row(name: str, threads: int, seconds: float, busy: float, n_seeds: int, lengths: np.ndarray,
        first_call: float | None) -> dict:
    """One line of the table from a timed call and its accepted streamlines' vertex counts."""
    points = int(lengths.sum())
    mean = points / max(len(lengths), 1)
    return dict(implementation=name, threads=threads, seconds=seconds, seeds_per_s=n_seeds / seconds,
                points_per_s=points / seconds, streamlines=len(lengths), points=points, mean_points=mean,
                mean_length_mm=(mean - 1) * PARAMS["step_size"], first_call_s=first_call, cpu_over_wall=busy)


# -- Numba: the project's kernel ------------------------------------------------------------------
def run_numba(data: dict, seeds: np.ndarray, directions: np.ndarray) -> list[dict]:
    field = DWIField(data["dwi"], data["affine"], data["bvals"], data["bvecs"])
    rows = []
    for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
        tracker = KernelTracker(field, algorithm="tensordet", mask=data["mask"], nthreads=threads, device="cpu",
                                **PARAMS)
        _, first, _ = timed(lambda: tracker(seeds[:WARM_UP_SEEDS], seed_directions=directions[:WARM_UP_SEEDS]))
        out, seconds, busy = timed(lambda: tracker(seeds, seed_directions=directions))
        rows.append(row("numba tensordet", threads, seconds, busy, len(seeds), out.lengths,
                        first if not rows else None))  # the first call of the first tracker compiles
    return rows


# -- Warp: the same algorithm as one kernel ---------------------------------------------------------
@wp.struct
class Dwi:
    values: wp.array2d(dtype=wp.float32)  # (X Y Z, G) channels-last
    dims: wp.vec3i
    to_voxel: wp.mat44  # RAS mm -> voxel
    solver: wp.array(dtype=vec7)  # (G,) columns of pinv(B)
    mask: wp.array3d(dtype=wp.uint8)


@wp.func
def in_mask(d: Dwi, p: wp.vec3) -> bool:
    """The nearest voxel (halves away from zero) is in the grid and the mask."""
    v = wp.transform_point(d.to_voxel, p)
    i, j, k = int(wp.round(v[0])), int(wp.round(v[1])), int(wp.round(v[2]))
    if i < 0 or j < 0 or k < 0 or i >= d.dims[0] or j >= d.dims[1] or k >= d.dims[2]:
        return False
    return d.mask[i, j, k] != wp.uint8(0)


@wp.func
def tensor_at(d: Dwi, p: wp.vec3):
    """Trilinear DWI at ``p``, OLS tensor of -log S: (inside the image, FA, principal eigenvector)."""
    v = wp.transform_point(d.to_voxel, p)
    for a in range(3):
        if v[a] <= -0.5 or v[a] >= float(d.dims[a]) - 0.5:
            return False, 0.0, wp.vec3(0.0)
    b = wp.vec3i(int(wp.floor(v[0])), int(wp.floor(v[1])), int(wp.floor(v[2])))
    f = v - wp.vec3(float(b[0]), float(b[1]), float(b[2]))
    hi = d.dims - wp.vec3i(1)
    i0, i1 = wp.clamp(b[0], 0, hi[0]), wp.clamp(b[0] + 1, 0, hi[0])
    j0, j1 = wp.clamp(b[1], 0, hi[1]), wp.clamp(b[1] + 1, 0, hi[1])
    k0, k1 = wp.clamp(b[2], 0, hi[2]), wp.clamp(b[2] + 1, 0, hi[2])
    ny, nz = d.dims[1], d.dims[2]
    c000, c100 = (i0 * ny + j0) * nz + k0, (i1 * ny + j0) * nz + k0
    c010, c110 = (i0 * ny + j1) * nz + k0, (i1 * ny + j1) * nz + k0
    c001, c101 = (i0 * ny + j0) * nz + k1, (i1 * ny + j0) * nz + k1
    c011, c111 = (i0 * ny + j1) * nz + k1, (i1 * ny + j1) * nz + k1
    gx, gy, gz = 1.0 - f[0], 1.0 - f[1], 1.0 - f[2]
    w000, w100, w010, w110 = gx * gy * gz, f[0] * gy * gz, gx * f[1] * gz, f[0] * f[1] * gz
    w001, w101, w011, w111 = gx * gy * f[2], f[0] * gy * f[2], gx * f[1] * f[2], f[0] * f[1] * f[2]
    t = vec7(0.0)
    for g in range(d.values.shape[1]):  # every volume: interpolate, -log, accumulate pinv(B) @ y
        s = (w000 * d.values[c000, g] + w100 * d.values[c100, g] + w010 * d.values[c010, g]
             + w110 * d.values[c110, g] + w001 * d.values[c001, g] + w101 * d.values[c101, g]
             + w011 * d.values[c011, g] + w111 * d.values[c111, g])
        y = float(0.0)
        if s > 0.0:
            y = -wp.log(s)
        t += d.solver[g] * y
    md = (t[0] + t[1] + t[2]) / 3.0
    off = t[3] * t[3] + t[4] * t[4] + t[5] * t[5]
    norm2 = t[0] * t[0] + t[1] * t[1] + t[2] * t[2] + 2.0 * off
    a0, a1, a2 = t[0] - md, t[1] - md, t[2] - md
    fa = float(0.0)
    if norm2 != 0.0:
        fa = wp.sqrt(1.5 * (a0 * a0 + a1 * a1 + a2 * a2 + 2.0 * off) / norm2)
    xx, yy, zz = wp.float64(t[0]), wp.float64(t[1]), wp.float64(t[2])
    xy, xz, yz = wp.float64(t[3]), wp.float64(t[4]), wp.float64(t[5])
    q, e = wp.eig3(wp.mat33d(xx, xy, xz, xy, yy, yz, xz, yz, zz))
    best = int(0)
    if e[1] > e[best]:
        best = 1
    if e[2] > e[best]:
        best = 2
    return True, fa, wp.vec3(float(q[0, best]), float(q[1, best]), float(q[2, best]))


@wp.func
def track_half(d: Dwi, p: wp.vec3, u: wp.vec3, step: float, cutoff: float, cos_max: float, budget: int,
               points: wp.array2d(dtype=wp.vec3), s: int, sign: int) -> int:
    """Track from ``p`` along ``u`` for at most ``budget`` new points, written at
    ``points[s, centre + sign * n]`` (the seed is at the centre of the row); returns n."""
    centre = (points.shape[1] - 1) // 2
    n = int(0)
    for _ in range(budget):
        inside, fa, e = tensor_at(d, p)
        if not inside:
            return n
        dot = wp.dot(u, e)
        if fa < cutoff or wp.abs(dot) < cos_max:
            return n
        if dot < 0.0:
            e = -e
        q = p + step * e
        if not in_mask(d, q):
            return n
        n = n + 1
        points[s, centre + sign * n] = q
        p = q
        u = e
    return n


@wp.kernel
def track_seeds(d: Dwi, seeds: wp.array(dtype=wp.vec3), starts: wp.array(dtype=wp.vec3), step: float,
                cutoff: float, cos_max: float, budget: int, points: wp.array2d(dtype=wp.vec3),
                counts: wp.array2d(dtype=wp.int32)):
    """One seed: forwards along the start direction, then backwards along its reverse, the two
    halves sharing ``budget`` new points; counts (backward, forward), -1 for a rejected seed."""
    s = wp.tid()
    p = seeds[s]
    inside, fa, e = tensor_at(d, p)
    if not in_mask(d, p) or not inside or fa < cutoff:
        counts[s, 0] = -1
        counts[s, 1] = -1
        return
    if wp.dot(e, starts[s]) < 0.0:
        e = -e
    points[s, budget] = p
    forward = track_half(d, p, e, step, cutoff, cos_max, budget, points, s, 1)
    backward = track_half(d, p, -e, step, cutoff, cos_max, wp.max(budget - forward, 1), points, s, -1)
    counts[s, 0] = backward
    counts[s, 1] = forward


def warp_dwi(data: dict) -> Dwi:
    """The DWI, mask and pseudo-inverse of MRtrix3's b-matrix on Warp's CPU device."""
    b, (x, y, z) = data["bvals"], data["bvecs"].T
    bmatrix = np.stack([b * x * x, b * y * y, b * z * z, 2 * b * x * y, 2 * b * x * z, 2 * b * y * z,
                        -np.ones_like(b)], -1)  # MRtrix3's grad2bmatrix: -log S = B @ D
    d = Dwi()
    d.values = wp.array(data["dwi"].reshape(-1, data["dwi"].shape[-1]), dtype=wp.float32, device="cpu")
    d.dims = wp.vec3i(*SHAPE)
    d.to_voxel = wp.mat44(np.linalg.inv(data["affine"]).astype(np.float32))
    d.solver = wp.array(np.linalg.pinv(bmatrix).T.astype(np.float32), dtype=vec7, device="cpu")
    d.mask = wp.array(data["mask"].astype(np.uint8), dtype=wp.uint8, device="cpu")
    return d


def track_warp(d: Dwi, seeds: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Launch one thread per seed and gather the accepted streamlines: (points (P, 3), lengths (N,),
    seconds of the launch alone)."""
    budget = math.ceil(PARAMS["max_length"] / PARAMS["step_size"])
    min_points = 1 + math.ceil(PARAMS["min_length"] / PARAMS["step_size"])
    n = len(seeds)
    points = wp.empty((n, 2 * budget + 1), dtype=wp.vec3, device="cpu")
    counts = wp.empty((n, 2), dtype=wp.int32, device="cpu")
    starts = [wp.array(seeds, dtype=wp.vec3, device="cpu"), wp.array(directions, dtype=wp.vec3, device="cpu")]
    start = time.perf_counter()
    wp.launch(track_seeds, dim=n, device="cpu",
              inputs=[d, *starts, PARAMS["step_size"], PARAMS["cutoff"], math.cos(math.radians(PARAMS["max_angle"])),
                      budget, points, counts])
    wp.synchronize_device("cpu")
    launch = time.perf_counter() - start
    back, fwd = counts.numpy().T
    keep = np.flatnonzero((back >= 0) & (back + 1 + fwd >= min_points))
    lengths = back[keep] + 1 + fwd[keep]
    rows = np.repeat(keep, lengths)
    first = np.repeat(budget - back[keep] - (np.cumsum(lengths) - lengths), lengths)
    return points.numpy()[rows, first + np.arange(len(rows))], lengths, launch


def run_warp(data: dict, seeds: np.ndarray, directions: np.ndarray) -> list[dict]:
    d = warp_dwi(data)
    _, first, _ = timed(lambda: track_warp(d, seeds[:WARM_UP_SEEDS], directions[:WARM_UP_SEEDS]))
    (_, lengths, launch), seconds, busy = timed(lambda: track_warp(d, seeds, directions))
    return [row("warp tensordet (cpu)", 1, seconds, busy, len(seeds), lengths, first) | dict(launch_s=launch)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20000)
    args = ap.parse_args()
    wp.init()
    data = phantom()
    seeds, directions = seeds_in_mask(data, args.seeds)
    rows = run_numba(data, seeds, directions) + run_warp(data, seeds, directions)
    print(f"{'implementation':22s} {'threads':>7s} {'seconds':>8s} {'seeds/s':>9s} {'points/s':>10s} "
          f"{'streamlines':>11s} {'pts/sl':>7s} {'mean mm':>7s} {'1st call s':>10s} {'cpu/wall':>8s}")
    for r in rows:
        first = f"{r['first_call_s']:10.2f}" if r["first_call_s"] is not None else f"{'':>10s}"
        print(f"{r['implementation']:22s} {r['threads']:7d} {r['seconds']:8.2f} {r['seeds_per_s']:9.0f} "
              f"{r['points_per_s']:10.0f} {r['streamlines']:11d} {r['mean_points']:7.1f} {r['mean_length_mm']:7.1f} "
              f"{first} {r['cpu_over_wall']:8.2f}")
    print("seconds: the whole call (Warp: launch, then the accepted streamlines gathered with numpy, as the "
          f"Numba tracker returns them); Warp's launch alone: {rows[-1]['launch_s']:.2f} s")
    print("1st call: compilation, or loading from the cache (Numba: the package's __pycache__, "
          f"Warp: {wp.config.kernel_cache_dir}). Warp's CPU backend runs a launch on one thread.")
    record = dict(commit=commit(), device="cpu", cpu=platform.processor() or platform.machine(), cores=os.cpu_count(),
                  numba=numba.__version__, warp=wp.__version__, numpy=np.__version__, grid=list(SHAPE), voxel_mm=VOXEL,
                  volumes=int(data["dwi"].shape[-1]), mask_voxels=int(data["mask"].sum()), seeds=args.seeds,
                  params=PARAMS, rows=rows)
    print(f"saved {save(record, 'kernel_candidates_' + record['commit'] + '_cpu')}")


if __name__ == "__main__":
    main()
