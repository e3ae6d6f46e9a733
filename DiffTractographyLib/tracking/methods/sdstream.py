"""MRtrix3 SD_Stream: follow the FOD peak nearest the previous direction."""
from __future__ import annotations


import torch

from ...fields import SHField
from ...geometry import dot3
from ...peaks import PeakFinder
from ...stopping import Status
from ..algorithms import ALGORITHMS, mrtrix_cos_threshold
from .base import Method, curvature_status


class SDStream(Method):
    """``init``: data at the seed, peak search from the start direction, amplitude >= cutoff.
    ``next``: peak search from the previous direction at ``pos``; LOW_SIGNAL if the search fails or
    the amplitude is below ``cutoff``; HIGH_CURVATURE if the turn exceeds ``max_angle`` (degrees)."""

    algorithm = ALGORITHMS["sdstream"]

    def __init__(self, field: SHField, cutoff: float, max_angle: float, precomputed: bool = True,
                 polish: int = 0, dtype=torch.float32):
        self.volume = SHField(field.coeffs.to(dtype), field.affine, field.basis, field.frame).volume("mrtrix")
        self.cutoff = cutoff
        self.cos_max = mrtrix_cos_threshold(max_angle, dtype)
        device = field.coeffs.device
        self.finder = PeakFinder(field.lmax, precomputed=precomputed, polish=polish, device=device, dtype=dtype)
        rot = field.to_world().to(dtype)
        self.rotation = None if field.frame == "world" else rot

    @classmethod
    def from_params(cls, field, params, dtype):
        return cls(field, params.cutoff, params.max_angle, precomputed=params.sh_precomputed,
                   polish=params.peak_polish, dtype=dtype)

    def _peak(self, pos, direction):
        c, inside = self.volume.sample(pos)
        inside = inside & ~torch.isnan(c[:, 0])
        u = direction if self.rotation is None else direction @ self.rotation
        u, amp = self.finder.peak(c, u)
        if self.rotation is not None:
            u = u @ self.rotation.T
        low = ~(amp >= self.cutoff)  # NaN amplitude (failed search) is low
        status = torch.where(inside, torch.where(low, Status.LOW_SIGNAL, Status.CONTINUE), Status.OUTSIDE_IMAGE)
        return u, status.to(torch.int64)

    @property
    def requires_grad(self) -> bool:
        return self.volume.data.requires_grad

    def init(self, pos, direction):
        u, status = self._peak(pos, direction)
        return u, status == Status.CONTINUE

    def next(self, pos, direction, check_curvature=True, key=None):
        u, status = self._peak(pos, direction)
        if check_curvature:
            status = curvature_status(status, dot3(direction, u), self.cos_max)
        return u, status
