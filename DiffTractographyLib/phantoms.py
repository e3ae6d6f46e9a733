"""Synthetic fibre phantoms built in code: FODs (tournier07, world frame) and DWI signals of tube
bundles on any grid, oblique or flipped. Used by the demo, the tests and the benchmarks."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from . import sh
from .geometry import apply_affine, as_affine


@dataclass(frozen=True)
class Bundle:
    """A tube of fibres around a centre line given as (K, 3) RAS-mm points (dense enough to be
    treated as a polyline); ``radius`` in mm."""

    centre_line: np.ndarray
    radius: float

    @staticmethod
    def straight(start, end, radius: float, n: int = 200) -> "Bundle":
        t = np.linspace(0.0, 1.0, n)[:, None]
        return Bundle(np.asarray(start, float) * (1 - t) + np.asarray(end, float) * t, radius)

    @staticmethod
    def arc(centre, axis_u, axis_v, arc_radius: float, radius: float, start_deg: float = 0.0,
            end_deg: float = 180.0, n: int = 400) -> "Bundle":
        """Arc of a circle of ``arc_radius`` mm around ``centre`` in the plane of unit vectors u, v."""
        a = np.radians(np.linspace(start_deg, end_deg, n))[:, None]
        u, v = np.asarray(axis_u, float), np.asarray(axis_v, float)
        return Bundle(np.asarray(centre, float) + arc_radius * (np.cos(a) * u + np.sin(a) * v), radius)


def _nearest_tangents(points: np.ndarray, bundle: Bundle) -> tuple[np.ndarray, np.ndarray]:
    """Distance (P,) from each point to the centre line's vertices and the local unit tangent (P, 3)."""
    line = bundle.centre_line
    tangents = np.gradient(line, axis=0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    d2 = ((points[:, None, :] - line[None, :, :]) ** 2).sum(-1)
    k = d2.argmin(1)
    return np.sqrt(d2[np.arange(len(points)), k]), tangents[k]


def fibre_fractions(shape, affine, bundles: list[Bundle]):
    """Per voxel: (X, Y, Z, B) membership of each bundle and (X, Y, Z, B, 3) fibre directions (RAS)."""
    ijk = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    ras = apply_affine(as_affine(affine), ijk)
    inside, dirs = [], []
    for b in bundles:
        dist, tangent = _nearest_tangents(ras, b)
        inside.append(dist <= b.radius)
        dirs.append(tangent)
    return (np.stack(inside, -1).reshape(*shape, len(bundles)),
            np.stack(dirs, -2).reshape(*shape, len(bundles), 3))


def fod_phantom(shape, affine, bundles: list[Bundle], lmax: int = 8, sharpness: float = 0.03,
                seed: int = 0, noise: float = 0.0) -> tuple[torch.Tensor, np.ndarray]:
    """FOD coefficients (X, Y, Z, C) float32 in tournier07, world frame, and the (X, Y, Z) bool mask
    of the bundles. Each fibre is an axially symmetric lobe with kernel exp(-sharpness l (l + 1));
    ``noise`` adds Gaussian noise to the coefficients of the mask voxels."""
    members, dirs = fibre_fractions(shape, affine, bundles)
    ls, _ = sh.degrees_orders(lmax)
    kernel = torch.as_tensor(np.exp(-sharpness * ls * (ls + 1)))
    coeffs = torch.zeros((*shape, sh.n_coeffs(lmax)), dtype=torch.float64)
    for b in range(len(bundles)):
        y = sh.basis_matrix(torch.as_tensor(dirs[..., b, :]), lmax)
        coeffs += torch.as_tensor(members[..., b])[..., None] * y * kernel
    mask = members.any(-1)
    if noise:
        g = torch.Generator().manual_seed(seed)
        coeffs += noise * torch.randn(coeffs.shape, generator=g, dtype=torch.float64) * torch.as_tensor(mask)[..., None]
    return coeffs.float(), mask


def dwi_phantom(shape, affine, bundles: list[Bundle], bvals, bvecs, s0: float = 1000.0,
                diffusivities=(1.7e-3, 0.3e-3, 0.3e-3), background_md: float = 0.8e-3) -> np.ndarray:
    """(X, Y, Z, G) float32 signal: equal-weight sticks-as-tensors of each bundle present, isotropic
    tissue elsewhere. ``bvecs`` (G, 3) are unit RAS directions, ``bvals`` in s/mm^2."""
    members, dirs = fibre_fractions(shape, affine, bundles)
    b = np.asarray(bvals, float)
    g = np.asarray(bvecs, float)
    l1, l2, _ = diffusivities
    signal = np.zeros((*shape, len(b)))
    count = members.sum(-1)
    for k in range(len(bundles)):
        cos2 = (dirs[..., k, :] @ g.T) ** 2  # (X, Y, Z, G)
        adc = l2 + (l1 - l2) * cos2
        signal += members[..., k, None] * np.exp(-b * adc)
    iso = np.exp(-b * background_md)
    signal = np.where(count[..., None] > 0, signal / np.maximum(count, 1)[..., None], iso)
    return (s0 * signal).astype(np.float32)
