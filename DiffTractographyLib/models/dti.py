"""Diffusion tensor fits on the log signal (OLS and WLS), batched over voxels, differentiable.

The estimators are DIPY's ``TensorModel`` ones: the signal is clipped below at ``min_signal``
(1e-4) before the log; WLS weights each volume by the squared signal that an OLS fit predicts
(Chung et al. 2006); eigenvalues are clipped below at 1e-6 / max(|B|). Diffusivities are in mm^2/s;
directions are in the frame of the b-vectors given (``fit_dti``: RAS ``world`` or ``voxel`` axes).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..dwi import DWI
from ..dwi import design_matrix as dwi_design_matrix
from ..errors import InputError
from .defaults import METHODS, MIN_SIGNAL
from .volumes import as_mask, frame_bvecs, gather_voxels, scatter_voxels



def design_matrix(bvals, bvecs, *, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """``dwi.design_matrix`` as a tensor of ``dtype`` on ``device``."""
    numpy_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    return torch.as_tensor(dwi_design_matrix(bvals, bvecs, dtype=numpy_dtype), device=device)


@dataclass
class TensorFit:
    """Fitted tensors, any leading shape (...).

    tensor: (..., 3, 3) mm^2/s. s0: (...) fitted b=0 signal. evals: (..., 3) descending, clipped at
    the minimum diffusivity. evecs: (..., 3, 3), column j belongs to evals[..., j].
    """

    tensor: torch.Tensor
    s0: torch.Tensor
    evals: torch.Tensor
    evecs: torch.Tensor

    @property
    def fa(self) -> torch.Tensor:
        """Fractional anisotropy (...,), from the clipped eigenvalues as DIPY computes it."""
        l1, l2, l3 = self.evals.unbind(-1)
        num = 0.5 * ((l1 - l2) ** 2 + (l2 - l3) ** 2 + (l3 - l1) ** 2)
        den = (self.evals ** 2).sum(-1)
        ratio = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
        return _safe_sqrt(ratio)

    @property
    def md(self) -> torch.Tensor:
        """Mean diffusivity (...,), mm^2/s."""
        return self.evals.mean(-1)

    @property
    def ad(self) -> torch.Tensor:
        """Axial diffusivity (largest eigenvalue), mm^2/s."""
        return self.evals[..., 0]

    @property
    def rd(self) -> torch.Tensor:
        """Radial diffusivity (mean of the two smaller eigenvalues), mm^2/s."""
        return self.evals[..., 1:].mean(-1)

    @property
    def v1(self) -> torch.Tensor:
        """Principal eigenvector (..., 3), unit, sign arbitrary."""
        return self.evecs[..., 0]

    @property
    def color_fa(self) -> torch.Tensor:
        """Colour-coded FA (..., 3): |v1| x FA clipped to [0, 1] (red x, green y, blue z of the frame)."""
        return self.v1.abs() * self.fa.clamp(0.0, 1.0)[..., None]


def fit_tensor(signal: torch.Tensor, bvals, bvecs, method: str = "WLS", min_signal: float = MIN_SIGNAL) -> TensorFit:
    """Fit tensors to ``signal`` (..., G) measured with ``bvals`` (G,) s/mm^2 and unit ``bvecs`` (G, 3).

    Runs on the signal's device and dtype; differentiable with respect to the signal (away from
    repeated eigenvalues for ``evecs``)."""
    if method not in METHODS:
        raise InputError(f"unknown tensor fit method {method!r}; choose one of {', '.join(METHODS)}")
    if not signal.is_floating_point():
        raise InputError("the signal must be a floating-point tensor")
    x = design_matrix(bvals, bvecs, dtype=signal.dtype, device=signal.device)
    if signal.shape[-1] != x.shape[0]:
        raise InputError(f"the signal has {signal.shape[-1]} volumes but the gradient table {x.shape[0]}")
    shape = signal.shape[:-1]
    log_s = torch.log(signal.reshape(-1, x.shape[0]).clamp_min(min_signal))
    scale = x.abs().amax(0)  # column scaling keeps the normal equations well conditioned
    xs = x / scale
    beta = log_s @ torch.linalg.pinv(xs).T
    if method == "WLS":  # normal equations X' W^2 X beta = X' W^2 y, built as GEMMs over the volumes
        predicted = beta @ xs.T  # log of the OLS-predicted signal; weights are only defined up to a scale
        w2 = torch.exp(2.0 * (predicted - predicted.amax(-1, keepdim=True)))
        outer = (xs[:, :, None] * xs[:, None, :]).reshape(len(xs), -1)
        normal = (w2 @ outer).reshape(-1, 7, 7)
        beta = torch.cholesky_solve(((w2 * log_s) @ xs)[..., None], torch.linalg.cholesky(normal))[..., 0]
    beta = beta / scale
    dxx, dyy, dzz, dxy, dxz, dyz, log_s0 = beta.unbind(-1)
    tensor = torch.stack([torch.stack([dxx, dxy, dxz], -1), torch.stack([dxy, dyy, dyz], -1),
                          torch.stack([dxz, dyz, dzz], -1)], -2)
    evals, evecs = torch.linalg.eigh(tensor)
    min_diffusivity = 1e-6 / float(-x.min())
    evals = evals.flip(-1).clamp_min(min_diffusivity)
    evecs = evecs.flip(-1)
    return TensorFit(tensor.reshape(shape + (3, 3)), torch.exp(log_s0).reshape(shape),
                     evals.reshape(shape + (3,)), evecs.reshape(shape + (3, 3)))


def fit_dti(dwi: DWI, mask=None, *, method: str = "WLS", frame: str = "world", device=None,
            dtype: torch.dtype = torch.float64, chunk_size: int = 200_000) -> TensorFit:
    """Fit a tensor in every voxel of ``mask`` (default: voxels with any non-zero signal).

    Returns a ``TensorFit`` of shape (X, Y, Z): zeros outside the mask. Directions are in ``frame``:
    ``world`` (RAS) or ``voxel`` (the voxel axes, DIPY's frame). All volumes are used (select a shell
    first with ``dwi.select_shell`` for a single-shell fit). InputError without a diffusion-weighted volume."""
    dwi.check_diffusion_weighted()
    bvecs = frame_bvecs(dwi, frame)
    mask = as_mask(dwi, mask)
    parts = [fit_tensor(chunk, dwi.bvals, bvecs, method) for chunk in gather_voxels(dwi, mask, device, dtype, chunk_size)]
    fields = {name: torch.cat([getattr(p, name) for p in parts]) for name in ("tensor", "s0", "evals", "evecs")}
    return TensorFit(**{name: scatter_voxels(value, mask) for name, value in fields.items()})


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt with a zero (not infinite) gradient at 0."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def tensors_along(tractogram, field):
    """``tractogram`` with per-point ``tensor`` (P, 9; RAS, mm^2/s, row-major) and ``FA`` (P,): the
    least-squares tensor of ``field``'s DWI signal (a ``DWIField``) interpolated at each point
    (MRtrix3's rule, as Tensor_Det fits it), the arrays SlicerDMRI colours and glyphs by. A last
    point past the image edge takes the tensor at the edge."""
    from ..interpolation import VolumeField

    volume = VolumeField(field.data, field.affine, rule="mrtrix")
    grid = volume.grid
    affine = torch.as_tensor(grid.affine, dtype=torch.float64, device=field.data.device)
    voxels = grid.to_voxel(tractogram.points.detach().to(field.data.device))
    voxels = voxels.clamp(min=0).minimum(torch.as_tensor(grid.shape, device=voxels.device) - 1.0)
    signal, _ = volume.sample(voxels @ affine[:3, :3].T + affine[:3, 3])
    fit = fit_tensor(signal.double(), field.bvals, field.bvecs, method="OLS")
    return dataclasses.replace(tractogram, data_per_point={
        **tractogram.data_per_point, "tensor": fit.tensor.reshape(-1, 9).float().cpu(), "FA": fit.fa.float().cpu()})
