"""Regions of interest and selection rules (tckedit's semantics), lengths, lesion distances."""
import math

import nibabel as nib
import numpy as np
import pytest
import torch

from DiffTractographyLib import Tractogram
from DiffTractographyLib.errors import InputError
from DiffTractographyLib.stopping import BinaryMask
from DiffTractographyLib.selection import (Box, OrientedBox, Sphere, cluster_distances, lesion_distances,
                                           parse_region, select_streamlines, streamline_lengths)

# 2 mm voxels, LAS storage, origin at voxel (10, 10, 10)
AFFINE = np.array([[-2.0, 0, 0, 20], [0, 2.0, 0, -20], [0, 0, 2.0, -20], [0, 0, 0, 1]])


def points(*xyz):
    return torch.tensor(xyz, dtype=torch.float32)


def test_sphere_includes_its_boundary():
    sphere = Sphere((1.0, 2.0, 3.0), 2.0)
    assert sphere.contains(points([1, 2, 5], [1, 2, 5.001], [2, 3, 4])).tolist() == [True, False, True]


def test_boxes_axis_aligned_and_oriented():
    box = Box((0, 0, 0), (10, 5, 2))
    assert box.contains(points([10, 5, 2], [10.01, 1, 1], [3, 3, -0.1])).tolist() == [True, False, False]
    # a 20 x 2 x 2 box along the R axis, turned 90 degrees about S: now along A
    turned = OrientedBox.from_angles((0, 0, 0), (20, 2, 2), (0, 0, 90))
    assert turned.contains(points([0, 9.9, 0], [9.9, 0, 0], [0.9, -9, 0.9])).tolist() == [True, False, True]


def test_mask_takes_the_nearest_voxel_rounding_half_away_from_zero():
    data = np.zeros((20, 20, 20), bool)
    data[10, 10, 10] = True                                  # centre (0, 0, 0) mm, spans +-1 mm
    mask = BinaryMask(data, AFFINE)
    inside = points([0.99, 0, 0], [-0.99, 0.99, -0.99], [0, 0, 1.0], [0, 0, -1.0], [0, 1.01, 0], [-1.0, 0, 0])
    # voxel k = (z + 20) / 2: z = +1 -> 10.5 -> 11 (out), z = -1 -> 9.5 -> 10 (in). x runs against i, and
    # MRtrix3 holds the image with i flipped (i' = 19 - i = (x + 18) / 2): x = -1 -> 8.5 -> 9, i = 10 (in),
    # x = +1 -> 9.5 -> 10, i = 9 (out): tckedit 3.0.3 -include keeps a point at x = -1, drops one at x = +1
    assert mask.contains(inside).tolist() == [True, True, False, True, False, True]
    assert not mask.contains(points([1.0, 0, 0]))[0]
    assert not mask.contains(points([500, 0, 0]))[0]


def test_region_specs(tmp_path):
    assert parse_region("sphere:1,2,3,4") == Sphere((1.0, 2.0, 3.0), 4.0)
    assert parse_region("box:0,1,2,3,4,5") == Box((0.0, 2.0, 4.0), (1.0, 3.0, 5.0))
    obox = parse_region("obox:0,0,0,20,2,2,0,0,90")
    np.testing.assert_allclose(np.array(obox.axes), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    labels = np.zeros((20, 20, 20), np.int16)
    labels[2, 2, 2], labels[5, 5, 5] = 3, 7
    nib.save(nib.Nifti1Image(labels, AFFINE), tmp_path / "labels.nii.gz")
    assert parse_region(str(tmp_path / "labels.nii.gz")).mask.sum() == 2
    only = parse_region(f"{tmp_path / 'labels.nii.gz'}:7")
    assert np.argwhere(only.mask.numpy()).tolist() == [[5, 5, 5]]
    for bad, message in [("cube:1,2", "unknown region"), ("sphere:1,2,3", "4 comma-separated"),
                         ("sphere:0,0,0,-1", "radius"), ("box:1,0,0,1,0,1", "minimum"),
                         (f"{tmp_path / 'labels.nii.gz'}:9", "no voxel with label 9"),
                         (f"{tmp_path / 'labels.nii.gz'}:x", "give the labels as comma-separated whole numbers"),
                         (str(tmp_path / "missing.nii.gz"), "no such")]:
        with pytest.raises(InputError, match=message):
            parse_region(bad)


def test_include_is_and_exclude_is_or_and_ends_only_tests_the_end_vertices():
    t = Tractogram.from_list([np.array(s, np.float32) for s in (
        [[0, 0, 0], [5, 0, 0], [10, 0, 0]],                   # through a, ends in b
        [[0, 0, 0], [5, 0, 0]],                               # a only
        [[5, 0, 0], [5, 5, 0], [10, 0, 0]],                   # starts in a's middle vertex, ends in b
    )])
    a, b, c = Sphere((0, 0, 0), 1), Sphere((10, 0, 0), 1), Sphere((5, 0, 0), 1)
    assert select_streamlines(t, [a]).tolist() == [True, True, False]
    assert select_streamlines(t, [a, b]).tolist() == [True, False, False]
    assert select_streamlines(t, [], [a, b]).tolist() == [False, False, False]
    assert select_streamlines(t, [b], [a]).tolist() == [False, False, True]
    assert select_streamlines(t, [], [c]).tolist() == [False, False, False]
    assert select_streamlines(t, [], [c], ends_only=True).tolist() == [True, False, False]


def test_lengths_are_float32_sums_and_limits_are_inclusive():
    t = Tractogram.from_list([np.array([[0, 0, 0], [3, 4, 0], [3, 4, 12]], np.float32), np.zeros((1, 3), np.float32)])
    assert streamline_lengths(t).tolist() == [17.0, 0.0]
    assert select_streamlines(t, min_length=17, max_length=17).tolist() == [True, False]
    assert select_streamlines(t, max_length=16.99).tolist() == [False, True]


def test_lesion_distances_per_streamline_and_per_cluster():
    data = np.zeros((20, 20, 20), bool)
    data[10, 10, 10] = data[10, 10, 12] = True                # cubes of 2 mm about (0, 0, 0) and (0, 0, 4) mm
    lesion = BinaryMask(data, AFFINE)
    t = Tractogram.from_list([np.array([[6, 0, 0], [3, 4, 0]], np.float32),
                              np.array([[0, 0, 8], [0, 0, 5.5]], np.float32),
                              np.array([[0.5, 0, 0.5], [9, 9, 9]], np.float32)])
    d = lesion_distances(t, lesion)                           # signed, to the cubes' surface
    torch.testing.assert_close(d, torch.tensor([math.sqrt(13), 0.5, -0.5], dtype=torch.float64))
    surface = lesion.voxel_centres()
    torch.testing.assert_close(lesion_distances(t, surface), torch.tensor([5.0, 1.5, math.sqrt(0.5)], dtype=torch.float64))
    assert cluster_distances(d, torch.tensor([1, 1, -1]), 3).tolist() == [math.inf, 0.5, math.inf]


def test_sphere_boundary_is_tckedits_to_the_last_bit():
    """tckedit's sphere test is MRtrix3's float32 squared distance summed as Eigen's ``squaredNorm``,
    x^2 + (y^2 + z^2). Of 2,000 points within 3e-7 (relative) of a 4.3 mm sphere, tckedit's
    ``-include`` kept 1,237 (Testing/Data/tckedit); ``Sphere`` agrees on all of them (on 1,969 with
    (x^2 + y^2) + z^2)."""
    from pathlib import Path

    data = np.load(Path(__file__).resolve().parents[1] / "Data" / "tckedit" / "sphere_boundary.npz")
    inside = Sphere(tuple(data["centre"]), float(data["radius"])).contains(torch.from_numpy(data["points"]))
    np.testing.assert_array_equal(inside.numpy(), data["kept"])


def test_tckgen_tests_exclusion_on_every_vertex_but_the_seed_and_inclusion_on_all():
    from DiffTractographyLib.selection import tckgen_keeps

    line = np.array([[x, 0.0, 0.0] for x in range(5)], dtype=np.float32)   # vertices at x = 0..4 mm
    points, lengths = np.vstack([line, line]), np.array([5, 5])
    seed_at = np.array([0, 2])                                             # seeds at x = 0 and x = 2
    around_first = Sphere((0.0, 0.0, 0.0), 0.5)
    assert tckgen_keeps(points, lengths, seed_at, exclude=[around_first]).tolist() == [True, False]
    assert tckgen_keeps(points, lengths, seed_at, include=[around_first]).tolist() == [True, True]
    assert tckgen_keeps(points, lengths, seed_at, include=[Sphere((9.0, 0, 0), 1.0)]).tolist() == [False, False]
