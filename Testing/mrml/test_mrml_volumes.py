"""Volume, DWI, DTI and SH-coefficient nodes -> the library's arrays (i, j, k order), world RAS
affines and RAS directions, on real MRML nodes from slicer-core."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.mrml

from DiffTractographyLib import mrml  # noqa: E402
from DiffTractographyLib.errors import InputError  # noqa: E402
from DiffTractographyLib.geometry import axes_rotation  # noqa: E402

BVALS = np.array([0.0, 1000.0, 1000.0, 1000.0, 2000.0, 2000.0, 5.0])


def gradient_table(seed: int = 3) -> np.ndarray:
    """(G, 3) unit RAS directions, a zero row for the b=0 image."""
    g = np.random.default_rng(seed).normal(size=(len(BVALS), 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    g[0] = 0.0
    return g


def las(affine: np.ndarray) -> np.ndarray:
    """The same grid stored with the first voxel axis reversed (det < 0)."""
    out = affine.copy()
    out[:3, 0] *= -1
    return out


def read_fsl(nifti, bval, bvec):
    """Reference reading of FSL files: b-vectors lie along the voxel axes with x negated when the
    affine's determinant is positive; RAS = (unit voxel axes) @ that."""
    import nibabel as nib

    img = nib.load(str(nifti))
    vectors = np.loadtxt(bvec).T
    if np.linalg.det(img.affine[:3, :3]) > 0:
        vectors = vectors * [-1, 1, 1]
    ras = vectors @ axes_rotation(img.affine).T
    return np.asarray(img.dataobj, dtype=np.float32), img.affine, np.loadtxt(bval), ras


@pytest.mark.parametrize("flip", [False, True], ids=["det>0", "det<0"])
@pytest.mark.parametrize("frame", ["oblique", "LPS"])
def test_dwi_node_gives_the_dwi_of_the_equivalent_nifti(scene, build, oblique_affine, rotate, tmp_path, flip, frame):
    affine = las(oblique_affine) if flip else oblique_affine
    mf = rotate([0, 1, 1], 35.0) if frame == "oblique" else np.diag([-1.0, -1.0, 1.0])
    data = np.random.default_rng(0).uniform(10, 1000, (5, 6, 7, len(BVALS))).astype(np.float32)
    bvecs = gradient_table()
    node = build.dwi(scene, data, affine, BVALS, bvecs @ mf, mf)  # g_node = MF^T g_ras
    reference = read_fsl(*build.fsl(tmp_path, data, affine, BVALS, bvecs))

    dwi = mrml.dwi_from_node(node)

    np.testing.assert_array_equal(dwi.data, reference[0])
    np.testing.assert_array_equal(dwi.bvals, reference[2])
    # NIfTI keeps the affine in float32: the file side agrees to that precision, the node side exactly.
    np.testing.assert_allclose(dwi.affine, reference[1], rtol=0, atol=1e-5)
    np.testing.assert_allclose(dwi.bvecs, reference[3], rtol=0, atol=1e-6)
    np.testing.assert_allclose(dwi.affine, affine, rtol=0, atol=1e-12)
    np.testing.assert_allclose(dwi.bvecs, bvecs, rtol=0, atol=1e-12)


def test_slicer_nrrd_of_a_dwi_node_reads_back_as_the_same_dwi(scene, build, oblique_affine, rotate, tmp_path):
    from DiffTractographyLib.dwi_io import load_dwi

    mf = rotate([3, 1, -1], 65.0)
    data = np.random.default_rng(9).uniform(10, 1000, (5, 6, 7, len(BVALS))).astype(np.float32)
    node = build.dwi(scene, data, las(oblique_affine), BVALS, gradient_table() @ mf, mf)
    storage = node.CreateDefaultStorageNode()
    storage.SetFileName(str(tmp_path / "dwi.nhdr"))
    assert storage.WriteData(node)

    from_file, from_node = load_dwi(tmp_path / "dwi.nhdr"), mrml.dwi_from_node(node)

    np.testing.assert_array_equal(from_file.data, from_node.data)
    np.testing.assert_allclose(from_file.affine, from_node.affine, rtol=0, atol=1e-9)
    np.testing.assert_allclose(from_file.bvecs, from_node.bvecs, rtol=0, atol=1e-9)
    np.testing.assert_allclose(from_file.bvals, from_node.bvals, rtol=0, atol=1e-3)


def test_dwi_under_a_linear_transform_moves_and_turns_with_it(scene, build, oblique_affine, rotate):
    data = np.ones((3, 4, 5, len(BVALS)), np.float32)
    bvecs = gradient_table()
    node = build.dwi(scene, data, oblique_affine, BVALS, bvecs, np.eye(3))
    world = np.eye(4)
    world[:3, :3] = rotate([0, 0, 1], 90.0) @ np.diag([1.5, 1.5, 1.5])
    world[:3, 3] = (5.0, -3.0, 2.0)
    build.transform(scene, world, node)

    dwi = mrml.dwi_from_node(node)

    np.testing.assert_allclose(dwi.affine, world @ oblique_affine, atol=1e-12)
    np.testing.assert_allclose(dwi.bvecs, bvecs @ rotate([0, 0, 1], 90.0).T, atol=1e-12)


def test_a_non_linear_transform_is_refused(scene, build, oblique_affine):
    import vtk

    node = build.volume(scene, "vtkMRMLScalarVolumeNode", np.zeros((3, 3, 3)), oblique_affine, "FA")
    transform = scene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    transform.SetAndObserveTransformToParent(vtk.vtkThinPlateSplineTransform())
    node.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(InputError, match="non-linear transform 'warp'"):
        mrml.volume_arrays(node)


def test_arrays_are_copies_and_conversion_leaves_the_node_as_it_was(scene, build, oblique_affine, rotate):
    data = np.random.default_rng(1).uniform(1, 2, (4, 5, 6, len(BVALS))).astype(np.float32)
    mf = rotate([1, 0, 0], 10)
    node = build.dwi(scene, data, oblique_affine, BVALS, gradient_table() @ mf, mf)
    before = build.checksum(node)

    dwi = mrml.dwi_from_node(node)
    dwi.data[:] = 0
    values, _ = mrml.volume_arrays(node)
    values[:] = 0

    assert build.checksum(node) == before
    np.testing.assert_array_equal(mrml.volume_arrays(node)[0], data)


def test_dti_node_tensors_come_out_in_ras(scene, build, oblique_affine, rotate):
    rng = np.random.default_rng(2)
    m = rng.normal(size=(3, 4, 5, 3, 3))
    tensors_ras = 1e-3 * (m @ np.swapaxes(m, -1, -2))
    mf = axes_rotation(oblique_affine)  # what Slicer's NRRD reader leaves: components along the voxel axes
    node = build.dti(scene, mf.T @ tensors_ras @ mf, oblique_affine, mf)
    world = np.eye(4)
    world[:3, :3] = rotate([1, 1, 0], 30.0)
    build.transform(scene, world, node)

    tensors, affine = mrml.tensors_from_node(node)

    turn = rotate([1, 1, 0], 30.0)
    np.testing.assert_allclose(tensors, turn @ tensors_ras @ turn.T, rtol=0, atol=2e-9)  # float32 storage
    np.testing.assert_allclose(affine, world @ oblique_affine, atol=1e-12)


def test_the_dwi_a_dti_node_becomes_fits_back_to_its_tensors(oblique_affine):
    from DiffTractographyLib.models.dti import fit_dti

    rng = np.random.default_rng(4)
    q, _ = np.linalg.qr(rng.normal(size=(2, 3, 4, 3, 3)))
    tensors = q @ (rng.uniform(0.1e-3, 3e-3, (2, 3, 4, 3, 1)) * np.swapaxes(q, -1, -2))  # brain-like diffusivities

    fit = fit_dti(mrml.dwi_from_tensors(tensors, oblique_affine))

    # the signal is float32: tensors come back to that precision, with S0 = 1
    np.testing.assert_allclose(fit.tensor.numpy(), tensors, rtol=0, atol=2e-8)
    np.testing.assert_allclose(fit.s0.numpy(), 1.0, atol=1e-5)


def test_sh_vector_volume_becomes_an_sh_field(scene, build, oblique_affine):
    coeffs = np.random.default_rng(5).normal(size=(3, 4, 5, 15)).astype(np.float32)
    node = build.volume(scene, "vtkMRMLVectorVolumeNode", coeffs, oblique_affine, "fod")

    field = mrml.field_from_node(node, sh_basis="descoteaux07")

    np.testing.assert_array_equal(field.coeffs.numpy(), coeffs)
    np.testing.assert_allclose(field.affine, oblique_affine, atol=1e-12)
    assert (field.lmax, field.basis, field.frame) == (4, "descoteaux07", "voxel")
    assert mrml.default_algorithm(node) == "sdstream"


def test_a_volume_that_is_not_sh_is_refused(scene, build, oblique_affine):
    node = build.volume(scene, "vtkMRMLVectorVolumeNode", np.zeros((3, 3, 3, 4), np.float32), oblique_affine, "rgb")
    with pytest.raises(InputError, match="4 volumes is not a number of even-degree SH coefficients"):
        mrml.field_from_node(node)


def test_label_map_mask_stays_on_its_own_grid(scene, build, oblique_affine):
    labels = np.zeros((4, 5, 6), np.int16)
    labels[1, 2, 3] = 7
    labels[2, 2, 3] = 1
    node = build.volume(scene, "vtkMRMLLabelMapVolumeNode", labels, oblique_affine, "labels")

    mask, affine = mrml.mask_from_node(node)

    np.testing.assert_array_equal(mask, labels != 0)
    np.testing.assert_allclose(affine, oblique_affine, atol=1e-12)


def test_segmentation_mask_is_the_union_of_the_chosen_segments(scene, build, oblique_affine):
    from slicer import vtkSlicerSegmentationsModuleLogic

    labels = np.zeros((6, 5, 4), np.int16)
    labels[1, 1, 1], labels[4, 3, 2], labels[5, 4, 3] = 3, 5, 9
    labelmap = build.volume(scene, "vtkMRMLLabelMapVolumeNode", labels, oblique_affine, "labels")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
    first, second, _ = mrml.segment_ids(segmentation)

    mask, affine = mrml.mask_from_node(segmentation, [first, second])

    world = {tuple(np.round(affine[:3, :3] @ v + affine[:3, 3], 6)) for v in np.argwhere(mask)}
    expected = {tuple(np.round(oblique_affine[:3, :3] @ v + oblique_affine[:3, 3], 6)) for v in ([1, 1, 1], [4, 3, 2])}
    assert world == expected


def test_region_must_be_a_label_map_or_segmentation(scene, build, oblique_affine):
    data = np.ones((2, 2, 2, len(BVALS)), np.float32)
    node = build.dwi(scene, data, oblique_affine, BVALS, gradient_table(), np.eye(3))
    with pytest.raises(InputError, match="a region must be a label map or a segmentation, got 'dwi'"):
        mrml.mask_from_node(node)


def test_library_arrays_round_trip_through_new_nodes(scene, oblique_affine):
    from DiffTractographyLib.dwi import DWI

    data = np.random.default_rng(6).uniform(1, 9, (4, 5, 6, len(BVALS))).astype(np.float32)
    dwi = DWI(data, oblique_affine, BVALS, gradient_table())
    labels = (data[..., 0] > 5).astype(np.uint8)

    back = mrml.dwi_from_node(mrml.dwi_node(scene, dwi, "round trip"))
    values, affine = mrml.volume_arrays(mrml.volume_node(scene, labels, oblique_affine, "vtkMRMLLabelMapVolumeNode"))

    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.affine, oblique_affine, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(back.bvals, BVALS)
    np.testing.assert_allclose(back.bvecs, dwi.bvecs, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(values, labels)
    np.testing.assert_allclose(affine, oblique_affine, rtol=0, atol=1e-12)
