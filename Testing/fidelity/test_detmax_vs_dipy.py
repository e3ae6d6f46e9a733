"""detmax against DIPY 1.12.1's LocalTracking + DeterministicMaximumDirectionGetter: the stored
reference (a subset of phantom_cross's detmax_ref) and DIPY itself, run live on the same inputs."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import dipy_tracking, lobes_sh
from scipy.spatial.transform import Rotation

from DiffTractographyLib.fields import SHField
from DiffTractographyLib.geometry import apply_affine, axes_rotation
from DiffTractographyLib.io import load_tractogram
from DiffTractographyLib.stopping import ThresholdMap
from DiffTractographyLib.tracking import track

DATA = Path(__file__).resolve().parents[1] / "Data" / "phantom_cross"


def ours(coeffs, affine, mask, seeds, max_angle, step_size, directions=None):
    field = SHField(torch.as_tensor(coeffs, dtype=torch.float64), affine, basis="descoteaux07")
    out = track(field, seeds, algorithm="detmax", seed_directions=directions, mask=mask, max_angle=max_angle,
                step_size=step_size, device="cpu")
    return [s.numpy() for s in out.streamlines()], out.data_per_streamline["seed_index"].numpy()


def max_vertex_distance(a: list, b: list) -> float:
    """Largest distance between corresponding vertices (mm); inf if any point count differs."""
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b)):
        return float("inf")
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def phantom():
    fod = nib.load(DATA / "fod_dipy_crop.nii.gz")
    mask = np.asarray(nib.load(DATA / "mask_dipy_crop.nii.gz").dataobj) > 0
    return np.asarray(fod.dataobj, dtype=np.float64), fod.affine, mask


def test_reproduces_the_reference_streamlines(phantom):
    coeffs, affine, mask = phantom
    rows = np.loadtxt(DATA / "detmax_seeds_subset.txt")
    reference = load_tractogram(DATA / "detmax_ref_subset.tck").numpy_streamlines()
    streamlines, seed_index = ours(coeffs, affine, mask, rows[:, :3], 45.0, 0.5, rows[:, 3:])
    np.testing.assert_array_equal(seed_index, np.arange(len(rows)))
    # every point, as stored in float32 by the reference
    assert max_vertex_distance(reference, streamlines) < 1e-4


def test_starts_from_dipys_peaks_when_seeds_have_no_direction(phantom):
    coeffs, affine, mask = phantom
    rng = np.random.default_rng(7)
    voxels = np.argwhere(mask)[rng.choice(int(mask.sum()), 30, replace=False)] + rng.uniform(-0.5, 0.5, (30, 3))
    seeds = apply_affine(affine, voxels)
    reference = dipy_tracking("DeterministicMaximumDirectionGetter", coeffs, affine, mask, seeds, 45.0, 0.5)
    streamlines, seed_index = ours(coeffs, affine, mask, seeds, 45.0, 0.5)
    assert len(streamlines) > len(seeds)  # some seeds sit in the crossing: one streamline per peak
    assert np.all(np.diff(seed_index) >= 0)
    assert max_vertex_distance(reference, streamlines) < 1e-9


def test_threshold_map_stops_where_dipys_threshold_criterion_does(phantom):
    """A scalar map (here the FOD's l=0 term, high in the bundles) thresholded at its 60th
    percentile inside the mask: DIPY's ThresholdStoppingCriterion interpolates it trilinearly and
    continues while it is above the threshold. Seeds below it are rejected (DIPY would return them
    as one-point streamlines), so the comparison uses the seeds above it."""
    from dipy.tracking.stopping_criterion import ThresholdStoppingCriterion
    from scipy.ndimage import map_coordinates

    coeffs, affine, mask = phantom
    scalar = np.where(mask, coeffs[..., 0], 0.0)
    threshold = float(np.percentile(scalar[mask], 60))
    rng = np.random.default_rng(11)
    above = np.argwhere(scalar > threshold)
    voxels = above[rng.choice(len(above), 60, replace=False)] + rng.uniform(-0.3, 0.3, (60, 3))
    starts_above = map_coordinates(scalar, voxels.T, order=1, mode="nearest") > threshold
    seeds = apply_affine(affine, voxels)
    region = ThresholdMap(scalar, affine, threshold)
    out = track(SHField(torch.as_tensor(coeffs), affine, basis="descoteaux07"), seeds, algorithm="detmax",
                mask=region, max_angle=45.0, step_size=0.5, device="cpu")
    assert out.meta["SEED_REJECTED"] == int((~starts_above).sum()) > 0
    reference = dipy_tracking("DeterministicMaximumDirectionGetter", coeffs, affine,
                              ThresholdStoppingCriterion(scalar, threshold), seeds[starts_above], 45.0, 0.5)
    streamlines, _ = ours(coeffs, affine, region, seeds[starts_above], 45.0, 0.5)
    assert max_vertex_distance(reference, streamlines) < 1e-9
    binary, _ = ours(coeffs, affine, mask, seeds[starts_above], 45.0, 0.5)
    # the threshold ends streamlines well before the mask does
    assert sum(map(len, streamlines)) < 0.8 * sum(map(len, binary))


def test_anisotropic_oblique_voxels_and_dipys_second_half_start():
    """Voxels 1 x 1 x 3 mm on an oblique grid. DIPY steps in voxel coordinates and starts the second
    half along F[0] - F[1] normalised in voxel coordinates: with a 20 degree cone that start keeps
    the reversed first step out of reach, so the second half's first step is not its reverse."""
    rotation = Rotation.from_euler("xyz", [20.0, -35.0, 50.0], degrees=True).as_matrix()
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.0, 1.0, 3.0])
    affine[:3, 3] = [10.0, -20.0, 5.0]
    fibre, other = np.array([1.0, 0.0, 1.0]) / np.sqrt(2.0), np.array([0.0, 1.0, 0.0])
    shape = (16, 16, 8)
    k = np.arange(shape[2])[None, None, :, None] / shape[2]
    coeffs = np.broadcast_to(lobes_sh(fibre) + k * 0.3 * lobes_sh(other), shape + (45,)).copy()
    mask = np.zeros(shape, dtype=bool)
    mask[1:-1, 1:-1, 1:-1] = True
    rng = np.random.default_rng(3)
    seeds = apply_affine(affine, rng.uniform([5, 5, 2], [10, 10, 5], (12, 3)))
    start = np.tile(fibre, (12, 1))
    reference = dipy_tracking("DeterministicMaximumDirectionGetter", coeffs, affine, mask, seeds, 20.0, 0.5, start)
    streamlines, _ = ours(coeffs, affine, mask, seeds, 20.0, 0.5, start @ axes_rotation(affine).T)
    assert max_vertex_distance(reference, streamlines) < 1e-9
    s = streamlines[0]
    seed_at = int(np.argmin(np.linalg.norm(s - seeds[0], axis=1)))
    forward, backward = s[seed_at + 1] - s[seed_at], s[seed_at - 1] - s[seed_at]
    cos = forward @ backward / (np.linalg.norm(forward) * np.linalg.norm(backward))
    assert cos > -np.cos(np.radians(2.0))  # not reversed: more than 2 degrees from antiparallel
