"""Tracking parameters: names, units and defaults in one place (the CLI and the Slicer module read
them from here; each algorithm's own defaults and semantics are declared in ``tracking.algorithms``)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .errors import InputError
from .tracking.algorithms import ALGORITHMS as _DECLARED
from .tracking.algorithms import algorithm as _algorithm

ALGORITHMS = tuple(_DECLARED)
#: SH bases (see ``sh``): MRtrix3's, DIPY's default (legacy=True) and DIPY's legacy=False
BASES = ("tournier07", "descoteaux07", "descoteaux07-nonlegacy")
#: frames of SH and vector directions: RAS (MRtrix3) or along the voxel axes (DIPY)
FRAMES = ("world", "voxel")

#: What ``cutoff`` means for each algorithm.
CUTOFF_MEANING = {name: a.cutoff for name, a in _DECLARED.items()}


def reference_rule(algorithm: str) -> str:
    """Interpolation and voxel-rounding rules (``fields.RULES``) of the tool ``algorithm`` reproduces."""
    return _algorithm(algorithm).rule


@dataclass(frozen=True)
class TrackingParams:
    """How streamlines are propagated. ``None`` means the algorithm's reference default.

    algorithm: ``sdstream`` (MRtrix3 SD_Stream), ``tensordet`` (MRtrix3 Tensor_Det), ``detmax``
        (DIPY deterministic maximum), ``prob`` (probabilistic, reparameterised).
    step_size: mm per step. Default 0.1 x voxel (0.25 x voxel with ``rk4``) for sdstream/tensordet
        as MRtrix3; 0.25 x voxel for detmax/prob.
    max_angle: degrees between successive steps. Default 60 (MRtrix3 deterministic), 45 for
        detmax/prob.
    cutoff: stopping threshold, see ``CUTOFF_MEANING``. Default 0.1.
    min_length, max_length: mm. Defaults 5 x voxel and 100 x voxel (MRtrix3). For detmax/prob
        (DIPY) max_length bounds each half on its own (DIPY's ``maxlen`` = max_length / step_size
        points per half), default 500 x step_size (``maxlen=500``); min_length defaults to 0 (DIPY's
        ``return_all``: every streamline is kept, even a lone seed point).
    rk4: fourth-order Runge-Kutta integration (sdstream only, MRtrix3 ``-rk4``).
    unidirectional: track only along the initial direction from each seed.
    sh_precomputed: evaluate SH through MRtrix3's precomputed Legendre table (``-noprecomputed``
        is False). Use False for exact, smooth evaluation (gradient checks).
    peak_polish: exact Newton iterations after MRtrix3's peak search (sdstream). 0 reproduces MRtrix3;
        a few converge the peak to machine precision, which float64 gradient checks need.
    precision: ``float32`` (MRtrix3's arithmetic) or ``float64`` (DIPY's; the default for detmax).
    device: ``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.
    chunk_size: seeds per kernel call (progress and cancellation come between calls; the torch
        path tracks them together); ``None`` picks by device and speed. A CUDA out-of-memory error
        halves it and retries.
    nthreads: CPU threads of the kernels (``None``: all cores; MRtrix3's ``-nthreads``).
    rng_seed: seed of the random directions (seeds without a direction, ``prob``).
    """

    algorithm: str = "sdstream"
    step_size: float | None = None
    max_angle: float | None = None
    cutoff: float | None = None
    min_length: float | None = None
    max_length: float | None = None
    rk4: bool = False
    unidirectional: bool = False
    sh_precomputed: bool = True
    peak_polish: int = 0
    precision: str | None = None
    device: str = "auto"
    chunk_size: int | None = None
    nthreads: int | None = None
    rng_seed: int = 0

    def replace(self, **changes) -> "TrackingParams":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "TrackingParams":
        declared = _algorithm(self.algorithm)
        for name in ("step_size", "min_length", "max_length"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v >= 0 and (v > 0 or name == "min_length")):
                raise InputError(f"{name} must be a positive number of mm, got {v}")
        if self.max_angle is not None and not (0 < self.max_angle <= 90):
            raise InputError(f"max_angle must be in (0, 90] degrees, got {self.max_angle}")
        if self.cutoff is not None and not (math.isfinite(self.cutoff) and self.cutoff >= 0):
            raise InputError(f"cutoff must be a non-negative number, got {self.cutoff}")
        if self.cutoff is not None and declared.cutoff_max is not None and self.cutoff > declared.cutoff_max:
            raise InputError(f"the {self.algorithm} cutoff is the {declared.cutoff.split(' (')[0]}: at most "
                             f"{declared.cutoff_max:g}, got {self.cutoff:g}")
        if self.rk4 and declared.rk4_step_voxels is None:
            raise InputError(f"rk4 integration is not available for {self.algorithm}; "
                             f"it is for {', '.join(n for n, a in _DECLARED.items() if a.rk4_step_voxels)}")
        if self.precision not in (None, "float32", "float64"):
            raise InputError(f"precision must be float32 or float64, got {self.precision!r}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise InputError("chunk_size must be at least 1")
        if self.nthreads is not None and self.nthreads < 1:
            raise InputError("nthreads must be at least 1")
        if (self.min_length is not None and self.max_length is not None and self.min_length > self.max_length):
            raise InputError(f"min_length {self.min_length} mm exceeds max_length {self.max_length} mm")
        return self

    def resolved(self, voxel_size: float) -> "TrackingParams":
        """Fill the defaults for a field with geometric-mean voxel size ``voxel_size`` (mm)."""
        self.validate()
        a = _algorithm(self.algorithm)
        step = self.step_size
        if step is None:
            step = voxel_size * (a.rk4_step_voxels if self.rk4 else a.step_voxels)
        max_length = self.max_length
        if max_length is None:
            max_length = a.max_length_voxels * voxel_size if a.max_length_voxels else a.max_length_steps * step
        return self.replace(
            step_size=float(step),
            max_angle=float(self.max_angle if self.max_angle is not None else a.max_angle),
            cutoff=float(self.cutoff if self.cutoff is not None else 0.1),
            min_length=float(self.min_length if self.min_length is not None else a.min_length_voxels * voxel_size),
            max_length=float(max_length),
            precision=self.precision or a.precision,
        )
