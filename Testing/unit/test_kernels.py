"""The compiled kernels (the default path of ``track``) reproduce the torch loop (``engine="torch"``,
the reference and the gradient path) streamline by streamline, for every algorithm and option, and
the CUDA variant reproduces the CPU kernels under numba-cuda's simulator."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import crossing_phantom, hausdorff, matched_distances, oblique_affine

from DiffTractographyLib import SHField, track
from DiffTractographyLib.fields import DWIField
from DiffTractographyLib.geometry import apply_affine, axes_rotation
from DiffTractographyLib.images import load_nifti
from DiffTractographyLib.stopping import AllOf, BinaryMask, ThresholdMap
from DiffTractographyLib.tracking.engine import KernelTracker, TrackingCancelled

DATA = Path(__file__).resolve().parents[1] / "Data"
REFERENCE = dict(max_angle=45, cutoff=0.1, min_length=2, max_length=250)


def both(field, seeds, **kw):
    """(kernels, torch loop) tractograms of the same call."""
    return track(field, seeds, device="cpu", **kw), track(field, seeds, device="cpu", engine="torch", **kw)


def assert_same(kernels, reference, tol: float = 0.01, share: float = 1.0):
    """Every streamline of ``reference`` has one in ``kernels`` from the same seed (and start) within
    ``tol`` mm Hausdorff, for at least ``share`` of them; the termination counts agree."""
    d = matched_distances(kernels, reference)
    assert len(d) == len(reference) > 0
    assert (d < tol).mean() >= share, f"{(d >= tol).sum()} of {len(d)} differ (max {d.max():.3g} mm)"
    if share == 1.0:
        assert {k: v for k, v in kernels.meta.items() if v} == {k: v for k, v in reference.meta.items() if v}


@pytest.fixture(scope="module")
def phantom_cross():
    fod, affine = load_nifti(DATA / "phantom_cross" / "fod_mrtrix_masked.nii.gz")
    mask, _ = load_nifti(DATA / "phantom_cross" / "mask.nii.gz")
    rng = np.random.default_rng(0)
    voxels = np.argwhere(mask)[rng.choice(int(mask.sum()), 250)] + rng.uniform(-0.5, 0.5, (250, 3))
    return SHField(fod, affine), mask, apply_affine(affine, voxels)


@pytest.mark.parametrize("name, step", [("phantom_cross", 0.5), ("invivo_small", 0.25)])
def test_sdstream_from_the_reference_seeds(name, step):
    fod, affine = load_nifti(DATA / name / "fod_mrtrix_masked.nii.gz")
    mask, _ = load_nifti(DATA / name / "mask.nii.gz")
    rows = np.loadtxt(DATA / name / "sdstream_seeds_subset.txt")
    kernels, reference = both(SHField(fod, affine), rows[:, :3], seed_directions=rows[:, 3:], mask=mask,
                              step_size=step, **REFERENCE)
    assert_same(kernels, reference, tol=1e-3)


@pytest.mark.parametrize("options", [dict(), dict(sh_precomputed=False), dict(rk4=True), dict(unidirectional=True),
                                     dict(max_length=12.0), dict(precision="float64", peak_polish=2)],
                         ids=["random-starts", "exact-sh", "rk4", "unidirectional", "shared-budget", "polish"])
def test_sdstream_options(phantom_cross, options):
    field, mask, seeds = phantom_cross
    kernels, reference = both(field, seeds, mask=mask, step_size=0.5, **{**REFERENCE, **options})
    assert_same(kernels, reference)
    if "max_length" in options:  # MRtrix3's budget: max_points + 1 vertices at most over both halves
        assert int(kernels.lengths.max()) == 3 + 24 + 1


def test_sdstream_on_a_voxel_frame_fod_without_mask_on_an_oblique_flipped_grid():
    coeffs, mask, affine, centre, *_ = crossing_phantom(affine=oblique_affine(flip_x=True))
    from DiffTractographyLib import sh

    rotated = SHField(coeffs.numpy(), affine)  # the same FOD in DIPY's basis and frame is checked below
    seeds = centre + np.random.default_rng(1).normal(scale=4.0, size=(150, 3))
    kernels, reference = both(rotated, seeds, step_size=0.5, max_angle=45)
    assert_same(kernels, reference)
    dipy_field = SHField(sh.convert_basis(coeffs.numpy(), "tournier07", "descoteaux07"), affine, "descoteaux07",
                         frame="world")
    kernels, reference = both(dipy_field, seeds, step_size=0.5, max_angle=45, mask=(mask, affine))
    assert_same(kernels, reference)


def test_tensordet(phantom_cross):
    _, mask, seeds = phantom_cross
    root = DATA / "phantom_cross"
    dwi, affine = load_nifti(root / "dwi_masked.nii.gz")
    field = DWIField(dwi.astype(np.float32), affine, np.loadtxt(root / "dwi.bval"),
                     np.loadtxt(root / "dwi.bvec").T @ axes_rotation(affine).T)
    rows = np.loadtxt(root / "tensordet_seeds_subset.txt")
    kernels, reference = both(field, rows[:, :3], seed_directions=rows[:, 3:], algorithm="tensordet", mask=mask,
                              step_size=0.5, **REFERENCE)
    assert_same(kernels, reference, tol=1e-3)
    kernels, reference = both(field, seeds, algorithm="tensordet", mask=mask, step_size=0.5, rk4=False, **REFERENCE)
    assert_same(kernels, reference)


@pytest.fixture(scope="module")
def dipy_phantom():
    fod = nib.load(DATA / "phantom_cross" / "fod_dipy_crop.nii.gz")
    mask = np.asarray(nib.load(DATA / "phantom_cross" / "mask_dipy_crop.nii.gz").dataobj) > 0
    rng = np.random.default_rng(7)
    voxels = np.argwhere(mask)[rng.choice(int(mask.sum()), 200)] + rng.uniform(-0.5, 0.5, (200, 3))
    field = SHField(np.asarray(fod.dataobj, dtype=np.float64), fod.affine, basis="descoteaux07")
    return field, mask, apply_affine(fod.affine, voxels)


@pytest.mark.parametrize("algorithm", ["detmax", "prob"])
def test_pmf_methods_from_dipys_peaks_at_the_seeds(dipy_phantom, algorithm):
    """Seeds without a direction start one streamline per DIPY peak (the kernels find the peaks
    themselves; the torch loop asks DIPY). detmax is float64 as DIPY, prob float32 with the same
    counter-based draws: the same streamlines either way."""
    field, mask, seeds = dipy_phantom
    kernels, reference = both(field, seeds, algorithm=algorithm, mask=mask, step_size=0.5, max_angle=45.0)
    assert len(reference) > len(seeds)  # seeds in the crossing have two peaks
    assert_same(kernels, reference, tol=1e-6 if algorithm == "detmax" else 1e-4)


def test_threshold_maps_and_intersections_of_regions(dipy_phantom):
    field, mask, seeds = dipy_phantom
    scalar = np.where(mask, np.asarray(field.coeffs)[..., 0], 0.0)
    region = AllOf(BinaryMask(mask, field.affine, rule="dipy"),
                   ThresholdMap(scalar, field.affine, float(np.percentile(scalar[mask], 40))))
    kernels, reference = both(field, seeds, algorithm="detmax", mask=region, step_size=0.5, max_angle=45.0)
    assert_same(kernels, reference, tol=1e-6)
    assert kernels.meta["SEED_REJECTED"] > 0
    mrtrix_rule = BinaryMask(mask, field.affine, rule="mrtrix")
    kernels, reference = both(field, seeds, algorithm="prob", mask=mrtrix_rule, step_size=0.5, max_length=20.0)
    assert_same(kernels, reference, tol=1e-4)
    assert int(kernels.lengths.max()) <= 2 * 40 + 1  # DIPY's budget: 40 steps per half


def test_chunks_threads_and_seed_ids_do_not_change_the_streamlines(phantom_cross):
    field, mask, seeds = phantom_cross
    ids = np.arange(len(seeds)) * 7 + 3
    whole = KernelTracker(field, mask=mask, algorithm="sdstream", step_size=0.5, device="cpu")(seeds, seed_ids=ids)
    calls = []
    chunked = KernelTracker(field, mask=mask, step_size=0.5, device="cpu", chunk_size=17, nthreads=1)(
        seeds[::-1], seed_ids=ids[::-1], progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (len(seeds), len(seeds)) and len(calls) == -(-len(seeds) // 17)
    order = np.argsort(chunked.seed_index, kind="stable")
    assert np.array_equal(chunked.seed_index[order], whole.seed_index)
    starts = np.r_[0, np.cumsum(chunked.lengths)]
    points = np.concatenate([chunked.points[starts[i]:starts[i + 1]] for i in order])
    assert np.array_equal(points, whole.points)


@pytest.mark.parametrize("algorithm", ["sdstream", "detmax"])
def test_select_keeps_the_first_accepted_in_seed_order_whatever_the_chunks(phantom_cross, algorithm):
    field, mask, seeds = phantom_cross
    everything = KernelTracker(field, mask=mask, algorithm=algorithm, step_size=0.5, device="cpu")(seeds)
    count = len(everything.lengths) // 2
    for chunk_size in (None, 7):
        tracker = KernelTracker(field, mask=mask, algorithm=algorithm, step_size=0.5, device="cpu", chunk_size=chunk_size)
        calls = []
        parts = list(tracker.select(lambda a, b: (seeds[a:b], None), count, len(seeds),
                                    progress=lambda done, total: calls.append((done, total))))
        lengths = np.concatenate([p.lengths for p in parts])
        assert len(lengths) == count and calls[-1] == (count, count)
        np.testing.assert_array_equal(np.concatenate([p.seed_index for p in parts]), everything.seed_index[:count])
        np.testing.assert_array_equal(np.concatenate([p.points for p in parts]),
                                      everything.points[:int(everything.lengths[:count].sum())])
    short = list(tracker.select(lambda a, b: (seeds[a:b], None), 10 ** 6, 30))  # at most 30 seeds
    assert sum(len(p.lengths) for p in short) == int((everything.seed_index < 30).sum())


def test_a_cancelled_run_stops_between_chunks(phantom_cross):
    field, mask, seeds = phantom_cross
    tracker = KernelTracker(field, mask=mask, step_size=0.5, device="cpu", chunk_size=10)
    calls = []
    with pytest.raises(TrackingCancelled):
        tracker(seeds, progress=lambda done, total: calls.append(done), cancel=lambda: len(calls) >= 2)
    assert calls == [10, 20]


def test_gradients_still_flow_through_the_torch_loop(phantom_cross):
    field, mask, seeds = phantom_cross
    coeffs = torch.as_tensor(np.asarray(field.coeffs)).requires_grad_(True)
    t = track(SHField(coeffs, field.affine), seeds[:20], mask=mask, step_size=0.5, min_length=0)
    t.points.sum().backward()
    assert coeffs.grad is not None and float(coeffs.grad.abs().sum()) > 0
    with torch.no_grad():
        plain = track(SHField(coeffs, field.affine), seeds[:20], mask=mask, step_size=0.5, min_length=0)
    assert max(hausdorff(a, b) for a, b in zip(plain.numpy_streamlines(), t.numpy_streamlines())) < 1e-4


SIMULATED = r"""
import json, sys
import numpy as np
sys.path[:0] = sys.argv[1:]
from test_kernels import REPLAYED, replayed, simulator_cases
out = {}
for name, (tracker, seeds) in simulator_cases(device="cuda").items():
    r = tracker(seeds)
    out[name] = [r.points.tolist(), r.lengths.tolist(), r.seed_index.tolist(), dict(r.stats)]
    if name in REPLAYED:
        out[name] += [x.tolist() for x in replayed(tracker, seeds)]
print(json.dumps(out))
"""
#: the cases whose backward (``tracking.replay``) runs under the simulator too (one per method family
#: and step rule that the CUDA backward kernel compiles differently: RK4 SD_Stream, a pmf getter)
REPLAYED = ("sdstream-rk4", "detmax")


def replayed(tracker, seeds) -> tuple[np.ndarray, np.ndarray]:
    """The replay's (seed rows', field's) cotangents of the first 8 seeds' run for a fixed cotangent
    of the points."""
    import torch

    from DiffTractographyLib.tracking.replay import Replay

    result = tracker(seeds[:8])
    grad = torch.from_numpy(np.random.default_rng(0).normal(size=result.points.shape))
    by_row, volume = Replay(tracker)(result, grad)
    return by_row, np.asarray(torch.as_tensor(volume))


def simulator_cases(device: str, **options) -> dict:
    """One short tracker per algorithm (a few hundred streamlines of up to 30 steps per half);
    ``options`` (e.g. ``precision``) for every tracker."""
    fod, affine = load_nifti(DATA / "phantom_cross" / "fod_mrtrix_masked.nii.gz")
    mask, _ = load_nifti(DATA / "phantom_cross" / "mask.nii.gz")
    rng = np.random.default_rng(5)
    seeds = apply_affine(affine, np.argwhere(mask)[rng.choice(int(mask.sum()), 300)] + rng.uniform(-0.5, 0.5, (300, 3)))
    dwi, dwi_affine = load_nifti(DATA / "phantom_cross" / "dwi_masked.nii.gz")
    dwi_field = DWIField(dwi.astype(np.float32), dwi_affine, np.loadtxt(DATA / "phantom_cross" / "dwi.bval"),
                         np.loadtxt(DATA / "phantom_cross" / "dwi.bvec").T @ axes_rotation(dwi_affine).T)
    dipy = nib.load(DATA / "phantom_cross" / "fod_dipy_crop.nii.gz")
    dipy_mask = np.asarray(nib.load(DATA / "phantom_cross" / "mask_dipy_crop.nii.gz").dataobj) > 0
    dipy_seeds = apply_affine(dipy.affine, np.argwhere(dipy_mask)[rng.choice(int(dipy_mask.sum()), 200)])
    dipy_field = SHField(np.asarray(dipy.dataobj, dtype=np.float64), dipy.affine, basis="descoteaux07")
    common = dict(device=device, step_size=0.5, max_angle=45.0, max_length=15.0, min_length=0.0, **options)
    return {
        "sdstream": (KernelTracker(SHField(fod, affine), mask=mask, **common), seeds),
        "sdstream-rk4": (KernelTracker(SHField(fod, affine), mask=mask, rk4=True, **common), seeds),
        "tensordet": (KernelTracker(dwi_field, mask=mask, algorithm="tensordet", **common), seeds),
        "detmax": (KernelTracker(dipy_field, mask=dipy_mask, algorithm="detmax", **common), dipy_seeds),
        "prob": (KernelTracker(dipy_field, mask=dipy_mask, algorithm="prob", **common), dipy_seeds),
    }


def test_the_cuda_kernels_under_the_simulator_track_what_the_cpu_kernels_track():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    here = Path(__file__).resolve().parent
    run = subprocess.run([sys.executable, "-c", SIMULATED, str(here), str(here.parent)], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    simulated = json.loads(run.stdout)
    for name, (tracker, seeds) in simulator_cases(device="cpu").items():
        cpu = tracker(seeds)
        points, lengths, seed_index, stats = simulated[name][:4]
        assert lengths == cpu.lengths.tolist() and seed_index == cpu.seed_index.tolist(), name
        assert np.abs(np.asarray(points, dtype=cpu.points.dtype) - cpu.points).max() < 1e-9, name
        assert stats == dict(cpu.stats), name
        assert 100 < len(lengths) and sum(stats.values()) > 300, name
        if name in REPLAYED:  # the CUDA backward: atomic float64 sums against the CPU's per-cell sums
            seeds_grad, volume_grad = replayed(tracker, seeds)
            np.testing.assert_allclose(simulated[name][4], seeds_grad, rtol=1e-9, atol=1e-9)
            scale = np.abs(volume_grad).max()
            assert scale > 0 and np.abs(np.asarray(simulated[name][5]) - volume_grad).max() < 1e-6 * scale, name
