"""Test helpers: distances, and small synthetic inputs built in code."""
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial import cKDTree

from DiffTractographyLib.phantoms import Bundle, fod_phantom


def cuda_ptx(kernel, signature) -> str | None:
    """PTX for sm_90 of the Python function ``kernel`` compiled as a CUDA kernel at ``signature``, or
    None where numba-cuda cannot compile to PTX (it needs NVVM: numba-cuda[cu12]; no GPU)."""
    try:
        from numba import cuda

        return cuda.compile_ptx(kernel, signature, cc=(9, 0))[0]
    except Exception:
        return None


def hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Hausdorff distance between two polylines' vertices (mm)."""
    return float(max(cKDTree(b).query(a)[0].max(), cKDTree(a).query(b)[0].max()))


def matched_distances(ours, reference) -> np.ndarray:
    """Hausdorff distance (mm) from each streamline of the ``reference`` tractogram to ours from the
    same seed and start (the k-th of a seed's streamlines in each; inf when ours has none), exact
    coordinates."""
    def keyed(t):
        points = t.points.detach().cpu().numpy() if torch.is_tensor(t.points) else t.points
        offsets = np.r_[0, np.cumsum(np.asarray(t.lengths))]
        seen: dict = {}
        out = {}
        for i, s in enumerate(np.asarray(t.seed_index).tolist()):
            k = seen[s] = seen.get(s, -1) + 1
            out[(s, k)] = points[offsets[i]:offsets[i + 1]]
        return out

    a, b = keyed(ours), keyed(reference)
    return np.array([hausdorff(a[k], v) if k in a else np.inf for k, v in b.items()])


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
    descoteaux07 (legacy) ``coeffs`` with default_sphere, stopping at ``mask`` (a 3-D array for a
    BinaryStoppingCriterion, or any DIPY stopping criterion):
    streamlines (RAS mm) from ``seeds`` (RAS mm), starting along ``voxel_directions`` (SH frame) or
    along DIPY's peaks at the seeds."""
    import dipy.direction
    from dipy.data import default_sphere
    from dipy.tracking.local_tracking import LocalTracking
    from dipy.tracking.stopping_criterion import BinaryStoppingCriterion

    dg = getattr(dipy.direction, getter).from_shcoeff(coeffs, max_angle=max_angle, sphere=default_sphere)
    start = None if voxel_directions is None else np.asarray(voxel_directions, dtype=np.float64)[:, None, :]
    criterion = BinaryStoppingCriterion(mask) if isinstance(mask, np.ndarray) else mask
    return list(LocalTracking(dg, criterion, np.asarray(seeds, dtype=np.float64), affine,
                              step_size=step_size, initial_directions=start, **local_tracking))


def single_shell(n: int, bvalue: float = 1000.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One b=0 volume, then ``n`` random unit directions at ``bvalue`` s/mm^2: bvals (n + 1,), bvecs (n + 1, 3)."""
    g = np.random.default_rng(seed).normal(size=(n, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return np.r_[0.0, np.full(n, bvalue)], np.vstack([[0, 0, 0], g])
