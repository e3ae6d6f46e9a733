"""A small raw BIDS dataset of DWI phantoms, written in code: the test and benchmark input of
``difftract batch``, and a way to try it (``python -m DiffTractographyLib.batch.phantom_dataset DIR``).

Every subject is a crossing of two straight bundles and an arc (``phantoms.dwi_phantom``) on its
own oblique grid (rotation drawn from the subject's seed; every second grid x-flipped, a negative
determinant), 30 directions at b = 1000 s/mm^2 and two b = 0 volumes, Rician noise at SNR 30.
Odd-numbered subjects have a brain mask (``desc-brain_mask``); the last subject has two sessions.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

#: voxels of each phantom grid (2 x 2 x 2.5 mm voxels)
SHAPE = (18, 18, 14)
DIRECTIONS = 30
BVALUE = 1000.0


def _affine(rng: np.random.Generator, flip_x: bool) -> np.ndarray:
    """An oblique voxel -> RAS affine (2 x 2 x 2.5 mm), x-flipped when asked; the grid centred on 0."""
    from scipy.spatial.transform import Rotation

    r = Rotation.from_euler("xyz", rng.uniform(-25.0, 25.0, 3), degrees=True).as_matrix()
    if flip_x:
        r = r @ np.diag([-1.0, 1.0, 1.0])
    affine = np.eye(4)
    affine[:3, :3] = r @ np.diag([2.0, 2.0, 2.5])
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(SHAPE) - 1) / 2)
    return affine


def _gradients(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """b-values (G,) and unit RAS directions (G, 3): two b = 0 volumes, then ``DIRECTIONS``."""
    g = rng.normal(size=(DIRECTIONS, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return np.r_[0.0, 0.0, np.full(DIRECTIONS, BVALUE)], np.vstack([np.zeros((2, 3)), g])


def write_subject(folder: Path, stem: str, seed: int, flip_x: bool, with_mask: bool) -> Path:
    """Write ``stem``_dwi.nii.gz/.bval/.bvec (and ``stem``_desc-brain_mask.nii.gz) into ``folder``;
    returns the DWI's path."""
    import nibabel as nib

    from ..dwi_io import ras_to_fsl
    from ..images import save_nifti
    from ..phantoms import Bundle, dwi_phantom, fibre_fractions

    rng = np.random.default_rng(seed)
    affine = _affine(rng, flip_x)
    bvals, bvecs = _gradients(rng)
    unit = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    u, v, w = unit.T
    bundles = [Bundle.straight(-16 * u, 16 * u, 4.0), Bundle.straight(-16 * v, 16 * v, 4.0),
               Bundle.arc(np.zeros(3), u, w, 11.0, 3.0, 20, 160)]
    signal = dwi_phantom(SHAPE, affine, bundles, bvals, bvecs)
    sigma = signal[..., bvals == 0].mean() / 30.0  # SNR 30 on b = 0
    noisy = np.hypot(signal + rng.normal(0, sigma, signal.shape), rng.normal(0, sigma, signal.shape))
    folder.mkdir(parents=True, exist_ok=True)
    dwi_path = folder / f"{stem}_dwi.nii.gz"
    save_nifti(noisy, affine, dwi_path, "phantom DWI")
    stored = nib.load(dwi_path).affine  # NIfTI keeps float32: the b-vectors follow the stored grid
    np.savetxt(folder / f"{stem}_dwi.bval", bvals[None], fmt="%g")
    np.savetxt(folder / f"{stem}_dwi.bvec", ras_to_fsl(bvecs, stored).T, fmt="%.8f")
    if with_mask:
        members, _ = fibre_fractions(SHAPE, affine, [Bundle(b.centre_line, b.radius + 2.0) for b in bundles])
        save_nifti(members.any(-1), affine, folder / f"{stem}_desc-brain_mask.nii.gz", "brain mask")
    return dwi_path


def write_dataset(root, n_subjects: int = 6, seed: int = 0) -> list[tuple[str, str | None]]:
    """A raw BIDS dataset of ``n_subjects`` phantoms under ``root``; returns its (subject, session)
    pairs, session None for the session-less subjects. Subject k's phantom uses seed ``seed + k``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps(
        {"Name": "difftract phantoms", "BIDSVersion": "1.9.0", "DatasetType": "raw"}, indent=2) + "\n")
    units: list[tuple[str, str | None]] = []
    for k in range(1, n_subjects + 1):
        subject = f"{k:02d}"
        sessions = ["1", "2"] if k == n_subjects else [None]
        for j, session in enumerate(sessions):
            folder = root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "dwi"
            stem = f"sub-{subject}" + (f"_ses-{session}" if session else "")
            write_subject(folder, stem, seed + 100 * k + j, flip_x=k % 2 == 0, with_mask=k % 2 == 1)
            units.append((subject, session))
    (root / "participants.tsv").write_text(
        "participant_id\n" + "".join(f"sub-{k:02d}\n" for k in range(1, n_subjects + 1)))
    return units


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="folder to write the dataset into")
    parser.add_argument("--subjects", type=int, default=6, help="number of subjects (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phantoms (default 0)")
    args = parser.parse_args(argv)
    units = write_dataset(args.root, args.subjects, args.seed)
    print(f"{len(units)} DWI series of {args.subjects} subjects written to {args.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
