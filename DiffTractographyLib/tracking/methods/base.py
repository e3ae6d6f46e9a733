"""The protocol every tracking method follows (MRtrix3's ``MethodBase``, DIPY's direction getters).

A method chooses directions; ``propagation`` owns stepping, stopping regions, point budgets and the
two halves. Directions at this interface are unit vectors in RAS; a method whose field lives in
another frame (DIPY's voxel-axis SH) rotates them itself.
"""
from __future__ import annotations

import torch

from ...stopping import Status
from ..algorithms import Algorithm


class Method:
    #: the declaration (``algorithms.Algorithm``) of the algorithm: rule, budget and join semantics
    algorithm: Algorithm
    #: cos(max_angle) of the curvature test (MRtrix3's rounding for the float32 methods)
    cos_max: float = -1.0

    @classmethod
    def from_params(cls, field, params, dtype) -> "Method":
        """The method for resolved ``TrackingParams`` on ``field`` in ``dtype``."""
        return cls(field, params.cutoff, params.max_angle, dtype=dtype)

    @property
    def rule(self) -> str:
        return self.algorithm.rule

    @property
    def shared_budget(self) -> bool:
        return self.algorithm.shared_budget

    @property
    def reverse_uses_first_step(self) -> bool:
        return self.algorithm.reverse_uses_first_step

    @property
    def forward_after_seed(self) -> bool:
        return self.algorithm.forward_after_seed

    @property
    def requires_grad(self) -> bool:
        """Whether the field tensors carry autograd history (then the loop checkpoints)."""
        return False

    def init(self, pos: torch.Tensor, direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Seed direction at (N, 3) RAS points from a start direction (N, 3) -> (directions, ok (N,))."""
        raise NotImplementedError

    def next(self, pos: torch.Tensor, direction: torch.Tensor, check_curvature: bool = True,
             key: tuple[torch.Tensor, torch.Tensor, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Direction of the step from ``pos`` given the previous ``direction``, and a ``Status`` code
        per row (CONTINUE, OUTSIDE_IMAGE, LOW_SIGNAL or HIGH_CURVATURE). ``key`` = (seed index (M,),
        branch (M,), step number) names each row's random draws for methods that sample."""
        raise NotImplementedError

    def initial_directions(self, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Start directions for (N, 3) RAS seeds given without one: (K, 3) RAS directions and the
        seed row (K,) of each, a seed may get several or one zero direction (DIPY's peaks). None
        (the default): MRtrix3's random start direction, refined by ``init``."""
        return None

    def reverse(self, seed_direction: torch.Tensor, first_half) -> torch.Tensor:
        """Start direction of the second half (``first_half``: the first ``HalfStreamlines`` when
        ``reverse_uses_first_step``). MRtrix3 reverses the seed direction."""
        return -seed_direction


def curvature_status(status: torch.Tensor, cos_angle: torch.Tensor, cos_max: float) -> torch.Tensor:
    """Mark rows still CONTINUE whose turn exceeds ``max_angle`` (``cos_angle < cos_max``)."""
    return torch.where((status == Status.CONTINUE) & (cos_angle < cos_max),
                       torch.full_like(status, Status.HIGH_CURVATURE), status)
