"""DWI files in: NIfTI + FSL .bval/.bvec or MRtrix .b tables, MRtrix3 images (.mif: the header's
``dw_scheme``), Slicer's DWI NRRD; masks. Every reader returns a ``DWI`` whose b-vectors are in the
RAS (world) frame:

- FSL ``.bvec`` rows are directions along the stored voxel axes, x negated when the affine's
  determinant is positive (FSL's radiological convention). RAS = R @ (x-flipped) bvec with R the unit
  voxel axes in RAS (``geometry.axes_rotation``), as MRtrix3's ``-fslgrad`` reads them.
- MRtrix ``.b`` tables (rows ``x y z b``) and a .mif's ``dw_scheme`` are already in the scanner (RAS)
  frame; a table given on the command line takes precedence over the header's, as in MRtrix3.
- NRRD ``DWMRI_gradient_NNNN`` vectors are in the measurement frame: space = MF @ g, then the NRRD
  space (LPS, RAS or LAS) is turned to RAS; b = ``DWMRI_b-value`` x (|g| / max |g|)^2 (Slicer's reader).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .dwi import B0_THRESHOLD, DWI
from .errors import InputError
from .files import load_table
from .geometry import axes_rotation
from .images import load_nifti
from .mif import SUFFIXES as MIF_SUFFIXES
from .mif import read_header

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr")
_SPACE_TO_RAS = {
    "left-posterior-superior": (-1.0, -1.0, 1.0), "lps": (-1.0, -1.0, 1.0),
    "right-anterior-superior": (1.0, 1.0, 1.0), "ras": (1.0, 1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0), "las": (-1.0, 1.0, 1.0),
}


def load_dwi(path, *, bvals=None, bvecs=None, grad=None, b0_threshold: float = B0_THRESHOLD,
             mrtrix: bool = False) -> DWI:
    """Read a DWI series: NIfTI (.nii/.nii.gz) or MRtrix3 image (.mif/.mif.gz/.mih) with FSL ``bvals`` +
    ``bvecs`` files or an MRtrix ``grad`` (.b) table, or a Slicer DWI NRRD (.nrrd/.nhdr, gradients in its
    header). Without a table, a NIfTI's sidecars ``<stem>.bval`` / ``<stem>.bvec`` (dcm2niix's naming)
    are used when present, and a .mif's ``dw_scheme``. ``mrtrix``: a NIfTI's affine as MRtrix3 reads it
    (``images.mrtrix_affine``)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith(NRRD_SUFFIXES):
        if bvals is not None or bvecs is not None or grad is not None:
            raise InputError(f"{path}: a DWI NRRD carries its own gradient table; do not give --bvals/--bvecs/--grad")
        return load_nrrd_dwi(path, b0_threshold=b0_threshold)
    if not name.endswith(NIFTI_SUFFIXES + MIF_SUFFIXES):
        raise InputError(f"{path}: unknown DWI format; use NIfTI (.nii, .nii.gz), MRtrix3 (.mif, .mif.gz, .mih) "
                         "or NRRD (.nrrd, .nhdr)")
    data, affine = load_nifti(path, ndim=4, what="DWI", mrtrix=mrtrix)
    header = read_header(path) if name.endswith(MIF_SUFFIXES) else None
    if header is not None and grad is None and bvals is None and bvecs is None:
        table = _header_scheme(path, header)
        _check_count(data, len(table), f"the dw_scheme of {path} has {len(table)} rows")
        values, vectors = table[:, 3].copy(), table[:, :3].copy()
    elif grad is not None:
        if bvals is not None or bvecs is not None:
            raise InputError("give either an MRtrix gradient table (--grad) or FSL --bvals/--bvecs, not both")
        values, vectors = read_mrtrix_gradients(grad)
        _check_count(data, len(values), f"{grad} has {len(values)} rows")
    else:
        if bvals is None and bvecs is None:
            bvals, bvecs = _sidecars(path)
        if bvals is None or bvecs is None:
            raise InputError("FSL gradients need both a .bval and a .bvec file")
        # FSL b-vectors follow the stored axes: a .mif's file order, a NIfTI's own axes
        frame = affine if header is None else header.stored_affine()
        values, vectors = read_fsl_gradients(bvals, bvecs, frame)
        _check_count(data, len(values), f"{bvals} and {bvecs} have {len(values)} entries")
    return DWI(data, affine, values, vectors, b0_threshold=b0_threshold)


def _header_scheme(path: Path, header) -> np.ndarray:
    """The ``dw_scheme`` (G, 4) of the .mif DWI ``path`` (its ``header``); InputError when it has none."""
    try:
        table = header.dw_scheme()
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
    if table is None:
        raise InputError(f"{path}: the header has no dw_scheme; give its gradient table (--grad, or --bvals and "
                         "--bvecs)")
    return table


def read_fsl_gradients(bvals_path, bvecs_path, affine) -> tuple[np.ndarray, np.ndarray]:
    """FSL ``.bval`` (one row) and ``.bvec`` (three rows) -> b-values (G,) and RAS directions (G, 3)."""
    values = _read_table(bvals_path)
    if 1 not in values.shape:
        raise InputError(f"{bvals_path}: a .bval file holds one row of b-values, got a {values.shape[0]}x{values.shape[1]} table")
    values = values.ravel()
    vectors = _read_table(bvecs_path)
    if vectors.shape[0] != 3:
        if vectors.shape[1] != 3:
            raise InputError(f"{bvecs_path}: a .bvec file holds three rows (x, y, z), got a "
                             f"{vectors.shape[0]}x{vectors.shape[1]} table")
        vectors = vectors.T
    if vectors.shape[1] != len(values):
        raise InputError(f"{bvecs_path} has {vectors.shape[1]} directions but {bvals_path} has {len(values)} b-values")
    return values, fsl_to_ras(vectors.T, affine)


def fsl_to_ras(bvecs: np.ndarray, affine) -> np.ndarray:
    """FSL b-vectors (G, 3) of an image with this ``affine`` -> RAS directions (G, 3)."""
    r = axes_rotation(affine)
    flip = np.array([-1.0, 1.0, 1.0]) if np.linalg.det(r) > 0 else np.ones(3)
    return (np.asarray(bvecs, dtype=np.float64) * flip) @ r.T


def ras_to_fsl(bvecs: np.ndarray, affine) -> np.ndarray:
    """RAS directions (G, 3) -> FSL b-vectors of an image with this ``affine`` (inverse of ``fsl_to_ras``)."""
    r = axes_rotation(affine)
    flip = np.array([-1.0, 1.0, 1.0]) if np.linalg.det(r) > 0 else np.ones(3)
    return (np.asarray(bvecs, dtype=np.float64) @ r) * flip


def read_mrtrix_gradients(path) -> tuple[np.ndarray, np.ndarray]:
    """MRtrix ``.b`` table (rows ``x y z b``, scanner = RAS frame) -> b-values (G,), directions (G, 3)."""
    table = _read_table(path)
    if table.shape[1] != 4:
        raise InputError(f"{path}: an MRtrix gradient table has four columns (x y z b), got {table.shape[1]}")
    return table[:, 3].copy(), table[:, :3].copy()


def load_nrrd_dwi(path, *, b0_threshold: float = B0_THRESHOLD) -> DWI:
    """Read a Slicer DWI NRRD (.nrrd or .nhdr + data file); see the module notes for the frames."""
    try:
        import nrrd
    except ImportError as exc:
        raise InputError("reading NRRD files needs the pynrrd package: pip install pynrrd "
                         "(or the 'nrrd' extra: pip install difftractography[nrrd])") from exc
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    try:
        data, header = nrrd.read(str(path))
    except (nrrd.NRRDError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable NRRD file ({exc})") from exc
    if data.ndim != 4:
        raise InputError(f"{path}: a DWI must be a 4-D image (x, y, z, volumes); got {data.ndim}-D data of shape {data.shape}")
    kinds = [str(k).lower() for k in header.get("kinds", ["space"] * 3 + ["list"])]
    listed = [i for i, k in enumerate(kinds) if k not in ("space", "domain")]
    if len(listed) != 1:
        raise InputError(f"{path}: expected three spatial axes and one list of volumes, got kinds {kinds}")
    axis = listed[0]
    vectors = _nrrd_gradients(header, data.shape[axis], path)
    try:
        nominal = float(header["DWMRI_b-value"])
    except (KeyError, ValueError) as exc:
        raise InputError(f"{path}: missing or malformed DWMRI_b-value") from exc
    space = str(header.get("space", "")).lower()
    if space not in _SPACE_TO_RAS or "space directions" not in header:
        raise InputError(f"{path}: the NRRD needs 'space directions' and a space of left-posterior-superior, "
                         f"right-anterior-superior or left-anterior-superior (got {space or 'none'!r})")
    to_ras = np.diag(_SPACE_TO_RAS[space])
    directions = np.asarray(header["space directions"], dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = to_ras @ directions[[i for i in range(4) if i != axis]].T
    affine[:3, 3] = to_ras @ np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64)
    frame = np.asarray(header.get("measurement frame", np.eye(3)), dtype=np.float64).T  # columns: its axes in space
    if not np.isfinite(vectors).all():
        raise InputError(f"{path}: the DWMRI_gradient vectors hold NaN or Inf")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    longest = float(norms.max())
    values = nominal * (norms[:, 0] / longest) ** 2 if longest > 0 else np.zeros(len(vectors))
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    ras = unit @ frame.T @ to_ras
    signal = np.moveaxis(data, axis, -1).astype(np.float32)
    return DWI(signal, affine, values, ras, b0_threshold=b0_threshold)


def _nrrd_gradients(header: dict, n: int, path: Path) -> np.ndarray:
    """(n, 3) ``DWMRI_gradient_NNNN`` vectors, expanding ``DWMRI_NEX_NNNN`` repetitions."""
    vectors: list[np.ndarray | None] = [None] * n
    for index, value in _numbered(header, "DWMRI_gradient_", n, path):
        try:
            vectors[index] = np.array(str(value).split(), dtype=np.float64).reshape(3)
        except ValueError as exc:
            raise InputError(f"{path}: DWMRI_gradient_{index:04d} is not three numbers: {value!r}") from exc
    for index, value in _numbered(header, "DWMRI_NEX_", n, path):
        for repeat in range(index + 1, min(index + int(value), n)):
            vectors[repeat] = vectors[index]
    missing = [i for i, v in enumerate(vectors) if v is None]
    if len(missing) == n:
        raise InputError(f"{path}: not a DWI NRRD (no DWMRI_gradient_NNNN keys)")
    if missing:
        raise InputError(f"{path}: the image has {n} volumes but no DWMRI_gradient for volumes {missing[:8]}")
    return np.stack(vectors)


def _numbered(header: dict, prefix: str, n: int, path: Path) -> list[tuple[int, str]]:
    """(index, value) of the header keys ``prefix`` + digits; indices must address one of ``n`` volumes."""
    found = [(int(key[len(prefix):]), value) for key, value in header.items()
             if key.startswith(prefix) and key[len(prefix):].isdigit()]
    beyond = [i for i, _ in found if i >= n]
    if beyond:
        raise InputError(f"{path}: {prefix}{beyond[0]:04d} is beyond the image's {n} volumes")
    return found


def load_mask(path, dwi: DWI, mrtrix: bool = False) -> np.ndarray:
    """(X, Y, Z) bool mask (values > 0) on the DWI's grid; any other grid is an ``InputError``."""
    data, affine = load_nifti(path, ndim=3, what="mask", mrtrix=mrtrix)
    if data.shape != dwi.data.shape[:3] or not np.allclose(affine, dwi.affine, atol=1e-3):
        raise InputError(f"{path}: the mask's grid (shape {data.shape}) differs from the DWI's "
                         f"(shape {dwi.data.shape[:3]}) or its affine does not match")
    return data > 0


def _read_table(path) -> np.ndarray:
    if not Path(path).exists():
        raise InputError(f"{path}: no such file")
    try:
        table = load_table(path, ndmin=2, comments="#", dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"{path}: not a table of numbers ({exc})") from exc
    if table.size == 0:
        raise InputError(f"{path}: the file is empty")
    return table


def _sidecars(path: Path) -> tuple[Path, Path]:
    stem = path.name[: -len(".nii.gz")] if path.name.lower().endswith(".nii.gz") else path.stem
    bval, bvec = path.with_name(stem + ".bval"), path.with_name(stem + ".bvec")
    if not (bval.exists() and bvec.exists()):
        raise InputError(f"{path}: no gradient table; give --bvals and --bvecs (FSL) or --grad (MRtrix .b)")
    return bval, bvec


def _check_count(data: np.ndarray, n: int, what: str) -> None:
    if data.shape[3] != n:
        raise InputError(f"the DWI has {data.shape[3]} volumes but {what}")
