"""Which voxels of a mask or seed image count as inside: as the reference tool reads the image.
MRtrix3 reads any image into bool by rounding (finite values of magnitude >= 0.5); DIPY's
BinaryStoppingCriterion takes values > 0. NaN is outside, with a warning."""
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest

from DiffTractographyLib.seeding import seeds_from_mask
from DiffTractographyLib.stopping import BinaryMask, mask_voxels

VALUES = np.array([0.3, 0.49, 0.5, 0.7, -0.6, np.inf, 0.0], dtype=np.float32).reshape(1, 1, 7)


def test_mrtrix_rounds_and_dipy_takes_positive_values():
    assert mask_voxels(VALUES, "mrtrix").ravel().tolist() == [False, False, True, True, True, False, False]
    assert mask_voxels(VALUES, "dipy").ravel().tolist() == [True, True, True, True, False, True, False]
    assert BinaryMask(VALUES, np.eye(4)).array.ravel().tolist() == mask_voxels(VALUES, "mrtrix").ravel().tolist()


def test_nan_is_outside_and_said():
    values = np.array([1.0, np.nan, np.nan], dtype=np.float32).reshape(1, 1, 3)
    with pytest.warns(UserWarning, match="the seed image holds 2 NaN voxels; they count as outside"):
        seeds = seeds_from_mask(values, np.eye(4), placement="grid")
    np.testing.assert_array_equal(seeds, [[0.0, 0.0, 0.0]])


@pytest.mark.mrtrix
@pytest.mark.skipif(shutil.which("tckgen") is None, reason="needs MRtrix3's tckgen")
def test_tckgen_seeds_where_we_seed_in_a_fractional_seed_image(data_dir, tmp_path):
    folder = data_dir / "phantom_cross"
    mask = nib.load(folder / "mask.nii.gz")
    inside = np.argwhere(np.asarray(mask.dataobj) > 0)
    image = np.zeros(mask.shape, np.float32)
    image[tuple(inside.T)] = np.resize(VALUES.ravel()[:6], len(inside))
    nib.save(nib.Nifti1Image(image, mask.affine), tmp_path / "seeds.nii.gz")
    subprocess.run(["tckgen", str(folder / "fod_mrtrix_masked.nii.gz"), str(tmp_path / "t.tck"), "-algorithm",
                    "SD_Stream", "-seed_image", str(tmp_path / "seeds.nii.gz"), "-seeds", "2000", "-select", "0",
                    "-output_seeds", str(tmp_path / "seeds.txt"), "-nthreads", "1", "-quiet"], check=True)
    theirs = np.loadtxt(tmp_path / "seeds.txt", delimiter=",", skiprows=2, usecols=(2, 3, 4))
    voxels = np.rint(np.c_[theirs, np.ones(len(theirs))] @ np.linalg.inv(mask.affine).T)[:, :3].astype(int)
    ours = seeds_from_mask(image, mask.affine, placement="grid")
    ours_voxels = np.rint(np.c_[ours, np.ones(len(ours))] @ np.linalg.inv(mask.affine).T)[:, :3].astype(int)
    assert len(theirs) > 500
    assert set(map(tuple, voxels)) <= set(map(tuple, ours_voxels))
    assert sorted(set(image[tuple(ours_voxels.T)].tolist())) == pytest.approx([-0.6, 0.5, 0.7])
