"""Where streamlines may go: termination status codes and stopping regions.

``BinaryMask`` is a nearest-voxel test (MRtrix3 ``-mask``: float32 voxel coordinate rounded halves away
from zero; DIPY ``BinaryStoppingCriterion``: float64, halves to even). ``ThresholdMap`` continues while
the trilinearly interpolated value is above ``threshold`` (DIPY ``ThresholdStoppingCriterion``).
``AllOf`` intersects regions.
"""
from __future__ import annotations

from enum import IntEnum
from typing import Protocol

import numpy as np
import torch

from .errors import InputError
from .fields import Grid, VolumeField, round_half_away
from .geometry import apply_affine


class Status(IntEnum):
    """Why a half-streamline stopped (MRtrix3's termination reasons, DIPY's stopping states)."""

    CONTINUE = 0
    OUTSIDE_IMAGE = 1   # left the field of view or the field's support
    LOW_SIGNAL = 2      # FOD amplitude / FA / pmf below cutoff, or no peak found
    HIGH_CURVATURE = 3  # turned more than max_angle
    EXIT_MASK = 4       # the next point would leave the stopping mask
    MAX_LENGTH = 5      # reached the point budget of max_length


class StreamlineStatus(IntEnum):
    """Fate of each seed."""

    ACCEPTED = 0
    SEED_REJECTED = 1   # outside the mask, no data or no usable direction at the seed
    TOO_SHORT = 2       # fewer points than min_length requires


class Region(Protocol):
    """Anything with ``contains``: (P, 3) RAS mm points -> (P,) bool. The regions below also have
    ``to(device)``, which ``Tracker`` calls so that a region may be built on any device."""

    def contains(self, points: torch.Tensor) -> torch.Tensor: ...


class BinaryMask:
    """A binary region on its own grid; ``contains`` is the nearest-voxel test of ``rule``.

    ``mrtrix`` reproduces MRtrix3's ROI images (``-mask``, tckedit's ``-include``/``-exclude``): the
    image is cropped to the bounding box of its non-zero voxels plus one voxel, and the float32
    scanner-to-voxel transform of that crop is applied in float32, rounding halves away from zero.
    ``dipy`` is ``BinaryStoppingCriterion``: float64 voxel coordinates, halves to even.
    """

    def __init__(self, mask, affine, rule: str = "mrtrix", device=None):
        m = torch.as_tensor(np.asarray(mask) != 0, device=device)
        if m.ndim != 3:
            raise InputError(f"a mask must be a 3-D image, got shape {tuple(m.shape)}")
        if not bool(m.any()):
            raise InputError("the mask is empty (no non-zero voxel)")
        self.mask, self.rule = m, rule
        self.grid = Grid(m.shape, affine, device=device)
        self._dims = torch.tensor(m.shape, device=device)
        bottom = np.maximum(np.argwhere(m.cpu().numpy()).min(0) - 1, 0)
        cropped = self.grid.affine.copy()
        cropped[:3, 3] = apply_affine(self.grid.affine, bottom)
        self._crop_to_voxel = torch.from_numpy(np.linalg.inv(cropped)[:3].astype(np.float32)).to(device)
        self._crop_origin = torch.from_numpy(bottom).to(device)

    def to(self, device) -> "BinaryMask":
        device = torch.device(device)
        return self if self.mask.device == device else BinaryMask(self.mask.cpu().numpy(), self.grid.affine, self.rule,
                                                                  device)

    def voxel_centres(self) -> np.ndarray:
        """(V, 3) RAS mm centres of the mask's voxels."""
        return apply_affine(self.grid.affine, np.argwhere(self.mask.cpu().numpy()))

    def contains(self, points: torch.Tensor) -> torch.Tensor:
        if self.rule == "mrtrix":
            p = points.detach().to(torch.float32)
            m = self._crop_to_voxel
            v = (m[:, 0] * p[:, :1] + m[:, 1] * p[:, 1:2]) + m[:, 2] * p[:, 2:3] + m[:, 3]
            idx = round_half_away(v.double()).to(torch.int64) + self._crop_origin
        else:
            idx = torch.round(self.grid.to_voxel(points.detach())).to(torch.int64)
        inside = ((idx >= 0) & (idx < self._dims)).all(-1)
        idx = torch.where(inside[:, None], idx, torch.zeros_like(idx))
        return inside & self.mask[idx[:, 0], idx[:, 1], idx[:, 2]]


class ThresholdMap:
    """A scalar map (X, Y, Z) on its own grid (``affine``: voxel -> RAS mm): ``contains`` is true
    where its trilinearly interpolated value is above ``threshold`` (in the map's units, e.g. FA >
    0.2), DIPY's ``ThresholdStoppingCriterion`` (float64, DIPY's interpolation rule)."""

    def __init__(self, values, affine, threshold: float, device=None):
        t = torch.as_tensor(np.asarray(values, dtype=np.float64), device=device)
        if t.ndim != 3:
            raise InputError(f"a stopping map must be a 3-D image, got shape {tuple(t.shape)}")
        self.field = VolumeField(t[..., None], affine, rule="dipy")
        self.threshold = float(threshold)

    def to(self, device) -> "ThresholdMap":
        device = torch.device(device)
        return self if self.field.data.device == device else ThresholdMap(
            self.field.data[..., 0].cpu().numpy(), self.field.grid.affine, self.threshold, device)

    def contains(self, points: torch.Tensor) -> torch.Tensor:
        values, inside = self.field.sample(points.detach())
        return inside & (values[:, 0] > self.threshold)


class AllOf:
    """The intersection of regions, e.g. a brain mask and an FA threshold."""

    def __init__(self, *regions):
        self.regions = regions

    def to(self, device) -> "AllOf":
        return AllOf(*(r.to(device) if hasattr(r, "to") else r for r in self.regions))

    def contains(self, points: torch.Tensor) -> torch.Tensor:
        inside = self.regions[0].contains(points)
        for region in self.regions[1:]:
            inside = inside & region.contains(points)
        return inside
