"""Constrained spherical deconvolution (Tournier et al. 2007), batched in torch, differentiable.

It follows DIPY's ``ConstrainedSphericalDeconvModel`` (and ``auto_response_ssst`` for the response):

- Response: a prolate tensor, eigenvalues (l1, l2, l2) averaged over the voxels with FA > 0.7 in a
  cube of radius 10 voxels around the centre of the volume, and the mean b=0 signal there.
- The response signal on the acquired directions gives its rotational harmonics r_l (least squares);
  the forward matrix is X = Y r_l (Y: the SH basis on the diffusion-weighted directions).
- The unconstrained fit f0 sets the threshold tau * mean amplitude; the constraint set is the
  directions of a 181-point hemisphere where the amplitude (lmax 4 at first) is below it. Then
  f = argmin |X f - s|^2 + |H f|^2, H = lambda' x (the constraint rows), is re-solved until the set
  stops changing (at most ``max_iter`` times), every voxel of a batch at once.
- Gradients: the constraint set is piecewise constant in the signal, so the returned coefficients
  are those of the final solve, f = (X'X + H'H)^-1 X's, differentiated at fixed H (exact almost
  everywhere; the implicit derivative of the active-set solution).

Coefficients are computed in MRtrix3's ``tournier07`` basis and in the frame of the b-vectors used
(``world`` RAS, what MRtrix3 writes, or ``voxel`` axes, what DIPY writes); ``sh.convert_basis`` gives
the other bases exactly. DIPY's coefficients are ``descoteaux07`` (legacy) in the voxel frame.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from .. import sh
from ..dwi import DWI
from ..errors import InputError
from .defaults import FA_THRESHOLD, LAMBDA, MAX_ITER, ROI_RADII, TAU
from .dti import fit_tensor
from .volumes import as_mask, check_frame, frame_bvecs, gather_voxels, scatter_voxels

_DIPY_RIDGE = 1e-5
_LOW_ORDER = sh.n_coeffs(4)  # the first constraint set comes from the lmax-4 part, as in DIPY


@dataclass(frozen=True)
class Response:
    """Single-fibre response: a prolate tensor's eigenvalues (l1, l2, l2) in mm^2/s and the mean b=0
    signal ``s0`` (DIPY's ``(evals, S0)`` tuple); ``n_voxels`` it was averaged over (0: given)."""

    evals: tuple[float, float, float]
    s0: float
    n_voxels: int = 0

    def __post_init__(self):
        if len(self.evals) != 3 or not all(math.isfinite(v) and v > 0 for v in (*self.evals, self.s0)):
            raise InputError(f"a response needs three positive eigenvalues and a positive S0, got {self.evals}, {self.s0}")


class FOD(NamedTuple):
    """SH coefficients (X, Y, Z, C) and how to read them: ``basis`` and ``frame`` (``world``/``voxel``)."""

    coeffs: torch.Tensor
    basis: str
    frame: str


@dataclass(frozen=True)
class Deconvolution:
    """The matrices shared by every voxel of one acquisition.

    forward: (G_dw, C) SH coefficients -> signal / S0 on the diffusion-weighted directions.
    constraint: (D, C) lambda' x the SH basis on the constraint directions.
    dw: (G,) bool, the diffusion-weighted volumes. s0: the response's b=0 signal (the signal scale).
    normal: (C * C,) X'X flattened; products: (D, C * C) the rows of H'H, one per constraint direction,
    so that a voxel's X'X + H'diag(active)H is one GEMM.
    """

    forward: torch.Tensor
    constraint: torch.Tensor
    dw: np.ndarray
    s0: float
    normal: torch.Tensor = dataclasses.field(init=False)
    products: torch.Tensor = dataclasses.field(init=False)

    def __post_init__(self):
        x, h = self.forward, self.constraint
        normal = x.T @ x
        if torch.linalg.cholesky_ex(normal).info:  # super-resolved (more coefficients than directions)
            # DIPY adds 1e-5 to its X'X (raw signal units) when the Cholesky fails; here X is scaled by 1/S0
            ridge = max(_DIPY_RIDGE / self.s0 ** 2, 10 * torch.finfo(x.dtype).eps * float(normal.diagonal().mean()))
            normal = normal + ridge * torch.eye(len(normal), dtype=x.dtype, device=x.device)
        object.__setattr__(self, "normal", normal.reshape(-1))
        object.__setattr__(self, "products", (h[:, :, None] * h[:, None, :]).reshape(len(h), -1))


def estimate_response(dwi: DWI, mask=None, *, roi_center=None, roi_radii=ROI_RADII,
                      fa_threshold: float = FA_THRESHOLD) -> Response:
    """DIPY's ``auto_response_ssst``: the single-fibre response from the voxels with FA above
    ``fa_threshold`` in the cube of half-width ``roi_radii`` voxels around ``roi_center`` (voxel
    indices; default the centre of the volume), restricted to ``mask`` when one is given. Fits use
    all volumes of ``dwi`` (select the shell first)."""
    shape = np.array(dwi.data.shape[:3])
    center = shape // 2 if roi_center is None else np.asarray(roi_center, dtype=int)
    radii = np.broadcast_to(np.asarray(roi_radii, dtype=int), (3,)).copy()
    outside = (center - radii < 0) | (center + radii >= shape)
    radii = np.where(outside, np.minimum(center, shape - center), radii)  # DIPY's _roi_in_volume
    roi = np.zeros(dwi.data.shape[:3], dtype=bool)
    roi[tuple(slice(max(c - r, 0), c + r + 1) for c, r in zip(center, radii))] = True
    if mask is not None:
        roi &= as_mask(dwi, mask)
    signal = torch.as_tensor(dwi.data[roi], dtype=torch.float64)
    fit = fit_tensor(signal, dwi.bvals, dwi.bvecs)
    single = (fit.fa > fa_threshold).numpy()
    if not single.any():
        raise InputError(f"no voxel with FA > {fa_threshold:g} in the response region (radius {radii.tolist()} voxels "
                         f"around voxel {center.tolist()}); lower the FA threshold or widen the region")
    l1, l2 = fit.evals[single, :2].mean(0).tolist()
    s0 = float(signal[single][:, torch.as_tensor(dwi.b0_mask)].mean())
    return Response((l1, l2, l2), s0, int(single.sum()))


def response_rh(response: Response, bvals, bvecs, lmax: int) -> np.ndarray:
    """Rotational harmonics (lmax / 2 + 1,) of the response signal / S0 along z, fitted on the given
    directions (unit ``bvecs`` (G, 3), b in s/mm^2)."""
    g = np.asarray(bvecs, dtype=np.float64)
    l1, l2, l3 = response.evals
    signal = np.exp(-np.asarray(bvals) * (l1 * g[:, 2] ** 2 + l2 * g[:, 1] ** 2 + l3 * g[:, 0] ** 2))
    basis = sh.basis_matrix(torch.as_tensor(g), lmax).numpy()
    coeffs = np.linalg.lstsq(basis, signal, rcond=-1)[0]
    degrees = np.arange(0, lmax + 1, 2)
    zonal = coeffs[[sh.index(l, 0) for l in degrees]]
    return zonal / np.sqrt((2 * degrees + 1) / (4 * np.pi))


def deconvolution(bvals, bvecs, response: Response, lmax: int = 8, *, b0_threshold: float, lambda_: float = LAMBDA,
                  constraint_directions=None, dtype: torch.dtype = torch.float64, device=None) -> Deconvolution:
    """Build the CSD matrices for a single-shell table (``bvecs`` (G, 3) unit, in the frame wanted for
    the coefficients). ``constraint_directions`` (D, 3) default to DIPY's 181-point hemisphere."""
    if lmax < 2 or lmax % 2:
        raise InputError(f"lmax must be an even number >= 2, got {lmax}")
    bvals = np.asarray(bvals, dtype=np.float64)
    dw = bvals > b0_threshold
    n_coeffs = sh.n_coeffs(lmax)
    if n_coeffs > dw.sum():
        warnings.warn(f"lmax {lmax} has {n_coeffs} coefficients for {dw.sum()} diffusion-weighted volumes: the fit "
                      f"relies on the non-negativity constraint (super-resolution)", stacklevel=2)
    g = np.asarray(bvecs, dtype=np.float64)[dw]
    rh = response_rh(response, bvals[dw], g, lmax)
    degrees, _ = sh.degrees_orders(lmax)
    forward = sh.basis_matrix(torch.as_tensor(g), lmax).numpy() * rh[degrees // 2]
    if constraint_directions is None:
        from dipy.data import small_sphere

        constraint_directions = small_sphere.vertices
    directions = np.asarray(constraint_directions, dtype=np.float64)
    scale = lambda_ * n_coeffs * rh[0] / (np.sqrt(len(directions)) * np.sqrt(362.0))  # DIPY's lambda scaling
    constraint = scale * sh.basis_matrix(torch.as_tensor(directions), lmax).numpy()
    return Deconvolution(torch.as_tensor(forward, dtype=dtype, device=device),
                         torch.as_tensor(constraint, dtype=dtype, device=device), dw, float(response.s0))


def constrained_deconvolution(dw_signal: torch.Tensor, model: Deconvolution, tau: float = TAU,
                              max_iter: int = MAX_ITER) -> torch.Tensor:
    """FOD coefficients (N, C) (tournier07, the model's frame) of diffusion-weighted signals (N, G_dw).

    Runs on the model's device and dtype; differentiable with respect to the signal (see the module
    notes). Voxels whose constraint set still changes after ``max_iter`` solves keep the last one,
    with a warning."""
    x, h = model.forward, model.constraint
    signal = dw_signal.to(x.dtype) / model.s0
    n_coeffs = x.shape[1]
    rhs = (signal @ x)[..., None]
    with torch.no_grad():
        f = _spd_solve(model.normal.reshape(1, n_coeffs, n_coeffs), rhs)
        threshold = (h[0, 0] * f[:, 0] * tau)[:, None]
        low = min(_LOW_ORDER, n_coeffs)
        active = f[:, :low] @ h[:, :low].T < threshold
        smooth = ~active.any(1)
        active[smooth] = f[smooth] @ h.T < threshold[smooth]
        used = active.clone()
        todo = torch.arange(len(f), device=f.device)
        for _ in range(max_iter):
            solved = _spd_solve(_normal_matrices(model, active[todo]), rhs[todo])
            f[todo] = solved
            used[todo] = active[todo]
            new = solved @ h.T < threshold[todo]
            changed = (new != active[todo]).any(1)
            active[todo] = new
            todo = todo[changed]
            if not len(todo):
                break
        if len(todo):
            warnings.warn(f"CSD did not converge in {max_iter} iterations in {len(todo)} voxels", stacklevel=2)
    if not (torch.is_grad_enabled() and (signal.requires_grad or x.requires_grad or h.requires_grad)):
        return f
    return _spd_solve(_normal_matrices(model, used), rhs)


def _normal_matrices(model: Deconvolution, active: torch.Tensor) -> torch.Tensor:
    """(N, C, C) X'X + H'diag(active)H for boolean ``active`` (N, D)."""
    n_coeffs = model.forward.shape[1]
    return torch.addmm(model.normal, active.to(model.products.dtype), model.products).reshape(-1, n_coeffs, n_coeffs)


def _spd_solve(q: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Solve q f = rhs for symmetric positive-definite q (..., C, C), rhs (..., C, 1) -> f (..., C)."""
    lower = torch.linalg.cholesky(q)
    return torch.linalg.solve_triangular(lower.mT, torch.linalg.solve_triangular(lower, rhs, upper=False), upper=True)[..., 0]


def fit_fod(dwi: DWI, mask=None, lmax: int = 8, *, response: Response | None = None, basis: str = "tournier07",
            frame: str = "world", shell: float | None = None, tau: float = TAU, lambda_: float = LAMBDA,
            max_iter: int = MAX_ITER, device=None, dtype: torch.dtype = torch.float64,
            chunk_size: int | None = None) -> FOD:
    """Fit a CSD FOD in every voxel of ``mask`` (default: voxels with any non-zero signal).

    dwi: any table; the b=0 volumes and one shell are used (``shell`` s/mm^2; default the largest).
    response: default ``estimate_response`` on that shell within ``mask``.
    basis, frame: of the returned coefficients (``sh.BASES``; ``world`` RAS or ``voxel`` axes).
    chunk_size: voxels solved together (default 1024 on CPU, where cache-sized batches are fastest,
    65536 on CUDA: about 2 GB of float64 normal matrices at lmax 8).
    Returns ``FOD(coeffs (X, Y, Z, C) on ``device``, basis, frame)``, zeros outside the mask.
    """
    sh.check_basis(basis), check_frame(frame)
    dwi = dwi.select_shell(shell)
    mask = as_mask(dwi, mask)
    if response is None:
        response = estimate_response(dwi, mask)
    model = deconvolution(dwi.bvals, frame_bvecs(dwi, frame), response, lmax, b0_threshold=dwi.b0_threshold,
                          lambda_=lambda_, dtype=dtype, device=device)
    dw = torch.as_tensor(model.dw, device=device)
    chunk_size = chunk_size or (65536 if torch.device(device or "cpu").type == "cuda" else 1024)
    coeffs = torch.cat([constrained_deconvolution(chunk[:, dw], model, tau, max_iter)
                        for chunk in gather_voxels(dwi, mask, device, dtype, chunk_size)])
    return FOD(sh.convert_basis(scatter_voxels(coeffs, mask), "tournier07", basis), basis, frame)
