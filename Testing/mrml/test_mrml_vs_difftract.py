"""End to end: tracking through Slicer nodes gives the streamlines ``difftract track`` writes for the
equivalent NIfTI files, in RAS mm."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("slicer")
pytestmark = pytest.mark.mrml

from DiffTractographyLib import load_tractogram, mrml, seeding  # noqa: E402
from DiffTractographyLib.cli import main  # noqa: E402
from DiffTractographyLib.config import reference_rule  # noqa: E402
from DiffTractographyLib.images import load_nifti  # noqa: E402
from DiffTractographyLib.polydata import polydata_to_tractogram  # noqa: E402
from helpers import crossing_phantom  # noqa: E402


@pytest.mark.parametrize("algorithm", ["sdstream", "detmax"])
def test_sh_volume_node_tracks_as_difftract_track_on_the_nifti(scene, tmp_path, algorithm):
    coeffs, mask, affine, centre, u, v = crossing_phantom()
    nib.save(nib.Nifti1Image(coeffs.numpy(), affine), tmp_path / "fod.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), tmp_path / "mask.nii.gz")
    # the grid difftract track reads from the NIfTI (float32; MRtrix3's reading for sdstream)
    stored = load_nifti(tmp_path / "fod.nii.gz", mrtrix=reference_rule(algorithm) == "mrtrix")[1]
    fod = mrml.volume_node(scene, coeffs.numpy(), stored, "vtkMRMLVectorVolumeNode", "FOD")
    region = mrml.volume_node(scene, mask.astype(np.uint8), stored, "vtkMRMLLabelMapVolumeNode", "mask")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seeds")
    for p in (centre, centre + 10 * u, centre + 8 * v):
        points.AddControlPoint(list(p))
    np.savetxt(tmp_path / "seeds.txt", seeding.seeds_in_spheres(mrml.control_points(points), 2.0, 12, rng_seed=4),
               fmt="%.17g")

    bundle = mrml.run(scene, fod, points, mask=region, seeds_per_point=12, seed_radius=2.0, rng_seed=4,
                      step_size=1.0, algorithm=algorithm, device="cpu")
    assert main(["track", "--fod", str(tmp_path / "fod.nii.gz"), "--algorithm", algorithm,
                 "--seed-points", str(tmp_path / "seeds.txt"),
                 "--mask", str(tmp_path / "mask.nii.gz"), "--step", "1.0", "--rng-seed", "4", "--device", "cpu",
                 "--quiet", "--out", str(tmp_path / "cli.trx")]) == 0

    ours = polydata_to_tractogram(bundle.GetPolyData())
    theirs = load_tractogram(tmp_path / "cli.trx")
    assert len(ours) == len(theirs) >= 10
    np.testing.assert_array_equal(ours.seed_index.numpy(), theirs.seed_index.numpy())
    np.testing.assert_array_equal(ours.lengths.numpy(), theirs.lengths.numpy())
    np.testing.assert_array_equal(ours.points.numpy(), theirs.points.numpy())


def test_oblique_dwi_node_with_a_measurement_frame_tracks_as_difftract_track_on_the_nifti(scene, build, rotate,
                                                                                          tmp_path):
    from DiffTractographyLib.phantoms import Bundle, dwi_phantom
    from helpers import oblique_affine

    shape, affine = (20, 20, 14), oblique_affine()
    centre = affine[:3, :3] @ ((np.array(shape) - 1) / 2) + affine[:3, 3]
    u, v = affine[:3, 0] / 2.0, affine[:3, 1] / 2.0
    bvecs = np.random.default_rng(8).normal(size=(31, 3))
    bvecs /= np.linalg.norm(bvecs, axis=1, keepdims=True)
    bvecs[0] = 0.0
    bvals = np.r_[0.0, np.full(30, 1000.0)]
    data = dwi_phantom(shape, affine, [Bundle.straight(centre - 18 * u, centre + 18 * u, 5.0),
                                       Bundle.arc(centre, u, v, 12.0, 4.0, 0, 180)], bvals, bvecs)
    files = build.fsl(tmp_path, data, affine, bvals, bvecs)
    stored = nib.load(files[0]).affine  # NIfTI keeps float32: give the node the same grid
    mf = rotate([1, -2, 2], 40.0)
    dwi = build.dwi(scene, data, stored, bvals, bvecs @ mf, mf)  # gradients in the measurement frame
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seeds")
    for p in (centre + 6 * u, centre + 12 * v):
        points.AddControlPoint(list(p))
    np.savetxt(tmp_path / "seeds.txt", seeding.seeds_in_spheres(mrml.control_points(points), 1.5, 10), fmt="%.17g")

    bundle = mrml.run(scene, dwi, points, seeds_per_point=10, seed_radius=1.5, step_size=0.5, device="cpu")
    assert main(["track", "--dwi", str(files[0]), "--bvals", str(files[1]), "--bvecs", str(files[2]),
                 "--algorithm", "tensordet", "--seed-points", str(tmp_path / "seeds.txt"), "--step", "0.5",
                 "--device", "cpu", "--quiet", "--out", str(tmp_path / "cli.trx")]) == 0

    ours = polydata_to_tractogram(bundle.GetPolyData())
    theirs = load_tractogram(tmp_path / "cli.trx")
    assert len(ours) == len(theirs) >= 10
    np.testing.assert_array_equal(ours.seed_index.numpy(), theirs.seed_index.numpy())
    np.testing.assert_array_equal(ours.lengths.numpy(), theirs.lengths.numpy())
    np.testing.assert_allclose(ours.points.numpy(), theirs.points.numpy(), rtol=0, atol=1e-4)
