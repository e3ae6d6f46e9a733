"""``track`` and ``Tracker``: seeds in, tractogram out, in RAS mm, on CPU or CUDA.

Runs go through the compiled kernels (``engine``); when the field's tensor or the seeds require grad,
the points carry autograd history whose backward replays the run (``replay``). The batched torch loop
(``propagation``, ``engine="torch"``) is the reference both are tested against: the same streamlines,
the same gradients.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Callable

import numpy as np
import torch

from .. import rng
from ..config import TrackingParams
from ..devices import resolve_device
from ..errors import InputError
from ..geometry import dot3, mean_voxel_size
from ..fields import DWIField, SHField
from ..stopping import BinaryMask, Status, StreamlineStatus
from ..streamlines import Tractogram
from .algorithms import algorithm
from .engine import KernelTracker, TrackingCancelled, point_limits, supported_region
from .methods import make_method
from .propagation import HalfStreamlines, propagate
from .replay import Replay, track_differentiable

log = logging.getLogger(__name__)

DEFAULT_CHUNK = {"cpu": 20000, "cuda": 200000}


def _field_to(field, device: torch.device, dtype: torch.dtype):
    if isinstance(field, SHField):
        return SHField(torch.as_tensor(field.coeffs).to(device=device, dtype=dtype), field.affine, field.basis,
                       field.frame)
    if isinstance(field, DWIField):
        return DWIField(torch.as_tensor(field.data).to(device=device, dtype=dtype), field.affine, field.bvals,
                        field.bvecs)
    raise InputError(f"cannot track on a {type(field).__name__}; give an SHField or a DWIField")


def _join(before: HalfStreamlines, n_before: torch.Tensor, seeds: torch.Tensor, after: HalfStreamlines,
          n_after: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Streamlines ``reversed(before) + seed + after`` as padded (M, T, 3) points and lengths (M,)."""
    tb = before.points.shape[1]
    src = torch.cat([before.points, seeds[:, None, :], after.points], 1)
    lengths = n_before + 1 + n_after
    width = int(lengths.max()) if len(lengths) else 0
    j = torch.arange(width, device=seeds.device)[None, :]
    nb = n_before[:, None]
    index = torch.where(j < nb, nb - 1 - j, torch.where(j == nb, torch.full_like(j, tb), tb + j - nb))
    index = torch.where(j < lengths[:, None], index, torch.zeros_like(index))
    return torch.gather(src, 1, index[..., None].expand(-1, -1, 3)), lengths


def _expand_to_peaks(method, seeds: torch.Tensor, directions: torch.Tensor, ids: torch.Tensor):
    """Give seeds without a direction one row per start direction of ``method.initial_directions``
    (DIPY: one streamline per peak), in seed order. Returns seeds, directions, ids and the peak
    number (0, 1, ... among the rows of one seed)."""
    given = ~torch.isnan(directions).any(-1)
    peaks = None if bool(given.all()) else method.initial_directions(seeds[~given])
    if peaks is None:
        return seeds, directions, ids, torch.zeros_like(ids)
    peak_dirs, peak_rows = peaks
    rows = torch.cat([torch.nonzero(given).flatten(), torch.nonzero(~given).flatten()[peak_rows]])
    rows, order = torch.sort(rows, stable=True)
    directions = torch.cat([directions[given], peak_dirs.to(directions.dtype)])[order]
    peak = torch.arange(len(rows), device=rows.device) - torch.searchsorted(rows, rows)
    return seeds[rows], directions, ids[rows], peak


def _track_chunk(method, seeds: torch.Tensor, directions: torch.Tensor, ids: torch.Tensor,
                 params: TrackingParams, region, limits: tuple[int, int], stats: Counter):
    min_points, max_points = limits
    seeds, directions, ids, peak = _expand_to_peaks(method, seeds, directions, ids)
    given = ~torch.isnan(directions).any(-1)
    random_dirs = rng.unit_vectors(params.rng_seed, ids, stream=0, dtype=seeds.dtype)
    d = torch.nan_to_num(directions)  # normalised in the working precision, as MRtrix3's init()
    start = torch.where(given[:, None], d / torch.sqrt(dot3(d, d)).clamp(min=1e-30)[:, None], random_dirs)
    ok = torch.ones(len(seeds), dtype=torch.bool, device=seeds.device)
    if region is not None:
        ok &= region.contains(seeds)
    seed_dir, init_ok = method.init(seeds, start)
    ok &= init_ok
    stats[StreamlineStatus.SEED_REJECTED.name] += int((~ok).sum())
    rows = torch.nonzero(ok).flatten()
    if len(rows) == 0:
        return None
    pos, seed_dir, ids = seeds[rows], seed_dir[rows], ids[rows]
    branch = 2 * peak[rows]  # random-draw keys: branch 2 j + h for half h of the seed's j-th start
    m = len(rows)
    run = lambda p, d, keys, n=max_points - 1: propagate(method, p, d, params.step_size, n, region,  # noqa: E731
                                                         rk4_cos_max=method.cos_max if params.rk4 else None,
                                                         keys=keys)
    if params.unidirectional:
        first = run(pos, seed_dir, (ids, branch))
        second = HalfStreamlines(pos.new_zeros((m, 0, 3)), torch.zeros_like(first.counts), first.status, first.first_step)
    else:  # both halves in one batch; the shared budget is applied afterwards
        # DIPY's second half starts from the first half's first step: a one-step probe finds it
        probe = run(pos, seed_dir, (ids, branch), 1) if method.reverse_uses_first_step else None
        both = run(torch.cat([pos, pos]), torch.cat([seed_dir, method.reverse(seed_dir, probe)]),
                   (torch.cat([ids, ids]), torch.cat([branch, branch + 1])))
        first, second = (HalfStreamlines(both.points[s], both.counts[s], both.status[s], both.first_step[s])
                         for s in (slice(0, m), slice(m, 2 * m)))
    n1, n2 = first.counts, second.counts
    if method.shared_budget and not params.unidirectional:
        cap = (max_points - 1 - n1).clamp(min=1)
        over = n2 > cap
        n2 = torch.where(over, cap, n2)
        second.status = torch.where(over, torch.full_like(second.status, Status.MAX_LENGTH), second.status)
    for half in (first,) if params.unidirectional else (first, second):
        counts = torch.bincount(half.status, minlength=len(Status)).tolist()
        stats.update({Status(code).name: c for code, c in enumerate(counts) if c})
    if params.unidirectional or method.forward_after_seed:
        points, lengths = _join(second, n2, pos, first, n1)
    else:
        points, lengths = _join(first, n1, pos, second, n2)
    accepted = (lengths >= min_points) & ~((lengths == 1) & (min_points > 1))
    stats[StreamlineStatus.TOO_SHORT.name] += int((~accepted).sum())
    stats[StreamlineStatus.ACCEPTED.name] += int(accepted.sum())
    keep = torch.nonzero(accepted).flatten()
    return points[keep], lengths[keep], ids[keep]


class Tracker:
    """A field with its method, stopping region and point budgets, prepared once; call it with seeds
    as many times as needed, e.g. at every move of an interactive seed. ``track`` is
    ``Tracker(field, params, mask=mask)(seeds, ...)``.

    field: an ``SHField`` or a ``DWIField`` (numpy arrays or torch tensors). params / overrides:
    ``TrackingParams`` fields (``step_size`` mm, ``max_angle`` degrees, ...). mask: stopping region:
    a region of ``stopping`` (``BinaryMask``, ``ThresholdMap``, ``AllOf``), a (3-D array, affine) pair
    on its own grid, or a 3-D array on the field's grid (nearest-voxel test with the algorithm's
    rounding). Seeds outside it are rejected; a step that leaves it ends the streamline (the point is
    dropped). Any other object with ``contains`` (torch points -> bool) is tested by the torch loop,
    which is then used for every call (a warning says so).

    engine: ``None`` (default): the compiled kernels (``engine.KernelTracker``, on all CPU cores or
    CUDA); when the field's tensor or the seeds require grad, the points carry autograd history and
    the backward pass replays the run on the CPU cores (``replay``). ``"torch"``: the batched torch
    loop on ``device``, recording autograd history step by step (the reference the kernels and the
    replay are tested against; slower, memory per point several times larger).
    """

    def __init__(self, field, params: TrackingParams | None = None, *, mask=None, engine: str | None = None,
                 **overrides):
        if engine not in (None, "torch"):
            raise InputError(f"engine must be None (automatic) or 'torch', got {engine!r}")
        self._given = (params or TrackingParams()).replace(**overrides)
        self.params = self._given.resolved(mean_voxel_size(field.affine))
        self.algorithm = algorithm(self.params.algorithm)
        self.algorithm.check_field(field)
        self.device = resolve_device(self.params.device)
        self.dtype = torch.float64 if self.params.precision == "float64" else torch.float32
        self.limits = point_limits(self.params, self.algorithm.shared_budget)
        self._source, self._mask, self._engine = field, mask, engine
        self._kernels: KernelTracker | None = None
        self._replay: Replay | None = None
        self.method = None
        if not supported_region(mask):
            log.warning("the stopping region %s is not one the compiled kernels test; tracking with the torch loop",
                        type(mask).__name__)

    @property
    def _data(self):
        return self._source.coeffs if isinstance(self._source, SHField) else self._source.data

    def _wants_grad(self, seeds) -> bool:
        return torch.is_grad_enabled() and any(torch.is_tensor(x) and x.requires_grad for x in (self._data, seeds))

    def _prepare_kernels(self) -> KernelTracker:
        """The kernels, with the field's current values when its tensor is a parameter (requires grad:
        an optimiser may have changed it since the last call)."""
        if self._kernels is None:
            self._kernels = KernelTracker(self._source, self._given, mask=self._mask)
        elif torch.is_tensor(self._data) and self._data.requires_grad:
            self._kernels.refresh(self._source)
        return self._kernels

    def needs_compiling(self) -> bool:
        """Whether the next call compiles the kernels (``KernelTracker.needs_compiling``)."""
        return self._engine is None and supported_region(self._mask) and self._prepare_kernels().needs_compiling()

    def _prepare(self) -> None:
        """The torch path's field, method and region on ``device``."""
        self.field = _field_to(self._source, self.device, self.dtype)
        self.method = make_method(self.field, self.params, self.dtype)
        mask = self._mask
        if mask is None or hasattr(mask, "contains"):  # a region object, built on any device
            self.region = mask.to(self.device) if hasattr(mask, "to") else mask
        else:
            data, mask_affine = mask if isinstance(mask, tuple) else (mask, self.field.affine)
            self.region = BinaryMask(data, mask_affine, rule=self.algorithm.rule, device=self.device)

    def __call__(self, seeds, *, seed_directions=None, seed_ids=None,
                 progress: Callable[[int, int], None] | None = None,
                 cancel: Callable[[], bool] | None = None) -> Tractogram:
        """Track from ``seeds`` (N, 3) RAS mm; ``seed_directions`` (N, 3) RAS start directions, NaN
        rows for none (MRtrix3's methods then draw a random direction that the method refines, DIPY's
        track one streamline per peak); ``seed_ids`` (N,) integers naming the seeds (default
        0..N-1): they key every random draw of a seed and become ``seed_index``, so a seed's
        streamline does not depend on the other seeds of the call. ``progress`` is called with (seeds
        done, seeds total) after each chunk; ``cancel()`` returning True stops the run
        (``engine.TrackingCancelled``). See ``track`` for the result. With gradients, a field that
        requires grad is prepared again at every call, so each call has its own graph and sees the
        field's current values."""
        if self._engine == "torch" or not supported_region(self._mask):
            return self._track_torch(seeds, seed_directions, seed_ids, progress, cancel)
        kernels = self._prepare_kernels()
        if self._wants_grad(seeds):
            data = self._data if torch.is_tensor(self._data) else torch.as_tensor(self._data)
            if self._replay is None or self._replay.gradient_dtype != data.dtype:
                self._replay = Replay(kernels, data.dtype)
            points, out = track_differentiable(kernels, self._replay, data, seeds, seed_directions=seed_directions,
                                               seed_ids=seed_ids, progress=progress, cancel=cancel)
        else:
            out = kernels(seeds, seed_directions=seed_directions, seed_ids=seed_ids, progress=progress, cancel=cancel)
            points = torch.from_numpy(out.points)
        lengths = torch.from_numpy(out.lengths)
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
        torch.cumsum(lengths, 0, out=offsets[1:])
        result = Tractogram(points, offsets.to(points.device), np.asarray(self._source.affine), kernels.shape,
                            {"seed_index": torch.from_numpy(out.seed_index).to(points.device)}, meta=dict(out.stats))
        return result if self.device.type == "cpu" else result.to(self.device)

    def _track_torch(self, seeds, seed_directions, seed_ids, progress, cancel) -> Tractogram:
        if self.method is None or (torch.is_grad_enabled() and self.method.requires_grad):
            self._prepare()
        device, dtype, params = self.device, self.dtype, self.params
        seeds = torch.as_tensor(seeds, dtype=dtype).to(device)
        if seeds.ndim != 2 or seeds.shape[1] != 3:
            raise InputError(f"seeds must be an (N, 3) array of RAS mm points, got shape {tuple(seeds.shape)}")
        n = len(seeds)
        if n == 0:
            raise InputError("there are no seeds to track from")
        all_ids = (torch.arange(n, device=device) if seed_ids is None
                   else torch.as_tensor(seed_ids, dtype=torch.int64).to(device).reshape(-1))
        if len(all_ids) != n:
            raise InputError(f"{len(all_ids)} seed ids for {n} seeds")
        if seed_directions is None:
            directions = torch.full((n, 3), float("nan"), dtype=dtype, device=device)
        else:
            directions = torch.as_tensor(seed_directions, dtype=dtype).to(device)
            if directions.shape != seeds.shape:
                raise InputError(f"{len(directions)} seed directions for {n} seeds")
        chunk = params.chunk_size or DEFAULT_CHUNK[device.type]
        stats: Counter = Counter()
        parts, start = [], 0
        while start < n:
            if cancel is not None and cancel():
                raise TrackingCancelled("tracking was cancelled")
            end = min(start + chunk, n)
            ids = all_ids[start:end]
            try:
                out = _track_chunk(self.method, seeds[start:end], directions[start:end], ids, params, self.region,
                                   self.limits, stats)
            except torch.cuda.OutOfMemoryError:
                if chunk == 1:
                    raise
                chunk = max(1, chunk // 2)
                torch.cuda.empty_cache()
                log.warning("CUDA ran out of memory; retrying with chunks of %d seeds", chunk)
                continue
            if out is not None:
                parts.append(out)
            start = end
            if progress is not None:
                progress(end, n)
        affine, dims = np.asarray(self.field.affine), self.field.shape
        if not parts:
            return Tractogram(seeds.new_zeros((0, 3)), torch.zeros(1, dtype=torch.int64), affine, dims,
                              {"seed_index": torch.zeros(0, dtype=torch.int64)}, meta=dict(stats))
        result = Tractogram.concatenate([Tractogram.from_padded(p, l, affine, dims, {"seed_index": i})
                                         for p, l, i in parts])
        result.meta = dict(stats)
        return result


def track(field, seeds, params: TrackingParams | None = None, *, seed_directions=None, mask=None,
          progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
          engine: str | None = None, **overrides) -> Tractogram:
    """Track from ``seeds`` (N, 3) RAS mm through ``field`` (an ``SHField`` or a ``DWIField``).

    params / overrides, mask, engine: as ``Tracker``. seed_directions, progress, cancel: as
    ``Tracker.__call__``.

    Returns the accepted streamlines in seed order, points in RAS mm, with ``seed_index`` per
    streamline and termination counts in ``meta``. Points keep autograd history to the field's
    tensor and to ``seeds`` when those require grad.
    """
    return Tracker(field, params, mask=mask, engine=engine, **overrides)(seeds, seed_directions=seed_directions, progress=progress,
                                                          cancel=cancel)
