"""Wild (residual) bootstrap of diffusion signals under a linear model, in torch, vectorised over voxels.

A model is a design matrix X (G, K) fitted by ordinary least squares to y, the signal (``sh_design``:
an SH series on the diffusion-weighted volumes and a mean of the b=0 volumes) or its logarithm
(``dti_design``: the log-linear tensor, MRtrix3 Tensor_Det's own fit). With the hat matrix
H = X (X'X)^-1 X' and leverages h = diag(H), a bootstrap replicate of a voxel is

    y* = H y + v * (y - H y) / sqrt(1 - h),        v = +-1 with probability 1/2 (Rademacher),

one sign per voxel and volume. The residuals carry the HC2 leverage correction (their variance is
sigma^2 (1 - h) under the model; dividing restores sigma^2), with Rademacher weights: the wild
bootstrap of DTI of Whitcher et al. (2008, Hum. Brain Mapp. 29:346) and Jones (2008, IEEE TMI
27:1268). Volumes with h = 1 (no redundancy) get no residual. The signs come from the counter-based
``rng``: one 32-bit draw gives 32 signs, keyed by (rng seed, repeat, voxel index), so a voxel's
replicate does not depend on which other voxels are drawn, on chunking or on the device.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import rng, sh
from ..models.defaults import MIN_SIGNAL
from ..models.dti import design_matrix

#: the rng stream of the bootstrap signs is this plus the repeat number (streams 0-3 serve seeding)
SIGN_STREAM = 16
#: leverages above this are treated as 1 (the volume is fitted exactly: no residual to resample)
MAX_LEVERAGE = 1.0 - 1e-6


def dti_design(bvals, bvecs) -> torch.Tensor:
    """(G, 7) float64 design of the log-linear tensor model (log S = X beta), b in s/mm^2."""
    return design_matrix(bvals, bvecs)


def sh_design(bvals, bvecs, lmax: int, b0: np.ndarray) -> torch.Tensor:
    """(G, 1 + C) float64 design of the signal as the mean of the b=0 volumes (``b0`` (G,) bool) and a
    real symmetric SH series (tournier07) on the unit ``bvecs`` of the others, of order ``lmax`` or
    lower: the largest even order whose coefficients number at most half the diffusion-weighted
    volumes, so that residuals keep degrees of freedom (30 directions: order 4; 60: 6; 90: 8)."""
    b0 = np.asarray(b0, dtype=bool)
    lmax = max([l for l in range(2, lmax + 1, 2) if sh.n_coeffs(l) <= (~b0).sum() / 2] or [2])
    basis = sh.basis_matrix(torch.as_tensor(np.asarray(bvecs, dtype=np.float64)), lmax)
    design = torch.zeros((len(b0), 1 + basis.shape[1]), dtype=torch.float64)
    design[b0, 0] = 1.0
    design[~b0, 1:] = basis[~b0]
    return design


def rademacher(rng_seed: int, voxels: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """(V, n) float64 signs +-1 of the flat voxel indices ``voxels`` (V,) in draw ``stream``: bit j of
    32-bit draw d is the sign of volume 32 d + j."""
    key = rng.stream_key(rng_seed, voxels.to(torch.int64), stream)
    draws = torch.arange((n + 31) // 32, dtype=torch.int64, device=voxels.device)
    bits = rng.draw_bits(key[:, None], draws[None, :])                      # (V, D) 32 bits in int64
    shifts = torch.arange(32, dtype=torch.int64, device=voxels.device)
    signs = ((bits[:, :, None] >> shifts) & 1).reshape(len(voxels), -1)[:, :n]
    return 1.0 - 2.0 * signs.to(torch.float64)


class WildBootstrap:
    """The wild bootstrap of the signals (V, G) of some voxels under the model ``design`` (G, K).

    log: fit the log signal (clipped below at ``MIN_SIGNAL``, as the tensor fits) and return
    exp(y*); else fit the signal itself. ``draw`` returns float32 replicates (V, G).
    """

    def __init__(self, signal: torch.Tensor, design: torch.Tensor, *, log: bool):
        x = design.to(device=signal.device, dtype=torch.float64)
        hat = x @ torch.linalg.pinv(x)                                       # (G, G), symmetric
        leverage = hat.diagonal()
        y = signal.to(torch.float64)
        y = torch.log(y.clamp_min(MIN_SIGNAL)) if log else y
        self.fitted = y @ hat                                                # H y per voxel (H symmetric)
        scale = torch.where(leverage < MAX_LEVERAGE, (1.0 - leverage).clamp_min(1e-12).rsqrt(),
                            torch.zeros_like(leverage))
        self.residuals = (y - self.fitted) * scale
        self.log = log

    def draw(self, rng_seed: int, voxels: torch.Tensor, repeat: int) -> torch.Tensor:
        """Replicate ``repeat`` (>= 0) of the voxels, whose flat indices ``voxels`` (V,) key the signs."""
        signs = rademacher(rng_seed, voxels, SIGN_STREAM + repeat, self.fitted.shape[1])
        y = torch.addcmul(self.fitted, signs, self.residuals)
        return (torch.exp(y) if self.log else y).to(torch.float32)
