"""Signed distance to a lesion's surface: the union of its voxel cubes, negative inside, in mm."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from DiffTractographyLib.errors import InputError
from DiffTractographyLib.planning.distance import (LesionSurface, point_distances, signed_distance_map,
                                                   streamline_distances)
from DiffTractographyLib.stopping import BinaryMask


def oblique_affine() -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = Rotation.from_euler("xyz", [20, -30, 40], degrees=True).as_matrix() @ np.diag([1.2, -0.9, 2.0])
    a[:3, 3] = [5, -3, 7]
    return a


def brute_force(mask, affine, points):
    """Distance to every lesion cube and every outside cube (a one-voxel border included)."""
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    index = np.linalg.solve(affine[:3, :3], (points - affine[:3, 3]).T).T

    def nearest(cubes):
        gap = np.maximum(np.abs(index[:, None] - cubes[None]) - 0.5, 0) * spacing
        return np.sqrt((gap * gap).sum(-1)).min(1)

    inside, outside = nearest(np.argwhere(mask)), nearest(np.argwhere(~np.pad(mask, 1)) - 1)
    return np.where(inside > 0, inside, -outside)


def test_one_cube_of_2_mm():
    mask = np.zeros((9, 9, 9), bool)
    mask[4, 4, 4] = True
    surface = LesionSurface(mask, np.diag([2.0, 2.0, 2.0, 1.0]))   # the cube spans 7..9 mm on each axis
    d = surface.signed([[8, 8, 8], [8.5, 8, 8], [9, 8, 8], [12, 8, 8], [12, 12, 8], [12, 12, 12]])
    np.testing.assert_allclose(d, [-1, -0.5, 0, 3, np.sqrt(18), np.sqrt(27)])


def test_exact_on_an_oblique_flipped_anisotropic_grid():
    rng = np.random.default_rng(0)
    mask = rng.random((15, 14, 13)) > 0.85
    affine = oblique_affine()
    points = rng.uniform(-5, 25, (3000, 3)) @ affine[:3, :3].T + affine[:3, 3]
    d = LesionSurface(mask, affine).signed(points)
    np.testing.assert_allclose(d, brute_force(mask, affine, points), atol=1e-12)
    assert 30 < (d < 0).sum() < 100


def test_the_map_is_the_distance_at_voxel_centres():
    mask = np.zeros((10, 10, 10), bool)
    mask[3:6, 4:7, 2:8] = True
    surface = LesionSurface(mask, oblique_affine())
    m = signed_distance_map(surface)
    assert m.shape == (10, 10, 10) and m.dtype == np.float32
    assert m[4, 5, 5] == pytest.approx(-1.35)                      # 1.5 voxels of 0.9 mm to the nearest face
    assert (m[mask] < 0).all() and (m[~mask] > 0).all()


def test_masks_are_signed_and_point_sets_unsigned():
    mask = np.zeros((5, 5, 5), bool)
    mask[2, 2, 2] = True
    points = [[2, 2, 2], [4, 2, 2]]
    np.testing.assert_allclose(point_distances(points, BinaryMask(mask, np.eye(4))), [-0.5, 1.5])
    np.testing.assert_allclose(point_distances(points, np.array([[2.0, 2, 2]])), [0, 2])


def test_per_streamline_minimum_measures_few_vertices_and_misses_none():
    """The 1-Lipschitz skipping gives each streamline's minimum over all its vertices exactly (random
    walks of 1-400 vertices around a lesion, oblique grid)."""
    rng = np.random.default_rng(0)
    mask = np.zeros((15, 14, 13), bool)
    mask[6:9, 5:9, 6:8] = True
    surface = LesionSurface(mask, oblique_affine())
    centre = oblique_affine()[:3, :3] @ [7, 7, 7] + oblique_affine()[:3, 3]
    lengths = np.array([1, 2, 150, 400, 64, 65])
    offsets = rng.uniform(-12, 12, (len(lengths), 3))
    offsets[3] = 0.0                                                   # this walk starts inside the lesion
    points = np.concatenate([np.cumsum(rng.normal(0, 0.3, (n, 3)), 0) + centre + o for n, o in zip(lengths, offsets)])
    every = point_distances(points, surface)
    expected = np.minimum.reduceat(every, np.r_[0, np.cumsum(lengths)[:-1]])
    np.testing.assert_array_equal(streamline_distances(points, lengths, surface), expected)
    assert (expected < 0).any() and (expected > 0).any()


@pytest.mark.parametrize("mask, affine, message", [
    (np.zeros((4, 4, 4)), np.eye(4), "at least one lesion voxel"),
    (np.ones((4, 4, 4)), np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), "without shear"),
])
def test_bad_lesions_are_refused_in_one_line(mask, affine, message):
    with pytest.raises(InputError, match=message):
        LesionSurface(mask, affine)
