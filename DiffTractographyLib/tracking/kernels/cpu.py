"""The CPU entry points: every row (or seed) of a call on all cores (``prange``), each to its end."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .common import Scratch
from .pmf import seed_peaks
from .rows import track_row

parallel_jit = njit(cache=True, nogil=True, parallel=True, error_model="numpy")


@parallel_jit
def track_rows(M, K, vol, R, P, sizes, seeds, starts, seed_ids, peaks, slots, bounds, status, fate, half_starts):
    """Track every row: ``seeds``/``starts`` (N, 3) points and unit start directions, ``seed_ids`` and
    ``peaks`` (N,) random-draw keys; writes ``slots`` (N, 2 budget + 1, 3), ``bounds`` (N, 2) begin/end
    in the slot, ``status`` (N, 2) per half, ``fate`` (N,) and each half's start direction
    ``half_starts`` (N, 2, 3). ``sizes``: lengths of the scratch arrays."""
    for r in prange(seeds.shape[0]):
        S = Scratch(np.empty(sizes[0], seeds.dtype), np.empty(sizes[1], seeds.dtype), np.empty(sizes[2], seeds.dtype),
                    np.empty(sizes[3], seeds.dtype), np.empty(sizes[4], np.float64), np.empty(sizes[5], np.float32))
        begin, end, s1, s2, f = track_row(M, K, S, vol, R, P, seeds[r, 0], seeds[r, 1], seeds[r, 2], starts[r, 0],
                                          starts[r, 1], starts[r, 2], seed_ids[r], peaks[r], slots[r], half_starts[r])
        bounds[r, 0], bounds[r, 1] = begin, end
        status[r, 0], status[r, 1], fate[r] = s1, s2, f


@parallel_jit
def peaks_at_seeds(M, K, vol, sizes, seeds, out, counts):
    """DIPY's start directions at each seed: peak vertices ``out`` (N, MAX_PEAKS) and ``counts`` (N,)."""
    for r in prange(seeds.shape[0]):
        S = Scratch(np.empty(sizes[0], seeds.dtype), np.empty(sizes[1], seeds.dtype), np.empty(sizes[2], seeds.dtype),
                    np.empty(sizes[3], seeds.dtype), np.empty(sizes[4], np.float64), np.empty(sizes[5], np.float32))
        counts[r] = seed_peaks(M, K, S, vol, seeds[r, 0], seeds[r, 1], seeds[r, 2], out[r])


@parallel_jit
def gather(slots, bounds, keep, offsets, points):
    """Copy the kept rows' streamlines (``slots[r, begin:end]``) to ``points`` at ``offsets``."""
    for i in prange(keep.shape[0]):
        r = keep[i]
        begin, end = bounds[r, 0], bounds[r, 1]
        at = offsets[i]
        for j in range(end - begin):
            points[at + j, 0] = slots[r, begin + j, 0]
            points[at + j, 1] = slots[r, begin + j, 1]
            points[at + j, 2] = slots[r, begin + j, 2]
