"""The uncertainty envelope: repeats of tracking on wild bootstrap replicates or probabilistic draws,
the visitation probability and the distribution of a bundle's distance to a lesion."""
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from DiffTractographyLib import cli
from DiffTractographyLib.config import TrackingParams
from DiffTractographyLib.dwi import DWI
from DiffTractographyLib.errors import InputError
from DiffTractographyLib.fields import SHField
from DiffTractographyLib.models.dti import design_matrix
from DiffTractographyLib.phantoms import Bundle, dwi_phantom, fod_phantom
from DiffTractographyLib.planning.bootstrap import WildBootstrap, dti_design, rademacher
from DiffTractographyLib.planning.envelope import envelope, percentiles
from DiffTractographyLib.seeding import seeds_in_spheres
from DiffTractographyLib.selection import Sphere
from DiffTractographyLib.stopping import BinaryMask
from DiffTractographyLib.tracking.engine import TrackingCancelled
from helpers import single_shell

AFFINE = np.array([[2.0, 0, 0, -29], [0, 2, 0, -15], [0, 0, 2, -15], [0, 0, 0, 1]])
SHAPE = (30, 16, 16)  # 60 x 32 x 32 mm; the bundle runs along x through (0, 0, 0), radius 4 mm


def noisy_dwi(shape=SHAPE, affine=AFFINE, sigma=50.0, seed=1) -> DWI:
    """A straight bundle along x, 2 b=0 + 60 b=1000 volumes, Rician noise of SNR 20."""
    bvals, bvecs = single_shell(60)
    bvals, bvecs = np.r_[0.0, bvals], np.vstack([[0, 0, 0], bvecs])
    clean = dwi_phantom(shape, affine, [Bundle.straight([-40, 0, 0], [40, 0, 0], 4.0)], bvals, bvecs)
    rs = np.random.default_rng(seed)
    return DWI(np.hypot(clean + rs.normal(0, sigma, clean.shape), rs.normal(0, sigma, clean.shape)).astype(np.float32),
               affine, bvals, bvecs)


@pytest.fixture(scope="module")
def dwi():
    return noisy_dwi()


@pytest.fixture(scope="module")
def lesion():
    """Two voxels inside the tube 6 mm off the seeds: the bundle passes through them."""
    mask = np.zeros(SHAPE, bool)
    mask[17, 8:10, 8] = True                                 # x = 5 mm, y = 1..3 mm, z = 1 mm
    return BinaryMask(mask, AFFINE)


@pytest.fixture(scope="module")
def dti_envelope(dwi, lesion):
    seeds = seeds_in_spheres([[0.0, 0.0, 0.0]], 3.0, 200)
    return envelope(dwi, seeds, repeats=5, lesion=lesion, rng_seed=3), seeds


def test_wild_dti_envelope_covers_the_bundle_and_nothing_far_away(dti_envelope):
    result, _ = dti_envelope
    p = result.probability
    assert p.shape == SHAPE and p.dtype == np.float32 and np.array_equal(result.affine, AFFINE)
    assert result.method == "wild" and result.algorithm == "tensordet" and result.repeats == 5
    assert (result.streamlines >= 190).all()                 # a few seeds may fall below the FA cutoff
    core = p[3:27, 7:9, 7:9]                                 # within 1 mm of the axis, x from -23 to 23 mm
    assert core.min() >= 0.8
    assert p[:, :3].max() == 0 and p[:, 13:].max() == 0 and p[:, :, :3].max() == 0   # >= 9 mm from the axis
    np.testing.assert_array_equal(p * 5, np.round(p * 5))      # shares of 5 repeats
    assert result.region is not None and result.reference["streamlines"] >= 190


def test_lesion_distances_are_signed_and_percentiles_are_numpys(dti_envelope):
    result, _ = dti_envelope
    assert (result.minimum < 0).all()                        # every repeat's bundle enters the lesion
    assert (result.robust >= result.minimum).all() and (result.robust > -2).all()
    for name, values in (("minimum", result.minimum), ("robust", result.robust)):
        expected = np.percentile(values, [5, 50, 95], method="linear")
        np.testing.assert_allclose([result.percentiles[name][q] for q in (5.0, 50.0, 95.0)], expected)
    summary = json.loads(json.dumps(result.to_json()))
    assert summary["percentiles"]["minimum"]["p50"] == pytest.approx(float(np.median(result.minimum)))
    assert len(summary["robust_distance"]) == 5 and "linear" in summary["percentile_method"]


def test_the_same_rng_seed_gives_the_same_envelope_whatever_the_region(dwi, dti_envelope, lesion):
    first, seeds = dti_envelope
    again = envelope(dwi, seeds, repeats=5, lesion=lesion, rng_seed=3, margin=100.0)   # the region is the grid
    np.testing.assert_array_equal(again.probability, first.probability)
    np.testing.assert_array_equal(again.minimum, first.minimum)
    np.testing.assert_array_equal(again.robust, first.robust)
    other = envelope(dwi, seeds, repeats=5, lesion=lesion, rng_seed=4)
    assert not np.array_equal(other.minimum, first.minimum)


def test_percentiles_over_repeats_with_empty_bundles():
    values = [3.0, 1.0, np.inf, 2.0, np.inf]
    assert percentiles(values) == {5.0: 1.2, 50.0: 3.0, 95.0: np.inf}   # positions 0.2, 2 and 3.8 of 0..4


def test_wild_bootstrap_replicates():
    bvals, bvecs = single_shell(30)
    tensor = np.array([1.7e-3, 0.3e-3, 0.3e-3, 0, 0, 0, np.log(1000.0)])
    exact = torch.exp(design_matrix(bvals, bvecs) @ torch.as_tensor(tensor))[None].repeat(3, 1)
    voxels = torch.tensor([5, 17, 4000])
    replicate = WildBootstrap(exact, dti_design(bvals, bvecs), log=True).draw(0, voxels, 0)
    torch.testing.assert_close(replicate, exact.float())              # no residual, nothing to resample
    noisy = exact * torch.exp(0.05 * torch.randn(exact.shape, generator=torch.Generator().manual_seed(0),
                                                  dtype=torch.float64))
    boot = WildBootstrap(noisy, dti_design(bvals, bvecs), log=True)
    a, b = boot.draw(0, voxels, 0), boot.draw(0, voxels, 1)
    assert not torch.equal(a, b) and torch.equal(a, boot.draw(0, voxels, 0))
    signs = rademacher(7, torch.arange(1000), 16, 65)
    assert set(signs.unique().tolist()) == {-1.0, 1.0} and abs(float(signs.mean())) < 0.01
    torch.testing.assert_close(rademacher(7, torch.tensor([3, 999]), 16, 65), signs[[3, 999]])   # keyed by voxel


def test_csd_wild_envelope_and_an_exclude_that_empties_the_bundle():
    small = noisy_dwi(shape=(20, 9, 9), affine=np.array([[2.0, 0, 0, -19], [0, 2, 0, -8], [0, 0, 2, -8], [0, 0, 0, 1]]))
    seeds = seeds_in_spheres([[0.0, 0.0, 0.0]], 2.0, 100)
    result = envelope(small, seeds, TrackingParams(algorithm="sdstream"), repeats=3, rng_seed=1, lmax=6)
    assert result.algorithm == "sdstream" and (result.streamlines >= 25).all()   # sdstream rejects seeds whose
    # random start finds no FOD peak above the cutoff (tckgen would retry them)
    assert result.probability[2:18, 4, 4].min() == 1.0 and result.probability[:, 0].max() == 0
    empty = envelope(small, seeds, repeats=2, exclude=[Sphere((0.0, 0.0, 0.0), 5.0)],
                     lesion=np.array([[10.0, 0, 6], [10, 1, 6]]))              # surface points: unsigned
    assert (empty.streamlines == 0).all() and empty.probability.max() == 0 and empty.reference["streamlines"] == 0
    assert np.isinf(empty.minimum).all() and empty.percentiles["robust"][50.0] == np.inf


def test_prob_repeats_on_an_fod_with_progress_and_cancel():
    coeffs, mask = fod_phantom(SHAPE, AFFINE, [Bundle.straight([-40, 0, 0], [40, 0, 0], 4.0)])
    field = SHField(coeffs.numpy(), AFFINE)
    seeds = seeds_in_spheres([[0.0, 0.0, 0.0]], 3.0, 100)
    calls = []
    result = envelope(field, seeds, repeats=4, method="prob", mask=mask, rng_seed=2,
                      progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)] and result.region is None
    assert result.probability[3:27, 7:9, 7:9].min() >= 0.75 and result.probability[:, :2].max() == 0
    with pytest.raises(TrackingCancelled):
        envelope(field, seeds, repeats=4, method="prob", mask=mask, cancel=lambda: len(calls) > 5,
                 progress=lambda done, total: calls.append(done))
    with pytest.raises(InputError, match="resamples a DWI"):
        envelope(field, seeds, repeats=2)
    with pytest.raises(InputError, match="prob algorithm"):
        envelope(field, seeds, TrackingParams(algorithm="sdstream"), method="prob")


@pytest.fixture(scope="module")
def files(tmp_path_factory, dwi):
    folder = tmp_path_factory.mktemp("envelope")
    nib.save(nib.Nifti1Image(dwi.data, AFFINE), folder / "dwi.nii.gz")
    np.savetxt(folder / "dwi.b", np.c_[dwi.bvecs, dwi.bvals])
    seeds = np.zeros(SHAPE, np.uint8)
    seeds[14:16, 7:9, 7:9] = 1
    nib.save(nib.Nifti1Image(seeds, AFFINE), folder / "seeds.nii.gz")
    lesion = np.zeros(SHAPE, np.uint8)
    lesion[17, 8:10, 8] = 2
    nib.save(nib.Nifti1Image(lesion, AFFINE), folder / "lesion.nii.gz")
    template = np.diag([1.0, 1.0, 1.0, 1.0])
    template[:3, 3] = [-30, -16, -16]
    nib.save(nib.Nifti1Image(np.zeros((60, 32, 32), np.uint8), template), folder / "template.nii.gz")
    return folder


def test_cli_writes_the_probability_on_the_template_grid_and_the_json(files, capsys):
    f = files
    assert cli.main(["envelope", "--dwi", str(f / "dwi.nii.gz"), "--grad", str(f / "dwi.b"), "--seed-image",
                     str(f / "seeds.nii.gz"), "--seeds-per-voxel", "8", "--repeats", "3", "--lesion",
                     f"{f / 'lesion.nii.gz'}:2", "--template", str(f / "template.nii.gz"), "--out-prob",
                     str(f / "prob.nii.gz"), "--out-json", str(f / "env.json"), "--rng-seed", "5"]) == 0
    image = nib.load(f / "prob.nii.gz")
    assert image.shape == (60, 32, 32) and image.get_data_dtype() == np.float32
    np.testing.assert_array_equal(image.affine, nib.load(f / "template.nii.gz").affine)
    p = image.get_fdata()
    assert p[10:50, 15:17, 15:17].min() == 1.0 and p[:, :6].max() == 0 and p.max() == 1.0
    summary = json.loads((f / "env.json").read_text())
    assert summary["repeats"] == 3 and summary["rng_seed"] == 5 and len(summary["minimum"]) == 3
    assert all(d < 0 for d in summary["minimum"])
    err = capsys.readouterr().err
    assert "3 wild repeats (tensordet)" in err and "lesion distance, robust (p1)" in err


@pytest.mark.parametrize("argv, message", [
    (["--fod", "x.nii.gz"], "--method wild resamples a DWI"),
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--out-prob", "{folder}/prob.txt"], "as .nii, .nii.gz, .mif, .mif.gz"),
    (["--include", "cube:1,2,3"], "unknown region"),
    (["--lesion", "{folder}/missing.txt"], "no such lesion file"),
    (["--seed-image", "{folder}/seeds.nii.gz", "--seed-points", "{folder}/seeds.txt"], "exactly one of"),
])
def test_cli_bad_input_is_one_line(files, capsys, argv, message):
    base = ["envelope", "--dwi", str(files / "dwi.nii.gz"), "--grad", str(files / "dwi.b")]
    if "--seed-image" not in argv:
        base += ["--seed-image", str(files / "seeds.nii.gz")]
    if "--fod" in argv:
        base = ["envelope"]
    argv = [a.format(folder=files) for a in argv]
    assert cli.main(base + ["--out-json", str(files / "never.json")] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("difftract: error:") and message in err[0]
    assert not (files / "never.json").exists()


def test_cli_refuses_to_run_for_nothing_or_to_write_two_outputs_to_one_file(files, capsys):
    base = ["envelope", "--dwi", str(files / "dwi.nii.gz"), "--grad", str(files / "dwi.b"), "--seed-image",
            str(files / "seeds.nii.gz")]
    assert cli.main(base) == 2
    assert capsys.readouterr().err == "difftract: error: nothing to write: give --out-prob or --out-json\n"
    same = files / "out.nii.gz"
    assert cli.main([*base, "--out-prob", str(same), "--out-json", str(same)]) == 2
    assert capsys.readouterr().err == f"difftract: error: --out-prob and --out-json name the same file {same}\n"


def test_cli_says_a_robust_percentile_without_a_lesion_is_ignored(files, tmp_path, capsys):
    assert cli.main(["envelope", "--dwi", str(files / "dwi.nii.gz"), "--grad", str(files / "dwi.b"), "--seed-image",
                     str(files / "seeds.nii.gz"), "--repeats", "1", "--robust-percentile", "5", "--quiet",
                     "--out-json", str(tmp_path / "env.json")]) == 0
    assert capsys.readouterr().err == ("difftract: warning: --robust-percentile: for the distance to --lesion; "
                                       "ignored without --lesion\n")
