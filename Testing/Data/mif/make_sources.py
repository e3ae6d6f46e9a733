"""Writes the NIfTI sources of the MRtrix3 image fixtures (then run make_fixtures.sh): an
asymmetric 3 x 4 x 5 x 2 image (value i + 10 j + 100 k + 1000 t) on an oblique grid with x flipped, a
mask on it, and a 7-volume DWI (b=0 and six directions) with FSL gradients."""
import nibabel as nib
import numpy as np

angle = np.deg2rad(20)
rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
affine = np.eye(4)
affine[:3, :3] = rotation @ np.diag([-1.0, 1.0, 1.0]) @ np.diag([2.0, 3.0, 4.0])
affine[:3, 3] = [50.0, -20.0, -30.0]
i, j, k, t = np.indices((3, 4, 5, 2))
values = (i + 10 * j + 100 * k + 1000 * t).astype(np.float32)
nib.save(nib.Nifti1Image(values, affine), "asym.nii")
nib.save(nib.Nifti1Image(((i + j + k) % 3 == 0)[..., 0].astype(np.uint8), affine), "mask.nii")
rng = np.random.default_rng(0)
nib.save(nib.Nifti1Image(rng.uniform(100, 1000, (3, 4, 5, 7)).astype(np.float32), affine), "dwi.nii.gz")
vectors = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0], [0, 0.6, 0.8], [0.8, 0, 0.6]])
np.savetxt("dwi.bvec", vectors.T, fmt="%.6f")
np.savetxt("dwi.bval", [[0, 1000, 1000, 1000, 2000, 2000, 2000]], fmt="%d")
