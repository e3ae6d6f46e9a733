"""The in-memory diffusion-weighted series that every reader returns."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import axes_rotation


@dataclass
class DWI:
    """A DWI series.

    data: (X, Y, Z, G) float32 signal, voxel index order i, j, k.
    affine: (4, 4) voxel index -> RAS mm.
    bvals: (G,) s/mm^2.
    bvecs: (G, 3) unit gradient directions in the **RAS (world) frame**; rows of b=0 volumes may be 0.
    """

    data: np.ndarray
    affine: np.ndarray
    bvals: np.ndarray
    bvecs: np.ndarray

    @property
    def bvecs_voxel(self) -> np.ndarray:
        """Gradient directions along the voxel axes (the frame DIPY fits in)."""
        return self.bvecs @ axes_rotation(self.affine)
