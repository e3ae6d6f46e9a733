"""Each tracking algorithm declared once: what it tracks, which tool it reproduces, its defaults and
its semantics (MRtrix3's ``Shared``/``Defaults`` in one place). ``config``, the command line, the
Slicer adapter, the kernels and the torch methods read these declarations instead of comparing
algorithm names.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class Algorithm:
    """One algorithm.

    field: ``fod`` (SH coefficients, an ``SHField``) or ``dwi`` (raw signal, a ``DWIField``).
    reference: the tool and setting it reproduces streamline by streamline.
    rule: interpolation bounds and mask rounding of that tool (``fields.RULES``).
    cutoff: what ``cutoff`` thresholds; cutoff_max: its largest meaningful value (1 for an FA or a
        relative threshold; None for an amplitude).
    step_voxels / rk4_step_voxels: default step in voxels (None: no RK4).
    max_angle: default degrees between steps.
    min_length_voxels: default minimum length in voxels (0: every streamline is kept).
    max_length_voxels / max_length_steps: default maximum length, in voxels (whole streamline) or
        in steps per half (DIPY's ``maxlen``); exactly one is set.
    shared_budget: the two halves share one point budget (MRtrix3) instead of one each (DIPY).
    reverse_uses_first_step: the second half starts from the first half's first step (DIPY), not
        from the reversed seed direction (MRtrix3).
    forward_after_seed: output order; MRtrix3 stores the first half before the seed, DIPY after it.
    start: start direction of a seed given without one: ``random`` (MRtrix3: a random unit vector
        that the method refines) or ``peaks`` (DIPY: one streamline per peak of the pmf at the seed).
    precision: default arithmetic (the reference's).
    kernel: the compiled method family (``sdstream``: FOD peak search, ``tensor``: tensor fit,
        ``pmf``: discrete sphere); ``method``: the torch method class, ``module:Class`` in
        ``tracking.methods``.
    choice: for ``pmf`` methods, how the vertex is chosen: ``max`` (the largest pmf) or ``draw``
        (in proportion to the pmf); ``cone_inclusive``: whether |cos| = cos(max_angle) is in the cone.
    """

    name: str
    summary: str
    field: str
    reference: str
    rule: str
    cutoff: str
    step_voxels: float
    rk4_step_voxels: float | None
    max_angle: float
    min_length_voxels: float
    max_length_voxels: float | None
    max_length_steps: int | None
    shared_budget: bool
    reverse_uses_first_step: bool
    forward_after_seed: bool
    start: str
    precision: str
    kernel: str
    method: str
    choice: str = ""
    cone_inclusive: bool = False
    cutoff_max: float | None = None

    @property
    def tracks_fod(self) -> bool:
        return self.field == "fod"

    def check_field(self, field) -> None:
        """InputError unless ``field`` is what this algorithm tracks."""
        from ..fields import DWIField, SHField

        if self.field == "dwi" and not isinstance(field, DWIField):
            raise InputError(f"{self.name} tracks a DWI: give --dwi with --bvals/--bvecs (a DWIField)")
        if self.field == "fod" and not isinstance(field, SHField):
            raise InputError(f"{self.name} tracks an FOD given as SH coefficients (an SHField)")


_MRTRIX = dict(rule="mrtrix", step_voxels=0.1, max_angle=60.0, min_length_voxels=5.0, max_length_voxels=100.0,
               max_length_steps=None, shared_budget=True, reverse_uses_first_step=False, forward_after_seed=False,
               start="random", precision="float32")
_DIPY = dict(rule="dipy", step_voxels=0.25, rk4_step_voxels=None, max_angle=45.0, min_length_voxels=0.0,
             max_length_voxels=None, max_length_steps=500, shared_budget=False, reverse_uses_first_step=True,
             forward_after_seed=True, start="peaks",
             cutoff="pmf threshold, relative to the largest pmf value on the sphere (DIPY)", cutoff_max=1.0)

_DECLARED = (
    Algorithm("sdstream", "MRtrix3 SD_Stream: the FOD peak nearest the previous direction", "fod",
              "MRtrix3 tckgen -algorithm SD_Stream", cutoff="FOD amplitude at the peak", rk4_step_voxels=0.25,
              kernel="sdstream", method="sdstream:SDStream", **_MRTRIX),
    Algorithm("tensordet", "MRtrix3 Tensor_Det: the principal eigenvector of the tensor fitted to the "
              "interpolated DWI", "dwi", "MRtrix3 tckgen -algorithm Tensor_Det", cutoff="fractional anisotropy",
              cutoff_max=1.0, rk4_step_voxels=None, kernel="tensor", method="tensordet:TensorDet", **_MRTRIX),
    Algorithm("detmax", "DIPY deterministic maximum: the largest pmf vertex within max_angle", "fod",
              "DIPY LocalTracking + DeterministicMaximumDirectionGetter", precision="float64", kernel="pmf",
              method="detmax:DeterministicMaximum", choice="max", cone_inclusive=False, **_DIPY),
    Algorithm("prob", "probabilistic: a pmf vertex within max_angle drawn in proportion to the pmf", "fod",
              "DIPY LocalTracking + ProbabilisticDirectionGetter (as a distribution)", precision="float32",
              kernel="pmf", method="prob:Probabilistic", choice="draw", cone_inclusive=True, **_DIPY),
)

#: softmax temperature of the relaxation through which detmax and prob carry gradients (on log pmf:
#: 0.1 weighs the vertices by pmf ** 10; ``methods.pmf``)
TEMPERATURE = 0.1

#: the algorithm a field kind gets when none is named (MRtrix3's deterministic trackers)
DEFAULT_FOR = {"fod": "sdstream", "dwi": "tensordet"}

#: name -> declaration, in the order the command line lists them
ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in _DECLARED}


def algorithm(name: str) -> Algorithm:
    """The declaration of ``name``; InputError for an unknown name."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise InputError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}") from None


def mrtrix_cos_threshold(max_angle: float, dtype="float32") -> float:
    """cos(max_angle degrees) as MRtrix3 forms it in float32 (degrees to float radians, product in
    double, float cosine); the exact double value for float64 tracking (``dtype``: numpy or torch)."""
    if not str(dtype).endswith("float32"):
        return math.cos(math.radians(max_angle))
    radians = np.float32(np.float64(np.float32(max_angle)) * (np.pi / 180.0))
    return float(np.cos(radians))
