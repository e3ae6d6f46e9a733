"""The CUDA entry points: one thread per row, from the same algorithm source as the CPU kernels
(numba-cuda compiles the ``njit`` functions a kernel calls for the GPU). Work arrays are per-thread
local memory. Under numba-cuda's simulator (``NUMBA_ENABLE_CUDASIM=1``) the same kernels run on the
CPU, which is how CI checks their logic without a GPU.

Arrays reach the kernels inside namedtuples: the field, method tables and regions are copied to the
GPU once per tracker (``to_device``), the rows of a chunk once per call.
"""
from __future__ import annotations

import math
from collections import namedtuple
from functools import lru_cache

import numpy as np
from numba import cuda

from .availability import SIMULATOR
from .common import Scratch
from .pmf import PmfData, seed_peaks
from .rows import track_row
from .sdstream import SDStreamData

THREADS_PER_BLOCK = 64
#: per-thread local work arrays of each method family (``Scratch`` c, a, b, q, d): the largest
#: inputs served (SH up to lmax 12, 512 DWI volumes, spheres of 1024 vertices)
LIMITS = {"sdstream": (96, 64, 64, 256, 1), "tensordet": (512, 8, 512, 1, 18), "pmf": (96, 1024, 1024, 1, 1024)}

#: the arrays of one call: inputs (seeds, starts, seed ids, peaks) and outputs (slots, bounds, status,
#: fate, each half's start direction)
Rows = namedtuple("Rows", "seeds starts seed_ids peaks slots bounds status fate half_starts")
#: the arrays of a peak search: seeds in, peak vertices and counts out
Peaks = namedtuple("Peaks", "seeds out counts")


def family(M) -> str:
    return "sdstream" if isinstance(M, SDStreamData) else "pmf" if isinstance(M, PmfData) else "tensordet"


@lru_cache(maxsize=None)
def _kernels(dtype: str, kind: str):
    """The track and peak kernels of one working precision and method family, compiled on first use."""
    from numba import float32, float64

    f = float32 if dtype == "float32" else float64
    nc, na, nb, nq, nd = LIMITS[kind]

    @cuda.jit(cache=not SIMULATOR)
    def track(M, K, vol, R, P, sizes, rows):
        r = cuda.grid(1)
        if r >= rows.seeds.shape[0]:
            return
        S = Scratch(cuda.local.array(nc, f)[:sizes[0]], cuda.local.array(na, f)[:sizes[1]],
                    cuda.local.array(nb, f)[:sizes[2]], cuda.local.array(nq, f)[:sizes[3]],
                    cuda.local.array(nd, float64)[:sizes[4]])
        s = rows.seeds
        d = rows.starts
        begin, end, s1, s2, fate = track_row(M, K, S, vol, R, P, s[r, 0], s[r, 1], s[r, 2], d[r, 0], d[r, 1], d[r, 2],
                                             rows.seed_ids[r], rows.peaks[r], rows.slots[r], rows.half_starts[r])
        rows.bounds[r, 0] = begin
        rows.bounds[r, 1] = end
        rows.status[r, 0] = s1
        rows.status[r, 1] = s2
        rows.fate[r] = fate

    @cuda.jit(cache=not SIMULATOR)
    def peaks(M, K, vol, sizes, io):
        r = cuda.grid(1)
        if r >= io.seeds.shape[0]:
            return
        S = Scratch(cuda.local.array(nc, f)[:sizes[0]], cuda.local.array(na, f)[:sizes[1]],
                    cuda.local.array(nb, f)[:sizes[2]], cuda.local.array(nq, f)[:sizes[3]],
                    cuda.local.array(nd, float64)[:sizes[4]])
        s = io.seeds
        io.counts[r] = seed_peaks(M, K, S, vol, s[r, 0], s[r, 1], s[r, 2], io.out[r])

    return track, peaks


@lru_cache(maxsize=None)
def _gather_kernel():
    @cuda.jit(cache=not SIMULATOR)
    def gather(slots, bounds, keep, offsets, points):
        i = cuda.grid(1)
        if i >= keep.shape[0]:
            return
        r = keep[i]
        at = offsets[i]
        for j in range(bounds[r, 1] - bounds[r, 0]):
            for k in range(3):
                points[at + j, k] = slots[r, bounds[r, 0] + j, k]

    return gather


def _check_sizes(M, sizes) -> tuple:
    limits = LIMITS[family(M)]
    if any(int(s) > lim for s, lim in zip(sizes, limits)):
        raise ValueError(f"the CUDA kernels hold at most {limits} work values per thread for {family(M)} "
                         f"(this input needs {[int(s) for s in sizes]}); track on the CPU")
    return limits


def to_device(t):
    """A namedtuple with its arrays on the GPU (unchanged under the simulator)."""
    if SIMULATOR:
        return t
    return type(t)(*(cuda.to_device(x) if isinstance(x, np.ndarray) else x for x in t))


def _blocks(n: int) -> int:
    return max(1, math.ceil(n / THREADS_PER_BLOCK))


def track_rows(M, K, vol, R, P, sizes, seeds, starts, seed_ids, peaks, slots, bounds, status, fate, half_starts):
    """``cpu.track_rows`` on the GPU (same arguments; ``M``, ``vol``, ``R`` already ``to_device``).
    Returns the slots, left on the GPU for ``gather``; bounds, status and fate are copied back."""
    _check_sizes(M, sizes)
    track = _kernels(seeds.dtype.name, family(M))[0]
    if SIMULATOR:
        rows = Rows(seeds, starts, seed_ids, peaks, slots, bounds, status, fate, half_starts)
    else:
        from numba import cuda

        rows = to_device(Rows(seeds, starts, seed_ids, peaks, None, bounds, status, fate, half_starts))
        rows = rows._replace(slots=cuda.device_array(slots.shape, dtype=slots.dtype))
    track[_blocks(len(seeds)), THREADS_PER_BLOCK](M, K, vol, R, P, sizes, rows)
    if not SIMULATOR:
        rows.bounds.copy_to_host(bounds)
        rows.status.copy_to_host(status)
        rows.fate.copy_to_host(fate)
        rows.half_starts.copy_to_host(half_starts)
    return rows.slots


def peaks_at_seeds(M, K, vol, sizes, seeds, out, counts):
    """``cpu.peaks_at_seeds`` on the GPU."""
    _check_sizes(M, sizes)
    kernel = _kernels(seeds.dtype.name, family(M))[1]
    io = to_device(Peaks(seeds, out, counts))
    kernel[_blocks(len(seeds)), THREADS_PER_BLOCK](M, K, vol, sizes, io)
    if not SIMULATOR:
        io.out.copy_to_host(out)
        io.counts.copy_to_host(counts)


def gather(slots, bounds, keep, offsets, points):
    """Compact the kept rows of the (device) ``slots`` into ``points`` (host)."""
    kernel = _gather_kernel()
    if SIMULATOR:
        kernel[_blocks(len(keep)), THREADS_PER_BLOCK](slots, bounds, keep, offsets, points)
        return
    device_points = cuda.device_array(points.shape, dtype=points.dtype)
    kernel[_blocks(len(keep)), THREADS_PER_BLOCK](slots, cuda.to_device(bounds), cuda.to_device(keep),
                                                  cuda.to_device(offsets), device_points)
    device_points.copy_to_host(points)
