"""Reading and writing images (NIfTI; MRtrix3's .mif, .mif.gz, .mih) with one-line errors; writes are atomic."""
from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import numpy as np

from . import mif
from .errors import InputError
from .geometry import as_affine, dot3

#: the image files read: NIfTI and MRtrix3's format (``mif``); all but .mih are written too
SUFFIXES = (".nii", ".nii.gz", *mif.SUFFIXES)
WRITTEN = (".nii", ".nii.gz", ".mif", ".mif.gz")


def load_nifti(path, ndim: int | tuple[int, ...] | None = None, what: str = "image", mrtrix: bool = False):
    """(data float32 array in voxel order i, j, k[, c], affine (4, 4) voxel -> RAS) of a NIfTI file:
    nibabel's affine (DIPY's), or with ``mrtrix`` the one MRtrix3 reads (``mrtrix_affine``). An MRtrix3
    image (.mif, .mif.gz, .mih) is read too; its header holds one affine, in float64."""
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such {what} file")
    if mif.is_mif(path):
        data, header = mif.read_mif(path)
        return _checked_dims(np.asarray(data, dtype=np.float32), ndim, what, path), header.affine
    try:
        img = None
        if path.suffix.lower() == ".gz":  # one decompression call, which releases the GIL for its whole length
            raw = gzip.decompress(path.read_bytes())
            nifti2 = int.from_bytes(raw[:4], "little") == 540 or int.from_bytes(raw[:4], "big") == 540
            img = (nib.Nifti2Image if nifti2 else nib.Nifti1Image).from_bytes(raw)
        if img is None:
            img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for unreadable files
        raise InputError(f"{path}: cannot read the {what} as a NIfTI image ({exc})") from exc
    affine = mrtrix_affine(img.header) if mrtrix else np.asarray(img.affine, dtype=np.float64)
    return _checked_dims(data, ndim, what, path), affine


def _checked_dims(data: np.ndarray, ndim: int | tuple[int, ...] | None, what: str, path: Path) -> np.ndarray:
    """``data`` (a 4-D image of one volume as 3-D where 3-D is allowed), C-contiguous; InputError when
    its number of axes is not allowed."""
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if allowed is not None and 3 in allowed and data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if allowed is not None and data.ndim not in allowed:
        shape = " x ".join(str(s) for s in data.shape)
        expected = " or ".join(f"{d}-D" for d in allowed)
        raise InputError(f"{path}: the {what} must be {expected}, got a {data.ndim}-D image ({shape})")
    return np.ascontiguousarray(data)


def mrtrix_affine(header) -> np.ndarray:
    """The voxel -> RAS affine MRtrix3 reads from a NIfTI header: the axis directions of the sform (else
    the qform) normalised, times the voxel sizes in pixdim, and its translation. The sform's own column
    lengths differ from pixdim by float32 rounding (~1e-7 relative on oblique scans), enough to change
    the interpolation weights' last bits, so tracking that reproduces MRtrix3 needs this reading.
    Where pixdim disagrees with a sform's column lengths by more than 1e-5 (relative), MRtrix3 takes
    the lengths, as nibabel does; without valid voxel sizes in pixdim, nibabel's affine."""
    affine = np.asarray(header.get_best_affine(), dtype=np.float64)
    sizes = np.asarray(header["pixdim"][1:4], dtype=np.float64)
    if not (np.isfinite(sizes).all() and (sizes > 0).all()):
        return affine
    axes = affine[:3, :3]
    lengths = np.sqrt(dot3(axes.T, axes.T))  # each column's norm as Eigen's
    if header["sform_code"] > 0 and (np.abs(sizes / lengths - 1.0) > 1e-5).any():
        sizes = lengths  # "voxel spacings inconsistent between NIFTI s-form and header field pixdim"
    out = affine.copy()
    out[:3, :3] = axes / lengths * sizes
    return out


def zero_non_finite(data: np.ndarray, consequence: str) -> np.ndarray:
    """``data`` (X, Y, Z, C) as float32 with the voxels that hold NaN or Inf in any channel set to 0,
    and a warning saying how many and ``consequence``."""
    data = np.asarray(data, dtype=np.float32)
    bad = ~np.isfinite(data).all(axis=3)
    if bad.any():
        warnings.warn(f"{int(bad.sum())} voxels hold NaN or Inf values; they are set to 0 {consequence}",
                      stacklevel=3)
        data = np.where(bad[..., None], np.float32(0), data)
    return data


def nifti_grid(path, what: str = "template", mrtrix: bool = False) -> tuple[tuple[int, int, int], np.ndarray]:
    """(shape of the first three axes, affine voxel -> RAS) of a NIfTI file, from its header alone:
    nibabel's affine, or with ``mrtrix`` the one MRtrix3 reads (``mrtrix_affine``); or of an MRtrix3 image."""
    import nibabel as nib

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such {what} file")
    if mif.is_mif(path):
        header = mif.read_header(path)
        return header.dim[:3], header.affine
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for unreadable files
        raise InputError(f"{path}: cannot read the {what} as a NIfTI image ({exc})") from exc
    if len(img.shape) < 3:
        raise InputError(f"{path}: the {what} must have three spatial axes, got shape {img.shape}")
    return tuple(int(s) for s in img.shape[:3]), mrtrix_affine(img.header) if mrtrix else as_affine(img.affine)


def nifti_bytes(array, affine, description: str = "", compress: bool = False) -> bytes:
    """A float32 NIfTI (X, Y, Z[, C]) file's bytes, gzip-compressed with ``compress`` (for .nii.gz);
    ``description`` goes to the header (truncated to NIfTI's 80 characters)."""
    import nibabel as nib

    image = nib.Nifti1Image(np.asarray(array, dtype=np.float32), as_affine(affine))
    image.header.set_sform(image.affine, code=1)
    image.header.set_qform(image.affine, code=1)
    image.header["descrip"] = description.encode()[:79]
    payload = image.to_bytes()
    return gzip.compress(payload, compresslevel=6) if compress else payload


def save_nifti(array, affine, path, description: str = "") -> None:
    """Write a float32 NIfTI (X, Y, Z[, C]) atomically (``nifti_bytes``; .nii.gz compressed), or an
    MRtrix3 image when ``path`` ends in .mif or .mif.gz (``mif.mif_bytes``)."""
    from .files import atomic_path

    if not str(path).lower().endswith(WRITTEN):
        raise InputError(f"{path}: images are written as {', '.join(WRITTEN)}")
    compress = str(path).lower().endswith(".gz")
    writer = mif.mif_bytes if str(path).lower().endswith((".mif", ".mif.gz")) else nifti_bytes
    payload = writer(array, affine, description, compress=compress)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(payload)
