"""Streamline clustering: QuickBundles with DIPY's exact semantics, batched in torch.

Streamlines are resampled to ``nb_points`` points equally spaced in arc length (DIPY's
``set_number_of_points``) and compared with the MDF distance (mean distance between corresponding
points, the smaller of the direct and the flipped orientation), in mm. Results equal
``dipy.segment.clustering.QuickBundles`` on the same input order, labels and centroids alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .errors import InputError
from .streamlines import Tractogram

# Padded points handled at once while resampling: bounds the temporary memory (small on the CPU,
# where blocks that stay in cache are faster).
_RESAMPLE_CHUNK_POINTS = {"cpu": 1 << 17, "cuda": 1 << 23}


def _sequential_cumsum(x: torch.Tensor) -> torch.Tensor:
    """Cumulative sum along dim 1 added strictly left to right (DIPY's loop order).

    The CPU kernel of ``torch.cumsum`` is such a loop; other devices scan in parallel, which
    rounds differently, so they add column by column.
    """
    if x.device.type == "cpu":
        return torch.cumsum(x, 1)
    out = x.clone()
    for j in range(1, x.shape[1]):
        out[:, j] += out[:, j - 1]
    return out


def _rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` for a 2-D ``x`` through ``index_select`` (much faster than advanced indexing on CPU)."""
    return x.index_select(0, index.reshape(-1)).view(*index.shape, x.shape[1])


def _segment_lengths(points: torch.Tensor) -> torch.Tensor:
    """Float64 length of the segment from point p to p + 1 of a flat (P, 3) float32 array, (P - 1,).

    As DIPY: coordinate differences in float32, squares and their sum (x, y, z in order) in float64.
    """
    d = (points[1:] - points[:-1]).T.double()
    d = d * d
    return torch.sqrt(d[0] + d[1] + d[2])


def _resample_chunk(points: torch.Tensor, lengths: torch.Tensor, nb_points: int) -> torch.Tensor:
    """DIPY ``set_number_of_points`` on the consecutive streamlines of a flat (P, 3) float32 array.

    Arc lengths and the sample positions (``step`` added again and again) are float64 sums in
    DIPY's order, interpolated points are rounded to float32, the end vertices are copied exactly.
    Rows with zero arc length are NaN.
    """
    dev = points.device
    n, t = len(lengths), int(lengths.max())
    starts = torch.cumsum(lengths, 0) - lengths
    within = torch.ones(len(points) - 1, dtype=torch.bool, device=dev)
    within[(starts + lengths - 1)[:-1]] = False                 # segments joining two streamlines
    padded = (torch.arange(t - 1, device=dev)[None, :] < (lengths - 1)[:, None])
    arc = torch.zeros((n, t), dtype=torch.float64, device=dev)
    arc[:, 1:] = _sequential_cumsum(torch.zeros(padded.shape, dtype=torch.float64, device=dev)
                                    .masked_scatter_(padded, _segment_lengths(points)[within]))
    total = arc[:, -1:]
    step = total / (nb_points - 1)
    targets = [torch.zeros_like(step)]
    for _ in range(nb_points - 2):
        targets.append(targets[-1] + step)
    targets = torch.cat(targets[1:], 1) if nb_points > 2 else step[:, :0]
    k = torch.searchsorted(arc, targets, side="left").clamp_(1, t - 1)
    arc_k, arc_prev = arc.gather(1, k), arc.gather(1, k - 1)
    ratio = 1 - ((arc_k - targets) / (arc_k - arc_prev))
    k = (starts[:, None] + k).clamp_(max=len(points) - 1)
    p_k, p_prev = _rows(points, k), _rows(points, k - 1)
    inner = (p_prev.double() + ratio[..., None] * (p_k - p_prev).double()).float()
    inner = torch.where((arc_k == targets)[..., None], p_k, inner)
    out = torch.cat([_rows(points, starts[:, None]), inner, _rows(points, (starts + lengths - 1)[:, None])], 1)
    return out.masked_fill_((total <= 0)[..., None], float("nan"))


def _chunks(lengths: torch.Tensor, budget: int):
    """Consecutive streamline ranges whose padded size (count x longest) stays within ``budget``."""
    lengths = lengths.tolist()
    start, longest = 0, 0
    for i, n in enumerate(lengths):
        longest_with = max(longest, n)
        if i > start and longest_with * (i + 1 - start) > budget:
            yield start, i
            start, longest_with = i, n
        longest = longest_with
    if start < len(lengths):
        yield start, len(lengths)


def _resample_both(tractogram: Tractogram, nb_points: int, directions=(False, True)) -> list[torch.Tensor]:
    """``resample_streamlines`` for each ``reverse`` flag in ``directions``.

    The reversed streamlines are the consecutive streamlines of the reversed point array.
    """
    if nb_points < 2:
        raise InputError(f"nb_points must be at least 2, got {nb_points}")
    points = tractogram.points.detach().float()
    dev = points.device
    offsets = tractogram.offsets.cpu()
    out = [torch.full((len(tractogram), nb_points, 3), float("nan"), dtype=torch.float32, device=dev)
           for _ in directions]
    for i0, i1 in _chunks(tractogram.lengths.cpu(), _RESAMPLE_CHUNK_POINTS.get(dev.type, 1 << 23)):
        lengths = (offsets[i0 + 1:i1 + 1] - offsets[i0:i1]).to(dev)
        if int(lengths.max()) < 2:
            continue
        chunk = points[int(offsets[i0]):int(offsets[i1])]
        for result, reverse in zip(out, directions):
            if reverse:
                result[i0:i1] = _resample_chunk(chunk.flip(0), lengths.flip(0), nb_points).flip(0)
            else:
                result[i0:i1] = _resample_chunk(chunk, lengths, nb_points)
    return out


def resample_streamlines(tractogram: Tractogram, nb_points: int = 12, *, reverse: bool = False) -> torch.Tensor:
    """Each streamline resampled to ``nb_points`` points equally spaced in arc length, (N, M, 3).

    Float32 RAS mm, on the tractogram's device, bit-identical to DIPY's ``set_number_of_points``
    on float32 input. ``reverse`` resamples the streamline walked from its last vertex (what
    QuickBundles compares as the flipped orientation; not the same rounding as reversing the
    result). Streamlines with fewer than two distinct points have no resampling: NaN rows.
    """
    return _resample_both(tractogram, nb_points, (reverse,))[0]


def _sum_columns(x: torch.Tensor) -> torch.Tensor:
    """Row sums of a (P, M) float64 tensor added left to right, as DIPY's loops do."""
    return _sequential_cumsum(x)[:, -1]


def _pair_distances(centroids: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Mean pointwise distance of aligned (P, M, 3) float32 pairs, (P,) float64, in DIPY's arithmetic.

    As ``AveragePointwiseEuclideanMetric``: differences in float32, squares, sums and square roots
    in float64, points summed in order, then divided by M.
    """
    d = (centroids - features).double()
    d = d * d
    return _sum_columns(torch.sqrt(d[..., 0] + d[..., 1] + d[..., 2])) / features.shape[1]


def mdf_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Minimum average direct-flip distance between resampled streamlines, (N, K) float64 mm.

    a: (N, M, 3), b: (K, M, 3), RAS mm (e.g. from ``resample_streamlines``). The flipped
    distance compares a with b's points in reverse order (DIPY's ``dipy.segment.metric.mdf``).
    Dense: meant for small sets (N x K x M x 3 temporaries).
    """
    if a.shape[1:] != b.shape[1:] or a.shape[-1] != 3:
        raise InputError(f"mdf_distance needs (N, M, 3) and (K, M, 3) arrays, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.float(), b.float().to(a.device)
    n, k = len(a), len(b)
    ai = a.repeat_interleave(k, 0)
    direct = _pair_distances(ai, b.repeat(n, 1, 1))
    flipped = _pair_distances(ai, b.flip(1).repeat(n, 1, 1))
    return torch.minimum(direct, flipped).view(n, k)


# ------------------------------------------------------------------------------------------------
# QuickBundles
#
# DIPY's QuickBundles visits the streamlines one after the other: each joins the nearest centroid
# (MDF below ``threshold``, strict) or founds a new cluster, and that centroid is updated at once.
# Here a batch of B streamlines is decided together:
#   1. Pruning. Lower bounds of the MDF keep the few clusters that can be below the threshold:
#      the distance between centres of mass (clusters are binned in a grid of cells as wide as
#      the threshold, so only the 27 cells around a streamline are looked at) and, grouping the
#      M points into a first half, a second half (and the middle point for odd M), with g_j the
#      mean of a group and w_j its share of the points,
#          MDF(x, c) >= sum_j w_j |g_j(x) - g_j(c)| >= || (w_j (g_j(x) - g_j(c)))_j ||
#      (one matrix product for many pairs). A bound moves by at most the mean pointwise
#      displacement of the centroid.
#   2. Speculation and replay. Every streamline first decides against the clusters as they were
#      before the batch. The decisions fix, cluster by cluster, the order of its new members, so
#      each centroid's successive states inside the batch follow by the float32 running mean; each
#      streamline then decides again against the states it would have seen, including the
#      clusters founded earlier in the batch. Decisions that do not change are the sequential
#      ones (a fixed point of this map is DIPY's result: each decision is then the one made
#      against the exact states left by the ones before it); otherwise the map is applied again.
#      When that does not settle within a few rounds, the prefix up to the first change is
#      committed (it is exact) and the rest goes to the next batch.
# ------------------------------------------------------------------------------------------------

_MAX_ROUNDS = 6
# Centroid motion inside a batch (a fraction of the threshold) covered by the pairs kept up front.
_SLACK = 0.2
# Clusters measured first in a nearest-centroid search, to bound the distance that needs looking at.
_NN_PROBES = 4
# Entries of a lower-bound matrix computed at once (memory bound, whatever the cluster count).
_BOUND_CHUNK = 1 << 22


def _groups(nb_points: int) -> list[slice]:
    half = nb_points // 2
    parts = [slice(0, half), slice(nb_points - half, nb_points)]
    return parts + ([slice(half, half + 1)] if nb_points % 2 else [])


def _bound_features(features: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """(n, M, 3) -> (n, 3 G) weighted group means about ``origin``: their distance bounds the MDF."""
    m = features.shape[1]
    f = features.double() - origin
    return torch.cat([f[:, g].mean(1) * ((g.stop - g.start) / m) for g in _groups(m)], 1).float()


def _sq_bounds(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distances between rows of (n, F) and (k, F) bound features, (n, k) float32."""
    out = a @ b.T
    out.mul_(-2).add_((a * a).sum(1)[:, None]).add_((b * b).sum(1)[None, :])
    return out


def _running_means(start: np.ndarray, start_count: np.ndarray, members: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """Successive float32 centroids when ``members`` (n, D), ordered by position, join ``slot``.

    start: (S, D) float32 centroids, start_count: (S,) their sizes. Returns (n, D): the centroid
    right after each member joined, with DIPY's update ``(c * size + x) / (size + 1)`` rounded to
    float32 at each operation. Sequential per cluster, vectorised across clusters member rank by
    member rank; numpy because these are many tiny operations.
    """
    n = len(slot)
    order = np.argsort(slot, kind="stable")
    counts = np.bincount(slot, minlength=len(start))
    first = np.cumsum(counts) - counts
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n) - first[slot[order]]
    by_count = np.argsort(-counts, kind="stable")             # local order: most members first
    local = np.empty_like(by_count)
    local[by_count] = np.arange(len(by_count))
    rank_major = np.lexsort((local[slot], rank))
    state = start[by_count].copy()
    size0 = start_count[by_count].astype(np.float32)
    feats = members[rank_major]
    out = np.empty_like(members)
    active = np.bincount(rank, minlength=1)                     # slots with a member of each rank
    pos = 0
    for r, a in enumerate(active.tolist()):
        s, size = state[:a], size0[:a, None] + np.float32(r)
        np.multiply(s, size, out=s)
        np.add(s, feats[pos:pos + a], out=s)
        np.divide(s, size + np.float32(1), out=s)
        out[rank_major[pos:pos + a]] = s
        pos += a
    return out


def _first_argmin(values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of a sparse (row, col) -> value list: the minimum, and the entry reaching it with the
    lowest col (DIPY's strict ``<`` scan keeps the first minimum). Rows without entries: +inf, -1."""
    best = values.new_full((n,), float("inf")).scatter_reduce(0, rows, values, "amin")
    at_min = values == best.index_select(0, rows)
    big = torch.iinfo(torch.int64).max
    col = torch.full((n,), big, dtype=torch.int64, device=values.device)
    col = col.scatter_reduce(0, rows[at_min], cols[at_min], "amin")
    entry = torch.nonzero(at_min & (cols == col.index_select(0, rows))).flatten()
    first = torch.full((n,), -1, dtype=torch.int64, device=values.device)
    return best, first.index_copy_(0, rows[entry], entry)


class _QuickBundles:
    """One QuickBundles pass over resampled streamlines; see the comment block above.

    x, xf: (N, M, 3) float32 features of each streamline and of its reversal; groups: (N,) int64
    or None (streamlines only join clusters founded in their own group: one QuickBundles per
    group, all in one pass).
    """

    def __init__(self, x: torch.Tensor, xf: torch.Tensor, threshold: float, groups: torch.Tensor | None = None,
                 batch_size: int | None = None):
        self.x, self.xf, self.threshold = x, xf, float(threshold)
        self.device = x.device
        n, m = x.shape[:2]
        valid = ~torch.isnan(x[:, 0, 0])
        origin = x[valid].double().mean((0, 1)) if bool(valid.any()) else x.new_zeros(3, dtype=torch.float64)
        self.origin = origin
        self.bx, self.bxf = _bound_features(x, origin), _bound_features(xf, origin)
        self.centres = self._centres(self.bx)
        # the flipped features' centre of mass is the direct one's up to resampling round-off
        self.flip_shift = float(torch.nan_to_num(torch.linalg.vector_norm(self._centres(self.bxf) - self.centres, dim=1)).max()) if n else 0.0
        radius = float(torch.nan_to_num(torch.linalg.vector_norm(torch.cat([self.bx, self.bxf]), dim=1)).max()) if n else 0.0
        # float32 rounding of the matrix-product bounds, with a wide margin
        self.eps_sq = 4e-5 * radius * radius + 1e-12
        self.grouped = groups is not None
        self.groups = groups if groups is not None else torch.zeros(n, dtype=torch.int64, device=self.device)
        capacity = 64
        self.centroids = x.new_zeros((capacity, m, 3))
        self.sizes = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        self.bounds = self.bx.new_zeros((capacity, self.bx.shape[1]))
        self.cluster_group = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        self.k = 0
        self.batch_size = batch_size or (4096 if self.device.type == "cpu" else 32768)

    # -- helpers ---------------------------------------------------------------------------------
    def _limit_sq(self, slack: torch.Tensor | float = 0.0):
        """Squared bound below which a pair may be under the threshold, given centroid motion ``slack``."""
        return ((self.threshold + slack) * (1 + 1e-6)) ** 2 + self.eps_sq

    def _grow(self, k_new: int) -> None:
        cap = len(self.sizes)
        if k_new <= cap:
            return
        cap = max(k_new, 2 * cap)
        pad = cap - len(self.sizes)
        self.centroids = torch.cat([self.centroids, self.centroids.new_zeros((pad,) + self.centroids.shape[1:])])
        self.sizes = torch.cat([self.sizes, self.sizes.new_zeros(pad)])
        self.bounds = torch.cat([self.bounds, self.bounds.new_zeros((pad, self.bounds.shape[1]))])
        self.cluster_group = torch.cat([self.cluster_group, self.cluster_group.new_zeros(pad)])

    def _centres(self, bounds: torch.Tensor) -> torch.Tensor:
        """Centres of mass about the origin from bound features: the weighted group means add up to it."""
        return bounds.view(len(bounds), bounds.shape[1] // 3, 3).sum(1)

    def _near_pairs(self, index: torch.Tensor, reach: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, cluster) pairs of streamlines ``index`` and the clusters whose centre of mass is
        within ``reach`` mm of the streamline's (MDF >= distance of the centres of mass)."""
        k = self.k
        if k == 0:
            empty = torch.zeros(0, dtype=torch.int64, device=self.device)
            return empty, empty
        centres = self._centres(self.bounds[:k])
        x_centre = self.centres.index_select(0, index)
        extent = float(torch.cat([centres, x_centre]).abs().max())
        cell = max(reach, extent / 2.0 ** 19, 1e-6)
        span = 1 << 20

        def key(ijk: torch.Tensor) -> torch.Tensor:
            ijk = ijk + (span // 2)
            return (ijk[..., 0] * span + ijk[..., 1]) * span + ijk[..., 2]

        cluster_key = key(torch.floor(centres / cell).long())
        order = torch.argsort(cluster_key)
        cells, count = torch.unique_consecutive(cluster_key[order], return_counts=True)
        first = torch.cumsum(count, 0) - count
        offsets = torch.stack(torch.meshgrid(*[torch.arange(-1, 2, device=self.device)] * 3, indexing="ij"), -1)
        near = key(torch.floor(x_centre / cell).long()[:, None, :] + offsets.view(1, 27, 3))
        at = torch.searchsorted(cells, near).clamp(max=len(cells) - 1)
        hit = cells[at] == near
        n_hit = torch.where(hit, count[at], 0).flatten()
        rows = torch.repeat_interleave(torch.arange(len(index), device=self.device).repeat_interleave(27), n_hit)
        within = torch.arange(len(rows), device=self.device) - torch.repeat_interleave(torch.cumsum(n_hit, 0) - n_hit, n_hit)
        clusters = order[torch.repeat_interleave(first[at].flatten(), n_hit) + within]
        gap = x_centre.index_select(0, rows) - centres.index_select(0, clusters)
        close = (gap * gap).sum(1) <= reach * reach
        return rows[close], clusters[close]

    def _candidate_pairs(self, index: torch.Tensor, slack: float):
        """Pairs (row, cluster) of the streamlines ``index`` and the clusters left by the previous
        batches whose MDF may be under the threshold if the centroid moves by up to ``slack``, with
        their squared bounds (the smaller of the two orientations)."""
        reach = (self.threshold + slack) * (1 + 1e-6) + math.sqrt(self.eps_sq) + self.flip_shift
        rows, clusters = self._near_pairs(index, reach)
        if self.grouped:
            same = self.groups.index_select(0, index.index_select(0, rows)) == self.cluster_group.index_select(0, clusters)
            rows, clusters = rows[same], clusters[same]
        b = self.bounds.index_select(0, clusters)
        sq = torch.minimum(((self.bx.index_select(0, index.index_select(0, rows)) - b) ** 2).sum(1),
                           ((self.bxf.index_select(0, index.index_select(0, rows)) - b) ** 2).sum(1))
        keep = sq < self._limit_sq(slack)
        return rows[keep], clusters[keep], sq[keep]

    # -- the pass --------------------------------------------------------------------------------
    def run(self, order: torch.Tensor) -> torch.Tensor:
        """Cluster the streamlines ``order`` in that order; (N,) labels, -1 for those not visited."""
        labels = torch.full((len(self.x),), -1, dtype=torch.int64, device=self.device)
        size, start = min(256, self.batch_size), 0
        while start < len(order):
            batch = _Batch(self, order[start:start + size])
            empty = torch.full((len(batch),), -1, dtype=torch.int64, device=self.device)
            target, flip = batch.decide(batch.chains(empty, empty >= 0))
            for rounds in range(1, _MAX_ROUNDS + 1):
                new_target, new_flip = batch.decide(batch.chains(target, flip))
                changed = torch.nonzero((new_target != target) | (new_flip != flip)).flatten()
                target, flip = new_target, new_flip
                if len(changed) == 0:
                    done = len(batch)
                    break
            else:
                done = int(changed[0]) + 1
            labels[batch.index[:done]] = batch.commit(target, flip, done)
            start += done
            size = min(2 * size, self.batch_size) if done == len(batch) and rounds <= 3 else max(32, size // 2)
        return labels


class _Batch:
    """Consecutive streamlines decided together against the clusters left by the previous batches.

    Decisions are encoded per batch position b as a *slot*: ``s < n_old`` joins the pre-batch
    cluster ``ids[s]``, ``n_old + c`` joins the cluster founded by batch position c (c == b:
    founds it), -1 none. Slot order is DIPY's cluster order, so ties go to the lowest slot.
    """

    def __init__(self, qb: _QuickBundles, index: torch.Tensor):
        self.qb, self.index = qb, index
        self.x, self.xf = qb.x.index_select(0, index), qb.xf.index_select(0, index)
        self.bx, self.bxf = qb.bx.index_select(0, index), qb.bxf.index_select(0, index)
        self.groups = qb.groups.index_select(0, index)
        self.pos = torch.arange(len(index), device=qb.device)
        # pairs within reach unless a centroid moves by more than ``slack`` inside the batch
        self.slack = _SLACK * qb.threshold
        rows, clusters, self.pre_sq = qb._candidate_pairs(index, self.slack)
        self.ids, self.pre_slot = torch.unique(clusters, return_inverse=True)
        self.pre_rows = rows
        self.n_old = len(self.ids)
        self.slot_of = torch.full((qb.k,), -1, dtype=torch.int64, device=qb.device)
        self.slot_of[self.ids] = torch.arange(self.n_old, device=qb.device)
        empty = torch.zeros(0, dtype=torch.int64, device=qb.device)
        self.cache = (empty, empty.double(), empty.double())   # sorted pair keys, direct, flipped
        self.decided = (torch.full_like(self.pos, -1), torch.zeros_like(self.pos, dtype=torch.bool))
        self.spec = None   # first decisions, against the pre-batch clusters: distances of the pre pairs
        self.founder_flips = (torch.zeros_like(self.pos, dtype=torch.bool), torch.zeros_like(self.pos, dtype=torch.bool))

    def __len__(self) -> int:
        return len(self.index)

    def chains(self, target: torch.Tensor, flip: torch.Tensor, limit: int | None = None) -> dict:
        """Centroid states inside the batch implied by the decisions of positions < ``limit``.

        Returns rows (member positions, ascending), touched (their slots) with local (each member's
        index into touched), post (the centroid right after each member joined), motion (per
        touched slot, the largest mean pointwise move from its reference: the pre-batch centroid or
        the founder's features), keys / key_order (members sorted by slot, then position),
        founders, and the decisions as member_slot (-1: no member) and flip.
        """
        qb, n, n_old = self.qb, len(self), self.n_old
        founder = target == n_old + self.pos
        joins_new = target >= n_old
        member = (target >= 0) & (~joins_new | founder[(target - n_old).clamp(0, n - 1)])
        if limit is not None:
            member &= self.pos < limit
        rows = torch.nonzero(member).flatten()
        slot = target[rows]
        touched, local = torch.unique(slot, return_inverse=True)
        is_old = touched < n_old
        gid = self.ids[touched.clamp(max=max(n_old - 1, 0))] if n_old else torch.zeros_like(touched)
        start = torch.where(is_old[:, None, None], qb.centroids.index_select(0, gid), 0.0)
        start_size = torch.where(is_old, qb.sizes.index_select(0, gid), 0)
        feats = torch.where(flip[rows][:, None, None], self.xf.index_select(0, rows), self.x.index_select(0, rows))
        m = feats.shape[1]
        post = _running_means(start.reshape(len(touched), 3 * m).cpu().numpy(), start_size.cpu().numpy(),
                              feats.reshape(len(rows), 3 * m).cpu().numpy(), local.cpu().numpy())
        post = torch.from_numpy(post).to(qb.device).view(-1, m, 3)
        # reference state of each slot: before the batch, or the founder's features
        ref = start.clone()
        new_members = ~is_old[local]
        first_of_slot = founder[rows] & new_members
        ref[local[first_of_slot]] = feats[first_of_slot]
        motion = torch.linalg.vector_norm((post - ref.index_select(0, local)).double(), dim=2).mean(1)
        slot_motion = motion.new_zeros(len(touched)).scatter_reduce(0, local, motion, "amax", include_self=True)
        keys = slot * n + rows
        key_order = torch.argsort(keys)
        return dict(rows=rows, touched=touched, local=local, post=post, flip=flip,
                    member_slot=torch.where(member, target, -1),
                    motion=slot_motion, keys=keys[key_order], key_order=key_order, founders=rows[first_of_slot])

    def _as_seen(self, chain: dict, rows: torch.Tensor, slot: torch.Tensor, gid: torch.Tensor) -> torch.Tensor:
        """Centroid of ``slot`` (pre-batch cluster ``gid`` when slot -1) as batch position ``rows`` sees it."""
        n = len(self)
        if len(chain["keys"]) == 0:
            return self.qb.centroids.index_select(0, gid)
        p = torch.searchsorted(chain["keys"], slot * n + rows, side="left") - 1
        p_safe = p.clamp(min=0)
        found = (p >= 0) & (slot >= 0) & (chain["keys"][p_safe] // n == slot)
        state = self.qb.centroids.index_select(0, gid)
        hit = torch.nonzero(found).flatten()
        return state.index_copy_(0, hit, chain["post"].index_select(0, chain["key_order"][p_safe[hit]]))

    def _founded_bounds(self, chain: dict, bounds: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Squared bounds from ``bounds`` (features of batch positions ``rows``) to the clusters
        founded in the batch; inf where the cluster does not exist yet for the row or is of another group."""
        founders = chain["founders"]
        ref = torch.where(chain["flip"][founders][:, None], self.bxf[founders], self.bx[founders])
        hidden = (rows[:, None] <= founders[None, :]) | (self.groups[rows][:, None] != self.groups[founders][None, :])
        return _sq_bounds(bounds, ref).masked_fill_(hidden, float("inf"))

    def _motions(self, chain: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Largest centroid motion inside the batch of each pre-batch slot and of each founded cluster."""
        n_old, touched = self.n_old, chain["touched"]
        old = touched < n_old
        motion_old = torch.zeros(n_old, dtype=torch.float64, device=self.qb.device)
        motion_old[touched[old]] = chain["motion"][old]
        return motion_old, chain["motion"][~old]

    def _pairs(self, chain: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row, slot) pairs whose MDF may be under the threshold given the states of ``chain``, and
        the rows that have such pairs beyond the ones kept up front (moving clusters, new clusters)."""
        qb, n_old = self.qb, self.n_old
        motion_old, motion_new = self._motions(chain)
        mu = motion_old.index_select(0, self.pre_slot)
        keep = (self.pre_sq < qb._limit_sq(mu).float()) & (mu <= self.slack)
        rows, slot = [self.pre_rows[keep]], [self.pre_slot[keep]]
        fast = torch.nonzero(motion_old > self.slack).flatten()
        if len(fast):                       # clusters that moved beyond the slack: every row again
            ids = self.ids[fast]
            b = qb.bounds.index_select(0, ids)
            sq = torch.minimum(_sq_bounds(self.bx, b), _sq_bounds(self.bxf, b))
            if qb.grouped:
                sq.masked_fill_(self.groups[:, None] != qb.cluster_group[ids][None, :], float("inf"))
            r, c = torch.nonzero(sq < qb._limit_sq(motion_old[fast]).float()[None, :], as_tuple=True)
            rows.append(r)
            slot.append(fast[c])
        founders = chain["founders"]
        if len(founders):
            ref = torch.where(chain["flip"][founders][:, None], self.bxf[founders], self.bx[founders])
            sq = _sq_bounds(torch.cat([self.bx, self.bxf]), ref)
            r, c = torch.nonzero(sq < qb._limit_sq(motion_new).float()[None, :], as_tuple=True)
            r = r % len(self)
            visible = (r > founders[c]) & (self.groups[r] == self.groups[founders[c]])
            pair = torch.unique(r[visible] * len(founders) + c[visible])
            rows.append(pair // len(founders))
            slot.append(n_old + founders[pair % len(founders)])
        extra = torch.zeros(len(self), dtype=torch.bool, device=qb.device)
        if len(rows) > 1:
            extra[torch.cat(rows[1:])] = True
        return torch.cat(rows), torch.cat(slot), extra

    def _stable(self, chain: dict) -> torch.Tensor:
        """Rows whose first decision provably stands against the states of ``chain``.

        A centroid that moved by mean pointwise distance mu changes every MDF to it by at most mu;
        a decision whose winning distance stays below the threshold and below every other distance
        under these moves, or that had nothing within reach, is unchanged.
        """
        qb, n = self.qb, len(self)
        motion_old, _ = self._motions(chain)
        mu = motion_old.index_select(0, self.pre_slot)
        kept = self.pre_sq < qb._limit_sq(mu).float()
        spec_d, spec_f = self.spec
        low_d = torch.where(kept, spec_d - mu, float("inf"))
        low_f = torch.where(kept, spec_f - mu, float("inf"))
        entry, entry_flip = self.spec_entry, self.spec_entry_flip
        has = torch.nonzero(entry >= 0).flatten()
        e, ef = entry[has], entry_flip[has]
        chosen = torch.where(ef, spec_f[e], spec_d[e]) + mu[e]
        low_d[e] = torch.where(ef, low_d[e], float("inf"))
        low_f[e] = torch.where(ef, float("inf"), low_f[e])
        other = low_d.new_full((n,), float("inf")).scatter_reduce(0, self.pre_rows, torch.minimum(low_d, low_f), "amin")
        stable = other >= qb.threshold
        stable[has] = (chosen < qb.threshold) & (other[has] > chosen)
        return stable

    def _first_change(self, chain: dict) -> torch.Tensor:
        """Per slot, the first position whose membership or orientation differs from the previous
        decisions (the batch size when none): states seen before it are unchanged."""
        n = len(self)
        prev_slot, prev_flip = self.decided
        slot, flip = chain["member_slot"], chain["flip"]
        changed = torch.nonzero((prev_slot != slot) | ((slot >= 0) & (prev_flip != flip))).flatten()
        which = torch.cat([prev_slot[changed], slot[changed]])
        where = torch.cat([changed, changed])
        keep = which >= 0
        first = torch.full((self.n_old + n,), n, dtype=torch.int64, device=self.qb.device)
        return first.scatter_reduce(0, which[keep], where[keep], "amin")

    def _exact(self, chain: dict, rows: torch.Tensor, slot: torch.Tensor,
               first_change: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Direct and flipped distances of (row, slot) pairs against the states of ``chain``,
        reusing those of the previous call where nothing before the row changed in that cluster."""
        n, n_old = len(self), self.n_old
        keys = slot * n + rows
        cache_keys, cache_d, cache_f = self.cache
        direct, flipped = keys.double(), keys.double()
        todo = torch.arange(len(keys), device=keys.device)
        if len(cache_keys):
            at = torch.searchsorted(cache_keys, keys).clamp(max=len(cache_keys) - 1)
            reuse = (cache_keys[at] == keys) & (rows <= first_change.index_select(0, slot))
            direct, flipped = cache_d[at], cache_f[at]
            todo = torch.nonzero(~reuse).flatten()
        r, s = rows[todo], slot[todo]
        gid = self.ids.index_select(0, s.clamp(max=max(n_old - 1, 0))) if n_old else torch.zeros_like(s)
        state = self._as_seen(chain, r, s, gid)
        direct[todo] = _pair_distances(state, self.x.index_select(0, r))
        flipped[todo] = _pair_distances(state, self.xf.index_select(0, r))
        order = torch.argsort(keys)
        self.cache = (keys[order], direct[order], flipped[order])
        return direct, flipped

    def decide(self, chain: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Each position's decision against the centroid states implied by ``chain``'s decisions.

        The first call decides against the pre-batch clusters (all pairs kept up front); later
        calls recompute only the rows whose first decision may not stand.
        """
        qb, n, n_old = self.qb, len(self), self.n_old
        first_change = self._first_change(chain)
        self.decided = (chain["member_slot"], chain["flip"])
        if self.spec is None:
            rows, slot = self.pre_rows, self.pre_slot
            unstable = torch.ones(n, dtype=torch.bool, device=qb.device)
        else:
            rows, slot, extra = self._pairs(chain)
            unstable = extra | ~self._stable(chain)
            pick = unstable.index_select(0, rows)
            rows, slot = rows[pick], slot[pick]
        direct, flipped = self._exact(chain, rows, slot, first_change)
        best_d, entry_d = _first_argmin(direct, rows, slot, n)
        best_f, entry_f = _first_argmin(flipped, rows, slot, n)
        use_flip = best_f < best_d
        entry = torch.where(use_flip, entry_f, entry_d)
        joins = torch.where(use_flip, best_f, best_d) < qb.threshold
        target = torch.where(joins, slot[entry.clamp(min=0)] if len(slot) else entry, n_old + self.pos)
        if self.spec is None:
            self.spec = (direct, flipped)
            self.spec_entry = torch.where(joins, entry, -1)
            self.spec_entry_flip = use_flip
            self.spec_target = target
        else:
            target = torch.where(unstable, target, self.spec_target)
            use_flip = torch.where(unstable, use_flip, self.spec_entry_flip)
        founds = torch.nonzero(target == n_old + self.pos).flatten()
        # a founder's orientation only depends on the states it sees: reuse it when none changed
        known, flips = self.founder_flips
        redo = founds[~(known[founds] & (founds <= first_change.min()))]
        if len(redo):
            flips[redo] = self._founder_flip(chain, redo)
            known[redo] = True
        use_flip[founds] = flips[founds]
        return target, use_flip

    def _founder_flip(self, chain: dict, rows: torch.Tensor) -> torch.Tensor:
        """DIPY's orientation for a streamline that founds a cluster: flipped when its flipped
        features are strictly nearer to the nearest existing centroid than its direct ones.

        Nearest-neighbour search: the few clusters with the smallest lower bounds give an upper
        bound on the nearest distance; every cluster whose lower bound is not above it is measured.
        """
        qb = self.qb
        step = max(1, _BOUND_CHUNK // (2 * (qb.k + len(chain["founders"]) + 1)))
        return torch.cat([self._nearest_is_flipped(chain, rows[i:i + step]) for i in range(0, len(rows), step)])

    def _nearest_is_flipped(self, chain: dict, rows: torch.Tensor) -> torch.Tensor:
        qb, n_old, nq = self.qb, self.n_old, len(rows)
        founders = chain["founders"]
        motion_old, motion_new = self._motions(chain)
        motion = torch.zeros(qb.k, dtype=torch.float64, device=qb.device)
        motion[self.ids] = motion_old
        both = torch.cat([self.bx.index_select(0, rows), self.bxf.index_select(0, rows)])
        sq = _sq_bounds(both, qb.bounds[:qb.k])
        if qb.grouped:
            sq.masked_fill_((self.groups[rows][:, None] != qb.cluster_group[None, :qb.k]).repeat(2, 1), float("inf"))
        if len(founders):
            sq = torch.cat([sq, self._founded_bounds(chain, both, rows.repeat(2))], 1)
        if sq.shape[1] == 0:
            return torch.zeros(nq, dtype=torch.bool, device=qb.device)
        lower = torch.sqrt((sq - qb.eps_sq).clamp_(min=0)).sub_(torch.cat([motion, motion_new]).float())
        slot = torch.cat([self.slot_of, n_old + founders])
        gid = torch.cat([torch.arange(qb.k, device=qb.device), torch.zeros_like(founders)])
        query = torch.cat([rows, rows])
        feats = torch.cat([self.x.index_select(0, rows), self.xf.index_select(0, rows)])
        low, first = torch.topk(lower, min(_NN_PROBES, lower.shape[1]), dim=1, largest=False)
        r, i = torch.nonzero(torch.isfinite(low), as_tuple=True)
        c = first[r, i]
        dist = _pair_distances(self._as_seen(chain, query[r], slot[c], gid[c]), feats.index_select(0, r))
        upper = torch.full((2 * nq,), float("inf"), dtype=torch.float64, device=qb.device)
        upper = upper.scatter_reduce(0, r, dist, "amin")
        lower.scatter_(1, first, float("inf"))                  # measured already
        reach = (upper * (1 + 1e-5) + 1e-5).float()
        r, c = torch.nonzero((lower <= reach[:, None]) & torch.isfinite(lower), as_tuple=True)
        dist = _pair_distances(self._as_seen(chain, query[r], slot[c], gid[c]), feats.index_select(0, r))
        nearest = upper.scatter_reduce(0, r, dist, "amin")
        return nearest[nq:] < nearest[:nq]

    def commit(self, target: torch.Tensor, flip: torch.Tensor, done: int) -> torch.Tensor:
        """Apply the decisions of the first ``done`` positions; their cluster labels, (done,)."""
        qb = self.qb
        chain = self.chains(target, flip, done)
        rows, local, touched, post = chain["rows"], chain["local"], chain["touched"], chain["post"]
        last = torch.zeros(len(touched), dtype=torch.int64, device=qb.device)
        last = last.scatter_reduce(0, local, torch.arange(len(rows), device=qb.device), "amax")
        count = torch.bincount(local, minlength=len(touched))
        old = touched < self.n_old
        n_new = int((~old).sum())
        cluster = torch.empty_like(touched)
        cluster[old] = self.ids[touched[old]]
        cluster[~old] = qb.k + torch.arange(n_new, device=qb.device)
        qb._grow(qb.k + n_new)
        qb.centroids[cluster] = post[last]
        qb.bounds[cluster] = _bound_features(post[last], qb.origin)
        qb.sizes[cluster] += count
        qb.cluster_group[cluster[~old]] = self.groups[touched[~old] - self.n_old]
        qb.k += n_new
        labels = torch.full((done,), -1, dtype=torch.int64, device=qb.device)
        labels[rows] = cluster[local]
        return labels


# ------------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clusters:
    """A partition of a tractogram's streamlines, in input order.

    labels: (N,) int64 cluster of each streamline; -1 for streamlines that have no resampling
    (fewer than two distinct points, ``n_undefined`` of them) and for members of clusters dropped
    as too small. centroids: (K, M, 3) float32 RAS mm, the running means QuickBundles keeps (each
    member in the orientation it joined with). sizes: (K,) int64. parents: (K,) int64 index of each
    cluster's cluster at the previous, coarser level of a hierarchy (None for a single level).
    Clusters are numbered in the order they were founded, as DIPY numbers them.
    """

    labels: torch.Tensor
    centroids: torch.Tensor
    sizes: torch.Tensor
    threshold: float
    n_undefined: int = 0
    parents: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.sizes)

    def indices(self, k: int) -> torch.Tensor:
        """Input indices of the streamlines of cluster ``k``, in input order."""
        return torch.nonzero(self.labels == k).flatten()

    def colors(self) -> torch.Tensor:
        """(K, 3) uint8 RGB colour of each cluster, a function of its index only (see ``cluster_colors``)."""
        return cluster_colors(len(self))


def cluster_colors(n: int) -> torch.Tensor:
    """(n, 3) uint8 RGB colours, the same for the same cluster index in every run.

    Hues step around the colour wheel by the golden ratio, so neighbouring indices differ
    strongly; saturation and value alternate between two levels for more contrast.
    """
    k = torch.arange(n, dtype=torch.float64)
    hue = torch.remainder(k * 0.6180339887498949, 1.0) * 6
    sat = torch.where(k % 2 == 0, 0.85, 0.6)
    val = torch.where(k % 3 == 2, 0.75, 0.95)
    sector = torch.floor(hue)
    f = hue - sector
    p, q, t = val * (1 - sat), val * (1 - sat * f), val * (1 - sat * (1 - f))
    table = torch.stack([torch.stack(c, 1) for c in
                         ((val, t, p), (q, val, p), (p, val, t), (p, q, val), (t, p, val), (val, p, q))], 0)
    rgb = table[sector.long().clamp(max=5), torch.arange(n)]
    return torch.round(rgb * 255).to(torch.uint8)


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not math.isfinite(threshold) or threshold <= 0:
        raise InputError(f"the clustering threshold must be a positive distance in mm, got {threshold}")
    return threshold


def _features(tractogram: Tractogram, nb_points: int):
    if len(tractogram) == 0:
        raise InputError("the tractogram has no streamlines to cluster")
    if int(nb_points) < 2:
        raise InputError(f"streamlines must be resampled to at least 2 points, got {nb_points}")
    x, xf = _resample_both(tractogram, int(nb_points))
    return x, xf, torch.nonzero(~torch.isnan(x[:, 0, 0])).flatten()


def _drop_small(labels: torch.Tensor, centroids: torch.Tensor, sizes: torch.Tensor, min_size: int):
    """Remove clusters with fewer than ``min_size`` members; the others keep their order."""
    keep = sizes >= min_size
    new_index = torch.cumsum(keep.long(), 0) - 1
    new_index[~keep] = -1
    labels = torch.where(labels >= 0, new_index[labels.clamp(min=0)], -1)
    return labels, centroids[keep], sizes[keep], keep


def quickbundles(tractogram: Tractogram, threshold: float, nb_points: int = 12, *, min_size: int = 1,
                 batch_size: int | None = None) -> Clusters:
    """QuickBundles (Garyfallidis et al. 2012) with DIPY's exact semantics, on the tractogram's device.

    threshold: MDF distance in mm below which a streamline joins the nearest cluster (strictly).
    nb_points: points per streamline after resampling. Streamlines are visited in input order and
    the result equals ``dipy.segment.clustering.QuickBundles(threshold, metric="MDF_12points")``
    (for nb_points 12): same labels, same float32 centroids. min_size: clusters with fewer members
    are dropped (their streamlines get label -1); the rest are renumbered in order.
    batch_size: streamlines decided together (memory vs speed; the result does not depend on it).
    """
    threshold = _check_threshold(threshold)
    x, xf, order = _features(tractogram, nb_points)
    qb = _QuickBundles(x, xf, threshold, batch_size=batch_size)
    labels = qb.run(order)
    labels, centroids, sizes, _ = _drop_small(labels, qb.centroids[:qb.k].clone(), qb.sizes[:qb.k].clone(), min_size)
    return Clusters(labels, centroids, sizes, threshold, len(tractogram) - len(order))


def hierarchical_quickbundles(tractogram: Tractogram, thresholds, nb_points: int = 12, *,
                              min_size: int = 1, batch_size: int | None = None) -> list[Clusters]:
    """QuickBundles at decreasing thresholds, each level splitting the clusters of the level above.

    thresholds: MDF distances in mm, coarse to fine (e.g. ``(20, 10, 5)``). Level 0 is
    ``quickbundles(tractogram, thresholds[0])``; level i runs QuickBundles with ``thresholds[i]``
    inside every cluster of level i - 1 separately (streamlines in input order), so the levels nest
    and ``parents`` links each cluster to the one it splits. All clusters of a level are computed
    in one batched pass. min_size applies to every level's output (the nesting is computed first).
    """
    thresholds = [_check_threshold(t) for t in thresholds]
    if not thresholds:
        raise InputError("give at least one clustering threshold")
    if any(b >= a for a, b in zip(thresholds, thresholds[1:])):
        raise InputError(f"hierarchy thresholds must decrease from coarse to fine, got {thresholds}")
    x, xf, order = _features(tractogram, nb_points)
    levels, groups = [], None
    for threshold in thresholds:
        qb = _QuickBundles(x, xf, threshold, groups=groups, batch_size=batch_size)
        labels = qb.run(order)
        parents = None if groups is None else qb.cluster_group[:qb.k].clone()
        levels.append((labels, qb.centroids[:qb.k].clone(), qb.sizes[:qb.k].clone(), threshold, parents))
        groups = labels
    out, kept_before = [], None
    for labels, centroids, sizes, threshold, parents in levels:
        labels, centroids, sizes, keep = _drop_small(labels, centroids, sizes, min_size)
        if parents is not None:
            remap = torch.cumsum(kept_before.long(), 0) - 1
            parents = torch.where(kept_before[parents], remap[parents], -1)[keep]
        out.append(Clusters(labels, centroids, sizes, threshold, len(tractogram) - len(order), parents))
        kept_before = keep
    return out
