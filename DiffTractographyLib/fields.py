"""What the tracker follows: an FOD as SH coefficients (``SHField``) or the raw diffusion signal
(``DWIField``) on a voxel grid. The data may be a numpy array (the compiled kernels need nothing
else) or a torch tensor (differentiable tracking); importing this module loads no torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import sh
from .errors import InputError
from .geometry import as_affine, axes_rotation

#: interpolation rules (``interpolation``), named after the tool whose bounds and rounding they reproduce
RULES = ("mrtrix", "dipy")


@dataclass
class SHField:
    """An FOD as SH coefficients on a grid.

    coeffs: (X, Y, Z, C) numpy array or torch tensor in ``basis`` (see ``config.BASES``). affine:
    voxel -> RAS mm.
    frame: the frame the SH directions live in: ``world`` (RAS; MRtrix3's FODs) or ``voxel`` (the
    voxel axes; DIPY fits in the frame of the b-vectors it is given). Default: ``world`` for
    tournier07, ``voxel`` for the descoteaux07 bases.
    """

    coeffs: torch.Tensor
    affine: np.ndarray
    basis: str = "tournier07"
    frame: str | None = None

    def __post_init__(self):
        sh.check_basis(self.basis)
        if self.coeffs.ndim != 4:
            raise InputError(f"an FOD must be a 4-D image (X, Y, Z, SH coefficients), got shape {tuple(self.coeffs.shape)}")
        self.lmax = sh.lmax_for(self.coeffs.shape[-1])
        if self.frame is None:
            self.frame = "world" if self.basis == "tournier07" else "voxel"
        if self.frame not in ("world", "voxel"):
            raise InputError(f"frame must be 'world' or 'voxel', got {self.frame!r}")
        self.affine = as_affine(self.affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The grid's voxel counts (X, Y, Z)."""
        return tuple(self.coeffs.shape[:3])

    def rotation(self) -> np.ndarray:
        """(3, 3) float64 rotation taking SH-frame directions to RAS."""
        return axes_rotation(self.affine) if self.frame == "voxel" else np.eye(3)

    def to_world(self) -> torch.Tensor:
        """``rotation`` as a tensor of the coefficients' dtype and device."""
        import torch

        return torch.as_tensor(self.rotation(), dtype=self.coeffs.dtype, device=self.coeffs.device)

    def volume(self, rule: str = "mrtrix", basis: str = "tournier07") -> VolumeField:
        """The (torch) coefficients re-expressed in ``basis`` (same frame), as a VolumeField."""
        from .interpolation import VolumeField

        return VolumeField(sh.convert_basis(self.coeffs, self.basis, basis), self.affine, rule)


@dataclass
class DWIField:
    """Raw diffusion-weighted signal for tensor tracking: data (X, Y, Z, G) numpy array or torch
    tensor, affine, bvals (G,), bvecs (G, 3) unit vectors in RAS."""

    data: torch.Tensor
    affine: np.ndarray
    bvals: np.ndarray
    bvecs: np.ndarray

    def __post_init__(self):
        if self.data.ndim != 4:
            raise InputError(f"a DWI must be a 4-D image, got shape {tuple(self.data.shape)}")
        self.affine = as_affine(self.affine)
        self.bvals = np.asarray(self.bvals, dtype=np.float64).reshape(-1)
        self.bvecs = np.asarray(self.bvecs, dtype=np.float64).reshape(-1, 3)
        g = self.data.shape[-1]
        if len(self.bvals) != g or len(self.bvecs) != g:
            raise InputError(f"the DWI has {g} volumes but the gradient table has {len(self.bvals)} b-values "
                             f"and {len(self.bvecs)} directions")

    @property
    def shape(self) -> tuple[int, int, int]:
        """The grid's voxel counts (X, Y, Z)."""
        return tuple(self.data.shape[:3])

    @classmethod
    def from_dwi(cls, dwi, device=None, dtype=None) -> "DWIField":
        """From a ``dwi.DWI``: float32 numpy data, or a torch tensor when ``device`` or a torch ``dtype``
        is given."""
        if device is None and dtype is None:
            return cls(np.asarray(dwi.data, dtype=np.float32), dwi.affine, dwi.bvals, dwi.bvecs)
        import torch

        return cls(torch.as_tensor(np.asarray(dwi.data), dtype=dtype or torch.float32, device=device), dwi.affine,
                   dwi.bvals, dwi.bvecs)

