"""Every reader returns the same DWI with RAS gradients: FSL .bval/.bvec (x flipped for a
positive-determinant affine, as MRtrix3's -fslgrad reads them), MRtrix .b tables, Slicer DWI NRRD
(measurement frame, LPS space, list axis first or last), checked against MRtrix3 and Slicer's own
readers; maps are written atomically."""
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from DiffTractographyLib.dwi_io import (fsl_to_ras, load_dwi, load_mask, load_nrrd_dwi, ras_to_fsl,
                                        read_mrtrix_gradients)
from DiffTractographyLib.images import save_nifti
from DiffTractographyLib.errors import InputError

OBLIQUE = Rotation.from_euler("xyz", [10, -7, 20], degrees=True).as_matrix()
AFFINES = {  # linear parts: LAS (det < 0, FSL bvecs = voxel axes), RAS and permuted (det > 0), oblique
    "LAS": np.diag([-2.0, 2.0, 2.5]),
    "RAS_oblique": OBLIQUE @ np.diag([2.0, 2.2, 2.5]),
    "PIR_oblique": OBLIQUE @ np.array([[0, 0, 2.0], [-2.0, 0, 0], [0, -2.0, 0]]),
    "LAS_oblique": OBLIQUE @ np.diag([-2.0, 2.0, 2.0]),
}


def affine(name):
    a = np.eye(4)
    a[:3, :3] = AFFINES[name]
    a[:3, 3] = [10.0, -5.0, 3.0]
    return a


def write_fsl_dwi(folder, name, n=8, seed=0):
    """A random DWI on grid ``name`` with FSL files; returns paths and the FSL b-vectors (G, 3)."""
    rng = np.random.default_rng(seed)
    bvecs = rng.normal(size=(n, 3))
    bvecs /= np.linalg.norm(bvecs, axis=1, keepdims=True)
    bvecs[0] = 0
    bvals = np.full(n, 1000.0)
    bvals[0] = 0
    image = folder / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(rng.random((4, 5, 6, n)).astype(np.float32) + 1, affine(name)), image)
    np.savetxt(folder / f"{name}.bval", bvals[None], fmt="%g")
    np.savetxt(folder / f"{name}.bvec", bvecs.T)
    return image, bvals, bvecs


def test_fsl_bvecs_follow_the_voxel_axes_with_x_flipped_for_positive_determinants():
    # a gradient along +x of the image's first axis: for LAS storage that axis points left
    las, ras = np.diag([-2.0, 2, 2, 1]), np.diag([2.0, 2, 2, 1])
    np.testing.assert_allclose(fsl_to_ras([[1, 0, 0]], las), [[-1, 0, 0]])
    np.testing.assert_allclose(fsl_to_ras([[1, 0, 0]], ras), [[-1, 0, 0]])  # FSL's radiological x
    np.testing.assert_allclose(fsl_to_ras([[0, 1, 0]], ras), [[0, 1, 0]])
    g = np.random.default_rng(1).normal(size=(5, 3))
    for name in AFFINES:
        np.testing.assert_allclose(ras_to_fsl(fsl_to_ras(g, affine(name)), affine(name)), g, atol=1e-12)


@pytest.mark.mrtrix
@pytest.mark.skipif(shutil.which("mrconvert") is None, reason="needs MRtrix3's mrconvert")
@pytest.mark.parametrize("name", sorted(AFFINES))
def test_fsl_gradients_match_mrtrix3(tmp_path, name):
    image, _, _ = write_fsl_dwi(tmp_path, name)
    check_against_mrconvert(tmp_path, image, image.with_name(f"{name}.bval"), image.with_name(f"{name}.bvec"))


@pytest.mark.mrtrix
@pytest.mark.skipif(shutil.which("mrconvert") is None, reason="needs MRtrix3's mrconvert")
@pytest.mark.parametrize("folder", ["phantom_cross_crop", "invivo_small"])
def test_fsl_gradients_of_the_reference_data_match_mrtrix3(tmp_path, data_dir, folder):
    d = data_dir / folder
    check_against_mrconvert(tmp_path, d / "dwi.nii.gz", d / "dwi.bval", d / "dwi.bvec")


def check_against_mrconvert(tmp_path, image, bval, bvec):
    table = tmp_path / "grad.b"
    subprocess.run(["mrconvert", "-quiet", "-force", str(image), "-fslgrad", str(bvec), str(bval),
                    "-export_grad_mrtrix", str(table), str(tmp_path / "tmp.mif")], check=True)
    dwi = load_dwi(image, bvals=bval, bvecs=bvec)
    bvals, bvecs = read_mrtrix_gradients(table)
    np.testing.assert_allclose(dwi.bvecs, bvecs, atol=1e-6)
    np.testing.assert_allclose(dwi.bvals, bvals, rtol=1e-5)


def test_nifti_sidecars_and_mrtrix_tables_give_the_same_dwi(tmp_path):
    image, bvals, bvecs = write_fsl_dwi(tmp_path, "RAS_oblique")
    dwi = load_dwi(image)  # RAS_oblique.bval / .bvec found beside the image
    table = tmp_path / "grad.b"
    np.savetxt(table, np.column_stack([dwi.bvecs, dwi.bvals]), header="x y z b, scanner frame")
    other = load_dwi(image, grad=table)
    np.testing.assert_allclose(other.bvecs, dwi.bvecs, atol=1e-12)
    np.testing.assert_array_equal(other.bvals, bvals)
    assert dwi.data.dtype == np.float32 and dwi.data.shape == (4, 5, 6, 8)
    np.testing.assert_allclose(dwi.bvecs_voxel[1:], bvecs[1:] * [-1, 1, 1], atol=1e-6)  # det > 0: FSL x flip


def write_nrrd(path, dwi, frame, space="left-posterior-superior", list_first=True, nominal=None, scale=1.0):
    """Write ``dwi`` as a Slicer DWI NRRD: gradients in the measurement ``frame`` (columns: its axes in
    NRRD space), b-values encoded as (|g| / max |g|)^2 x the nominal b-value; the longest gradient
    has length ``scale``."""
    nrrd = pytest.importorskip("nrrd")
    to_space = np.diag({"left-posterior-superior": [-1.0, -1, 1], "right-anterior-superior": [1.0, 1, 1]}[space])
    nominal = nominal or dwi.bvals.max()
    gradients = (dwi.bvecs @ to_space @ frame) * (scale * np.sqrt(dwi.bvals / nominal))[:, None]
    directions = (to_space @ dwi.affine[:3, :3]).T
    none = np.full((1, 3), np.nan)
    header = {"space": space, "kinds": ["list", "space", "space", "space"] if list_first else ["space"] * 3 + ["list"],
              "space directions": np.vstack([none, directions] if list_first else [directions, none]),
              "space origin": to_space @ dwi.affine[:3, 3], "measurement frame": frame.T,
              "modality": "DWMRI", "DWMRI_b-value": f"{nominal:.6f}"}
    header.update({f"DWMRI_gradient_{i:04d}": " ".join(f"{v:.17g}" for v in g) for i, g in enumerate(gradients)})
    nrrd.write(str(path), np.moveaxis(dwi.data, -1, 0) if list_first else dwi.data, header)


@pytest.mark.parametrize("suffix, space, list_first", [(".nhdr", "left-posterior-superior", True),
                                                       (".nrrd", "right-anterior-superior", False)])
def test_nrrd_with_measurement_frame_reads_back_the_same_dwi(tmp_path, data_dir, suffix, space, list_first):
    dwi = load_dwi(data_dir / "invivo_small" / "dwi.nii.gz")
    frame = Rotation.from_euler("zyx", [30, -20, 10], degrees=True).as_matrix()
    path = tmp_path / f"dwi{suffix}"
    write_nrrd(path, dwi, frame, space, list_first)
    back = load_dwi(path)
    np.testing.assert_array_equal(back.data, dwi.data)
    np.testing.assert_allclose(back.affine, dwi.affine, atol=1e-9)
    np.testing.assert_allclose(back.bvecs, dwi.bvecs, atol=1e-9)
    np.testing.assert_allclose(back.bvals, dwi.bvals, rtol=1e-9)


def test_nrrd_shells_are_encoded_by_the_gradient_norm(tmp_path, data_dir):
    dwi = load_dwi(data_dir / "invivo_small" / "dwi.nii.gz")
    dwi.bvals[2::2] = np.where(dwi.b0_mask[2::2], 0.0, 1500.0)
    path = tmp_path / "two_shells.nhdr"
    write_nrrd(path, dwi, np.eye(3))
    back = load_nrrd_dwi(path)
    np.testing.assert_allclose(back.shell_bvalues(), [1500, dwi.bvals[dwi.bvals > 2000].mean()], rtol=1e-9)


@pytest.mark.mrml
@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_nrrd_gradients_match_slicers_reader(tmp_path, data_dir, scale):
    """Slicer's reader scales b-values by (|g| / max |g|)^2: gradients need not be unit at the top shell."""
    slicer = pytest.importorskip("slicer")
    vtk = pytest.importorskip("vtk")
    from vtk.util.numpy_support import vtk_to_numpy

    dwi = load_dwi(data_dir / "invivo_small" / "dwi.nii.gz")
    path = tmp_path / "dwi.nhdr"
    write_nrrd(path, dwi, Rotation.from_euler("xyz", [25, 5, -40], degrees=True).as_matrix(), scale=scale)
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLDiffusionWeightedVolumeNode")
    storage = scene.AddNewNodeByClass("vtkMRMLNRRDStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    ijk_to_ras, frame = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    node.GetMeasurementFrameMatrix(frame)  # Slicer keeps it measurement -> RAS
    to_ras = np.array([[frame.GetElement(i, j) for j in range(3)] for i in range(3)])
    slicer_bvecs = vtk_to_numpy(node.GetDiffusionGradients()) @ to_ras.T
    ours = load_dwi(path)
    np.testing.assert_allclose(ours.affine, [[ijk_to_ras.GetElement(i, j) for j in range(4)] for i in range(4)], atol=1e-9)
    norms = np.linalg.norm(slicer_bvecs, axis=1, keepdims=True)
    np.testing.assert_allclose(ours.bvecs, np.divide(slicer_bvecs, norms, out=np.zeros_like(norms * slicer_bvecs),
                                                     where=norms > 0), atol=1e-9)
    np.testing.assert_allclose(ours.bvals, vtk_to_numpy(node.GetBValues()), rtol=1e-9)
    np.testing.assert_allclose(ours.bvals, dwi.bvals, rtol=1e-9)


def test_maps_are_written_atomically_with_a_description(tmp_path):
    path = tmp_path / "fa.nii.gz"
    save_nifti(np.full((2, 3, 4), 0.5), affine("RAS_oblique"), path, "difftract dti WLS FA")
    image = nib.load(path)
    assert image.header["descrip"].tobytes().rstrip(b"\0") == b"difftract dti WLS FA"
    np.testing.assert_allclose(image.affine, affine("RAS_oblique"), atol=1e-6)
    assert image.get_data_dtype() == np.float32 and sorted(p.name for p in tmp_path.iterdir()) == ["fa.nii.gz"]
    with pytest.raises(InputError, match="does not exist"):
        save_nifti(np.zeros((2, 2, 2)), np.eye(4), tmp_path / "missing" / "fa.nii.gz")


def test_masks_must_share_the_dwi_grid(tmp_path, data_dir):
    dwi = load_dwi(data_dir / "invivo_small" / "dwi.nii.gz")
    mask = load_mask(data_dir / "invivo_small" / "mask.nii.gz", dwi)
    assert mask.dtype == bool and mask.shape == (6, 8, 9) and mask.sum() == 151
    with pytest.raises(InputError, match="the mask's grid \\(shape \\(16, 16, 9\\)\\) differs from the DWI's"):
        load_mask(data_dir / "phantom_cross_crop" / "mask.nii.gz", dwi)


def test_bad_files_get_one_clear_message(tmp_path):
    image, _, _ = write_fsl_dwi(tmp_path, "LAS")
    bval, bvec = tmp_path / "LAS.bval", tmp_path / "LAS.bvec"
    short = tmp_path / "short.bvec"
    np.savetxt(short, np.loadtxt(bvec)[:, :7])
    cases = [
        (dict(path=image, bvals=bval, bvecs=short), f"{short} has 7 directions but {bval} has 8 b-values"),
        (dict(path=image, grad=tmp_path / "missing.b"), "missing.b: no such file"),
        (dict(path=image, bvals=bval), "FSL gradients need both a .bval and a .bvec file"),
        (dict(path=image, bvals=bval, bvecs=bvec, grad=bval), "either an MRtrix gradient table"),
        (dict(path=tmp_path / "dwi.mha"), "unknown DWI format"),
    ]
    table = tmp_path / "seven.b"
    np.savetxt(table, np.zeros((7, 4)))
    cases.append((dict(path=image, grad=table), "the DWI has 8 volumes but .*seven.b has 7 rows"))
    three_d = tmp_path / "t1.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), np.eye(4)), three_d)
    cases.append((dict(path=three_d, bvals=bval, bvecs=bvec), "the DWI must be 4-D, got a 3-D image"))
    lonely = tmp_path / "lonely.nii.gz"
    shutil.copy(image, lonely)
    cases.append((dict(path=lonely), "no gradient table; give --bvals and --bvecs \\(FSL\\) or --grad"))
    (tmp_path / "dwi.mha").write_text("")
    for kwargs, message in cases:
        path = kwargs.pop("path")
        with pytest.raises(InputError, match=message):
            load_dwi(path, **kwargs)


def test_an_nrrd_without_gradients_is_not_a_dwi(tmp_path):
    nrrd = pytest.importorskip("nrrd")
    path = tmp_path / "t1.nrrd"
    nrrd.write(str(path), np.zeros((3, 4, 5, 2), np.float32),
               {"space": "left-posterior-superior", "kinds": ["space", "space", "space", "list"]})
    with pytest.raises(InputError, match="not a DWI NRRD \\(no DWMRI_gradient_NNNN keys\\)"):
        load_dwi(path)


def test_nrrd_nex_repeats_a_gradient_over_the_next_volumes(tmp_path):
    nrrd = pytest.importorskip("nrrd")
    path = tmp_path / "nex.nrrd"
    header = {"space": "right-anterior-superior", "kinds": ["space", "space", "space", "list"],
              "space directions": np.vstack([np.eye(3) * 2, np.full((1, 3), np.nan)]), "DWMRI_b-value": "1000",
              "DWMRI_gradient_0000": "0 0 0", "DWMRI_NEX_0000": "3", "DWMRI_gradient_0003": "0 0 1",
              "DWMRI_gradient_0004": "0 0.6 0.8"}
    nrrd.write(str(path), np.ones((2, 2, 2, 5), np.float32), header)
    dwi = load_dwi(path)
    assert dwi.bvals.tolist() == [0, 0, 0, 1000, 1000] and dwi.b0_mask.sum() == 3
    np.testing.assert_allclose(dwi.bvecs[3:], [[0, 0, 1], [0, 0.6, 0.8]])


def test_an_nrrd_gradient_with_nan_is_refused(tmp_path):
    nrrd = pytest.importorskip("nrrd")
    path = tmp_path / "nan.nrrd"
    header = {"space": "right-anterior-superior", "kinds": ["space", "space", "space", "list"],
              "space directions": np.vstack([np.eye(3) * 2, np.full((1, 3), np.nan)]), "DWMRI_b-value": "1000",
              "DWMRI_gradient_0000": "0 0 0", "DWMRI_gradient_0001": "nan 0 1"}
    nrrd.write(str(path), np.ones((2, 2, 2, 2), np.float32), header)
    with pytest.raises(InputError, match="nan.nrrd: the DWMRI_gradient vectors hold NaN or Inf"):
        load_dwi(path)


def test_mrtrix_reads_a_niftis_axis_lengths_from_pixdim(tmp_path):
    """MRtrix3 takes a NIfTI's axis directions from the sform and their lengths from pixdim; on an
    oblique grid the float32 sform's column lengths differ from pixdim in the last bits, and the
    interpolation weights with them (``test_trilinear_interpolation_is_tcksamples_bit_for_bit``)."""
    from DiffTractographyLib.images import load_nifti, mrtrix_affine

    path = tmp_path / "oblique.nii.gz"
    save_nifti(np.zeros((3, 4, 5), np.float32), affine("RAS_oblique"), path)
    header = nib.load(path).header
    _, nibabel_affine = load_nifti(path)
    _, ours = load_nifti(path, mrtrix=True)
    lengths = np.linalg.norm(ours[:3, :3], axis=0)
    np.testing.assert_allclose(lengths, header["pixdim"][1:4], rtol=2e-16 * 4)
    np.testing.assert_allclose(ours[:3, :3] / lengths, nibabel_affine[:3, :3] / np.linalg.norm(nibabel_affine[:3, :3], axis=0),
                               rtol=0, atol=1e-15)
    np.testing.assert_array_equal(ours[:3, 3], nibabel_affine[:3, 3])
    assert 0 < np.abs(ours - nibabel_affine).max() < 1e-6  # float32's rounding, not a different grid
    header["pixdim"][1:4] = 0.0  # no voxel sizes: nibabel's affine
    np.testing.assert_array_equal(mrtrix_affine(header), nibabel_affine)


def test_mrtrix_takes_the_sforms_voxel_sizes_where_pixdim_disagrees(tmp_path):
    """pixdim 2.5 mm against a 2 mm sform: mrinfo warns and reports 2 x 2 x 2 mm (as nibabel does);
    a disagreement within 1e-5 keeps pixdim (2.00001 mm)."""
    from DiffTractographyLib.images import mrtrix_affine

    grid = np.diag([2.0, 2.0, 2.0, 1.0])
    header = nib.Nifti1Image(np.zeros((4, 5, 6), np.float32), grid).header
    header.set_sform(grid, 1)
    header["pixdim"][1:4] = [2.5, 2.0, 2.0]
    np.testing.assert_array_equal(mrtrix_affine(header), grid)
    header["pixdim"][1:4] = [2.00001, 2.0, 2.0]
    np.testing.assert_array_equal(np.diag(mrtrix_affine(header))[:3], np.float32([2.00001, 2.0, 2.0]))


def test_images_are_held_with_their_axes_running_closest_to_ras_as_mrtrix_holds_them():
    """A 4 x 5 x 6 grid of 2 mm turned 90 degrees about S (voxel i runs A, j runs L) and stored upside
    down (k runs I): MRtrix3 holds it (``mrinfo -size -transform``) as 5 x 4 x 6 with i R, j A, k S
    from (38, -46, 12); every voxel keeps its value and its RAS position."""
    from DiffTractographyLib.geometry import apply_affine, axial_permutation, realign_to_ras

    stored = np.array([[0.0, -2.0, 0.0, 46.0], [2.0, 0.0, 0.0, -46.0], [0.0, 0.0, -2.0, 22.0], [0, 0, 0, 1]])
    data = np.arange(4 * 5 * 6 * 2, dtype=np.float32).reshape(4, 5, 6, 2)
    assert axial_permutation(stored) == ((1, 0, 2), (False, True, True))
    held, affine = realign_to_ras(data, stored)
    np.testing.assert_array_equal(affine, [[2, 0, 0, 38], [0, 2, 0, -46], [0, 0, 2, 12], [0, 0, 0, 1]])
    assert held.shape == (5, 4, 6, 2)
    index = np.argwhere(np.ones(data.shape[:3], bool))
    moved = np.rint(apply_affine(np.linalg.inv(affine), apply_affine(stored, index))).astype(int)
    np.testing.assert_array_equal(held[tuple(moved.T)], data[tuple(index.T)])
