"""From a DWI volume to batches of voxel signals and back: masks, the direction frame, chunking."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..config import FRAMES
from ..dwi import DWI
from ..errors import InputError



def check_frame(frame: str) -> str:
    if frame not in FRAMES:
        raise InputError(f"unknown frame {frame!r}; choose one of {', '.join(FRAMES)}")
    return frame


def frame_bvecs(dwi: DWI, frame: str) -> np.ndarray:
    """The DWI's b-vectors (G, 3) in ``frame``: ``world`` (RAS) or ``voxel`` (along the voxel axes)."""
    return dwi.bvecs if check_frame(frame) == "world" else dwi.bvecs_voxel


def as_mask(dwi: DWI, mask=None) -> np.ndarray:
    """(X, Y, Z) bool: ``mask`` checked against the DWI's grid, or the voxels with any non-zero signal."""
    if mask is None:
        mask = np.any(dwi.data != 0, axis=3)
    mask = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask).astype(bool)
    if mask.shape != dwi.data.shape[:3]:
        raise InputError(f"the mask's shape {mask.shape} differs from the DWI's grid {dwi.data.shape[:3]}")
    if not mask.any():
        raise InputError("the mask selects no voxel with signal")
    return mask


def gather_voxels(dwi: DWI, mask: np.ndarray, device, dtype: torch.dtype, chunk_size: int) -> Iterator[torch.Tensor]:
    """The signal (n, G) of the masked voxels, in index order, ``chunk_size`` voxels at a time."""
    voxels = dwi.data[mask]
    for start in range(0, len(voxels), chunk_size):
        yield torch.as_tensor(voxels[start:start + chunk_size], device=device).to(dtype)


def scatter_voxels(values: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
    """Per-voxel ``values`` (N, ...) back to a volume (X, Y, Z, ...), zeros outside ``mask``; differentiable."""
    out = values.new_zeros(mask.shape + tuple(values.shape[1:]))
    out[torch.as_tensor(mask, device=values.device)] = values
    return out
