"""Trilinear interpolation of volumes at RAS-mm points, in torch: differentiable with respect to the
data and the points (the torch tracking path and the fits use it; the compiled kernels in
``tracking.kernels`` implement the same rules).

Two rules (``fields.RULES``), named after the tool they reproduce:

- ``mrtrix`` (``Interp::Masked<Interp::Linear>``): inside iff -0.5 < v < n - 0.5 on every axis; the
  nearest voxel must hold a non-zero (or NaN) value in some channel, else the point counts as outside;
  weights formed in double, cast to the data dtype, products under 1e-6 set to 0.
- ``dipy`` (``trilinear_interpolate4d``): inside iff -0.5 <= v < n - 0.5; no voxel test, no epsilon.

Both extend the edge voxel over the outer half voxel. ``v`` is the voxel coordinate of the point,
computed in double from the inverse affine.
"""
from __future__ import annotations

import numpy as np
import torch

from .errors import InputError
from .fields import RULES
from .geometry import as_affine, realign_to_ras


def round_half_away(v: torch.Tensor) -> torch.Tensor:
    """C's ``std::round`` (halves away from zero); torch.round rounds halves to even."""
    return torch.sign(v) * torch.floor(v.abs() + 0.5)


class Grid:
    """A voxel grid: shape and affine, with the RAS -> voxel map kept in float64 on the device."""

    def __init__(self, shape, affine, device=None):
        self.shape = tuple(int(s) for s in shape[:3])
        self.affine = as_affine(affine)
        inv = np.linalg.inv(self.affine)
        self.ras_to_voxel = torch.as_tensor(inv[:3], dtype=torch.float64, device=device)
        self.device = device

    def to_voxel(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) RAS mm -> (N, 3) float64 voxel coordinates (MRtrix3's double transform)."""
        p = points.to(torch.float64)
        return p @ self.ras_to_voxel[:, :3].T + self.ras_to_voxel[:, 3]


class VolumeField:
    """A (X, Y, Z, C) volume on a grid, sampled by trilinear interpolation at RAS-mm points (the
    ``mrtrix`` rule in MRtrix3's voxel order, ``geometry.realign_to_ras``)."""

    def __init__(self, data: torch.Tensor, affine, rule: str = "mrtrix"):
        if data.ndim != 4:
            raise InputError(f"expected a 4-D volume (X, Y, Z, C), got shape {tuple(data.shape)}")
        if rule not in RULES:
            raise ValueError(f"unknown interpolation rule {rule!r}")
        self.data = data
        self.rule = rule
        self.grid = Grid(data.shape, affine, device=data.device)
        if rule == "mrtrix":  # sampled in MRtrix3's voxel order: its corner sums and weight products
            data, affine = realign_to_ras(data, affine)
        self._held = Grid(data.shape, affine, device=data.device)
        x, y, z, c = data.shape
        # one replicated voxel around the grid: every corner of a point inside is a valid index, and the
        # outer half voxel reads the edge voxel, as the clamped indices of MRtrix3 and DIPY do
        padded = torch.nn.functional.pad(data.permute(3, 0, 1, 2)[None], (1, 1, 1, 1, 1, 1), mode="replicate")
        self._flat = padded[0].permute(1, 2, 3, 0).reshape(-1, c).contiguous()  # channels-last rows
        self._strides = torch.tensor([(y + 2) * (z + 2), z + 2, 1], dtype=torch.int64, device=data.device)
        self._corners = torch.tensor([i * (y + 2) * (z + 2) + j * (z + 2) + k for k in (0, 1) for j in (0, 1)
                                      for i in (0, 1)], dtype=torch.int64, device=data.device)
        self._dims = torch.tensor([x, y, z], dtype=torch.int64, device=data.device)
        self._dims_f = self._dims.to(torch.float64)
        self._support = None
        if rule == "mrtrix":
            with torch.no_grad():
                support = ((data != 0) | torch.isnan(data)).any(-1)
                self._support = torch.nn.functional.pad(support[None, None].float(), (1, 1, 1, 1, 1, 1))[0, 0].bool().reshape(-1)

    def sample(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values (N, C) at (N, 3) RAS-mm ``points`` and a (N,) bool ``inside``; rows outside are 0."""
        return _trilinear(points, self._held.ras_to_voxel, self._dims, self._dims_f, self._strides, self._corners,
                           self._flat, self._support, self.rule == "mrtrix")


def _trilinear(points, ras_to_voxel, dims, dims_f, strides, corners, flat_values, support, mrtrix: bool):
    """``VolumeField.sample`` as a pure tensor function."""
    p = points.to(torch.float64)
    v = p @ ras_to_voxel[:, :3].T + ras_to_voxel[:, 3]
    inside = ((v > -0.5) if mrtrix else (v >= -0.5)).all(-1) & (v < dims_f - 0.5).all(-1)
    base = torch.floor(v)
    f = v - base
    f = torch.where((v < 0) | (v > dims_f - 1), torch.zeros_like(f), f)
    upper = dims + 1
    if mrtrix:
        nearest = round_half_away(v).to(torch.int64) + 1
        inside = inside & support[(nearest.clamp(min=0).minimum(upper) * strides).sum(-1)]
    dtype = flat_values.dtype
    w1 = f.to(dtype)
    w0 = (1.0 - f).to(dtype)
    wx = torch.stack([w0[:, 0], w1[:, 0]], -1)
    wy = torch.stack([w0[:, 1], w1[:, 1]], -1)
    wz = torch.stack([w0[:, 2], w1[:, 2]], -1)
    # corner order z outer, y, x inner (MRtrix3's); weight = x * (y * z)
    w = (wx[:, None, None, :] * (wz[:, :, None, None] * wy[:, None, :, None])).reshape(-1, 8)
    if mrtrix:
        w = torch.where(w < 1e-6, torch.zeros_like(w), w)
    base_i = (base.to(torch.int64) + 1).clamp(min=0).minimum(upper - 1)  # rows outside: any valid cell
    flat = (base_i * strides).sum(-1)[:, None] + corners
    values = flat_values.index_select(0, flat.reshape(-1)).view(len(flat), 8, -1)  # (N, 8, C)
    t = (w[:, :, None] * values).unbind(1)
    if mrtrix:  # MRtrix3's Interp::Linear::value() (kernels.common.mrtrix_corner_sum)
        out = ((t[0] + t[4]) + (t[2] + t[6])) + ((t[1] + t[5]) + (t[3] + t[7]))
    else:
        out = t[0]
        for k in range(1, 8):  # corners summed in order: the same rounding on every device
            out = out + t[k]
    return torch.where(inside[:, None], out, torch.zeros_like(out)), inside
