"""Tracking parameters: names, units and defaults in one place (the CLI and the Slicer module read
them from here)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .errors import InputError

ALGORITHMS = ("sdstream", "tensordet", "detmax", "prob")
#: SH bases (see ``sh``): MRtrix3's, DIPY's default (legacy=True) and DIPY's legacy=False
BASES = ("tournier07", "descoteaux07", "descoteaux07-nonlegacy")
#: frames of SH and vector directions: RAS (MRtrix3) or along the voxel axes (DIPY)
FRAMES = ("world", "voxel")

#: What ``cutoff`` means for each algorithm.
CUTOFF_MEANING = {
    "sdstream": "FOD amplitude at the peak",
    "tensordet": "fractional anisotropy",
    "detmax": "pmf threshold, relative to the largest pmf value on the sphere (DIPY)",
    "prob": "pmf threshold, relative to the largest pmf value on the sphere (DIPY)",
}


def reference_rule(algorithm: str) -> str:
    """Interpolation and voxel-rounding rules (``fields.RULES``) of the tool ``algorithm`` reproduces."""
    return "dipy" if algorithm in ("detmax", "prob") else "mrtrix"


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
    compile: fuse the per-step kernels (interpolation, sdstream's peak iteration) with
        ``torch.compile``: 1.5-2.5x faster on a CPU after a one-off compilation of 10-40 s (cached on
        disk); results differ from the eager arithmetic by a few float32 ulps.
    chunk_size: streamlines tracked together; ``None`` picks by device. A CUDA out-of-memory error
        halves it and retries.
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
    compile: bool = False
    chunk_size: int | None = None
    rng_seed: int = 0

    def replace(self, **changes) -> "TrackingParams":
        return dataclasses.replace(self, **changes)

    def validate(self) -> "TrackingParams":
        if self.algorithm not in ALGORITHMS:
            raise InputError(f"unknown algorithm {self.algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
        for name in ("step_size", "min_length", "max_length"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v >= 0 and (v > 0 or name == "min_length")):
                raise InputError(f"{name} must be a positive number of mm, got {v}")
        if self.max_angle is not None and not (0 < self.max_angle <= 90):
            raise InputError(f"max_angle must be in (0, 90] degrees, got {self.max_angle}")
        if self.cutoff is not None and not (math.isfinite(self.cutoff) and self.cutoff >= 0):
            raise InputError(f"cutoff must be a non-negative number, got {self.cutoff}")
        if self.rk4 and self.algorithm != "sdstream":
            raise InputError("rk4 integration is available for sdstream only")
        if self.precision not in (None, "float32", "float64"):
            raise InputError(f"precision must be float32 or float64, got {self.precision!r}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise InputError("chunk_size must be at least 1")
        if (self.min_length is not None and self.max_length is not None and self.min_length > self.max_length):
            raise InputError(f"min_length {self.min_length} mm exceeds max_length {self.max_length} mm")
        return self

    def resolved(self, voxel_size: float) -> "TrackingParams":
        """Fill the defaults for a field with geometric-mean voxel size ``voxel_size`` (mm)."""
        self.validate()
        mrtrix = self.algorithm in ("sdstream", "tensordet")
        step = self.step_size
        if step is None:
            step = voxel_size * ((0.25 if self.rk4 else 0.1) if mrtrix else 0.25)
        return self.replace(
            step_size=float(step),
            max_angle=float(self.max_angle if self.max_angle is not None else (60.0 if mrtrix else 45.0)),
            cutoff=float(self.cutoff if self.cutoff is not None else 0.1),
            min_length=float(self.min_length if self.min_length is not None else (5.0 * voxel_size if mrtrix else 0.0)),
            max_length=float(self.max_length if self.max_length is not None
                             else (100.0 * voxel_size if mrtrix else 500.0 * step)),
            precision=self.precision or ("float64" if self.algorithm == "detmax" else "float32"),
        )
