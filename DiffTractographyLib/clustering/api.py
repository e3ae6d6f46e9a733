"""QuickBundles (Garyfallidis et al. 2012) with DIPY's exact result, flat and hierarchical.

Arrays follow the tractogram: a tractogram of numpy arrays gives numpy clusters (no torch
imported), one of tensors gives tensors on its device. The work runs on the CPU (``engine``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from ..resampling import resample_both
from ..streamlines import as_numpy
from .engine import quickbundles_groups
from .metric import bound_features


@dataclass(frozen=True)
class Clusters:
    """A partition of a tractogram's streamlines, in input order.

    labels: (N,) int64 cluster of each streamline; -1 for streamlines that have no resampling
    (fewer than two distinct points, ``n_undefined`` of them) and for members of clusters dropped
    as too small. centroids: (K, M, 3) float32 RAS mm, the running means QuickBundles keeps (each
    member in the orientation it joined with). sizes: (K,) int64. parents: (K,) int64 index of each
    cluster's cluster at the previous, coarser level of a hierarchy (None for a single level).
    Clusters are numbered in the order they were founded, as DIPY numbers them. The arrays are numpy
    arrays or tensors, as the clustered tractogram's.
    """

    labels: Any
    centroids: Any
    sizes: Any
    threshold: float
    n_undefined: int = 0
    parents: Any = None

    def __len__(self) -> int:
        return len(self.sizes)

    def indices(self, k: int):
        """Input indices of the streamlines of cluster ``k``, in input order."""
        return (self.labels == k).nonzero()[0] if isinstance(self.labels, np.ndarray) \
            else (self.labels == k).nonzero().flatten()

    def colors(self):
        """(K, 3) uint8 RGB colour of each cluster, a function of its index only (see ``cluster_colors``)."""
        return _like(_colors(len(self)), self.labels)


def _colors(n: int) -> np.ndarray:
    """``cluster_colors`` as a numpy array."""
    k = np.arange(n, dtype=np.float64)
    hue = np.remainder(k * 0.6180339887498949, 1.0) * 6
    sat = np.where(k % 2 == 0, 0.85, 0.6)
    val = np.where(k % 3 == 2, 0.75, 0.95)
    sector = np.floor(hue)
    f = hue - sector
    p, q, t = val * (1 - sat), val * (1 - sat * f), val * (1 - sat * (1 - f))
    table = np.stack([np.stack(c, 1) for c in
                      ((val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q))], 0)
    rgb = table[np.minimum(sector.astype(np.int64), 5), np.arange(n)]
    return np.round(rgb * 255).astype(np.uint8)


def cluster_colors(n: int):
    """(n, 3) uint8 RGB torch tensor of colours, the same for the same cluster index in every run.

    Hues step around the colour wheel by the golden ratio, so neighbouring indices differ
    strongly; saturation and value alternate between two levels for more contrast.
    """
    import torch

    return torch.from_numpy(_colors(n))


def _like(array: np.ndarray, reference):
    """``array`` as the kind of ``reference``: itself for numpy, else a tensor on its device."""
    if isinstance(reference, np.ndarray):
        return array
    import torch

    return torch.from_numpy(array).to(reference.device)


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not math.isfinite(threshold) or threshold <= 0:
        raise InputError(f"the clustering threshold must be a positive distance in mm, got {threshold}")
    return threshold


class _Features:
    """Both orientations' resampled features of a tractogram, their bound features, and the
    streamlines that have a resampling (``valid``, input order)."""

    def __init__(self, tractogram, nb_points: int):
        if len(tractogram) == 0:
            raise InputError("the tractogram has no streamlines to cluster")
        points, lengths = as_numpy(tractogram.points), np.diff(as_numpy(tractogram.offsets))
        self.x, self.xf = resample_both(points, lengths, nb_points)
        self.sx, self.sxf = bound_features(self.x), bound_features(self.xf)
        self.valid = np.flatnonzero(~np.isnan(self.x[:, 0, 0]))
        self.n = len(lengths)
        if len(self.valid) == 0:
            raise InputError(f"none of the {self.n} streamlines has two distinct points: nothing to cluster")

    def run(self, threshold: float, groups: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """QuickBundles of the valid streamlines (one per group of ``groups`` (N,), -1: none):
        labels (N,), centroids, sizes, and the group of each cluster; clusters in founding order."""
        order = self.valid if groups is None else self.valid[np.argsort(groups[self.valid], kind="stable")]
        if groups is not None:
            order = order[groups[order] >= 0]
        group_of = np.zeros(self.n, np.int64) if groups is None else groups
        _, first = np.unique(group_of[order], return_index=True)
        group_start = np.append(first, len(order)).astype(np.int64)
        slots = np.full(self.n, -1, np.int64)
        centroids = np.empty((len(order),) + self.x.shape[1:], np.float32)
        sizes = np.empty(len(order), np.int64)
        founders = np.empty(len(order), np.int64)
        counts = quickbundles_groups(self.x, self.xf, self.sx, self.sxf, order, group_start, threshold, slots,
                                     centroids, sizes, founders)
        slot_group = np.repeat(np.arange(len(counts)), np.diff(group_start))
        used = np.flatnonzero(np.arange(len(order)) - group_start[slot_group] < counts[slot_group])
        used = used[np.argsort(founders[used], kind="stable")]   # founding order across the groups
        rank = np.full(len(order), -1, np.int64)
        rank[used] = np.arange(len(used))
        labels = np.where(slots >= 0, rank[slots], -1)
        return labels, centroids[used], sizes[used], group_of[founders[used]]


def _drop_small(labels: np.ndarray, centroids: np.ndarray, sizes: np.ndarray, min_size: int):
    """Remove clusters with fewer than ``min_size`` members; the others keep their order."""
    keep = sizes >= min_size
    new_index = np.cumsum(keep) - 1
    new_index[~keep] = -1
    labels = np.where(labels >= 0, new_index[np.maximum(labels, 0)], -1)
    return labels, centroids[keep], sizes[keep], keep


def quickbundles(tractogram, threshold: float, nb_points: int = 12, *, min_size: int = 1) -> Clusters:
    """QuickBundles with DIPY's exact semantics.

    threshold: MDF distance in mm below which a streamline joins the nearest cluster (strictly).
    nb_points: points per streamline after resampling. Streamlines are visited in input order and
    the result equals ``dipy.segment.clustering.QuickBundles(threshold, metric="MDF_12points")``
    (for nb_points 12): same labels, same float32 centroids. min_size: clusters with fewer members
    are dropped (their streamlines get label -1); the rest are renumbered in order.
    """
    return hierarchical_quickbundles(tractogram, [threshold], nb_points, min_size=min_size)[0]


def hierarchical_quickbundles(tractogram, thresholds: Sequence[float], nb_points: int = 12, *,
                              min_size: int = 1) -> list[Clusters]:
    """QuickBundles at decreasing thresholds, each level splitting the clusters of the level above.

    thresholds: MDF distances in mm, coarse to fine (e.g. ``(20, 10, 5)``). Level 0 is
    ``quickbundles(tractogram, thresholds[0])``; level i runs QuickBundles with ``thresholds[i]``
    inside every cluster of level i - 1 separately (streamlines in input order; the clusters of a
    level in parallel), so the levels nest and ``parents`` links each cluster to the one it splits;
    a level's clusters are numbered in founding order across its parents. min_size applies to every
    level's output (the nesting is computed first).
    """
    thresholds = [_check_threshold(t) for t in thresholds]
    if not thresholds:
        raise InputError("give at least one clustering threshold")
    if any(b >= a for a, b in zip(thresholds, thresholds[1:])):
        raise InputError(f"hierarchy thresholds must decrease from coarse to fine, got {thresholds}")
    features = _Features(tractogram, nb_points)
    n_undefined = features.n - len(features.valid)
    out, groups, kept_before = [], None, None
    for threshold in thresholds:
        labels, centroids, sizes, parents = features.run(threshold, groups)
        groups = labels
        labels, centroids, sizes, keep = _drop_small(labels, centroids, sizes, min_size)
        if kept_before is not None:
            remap = np.cumsum(kept_before) - 1
            parents = np.where(kept_before[parents], remap[parents], -1)[keep]
        else:
            parents = None
        like = tractogram.points
        out.append(Clusters(_like(labels, like), _like(centroids, like), _like(sizes, like), threshold, n_undefined,
                            None if parents is None else _like(parents, like)))
        kept_before = keep
    return out
