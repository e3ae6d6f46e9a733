"""Seeds land in their voxels, in a reproducible order; seed files are read with clear errors."""
import numpy as np
import pytest

from DiffTractographyLib.errors import InputError
from DiffTractographyLib.geometry import apply_affine
from DiffTractographyLib.seeding import BallSeeds, RandomSeeds, outside_grid, read_seed_file, seeds_from_mask
from helpers import oblique_affine

AFFINE = oblique_affine(flip_x=True)


def mask():
    m = np.zeros((5, 6, 7), np.uint8)
    m[1, 2, 3] = 1
    m[3, 4, 5] = 2
    return m


def test_random_seeds_stay_in_their_voxels_and_are_reproducible():
    seeds = seeds_from_mask(mask(), AFFINE, seeds_per_voxel=50, rng_seed=3)
    assert seeds.shape == (100, 3)
    ijk = apply_affine(np.linalg.inv(AFFINE), seeds)
    assert (np.abs(ijk[:50] - [1, 2, 3]) <= 0.5).all() and (np.abs(ijk[50:] - [3, 4, 5]) <= 0.5).all()
    assert ijk[:50].std(0).min() > 0.2  # spread over the voxel
    np.testing.assert_array_equal(seeds, seeds_from_mask(mask(), AFFINE, seeds_per_voxel=50, rng_seed=3))
    assert not np.array_equal(seeds, seeds_from_mask(mask(), AFFINE, seeds_per_voxel=50, rng_seed=4))


def test_random_seeds_in_an_image_are_one_sequence_spread_evenly_over_its_voxels():
    stream = RandomSeeds(mask(), AFFINE, rng_seed=3)
    seeds = stream.draw(0, 4000)
    np.testing.assert_array_equal(stream.draw(1000, 1500), seeds[1000:1500])  # any block of the same sequence
    ijk = apply_affine(np.linalg.inv(AFFINE), seeds)
    first = (np.abs(ijk - [1, 2, 3]) <= 0.5).all(1)
    assert (first | (np.abs(ijk - [3, 4, 5]) <= 0.5).all(1)).all()
    assert 1900 < first.sum() < 2100                     # a voxel drawn uniformly: 2000 +- 3 sd
    assert not np.array_equal(seeds, RandomSeeds(mask(), AFFINE, rng_seed=4).draw(0, 4000))
    only_two = RandomSeeds(mask(), AFFINE, label=2).draw(0, 50)
    assert (np.abs(apply_affine(np.linalg.inv(AFFINE), only_two) - [3, 4, 5]) <= 0.5).all()


def test_ball_seeds_fill_the_ball_uniformly_as_one_sequence():
    ball = BallSeeds((10.0, -5.0, 3.0), 4.0, rng_seed=2)
    seeds = ball.draw(0, 8000)
    np.testing.assert_array_equal(ball.draw(500, 700), seeds[500:700])
    r = np.linalg.norm(seeds - [10.0, -5.0, 3.0], axis=1)
    assert r.max() <= 4.0 and abs((r <= 4.0 / 2 ** (1 / 3)).mean() - 0.5) < 0.02   # half the volume inside
    assert np.abs(seeds.mean(0) - [10.0, -5.0, 3.0]).max() < 0.1


def test_grid_seeds_and_labels():
    seeds = seeds_from_mask(mask(), AFFINE, seeds_per_voxel=8, placement="grid", label=2)
    ijk = apply_affine(np.linalg.inv(AFFINE), seeds)
    np.testing.assert_allclose(np.sort(np.unique(np.round(ijk[:, 0] - 3, 6))), [-0.25, 0.25])
    np.testing.assert_allclose(seeds_from_mask(mask(), AFFINE, 1, "grid", label=1), apply_affine(AFFINE, [[1, 2, 3]]))


def test_bad_seed_requests():
    with pytest.raises(InputError, match="no non-zero voxel"):
        seeds_from_mask(np.zeros((3, 3, 3)), AFFINE)
    with pytest.raises(InputError, match="no label 7"):
        seeds_from_mask(mask(), AFFINE, label=7)
    with pytest.raises(InputError, match="cube number"):
        seeds_from_mask(mask(), AFFINE, 4, "grid")
    with pytest.raises(InputError, match="3-D"):
        seeds_from_mask(np.ones((3, 3, 3, 2)), AFFINE)


def test_seed_files(tmp_path):
    f = tmp_path / "seeds.txt"
    f.write_text("# x y z dx dy dz\n1 2 3 0 0 1\n4 5 6 1 0 0\n")
    points, dirs = read_seed_file(f)
    np.testing.assert_array_equal(points, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(dirs, [[0, 0, 1], [1, 0, 0]])
    f.write_text("1 2 3\n")
    points, dirs = read_seed_file(f)
    assert points.shape == (1, 3) and dirs is None
    f.write_text("1 2 3 0 0 0\n4 5 6 0 0 0\n")                      # zero directions everywhere: none
    assert read_seed_file(f)[1] is None
    f.write_text("1 2 3 0 0 1\n4 5 6 0 0 0\n")
    with pytest.raises(InputError, match="row 1 has the direction 0 0 0; give a direction on every row or on none"):
        read_seed_file(f)
    f.write_text("1 2 3 4\n")
    with pytest.raises(InputError, match="4 columns"):
        read_seed_file(f)
    f.write_text("# nothing\n")
    with pytest.raises(InputError, match="no seeds"):
        read_seed_file(f)
    with pytest.raises(InputError, match="no such seed file"):
        read_seed_file(tmp_path / "missing.txt")


def test_outside_grid():
    inside = apply_affine(AFFINE, [[0, 0, 0], [4.4, 5.4, 6.4]])
    outside = apply_affine(AFFINE, [[-0.6, 0, 0], [0, 6.5, 0]])
    assert outside_grid(np.vstack([inside, outside]), AFFINE, (5, 6, 7)).tolist() == [False, False, True, True]


def test_a_label_in_a_map_of_non_integer_values_is_said_to_match_exactly():
    labels = np.array([1.6, 2.4, 2.0, 1.5, 2.5, 0.0], dtype=np.float32).reshape(1, 2, 3)
    with pytest.warns(UserWarning, match="holds 4 voxels of non-integer value .* label 2 matches its exact value"):
        seeds = seeds_from_mask(labels, AFFINE, placement="grid", label=2)
    assert len(seeds) == 1
