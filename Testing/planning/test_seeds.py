"""Seeds placed by gradient (``planning.optimise_seeds``): seeds move inside their start region until
their streamlines reach the target and avoid the avoided region, by the rule users select with.

Phantom (2 mm grid, sdstream): bundle A runs straight along R and reaches the target; bundle B lies
beside it in the start sphere (A > 0) and turns away anterior; an avoided sphere cuts the top of A.
"""
import numpy as np
import pytest
import torch

from DiffTractographyLib import SHField, Tracker
from DiffTractographyLib.errors import InputError
from DiffTractographyLib.phantoms import Bundle, fod_phantom
from DiffTractographyLib.planning.seeds import RegionDistance, optimise_seeds
from DiffTractographyLib.seeding import seeds_in_spheres
from DiffTractographyLib.selection import Box, Sphere, select_streamlines
from DiffTractographyLib.tracking.engine import TrackingCancelled

SHAPE = (29, 19, 11)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = [-28.0, -16.0, -10.0]
TRACKING = dict(step_size=0.5, cutoff=0.05)
START, TARGET, AVOID = Sphere((-14.0, 0.0, 0.0), 5.0), Sphere((14.0, -5.0, 0.0), 5.0), Sphere((0.0, -3.0, 4.0), 3.5)


@pytest.fixture(scope="module")
def field() -> SHField:
    a = Bundle.straight([-30, -5, 0], [30, -5, 0], 7.5)
    b = Bundle.arc([-14, 25, 0], [0, -1, 0], [1, 0, 0], 20.0, 7.5, -40, 90)
    return SHField(fod_phantom(SHAPE, AFFINE, [a, b], lmax=6)[0], AFFINE)


@pytest.fixture(scope="module")
def seeds() -> np.ndarray:
    return seeds_in_spheres([START.centre], START.radius, 64, rng_seed=1)


@pytest.fixture(scope="module")
def result(field, seeds):
    given = seeds.copy()
    out = optimise_seeds(field, seeds, START, TARGET, [AVOID], iterations=30, **TRACKING)
    np.testing.assert_array_equal(seeds, given)                     # the caller's seeds are not modified
    return out


def connecting(field, seeds, seed_ids=None) -> np.ndarray:
    """(N,) bool by the user's rule: a streamline of the seed visits start and target, not the avoided sphere."""
    t = Tracker(field, **TRACKING)(seeds, seed_ids=seed_ids)
    out = np.zeros(len(seeds), dtype=bool)
    keep = select_streamlines(t, include=(START, TARGET), exclude=(AVOID,)).numpy()
    out[t.seed_index.numpy()[keep] % len(seeds)] = True
    return out


def test_64_seeds_go_from_8_to_over_90_percent_connecting_within_30_iterations(result):
    assert result.share[0] == pytest.approx(5 / 64)                  # uniform seeds: 5 of 64 connect
    assert result.share[-1] >= 0.9
    assert len(result.share) <= 31 and (np.diff(result.share) >= 0).all()   # never decreases
    budget = np.cumsum(result.tracked)
    assert budget[np.argmax(result.share >= 0.8)] <= 500            # 80% after at most 500 seeds tracked
    assert result.tracked[0] == 64 and budget[-1] < 64 * 31 / 2     # connected seeds are not tracked again


def test_the_counted_streamlines_are_those_users_track_with_the_returned_ids(field, result):
    np.testing.assert_array_equal(connecting(field, result.seeds, result.seed_ids), result.connects)
    assert result.share[-1] == pytest.approx(result.connects.mean())


def test_seeds_stay_in_the_start_sphere_and_those_already_connecting_do_not_move(field, seeds, result):
    assert START.contains(torch.from_numpy(result.seeds)).all()  # the sphere's own float32 test (tckedit's)
    assert np.linalg.norm(result.seeds - START.centre, axis=1).max() <= START.radius + 1e-6
    first = connecting(field, seeds)
    assert first.sum() == 5
    np.testing.assert_array_equal(result.seeds[first], seeds[first])
    assert np.linalg.norm(result.seeds - seeds, axis=1).max() > 2     # the others did move (mm)


def test_the_loss_decreases(result):
    assert result.loss[-1] < 0.3 * result.loss[0]
    assert result.loss[0] > 5                                       # mm: most streamlines miss the target


def test_the_start_region_may_be_a_box_and_progress_is_reported(field):
    box = Box((-16.0, -4.0, -2.0), (-12.0, 4.0, 2.0))
    seeds = np.column_stack([np.full(16, -14.0), np.linspace(-3.5, 3.5, 16), np.zeros(16)])
    calls = []
    out = optimise_seeds(field, seeds, box, TARGET, iterations=3,
                         progress=lambda done, total: calls.append((done, total)), **TRACKING)
    assert box.contains(torch.from_numpy(out.seeds)).all()
    assert calls == [(k, 4) for k in range(1, len(out.share) + 1)]


def test_cancel_stops_the_run(field, seeds):
    with pytest.raises(TrackingCancelled):
        optimise_seeds(field, seeds, START, TARGET, cancel=lambda: True, **TRACKING)


def test_the_smooth_distance_is_the_signed_distance_to_the_regions_voxels():
    # the target sphere's voxels on the 2 mm grid: centres within 5 mm of (14, -5, 0), e.g. x = 10..18,
    # whose cubes reach x = 19 and, at x = 14, y = 1
    distance = RegionDistance(TARGET, SHAPE, AFFINE)
    points = torch.tensor([[14.0, -5.0, 0.0], [24.0, -5.0, 0.0], [14.0, 10.0, 0.0], [15.0, 10.0, 0.0]],
                          requires_grad=True)
    d = distance(points)
    assert d[0] < -3                                                 # negative inside
    np.testing.assert_allclose(d[1:3].detach().numpy(), [5.0, 9.0], atol=1e-6)  # exact at voxel centres
    d[3].backward()
    np.testing.assert_allclose(points.grad[3].numpy(), [0, 1, 0], atol=0.05)   # unit gradient, away from it


@pytest.mark.parametrize("change, message", [
    (dict(seeds=np.zeros((4, 2))), "non-empty \\(N, 3\\) array"),
    (dict(seeds=np.array([[0.0, 0.0, 0.0]])), "1 of 1 seeds lie outside the start region"),
    (dict(step=0.0), "step must be a positive number of mm"),
    (dict(iterations=-1), "iterations must be a whole number"),
    (dict(stop_share=1.5), "stop_share must be in"),
    (dict(target="target.nii"), "the target region must be a region"),
    (dict(target=Sphere((15.0, -5.0, 1.0), 0.2)), "the target region holds no voxel centre"),
])
def test_bad_input_is_refused_in_one_line(field, change, message):
    args = dict(seeds=np.array([[-14.0, -2.0, 0.0]]), start=START, target=TARGET, step=0.5, iterations=2,
                stop_share=1.0) | change
    with pytest.raises(InputError, match=message) as error:
        optimise_seeds(field, args.pop("seeds"), args.pop("start"), args.pop("target"), **args, **TRACKING)
    assert "\n" not in str(error.value)
