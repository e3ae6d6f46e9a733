"""The kernels' branch-free logarithm (``kernels.common.log_positive``, prob's Gumbel scores in the
backward pass) is libm's ``log`` to 2 ulp: on every kind of draw ``uniform`` makes and across the
normal float64 range."""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from DiffTractographyLib.tracking.kernels.common import log_positive


@njit(cache=False)
def _logs(x, out):
    for i in range(x.shape[0]):
        out[i] = log_positive(x[i])


def test_log_positive_is_libms_log_to_two_ulp():
    rng = np.random.default_rng(0)
    draws = (rng.integers(0, 2 ** 32, 200_000) + 0.5) / 2 ** 32  # what ``uniform`` returns
    wide = 10.0 ** rng.uniform(-307, 308, 100_000)
    edges = np.array([2.0 ** -32.5, 0.5, 1.0 - 2.0 ** -53, 1.0, 1.0 + 2.0 ** -52, 2.0, math.sqrt(0.5),
                      np.nextafter(math.sqrt(0.5), 0.0), math.sqrt(2.0), np.nextafter(math.sqrt(2.0), 2.0),
                      np.finfo(np.float64).tiny, np.finfo(np.float64).max])
    x = np.concatenate([draws, wide, edges])
    ours = np.empty_like(x)
    _logs(x, ours)
    libm = np.log(x)
    ulps = np.abs(ours - libm) / np.spacing(np.abs(libm))
    assert ours[np.flatnonzero(x == 1.0)[0]] == 0.0
    assert ulps[libm != 0.0].max() <= 2.0
