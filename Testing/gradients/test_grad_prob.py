"""Gradients of prob. With the noise fixed by its keys, the relaxed path (steps along the
Gumbel-softmax direction) is smooth in seeds and coefficients and passes gradcheck; the default
forward keeps the hard Gumbel-max draw and passes the relaxation's gradient straight through."""
from __future__ import annotations

import numpy as np
import torch
from helpers import lobes_sh

from DiffTractographyLib.fields import SHField
from DiffTractographyLib.tracking.methods.prob import Probabilistic
from DiffTractographyLib.tracking.propagation import propagate
from DiffTractographyLib.tracking import track

FIBRE = np.array([1.0, 0.3, 0.2]) / np.linalg.norm([1.0, 0.3, 0.2])
OTHER = np.array([0.6, 1.0, 0.0]) / np.linalg.norm([0.6, 1.0, 0.0])
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
KEYS = (torch.tensor([0, 1]), torch.tensor([0, 0]))


def small_coeffs(lmax: int = 2) -> torch.Tensor:
    """(2, 2, 2, C) float64: a lobe along FIBRE and one along OTHER whose mix varies over the voxels."""
    mix = np.arange(8).reshape(2, 2, 2, 1) / 7.0
    return torch.tensor(lobes_sh(FIBRE, lmax=lmax, sharpness=4.0) * (1.0 + mix)
                        + lobes_sh(OTHER, lmax=lmax, sharpness=4.0) * (1.0 - mix))


def relaxed_points(coeffs: torch.Tensor, seeds: torch.Tensor, checkpoint_every: int = 32) -> torch.Tensor:
    method = Probabilistic(SHField(coeffs, AFFINE, basis="descoteaux07"), cutoff=0.1, max_angle=45.0, rng_seed=5,
                           temperature=1.0, relaxed=True, dtype=torch.float64)
    start = torch.tensor(np.array([FIBRE, FIBRE]))
    half = propagate(method, seeds, start, step_size=0.5, max_points=6, keys=KEYS, checkpoint_every=checkpoint_every)
    assert half.counts.tolist() == [6, 6]
    return half.points


def test_relaxed_path_gradcheck_wrt_coefficients_and_seeds():
    coeffs = small_coeffs().requires_grad_()
    seeds = torch.tensor([[2.1, 1.7, 2.3], [1.4, 2.6, 1.9]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(relaxed_points, (coeffs, seeds), fast_mode=True)


def test_checkpointed_backward_redraws_the_same_noise():
    seeds = torch.tensor([[2.1, 1.7, 2.3], [1.4, 2.6, 1.9]], dtype=torch.float64)
    grads = []
    for every in (2, 100):
        coeffs = small_coeffs().requires_grad_()
        relaxed_points(coeffs, seeds, checkpoint_every=every).sum().backward()
        grads.append(coeffs.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=0, rtol=0)


def test_straight_through_keeps_the_hard_draw_and_passes_a_gradient():
    coeffs = torch.tensor(np.broadcast_to(lobes_sh(FIBRE), (6, 6, 6, 45)).copy())
    settings = dict(algorithm="prob", step_size=0.5, max_length=3.0, precision="float64", rng_seed=2, device="cpu")
    seeds = [[6.0, 5.0, 5.5], [5.0, 6.0, 6.5]]
    with torch.no_grad():
        hard = track(SHField(coeffs, np.diag([2.0, 2.0, 2.0, 1.0]), basis="descoteaux07"), seeds, **settings).points
    coeffs.requires_grad_()
    out = track(SHField(coeffs, np.diag([2.0, 2.0, 2.0, 1.0]), basis="descoteaux07"), seeds, **settings)
    assert torch.equal(out.points.detach(), hard)
    out.points.sum().backward()
    assert torch.isfinite(coeffs.grad).all() and coeffs.grad.abs().sum() > 0
