"""The peak search finds the lobe nearest the start direction, as MRtrix3's get_peak does."""
import pytest
import torch

from DiffTractographyLib import sh
from DiffTractographyLib.peaks import PeakFinder


def lobes(directions, lmax=8, sharpness=0.03, weights=None):
    d = torch.nn.functional.normalize(torch.as_tensor(directions, dtype=torch.float64), dim=-1)
    ls = torch.as_tensor(sh.degrees_orders(lmax)[0], dtype=torch.float64)
    w = torch.ones(len(d), dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    return ((w[:, None] * sh.basis_matrix(d, lmax)) * torch.exp(-sharpness * ls * (ls + 1))).sum(0)


@pytest.mark.parametrize("precomputed", [True, False])
def test_finds_the_lobe_nearest_the_start(precomputed):
    c = lobes([[1, 0, 0], [0, 1, 0.2]]).float()
    finder = PeakFinder(8, precomputed=precomputed)
    starts = torch.tensor([[0.9, 0.3, 0.1], [0.2, 0.9, -0.1], [-0.95, 0.2, 0.0]])
    u, amp = finder.search(c.expand(3, -1), torch.nn.functional.normalize(starts, dim=-1))
    target = torch.nn.functional.normalize(torch.tensor([[1.0, 0, 0], [0, 1, 0.2], [-1.0, 0, 0]]), dim=-1)
    angle = torch.rad2deg(torch.acos((u * target).sum(-1).clamp(max=1.0)))
    assert (angle < 0.05).all(), angle
    exact = sh.amplitudes(c.double(), target.double())
    torch.testing.assert_close(amp.double(), exact, rtol=2e-3, atol=0)


def test_derivatives_match_autograd_of_the_exact_amplitude():
    c = lobes([[0.3, 0.4, 0.8], [1, -0.2, 0.1]], weights=[1.0, 0.7])[None]
    finder = PeakFinder(8, precomputed=False, dtype=torch.float64)
    el = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    az = torch.tensor([2.1], dtype=torch.float64, requires_grad=True)
    f, d_el, d_az, h_el, h_elaz, h_az = finder.derivatives(finder.prepare(c), el, az)
    u = torch.stack([torch.sin(el) * torch.cos(az), torch.sin(el) * torch.sin(az), torch.cos(el)], -1)
    exact = (c * sh.basis_matrix(u, 8)).sum()
    g_el, g_az = torch.autograd.grad(exact, (el, az), create_graph=True)
    torch.testing.assert_close(f, exact.detach()[None])
    torch.testing.assert_close(d_el, g_el.detach())
    torch.testing.assert_close(d_az, g_az.detach() / torch.sin(el.detach()))
    torch.testing.assert_close(h_el, torch.autograd.grad(g_el, el, retain_graph=True)[0].detach())
    torch.testing.assert_close(h_az, torch.autograd.grad(g_az, az)[0].detach() / torch.sin(el.detach()) ** 2)


def test_no_convergence_gives_nan_like_mrtrix():
    finder = PeakFinder(8)
    finder.tolerance = -1.0  # never satisfied: the search gives up after 50 iterations
    u, amp = finder.search(lobes([[0, 0, 1]]).float()[None], torch.tensor([[0.1, 0.0, 0.995]]))
    assert torch.isnan(u).all() and torch.isnan(amp).all()


def test_polish_converges_to_the_exact_maximum():
    c = lobes([[0.2, 0.3, 0.9]], lmax=4, sharpness=0.05)[None]
    finder = PeakFinder(4, precomputed=False, polish=3, dtype=torch.float64)
    u, _ = finder.search(c, torch.nn.functional.normalize(torch.tensor([[0.3, 0.2, 0.9]], dtype=torch.float64), dim=-1))
    target = torch.nn.functional.normalize(torch.tensor([[0.2, 0.3, 0.9]], dtype=torch.float64), dim=-1)
    assert (u - target).abs().max() < 1e-12
