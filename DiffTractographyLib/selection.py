"""Keep or drop whole streamlines by the regions they visit (MRtrix3 ``tckgen -include/-exclude``).

A region is anything with ``contains(points (P, 3) RAS mm) -> (P,) bool``: a ``stopping.BinaryMask``
(label map or segmentation) or a ``Box`` (a Slicer markups ROI).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .errors import InputError
from .geometry import as_affine
from .streamlines import Tractogram


@dataclass
class Box:
    """An oriented box: ``box_to_world`` (4, 4) maps box coordinates (origin at the centre, axes
    along the edges) to RAS mm; ``size`` (3,) edge lengths in those coordinates (mm)."""

    box_to_world: np.ndarray
    size: np.ndarray

    def __post_init__(self):
        self.box_to_world = as_affine(self.box_to_world)
        self.size = np.asarray(self.size, dtype=np.float64).reshape(3)
        if not (self.size > 0).all():
            raise InputError(f"a box needs three positive edge lengths, got {self.size.tolist()} mm")

    def contains(self, points: torch.Tensor) -> torch.Tensor:
        """(P,) bool: points inside the box or on its faces."""
        inv = torch.as_tensor(np.linalg.inv(self.box_to_world), dtype=torch.float64, device=points.device)
        local = points.detach().to(torch.float64) @ inv[:3, :3].T + inv[:3, 3]
        half = torch.as_tensor(self.size / 2, dtype=torch.float64, device=points.device)
        return (local.abs() <= half).all(-1)


def select(tractogram: Tractogram, include: Sequence = (), exclude: Sequence = ()) -> Tractogram:
    """The streamlines with a vertex in every ``include`` region and no vertex in any ``exclude``
    region, in their original order with their data."""
    n = len(tractogram)
    if n == 0 or not (include or exclude):
        return tractogram
    keep = torch.ones(n, dtype=torch.bool)
    owner = torch.repeat_interleave(torch.arange(n), tractogram.lengths.cpu())
    for region, wanted in [(r, True) for r in include] + [(r, False) for r in exclude]:
        visits = torch.zeros(n, dtype=torch.bool)
        visits[owner[region.contains(tractogram.points).cpu()]] = True
        keep &= visits if wanted else ~visits
    return tractogram.subset(keep)
