"""Tracking methods in torch, one per file: the reference the compiled kernels are tested against and
the differentiable path (``Tracker`` uses them when the field or the seeds require grad)."""
from __future__ import annotations

import torch

from ...config import TrackingParams
from ..algorithms import algorithm
from .base import Method


def make_method(field, params: TrackingParams, dtype: torch.dtype) -> Method:
    """The method for ``params.algorithm`` (already resolved) on ``field``."""
    algorithm(params.algorithm).check_field(field)
    if params.algorithm == "tensordet":
        from .tensordet import TensorDet

        return TensorDet(field, params.cutoff, params.max_angle, dtype=dtype)
    if params.algorithm == "sdstream":
        from .sdstream import SDStream

        return SDStream(field, params.cutoff, params.max_angle, precomputed=params.sh_precomputed,
                        polish=params.peak_polish, dtype=dtype)
    if params.algorithm == "detmax":
        from .detmax import DeterministicMaximum

        return DeterministicMaximum(field, params.cutoff, params.max_angle, dtype=dtype)
    from .prob import Probabilistic

    return Probabilistic(field, params.cutoff, params.max_angle, rng_seed=params.rng_seed, dtype=dtype)
