"""Volumes the tracker samples: trilinear interpolation at RAS-mm points, differentiable with respect
to the data and the points.

Two rules, named after the tool they reproduce:

- ``mrtrix`` (``Interp::Masked<Interp::Linear>``): inside iff -0.5 < v < n - 0.5 on every axis; the
  nearest voxel must hold a non-zero (or NaN) value in some channel, else the point counts as outside;
  weights formed in double, cast to the data dtype, products under 1e-6 set to 0.
- ``dipy`` (``trilinear_interpolate4d``): inside iff -0.5 <= v < n - 0.5; no voxel test, no epsilon.

Both extend the edge voxel over the outer half voxel. ``v`` is the voxel coordinate of the point,
computed in double from the inverse affine.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from . import sh
from .errors import InputError
from .geometry import as_affine, axes_rotation

RULES = ("mrtrix", "dipy")


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
    """A (X, Y, Z, C) volume on a grid, sampled by trilinear interpolation at RAS-mm points.
    ``compile`` runs the sampling through ``torch.compile`` (fused; same arithmetic up to a few ulps)."""

    def __init__(self, data: torch.Tensor, affine, rule: str = "mrtrix", compile: bool = False):
        if data.ndim != 4:
            raise InputError(f"expected a 4-D volume (X, Y, Z, C), got shape {tuple(data.shape)}")
        if rule not in RULES:
            raise ValueError(f"unknown interpolation rule {rule!r}")
        self.data = data
        self.rule, self.compile = rule, compile
        self.grid = Grid(data.shape, affine, device=data.device)
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
        interpolate = _compiled_trilinear() if self.compile else _trilinear
        return interpolate(points, self.grid.ras_to_voxel, self._dims, self._dims_f, self._strides, self._corners,
                           self._flat, self._support, self.rule == "mrtrix")


def _trilinear(points, ras_to_voxel, dims, dims_f, strides, corners, flat_values, support, mrtrix: bool):
    """``VolumeField.sample`` as a pure tensor function (``torch.compile`` can fuse it)."""
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
    weighted = w[:, :, None] * values
    out = weighted[:, 0]
    for k in range(1, 8):  # corners summed in order: the same rounding on every device
        out = out + weighted[:, k]
    return torch.where(inside[:, None], out, torch.zeros_like(out)), inside


@lru_cache(maxsize=None)
def _compiled_trilinear():
    return torch.compile(_trilinear, dynamic=True)


@dataclass
class SHField:
    """An FOD as SH coefficients on a grid.

    coeffs: (X, Y, Z, C) tensor in ``basis`` (see ``sh.BASES``). affine: voxel -> RAS mm.
    frame: the frame the SH directions live in: ``world`` (RAS; MRtrix3's FODs) or ``voxel`` (the
    voxel axes; DIPY fits in the frame of the b-vectors it is given). Default: ``world`` for
    tournier07, ``voxel`` for the descoteaux07 bases.
    """

    coeffs: torch.Tensor
    affine: np.ndarray
    basis: str = "tournier07"
    frame: str | None = None

    def __post_init__(self):
        sh.check_basis(self.basis)
        if self.coeffs.ndim != 4:
            raise InputError(f"an FOD must be a 4-D image (X, Y, Z, SH coefficients), got shape {tuple(self.coeffs.shape)}")
        self.lmax = sh.lmax_for(self.coeffs.shape[-1])
        if self.frame is None:
            self.frame = "world" if self.basis == "tournier07" else "voxel"
        if self.frame not in ("world", "voxel"):
            raise InputError(f"frame must be 'world' or 'voxel', got {self.frame!r}")
        self.affine = as_affine(self.affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The grid's voxel counts (X, Y, Z)."""
        return tuple(self.coeffs.shape[:3])

    def to_world(self) -> torch.Tensor:
        """(3, 3) rotation taking SH-frame directions to RAS."""
        r = axes_rotation(self.affine) if self.frame == "voxel" else np.eye(3)
        return torch.as_tensor(r, dtype=self.coeffs.dtype, device=self.coeffs.device)

    def volume(self, rule: str = "mrtrix", basis: str = "tournier07", compile: bool = False) -> VolumeField:
        """The coefficients re-expressed in ``basis`` (same frame), as a VolumeField."""
        return VolumeField(sh.convert_basis(self.coeffs, self.basis, basis), self.affine, rule, compile)


@dataclass
class DWIField:
    """Raw diffusion-weighted signal for tensor tracking: data (X, Y, Z, G), affine, bvals (G,),
    bvecs (G, 3) unit vectors in RAS."""

    data: torch.Tensor
    affine: np.ndarray
    bvals: np.ndarray
    bvecs: np.ndarray

    def __post_init__(self):
        if self.data.ndim != 4:
            raise InputError(f"a DWI must be a 4-D image, got shape {tuple(self.data.shape)}")
        self.affine = as_affine(self.affine)
        self.bvals = np.asarray(self.bvals, dtype=np.float64).reshape(-1)
        self.bvecs = np.asarray(self.bvecs, dtype=np.float64).reshape(-1, 3)
        g = self.data.shape[-1]
        if len(self.bvals) != g or len(self.bvecs) != g:
            raise InputError(f"the DWI has {g} volumes but the gradient table has {len(self.bvals)} b-values "
                             f"and {len(self.bvecs)} directions")

    @property
    def shape(self) -> tuple[int, int, int]:
        """The grid's voxel counts (X, Y, Z)."""
        return tuple(self.data.shape[:3])

    @classmethod
    def from_dwi(cls, dwi, device=None, dtype=torch.float32) -> "DWIField":
        return cls(torch.as_tensor(np.asarray(dwi.data), dtype=dtype, device=device), dwi.affine, dwi.bvals, dwi.bvecs)

