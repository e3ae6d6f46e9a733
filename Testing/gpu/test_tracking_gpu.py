"""Tracking on CUDA gives the CPU's streamlines (float64: the same decisions, coordinates within
float64 rounding), with stopping regions built on the CPU, and its backward pass (the replay, on the
GPU) gives the CPU's gradients."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from DiffTractographyLib import SHField, ThresholdMap, Tracker, track
from DiffTractographyLib.stopping import AllOf, BinaryMask
from helpers import crossing_phantom

pytestmark = pytest.mark.gpu

COEFFS, MASK, AFFINE, CENTRE, U, V = crossing_phantom()


def seeds(n=40):
    """2n seeds on the axes of the two straight bundles, and their directions."""
    rng = np.random.default_rng(0)
    points = np.concatenate([CENTRE + rng.uniform(-12, 12, (n, 1)) * U, CENTRE + rng.uniform(-12, 12, (n, 1)) * V])
    return points, np.concatenate([np.tile(U, (n, 1)), np.tile(V, (n, 1))])


@pytest.mark.parametrize("algorithm", ["sdstream", "detmax", "prob"])
def test_cuda_streamlines_equal_cpu_streamlines(algorithm):
    basis_coeffs = COEFFS.double()
    points, directions = seeds()
    runs = [track(SHField(basis_coeffs, AFFINE), points, algorithm=algorithm, seed_directions=directions, mask=MASK,
                  step_size=0.5, precision="float64", device=device) for device in ("cpu", "cuda")]
    cpu, cuda = runs
    assert len(cpu) > 40
    assert torch.equal(cpu.seed_index, cuda.seed_index.cpu()) and torch.equal(cpu.lengths, cuda.lengths.cpu())
    torch.testing.assert_close(cuda.points.cpu(), cpu.points, rtol=0, atol=1e-6)


def test_regions_built_on_the_cpu_stop_cuda_tracking():
    along_u = (np.stack(np.meshgrid(*[np.arange(n) for n in MASK.shape], indexing="ij"), -1) @ AFFINE[:3, :3].T
               + AFFINE[:3, 3] - CENTRE) @ U
    region = AllOf(BinaryMask(MASK, AFFINE), ThresholdMap(20.0 - np.abs(along_u), AFFINE, 12.0))
    points, directions = seeds(10)
    runs = [Tracker(SHField(COEFFS, AFFINE), mask=region, step_size=0.5, device=device)(points, seed_directions=directions)
            for device in ("cpu", "cuda")]
    assert len(runs[0]) > 15 and torch.equal(runs[0].lengths, runs[1].lengths.cpu())
    along_u_bundle = runs[1].subset(torch.arange(len(runs[1]))[runs[1].seed_index.cpu() < 10])
    assert np.abs((along_u_bundle.points.cpu().numpy() - CENTRE) @ U).max() < 8.0


def test_backward_on_cuda():
    coeffs = COEFFS.cuda().requires_grad_(True)
    tracker = Tracker(SHField(coeffs, AFFINE), mask=MASK, step_size=0.5, device="cuda")
    for _ in range(2):  # a reused tracker: one graph per call
        coeffs.grad = None
        points, directions = seeds(10)
        tracker(points, seed_directions=directions).points.square().sum().backward()
        assert torch.isfinite(coeffs.grad).all() and coeffs.grad.abs().sum() > 0


@pytest.mark.parametrize("algorithm", ["sdstream", "detmax", "prob"])
def test_cuda_gradients_equal_cpu_gradients(algorithm):
    grads = []
    for device in ("cpu", "cuda"):
        coeffs = COEFFS.double().to(device).requires_grad_(True)
        points, directions = seeds(10)
        start = torch.tensor(points, device=device, requires_grad=True)
        tractogram = track(SHField(coeffs, AFFINE), start, algorithm=algorithm, seed_directions=directions, mask=MASK,
                           step_size=0.5, precision="float64", device=device)
        (tractogram.points.square().sum() + tractogram.points[:, 0].sum()).backward()
        grads.append((coeffs.grad.cpu(), start.grad.cpu()))
    (cpu_coeffs, cpu_seeds), (cuda_coeffs, cuda_seeds) = grads
    assert cpu_coeffs.abs().sum() > 0 and cpu_seeds.abs().sum() > 0
    torch.testing.assert_close(cuda_coeffs, cpu_coeffs, rtol=1e-9, atol=1e-9 * float(cpu_coeffs.abs().max()))
    torch.testing.assert_close(cuda_seeds, cpu_seeds, rtol=1e-9, atol=1e-9 * float(cpu_seeds.abs().max()))


def test_float32_cuda_streamlines_stay_within_0_01_mm_of_the_cpu_kernels():
    """The kernel fidelity cases (MRtrix3's float32 and DIPY's float64 algorithms on the reference
    phantom): the same streamlines, points within 0.01 mm."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
    from test_kernels import simulator_cases

    on_cuda = simulator_cases(device="cuda")
    for name, (tracker, seeds) in simulator_cases(device="cpu").items():
        cpu, cuda = tracker(seeds), on_cuda[name][0](seeds)
        assert cuda.lengths.tolist() == cpu.lengths.tolist(), name
        assert np.abs(cuda.points - cpu.points).max() < 0.01, name
