"""Tracking rules: step length, turning angle, mask, length limits, seed order, reproducibility."""
import numpy as np
import pytest
import torch

from DiffTractographyLib import SHField, Tracker, TrackingParams, track
from DiffTractographyLib.errors import InputError
from DiffTractographyLib.seeding import seeds_from_mask
from DiffTractographyLib.tracking import point_limits
from helpers import crossing_phantom

COEFFS, MASK, AFFINE, CENTRE, U, V = crossing_phantom()
FIELD = SHField(COEFFS, AFFINE)


def seeds_along_u(n=5):
    return CENTRE + np.linspace(-12, 12, n)[:, None] * U


def test_straight_bundle_gives_straight_streamlines_with_exact_steps():
    t = track(FIELD, seeds_along_u(), seed_directions=np.tile(U, (5, 1)), mask=MASK, step_size=0.5)
    assert len(t) == 5 and t.seed_index.tolist() == [0, 1, 2, 3, 4]
    for s in t.numpy_streamlines():
        steps = np.linalg.norm(np.diff(s, axis=0), axis=1)
        np.testing.assert_allclose(steps, 0.5, atol=2e-5)
        chord = s[-1] - s[0]
        assert abs(abs(chord @ U) / np.linalg.norm(chord) - 1) < 1e-6  # along the bundle axis


def test_first_half_is_stored_before_the_seed_as_mrtrix_does():
    seed = CENTRE - 5 * U
    t = track(FIELD, seed[None], seed_directions=U[None], mask=MASK, step_size=0.5)
    s = t.numpy_streamlines()[0]
    k = int(np.argmin(np.linalg.norm(s - seed, axis=1)))
    np.testing.assert_allclose(s[k], seed, atol=1e-5)
    assert (s[0] - seed) @ U > 0 > (s[-1] - seed) @ U  # tip of the +U half first


def test_turns_stay_within_max_angle_and_points_within_mask():
    seeds = seeds_from_mask(MASK, AFFINE)[::20]
    t = track(FIELD, seeds, mask=MASK, step_size=0.5, max_angle=30)
    assert len(t) >= 10  # seeds whose random start converges to a sub-cutoff lobe are rejected, as in MRtrix3
    from DiffTractographyLib.stopping import BinaryMask

    inside = BinaryMask(MASK, AFFINE).contains(t.points)
    assert bool(inside.all())
    for s in t.numpy_streamlines():
        d = np.diff(s, axis=0)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        cos = (d[1:] * d[:-1]).sum(1)
        assert (cos >= np.cos(np.radians(30)) - 1e-5).all()


def test_point_budget_follows_mrtrix():
    params = TrackingParams(step_size=0.5, max_angle=45, min_length=2, max_length=10).resolved(2.0)
    assert point_limits(params) == (5, 23)
    t = track(FIELD, (CENTRE)[None], seed_directions=U[None], mask=MASK, step_size=0.5, max_angle=45, max_length=10)
    assert t.lengths.tolist() == [24]  # max_points + 1: the second half adds one point after the cap
    assert t.meta["MAX_LENGTH"] == 2


def test_min_length_rejects_short_streamlines():
    t = track(FIELD, CENTRE[None], seed_directions=U[None], mask=MASK, step_size=0.5, min_length=60)  # bundle: 44 mm
    assert len(t) == 0 and t.meta["TOO_SHORT"] == 1


def test_seeds_outside_the_mask_are_rejected_and_order_is_kept():
    seeds = np.stack([CENTRE, CENTRE + 40 * U, CENTRE + 3 * V])
    t = track(FIELD, seeds, mask=MASK, step_size=0.5)
    assert t.seed_index.tolist() == [0, 2]
    assert t.meta["SEED_REJECTED"] == 1


def test_same_rng_seed_same_result_regardless_of_chunking():
    seeds = seeds_from_mask(MASK, AFFINE)[::25]
    a = track(FIELD, seeds, mask=MASK, step_size=0.5, rng_seed=7)
    b = track(FIELD, seeds, mask=MASK, step_size=0.5, rng_seed=7, chunk_size=4)
    c = track(FIELD, seeds, mask=MASK, step_size=0.5, rng_seed=8)
    assert torch.equal(a.points, b.points) and torch.equal(a.seed_index, b.seed_index)
    assert not (len(a.points) == len(c.points) and torch.equal(a.points, c.points))


def test_unidirectional_and_rk4():
    uni = track(FIELD, CENTRE[None], seed_directions=U[None], mask=MASK, step_size=0.5, unidirectional=True)
    both = track(FIELD, CENTRE[None], seed_directions=U[None], mask=MASK, step_size=0.5)
    s = uni.numpy_streamlines()[0]
    np.testing.assert_allclose(s[0], CENTRE, atol=1e-5)
    assert uni.lengths.item() < both.lengths.item()
    rk4 = track(FIELD, CENTRE[None], seed_directions=U[None], mask=MASK, step_size=0.5, rk4=True)
    assert abs(rk4.lengths.item() - both.lengths.item()) <= 2


def test_voxel_frame_descoteaux_field_tracks_the_same_bundle():
    from DiffTractographyLib import sh
    from DiffTractographyLib.geometry import axes_rotation

    # re-express the world-frame FOD in the voxel frame: rotate directions by R^T (fit the SH anew)
    r = axes_rotation(AFFINE)
    dirs = torch.nn.functional.normalize(torch.randn(400, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64), dim=-1)
    amp = sh.amplitudes(COEFFS.double(), dirs @ torch.as_tensor(r).T)   # amplitude seen along voxel-frame dirs
    basis = sh.basis_matrix(dirs, 8, "descoteaux07")
    voxel_coeffs = torch.linalg.lstsq(basis, amp.reshape(-1, 400).T).solution.T.reshape(COEFFS.shape).float()
    voxel_field = SHField(voxel_coeffs, AFFINE, "descoteaux07")
    assert voxel_field.frame == "voxel"
    a = track(FIELD, seeds_along_u(3), seed_directions=np.tile(U, (3, 1)), mask=MASK, step_size=0.5)
    b = track(voxel_field, seeds_along_u(3), seed_directions=np.tile(U, (3, 1)), mask=MASK, step_size=0.5)
    assert a.lengths.tolist() == b.lengths.tolist()
    assert (a.points - b.points).abs().max() < 1e-3


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(InputError, match="no seeds"):
        track(FIELD, np.zeros((0, 3)))
    with pytest.raises(InputError, match=r"\(N, 3\)"):
        track(FIELD, np.zeros((4, 2)))
    with pytest.raises(InputError, match="mask is empty"):
        track(FIELD, CENTRE[None], mask=np.zeros_like(MASK))
    with pytest.raises(InputError, match="max_angle"):
        track(FIELD, CENTRE[None], max_angle=120)
    with pytest.raises(InputError, match="tensordet tracks a DWI"):
        track(FIELD, CENTRE[None], algorithm="tensordet")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA device"):
            track(FIELD, CENTRE[None], device="cuda")


def test_inputs_are_not_modified():
    coeffs = COEFFS.clone()
    seeds = seeds_along_u()
    seeds_copy = seeds.copy()
    track(SHField(coeffs, AFFINE), seeds, mask=MASK, step_size=0.5)
    assert torch.equal(coeffs, COEFFS) and np.array_equal(seeds, seeds_copy)


def test_seed_ids_key_the_draws_so_a_seed_tracks_alike_in_any_batch():
    """Seeds without a direction start along a random draw keyed by the seed's id: a subset tracked
    with the ids it has in the full set gives the full set's streamlines (interactive seeding relies
    on it)."""
    seeds = seeds_from_mask(MASK, AFFINE)[::10]
    full = track(FIELD, seeds, mask=MASK, step_size=0.5, rng_seed=3)
    ids = np.arange(1, len(seeds), 3)
    part = Tracker(FIELD, mask=MASK, step_size=0.5, rng_seed=3)(seeds[ids], seed_ids=ids)
    keep = torch.from_numpy(np.flatnonzero(np.isin(full.seed_index.numpy(), ids)))
    expected = full.subset(keep)
    assert len(part) == len(expected) > 5
    assert torch.equal(part.seed_index, expected.seed_index) and torch.equal(part.lengths, expected.lengths)
    torch.testing.assert_close(part.points, expected.points, rtol=0, atol=1e-5)
    renumbered = track(FIELD, seeds[ids], mask=MASK, step_size=0.5, rng_seed=3)  # ids 0..n-1: other draws
    assert not (len(renumbered.points) == len(part.points) and torch.equal(renumbered.points, part.points))
