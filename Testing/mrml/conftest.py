"""Real MRML nodes for the adapter tests (slicer-core, no Slicer application): a fresh scene and
builders that put arrays into nodes the way Slicer's readers leave them."""
from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest


def _vtk_matrix(a):
    import vtk

    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r][c]))
    return m


def _image(values_ijk: np.ndarray, components: int):
    """vtkImageData holding (X, Y, Z, components) values, stored k, j, i as Slicer does."""
    import vtk
    from vtk.util import numpy_support as ns

    x, y, z = values_ijk.shape[:3]
    image = vtk.vtkImageData()
    image.SetDimensions(x, y, z)
    kji = np.ascontiguousarray(values_ijk.reshape(x, y, z, components).transpose(2, 1, 0, 3).reshape(-1, components))
    return image, ns.numpy_to_vtk(kji, deep=True)


def add_volume(scene, class_name: str, data: np.ndarray, affine, name: str = "volume"):
    """A volume node of ``class_name`` holding (X, Y, Z[, C]) ``data`` with IJKToRAS ``affine``."""
    image, scalars = _image(data, 1 if data.ndim == 3 else data.shape[3])
    image.GetPointData().SetScalars(scalars)
    node = scene.AddNewNodeByClass(class_name, name)
    node.SetAndObserveImageData(image)
    node.SetIJKToRASMatrix(_vtk_matrix(affine))
    return node


def add_dwi(scene, data: np.ndarray, affine, bvals, gradients, measurement_frame, name: str = "dwi"):
    """A DWI node: ``gradients`` (G, 3) unit vectors in the measurement frame (3, 3)."""
    node = add_volume(scene, "vtkMRMLDiffusionWeightedVolumeNode", data, affine, name)
    node.SetNumberOfGradients(len(bvals))
    for i, (b, g) in enumerate(zip(bvals, gradients)):
        node.SetBValue(i, float(b))
        node.SetDiffusionGradient(i, [float(v) for v in g])
    mf = np.eye(4)
    mf[:3, :3] = measurement_frame
    node.SetMeasurementFrameMatrix(_vtk_matrix(mf))
    return node


def add_dti(scene, tensors: np.ndarray, affine, measurement_frame, name: str = "dti"):
    """A DTI node holding (X, Y, Z, 3, 3) ``tensors`` expressed in the measurement frame (3, 3)."""
    image, array = _image(tensors.reshape(*tensors.shape[:3], 9).astype(np.float32), 9)
    image.GetPointData().SetTensors(array)
    node = scene.AddNewNodeByClass("vtkMRMLDiffusionTensorVolumeNode", name)
    node.SetAndObserveImageData(image)
    node.SetIJKToRASMatrix(_vtk_matrix(affine))
    mf = np.eye(4)
    mf[:3, :3] = measurement_frame
    node.SetMeasurementFrameMatrix(_vtk_matrix(mf))
    return node


def add_transform(scene, matrix, node):
    """Put ``node`` under a new linear transform (4, 4) to world."""
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(_vtk_matrix(matrix))
    node.SetAndObserveTransformNodeID(transform.GetID())
    return transform


def write_fsl(folder, data, affine, bvals, bvecs_ras):
    """The NIfTI + .bval/.bvec a user has for the same acquisition (FSL convention: b-vectors along
    the voxel axes, x negated when det(affine) > 0). Returns the three paths."""
    import nibabel as nib

    from DiffTractographyLib.geometry import axes_rotation

    vectors = np.asarray(bvecs_ras) @ axes_rotation(affine)
    if np.linalg.det(affine[:3, :3]) > 0:
        vectors = vectors * [-1, 1, 1]
    nib.save(nib.Nifti1Image(data, affine), folder / "dwi.nii.gz")
    np.savetxt(folder / "dwi.bval", np.asarray(bvals)[None], fmt="%g")
    np.savetxt(folder / "dwi.bvec", vectors.T, fmt="%.17g")
    return folder / "dwi.nii.gz", folder / "dwi.bval", folder / "dwi.bvec"


def checksum(node) -> str:
    """SHA-256 of everything a volume or markups node holds that tracking reads."""
    from vtk.util import numpy_support as ns

    h = hashlib.sha256()
    image = node.GetImageData() if hasattr(node, "GetImageData") else None
    if image is not None:
        for array in (image.GetPointData().GetScalars(), image.GetPointData().GetTensors()):
            if array is not None:
                h.update(ns.vtk_to_numpy(array).tobytes())
        m = _vtk_matrix(np.eye(4))
        node.GetIJKToRASMatrix(m)
        h.update(str([m.GetElement(r, c) for r in range(4) for c in range(4)]).encode())
    if node.IsA("vtkMRMLDiffusionWeightedVolumeNode"):
        h.update(ns.vtk_to_numpy(node.GetDiffusionGradients()).tobytes())
        h.update(ns.vtk_to_numpy(node.GetBValues()).tobytes())
    if node.IsA("vtkMRMLMarkupsNode"):
        for i in range(node.GetNumberOfControlPoints()):
            h.update(str(node.GetNthControlPointPosition(i)).encode())
    return h.hexdigest()


@pytest.fixture
def scene():
    from slicer import vtkMRMLScene

    return vtkMRMLScene()


@pytest.fixture
def build():
    return SimpleNamespace(volume=add_volume, dwi=add_dwi, dti=add_dti, transform=add_transform,
                           checksum=checksum, fsl=write_fsl)


def rotation(axis, degrees: float) -> np.ndarray:
    """(3, 3) rotation about ``axis`` by ``degrees`` (right hand)."""
    a = np.asarray(axis, dtype=np.float64)
    a /= np.linalg.norm(a)
    t = np.radians(degrees)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


@pytest.fixture
def oblique_affine() -> np.ndarray:
    """A 2 x 2.5 x 3 mm grid rotated 20 deg about (1, 2, 3) with its origin at (-12, 7, 30) mm."""
    a = np.eye(4)
    a[:3, :3] = rotation([1, 2, 3], 20.0) @ np.diag([2.0, 2.5, 3.0])
    a[:3, 3] = (-12.0, 7.0, 30.0)
    return a


@pytest.fixture
def rotate():
    return rotation
