"""Regenerates this folder's templates and MRtrix3 tckmap references (needs MRtrix3 on PATH).

Run from this folder: python make_references.py
"""
import subprocess

import nibabel as nib
import numpy as np
from scipy.spatial.transform import Rotation

#: tractogram, and the voxel size (mm) of its fine grid: tckmap upsamples x2 there (x5 or x2 with -precise)
TRACTOGRAMS = {"invivo": ("../invivo_small/sdstream_ref.tck", 0.5),
               "phantom": ("../phantom_cross/sdstream_ref_subset.tck", 1.25)}
MODES = {"count": [], "precise": ["-precise"], "ends": ["-ends_only"]}


def templates(reference: str, fine_size: float):
    """The reference's own grid, a finer grid over it, and an oblique grid with a flipped axis and
    anisotropic voxels (0.36, 0.28 and 0.44 of the reference's)."""
    img = nib.load(reference)
    a, shape = img.affine, np.array(img.shape[:3])
    yield "native", tuple(shape), a
    spacing = np.linalg.norm(a[:3, :3], axis=0)
    fine = a.copy()
    fine[:3, :3] = a[:3, :3] / spacing * fine_size
    fine[:3, 3] = a[:3, :3] @ [-0.4, -0.4, -0.4] + a[:3, 3]
    yield "fine", tuple((shape * spacing / fine_size).astype(int)), fine
    oblique = np.eye(4)
    sizes = spacing * [0.36, 0.28, 0.44]
    oblique[:3, :3] = Rotation.from_euler("xyz", [17, -23, 31], degrees=True).as_matrix() @ np.diag(sizes * [1, -1, 1])
    n = (shape * spacing / sizes).astype(int) + 6
    oblique[:3, 3] = a[:3, :3] @ (shape / 2) + a[:3, 3] - oblique[:3, :3] @ (n / 2)
    yield "oblique", tuple(n), oblique


if __name__ == "__main__":
    for name, (tck, fine_size) in TRACTOGRAMS.items():
        reference = tck.rsplit("/", 1)[0] + "/mask.nii.gz"
        for grid, shape, affine in templates(reference, fine_size):
            template = f"{name}_{grid}_template.nii.gz"
            nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), affine), template)
            for mode, flags in MODES.items():
                subprocess.run(["tckmap", tck, f"{name}_{grid}_{mode}.nii.gz", "-template", template, "-force",
                                "-quiet", *flags], check=True)
