"""Affine and 3-vector helpers. An ``affine`` is always voxel index (i, j, k) -> RAS millimetres,
(4, 4), with voxel centres at integer indices (NIfTI and Slicer's IJKToRAS convention)."""
from __future__ import annotations

import numpy as np

from .errors import InputError


def dot3(a, b):
    """a . b over the last axis (size 3) of numpy arrays or torch tensors, in the order of Eigen's
    unrolled 3-vector reduction, a_x b_x + (a_y b_y + a_z b_z): MRtrix3's ``dot``, ``squaredNorm``
    and so ``normalize``, whose rounding steers its peak search near the SH frame's z axis."""
    p = a * b
    return p[..., 0] + (p[..., 1] + p[..., 2])


def as_affine(affine) -> np.ndarray:
    """Validate and return a float64 (4, 4) affine."""
    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise InputError(f"an affine must be a finite 4x4 matrix, got shape {a.shape}")
    if abs(np.linalg.det(a[:3, :3])) < 1e-12:
        raise InputError("the affine is singular (zero voxel size or collinear axes)")
    return a


def voxel_sizes(affine) -> np.ndarray:
    """Voxel spacing in mm along the three voxel axes (column norms of the linear part)."""
    return np.linalg.norm(as_affine(affine)[:3, :3], axis=0)


def mean_voxel_size(affine) -> float:
    """Geometric mean voxel size in mm, MRtrix3's ``vox()`` used for its default step and lengths."""
    return float(np.prod(voxel_sizes(affine)) ** (1.0 / 3.0))


def axes_rotation(affine, max_shear: float = 1e-4) -> np.ndarray:
    """The orthogonal (3, 3) matrix whose columns are the unit voxel axes in RAS.

    It maps a direction expressed along the voxel axes (FSL b-vectors after the x flip, DIPY's SH
    frame) to RAS. It may be a reflection (det -1, e.g. LAS storage). Sheared affines are refused:
    directions along voxel axes are not defined for them.
    """
    lin = as_affine(affine)[:3, :3]
    r = lin / np.linalg.norm(lin, axis=0)
    off = r.T @ r - np.eye(3)
    if np.abs(off).max() > max_shear:
        raise InputError("the affine has shear; voxel-axis directions are undefined for sheared grids")
    return r


def axial_permutation(affine) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """MRtrix3's ``Axes::get_permutation_to_make_axial``: for each of R, A, S the voxel axis whose
    direction is nearest it (the largest |cosine| in its row; a repeated axis replaced as MRtrix3
    does), and for each voxel axis whether it runs against its RAS axis."""
    lin = as_affine(affine)[:3, :3]
    cosines = np.abs(lin / np.linalg.norm(lin, axis=0))
    perm = [int(np.argmax(cosines[row])) for row in range(3)]  # the first of equal maxima, as Eigen's

    def other(a: int, b: int) -> int:
        return next(i for i in range(3) if i not in (a, b))

    if perm[0] == perm[1]:
        perm[1] = other(perm[0], perm[2])
    if perm[0] == perm[2]:
        perm[2] = other(perm[0], perm[1])
    if perm[1] == perm[2]:
        perm[2] = other(perm[0], perm[1])
    flip = [False] * 3
    for row in range(3):
        flip[perm[row]] = bool(lin[row, perm[row]] < 0)
    return (perm[0], perm[1], perm[2]), (flip[0], flip[1], flip[2])


def realign_to_ras(data, affine):
    """The image (X, Y, Z, ...) as MRtrix3 holds every image it opens (``Header::realign_transform``):
    voxel axes permuted and flipped to run closest to R, A, S; (data, affine), the same voxels at the
    same RAS positions. Interpolation sums its corners and multiplies its weights in the order of
    these axes, so reproducing MRtrix3's to the bit needs its order (numpy views, torch tensors)."""
    perm, flip = axial_permutation(affine)
    a = as_affine(affine).copy()
    if perm == (0, 1, 2) and not any(flip):
        return data, a
    for i in range(3):
        if flip[i]:  # the far end becomes the origin
            a[:3, 3] += (data.shape[i] - 1) * a[:3, i]
            a[:3, i] = -a[:3, i]
    a[:3, :3] = a[:3, list(perm)]
    flipped = [i for i in range(3) if flip[i]]
    order = (*perm, *range(3, data.ndim))
    if isinstance(data, np.ndarray):
        return np.flip(data, flipped).transpose(order), a
    return (data.flip(flipped) if flipped else data).permute(order), a


def restore_voxel_order(held, affine):
    """An array in ``realign_to_ras``'s voxel order (e.g. a gradient with respect to the held image)
    back in the voxel order of ``affine``."""
    perm, flip = axial_permutation(affine)
    order = (*np.argsort(perm).tolist(), *range(3, held.ndim))
    flipped = [i for i in range(3) if flip[i]]
    if isinstance(held, np.ndarray):
        return np.flip(held.transpose(order), flipped)
    back = held.permute(order)
    return back.flip(flipped) if flipped else back


def apply_affine(affine, points: np.ndarray) -> np.ndarray:
    """(..., 3) points through a (4, 4) affine."""
    a = np.asarray(affine, dtype=np.float64)
    p = np.asarray(points, dtype=np.float64)
    return np.einsum("...j,ij->...i", p, a[:3, :3]) + a[:3, 3]  # einsum: no BLAS threads left spinning

