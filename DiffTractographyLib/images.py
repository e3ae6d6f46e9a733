"""Reading and writing NIfTI images with one-line errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError


def load_nifti(path, ndim: int | tuple[int, ...] | None = None, what: str = "image"):
    """(data float32 array in voxel order i, j, k[, c], affine (4, 4) voxel -> RAS) of a NIfTI file."""
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such {what} file")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for unreadable files
        raise InputError(f"{path}: cannot read the {what} as a NIfTI image ({exc})") from exc
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if allowed is not None and data.ndim not in allowed:
        shape = " x ".join(str(s) for s in data.shape)
        expected = " or ".join(f"{d}-D" for d in allowed)
        raise InputError(f"{path}: the {what} must be {expected}, got a {data.ndim}-D image ({shape})")
    return np.ascontiguousarray(data), np.asarray(img.affine, dtype=np.float64)
