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
from DiffTractographyLib.polydata import polydata_to_tractogram  # noqa: E402
from helpers import crossing_phantom  # noqa: E402


def test_sh_volume_node_tracks_as_difftract_track_on_the_nifti(scene, tmp_path):
    coeffs, mask, affine, centre, u, v = crossing_phantom()
    nib.save(nib.Nifti1Image(coeffs.numpy(), affine), tmp_path / "fod.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), tmp_path / "mask.nii.gz")
    stored = nib.load(tmp_path / "fod.nii.gz").affine  # NIfTI keeps float32: give the nodes the same grid
    fod = mrml.volume_node(scene, coeffs.numpy(), stored, "vtkMRMLVectorVolumeNode", "FOD")
    region = mrml.volume_node(scene, mask.astype(np.uint8), stored, "vtkMRMLLabelMapVolumeNode", "mask")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "seeds")
    for p in (centre, centre + 10 * u, centre + 8 * v):
        points.AddControlPoint(list(p))
    np.savetxt(tmp_path / "seeds.txt", seeding.seeds_in_spheres(mrml.control_points(points), 2.0, 12, rng_seed=4),
               fmt="%.17g")

    bundle = mrml.run(scene, fod, points, mask=region, seeds_per_point=12, seed_radius=2.0, rng_seed=4,
                      step_size=1.0, device="cpu")
    assert main(["track", "--fod", str(tmp_path / "fod.nii.gz"), "--seed-points", str(tmp_path / "seeds.txt"),
                 "--mask", str(tmp_path / "mask.nii.gz"), "--step", "1.0", "--rng-seed", "4", "--device", "cpu",
                 "--quiet", "--out", str(tmp_path / "cli.trx")]) == 0

    ours = polydata_to_tractogram(bundle.GetPolyData())
    theirs = load_tractogram(tmp_path / "cli.trx")
    assert len(ours) == len(theirs) >= 10
    np.testing.assert_array_equal(ours.seed_index.numpy(), theirs.seed_index.numpy())
    np.testing.assert_array_equal(ours.lengths.numpy(), theirs.lengths.numpy())
    np.testing.assert_array_equal(ours.points.numpy(), theirs.points.numpy())
