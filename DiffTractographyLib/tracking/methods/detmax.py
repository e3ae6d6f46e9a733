"""DIPY's ``DeterministicMaximumDirectionGetter``: step along the vertex of largest pmf within
``max_angle`` of the previous direction."""
from __future__ import annotations

import torch

from ..algorithms import ALGORITHMS
from .pmf import PmfMethod


class DeterministicMaximum(PmfMethod):
    """Among the vertices with |cos| > cos(max_angle) (strict), the largest pmf (the lowest index on
    ties); no step unless that pmf is positive and survives the relative threshold ``cutoff``.
    Gradients: straight-through soft argmax (see ``pmf``)."""

    algorithm = ALGORITHMS["detmax"]

    def choose(self, values, outside, top, noise):
        if outside is not None:
            values = values.masked_fill(outside, -torch.inf)
        best, position = values.max(-1)
        return position, (best > 0) & (best >= self.cutoff * top)
