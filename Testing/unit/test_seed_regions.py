"""Seeds in balls around points (Slicer fiducials) and in oriented boxes (Slicer ROIs)."""
import numpy as np
import pytest

from DiffTractographyLib.errors import InputError
from DiffTractographyLib.seeding import seeds_in_box, seeds_in_spheres


def test_ball_seeds_are_uniform_within_the_radius():
    seeds = seeds_in_spheres([[1.0, 2.0, 3.0]], radius=4.0, count=4000, rng_seed=1)
    r = np.linalg.norm(seeds - [1.0, 2.0, 3.0], axis=1)
    assert seeds.shape == (4000, 3) and r.max() <= 4.0
    # uniform in volume: P(r <= t R) = t^3; and no preferred direction
    for t in (0.5, 0.8):
        assert abs(np.mean(r <= 4.0 * t) - t ** 3) < 0.03
    np.testing.assert_allclose(seeds.mean(0), [1.0, 2.0, 3.0], atol=0.1)


def test_a_moved_centre_keeps_its_seed_pattern():
    both = seeds_in_spheres([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]], 2.0, 50, rng_seed=5)
    moved = seeds_in_spheres([[13.0, -1.0, 2.0]], 2.0, 50, rng_seed=5, indices=[1])
    np.testing.assert_allclose(moved - [13.0, -1.0, 2.0], both[50:] - [10.0, 0.0, 0.0], atol=1e-12)
    assert not np.allclose(both[:50], both[50:] - [10.0, 0.0, 0.0])


def test_box_seeds_fill_the_turned_box():
    box_to_world = np.array([[0.0, -1, 0, 5], [1, 0, 0, -5], [0, 0, 1, 0], [0, 0, 0, 1]])
    seeds = seeds_in_box(box_to_world, [2.0, 4.0, 6.0], 2000, rng_seed=2)
    local = seeds - [5.0, -5.0, 0.0]
    # box x (2 mm) runs along RAS y, box y (4 mm) along -RAS x
    assert (np.abs(local) <= [2.0, 1.0, 3.0]).all()
    np.testing.assert_allclose(np.abs(local).max(0), [2.0, 1.0, 3.0], atol=0.02)


def test_bad_ball_requests():
    with pytest.raises(InputError, match="seed radius must be a non-negative number"):
        seeds_in_spheres([[0.0, 0.0, 0.0]], -1.0, 10)
    with pytest.raises(InputError, match="seeds per point must be at least 1"):
        seeds_in_spheres([[0.0, 0.0, 0.0]], 1.0, 0)
