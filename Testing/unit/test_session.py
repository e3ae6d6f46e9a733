"""Interactive re-tracking (``tracking.session``): an update re-tracks only the points that moved and
gives what one run over all the points gives."""
import numpy as np
import torch

from DiffTractographyLib import SHField, Tracker
from DiffTractographyLib.stopping import BinaryMask
from DiffTractographyLib.tracking.session import RetrackSession
from helpers import crossing_phantom

COEFFS, MASK, AFFINE, CENTRE, U, V = crossing_phantom()


def session(**regions) -> RetrackSession:
    return RetrackSession(Tracker(SHField(COEFFS, AFFINE), mask=MASK, step_size=0.5), 20, 1.5, **regions)


def same(a, b) -> bool:
    return torch.equal(a.lengths, b.lengths) and torch.equal(a.points, b.points) and torch.equal(
        a.data_per_streamline["seed_index"], b.data_per_streamline["seed_index"])


def test_only_moved_points_are_retracked_and_the_result_is_a_fresh_run():
    points = np.stack([CENTRE + 6 * U, CENTRE - 6 * V, CENTRE + 4 * V])
    live = session()
    first, count = live.update(points)
    assert count == 3 and len(first) > 15
    assert live.update(points)[1] == 0
    moved = points.copy()
    moved[1] += 2 * V
    second, count = live.update(moved)
    assert count == 1
    assert same(second, session().update(moved)[0])
    added = np.vstack([moved, [CENTRE - 5 * U]])
    third, count = live.update(added)
    assert count == 1 and same(third, session().update(added)[0])
    assert same(live.update(added[:2])[0], session().update(added[:2])[0])  # a removed point drops its ball


def test_regions_select_what_each_update_keeps():
    from DiffTractographyLib.selection import select_streamlines

    grid = np.stack(np.meshgrid(*[np.arange(n) for n in MASK.shape], indexing="ij"), -1) @ AFFINE[:3, :3].T + AFFINE[:3, 3]
    end_of_u = BinaryMask(((grid - CENTRE) @ U) > 10.0, AFFINE)  # the far end of the U bundle
    points = np.stack([CENTRE + 6 * U, CENTRE - 8 * V])
    kept, _ = session(include=[end_of_u]).update(points)
    everything, _ = session().update(points)
    assert 0 < len(kept) < len(everything)
    assert same(kept, everything.subset(select_streamlines(everything, [end_of_u])))
