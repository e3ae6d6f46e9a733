"""The first run that compiles the kernels says so ("compiling, once"); later runs, in this process
or from numba's on-disk cache, do not."""
import time

import numpy as np
from numba import njit

from DiffTractographyLib.tracking.engine import _needs_compiling


def kernel(salt: float):
    """A cached kernel whose cache key is new on every test run (the salt is a closure value)."""
    def add(x):
        return x + salt
    return njit(cache=True)(add)


def test_compiling_is_announced_until_the_signature_is_in_memory_or_on_disk():
    salt = float(time.time_ns())
    first = kernel(salt)
    x = np.zeros(3)
    assert _needs_compiling(first, (x,))
    first(x)                                                   # compiles and writes the cache
    assert not _needs_compiling(first, (x,))
    assert _needs_compiling(first, (np.zeros(3, np.int32),))  # another signature still compiles
    assert not _needs_compiling(kernel(salt), (x,))            # a new process would load it from disk
