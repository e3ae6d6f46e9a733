"""Keep or drop whole streamlines by the regions they visit (MRtrix3 ``tckgen -include/-exclude``).

A streamline is kept when it has a vertex in every include region and none in any exclude region;
vertices are tested, not the segments between them. A region is anything with
``contains(points (P, 3) RAS mm) -> (P,) bool``: an ``OrientedBox`` (a Slicer markups ROI) or a
``stopping.BinaryMask`` (a label map or segmentation). The names and semantics are those of issue 4's
selection module, which supersedes this one when both are merged.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .streamlines import Tractogram


@dataclass(frozen=True)
class OrientedBox:
    """Box of side lengths ``size`` (mm) centred on ``centre`` (RAS mm), its edges along the
    columns of the rotation ``axes`` (3, 3); boundary included."""

    centre: tuple[float, float, float]
    size: tuple[float, float, float]
    axes: tuple[tuple[float, float, float], ...]

    def contains(self, points: torch.Tensor) -> torch.Tensor:
        axes = torch.tensor(self.axes, dtype=torch.float64, device=points.device)
        local = (points.double() - torch.tensor(self.centre, dtype=torch.float64, device=points.device)) @ axes
        half = torch.tensor(self.size, dtype=torch.float64, device=points.device) / 2
        return (local.abs() <= half).all(1)


def select_streamlines(tractogram: Tractogram, include: Sequence = (), exclude: Sequence = ()) -> torch.Tensor:
    """(N,) bool, True for the streamlines with a vertex in every ``include`` region and no vertex in
    any ``exclude`` region."""
    n = len(tractogram)
    owner = torch.repeat_interleave(torch.arange(n), tractogram.lengths.cpu())
    keep = torch.ones(n, dtype=torch.bool)
    for regions, wanted in ((include, True), (exclude, False)):
        for region in regions:
            visits = torch.zeros(n, dtype=torch.bool)
            visits[owner[region.contains(tractogram.points.detach()).cpu()]] = True
            keep &= visits if wanted else ~visits
    return keep
