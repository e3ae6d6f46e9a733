"""The backward pass by replay (``tracking.replay``) against the torch loop, which records autograd
history step by step and is the oracle: the same gradients in float64 for every algorithm, hard
choices that carry none, seeds that sum what their streamlines give them, and memory that grows with
the points alone."""
from pathlib import Path

import numpy as np
import pytest
import torch

from DiffTractographyLib import SHField, Tracker, track
from DiffTractographyLib.fields import DWIField
from DiffTractographyLib.geometry import apply_affine, axes_rotation
from DiffTractographyLib.images import load_nifti
from DiffTractographyLib.sh import convert_basis
from DiffTractographyLib.tracking.engine import KernelTracker
from DiffTractographyLib.tracking.replay import Replay
from helpers import crossing_phantom

DATA = Path(__file__).resolve().parents[1] / "Data" / "phantom_cross"
FOD, AFFINE = load_nifti(DATA / "fod_mrtrix_masked.nii.gz")
MASK, _ = load_nifti(DATA / "mask.nii.gz")
RUN = dict(mask=MASK, step_size=0.5, min_length=0.0, max_length=20.0, precision="float64")


def seeds(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return apply_affine(AFFINE, np.argwhere(MASK)[rng.choice(int(MASK.sum()), n)] + rng.uniform(-0.5, 0.5, (n, 3)))


def dwi_field(signal: torch.Tensor) -> DWIField:
    affine = load_nifti(DATA / "dwi_masked.nii.gz")[1]
    bvecs = np.loadtxt(DATA / "dwi.bvec").T @ axes_rotation(affine).T
    return DWIField(signal, affine, np.loadtxt(DATA / "dwi.bval"), bvecs)


def gradients(algorithm: str, engine: str | None, **extra) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(points, field gradient, seed gradient) of a loss weighting every coordinate differently."""
    if algorithm == "tensordet":
        data = torch.as_tensor(np.asarray(load_nifti(DATA / "dwi_masked.nii.gz")[0]), dtype=torch.float64)
        data = data.clone().requires_grad_(True)
        field = dwi_field(data)
    else:
        basis = "tournier07"
        data = torch.as_tensor(np.asarray(FOD), dtype=torch.float64).clone().requires_grad_(True)
        if algorithm in ("detmax", "prob"):  # DIPY's getters, in DIPY's basis (the replay converts)
            basis = "descoteaux07"
        field = SHField(data, AFFINE, basis)
    start = torch.as_tensor(seeds(30), dtype=torch.float64).requires_grad_(True)
    out = track(field, start, algorithm=algorithm, engine=engine, **RUN, **extra)
    weights = torch.linspace(0.3, 1.7, len(out.points), dtype=torch.float64)[:, None] * torch.tensor([1.0, -0.5, 0.25])
    ((out.points * weights).sum() + 0.01 * out.points.square().sum()).backward()
    return out.points.detach(), data.grad, start.grad


@pytest.mark.parametrize("algorithm, extra", [("sdstream", {}), ("sdstream", {"rk4": True}), ("detmax", {}),
                                              ("prob", {}), ("tensordet", {})],
                         ids=["sdstream", "sdstream-rk4", "detmax", "prob", "tensordet"])
def test_replay_gradients_equal_the_torch_loop_in_float64(algorithm, extra):
    points, field_grad, seed_grad = gradients(algorithm, None, **extra)
    oracle_points, oracle_field, oracle_seeds = gradients(algorithm, "torch", **extra)
    assert len(points) > 300 and torch.allclose(points, oracle_points, rtol=0, atol=1e-9)
    assert oracle_field.abs().sum() > 0 and oracle_seeds.abs().sum() > 0
    assert (field_grad - oracle_field).norm() <= 1e-6 * oracle_field.norm()
    assert (seed_grad - oracle_seeds).norm() <= 1e-6 * oracle_seeds.norm()


@pytest.mark.parametrize("algorithm", ["detmax", "prob"])
def test_a_float32_gradient_differentiates_the_relaxation_in_float32(algorithm):
    """detmax and prob differentiate their relaxation in the precision of the gradient they return
    (the field tensor's): replayed for a float32 gradient (float32 products, passes and sums), a
    float64 run gives its float64 replay's field gradient to 1e-5 (measured: detmax 3e-7, prob
    2.5e-6). (The same run and compiled forward as the float64 test above.)"""
    kernels = KernelTracker(SHField(np.asarray(FOD, dtype=np.float64), AFFINE, "descoteaux07"),
                            algorithm=algorithm, **RUN)
    result = kernels(seeds(30))
    grad = torch.linspace(0.3, 1.7, len(result.points), dtype=torch.float64)[:, None].expand(-1, 3)
    wide = Replay(kernels, torch.float64)(result, grad)[1]
    replay = Replay(kernels, torch.float32)
    assert replay.method.cone_basis.dtype == np.float32 and replay.method.basis.dtype == np.float32
    narrow = replay(result, grad)[1]
    assert narrow.dtype == np.float32 and np.abs(wide).sum() > 0
    assert np.linalg.norm(narrow - wide) <= 1e-5 * np.linalg.norm(wide)


@pytest.mark.parametrize("basis", ["descoteaux07", "descoteaux07-nonlegacy"])
def test_sdstream_on_a_dipy_basis_fod_differentiates_through_the_basis_conversion(basis):
    """SD_Stream's kernels sample MRtrix3's basis: a DIPY-basis FOD's gradient comes back through the
    conversion (a signed permutation: its transpose is its inverse), as the torch loop's does."""
    fod = convert_basis(np.asarray(FOD, dtype=np.float64), "tournier07", basis)
    grads = []
    for engine in (None, "torch"):
        data = torch.as_tensor(fod).requires_grad_(True)
        out = track(SHField(data, AFFINE, basis), seeds(10), algorithm="sdstream", engine=engine, **RUN)
        (out.points * torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)).sum().backward()
        grads.append(data.grad)
    assert grads[1].abs().sum() > 0
    assert (grads[0] - grads[1]).norm() <= 1e-6 * grads[1].norm()


def test_seed_directions_get_no_gradient():
    """The start direction only chooses (the peak the search starts from): nothing flows to it."""
    coeffs = torch.as_tensor(np.asarray(FOD), dtype=torch.float64).requires_grad_(True)
    directions = torch.tensor([[1.0, 0.0, 0.0]] * 5, dtype=torch.float64, requires_grad=True)
    out = track(SHField(coeffs, AFFINE), seeds(5), seed_directions=directions, **RUN)
    out.points.sum().backward()
    assert directions.grad is None and coeffs.grad.abs().sum() > 0


def test_a_seed_gathers_both_halves_of_every_streamline_it_starts():
    """detmax moves its points with the seed by translation (the surrogate reads the field at a
    detached position), so d(sum of points)/d(seed) counts the points of every streamline of that
    seed: one per peak at the seed (two in a crossing), each with both halves and the seed once."""
    coeffs, mask, affine, centre, u, _ = crossing_phantom()
    rng = np.random.default_rng(0)
    points = np.concatenate([centre + rng.uniform(-1, 1, (6, 3)), centre + rng.uniform(-8, 8, (6, 1)) * u])
    coeffs = coeffs.double().requires_grad_(True)
    start = torch.as_tensor(points).requires_grad_(True)
    out = track(SHField(coeffs, affine), start, algorithm="detmax", **{**RUN, "mask": mask})
    out.points.sum().backward()
    per_seed = torch.bincount(out.seed_index, minlength=12)
    assert (per_seed[:6] == 2).all()  # both peaks of the crossing
    counts = torch.bincount(out.seed_index, weights=out.lengths.double(), minlength=12)
    torch.testing.assert_close(start.grad, counts[:, None].expand(12, 3), rtol=1e-12, atol=1e-12)


def test_replay_memory_grows_with_the_points_alone():
    """Peak memory of the backward (numpy allocations, traced) for runs of N and 4N seeds: the
    difference is what the extra points need, far less than the field-sized gradient."""
    import tracemalloc

    coeffs = torch.as_tensor(np.asarray(FOD), dtype=torch.float64).requires_grad_(True)
    tracker = Tracker(SHField(coeffs, AFFINE), **RUN)
    peaks, points = [], []
    for n in (40, 160):
        out = tracker(seeds(n, seed=n))
        loss = out.points.sum()
        tracemalloc.start()
        loss.backward()
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        points.append(len(out.points))
    per_point = (peaks[1] - peaks[0]) / (points[1] - points[0])
    field_bytes = coeffs.numel() * 8
    assert peaks[0] < 4 * field_bytes + 600 * points[0]
    assert per_point < 600  # bytes per point: the records (cell, 8 weights, C = 45 cotangents) are bounded
