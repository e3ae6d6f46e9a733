"""Gradients flow from streamline points to the FOD/DWI, the seeds and the step size, and agree
with finite differences (float64, exact SH, converged peaks)."""
import numpy as np
import torch

from DiffTractographyLib import SHField, Tracker, sh, track
from DiffTractographyLib.fields import DWIField
from DiffTractographyLib.peaks import PeakFinder
from DiffTractographyLib.phantoms import Bundle, dwi_phantom, fod_phantom
from helpers import single_shell

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = -5.0
ARC = Bundle.arc([0, 0, -8], [1, 0, 0], [0, 0, 1], 9.0, 6.0, 30, 150)
EXACT = dict(sh_precomputed=False, peak_polish=3, precision="float64")


def test_implicit_peak_gradient():
    d = torch.nn.functional.normalize(torch.tensor([[0.3, 0.5, 0.8]], dtype=torch.float64), dim=-1)
    ls = torch.as_tensor(sh.degrees_orders(4)[0], dtype=torch.float64)
    c = (sh.basis_matrix(d, 4) * torch.exp(-0.05 * ls * (ls + 1))).requires_grad_(True)
    finder = PeakFinder(4, precomputed=False, polish=3, dtype=torch.float64)
    start = torch.nn.functional.normalize(d + 0.1, dim=-1)
    assert torch.autograd.gradcheck(lambda c: finder.peak(c, start), (c,), eps=1e-6, atol=1e-6)


def test_sdstream_points_wrt_fod_and_seed():
    coeffs, _ = fod_phantom((6, 6, 6), AFFINE, [ARC], lmax=4, sharpness=0.05)
    coeffs = coeffs.double().requires_grad_(True)
    seed = torch.tensor([[0.3, 0.2, 0.4]], dtype=torch.float64, requires_grad=True)

    def points(c, s):
        return track(SHField(c, AFFINE), s, seed_directions=np.array([[1.0, 0, 0]]), step_size=0.5, max_length=3,
                     min_length=0, cutoff=0.05, max_angle=60, **EXACT).points

    assert torch.autograd.gradcheck(points, (coeffs, seed), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_tensordet_points_wrt_dwi_signal():
    bvals, bvecs = single_shell(12)
    dwi = torch.as_tensor(dwi_phantom((6, 6, 6), AFFINE, [ARC], bvals, bvecs), dtype=torch.float64).requires_grad_(True)
    seed = torch.tensor([[0.3, 0.2, 0.4]], dtype=torch.float64, requires_grad=True)

    def points(signal, s):
        return track(DWIField(signal, AFFINE, bvals, bvecs), s, algorithm="tensordet",
                     seed_directions=np.array([[1.0, 0, 0]]), step_size=0.5, max_length=3, min_length=0,
                     precision="float64").points

    assert torch.autograd.gradcheck(points, (dwi, seed), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_backprop_memory_is_bounded_by_checkpointing():
    """Peak autograd memory of a 400-step run stays below what storing every step would need."""
    coeffs, mask = fod_phantom((10, 10, 10), AFFINE, [ARC], lmax=8)
    coeffs = coeffs.requires_grad_(True)
    seeds = torch.tensor([[0.0, 0.0, 1.0]] * 16) + torch.randn(16, 3, generator=torch.Generator().manual_seed(0)) * 0.3
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        t = track(SHField(coeffs, AFFINE), seeds, mask=mask, step_size=0.05, max_length=20, min_length=0)
    steps = int(t.lengths.max())
    assert steps > 300
    # without checkpointing each step stores the gathered 8 x 45 corner values of every active row
    per_step = 16 * 2 * 8 * 45 * 4
    assert sum(saved) < 0.1 * steps * per_step
    t.points.sum().backward()
    assert torch.isfinite(coeffs.grad).all() and coeffs.grad.abs().sum() > 0


def test_a_tracker_reused_across_optimiser_steps_tracks_the_current_field():
    """One Tracker, called at every step of an optimisation: each call has its own graph (a second
    backward works) and sees the values the optimiser wrote in place."""
    coeffs, mask = fod_phantom((10, 10, 10), AFFINE, [ARC], lmax=8)
    coeffs = coeffs.requires_grad_(True)
    a = np.radians(np.linspace(50, 130, 6))
    seeds = np.stack([9 * np.cos(a), 0.2 + 0 * a, -8 + 9 * np.sin(a)], -1)  # on the arc, along it
    along = np.stack([-np.sin(a), 0 * a, np.cos(a)], -1)
    tracker = Tracker(SHField(coeffs, AFFINE), mask=mask, step_size=0.5, min_length=0)
    first = tracker(seeds, seed_directions=along)
    first.points.square().sum().backward()
    grad = coeffs.grad.clone()
    with torch.no_grad():
        coeffs[..., 1:] = 0.0  # isotropic FOD: no peak anywhere
    second = tracker(seeds, seed_directions=along)
    assert len(first) == 6 and len(second) == 0
    with torch.no_grad():
        coeffs.copy_(fod_phantom((10, 10, 10), AFFINE, [ARC], lmax=8)[0])
    coeffs.grad = None
    tracker(seeds, seed_directions=along).points.square().sum().backward()
    torch.testing.assert_close(coeffs.grad, grad)
