"""The uncertainty envelope of a bundle: the same seeds tracked R times on perturbed data.

Each repeat is one of
- ``wild``: a wild bootstrap replicate of the DWI (``planning.bootstrap``), drawn in a region around
  the bundle and refitted there: tensordet tracks the replicate itself (the log-linear tensor model
  resampled, Tensor_Det's own fit); the FOD algorithms track CSD refitted to it (the signal resampled
  under an SH series of the CSD's order, so that crossing-fibre signal is not taken for noise; the
  response and the CSD matrices are those of the original data);
- ``prob``: the ``prob`` algorithm with fresh random draws on the unchanged FOD.

Before the repeats, the original data is tracked once (the reference run). The region is the voxel
box around the seeds and every streamline of the reference run, widened by ``margin`` mm; a repeat
with a streamline coming within ``GUARD`` voxels of the region's edge (inside the image) grows the
region around all its streamlines and is drawn and tracked again. Outside the region the DWI is the
original one, the refitted FOD zero. A voxel's replicate is keyed by (rng seed, repeat, voxel), so a
repeat's streamlines do not depend on the region as long as they stay in it: results depend only on
the inputs and ``rng_seed``. Every random draw of repeat r is keyed by seed ids r N .. r N + N - 1
(the reference run uses 0 .. N - 1, as ``track`` does), so repeats are independent and reproducible.

Outputs: the share of repeats whose bundle (the streamlines that pass ``include``/``exclude``) visits
each voxel of a template grid (``density.density_map`` > 0, tckmap's counting), and with a lesion,
per repeat the bundle's smallest distance to it (mm, signed: negative inside, ``distance``) and a
robust figure, the ``robust_percentile``-th percentile over the bundle's streamlines of each
streamline's smallest distance (a bundle of fewer than 101 streamlines interpolates between its two
closest at the 1st percentile). A repeat whose bundle is empty has distance +inf. Percentiles over
repeats (and over streamlines) are numpy's ``linear`` method (Hyndman & Fan type 7): sorted values
v_0 <= ... <= v_{R-1}, the q-th percentile at position h = (R - 1) q / 100 is
v_floor(h) + (h - floor(h)) (v_ceil(h) - v_floor(h)); with R = 20 the 5th percentile is
0.05 v_0 + 0.95 v_1 and the 95th 0.95 v_18 + 0.05 v_19; inf values give inf.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from ..config import TrackingParams
from ..dwi import DWI
from ..errors import InputError
from ..fields import DWIField, SHField
from ..geometry import apply_affine, as_affine, voxel_sizes
from ..streamlines import Tractogram
from .density import density_map
from .distance import lesion_measure, streamline_distances

METHODS = ("wild", "prob")
#: percentiles over repeats reported for each distance
PERCENTILES = (5.0, 50.0, 95.0)
#: voxels between a streamline and the region's edge below which the region grows (interpolation
#: reads the next voxel, and a terminating step may go one step further)
GUARD = 2.0
#: voxels per CSD solve (``models.csd.fit_fod``'s CPU batch: cache-sized batches are fastest)
CSD_CHUNK = 1024


@dataclass
class Envelope:
    """What ``envelope`` returns.

    probability: (X, Y, Z) float32 share of the repeats whose bundle visits each voxel of the
    template grid ``affine`` (voxel -> RAS mm). streamlines: (R,) bundle streamlines per repeat.
    minimum / robust: (R,) mm per repeat (None without a lesion). percentiles: ``{"minimum": {5.0:
    mm, 50.0: mm, 95.0: mm}, "robust": {...}}`` over the repeats. reference: the run on the original
    data (``streamlines``, ``minimum``, ``robust``). region: the final bootstrap region, voxel index
    bounds ``(lower, upper)`` (upper exclusive; None for ``prob`` on a given FOD). redrawn: times a
    repeat was drawn and tracked again in a grown region. seconds: wall time of each stage and ``total``.
    """

    probability: np.ndarray
    affine: np.ndarray
    method: str
    algorithm: str
    repeats: int
    rng_seed: int
    streamlines: np.ndarray
    minimum: np.ndarray | None
    robust: np.ndarray | None
    robust_percentile: float
    percentiles: dict | None
    reference: dict
    region: tuple | None
    redrawn: int
    seconds: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """A JSON-ready summary: per-repeat values, percentiles and how they were computed."""
        def values(a):
            return None if a is None else [_number(v) for v in np.asarray(a, dtype=np.float64)]

        return {
            "method": self.method, "algorithm": self.algorithm, "repeats": self.repeats, "rng_seed": self.rng_seed,
            "distance_units": "mm, signed: negative inside the lesion",
            "robust": f"{self.robust_percentile:g}th percentile over the bundle's streamlines of each "
                      "streamline's smallest distance (numpy 'linear')",
            "percentile_method": "numpy.percentile 'linear' (Hyndman-Fan type 7) over the per-repeat values; "
                                 "a repeat with an empty bundle counts as +inf",
            "streamlines": [int(n) for n in self.streamlines], "minimum": values(self.minimum),
            "robust_distance": values(self.robust),
            "percentiles": None if self.percentiles is None else {
                name: {f"p{q:g}": _number(v) for q, v in p.items()} for name, p in self.percentiles.items()},
            "reference": {k: _number(v) if isinstance(v, float) else v for k, v in self.reference.items()},
            "region_voxels": None if self.region is None else [list(map(int, b)) for b in self.region],
            "redrawn": self.redrawn, "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
        }


def _number(v: float) -> float | str:
    """A float for JSON: inf as the string 'inf'."""
    return float(v) if math.isfinite(v) else str(v)


def percentiles(values, q: Sequence[float] = PERCENTILES) -> dict[float, float]:
    """numpy's ``linear`` percentiles ``q`` of ``values`` (inf allowed: where both neighbours are inf, inf)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    with np.errstate(invalid="ignore"):                      # inf - inf, or inf x 0, on the way
        out = np.percentile(v, q, method="linear")
    h = (len(v) - 1) * np.asarray(q, dtype=np.float64) / 100.0
    lower = np.floor(h).astype(np.int64)
    out = np.where(np.isnan(out), np.where(h == lower, v[lower], np.inf), out)
    return {float(k): float(x) for k, x in zip(q, out)}


class _Region:
    """A box of voxels ``lower <= index < upper`` of a grid."""

    def __init__(self, lower, upper, shape):
        self.shape = np.asarray(shape, dtype=np.int64)
        self.lower = np.clip(np.asarray(lower, dtype=np.int64), 0, self.shape)
        self.upper = np.clip(np.asarray(upper, dtype=np.int64), self.lower, self.shape)

    @classmethod
    def around(cls, voxels: np.ndarray, margin: np.ndarray, shape, within: "_Region | None" = None) -> "_Region":
        """The box of voxel coordinates ``voxels`` (P, 3) widened by ``margin`` voxels per axis (and
        holding ``within``)."""
        lower = np.floor(voxels.min(0) - margin).astype(np.int64)
        upper = np.ceil(voxels.max(0) + margin).astype(np.int64) + 1
        if within is not None:
            lower, upper = np.minimum(lower, within.lower), np.maximum(upper, within.upper)
        return cls(lower, upper, shape)

    def holds(self, voxels: np.ndarray) -> bool:
        """Whether every voxel coordinate stays ``GUARD`` voxels inside the box (sides on the image's
        edge excepted)."""
        low = np.where(self.lower > 0, self.lower + GUARD, -np.inf)
        high = np.where(self.upper < self.shape, self.upper - 1 - GUARD, np.inf)
        return bool(((voxels >= low) & (voxels <= high)).all())

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(int(a), int(b)) for a, b in zip(self.lower, self.upper))

    def key(self) -> tuple:
        return tuple(self.lower.tolist()) + tuple(self.upper.tolist())


class _Fields:
    """The field tracked in each run: the original data (repeat None) or replicate ``repeat``,
    refitted in a region. Arrays are reused from run to run; the inputs are never written."""

    def __init__(self, source, algorithm, method: str, lmax: int, mask, response, rng_seed: int):
        self.method, self.rng_seed = method, rng_seed
        self._cached = None
        if isinstance(source, SHField):
            if method != "prob":
                raise InputError("the wild bootstrap resamples a DWI; give a DWI (an FOD allows only method 'prob')")
            algorithm.check_field(source)
            self.fixed, self.affine, self.shape = source, source.affine, source.shape
            return
        if not isinstance(source, DWI):
            raise InputError(f"the envelope needs a DWI (dwi.DWI) or, for method 'prob', an SHField; "
                             f"got {type(source).__name__}")
        self.fixed, self.affine, self.shape = None, source.affine, source.shape
        from .bootstrap import dti_design, sh_design

        if algorithm.tracks_fod:
            from ..models.csd import deconvolution, estimate_response

            dwi = source.select_shell()
            fit_mask = mask if isinstance(mask, np.ndarray) and mask.shape == dwi.shape else None
            response = response or estimate_response(dwi, fit_mask)
            self.model = deconvolution(dwi.bvals, dwi.bvecs, response, lmax, b0_threshold=dwi.b0_threshold)
            self.design, self.log = sh_design(dwi.bvals, dwi.bvecs, lmax, dwi.b0_mask), False
            self.work = np.zeros((*dwi.shape, self.model.forward.shape[1]), dtype=np.float32)
            self.field = SHField(self.work, dwi.affine, "tournier07", "world")
        else:
            dwi, self.model = source, None
            self.design, self.log = dti_design(dwi.bvals, dwi.bvecs), True
            self.work = np.array(dwi.data, dtype=np.float32, order="C")
            self.field = DWIField(self.work, dwi.affine, dwi.bvals, dwi.bvecs)
        self.dwi = dwi
        self.support = np.any(dwi.data != 0, axis=3)
        self._bootstrap = None          # (region key, voxel indices, signal, WildBootstrap)

    @property
    def exact_outside(self) -> bool:
        """Whether the original data's field is exact outside the region (no refit needed there)."""
        return self.fixed is not None or self.model is None

    def field_for(self, region: _Region | None, repeat: int | None):
        """The field of ``repeat`` (None: the original data); for ``prob`` every repeat tracks the
        original field. Returns (field, whether it changed since the last call)."""
        if self.fixed is not None:
            return self.fixed, False
        if self.method == "prob":
            repeat = None
        key = (region.key(), repeat)
        if key == self._cached:
            return self.field, False
        voxels, signal, bootstrap = self._voxels(region)
        values = signal if repeat is None else bootstrap.draw(self.rng_seed, voxels, repeat)
        if self.model is not None:
            from ..models.csd import constrained_deconvolution

            dw = torch.as_tensor(self.model.dw)
            values = torch.cat([constrained_deconvolution(chunk, self.model).to(torch.float32)
                                for chunk in values[:, dw].split(CSD_CHUNK)])
        self.work.reshape(-1, self.work.shape[-1])[voxels.numpy()] = values.numpy()
        self._cached = key
        return self.field, True

    def _voxels(self, region: _Region):
        """The flat indices, original signal (V, G) and bootstrap of the region's voxels with signal."""
        if self._bootstrap is None or self._bootstrap[0] != region.key():
            from .bootstrap import WildBootstrap

            inside = np.zeros(self.shape, dtype=bool)
            inside[region.slices] = True
            voxels = np.flatnonzero(inside & self.support)
            signal = torch.from_numpy(self.dwi.data.reshape(-1, self.dwi.data.shape[-1])[voxels])
            bootstrap = WildBootstrap(signal, self.design, log=self.log) if self.method == "wild" else None
            self._bootstrap = (region.key(), torch.from_numpy(voxels), signal, bootstrap)
        return self._bootstrap[1:]


def envelope(source, seeds, params: TrackingParams | None = None, *, repeats: int = 20, method: str = "wild",
             include: Sequence = (), exclude: Sequence = (), lesion=None, mask=None, template=None,
             seed_directions=None, lmax: int = 8, response=None, margin: float = 5.0,
             robust_percentile: float = 1.0, rng_seed: int = 0,
             progress: Callable[[int, int], None] | None = None,
             cancel: Callable[[], bool] | None = None) -> Envelope:
    """Track ``seeds`` (N, 3) RAS mm ``repeats`` times on perturbed data and summarise the bundle.

    source: a ``dwi.DWI`` (``wild``: the bootstrap resamples it; FOD algorithms fit CSD of order
    ``lmax`` with ``response``, default estimated from the original data within ``mask``), or for
    ``prob`` an ``SHField``. params: ``TrackingParams`` (default: tensordet for ``wild``, prob for
    ``prob``; ``prob`` repeats need the prob algorithm; its ``rng_seed`` is replaced by ``rng_seed``).
    include / exclude: regions of ``selection``
    that define the bundle. lesion: a label map (``stopping.BinaryMask`` or
    ``distance.LesionSurface``: signed distances) or (V, 3) RAS mm surface points (unsigned).
    mask: the stopping region (as ``Tracker``). template: (shape, affine) of the probability volume
    (default the source's grid). margin: mm added around the bundle for the bootstrap region.
    progress(done, total) is called after the reference run (0) and each repeat; cancel() returning
    True stops between and within runs (``engine.TrackingCancelled``).
    """
    from ..selection import select_streamlines
    from ..tracking.algorithms import algorithm
    from ..tracking.engine import KernelTracker, TrackingCancelled

    started = time.perf_counter()
    if method not in METHODS:
        raise InputError(f"unknown envelope method {method!r}; choose one of {', '.join(METHODS)}")
    if repeats < 1:
        raise InputError(f"the envelope needs at least one repeat, got {repeats}")
    if not 0.0 <= robust_percentile <= 100.0:
        raise InputError(f"the robust percentile must be in [0, 100], got {robust_percentile}")
    # one seed for everything random: the bootstrap signs and the tracking draws
    params = (params or TrackingParams(algorithm="tensordet" if method == "wild" else "prob")).replace(rng_seed=rng_seed)
    if method == "prob" and params.algorithm != "prob":
        raise InputError(f"method 'prob' repeats the prob algorithm's random draws; got algorithm {params.algorithm!r}")
    seeds = np.asarray(seeds, dtype=np.float64)
    if seeds.ndim != 2 or seeds.shape[1] != 3 or len(seeds) == 0:
        raise InputError(f"seeds must be a non-empty (N, 3) array of RAS mm points, got shape {seeds.shape}")
    declared = algorithm(params.algorithm)
    fields = _Fields(source, declared, method, lmax, mask, response, rng_seed)
    shape, affine = (fields.shape, fields.affine) if template is None else (tuple(template[0]), as_affine(template[1]))
    lesion = None if lesion is None else lesion_measure(lesion)
    to_voxel = np.linalg.inv(fields.affine)
    margin_voxels = np.maximum(margin / voxel_sizes(fields.affine), GUARD + 1.0)
    seed_voxels = apply_affine(to_voxel, seeds)
    region = _Region.around(seed_voxels, margin_voxels, fields.shape)
    seconds = dict.fromkeys(("fields", "tracking", "selection", "visitation", "distances"), 0.0)
    n = len(seeds)
    tracker = None

    def run(repeat: int | None) -> Tractogram:
        """Track one run (redrawn in a grown region until its streamlines stay inside)."""
        nonlocal region, tracker, redrawn
        widen = margin_voxels
        while True:
            if cancel is not None and cancel():
                raise TrackingCancelled("the envelope was cancelled")
            t = time.perf_counter()
            current, changed = fields.field_for(None if fields.fixed is not None else region, repeat)
            if tracker is None:
                tracker = KernelTracker(current, params, mask=mask)
            elif changed:
                tracker.refresh(current)
            seconds["fields"] += time.perf_counter() - t
            t = time.perf_counter()
            ids = np.arange(n, dtype=np.int64) + (0 if repeat is None else (repeat + 1) * n)
            out = tracker(seeds, seed_directions=seed_directions, seed_ids=ids, cancel=cancel)
            seconds["tracking"] += time.perf_counter() - t
            if fields.fixed is not None:
                break
            voxels = np.concatenate([seed_voxels, apply_affine(to_voxel, out.points)])
            if repeat is None and fields.exact_outside:   # the original DWI: exact anywhere, no redraw
                region = _Region.around(voxels, margin_voxels, fields.shape, region)
                break
            if region.holds(voxels):
                break
            region = _Region.around(voxels, widen, fields.shape, region)
            widen = 2 * widen                             # a run that keeps leaving grows geometrically
            redrawn += repeat is not None
        offsets = np.r_[0, np.cumsum(out.lengths)]
        return Tractogram(torch.from_numpy(out.points), torch.from_numpy(offsets), fields.affine, fields.shape)

    def measure(tractogram: Tractogram) -> tuple[Tractogram, float, float]:
        """The bundle and its (minimum, robust) distances to the lesion."""
        t = time.perf_counter()
        bundle = tractogram.subset(select_streamlines(tractogram, include, exclude)) if include or exclude \
            else tractogram
        seconds["selection"] += time.perf_counter() - t
        if lesion is None or len(bundle) == 0:
            return bundle, math.inf, math.inf
        t = time.perf_counter()
        minima = streamline_distances(bundle.points.numpy(), bundle.lengths.numpy(), lesion)
        seconds["distances"] += time.perf_counter() - t
        return bundle, float(minima.min()), float(np.percentile(minima, robust_percentile, method="linear"))

    redrawn = 0
    bundle, ref_min, ref_robust = measure(run(None))
    reference = {"streamlines": len(bundle)}
    if lesion is not None:
        reference.update(minimum=ref_min, robust=ref_robust)
    if progress is not None:
        progress(0, repeats)
    visits = np.zeros(shape, dtype=np.uint32)
    counts, minimum, robust = np.zeros(repeats, np.int64), np.full(repeats, np.inf), np.full(repeats, np.inf)
    for r in range(repeats):
        bundle, minimum[r], robust[r] = measure(run(r))
        counts[r] = len(bundle)
        t = time.perf_counter()
        if len(bundle):
            visits += density_map(bundle.points.numpy(), bundle.lengths.numpy(), shape, affine,
                                  step_size=tracker.params.step_size) > 0
        seconds["visitation"] += time.perf_counter() - t
        if progress is not None:
            progress(r + 1, repeats)
    seconds["total"] = time.perf_counter() - started
    has_lesion = lesion is not None
    return Envelope(
        probability=(visits / np.float32(repeats)).astype(np.float32), affine=affine, method=method,
        algorithm=params.algorithm, repeats=repeats, rng_seed=rng_seed, streamlines=counts,
        minimum=minimum if has_lesion else None, robust=robust if has_lesion else None,
        robust_percentile=robust_percentile,
        percentiles={"minimum": percentiles(minimum), "robust": percentiles(robust)} if has_lesion else None,
        reference=reference, region=None if fields.fixed is not None else (region.lower, region.upper),
        redrawn=redrawn, seconds=seconds)
