"""Seed nodes -> RAS seeds: label maps and segmentations (per voxel), fiducials (balls around the
points, transforms applied) and markups ROIs (the turned box)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.mrml

from DiffTractographyLib import mrml  # noqa: E402
from DiffTractographyLib.errors import InputError  # noqa: E402
from DiffTractographyLib.geometry import apply_affine  # noqa: E402


def fiducials(scene, points):
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "points")
    for p in points:
        node.AddControlPoint(list(p))
    return node


def test_fiducial_seeds_fill_a_ball_around_each_point_in_world_ras(scene, build):
    node = fiducials(scene, [(10.0, 20.0, 30.0), (-4.0, 0.0, 2.0)])
    shift = np.eye(4)
    shift[:3, 3] = (1.0, -2.0, 3.0)
    build.transform(scene, shift, node)

    seeds = mrml.seeds_from_node(node, voxel_volume=8.0, seeds_per_point=500, seed_radius=2.5, rng_seed=7)

    assert seeds.shape == (1000, 3)
    for m, centre in enumerate([(11.0, 18.0, 33.0), (-3.0, -2.0, 5.0)]):
        distance = np.linalg.norm(seeds[500 * m:500 * (m + 1)] - centre, axis=1)
        assert distance.max() <= 2.5
        # uniform in the ball: the fraction within r is (r / R)^3
        assert abs(np.mean(distance <= 2.5 * 0.5 ** (1 / 3)) - 0.5) < 0.07
    np.testing.assert_array_equal(seeds, mrml.seeds_from_node(node, voxel_volume=8.0, seeds_per_point=500,
                                                               seed_radius=2.5, rng_seed=7))



def test_only_placed_points_seed(scene):
    """A point being placed (preview), unset or missing has no position: it seeds nothing, and the
    placed points seed as they would alone."""
    node = fiducials(scene, [(10.0, 20.0, 30.0), (50.0, 50.0, 50.0), (-4.0, 0.0, 2.0), (7.0, 7.0, 7.0),
                             (0.0, 9.0, 0.0)])
    node.SetNthControlPointPosition(1, 50.0, 50.0, 50.0, node.PositionPreview)
    node.UnsetNthControlPointPosition(3)
    node.SetNthControlPointPositionMissing(4)
    placed = fiducials(scene, [(10.0, 20.0, 30.0), (-4.0, 0.0, 2.0)])

    np.testing.assert_array_equal(mrml.control_points(node), [[10.0, 20.0, 30.0], [-4.0, 0.0, 2.0]])
    seeds = mrml.seeds_from_node(node, voxel_volume=8.0, seeds_per_point=50, seed_radius=2.5, rng_seed=1)
    np.testing.assert_array_equal(seeds, mrml.seeds_from_node(placed, voxel_volume=8.0, seeds_per_point=50,
                                                               seed_radius=2.5, rng_seed=1))
    for i in range(node.GetNumberOfControlPoints()):
        node.UnsetNthControlPointPosition(i)
    with pytest.raises(InputError, match="no placed control points"):
        mrml.seeds_from_node(node, voxel_volume=8.0)


def test_roi_seeds_fill_the_turned_box(scene):
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    roi.SetSize(4.0, 6.0, 8.0)
    turn = np.eye(4)
    turn[:3, :3] = [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    import vtk

    matrix = vtk.vtkMatrix4x4()
    matrix.DeepCopy(turn.ravel())
    roi.SetAndObserveObjectToNodeMatrix(matrix)
    roi.SetCenter(1.0, 2.0, 3.0)

    seeds = mrml.seeds_from_node(roi, voxel_volume=8.0, seeds_per_voxel=2)

    assert len(seeds) == 2 * 4 * 6 * 8 // 8
    local = seeds - (1.0, 2.0, 3.0)
    # the box's 4 mm edge lies along RAS y, its 6 mm edge along -x
    assert np.abs(local).max(0) == pytest.approx([3.0, 2.0, 4.0], abs=0.3)
    assert (np.abs(local) <= [3.0, 2.0, 4.0]).all()


def test_roi_region_is_the_turned_box_under_its_transform(scene, build, rotate):
    import torch

    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    roi.SetSize(4.0, 6.0, 8.0)
    roi.SetCenter(1.0, 2.0, 3.0)
    world = np.eye(4)
    world[:3, :3] = rotate([0, 0, 1], 90.0) * 2.0  # turn about S and double every length
    build.transform(scene, world, roi)

    box = mrml.box_from_node(roi)

    # the ROI's 4 mm edge becomes an 8 mm edge along RAS y, centred at (-4, 2, 6)
    inside = torch.tensor([[-4.0 + 5.9, 2.0 + 3.9, 6.0 + 7.9], [-4.0, 2.0 - 3.9, 6.0]])
    outside = torch.tensor([[-4.0 + 6.1, 2.0, 6.0], [-4.0, 2.0 + 4.1, 6.0], [-4.0, 2.0, 6.0 - 8.1]])
    assert box.contains(inside).all() and not box.contains(outside).any()


def test_label_map_seeds_lie_in_the_labelled_voxels(scene, build, oblique_affine):
    labels = np.zeros((5, 6, 7), np.uint8)
    labels[1, 2, 3] = labels[3, 4, 5] = 1
    node = build.volume(scene, "vtkMRMLLabelMapVolumeNode", labels, oblique_affine, "seeds")

    seeds = mrml.seeds_from_node(node, voxel_volume=15.0, seeds_per_voxel=20)

    assert seeds.shape == (40, 3)
    voxels = np.round(apply_affine(np.linalg.inv(oblique_affine), seeds)).astype(int)
    assert {tuple(v) for v in voxels} == {(1, 2, 3), (3, 4, 5)}


def test_segmentation_seeds_use_the_chosen_segment(scene, build, oblique_affine):
    from slicer import vtkSlicerSegmentationsModuleLogic

    labels = np.zeros((5, 6, 7), np.uint8)
    labels[1, 2, 3], labels[3, 4, 5] = 4, 9
    labelmap = build.volume(scene, "vtkMRMLLabelMapVolumeNode", labels, oblique_affine, "labels")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)

    seeds = mrml.seeds_from_node(segmentation, voxel_volume=15.0, seeds_per_voxel=3,
                                 segments=mrml.segment_ids(segmentation)[1:])

    voxels = np.round(apply_affine(np.linalg.inv(oblique_affine), seeds)).astype(int)
    assert {tuple(v) for v in voxels} == {(3, 4, 5)} and len(seeds) == 3


def test_a_fiducial_list_without_points_is_refused(scene):
    with pytest.raises(InputError, match="the markups 'points' has no placed control points"):
        mrml.seeds_from_node(fiducials(scene, []), voxel_volume=1.0)
