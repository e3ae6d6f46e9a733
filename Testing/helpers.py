"""Test helpers: distances, and small synthetic inputs built in code."""
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from DiffTractographyLib.phantoms import Bundle, fod_phantom


def hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Hausdorff distance between two polylines' vertices (mm)."""
    return float(max(cKDTree(b).query(a)[0].max(), cKDTree(a).query(b)[0].max()))


def oblique_affine(spacing=(2.0, 2.0, 2.5), angles_deg=(20.0, -15.0, 30.0), flip_x=False, origin=(-20.0, -25.0, -10.0)):
    """A rotated (and optionally x-flipped) voxel -> RAS affine, as oblique scans have."""
    from scipy.spatial.transform import Rotation

    r = Rotation.from_euler("xyz", angles_deg, degrees=True).as_matrix()
    if flip_x:
        r = r @ np.diag([-1.0, 1.0, 1.0])
    a = np.eye(4)
    a[:3, :3] = r @ np.diag(spacing)
    a[:3, 3] = origin
    return a


def crossing_phantom(shape=(24, 24, 16), affine=None, lmax=8):
    """Two straight bundles crossing at 90 degrees and an arc, on an oblique grid.
    Returns (coeffs (X, Y, Z, C) float32 tournier07 world frame, mask, affine, centre (3,), u, v)."""
    affine = oblique_affine() if affine is None else affine
    lin = affine[:3, :3]
    r = lin / np.linalg.norm(lin, axis=0)
    centre = lin @ ((np.array(shape) - 1) / 2) + affine[:3, 3]
    u, v, w = r[:, 0], r[:, 1], r[:, 2]
    bundles = [Bundle.straight(centre - 22 * u, centre + 22 * u, 5.0),
               Bundle.straight(centre - 22 * v, centre + 22 * v, 5.0),
               Bundle.arc(centre, u, w, 15.0, 4.0, 20, 160)]
    coeffs, mask = fod_phantom(shape, affine, bundles, lmax=lmax)
    return coeffs, mask, affine, centre, u, v


def assert_close(actual, expected, rtol=None, atol=None):
    torch.testing.assert_close(torch.as_tensor(actual), torch.as_tensor(expected), rtol=rtol, atol=atol)
