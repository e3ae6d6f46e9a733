"""The torch.compile path (fused interpolation and peak iteration) tracks what the eager path tracks."""
import shutil

import numpy as np
import pytest
import torch

from DiffTractographyLib import SHField, track
from helpers import crossing_phantom, hausdorff

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and not torch.cuda.is_available(),
                                reason="torch.compile on the CPU needs a C++ compiler")


def test_compiled_sdstream_matches_eager():
    coeffs, mask, affine, centre, u, v = crossing_phantom()
    seeds = centre + np.random.default_rng(0).normal(scale=2.0, size=(40, 3))
    kw = dict(mask=mask, step_size=0.5, max_angle=45, rng_seed=3)
    eager = track(SHField(coeffs, affine), seeds, **kw)
    fused = track(SHField(coeffs, affine), seeds, compile=True, **kw)
    assert eager.seed_index.tolist() == fused.seed_index.tolist()
    distances = [hausdorff(a, b) for a, b in zip(eager.numpy_streamlines(), fused.numpy_streamlines())]
    assert max(distances) < 1e-3
