"""Where streamlines may go: termination status codes and stopping regions.

``BinaryMask`` is a nearest-voxel test (MRtrix3 ``-mask``: float32 voxel coordinate rounded halves away
from zero; DIPY ``BinaryStoppingCriterion``: float64, halves to even). ``ThresholdMap`` continues while
the trilinearly interpolated value is above ``threshold`` (DIPY ``ThresholdStoppingCriterion``).
``AllOf`` intersects regions.

Regions hold numpy data (the compiled kernels read it as it is); ``contains`` tests torch points on
the region's device (the torch tracking path and selection), building its tensors on first use.
"""
from __future__ import annotations

import warnings
from enum import IntEnum
from typing import Protocol

import numpy as np

from .errors import InputError
from .geometry import apply_affine, as_affine, realign_to_ras


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


def mask_voxels(values, rule: str = "mrtrix", what: str = "mask") -> np.ndarray:
    """The voxels of a mask or seed image (X, Y, Z) that count as inside, as the reference tool reads
    the image: ``mrtrix`` as MRtrix3 reads any image into bool, by rounding (finite values of magnitude
    >= 0.5: 0.3 in a probability map is outside, -1 inside); ``dipy`` values > 0 (``BinaryStoppingCriterion``).
    NaN is outside in both, said in a warning naming ``what``."""
    v = np.asarray(values.cpu() if hasattr(values, "cpu") else values)
    if v.dtype == bool:
        return v
    if np.issubdtype(v.dtype, np.floating) and np.isnan(v).any():
        warnings.warn(f"the {what} holds {int(np.isnan(v).sum())} NaN voxels; they count as outside", stacklevel=3)
    if rule == "mrtrix":
        return np.isfinite(v) & (np.abs(v) >= 0.5)
    return v > 0


class BinaryMask:
    """A binary region on its own grid; ``contains`` is the nearest-voxel test of ``rule``.

    ``mrtrix`` reproduces MRtrix3's ROI images (``-mask``, tckedit's ``-include``/``-exclude``): the
    image, held with its axes in MRtrix3's order (``geometry.realign_to_ras``: ``held``,
    ``held_affine``), is cropped to the bounding box of its non-zero voxels plus one voxel, and the
    float32 scanner-to-voxel transform of that crop is applied in float32, rounding halves away from
    zero (so a point half way between two voxels of a flipped axis falls where tckedit puts it).
    ``dipy`` is ``BinaryStoppingCriterion``: float64 voxel coordinates, halves to even. The voxels
    inside are those ``mask_voxels`` reads as the rule's tool does.
    """

    def __init__(self, mask, affine, rule: str = "mrtrix", device=None):
        m = mask_voxels(mask, rule)
        if m.ndim != 3:
            raise InputError(f"a mask must be a 3-D image, got shape {tuple(m.shape)}")
        if not m.any():
            raise InputError("the mask is empty (no non-zero voxel)")
        self.array, self.affine, self.rule, self.device = m, as_affine(affine), rule, device
        held, self.held_affine = realign_to_ras(m, self.affine) if rule == "mrtrix" else (m, self.affine)
        self.held = np.ascontiguousarray(held)
        self.crop_origin = np.maximum(np.argwhere(self.held).min(0) - 1, 0)
        cropped = self.held_affine.copy()
        cropped[:3, 3] = apply_affine(self.held_affine, self.crop_origin)
        #: MRtrix3's float32 scanner -> voxel transform of the cropped image, (3, 4)
        self.crop_to_voxel = np.linalg.inv(cropped)[:3].astype(np.float32)
        self._tensors = None

    def to(self, device) -> "BinaryMask":
        return BinaryMask(self.array, self.affine, self.rule, device)

    @property
    def mask(self):
        """The mask (as given) as a bool tensor on the region's device."""
        import torch

        return torch.as_tensor(self.array, device=self.device)

    def voxel_centres(self) -> np.ndarray:
        """(V, 3) RAS mm centres of the mask's voxels."""
        return apply_affine(self.affine, np.argwhere(self.array))

    def _state(self):
        if self._tensors is None:
            import torch

            from .interpolation import Grid

            d = self.device
            self._tensors = (torch.as_tensor(self.held, device=d), Grid(self.held.shape, self.held_affine, device=d),
                             torch.tensor(self.held.shape, device=d), torch.from_numpy(self.crop_to_voxel).to(d),
                             torch.from_numpy(self.crop_origin).to(d))
        return self._tensors

    def contains(self, points):
        import torch

        from .interpolation import round_half_away

        mask, grid, dims, crop_to_voxel, crop_origin = self._state()
        if self.rule == "mrtrix":
            p = points.detach().to(torch.float32)
            m = crop_to_voxel
            v = (m[:, 0] * p[:, :1] + m[:, 1] * p[:, 1:2]) + m[:, 2] * p[:, 2:3] + m[:, 3]
            idx = round_half_away(v.double()).to(torch.int64) + crop_origin
        else:
            idx = torch.round(grid.to_voxel(points.detach())).to(torch.int64)
        inside = ((idx >= 0) & (idx < dims)).all(-1)
        idx = torch.where(inside[:, None], idx, torch.zeros_like(idx))
        return inside & mask[idx[:, 0], idx[:, 1], idx[:, 2]]


class ThresholdMap:
    """A scalar map (X, Y, Z) on its own grid (``affine``: voxel -> RAS mm): ``contains`` is true
    where its trilinearly interpolated value is above ``threshold`` (in the map's units, e.g. FA >
    0.2), DIPY's ``ThresholdStoppingCriterion`` (float64, DIPY's interpolation rule)."""

    def __init__(self, values, affine, threshold: float, device=None):
        v = np.asarray(values.cpu() if hasattr(values, "cpu") else values, dtype=np.float64)
        if v.ndim != 3:
            raise InputError(f"a stopping map must be a 3-D image, got shape {tuple(v.shape)}")
        self.values, self.affine, self.threshold, self.device = v, as_affine(affine), float(threshold), device
        self._field = None

    def to(self, device) -> "ThresholdMap":
        return ThresholdMap(self.values, self.affine, self.threshold, device)

    @property
    def field(self):
        """The map as a (X, Y, Z, 1) ``interpolation.VolumeField`` on the region's device."""
        if self._field is None:
            import torch

            from .interpolation import VolumeField

            self._field = VolumeField(torch.as_tensor(self.values[..., None], device=self.device), self.affine,
                                      rule="dipy")
        return self._field

    def contains(self, points):
        values, inside = self.field.sample(points.detach())
        return inside & (values[:, 0] > self.threshold)


class AllOf:
    """The intersection of regions, e.g. a brain mask and an FA threshold."""

    def __init__(self, *regions):
        self.regions = regions

    def to(self, device) -> "AllOf":
        return AllOf(*(r.to(device) if hasattr(r, "to") else r for r in self.regions))

    def contains(self, points):
        inside = self.regions[0].contains(points)
        for region in self.regions[1:]:
            inside = inside & region.contains(points)
        return inside
