"""Test helpers: tolerances and small synthetic inputs built in code."""
from __future__ import annotations

import numpy as np
import torch


def hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Hausdorff distance between two polylines' vertices (mm)."""
    d = np.sqrt(((np.asarray(a)[:, None, :] - np.asarray(b)[None, :, :]) ** 2).sum(-1))
    return float(max(d.min(1).max(), d.min(0).max()))


def assert_close(actual, expected, rtol=None, atol=None):
    torch.testing.assert_close(torch.as_tensor(actual), torch.as_tensor(expected), rtol=rtol, atol=atol)


def lobes_sh(directions, weights=None, lmax: int = 8, basis: str = "descoteaux07", sharpness: float = 20.0) -> np.ndarray:
    """SH coefficients (C,) in ``basis`` of an FOD made of antipodal lobes
    sum_i w_i exp(sharpness ((u . d_i)^2 - 1)) along unit ``directions`` (K, 3), fitted by least squares
    on 724 directions (DIPY's repulsion724)."""
    from dipy.data import default_sphere

    from DiffTractographyLib import sh

    d = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
    w = np.ones(len(d)) if weights is None else np.asarray(weights, dtype=np.float64)
    u = np.concatenate([default_sphere.vertices, -default_sphere.vertices])
    values = (w * np.exp(sharpness * ((u @ d.T) ** 2 - 1.0))).sum(-1)
    b = sh.basis_matrix(torch.as_tensor(u), lmax, basis).numpy()
    return np.linalg.lstsq(b, values, rcond=None)[0]


def dipy_tracking(getter: str, coeffs: np.ndarray, affine, mask: np.ndarray, seeds: np.ndarray, max_angle: float,
                  step_size: float, voxel_directions: np.ndarray | None = None, **local_tracking) -> list:
    """DIPY's LocalTracking with ``getter`` (a dipy.direction class name) built by ``from_shcoeff`` on
    descoteaux07 (legacy) ``coeffs`` with default_sphere, and a BinaryStoppingCriterion(``mask``):
    streamlines (RAS mm) from ``seeds`` (RAS mm), starting along ``voxel_directions`` (SH frame) or
    along DIPY's peaks at the seeds."""
    import dipy.direction
    from dipy.data import default_sphere
    from dipy.tracking.local_tracking import LocalTracking
    from dipy.tracking.stopping_criterion import BinaryStoppingCriterion

    dg = getattr(dipy.direction, getter).from_shcoeff(coeffs, max_angle=max_angle, sphere=default_sphere)
    start = None if voxel_directions is None else np.asarray(voxel_directions, dtype=np.float64)[:, None, :]
    return list(LocalTracking(dg, BinaryStoppingCriterion(mask), np.asarray(seeds, dtype=np.float64), affine,
                              step_size=step_size, initial_directions=start, **local_tracking))
