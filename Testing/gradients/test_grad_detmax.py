"""Gradients of detmax. The chosen vertex is piecewise constant in the FOD, so the points depend on
the seeds by translation only (exact, gradchecked) and the FOD coefficients get the gradient of a
straight-through soft argmax surrogate (the relaxed direction function is gradchecked; its gradient
is not that of the hard forward, which is 0)."""
from __future__ import annotations

import numpy as np
import torch
from helpers import lobes_sh

from DiffTractographyLib.fields import SHField
from DiffTractographyLib.tracking.methods.detmax import DeterministicMaximum
from DiffTractographyLib.tracking import track

FIBRE = np.array([1.0, 0.2, 0.1]) / np.linalg.norm([1.0, 0.2, 0.1])
OTHER = np.array([0.1, 1.0, 0.3]) / np.linalg.norm([0.1, 1.0, 0.3])
SEEDS = [[5.0, 5.0, 5.0], [4.0, 6.3, 5.5]]
SETTINGS = dict(algorithm="detmax", seed_directions=[[1.0, 0.0, 0.0], [1.0, 0.1, 0.0]], step_size=0.5,
                max_length=3.0, device="cpu")


def two_lobe_coeffs() -> torch.Tensor:
    """(6, 6, 6, 45) float64: a strong lobe along FIBRE growing with x, a weaker one along OTHER."""
    x = np.arange(6)[:, None, None, None] / 6
    c = lobes_sh(FIBRE) * (1.0 + 0.5 * x) + lobes_sh(OTHER) * 0.4 * (1.0 - x)
    return torch.tensor(np.broadcast_to(c, (6, 6, 6, 45)).copy())


def field(coeffs: torch.Tensor) -> SHField:
    return SHField(coeffs, np.diag([2.0, 2.0, 2.0, 1.0]), basis="descoteaux07")


def test_forward_keeps_the_hard_vertex_when_coefficients_require_grad():
    coeffs = two_lobe_coeffs()
    with torch.no_grad():
        hard = track(field(coeffs), SEEDS, **SETTINGS).points
    out = track(field(coeffs.requires_grad_()), SEEDS, **SETTINGS)
    assert out.points.requires_grad
    assert torch.equal(out.points.detach(), hard)


def test_points_wrt_seeds_gradcheck():
    coeffs = two_lobe_coeffs()
    seeds = torch.tensor(SEEDS, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: track(field(coeffs), s, **SETTINGS).points, (seeds,), fast_mode=True)


def test_seed_gradient_stays_exact_when_coefficients_require_grad():
    coeffs = two_lobe_coeffs().requires_grad_()
    seeds = torch.tensor(SEEDS, dtype=torch.float64, requires_grad=True)
    out = track(field(coeffs), seeds, **SETTINGS)
    (out.points ** 2).sum().backward()
    per_streamline = [2.0 * p.detach().sum(0) for p in out.streamlines()]
    torch.testing.assert_close(seeds.grad, torch.stack(per_streamline))
    assert torch.isfinite(coeffs.grad).all() and coeffs.grad.abs().sum() > 0


def test_soft_argmax_gradcheck_wrt_coefficients():
    method = DeterministicMaximum(field(two_lobe_coeffs()), cutoff=0.1, max_angle=45.0)
    c = torch.tensor(np.stack([lobes_sh(FIBRE) + 0.3 * lobes_sh(OTHER), lobes_sh(OTHER)]), requires_grad=True)
    previous = torch.tensor(np.array([FIBRE, OTHER]))
    cos = previous @ method.vertices.T
    pmf = (c @ method.basis).detach()
    admissible = method.admissible(pmf, method.outside_cone(cos.abs()), pmf.amax(-1))
    sign = torch.where(cos > 0, 1.0, -1.0).double()
    assert torch.autograd.gradcheck(lambda x: method.soft_direction(x @ method.basis, admissible, sign, None), (c,))


def test_soft_argmax_tends_to_the_hard_vertex():
    coeffs = two_lobe_coeffs()
    pos = torch.tensor(SEEDS, dtype=torch.float64)
    previous = torch.tensor(SETTINGS["seed_directions"], dtype=torch.float64)
    hard, _ = DeterministicMaximum(field(coeffs), cutoff=0.1, max_angle=45.0).next(pos, previous)
    cold = DeterministicMaximum(field(coeffs), cutoff=0.1, max_angle=45.0, temperature=1e-4, relaxed=True)
    soft, _ = cold.next(pos, previous)
    torch.testing.assert_close(soft, hard, atol=1e-9, rtol=0)


def test_surrogate_turns_the_step_towards_added_fod_mass():
    """With a lobe added 20 degrees away from the fibre, inside the cone, d/de [u . towards] > 0 for
    coeffs + e * lobe(towards) under the surrogate (the hard step does not move)."""
    side = np.cross(FIBRE, [0.0, 0.0, 1.0])
    towards = np.cos(np.radians(20.0)) * FIBRE + np.sin(np.radians(20.0)) * side / np.linalg.norm(side)
    coeffs = two_lobe_coeffs().requires_grad_()
    method = DeterministicMaximum(field(coeffs), cutoff=0.1, max_angle=45.0)
    u, _ = method.next(torch.tensor(SEEDS, dtype=torch.float64), torch.tensor(np.array([FIBRE, FIBRE])))
    (u @ torch.tensor(towards)).sum().backward()
    added = torch.tensor(np.broadcast_to(lobes_sh(towards), (6, 6, 6, 45)).copy())
    assert (coeffs.grad * added).sum() > 0
