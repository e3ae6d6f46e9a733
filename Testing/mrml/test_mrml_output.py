"""Tractograms -> fiber bundle (model) nodes, cluster nodes in a subject-hierarchy folder, and a
saved scene that reloads with the output and the inputs intact."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("slicer")
pytestmark = pytest.mark.mrml

from DiffTractographyLib import mrml  # noqa: E402
from DiffTractographyLib.models.dti import tensors_along  # noqa: E402
from DiffTractographyLib.streamlines import Tractogram  # noqa: E402

LINES = [np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.0], [2.0, 4.0, 1.0]]),
         np.array([[-5.0, 1.0, 3.0], [-5.0, 2.0, 3.5]]),
         np.array([[10.0, -2.0, 7.0], [11.0, -2.0, 7.0], [12.0, -2.5, 7.0], [13.0, -3.0, 7.0]]),
         np.array([[4.0, 4.0, 4.0], [5.0, 5.0, 5.0]])]


def tractogram() -> Tractogram:
    n_points = sum(len(s) for s in LINES)
    return Tractogram.from_list(LINES, data_per_streamline={"seed_index": torch.arange(len(LINES))},
                                data_per_point={"FA": torch.linspace(0.2, 0.8, n_points)})


def points_and_lines(polydata) -> tuple[np.ndarray, list[list[int]]]:
    from vtk.util import numpy_support as ns

    points = ns.vtk_to_numpy(polydata.GetPoints().GetData())
    offsets = ns.vtk_to_numpy(polydata.GetLines().GetOffsetsArray())
    conn = ns.vtk_to_numpy(polydata.GetLines().GetConnectivityArray())
    return points, [conn[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]


def test_without_slicerdmri_the_output_is_a_model_node_with_one_polyline_per_streamline(scene):
    node = mrml.bundle_node(scene, tractogram(), name="fibers")

    assert node.GetClassName() == "vtkMRMLModelNode" and node.GetName() == "fibers"
    assert node.GetDisplayNode() is not None
    points, lines = points_and_lines(node.GetPolyData())
    np.testing.assert_array_equal([points[line] for line in lines][2], LINES[2].astype(np.float32))
    assert [len(line) for line in lines] == [3, 2, 4, 2]


def test_filling_an_existing_node_replaces_its_polydata_and_keeps_its_display(scene):
    node = mrml.bundle_node(scene, tractogram(), name="fibers")
    display = node.GetDisplayNode()

    again = mrml.bundle_node(scene, tractogram().subset([3]), node)

    assert again is node and node.GetDisplayNode() is display
    assert node.GetPolyData().GetNumberOfLines() == 1
    assert scene.GetNumberOfNodesByClass("vtkMRMLModelNode") == 1


def test_clusters_become_coloured_nodes_in_a_folder(scene):
    from slicer import vtkMRMLSubjectHierarchyNode

    colors = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
    folder, nodes = mrml.cluster_nodes(scene, tractogram(), [0, 1, 0, -1], colors, "bundle clusters", min_cluster_size=2)

    hierarchy = vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    assert hierarchy.GetItemName(folder) == "bundle clusters"
    assert [hierarchy.GetItemParent(hierarchy.GetItemByDataNode(n)) for n in nodes] == [folder]
    assert nodes[0].GetPolyData().GetNumberOfLines() == 2
    assert nodes[0].GetDisplayNode().GetColor() == colors[0]


def test_per_point_tensors_and_fa_are_those_of_the_tracked_dwi(oblique_affine):
    from DiffTractographyLib.fields import DWIField

    tensors = np.zeros((6, 6, 6, 3, 3))
    tensors[...] = np.diag([1.7e-3, 0.3e-3, 0.3e-3])
    field = DWIField.from_dwi(mrml.dwi_from_tensors(tensors, oblique_affine), dtype=torch.float64)
    voxels = np.array([[1.0, 1.0, 1.0], [2.5, 3.0, 4.0]])
    inside = Tractogram.from_list([voxels @ oblique_affine[:3, :3].T + oblique_affine[:3, 3]])

    out = tensors_along(inside, field)

    # the signal is stored in float32: tensors and FA agree to that precision
    np.testing.assert_allclose(out.data_per_point["tensor"].numpy().reshape(-1, 3, 3), tensors[:2, 0, 0], atol=1e-9)
    fa = np.sqrt(0.5 * ((1.7 - 0.3) ** 2 * 2) / (1.7 ** 2 + 2 * 0.3 ** 2))
    np.testing.assert_allclose(out.data_per_point["FA"].numpy(), fa, rtol=1e-6)


def test_saved_scene_reloads_with_output_and_inputs_intact(scene, build, oblique_affine, rotate, tmp_path):
    from slicer import vtkMRMLScene

    bvals = np.array([0.0, 1000.0, 1000.0, 1000.0, 2000.0, 2000.0, 2000.0])
    gradients = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.6, 0.8], [0.0, 0.0, 1.0],
                          [0.6, 0.8, 0.0], [0.0, 1.0, 0.0], [0.8, 0.0, 0.6]])
    values = np.random.default_rng(0).uniform(1, 100, (3, 4, 5, 7)).astype(np.float32)
    dwi = build.dwi(scene, values, oblique_affine, bvals, gradients, rotate([1, 2, 0], 25.0))
    node = mrml.bundle_node(scene, tractogram(), name="fibers")
    for saved, filename in ((dwi, "dwi.nhdr"), (node, "fibers.vtk")):
        storage = saved.CreateDefaultStorageNode()
        scene.AddNode(storage)
        saved.SetAndObserveStorageNodeID(storage.GetID())
        storage.SetFileName(str(tmp_path / filename))
        assert storage.WriteData(saved)
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()

    fresh = vtkMRMLScene()
    fresh.SetURL(str(tmp_path / "scene.mrml"))
    assert fresh.Connect()

    points, lines = points_and_lines(fresh.GetFirstNodeByName("fibers").GetPolyData())
    np.testing.assert_allclose(np.concatenate([points[line] for line in lines]), np.concatenate(LINES), atol=1e-6)
    reloaded = mrml.dwi_from_node(fresh.GetFirstNodeByName("dwi"))
    original = mrml.dwi_from_node(dwi)
    np.testing.assert_array_equal(reloaded.data, original.data)
    np.testing.assert_allclose(reloaded.affine, original.affine, atol=1e-9)
    np.testing.assert_allclose(reloaded.bvecs, original.bvecs, atol=1e-9)
    np.testing.assert_allclose(reloaded.bvals, bvals, atol=1e-3)  # Slicer's NRRD reader: 1000 -> 999.9999x
