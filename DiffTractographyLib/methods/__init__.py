"""Tracking methods, one per file, chosen by ``TrackingParams.algorithm``."""
from __future__ import annotations

import torch

from ..config import TrackingParams
from ..errors import InputError
from ..fields import DWIField, SHField
from .base import Method


def make_method(field, params: TrackingParams, dtype: torch.dtype) -> Method:
    """The method for ``params.algorithm`` (already resolved) on ``field``."""
    if params.algorithm == "tensordet":
        if not isinstance(field, DWIField):
            raise InputError("tensordet tracks a DWI: give --dwi with --bvals/--bvecs (a DWIField)")
        from .tensordet import TensorDet

        return TensorDet(field, params.cutoff, params.max_angle, dtype=dtype, compile=params.compile)
    if not isinstance(field, SHField):
        raise InputError(f"{params.algorithm} tracks an FOD given as SH coefficients (an SHField)")
    if params.algorithm == "sdstream":
        from .sdstream import SDStream

        return SDStream(field, params.cutoff, params.max_angle, precomputed=params.sh_precomputed,
                        polish=params.peak_polish, dtype=dtype, compile=params.compile)
    if params.algorithm == "detmax":
        from .detmax import DeterministicMaximum

        return DeterministicMaximum(field, params.cutoff, params.max_angle, dtype=dtype, compile=params.compile)
    if params.algorithm == "prob":
        from .prob import Probabilistic

        return Probabilistic(field, params.cutoff, params.max_angle, rng_seed=params.rng_seed, dtype=dtype,
                             compile=params.compile)
    raise InputError(f"algorithm {params.algorithm!r} is not available yet")
