"""Measures of streamlines held as numpy arrays (points (P, 3), vertex counts (N,)), without torch:
what a read-filter-write command needs (``difftract select`` on lengths alone), and what
``selection`` builds on.

``starts`` locates each streamline's first vertex in ``points`` (row index); by default the
streamlines are packed one after the other, and .tck's stored rows (``io.read_tck_rows``) put a
NaN row after each, so ``starts = cumsum(lengths + 1) - lengths - 1`` measures them in place.
"""
from __future__ import annotations

import numpy as np


def packed_starts(lengths: np.ndarray, gap: int = 0) -> np.ndarray:
    """(N,) int64 row of each streamline's first vertex when the streamlines follow one another with
    ``gap`` rows after each (0: packed; 1: .tck's stored rows)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.cumsum(lengths + gap) - lengths - gap


def _segment_norms(points: np.ndarray, block: int = 1 << 16) -> np.ndarray:
    """(P,) float32: the length in mm of the step from row i to row i + 1 (the last entry 0), the
    float32 norm MRtrix3 takes: sqrt((dx^2 + dy^2) + dz^2). Computed ``block`` rows at a time in
    cache-sized buffers, not through (P, 3) temporaries."""
    points = points.astype(np.float32, copy=False)  # MRtrix3 holds vertices in float32 (also from Float64 files)
    norms = np.zeros(len(points), dtype=np.float32)
    d = np.empty((min(block, len(points)), 3), dtype=np.float32)
    for start in range(0, len(points) - 1, block):
        stop = min(start + block, len(points) - 1)
        step, seg = d[:stop - start], norms[start:stop]
        np.subtract(points[start + 1:stop + 1], points[start:stop], out=step)
        step *= step
        np.add(step[:, 0], step[:, 1], out=seg)
        seg += step[:, 2]
    return np.sqrt(norms, out=norms)


def _in_order_sums(norms: np.ndarray, starts: np.ndarray, n_seg: np.ndarray) -> np.ndarray:
    """(N,) float32 sums of norms[starts_i : starts_i + n_seg_i], added one after the other in
    float32 as MRtrix3 adds them. Vectorised across streamlines: the k-th segment of every streamline
    that has one is added at step k."""
    order = np.argsort(-n_seg, kind="stable")  # the longest first: at step k the active ones are a prefix
    index = starts[order]
    # streamlines with more than k segments, for each step k
    active = np.searchsorted(-n_seg[order], -np.arange(int(n_seg.max(initial=0))), side="left")
    sums = np.zeros(len(order), dtype=np.float32)
    for m in active:
        sums[:m] += norms[index[:m]]
        index[:m] += 1
    out = np.empty_like(sums)
    out[order] = sums
    return out


def polyline_lengths(points: np.ndarray, lengths: np.ndarray, starts: np.ndarray | None = None) -> np.ndarray:
    """(N,) float32 length in mm as MRtrix3 computes it: float32 segment norms added one after the
    other in float32 (0 for a single point)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = packed_starts(lengths) if starts is None else np.asarray(starts, dtype=np.int64)
    return _in_order_sums(_segment_norms(points), starts, np.maximum(lengths - 1, 0))


def tckedit_limits(min_length: float | None, max_length: float | None,
                   header: dict[str, str]) -> tuple[float | None, float | None]:
    """The length limits ``tckedit`` applies to a .tck with these header fields: a ``step_size``
    widens both by 0.1 step (0.5 / ``downsample_factor`` step), in float32, so that a length set to
    an exact multiple of the step survives rounding (MRtrix3 3.0's Editing::Worker::Thresholds)."""
    try:
        step = np.float32(header["step_size"])
        margin = np.float32(0.5) / np.float32(header["downsample_factor"]) if "downsample_factor" in header \
            else np.float32(0.1)
    except (KeyError, ValueError):
        return min_length, max_length
    if not np.isfinite(step):
        return min_length, max_length
    widen = margin * step
    return (None if min_length is None else float(np.float32(min_length) - widen),
            None if max_length is None else float(np.float32(max_length) + widen))


def within_length(points: np.ndarray, lengths: np.ndarray, min_length: float | None,
                  max_length: float | None, starts: np.ndarray | None = None) -> np.ndarray:
    """(N,) bool: the streamlines whose length (mm, as ``tckedit`` measures it: ``polyline_lengths``)
    is within the inclusive limits (None: no limit).

    The lengths are first summed in numpy's fast order: a float32 sum of n terms in any order is
    within n * 2^-24 of their sum relative to it, so two such sums differ by at most n * 2^-23
    relative, and only the streamlines this close to a limit are summed again in MRtrix3's order."""
    keep = np.ones(len(lengths), dtype=bool)
    if min_length is None and max_length is None:
        return keep
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = packed_starts(lengths) if starts is None else np.asarray(starts, dtype=np.int64)
    n_seg = np.maximum(lengths - 1, 0)
    norms = _segment_norms(points)
    bounds = np.minimum(np.column_stack([starts, starts + n_seg]).ravel(), len(norms) - 1)
    fast = np.add.reduceat(norms, bounds)[::2].astype(np.float64) if len(norms) else np.zeros(len(lengths))
    fast[n_seg == 0] = 0.0  # reduceat answers norms[start] for an empty range
    slack = fast * (n_seg + 1) * 2.0 ** -22
    limits = [(np.float32(limit), sign) for limit, sign in ((min_length, 1), (max_length, -1)) if limit is not None]
    unsure = np.zeros(len(lengths), dtype=bool)
    for limit, sign in limits:
        unsure |= np.abs(fast - limit) <= slack
    mm = fast.astype(np.float32)
    if unsure.any():
        mm[unsure] = _in_order_sums(norms, starts[unsure], n_seg[unsure])
    for limit, sign in limits:
        keep &= mm >= limit if sign > 0 else mm <= limit
    return keep
