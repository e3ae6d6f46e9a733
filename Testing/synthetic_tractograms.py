"""Synthetic tractograms for clustering tests and benchmarks, built in code (no data files).

``bundle_tractogram`` draws whole-brain-like sets: bundles are smooth cubic Bezier centre lines in
a 140 x 170 x 120 mm box; each streamline follows one bundle at a random offset within the bundle
radius, covers a random part of it (as tracking truncates streamlines), has a random vertex count,
a little accumulated jitter and a random orientation; a share of streamlines are spurious random
curves. The order is random, like tckgen's random seeding.
"""
from __future__ import annotations

import numpy as np

from DiffTractographyLib.streamlines import Tractogram


def _bezier(control: np.ndarray, t: np.ndarray) -> np.ndarray:
    t = t[:, None]
    return ((1 - t) ** 3 * control[0] + 3 * (1 - t) ** 2 * t * control[1]
            + 3 * (1 - t) * t ** 2 * control[2] + t ** 3 * control[3])


def bundle_tractogram(n: int, n_bundles: int = 60, *, spurious: float = 0.0, seed: int = 0) -> tuple[Tractogram, np.ndarray]:
    """n streamlines (RAS mm, float32) and the bundle of each (-1 for spurious ones)."""
    rng = np.random.default_rng(seed)
    box = np.array([70.0, 85.0, 60.0])
    controls = rng.uniform(-box, box, size=(n_bundles, 4, 3))
    radii = rng.uniform(2.0, 8.0, n_bundles)
    bundle = rng.integers(0, n_bundles, n)
    bundle[rng.random(n) < spurious] = -1
    streamlines = []
    for b in bundle:
        count = int(rng.integers(20, 150))
        if b < 0:
            t = np.linspace(0, 1, count)
            points = _bezier(rng.uniform(-box, box, size=(4, 3)), t)
        else:
            start, stop = rng.uniform(0, 0.3), rng.uniform(0.7, 1.0)
            offset = rng.normal(size=3)
            offset *= radii[b] * rng.uniform() / np.linalg.norm(offset)
            points = _bezier(controls[b], np.linspace(start, stop, count)) + offset
        points = points + rng.normal(scale=0.06, size=points.shape).cumsum(0)
        streamlines.append((points[::-1] if rng.random() < 0.5 else points).astype(np.float32))
    return Tractogram.from_list(streamlines), bundle
