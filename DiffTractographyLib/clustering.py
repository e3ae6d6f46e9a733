"""Streamline clustering: QuickBundles with DIPY's exact semantics, batched in torch.

Streamlines are resampled to ``nb_points`` points equally spaced in arc length (DIPY's
``set_number_of_points``) and compared with the MDF distance (mean distance between corresponding
points, the smaller of the direct and the flipped orientation), in mm. Results equal
``dipy.segment.clustering.QuickBundles`` on the same input order, labels and centroids alike.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import InputError
from .streamlines import Tractogram

# Padded points handled at once while resampling: bounds the temporary memory.
_RESAMPLE_CHUNK_POINTS = 1 << 17


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
    """Float64 length of the segment from point p to p + 1 of a flat (P, 3) float32 array, then a 0.

    As DIPY: coordinate differences in float32, squares and their sum (x, y, z in order) in float64.
    """
    d = (points[1:] - points[:-1]).T.double()
    d = d * d
    length = torch.sqrt(d[0] + d[1] + d[2])
    return torch.cat([length, length.new_zeros(1)])


def _resample_chunk(points: torch.Tensor, seg_len: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor,
                    nb_points: int, reverse: bool) -> torch.Tensor:
    """DIPY ``set_number_of_points`` on the streamlines ``points[starts[i]:starts[i] + lengths[i]]``.

    ``seg_len`` comes from ``_segment_lengths(points)``. Arc lengths and the sample positions
    (``step`` added again and again) are float64 sums in DIPY's order, interpolated points are
    rounded to float32, the end vertices are copied exactly. Rows with zero arc length are NaN.
    """
    dev = points.device
    n, t = len(lengths), int(lengths.max())
    j = torch.arange(t - 1, device=dev)[None, :]
    n_seg = (lengths - 1)[:, None]
    seg_index = (starts[:, None] + (n_seg - 1 - j if reverse else j)).where(j < n_seg, len(seg_len) - 1)
    arc = torch.zeros((n, t), dtype=torch.float64, device=dev)
    arc[:, 1:] = _sequential_cumsum(torch.take(seg_len, seg_index))
    total = arc[:, -1:]
    step = total / (nb_points - 1)
    targets = [torch.zeros_like(step)]
    for _ in range(nb_points - 2):
        targets.append(targets[-1] + step)
    targets = torch.cat(targets[1:], 1) if nb_points > 2 else step[:, :0]
    k = torch.searchsorted(arc, targets, side="left").clamp_(1, t - 1)
    arc_k, arc_prev = arc.gather(1, k), arc.gather(1, k - 1)
    ratio = 1 - ((arc_k - targets) / (arc_k - arc_prev))
    first, last = starts, starts + lengths - 1
    if reverse:
        first, last = last, first
        k = (starts[:, None] + n_seg - k).clamp_(min=0)
        p_k, p_prev = _rows(points, k), _rows(points, k + 1)
    else:
        k = (starts[:, None] + k).clamp_(max=len(points) - 1)
        p_k, p_prev = _rows(points, k), _rows(points, k - 1)
    inner = (p_prev.double() + ratio[..., None] * (p_k - p_prev).double()).float()
    inner = torch.where((arc_k == targets)[..., None], p_k, inner)
    out = torch.cat([_rows(points, first[:, None]), inner, _rows(points, last[:, None])], 1)
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
    """``resample_streamlines`` for each ``reverse`` flag in ``directions``, sharing the work."""
    if nb_points < 2:
        raise InputError(f"nb_points must be at least 2, got {nb_points}")
    points = tractogram.points.detach().float()
    dev = points.device
    offsets = tractogram.offsets.cpu()
    out = [torch.full((len(tractogram), nb_points, 3), float("nan"), dtype=torch.float32, device=dev)
           for _ in directions]
    for i0, i1 in _chunks(tractogram.lengths.cpu(), _RESAMPLE_CHUNK_POINTS):
        p0, p1 = int(offsets[i0]), int(offsets[i1])
        lengths = (offsets[i0 + 1:i1 + 1] - offsets[i0:i1]).to(dev)
        if p1 - p0 < 2 or int(lengths.max()) < 2:
            continue
        chunk = points[p0:p1]
        starts = (offsets[i0:i1] - p0).to(dev)
        seg_len = _segment_lengths(chunk)
        for result, reverse in zip(out, directions):
            result[i0:i1] = _resample_chunk(chunk, seg_len, starts, lengths, nb_points, reverse)
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
    distance compares a with b's points in reverse order, as DIPY's ``bundles_distances_mdf``.
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
#   1. Pruning. A lower bound of the MDF, cheap to compute for all (streamline, cluster) pairs
#      with one matrix product, keeps the few clusters that can be below the threshold. Grouping
#      the M points into a first half, a second half (and the middle point for odd M), with g_j
#      the mean of a group and w_j its share of the points,
#          MDF(x, c) >= sum_j w_j |g_j(x) - g_j(c)| >= || (w_j (g_j(x) - g_j(c)))_j ||,
#      and the bound moves by at most the mean pointwise displacement of the centroid.
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
# Pairs of a lower-bound matrix computed at once (memory bound, independent of the cluster count).
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
    """Per row of a sparse (row, col) -> value list: the minimum and the lowest col reaching it.

    Rows without entries get +inf and col -1 (DIPY's strict ``<`` scan keeps the first minimum).
    """
    best = values.new_full((n,), float("inf")).scatter_reduce(0, rows, values, "amin", include_self=True)
    at_min = values == best[rows]
    big = torch.iinfo(torch.int64).max
    col = torch.full((n,), big, dtype=torch.int64, device=values.device)
    col = col.scatter_reduce(0, rows[at_min], cols[at_min], "amin", include_self=True)
    return best, torch.where(col == big, -1, col)


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
        radius = float(torch.nan_to_num(torch.linalg.vector_norm(torch.cat([self.bx, self.bxf]), dim=1)).max()) if n else 0.0
        # float32 rounding of the matrix-product bounds, with a wide margin
        self.eps_sq = 4e-5 * radius * radius + 1e-12
        self.groups = groups if groups is not None else torch.zeros(n, dtype=torch.int64, device=self.device)
        capacity = 64
        self.centroids = x.new_zeros((capacity, m, 3))
        self.sizes = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        self.bounds = self.bx.new_zeros((capacity, self.bx.shape[1]))
        self.cluster_group = torch.zeros(capacity, dtype=torch.int64, device=self.device)
        self.k = 0
        self.batch_size = batch_size or (4096 if self.device.type == "cpu" else 32768)
        self.rounds = []

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

    def _candidate_clusters(self, bx: torch.Tensor, bxf: torch.Tensor, groups: torch.Tensor):
        """Clusters within reach of any batch streamline before the batch: (U,) ids, (B, U) sq bounds."""
        ids, cols = [], []
        step = max(1, _BOUND_CHUNK // max(1, 2 * len(bx)))
        limit = self._limit_sq()
        for k0 in range(0, self.k, step):
            k1 = min(self.k, k0 + step)
            sq = torch.minimum(_sq_bounds(bx, self.bounds[k0:k1]), _sq_bounds(bxf, self.bounds[k0:k1]))
            sq.masked_fill_(groups[:, None] != self.cluster_group[None, k0:k1], float("inf"))
            keep = torch.nonzero((sq < limit).any(0)).flatten()
            ids.append(keep + k0)
            cols.append(sq[:, keep])
        if not ids:
            return torch.zeros(0, dtype=torch.int64, device=self.device), bx.new_zeros((len(bx), 0))
        return torch.cat(ids), torch.cat(cols, 1)

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
            self.rounds.append(rounds)
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
        self.ids, self.bound_sq = qb._candidate_clusters(self.bx, self.bxf, self.groups)
        self.n_old = len(self.ids)
        self.slot_of = torch.full((qb.k,), -1, dtype=torch.int64, device=qb.device)
        self.slot_of[self.ids] = torch.arange(self.n_old, device=qb.device)

    def __len__(self) -> int:
        return len(self.index)

    def chains(self, target: torch.Tensor, flip: torch.Tensor, limit: int | None = None) -> dict:
        """Centroid states inside the batch implied by the decisions of positions < ``limit``."""
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
        return dict(rows=rows, slot=slot, touched=touched, local=local, post=post, flip=flip,
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

    def decide(self, chain: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Each position's decision against the centroid states implied by ``chain``'s decisions."""
        qb, n, n_old = self.qb, len(self), self.n_old
        founders = chain["founders"]
        motion_old, motion_new = self._motions(chain)
        rows_o, slot_o = torch.nonzero(self.bound_sq < qb._limit_sq(motion_old).float()[None, :], as_tuple=True)
        sq_new = torch.minimum(self._founded_bounds(chain, self.bx, self.pos), self._founded_bounds(chain, self.bxf, self.pos))
        rows_n, col_n = torch.nonzero(sq_new < qb._limit_sq(motion_new).float()[None, :], as_tuple=True)
        rows = torch.cat([rows_o, rows_n])
        slot = torch.cat([slot_o, n_old + founders[col_n]])
        gid = torch.cat([self.ids[slot_o], torch.zeros_like(rows_n)])
        state = self._as_seen(chain, rows, slot, gid)
        best_d, slot_d = _first_argmin(_pair_distances(state, self.x.index_select(0, rows)), rows, slot, n)
        best_f, slot_f = _first_argmin(_pair_distances(state, self.xf.index_select(0, rows)), rows, slot, n)
        use_flip = best_f < best_d
        joins = torch.where(use_flip, best_f, best_d) < qb.threshold
        target = torch.where(joins, torch.where(use_flip, slot_f, slot_d), n_old + self.pos)
        founds = torch.nonzero(~joins).flatten()
        if len(founds):
            use_flip[founds] = self._founder_flip(chain, founds)
        return target, use_flip

    def _founder_flip(self, chain: dict, rows: torch.Tensor) -> torch.Tensor:
        """DIPY's orientation for a streamline that founds a cluster: flipped when its flipped
        features are strictly nearer to the nearest existing centroid than its direct ones."""
        qb, n_old = self.qb, self.n_old
        founders = chain["founders"]
        motion_old, motion_new = self._motions(chain)
        motion = torch.zeros(qb.k, dtype=torch.float64, device=qb.device)
        motion[self.ids] = motion_old
        other_group = self.groups[rows][:, None] != qb.cluster_group[None, :qb.k]
        slot = torch.cat([self.slot_of, n_old + founders])
        gid = torch.cat([torch.arange(qb.k, device=qb.device), torch.zeros_like(founders)])
        nearest = []
        for bounds, feats in ((self.bx, self.x), (self.bxf, self.xf)):
            sq = torch.cat([_sq_bounds(bounds[rows], qb.bounds[:qb.k]).masked_fill_(other_group, float("inf")),
                            self._founded_bounds(chain, bounds[rows], rows)], 1)
            lower = torch.sqrt((sq.double() - qb.eps_sq).clamp(min=0)) - torch.cat([motion, motion_new])
            if lower.shape[1] == 0:
                nearest.append(torch.full((len(rows),), float("inf"), dtype=torch.float64, device=qb.device))
                continue
            first = lower.argmin(1)
            seen = torch.isfinite(lower.gather(1, first[:, None])).flatten()
            r0, c0 = torch.nonzero(seen).flatten(), first[seen]
            upper = torch.full((len(rows),), float("inf"), dtype=torch.float64, device=qb.device)
            upper[r0] = _pair_distances(self._as_seen(chain, rows[r0], slot[c0], gid[c0]), feats.index_select(0, rows[r0]))
            r, c = torch.nonzero(torch.isfinite(lower) & (lower <= (upper * (1 + 1e-6))[:, None]), as_tuple=True)
            dist = _pair_distances(self._as_seen(chain, rows[r], slot[c], gid[c]), feats.index_select(0, rows[r]))
            nearest.append(dist.new_full((len(rows),), float("inf")).scatter_reduce(0, r, dist, "amin"))
        return nearest[1] < nearest[0]

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
