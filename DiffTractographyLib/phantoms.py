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


def fibre_lobes(directions, lmax: int = 8, sharpness: float = 0.03) -> torch.Tensor:
    """(..., C) float64 tournier07 coefficients of axially symmetric lobes along unit RAS
    ``directions`` (..., 3), with kernel exp(-sharpness l (l + 1))."""
    ls, _ = sh.degrees_orders(lmax)
    kernel = torch.as_tensor(np.exp(-sharpness * ls * (ls + 1)))
    return sh.basis_matrix(torch.as_tensor(directions, dtype=torch.float64), lmax) * kernel


def fod_phantom(shape, affine, bundles: list[Bundle], lmax: int = 8, sharpness: float = 0.03,
                seed: int = 0, noise: float = 0.0) -> tuple[torch.Tensor, np.ndarray]:
    """FOD coefficients (X, Y, Z, C) float32 in tournier07, world frame, and the (X, Y, Z) bool mask
    of the bundles. Each fibre is a ``fibre_lobes`` lobe;
    ``noise`` adds Gaussian noise to the coefficients of the mask voxels."""
    members, dirs = fibre_fractions(shape, affine, bundles)
    coeffs = torch.zeros((*shape, sh.n_coeffs(lmax)), dtype=torch.float64)
    for b in range(len(bundles)):
        coeffs += torch.as_tensor(members[..., b])[..., None] * fibre_lobes(dirs[..., b, :], lmax, sharpness)
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


def _brain_geometry(shape, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Affine (``voxel_size`` mm, centred) and ellipsoid semi-axes (mm) of the brain phantoms."""
    size = np.asarray(shape, dtype=np.float64)
    affine = np.diag([voxel_size] * 3 + [1.0])
    affine[:3, 3] = -voxel_size * (size - 1) / 2
    return affine, 0.45 * voxel_size * size


def _brain_slice(shape, affine, semi, k: int):
    """The fibre families of slice ``k``: [(member (P,), unit RAS direction (P, 3))] and ``inside``
    (P,): circumferential fibres around the S-I axis (away from it), S-I fibres in a central
    cylinder, L-R fibres in a central slab."""
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    ras = apply_affine(affine, np.stack([i, j, np.full_like(i, k)], -1).reshape(-1, 3))
    inside = ((ras / semi) ** 2).sum(-1) <= 1.0
    r = np.hypot(ras[:, 0], ras[:, 1])
    around = np.stack([-ras[:, 1], ras[:, 0], np.zeros_like(r)], -1) / np.maximum(r, 1e-9)[:, None]
    return [(inside & (r > 0.15 * semi[0]), around),
            (inside & (r < 0.3 * semi[0]), np.tile([0.0, 0.0, 1.0], (len(r), 1))),
            (inside & (np.abs(ras[:, 2]) < 0.15 * semi[2]), np.tile([1.0, 0.0, 0.0], (len(r), 1)))], inside


def brain_phantom(shape=(128, 128, 90), voxel_size: float = 1.5, lmax: int = 8,
                  sharpness: float = 0.03) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """A whole-brain-sized FOD for speed tests, defined in closed form (no per-bundle distance
    search, so 128 x 128 x 90 takes seconds): an ellipsoid filling 90% of the grid holding
    circumferential fibres around the S-I axis (away from it), S-I fibres in a central cylinder and
    L-R fibres in a central slab, so two- and three-way crossings occur. Returns coeffs (X, Y, Z, C)
    float32 tournier07 world frame, the bool mask and the affine (``voxel_size`` mm, centred)."""
    affine, semi = _brain_geometry(shape, voxel_size)
    coeffs = torch.zeros((*shape, sh.n_coeffs(lmax)), dtype=torch.float32)
    mask = np.zeros(shape, dtype=bool)
    for k in range(shape[2]):  # a slice at a time: bounded memory
        families, inside = _brain_slice(shape, affine, semi, k)
        total = torch.zeros((len(inside), sh.n_coeffs(lmax)), dtype=torch.float64)
        for member, direction in families:
            total += torch.as_tensor(member)[:, None] * fibre_lobes(direction, lmax, sharpness)
        coeffs[:, :, k] = total.reshape(shape[0], shape[1], -1).float()
        mask[:, :, k] = inside.reshape(shape[:2])
    return coeffs, mask, affine


def brain_dwi_phantom(bvals, bvecs, shape=(128, 128, 90), voxel_size: float = 1.5, s0: float = 1000.0,
                      diffusivities=(1.7e-3, 0.3e-3, 0.3e-3), background_md: float = 0.8e-3
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The DWI of ``brain_phantom``'s fibres (the signal model of ``dwi_phantom``: each fibre family
    a cylindrically symmetric tensor, equal weights, isotropic tissue outside): (X, Y, Z, G) float32
    signal, the bool mask and the affine. ``bvecs`` (G, 3) unit RAS, ``bvals`` s/mm^2."""
    affine, semi = _brain_geometry(shape, voxel_size)
    b, g = np.asarray(bvals, float), np.asarray(bvecs, float)
    l1, l2, _ = diffusivities
    dwi = np.zeros((*shape, len(b)), dtype=np.float32)
    mask = np.zeros(shape, dtype=bool)
    for k in range(shape[2]):
        families, inside = _brain_slice(shape, affine, semi, k)
        signal = np.zeros((len(inside), len(b)))
        count = np.zeros(len(inside))
        for member, direction in families:
            signal += member[:, None] * np.exp(-b * (l2 + (l1 - l2) * (direction @ g.T) ** 2))
            count += member
        iso = np.exp(-b * background_md)
        signal = np.where(count[:, None] > 0, signal / np.maximum(count, 1)[:, None], iso)
        dwi[:, :, k] = (s0 * signal).astype(np.float32).reshape(shape[0], shape[1], -1)
        mask[:, :, k] = inside.reshape(shape[:2])
    return dwi, mask, affine
