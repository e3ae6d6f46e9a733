"""Interactive re-tracking: a prepared ``Tracker`` and the seed balls of a set of points; each
``update`` with the points' current positions re-tracks only the balls of points that moved or were
added, in one tracking call, and returns the whole tractogram."""
from __future__ import annotations

import numpy as np

from ..selection import selected
from ..streamlines import Tractogram
from .tracker import Tracker


class RetrackSession:
    """Seeds: ``seeds_per_point`` uniform in a ball of ``seed_radius`` mm around each point, drawn
    from the tracker's ``rng_seed`` and the point's index; streamlines of point m carry
    ``seed_index`` m * seeds_per_point + (0 .. seeds_per_point - 1), as one run over all the points
    numbers them, so an update gives what that run gives. ``include`` / ``exclude``: regions every
    kept streamline must visit / must not enter."""

    def __init__(self, tracker: Tracker, seeds_per_point: int = 100, seed_radius: float = 2.5, *,
                 include=(), exclude=()):
        self.tracker, self.seeds_per_point, self.seed_radius = tracker, seeds_per_point, seed_radius
        self.include, self.exclude = list(include), list(exclude)
        self._positions = np.zeros((0, 3))
        self._parts: list = []

    def update(self, points: np.ndarray) -> tuple[Tractogram, int]:
        """(the tractogram of all ``points`` (M, 3) RAS mm, how many points were re-tracked)."""
        from ..seeding import seeds_in_spheres

        points = np.asarray(points, dtype=float).reshape(-1, 3)
        changed = [m for m in range(len(points)) if m >= len(self._positions)
                   or not np.array_equal(points[m], self._positions[m])]
        parts = self._parts[:len(points)] + [None] * max(0, len(points) - len(self._parts))
        if changed:  # all moved balls in one tracking call
            count = self.seeds_per_point
            seeds = seeds_in_spheres(points[changed], self.seed_radius, count, self.tracker.params.rng_seed,
                                     indices=changed)
            ids = (np.asarray(changed)[:, None] * count + np.arange(count)).reshape(-1)
            tracked = selected(self.tracker(seeds, seed_ids=ids), self.include, self.exclude)
            point = tracked.data_per_streamline["seed_index"] // count
            for m in changed:
                parts[m] = tracked.subset(point == m)
        self._positions, self._parts = points, parts
        return (Tractogram.concatenate(parts) if parts else Tractogram.from_list([])), len(changed)
