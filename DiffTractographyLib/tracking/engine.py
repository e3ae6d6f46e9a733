"""Tracking with the compiled kernels: numpy in, numpy out, no torch.

``KernelTracker`` prepares a field once (the kernels read the volume as it is, channels-last), its
method's tables, the stopping regions and the propagation rules, then tracks any number of seed
batches. Each call runs the seeds in chunks: one kernel call per chunk tracks every streamline of
it to its end on all cores (or one CUDA thread per streamline), and between chunks progress is
reported and a cancel request is honoured; chunks are sized to take about a quarter of a second.
The streamlines, their seed index and the termination counts come back as numpy arrays.
"""
from __future__ import annotations

import logging
import math
import time
from collections import Counter, namedtuple
from functools import partial
from typing import Callable, Iterator, NamedTuple

import numpy as np

from .. import rng, sh
from ..config import TrackingParams
from ..errors import InputError
from ..fields import DWIField, SHField
from ..geometry import dot3, mean_voxel_size, realign_to_ras, restore_voxel_order, voxel_sizes
from ..stopping import AllOf, BinaryMask, Status, StreamlineStatus, ThresholdMap
from ..streamlines import as_numpy
from .algorithms import TEMPERATURE, algorithm, mrtrix_cos_threshold
from .sphere import MIN_SEPARATION_ANGLE, RELATIVE_PEAK_THRESHOLD, cone_table, default_sphere, vertex_lookup

log = logging.getLogger(__name__)

# numpy's matrix products are avoided here (einsum): a multi-threaded BLAS call leaves its threads
# spinning for a while, which takes the cores the kernels run on.

#: wall time a chunk aims at (progress and cancellation come between chunks)
CHUNK_SECONDS = 0.25
#: bytes of streamline slots one chunk may hold: on the CPU a bound that keeps them in memory
#: nearby, on CUDA enough rows to fill the GPU (a smaller chunk leaves most of its threads idle)
SLOT_BYTES = {"cpu": 64 * 2**20, "cuda": 2 * 2**30}
#: most seeds ``select`` draws at once (their points: 24 MB)
SELECT_BLOCK = 1 << 20


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is CUDA running out of memory (torch's or numba-cuda's driver error)."""
    import torch

    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or "OUT_OF_MEMORY" in str(exc)


class TrackingCancelled(Exception):
    """Raised when ``cancel`` asked a run to stop; nothing of the run is returned."""


class Chunk(NamedTuple):
    """Accepted streamlines of a chunk of seeds, in seed order: ``points`` (P, 3) RAS mm in the
    working precision, ``lengths`` (N,) vertex counts, ``seed_index`` (N,); and what a replay of
    their steps needs: ``peak`` (N,) the start row among the seed's (DIPY's peaks), ``before`` (N,)
    the points stored before the seed (the seed is point ``before``), ``half_starts`` (N, 2, 3) the
    start direction of the half stored after the seed and of the one before it (RAS, unit; NaN for
    a unidirectional run's missing half), ``seed_row`` (N,) the row of the seed in the call."""

    points: np.ndarray
    lengths: np.ndarray
    seed_index: np.ndarray
    peak: np.ndarray
    before: np.ndarray
    half_starts: np.ndarray
    seed_row: np.ndarray

    def subset(self, keep: np.ndarray) -> Chunk:
        """The streamlines where ``keep`` (N,) bool is True."""
        return Chunk(self.points[np.repeat(keep, self.lengths)], *(field[keep] for field in self[1:]))


class KernelResult(namedtuple("KernelResult", (*Chunk._fields, "stats"))):
    """A run's chunks joined (the fields of ``Chunk``), and the termination counts ``stats``
    (``Status`` and ``StreamlineStatus`` names)."""

    __slots__ = ()


def point_limits(params: TrackingParams, shared_budget: bool = True) -> tuple[int, int]:
    """(min_points, max_points) of a whole streamline, as MRtrix3's ``set_num_points`` computes them
    in float32 (downsampling ratio 1). Without ``shared_budget`` (DIPY) max_points bounds each half,
    seed included: ``max_length / step_size`` new points (DIPY's ``maxlen``) plus the seed."""
    f = np.float32
    step = f(params.step_size)
    angle = f(f(params.max_angle) * np.float64(np.pi / 180.0))
    min_radius = step / (f(2.0) * np.sin(f(0.5) * angle))
    turn = f(2.0) * np.arcsin(step / (f(2.0) * min_radius))
    min_step = f(2.0) * min_radius * np.sin(f(0.5) * turn)
    min_points = 1 + int(np.ceil(f(params.min_length) / step))
    if not shared_budget:
        return min_points, 1 + max(1, round(params.max_length / params.step_size))
    max_points = 3 + int(np.ceil(f(params.max_length) / min_step))
    return min_points, max_points


def _volume(data: np.ndarray, affine: np.ndarray, rule: str, dtype):
    """The kernels' ``Volume`` of ``data`` (X, Y, Z, C). Values float32 holds exactly (a float32 NIfTI's)
    stay float32 in a float64 run: the kernels widen each value as they read it, so the arithmetic is
    the same, the copy is saved and half the bytes pass through the caches (detmax: 15% faster)."""
    from .kernels.common import Volume

    if rule == "mrtrix":  # MRtrix3's voxel order: its corner sums and weight products
        data, affine = realign_to_ras(data, affine)
    x, y, z, c = data.shape
    if np.dtype(dtype) == np.float64 and np.can_cast(data.dtype, np.float32, "safe"):
        dtype = np.float32
    values = np.ascontiguousarray(data, dtype=dtype).reshape(x * y * z, c)
    if rule == "mrtrix":  # voxels with data: a non-zero (or NaN: NaN != 0) channel
        support = (values != 0).any(-1)
    else:
        support = np.zeros(1, dtype=bool)
    return Volume(values, np.array([x, y, z], dtype=np.int64), np.ascontiguousarray(np.linalg.inv(affine)[:3]),
                  support, rule == "mrtrix")


def _region_parts(mask) -> tuple[list, list]:
    """The binary masks and threshold maps a region object is the intersection of."""
    if mask is None:
        return [], []
    if isinstance(mask, BinaryMask):
        return [mask], []
    if isinstance(mask, ThresholdMap):
        return [], [mask]
    if isinstance(mask, AllOf):
        masks, maps = [], []
        for region in mask.regions:
            a, b = _region_parts(region)
            masks += a
            maps += b
        return masks, maps
    raise InputError(f"the compiled kernels cannot test a {type(mask).__name__} stopping region; use "
                     "BinaryMask, ThresholdMap or AllOf")


def supported_region(mask) -> bool:
    """Whether the kernels can test ``mask``: None, an array or (array, affine) pair, a ``BinaryMask``,
    ``ThresholdMap`` or ``AllOf`` of them."""
    if mask is not None and not hasattr(mask, "contains"):
        return True
    try:
        _region_parts(mask)
    except InputError:
        return False
    return True


def _regions(masks: list[BinaryMask], maps: list[ThresholdMap]):
    from .kernels.common import Regions

    def cat(arrays, dtype):
        return np.concatenate([np.ravel(a) for a in arrays]).astype(dtype) if arrays else np.zeros(1, dtype)

    def offsets(arrays):
        return np.cumsum([0] + [a.size for a in arrays[:-1]]).astype(np.int64) if arrays else np.zeros(1, np.int64)

    def stack(arrays, shape, dtype):
        return np.stack(arrays).astype(dtype) if arrays else np.zeros((1,) + shape, dtype)

    arrays = [m.held for m in masks]
    values = [m.values for m in maps]
    return Regions(
        len(masks), cat(arrays, np.bool_), offsets(arrays), stack([a.shape for a in arrays], (3,), np.int64),
        np.array([0 if m.rule == "mrtrix" else 1 for m in masks] or [0], dtype=np.int64),
        stack([m.crop_to_voxel for m in masks], (3, 4), np.float32),
        stack([m.crop_origin for m in masks], (3,), np.int64),
        stack([np.linalg.inv(m.held_affine)[:3] for m in masks], (3, 4), np.float64),
        len(maps), cat(values, np.float64), offsets(values), stack([v.shape for v in values], (3,), np.int64),
        stack([np.linalg.inv(m.affine)[:3] for m in maps], (3, 4), np.float64),
        np.array([m.threshold for m in maps] or [0.0], dtype=np.float64))


def _legendre_factors(lmax: int, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The recurrence factors of ``sh.legendre``: first (lmax + 1,), rest (lmax + 1, lmax + 1), the
    reciprocal of the factor before each of rest, and the ratios P_m^m / (sin P_m-1^m-1)."""
    first = np.zeros(lmax + 1, dtype=dtype)
    rest = np.zeros((lmax + 1, lmax + 1), dtype=dtype)
    inverse = np.zeros((lmax + 1, lmax + 1), dtype=dtype)
    for m in range(lmax):
        first[m] = sh._sqrt_ratio(np.dtype(dtype), 2 * m + 3)
        for n in range(m + 2, lmax + 1):
            rest[m, n] = sh._sqrt_ratio(np.dtype(dtype), 4 * n * n - 1, n * n - m * m)
            inverse[m, n] = 1.0 / (first[m] if n == m + 2 else rest[m, n - 1])
    steps = np.array([1.0] + [-math.sqrt((2 * m + 1) / (2 * m)) for m in range(1, lmax + 1)], dtype=dtype)
    return first, rest, inverse, steps


def _sdstream_data(field: SHField, params: TrackingParams, dtype):
    from .kernels.sdstream import SDStreamData

    f = np.dtype(dtype).type
    lmax = field.lmax
    combine = sh.legendre_combination(lmax).astype(dtype)
    first, rest = _legendre_factors(lmax, dtype)[:2]
    slots, factors = sh.ladder_terms(lmax)
    table, inc = np.zeros((2, 1), dtype=dtype), f(0.0)
    if params.sh_precomputed:  # MRtrix3's PrecomputedAL, after its rows combined for the fast arithmetic
        al32, inc32 = sh.precomputed_legendre(lmax)
        al = al32.astype(dtype)
        table = np.concatenate([np.einsum("rs,js->rj", al, combine).astype(dtype), al], axis=1)
        inc = f(inc32)
    return SDStreamData(
        f(params.cutoff), f(mrtrix_cos_threshold(params.max_angle, np.dtype(dtype))), *_sh_terms(field, dtype),
        bool(params.sh_precomputed), np.ascontiguousarray(table), inc, np.ascontiguousarray(combine),
        np.concatenate([factors, slots], axis=1).astype(dtype), lmax, f(sh.Y00), first, rest, int(params.peak_polish))


def _sh_terms(field: SHField, dtype) -> tuple:
    """The frame and SH terms both ``SDStreamData`` and ``SDStreamAdjoint`` start with: rotate,
    rotation, cos_slot, sin_slot, order, m, m2, trig_scale."""
    lmax = field.lmax
    t = sh.derivative_terms(lmax)
    n0 = len(t["c0"])
    m = np.r_[np.zeros(n0), t["m"]]
    return (field.frame == "voxel", field.rotation().astype(dtype), np.r_[t["c0"], t["ip"]].astype(np.int64),
            np.r_[np.full(n0, -1), t["im"]].astype(np.int64), m.astype(np.int64), m.astype(dtype),
            (m * m).astype(dtype), np.where(np.arange(lmax + 1) > 0, math.sqrt(2.0), 1.0))


def sdstream_adjoint(field: SHField):
    """The backward's float64 data of ``sdstream`` on ``field`` (``kernels.sdstream.SDStreamAdjoint``)."""
    from .kernels.sdstream import SDStreamAdjoint

    terms = _sh_terms(field, np.float64)
    first, rest, inverse, steps = _legendre_factors(field.lmax, np.float64)
    slot_term = np.argmax(sh.legendre_combination(field.lmax)[:len(terms[5])] != 0, axis=1).argsort()
    return SDStreamAdjoint(*terms, field.lmax, sh.Y00, first, rest, inverse, steps, slot_term)


def _cone_columns(rows: np.ndarray, cone: np.ndarray, counts: np.ndarray, dtype) -> np.ndarray:
    """(D, C, K) each cone's vertices as columns of ``rows`` (D, C) (the basis, or the vertex
    coordinates), zero-padded to a multiple of 8 (whole vectors; the table's repeated fillers zeroed)."""
    width = -(-cone.shape[1] // 8) * 8
    out = np.zeros((len(cone), rows.shape[1], width), dtype)
    columns = rows.T[:, cone].transpose(1, 0, 2)  # (D, C, K)
    padding = np.arange(cone.shape[1])[None, None, :] >= counts[:, None, None]
    out[:, :, :cone.shape[1]] = np.where(padding, 0.0, columns)
    return out


def _pmf_data(field: SHField, params: TrackingParams, dtype, sphere):
    from .kernels.pmf import BASIS_MAX_FLOOR, PmfData

    f = np.dtype(dtype).type
    v = np.asarray(sphere.vertices, dtype=np.float64)
    rotation = field.rotation().astype(dtype)
    vertices = np.einsum("dj,ij->di", v.astype(dtype), rotation).astype(dtype)  # RAS, as the torch method has them
    cos_max = float(np.cos(np.deg2rad(params.max_angle)))
    declared = algorithm(params.algorithm)
    cone, counts = cone_table(v, cos_max, declared.cone_inclusive)
    lookup = vertex_lookup(vertices)
    basis = sh.basis_matrix(v, field.lmax, field.basis)  # (D, C) float64
    working = np.ascontiguousarray(basis.T.astype(dtype))
    # per-cone columns (D, C, K), ~7 MB for 362 vertices at 45 degrees: float32 for detmax's screening
    draw = declared.choice == "draw"
    cone_basis = _cone_columns(working.T, cone, counts, dtype if draw else np.float32)
    voxels = int(np.prod(field.coeffs.shape[:3])) if draw else 1
    return PmfData(
        f(params.cutoff), f(cos_max), declared.cone_inclusive, draw, int(params.rng_seed), working,
        np.ascontiguousarray(working.T),
        float(np.linalg.norm(basis, axis=1).max()),
        np.maximum(np.abs(working.astype(np.float64)).max(axis=1), BASIS_MAX_FLOOR),
        np.ascontiguousarray(cone_basis), np.ascontiguousarray(vertices),
        cone, counts, np.zeros(0, np.int64) if lookup is None else lookup, rotation,
        voxel_sizes(field.affine).astype(dtype), np.ascontiguousarray(v), np.asarray(sphere.edges, dtype=np.int64),
        RELATIVE_PEAK_THRESHOLD, math.cos(math.pi / 180.0 * MIN_SEPARATION_ANGLE),
        np.full((voxels, 3), np.nan, np.float32))


def pmf_adjoint(field: SHField, params: TrackingParams, sphere, dtype=np.float64):
    """The backward's data of ``detmax``/``prob`` on ``field`` (``kernels.pmf.PmfAdjoint``), its
    candidates' arrays in ``dtype`` (the working precision of the relaxation and its products)."""
    from .kernels.pmf import PmfAdjoint

    inverse = 1.0 / TEMPERATURE
    if not (abs(inverse - round(inverse)) < 1e-9 and 1 <= round(inverse) <= 64):
        raise ValueError(f"the kernels' backward needs 1 / temperature a whole number from 1 to 64, not {inverse:g}")
    v = np.asarray(sphere.vertices, dtype=np.float64)
    basis = sh.basis_matrix(v, field.lmax, field.basis)  # (D, C)
    declared = algorithm(params.algorithm)
    cos_max = float(np.cos(np.deg2rad(params.max_angle)))
    vertices = np.einsum("dj,ij->di", v, field.rotation())
    cone, counts = cone_table(v, cos_max, declared.cone_inclusive)
    lookup = vertex_lookup(vertices)
    return PmfAdjoint(float(params.cutoff), cos_max, declared.cone_inclusive, declared.choice == "draw",
                      int(params.rng_seed), np.ascontiguousarray(basis.T, dtype), vertices,
                      np.ascontiguousarray(vertices.T, dtype), TEMPERATURE, cone, _cone_columns(basis, cone, counts, dtype),
                      _cone_columns(vertices, cone, counts, dtype),
                      np.zeros(0, np.int64) if lookup is None else lookup)


class KernelTracker:
    """A field, its method, the stopping regions and the point budgets prepared for the kernels;
    call it with seeds as many times as needed.

    field: an ``SHField`` or ``DWIField`` (numpy arrays or torch tensors; tensors are copied to the
    host). params / overrides: ``TrackingParams`` fields. mask: a stopping region of ``stopping``
    (``BinaryMask``, ``ThresholdMap``, ``AllOf``), a (3-D array, affine) pair on its own grid, or a
    3-D array on the field's grid (nearest-voxel test with the algorithm's rounding). sphere: the
    discrete sphere of detmax/prob (default DIPY's ``default_sphere``).
    """

    def __init__(self, field, params: TrackingParams | None = None, *, mask=None, sphere=None, **overrides):
        params = (params or TrackingParams()).replace(**overrides)
        self.params = params = params.resolved(mean_voxel_size(field.affine))
        self.algorithm = declared = algorithm(params.algorithm)
        declared.check_field(field)
        self.dtype = np.float64 if params.precision == "float64" else np.float32
        from .kernels.common import make_consts
        from .kernels.rows import Rules

        self.device = kernel_device(params.device)
        self.consts = make_consts(self.dtype)
        self.field = field
        self.affine = field.affine
        if declared.kernel == "tensor":
            from .kernels.tensordet import TensorData

            g = field.data.shape[-1]
            self.method = TensorData(self.dtype(params.cutoff),
                                     self.dtype(mrtrix_cos_threshold(params.max_angle, np.dtype(self.dtype))),
                                     tensor_solver_matrix(field, self.dtype))
            sizes = (g, 7, g, 1, 18, 1)
        else:
            c = field.coeffs.shape[-1]
            if declared.kernel == "pmf":
                self.sphere = sphere or default_sphere()
                self.method = _pmf_data(field, params, self.dtype, self.sphere)
                d = len(self.sphere.vertices)
                sizes = (c, d, d, 1, d, d)
            else:
                self.method = _sdstream_data(field, params, self.dtype)
                t = len(self.method.m)
                n_mpos = self.method.combine.shape[1]
                sizes = (c, t, t, 3 * t + 2 * (field.lmax + 1) + n_mpos + field.lmax + 1, 1, 1)
        self.sizes = np.array(sizes, dtype=np.int64)
        self.volume = _volume(self.volume_data(field), field.affine, declared.rule, self.dtype)
        if mask is not None and not hasattr(mask, "contains"):
            data, mask_affine = mask if isinstance(mask, tuple) else (mask, field.affine)
            mask = BinaryMask(data, mask_affine, rule=declared.rule)
        self.regions = _regions(*_region_parts(mask))
        self.limits = point_limits(params, declared.shared_budget)
        f = self.dtype
        self.rules = Rules(f(params.step_size), self.limits[1] - 1, self.limits[0], declared.shared_budget,
                           declared.reverse_uses_first_step, declared.forward_after_seed, bool(params.unidirectional),
                           bool(params.rk4), f(0.5 * params.step_size), self.method.cos_max)
        self._chunk = params.chunk_size or 256
        self._memory_bound = False  # a chunk ran out of GPU memory: chunks stay at the size that fitted
        self._set_args()

    def needs_compiling(self) -> bool:
        """Whether the first call compiles the CPU kernels for this method and precision (neither
        loaded in this process nor in numba's on-disk cache): about a minute, once per machine.
        False where it cannot tell (CUDA, numba internals changed)."""
        if self.device != "cpu":
            return False
        from .kernels import cpu

        f = self.dtype
        rows = (np.empty((1, 3), f), np.empty((1, 3), f), np.empty(1, np.int64), np.empty(1, np.int64),
                np.empty((1, 2, 3), f), np.empty((1, 2), np.int64), np.empty((1, 2), np.int8), np.empty(1, np.int8),
                np.empty((1, 2, 3), f))
        return _needs_compiling(cpu.track_rows, (*self._args, self.sizes, *rows))

    def _set_args(self) -> None:
        args = (self.method, self.consts, self.volume, self.regions, self.rules)
        if self.device == "cuda":
            from .kernels.cuda import to_device

            args = (to_device(self.method), self.consts, to_device(self.volume), to_device(self.regions), self.rules)
        self._args = args

    def volume_data(self, field) -> np.ndarray:
        """The (X, Y, Z, C) array the kernels sample: the DWI, or the SH coefficients (in MRtrix3's
        basis for sdstream)."""
        if self.algorithm.kernel == "tensor":
            return as_numpy(field.data)
        coeffs = as_numpy(field.coeffs)
        return coeffs if self.algorithm.kernel == "pmf" else sh.convert_basis(coeffs, field.basis, "tournier07")

    def refresh(self, field) -> None:
        """Take new values of the field (same grid, basis and gradient table), e.g. after an
        optimiser's step."""
        self.field = field
        self.volume = _volume(self.volume_data(field), field.affine, self.algorithm.rule, self.dtype)
        if self.algorithm.kernel == "pmf":  # the per-voxel bounds belong to the old values
            self.method = self.method._replace(voxel_top=np.full_like(self.method.voxel_top, np.nan))
        self._set_args()

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.volume.dims)

    def field_order(self, values):
        """(X Y Z, C) values in the layout of the sampled volume (a gradient, say) as (X, Y, Z, C) in
        the field's voxel order: the ``mrtrix`` rule samples the volume held in MRtrix3's."""
        held = values.reshape(*self.shape, -1)
        return restore_voxel_order(held, self.affine) if self.algorithm.rule == "mrtrix" else held

    def __call__(self, seeds, *, seed_directions=None, seed_ids=None,
                 progress: Callable[[int, int], None] | None = None,
                 cancel: Callable[[], bool] | None = None) -> KernelResult:
        """Track from ``seeds`` (N, 3) RAS mm; ``seed_directions`` (N, 3) RAS start directions, NaN
        rows for none (MRtrix3 methods: a random direction the method refines; DIPY's: one streamline
        per peak at the seed); ``seed_ids`` (N,) integers naming the seeds (default 0..N-1: they key
        every random draw and become ``seed_index``). ``progress(done, total)`` is called after each
        chunk; ``cancel()`` returning True stops the run (``TrackingCancelled``)."""
        stats: Counter = Counter()
        parts = list(self.chunks(seeds, seed_directions=seed_directions, seed_ids=seed_ids, progress=progress,
                                 cancel=cancel, stats=stats))
        if not parts:
            parts = [Chunk(np.zeros((0, 3), self.dtype), *(np.zeros(0, np.int64) for _ in range(4)),
                           np.zeros((0, 2, 3), self.dtype), np.zeros(0, np.int64))]
        return KernelResult(*(np.concatenate(arrays) for arrays in zip(*parts)), stats)

    def chunks(self, seeds, *, seed_directions=None, seed_ids=None, progress: Callable[[int, int], None] | None = None,
               cancel: Callable[[], bool] | None = None, stats: Counter | None = None,
               keep: Callable[[Chunk], np.ndarray] | None = None) -> Iterator[Chunk]:
        """``__call__`` a chunk at a time: yields each chunk's accepted streamlines (``Chunk``), in
        seed order, so that a writer can stream them; ``stats`` gathers the counts. ``keep(chunk)``,
        (N,) bool, filters each chunk's streamlines further (e.g. ``selection.tckgen_keeps``)."""
        seeds, seed_directions, seed_ids = as_numpy(seeds), as_numpy(seed_directions), as_numpy(seed_ids)
        seeds = np.asarray(seeds, dtype=self.dtype)
        if seeds.ndim != 2 or seeds.shape[1] != 3:
            raise InputError(f"seeds must be an (N, 3) array of RAS mm points, got shape {seeds.shape}")
        n = len(seeds)
        if n == 0:
            raise InputError("there are no seeds to track from")
        ids = np.arange(n, dtype=np.int64) if seed_ids is None else np.asarray(seed_ids, dtype=np.int64).reshape(-1)
        if len(ids) != n:
            raise InputError(f"{len(ids)} seed ids for {n} seeds")
        directions = None
        if seed_directions is not None:
            directions = np.asarray(seed_directions, dtype=self.dtype)
            if directions.shape != seeds.shape:
                raise InputError(f"{len(directions)} seed directions for {n} seeds")
        if self.params.nthreads:
            import numba

            numba.set_num_threads(min(self.params.nthreads, numba.config.NUMBA_NUM_THREADS))
        stats = Counter() if stats is None else stats
        start = 0
        while start < n:
            if cancel is not None and cancel():
                raise TrackingCancelled("tracking was cancelled")
            end = min(start + self._next_chunk(), n)
            started = time.perf_counter()
            try:
                part = self._track_chunk(seeds[start:end], None if directions is None else directions[start:end],
                                         ids[start:end], stats)
            except Exception as exc:
                if self.device != "cuda" or not out_of_memory(exc) or end - start == 1:
                    raise
                self._chunk = max(1, (end - start) // 2)
                self._memory_bound = True
                log.warning("CUDA ran out of memory; retrying with chunks of %d seeds", self._chunk)
                continue
            part = part._replace(seed_row=part.seed_row + start)
            if keep is not None:
                part = part.subset(keep(part))
            self._adapt(end - start, time.perf_counter() - started)
            start = end
            if progress is not None:
                progress(end, n)
            yield part

    def select(self, draw: Callable[[int, int], tuple], count: int, max_seeds: int, *,
               progress: Callable[[int, int], None] | None = None, cancel: Callable[[], bool] | None = None,
               stats: Counter | None = None, keep: Callable[[Chunk], np.ndarray] | None = None) -> Iterator[Chunk]:
        """Track seeds until ``count`` streamlines are accepted (tckgen -select), or ``max_seeds`` seeds
        are used (-seeds): yields the first ``count`` accepted in seed order, chunk by chunk.
        ``draw(start, stop)`` returns seeds start..stop-1 as (points (n, 3), directions (n, 3) or None);
        their numbers are their ``seed_index``, so the selection is the same whatever the blocks (DIPY's
        methods start one streamline per peak at a seed without a direction: the cut may fall between them).
        ``progress(accepted, count)``; ``stats`` counts the outcomes of every seed tracked, and their
        number as ``SEEDS_TRACKED`` (the last chunk may track seeds beyond the selection's last one);
        ``keep`` filters as in ``chunks``, before counting."""
        if count < 1 or max_seeds < 1:
            raise InputError(f"select at least one streamline from at least one seed, got {count} from {max_seeds}")
        stats = Counter() if stats is None else stats
        used = kept = 0
        while kept < count and used < max_seeds:
            # seeds for the streamlines still wanted at the acceptance so far (all of them at first), 5% more
            wanted = (count - kept) * used / kept if kept else max(count, 2 * used)  # doubling while none
            block = int(min(max_seeds - used, wanted * 1.05 + 64, SELECT_BLOCK))
            points, directions = draw(used, used + block)
            ids = np.arange(used, used + block, dtype=np.int64)
            advance = partial(_count_tracked, stats, used)
            for part in self.chunks(points, seed_directions=directions, seed_ids=ids, progress=advance, cancel=cancel,
                                    stats=stats, keep=keep):
                part = part._replace(seed_row=part.seed_row + used)
                if kept + len(part.lengths) >= count:
                    part = part.subset(np.arange(len(part.lengths)) < count - kept)
                kept += len(part.lengths)
                if progress is not None:
                    progress(kept, count)
                yield part
                if kept == count:
                    return
            used += block

    # -- chunking ---------------------------------------------------------------------------------
    def _slot_points(self) -> int:
        return 2 * int(self.rules.budget) + 1

    def _next_chunk(self) -> int:
        cap = max(1, SLOT_BYTES[self.device] // (self._slot_points() * 3 * np.dtype(self.dtype).itemsize))
        return int(min(self._chunk, cap))

    def _adapt(self, rows: int, seconds: float) -> None:
        if self.params.chunk_size or self._memory_bound:
            return
        rate = rows / max(seconds, 1e-6)
        self._chunk = int(min(max(64, rate * CHUNK_SECONDS), 2 * self._chunk + 64))

    # -- one chunk ------------------------------------------------------------------------------
    def _start_rows(self, seeds, directions, ids):
        """Rows to track: (points, unit start directions, seed ids, peak numbers, seed rows) in seed
        order. Seeds without a direction get a random one (MRtrix3) or one row per peak (DIPY)."""
        given = np.zeros(len(seeds), bool) if directions is None else ~np.isnan(directions).any(-1)
        starts = np.zeros_like(seeds)
        if given.any():
            d = np.nan_to_num(directions[given])  # normalised in the working precision, as MRtrix3's init()
            norm = np.sqrt(dot3(d, d))[:, None].astype(self.dtype)
            starts[given] = d / np.maximum(norm, self.dtype(1e-30))
        peak = np.zeros(len(seeds), dtype=np.int64)
        every = np.arange(len(seeds))
        if given.all():
            return seeds, starts, ids, peak, every
        missing = ~given
        if self.algorithm.start == "random":
            starts[missing] = rng.unit_vectors(self.params.rng_seed, ids[missing], stream=0, dtype=self.dtype)
            return seeds, starts, ids, peak, every
        vertices, counts = self._peaks(seeds[missing])
        repeat = np.ones(len(seeds), dtype=np.int64)
        repeat[missing] = counts
        rows = np.repeat(every, repeat)
        first = np.cumsum(repeat) - repeat
        peak = np.arange(len(rows)) - np.repeat(first, repeat)
        starts = starts[rows]
        rotation = self.method.rotation
        peak_dirs = np.einsum("pj,ij->pi", self.method.sphere_vertices[vertices].astype(self.dtype), rotation)
        starts[np.repeat(missing, repeat)] = peak_dirs.astype(self.dtype)
        return seeds[rows], starts, ids[rows], peak, rows

    def _peaks(self, seeds):
        """DIPY's peaks at ``seeds``: the peak vertices in seed order and their count per seed."""
        from .kernels.pmf import MAX_PEAKS

        out = np.zeros((len(seeds), MAX_PEAKS), dtype=np.int64)
        counts = np.zeros(len(seeds), dtype=np.int64)
        method, consts, volume = self._args[:3]
        self._backend().peaks_at_seeds(method, consts, volume, self.sizes, seeds, out, counts)
        return out[np.arange(MAX_PEAKS)[None, :] < counts[:, None]], counts

    def _backend(self):
        if self.device == "cpu":
            from .kernels import cpu

            return cpu
        from .kernels import cuda

        return cuda

    def _track_chunk(self, seeds, directions, ids, stats: Counter):
        seeds, starts, ids, peak, rows = self._start_rows(seeds, directions, ids)
        m = len(seeds)
        slots = np.empty((m, self._slot_points(), 3), dtype=self.dtype)
        bounds = np.zeros((m, 2), dtype=np.int64)
        status = np.zeros((m, 2), dtype=np.int8)
        fate = np.zeros(m, dtype=np.int8)
        half_starts = np.full((m, 2, 3), np.nan, dtype=self.dtype)
        backend = self._backend()
        on_device = backend.track_rows(*self._args, self.sizes, seeds, starts, ids, peak, slots, bounds, status, fate,
                                       half_starts)
        keep = np.flatnonzero(fate == StreamlineStatus.ACCEPTED)
        lengths = bounds[keep, 1] - bounds[keep, 0]
        offsets = np.zeros(len(keep) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        points = np.empty((int(offsets[-1]), 3), dtype=self.dtype)
        backend.gather(slots if on_device is None else on_device, bounds, keep, offsets, points)
        halves = status[:, :2].ravel()  # counted once the chunk is complete (a chunk can be retried)
        counts = np.bincount(halves[halves >= 0], minlength=len(Status))
        stats.update({Status(code).name: int(c) for code, c in enumerate(counts) if c})
        outcome = np.bincount(fate, minlength=len(StreamlineStatus))
        stats.update({StreamlineStatus(code).name: int(c) for code, c in enumerate(outcome) if c})
        before = self.rules.budget - bounds[keep, 0]
        # half_starts per row: [first half, second half]; the chunk gives [after the seed, before it]
        after_first = self.rules.forward_after_seed or self.rules.unidirectional
        order = [0, 1] if after_first else [1, 0]
        return Chunk(points, lengths, ids[keep], peak[keep], before, np.ascontiguousarray(half_starts[keep][:, order]),
                     rows[keep])


def _count_tracked(stats: Counter, before: int, done: int, total: int) -> None:
    """``select``'s progress within a block: the seeds tracked so far, ``before`` the block and ``done`` in it."""
    stats["SEEDS_TRACKED"] = before + done


def tensor_solver_matrix(field: DWIField, dtype) -> np.ndarray:
    from ..dwi import tensor_solver

    return np.ascontiguousarray(tensor_solver(field.bvals, field.bvecs).astype(dtype))


#: what a command or the module says before a run that compiles the kernels
COMPILING = "compiling the tracking kernels, once (about a minute; later runs load them from numba's cache)"


def _needs_compiling(dispatcher, args) -> bool:
    """Whether calling a ``numba`` dispatcher with ``args`` compiles: no overload in memory and none
    under the same key in its on-disk cache index (numba's own lookup)."""
    try:
        sig = tuple(dispatcher.typeof_pyval(a) for a in args)
        if sig in dispatcher.overloads:
            return False
        cache = dispatcher._cache
        return cache._index_key(sig, dispatcher.targetctx.codegen()) not in cache._cache_file._load_index()
    except Exception:  # numba's private cache API moved: say nothing rather than something wrong
        return False


def warm_up() -> None:
    """Load what every kernel call needs before its first call: the kernel modules and numba's
    implementation registries (a third of a second). ``difftract track`` runs it in a thread while
    it reads its images, which mostly waits on decompression outside the GIL."""
    from numba.core.registry import cpu_target

    from .kernels import cpu  # noqa: F401

    cpu_target.target_context.refresh()


def kernel_device(name: str) -> str:
    """``cpu`` or ``cuda`` for a device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``). ``auto`` takes
    CUDA when a GPU and the toolchain the kernels need are present; a GPU without the toolchain is
    said in one line and the CPU is used. Asking for ``cuda`` without either is an InputError."""
    if name == "cpu":
        return "cpu"
    if name != "auto" and not name.startswith("cuda"):
        raise InputError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    from .kernels.availability import cuda_status

    ready, reason = cuda_status()
    if ready:
        return "cuda"
    if name != "auto":
        raise InputError(f"device {name!r} was asked for but {reason}; use cpu or auto")
    if reason.startswith("the CUDA toolchain"):
        log.warning("difftract: %s; tracking on the CPU", reason)
    return "cpu"
