"""Measures of streamlines held as numpy arrays (points (P, 3), vertex counts (N,)), without torch:
what a read-filter-write command needs (``difftract select`` on lengths alone), and what
``selection`` builds on."""
from __future__ import annotations

import numpy as np


def polyline_lengths(points: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N,) float32 length in mm as MRtrix3 computes it: float32 segment norms added one after the
    other in float32 (0 for a single point). Vectorised across streamlines: the k-th segment of every
    streamline that has one is added at step k, so each sum keeps MRtrix3's order."""
    points = points.astype(np.float32, copy=False)
    d = np.diff(points, axis=0)
    d *= d
    seg = np.sqrt(d[:, 0] + d[:, 1] + d[:, 2])
    n_seg = np.maximum(np.asarray(lengths, dtype=np.int64) - 1, 0)
    order = np.argsort(-n_seg, kind="stable")  # the longest first: at step k the active ones are a prefix
    first = (np.cumsum(lengths) - lengths)[order]
    # streamlines with more than k segments, for each step k
    active = np.searchsorted(-n_seg[order], -np.arange(int(n_seg.max(initial=0))), side="left")
    sums = np.zeros(len(order), dtype=np.float32)
    for k, m in enumerate(active):
        sums[:m] += seg[first[:m] + k]
    out = np.empty_like(sums)
    out[order] = sums
    return out


def within_length(points: np.ndarray, lengths: np.ndarray, min_length: float | None,
                  max_length: float | None) -> np.ndarray:
    """(N,) bool: the streamlines whose length (mm, as ``tckedit`` measures it) is within the
    inclusive limits (None: no limit)."""
    keep = np.ones(len(lengths), dtype=bool)
    if min_length is None and max_length is None:
        return keep
    mm = polyline_lengths(points, lengths)
    if min_length is not None:
        keep &= mm >= np.float32(min_length)
    if max_length is not None:
        keep &= mm <= np.float32(max_length)
    return keep
