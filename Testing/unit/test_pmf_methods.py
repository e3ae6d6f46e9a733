"""DIPY semantics shared by detmax and prob (budgets, defaults, lone seeds, the cone table) and
prob's sampling: the right distribution, repeatable from rng_seed whatever the chunking."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import dipy_tracking, lobes_sh

from DiffTractographyLib.config import TrackingParams
from DiffTractographyLib.fields import SHField
from DiffTractographyLib.tracking.methods.detmax import DeterministicMaximum
from DiffTractographyLib.tracking.methods.prob import Probabilistic
from DiffTractographyLib.tracking import point_limits, track

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
FIBRE = np.array([1.0, 0.2, 0.1]) / np.linalg.norm([1.0, 0.2, 0.1])
CROSSING = np.array([0.5, 1.0, 0.0]) / np.linalg.norm([0.5, 1.0, 0.0])


def crossing_coeffs(shape=(12, 12, 12)) -> np.ndarray:
    """Two lobes (60 degrees apart) everywhere, the second fading along x."""
    x = np.arange(shape[0])[:, None, None, None] / shape[0]
    return np.broadcast_to(lobes_sh(FIBRE) + (1.0 - x) * 0.8 * lobes_sh(CROSSING), shape + (45,)).copy()


def test_dipy_defaults():
    p = TrackingParams(algorithm="detmax").resolved(voxel_size=2.0)
    assert (p.step_size, p.max_angle, p.cutoff, p.precision) == (0.5, 45.0, 0.1, "float64")
    assert (p.min_length, p.max_length) == (0.0, 250.0)  # return_all; maxlen = 500 points per half
    assert point_limits(p, shared_budget=False) == (1, 501)


def test_each_half_has_its_own_budget_as_dipys_maxlen():
    coeffs, mask = crossing_coeffs(), np.ones((12, 12, 12), dtype=bool)
    seeds = [[11.0, 12.0, 11.5], [12.5, 10.0, 12.0]]
    reference = dipy_tracking("DeterministicMaximumDirectionGetter", coeffs, AFFINE, mask, seeds, 45.0, 0.5, maxlen=7)
    out = track(SHField(torch.as_tensor(coeffs), AFFINE, basis="descoteaux07"), seeds, algorithm="detmax",
                mask=mask, step_size=0.5, max_length=3.5, device="cpu")
    assert [len(s) for s in out.streamlines()] == [len(s) for s in reference] == [15] * len(reference)
    for ours, theirs in zip(out.streamlines(), reference):
        np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-9, rtol=0)


def test_a_seed_without_peak_stays_a_lone_point_as_in_dipy():
    coeffs = crossing_coeffs()
    coeffs[6:] = 0.0  # no FOD: no peak at the seed, DIPY (return_all) returns the seed alone
    mask = np.ones((12, 12, 12), dtype=bool)
    seeds = [[16.0, 10.0, 10.0], [4.0, 10.0, 10.0]]
    reference = dipy_tracking("DeterministicMaximumDirectionGetter", coeffs, AFFINE, mask, seeds, 45.0, 0.5)
    out = track(SHField(torch.as_tensor(coeffs), AFFINE, basis="descoteaux07"), seeds, algorithm="detmax",
                mask=mask, step_size=0.5, device="cpu")
    assert len(reference[0]) == 1 and len(out.streamlines()[0]) == 1
    assert [len(s) for s in out.streamlines()] == [len(s) for s in reference]
    np.testing.assert_allclose(out.streamlines()[0].numpy(), reference[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", [DeterministicMaximum, Probabilistic])
def test_cone_table_equals_testing_every_vertex(method):
    m = method(SHField(torch.zeros(2, 2, 2, 45, dtype=torch.float64), AFFINE, basis="descoteaux07"), 0.1, 45.0,
               dtype=torch.float64)
    previous = torch.cat([m.vertices, -m.vertices])
    candidates, outside = m.cone(previous)
    assert outside is None  # every direction is recognised as a vertex
    dense = ~m.outside_cone((previous @ m.vertices.T).abs())
    from_table = torch.zeros_like(dense).scatter(1, candidates, True)
    assert torch.equal(from_table, dense)


def prob_run(chunk_size=None, rng_seed=4):
    rng = np.random.default_rng(0)
    seeds = rng.uniform(4.0, 20.0, (9, 3))
    out = track(SHField(torch.as_tensor(crossing_coeffs()), AFFINE, basis="descoteaux07"), seeds, algorithm="prob",
                step_size=0.5, max_length=5.0, rng_seed=rng_seed, chunk_size=chunk_size, device="cpu")
    return out.points, out.data_per_streamline["seed_index"]


def test_prob_repeats_from_rng_seed_whatever_the_chunk_size():
    points, index = prob_run()
    assert len(index) > 9  # seeds in the crossing start once per peak
    for chunk in (1, 4):
        p, i = prob_run(chunk_size=chunk)
        assert torch.equal(i, index)
        torch.testing.assert_close(p, points, atol=1e-5, rtol=0)
    other, _ = prob_run(rng_seed=5)
    assert other.shape != points.shape or not torch.equal(other, points)


def test_prob_draws_follow_the_thresholded_pmf_in_the_cone_like_dipy():
    import random

    from dipy.data import default_sphere
    from dipy.direction import ProbabilisticDirectionGetter

    coeffs, n = crossing_coeffs(), 20000
    point, previous = np.array([3.3, 5.6, 4.2]), FIBRE
    m = Probabilistic(SHField(torch.as_tensor(coeffs), AFFINE, basis="descoteaux07"), 0.1, 45.0, rng_seed=1,
                      dtype=torch.float64)
    pos = torch.tensor(AFFINE[:3, :3] @ point).expand(n, 3)
    u, status = m.next(pos, torch.tensor(previous).expand(n, 3),
                       key=(torch.arange(n), torch.zeros(n, dtype=torch.int64), 0))
    assert (status == 0).all()
    ours = np.bincount((u @ m.vertices.T).abs().argmax(-1).numpy(), minlength=len(m.vertices)) / n

    getter = ProbabilisticDirectionGetter.from_shcoeff(coeffs, max_angle=45.0, sphere=default_sphere)
    random.seed(0)
    theirs = np.zeros(len(m.vertices))
    for _ in range(n):
        d = previous.copy()
        getter.get_direction(point, d)
        theirs[np.abs(default_sphere.vertices @ d).argmax()] += 1.0 / n

    pmf = m.pmf(pos[:1])[0][0].numpy()
    keep = (pmf >= 0.1 * pmf.max()) & (np.abs(default_sphere.vertices @ previous) >= np.cos(np.radians(45.0)))
    expected = np.where(keep, pmf, 0.0) / np.where(keep, pmf, 0.0).sum()
    assert 0.5 * np.abs(ours - expected).sum() < 0.03  # total variation; sampling error about 0.015
    assert 0.5 * np.abs(theirs - expected).sum() < 0.03
