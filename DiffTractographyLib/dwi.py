"""The in-memory diffusion-weighted series that every reader returns, and its gradient table:
validation, b=0 detection, shells, shell selection."""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .geometry import as_affine, axes_rotation
from .images import zero_non_finite

#: b-values (s/mm^2) at or below this are b=0 volumes. DIPY's ``gradient_table`` default; MRtrix3's
#: ``BZeroThreshold`` is 10, which scanners that write b=5 for their b=0 volumes also pass.
B0_THRESHOLD = 50.0
#: Largest gap (s/mm^2) between sorted b-values of one shell (MRtrix3's ``BValueEpsilon``).
SHELL_EPSILON = 80.0
#: |log |g|^2| above which non-unit b-vectors scale their b-value (MRtrix3's automatic rule).
_NORM_TOLERANCE = 0.01


@dataclass
class DWI:
    """A DWI series.

    data: (X, Y, Z, G) float32 signal, voxel index order i, j, k.
    affine: (4, 4) voxel index -> RAS mm.
    bvals: (G,) s/mm^2.
    bvecs: (G, 3) unit gradient directions in the **RAS (world) frame**; rows of b=0 volumes may be 0.
    b0_threshold: b-values at or below it are b=0 volumes (s/mm^2).

    Construction validates and never modifies the given arrays: b-vectors are normalised (their
    b-values scaled by |g|^2 when the norms differ from 1 by more than 1%, as MRtrix3 and Slicer
    encode shells, with a warning); voxels holding NaN or Inf are set to 0 with a warning.
    Bad input raises ``InputError``: non-4-D data, count mismatch, zero b-vectors on
    diffusion-weighted volumes, no b=0 volume.
    """

    data: np.ndarray
    affine: np.ndarray
    bvals: np.ndarray
    bvecs: np.ndarray
    b0_threshold: float = B0_THRESHOLD

    def __post_init__(self):
        data = np.asarray(self.data)
        if data.ndim != 4:
            raise InputError(f"a DWI must be a 4-D image (x, y, z, volumes); got {data.ndim}-D data of shape {data.shape}")
        self.affine = as_affine(self.affine)
        bvals = np.asarray(self.bvals, dtype=np.float64).ravel()
        bvecs = np.asarray(self.bvecs, dtype=np.float64)
        n = data.shape[3]
        if bvecs.ndim != 2 or bvecs.shape[1] != 3 or len(bvals) != n or len(bvecs) != n:
            raise InputError(f"the DWI has {n} volumes but the gradient table has {len(bvals)} b-values and "
                             f"{len(bvecs) if bvecs.ndim == 2 else bvecs.size} directions of shape {bvecs.shape}")
        if not (np.all(np.isfinite(bvals)) and np.all(np.isfinite(bvecs))) or np.any(bvals < 0):
            raise InputError("the gradient table holds negative, NaN or infinite values")
        self.bvals, self.bvecs = normalise_gradients(bvals, bvecs, self.b0_threshold)
        if not self.b0_mask.any():
            raise InputError(f"the DWI has no b=0 volume (b <= {self.b0_threshold:g} s/mm^2); the smallest "
                             f"b-value is {self.bvals.min():g}")
        self.data = zero_non_finite(data, "and left out of fits")

    @property
    def shape(self) -> tuple[int, int, int]:
        """The grid's voxel counts (X, Y, Z)."""
        return tuple(self.data.shape[:3])

    @property
    def bvecs_voxel(self) -> np.ndarray:
        """Gradient directions along the voxel axes (the frame DIPY fits in)."""
        return self.bvecs @ axes_rotation(self.affine)

    @property
    def b0_mask(self) -> np.ndarray:
        """(G,) bool: the b=0 volumes."""
        return self.bvals <= self.b0_threshold

    @property
    def shells(self) -> list[np.ndarray]:
        """Indices of the diffusion-weighted volumes of each shell, by increasing b-value."""
        return shells(self.bvals, self.b0_threshold)

    def check_diffusion_weighted(self) -> None:
        """InputError when no volume has b > ``b0_threshold`` (nothing to fit a model to)."""
        if not self.shells:
            raise InputError("the DWI has no diffusion-weighted volume")

    def shell_bvalues(self) -> list[float]:
        """Mean b-value of each shell (s/mm^2), by increasing b-value."""
        return [float(self.bvals[s].mean()) for s in self.shells]

    def select_shell(self, bvalue: float | None = None) -> "DWI":
        """A single-shell DWI: the b=0 volumes and the shell nearest ``bvalue`` (within
        ``SHELL_EPSILON``). ``None`` keeps the largest b-value shell, with a warning when there are
        several (MRtrix3's ``dwi2fod csd`` choice)."""
        self.check_diffusion_weighted()
        means = self.shell_bvalues()
        listed = ", ".join(f"{b:.0f}" for b in means)
        if bvalue is None:
            pick = len(means) - 1
            if len(means) > 1:
                warnings.warn(f"the DWI has shells at b = {listed} s/mm^2; using the largest, b = {means[pick]:.0f} "
                              f"(choose one with --shell)", stacklevel=2)
        else:
            pick = int(np.argmin([abs(b - bvalue) for b in means]))
            if abs(means[pick] - bvalue) > SHELL_EPSILON:
                raise InputError(f"no shell at b = {bvalue:g} s/mm^2; the DWI has shells at b = {listed}")
        keep = np.sort(np.concatenate([np.flatnonzero(self.b0_mask), self.shells[pick]]))
        if len(keep) == len(self.bvals):
            return self
        return dataclasses.replace(self, data=self.data[..., keep], bvals=self.bvals[keep], bvecs=self.bvecs[keep])


def normalise_gradients(bvals: np.ndarray, bvecs: np.ndarray, b0_threshold: float = B0_THRESHOLD
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Unit b-vectors and matching b-values (new arrays).

    Non-zero vectors are normalised; when any squared norm differs from 1 by more than 1% the
    b-values are scaled by |g|^2 (how scanners and Slicer's NRRD encode several shells with one
    nominal b-value) and a warning says so. A zero vector on a volume with b > ``b0_threshold`` is an
    ``InputError``."""
    norms2 = (bvecs ** 2).sum(1)
    zero = norms2 == 0
    bad = np.flatnonzero(zero & (bvals > b0_threshold))
    if len(bad):
        raise InputError(f"volumes {_listing(bad)} have b > {b0_threshold:g} s/mm^2 but a zero gradient direction")
    unit = np.where(zero[:, None], 0.0, bvecs / np.sqrt(np.where(zero, 1.0, norms2))[:, None])
    log_scale = np.abs(np.log(np.where(zero, 1.0, norms2)))
    if log_scale.max() > _NORM_TOLERANCE:
        bvals = bvals * np.where(zero, 1.0, norms2)
        off = np.flatnonzero(log_scale > _NORM_TOLERANCE)
        warnings.warn(f"the b-vectors of volumes {_listing(off)} are not unit length (|g| from "
                      f"{np.sqrt(norms2[off]).min():.3g} to {np.sqrt(norms2[off]).max():.3g}); they were normalised and "
                      f"their b-values scaled by |g|^2", stacklevel=3)
    return bvals.copy(), unit


def b0_mask(bvals: np.ndarray, b0_threshold: float = B0_THRESHOLD) -> np.ndarray:
    """(G,) bool: volumes with b <= ``b0_threshold``."""
    return np.asarray(bvals) <= b0_threshold


def design_matrix(bvals, bvecs, dtype=np.float64) -> np.ndarray:
    """(G, 7) matrix X with log S = X @ [Dxx, Dyy, Dzz, Dxy, Dxz, Dyz, log S0]; b in s/mm^2, ``bvecs``
    (G, 3) unit, computed in ``dtype``."""
    b = np.asarray(bvals, dtype=dtype)
    x, y, z = np.asarray(bvecs, dtype=dtype).T
    columns = [x * x, y * y, z * z, 2 * x * y, 2 * x * z, 2 * y * z]
    return np.stack([-b * c for c in columns] + [np.ones_like(b)], axis=-1)


def tensor_solver(bvals, bvecs) -> np.ndarray:
    """(7, G) float64 pseudo-inverse of MRtrix3's b-matrix (``grad2bmatrix``: -log S = B @ D), the
    OLS tensor fit of Tensor_Det; InputError without both b=0 and diffusion-weighted volumes."""
    b0 = b0_mask(np.asarray(bvals))
    if not (b0.any() and (~b0).any()):
        raise InputError("tensor tracking needs b=0 volumes and diffusion-weighted volumes")
    return np.linalg.pinv(-design_matrix(bvals, bvecs))


def shells(bvals: np.ndarray, b0_threshold: float = B0_THRESHOLD, epsilon: float = SHELL_EPSILON
           ) -> list[np.ndarray]:
    """Group the diffusion-weighted volumes into shells: sorted b-values split where consecutive
    values differ by more than ``epsilon`` s/mm^2. Returns index arrays by increasing b-value."""
    bvals = np.asarray(bvals, dtype=np.float64)
    dw = np.flatnonzero(bvals > b0_threshold)
    order = dw[np.argsort(bvals[dw], kind="stable")]
    if not len(order):
        return []
    breaks = np.flatnonzero(np.diff(bvals[order]) > epsilon) + 1
    return [np.sort(group) for group in np.split(order, breaks)]


def _listing(indices: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:limit])
    return shown + (f" (and {len(indices) - limit} more)" if len(indices) > limit else "")
