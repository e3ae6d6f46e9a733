"""MRtrix3 Tensor_Det: follow the principal eigenvector of the tensor fitted, at each point, to the
trilinearly interpolated DWI signal."""
from __future__ import annotations

import torch

from ...dwi import tensor_solver
from ...fields import DWIField
from ...geometry import dot3
from ...interpolation import VolumeField
from ...stopping import Status
from ..algorithms import ALGORITHMS, mrtrix_cos_threshold
from .base import Method, curvature_status


def tensor_fa(dt: torch.Tensor) -> torch.Tensor:
    """FA of (N, 6+) tensors [Dxx, Dyy, Dzz, Dxy, Dxz, Dyz, ...] (MRtrix3's ``tensor2FA``)."""
    md = (dt[:, 0] + dt[:, 1] + dt[:, 2]) / 3.0
    a = dt[:, :3] - md[:, None]
    off = (dt[:, 3:6] ** 2).sum(-1)
    norm2 = (dt[:, :3] ** 2).sum(-1) + 2.0 * off
    num = 1.5 * ((a ** 2).sum(-1) + 2.0 * off)
    safe = torch.where(norm2 != 0, norm2, torch.ones_like(norm2))
    return torch.where(norm2 != 0, torch.sqrt(num / safe), torch.zeros_like(norm2))


def _matrices(dt: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.stack([dt[:, 0], dt[:, 3], dt[:, 4]], -1),
                        torch.stack([dt[:, 3], dt[:, 1], dt[:, 5]], -1),
                        torch.stack([dt[:, 4], dt[:, 5], dt[:, 2]], -1)], -2)


def principal_direction(dt: torch.Tensor) -> torch.Tensor:
    """Unit eigenvector (N, 3) of the largest eigenvalue of each tensor."""
    return torch.linalg.eigh(_matrices(dt))[1][..., 2]


def eigen_sign(dt: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """(N,) +1 or -1: the sign Eigen's ``computeDirect`` gives the principal eigenvector ``u``
    (``kernels.tensordet.eigen_sign``, in float64)."""
    m = _matrices(dt.detach().double())
    lam = torch.linalg.eigvalsh(m)[:, 2]
    a = m - lam[:, None, None] * torch.eye(3, dtype=m.dtype, device=m.device)
    rows = torch.arange(len(a), device=a.device)
    i0 = torch.argmax(torch.diagonal(a, dim1=-2, dim2=-1).abs(), -1)  # the first of equal maxima
    column = lambda k: a[rows, :, k]  # noqa: E731
    c0 = torch.linalg.cross(column(i0), column((i0 + 1) % 3))
    c1 = torch.linalg.cross(column(i0), column((i0 + 2) % 3))
    kernel = torch.where(((c0 * c0).sum(-1) > (c1 * c1).sum(-1))[:, None], c0, c1)
    return torch.where((kernel * u.detach().double()).sum(-1) >= 0, 1.0, -1.0).to(u.dtype)


class TensorDet(Method):
    """``init``: FA >= cutoff at the seed, direction = principal eigenvector with the sign Eigen's
    ``computeDirect`` gives it, whatever the start direction (as MRtrix3). ``next``: LOW_SIGNAL if
    FA < cutoff, HIGH_CURVATURE if |cos(turn)| < cos(max_angle); the eigenvector is flipped to
    continue forwards."""

    algorithm = ALGORITHMS["tensordet"]

    def __init__(self, field: DWIField, cutoff: float, max_angle: float, dtype=torch.float32):
        self.binv = torch.as_tensor(tensor_solver(field.bvals, field.bvecs), dtype=dtype, device=field.data.device)
        self.volume = VolumeField(torch.as_tensor(field.data).to(dtype), field.affine, rule="mrtrix")
        self.cutoff = cutoff
        self.cos_max = mrtrix_cos_threshold(max_angle, dtype)

    def _tensor(self, pos):
        s, inside = self.volume.sample(pos)
        inside = inside & ~torch.isnan(s[:, 0])
        positive = s > 0
        y = torch.where(positive, -torch.log(torch.where(positive, s, torch.ones_like(s))), torch.zeros_like(s))
        dt = y @ self.binv.T
        return dt, inside

    @property
    def requires_grad(self) -> bool:
        return self.volume.data.requires_grad

    def init(self, pos, direction):
        """The start ``direction`` is not used: MRtrix3's Tensor_Det keeps the sign Eigen gives the
        eigenvector (``eigen_sign``)."""
        dt, inside = self._tensor(pos)
        u = principal_direction(dt)
        return u * eigen_sign(dt, u)[:, None], inside & (tensor_fa(dt) >= self.cutoff)

    def next(self, pos, direction, check_curvature=True, key=None):
        dt, inside = self._tensor(pos)
        u = principal_direction(dt)
        dot = dot3(direction, u)
        status = torch.where(inside, torch.where(tensor_fa(dt) < self.cutoff, Status.LOW_SIGNAL, Status.CONTINUE),
                             Status.OUTSIDE_IMAGE).to(torch.int64)
        if check_curvature:  # the eigenvector's sign is free: the turn is to the nearer of +-u
            status = curvature_status(status, dot.abs(), self.cos_max)
        return torch.where((dot < 0)[:, None], -u, u), status
