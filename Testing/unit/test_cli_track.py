"""``difftract track`` end to end on real files; bad input ends in one line, exit 2, no output file."""
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from DiffTractographyLib import load_tractogram
from DiffTractographyLib.cli import main
from helpers import crossing_phantom


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    coeffs, mask, affine, centre, u, v = crossing_phantom()
    nib.save(nib.Nifti1Image(coeffs.numpy(), affine), d / "fod.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), d / "mask.nii.gz")
    np.savetxt(d / "seeds.txt", np.hstack([np.stack([centre, centre + 4 * v]), np.stack([u, v])]))
    return d


def run(*args):
    return main([str(a) for a in args])


@pytest.mark.parametrize("ext", [".trk", ".trx", ".tck", ".vtk"])
def test_track_writes_each_format_in_ras(files, ext, tmp_path):
    out = tmp_path / f"out{ext}"
    assert run("track", "--fod", files / "fod.nii.gz", "--seed-points", files / "seeds.txt", "--mask",
               files / "mask.nii.gz", "--step", 0.5, "--quiet", "--out", out) == 0
    t = load_tractogram(out)
    assert len(t) == 2
    seeds = np.loadtxt(files / "seeds.txt")[:, :3]
    for s, seed in zip(t.numpy_streamlines(), seeds):
        assert np.linalg.norm(s - seed, axis=1).min() < 1e-4  # the seed is a vertex, in RAS mm
    if ext != ".tck":
        assert t.seed_index.tolist() == [0, 1]


def test_seed_image_and_summary(files, tmp_path, capsys):
    out = tmp_path / "t.trx"
    assert run("track", "--fod", files / "fod.nii.gz", "--seed-image", files / "mask.nii.gz", "--seed-placement",
               "grid", "--mask", files / "mask.nii.gz", "--step", 0.5, "--out", out) == 0
    err = capsys.readouterr().err
    assert "streamlines from" in err and "accepted" in err
    assert len(load_tractogram(out)) > 100


def test_stop_map_ends_streamlines_where_the_map_falls_to_the_threshold(files, tmp_path):
    """A map that falls linearly with the distance along u from the centre (20 - |d| mm) and a
    threshold of 12: the streamline along u stops within 8 mm of the centre, the one along v does not."""
    _, mask, affine, centre, u, v = crossing_phantom()
    voxels = np.stack(np.meshgrid(*[np.arange(n) for n in mask.shape], indexing="ij"), -1)
    along_u = (voxels @ affine[:3, :3].T + affine[:3, 3] - centre) @ u
    nib.save(nib.Nifti1Image((20.0 - np.abs(along_u)).astype(np.float32), affine), tmp_path / "map.nii.gz")
    out = tmp_path / "t.tck"
    assert run("track", "--fod", files / "fod.nii.gz", "--seed-points", files / "seeds.txt", "--stop-map",
               tmp_path / "map.nii.gz", "--stop-threshold", 12, "--step", 0.5, "--quiet", "--out", out) == 0
    first, second = load_tractogram(out).numpy_streamlines()
    reach_u = np.abs((first - centre) @ u).max()
    assert 7.5 < reach_u < 8.0
    assert np.abs((second - centre) @ v).max() > 15.0
    # with --mask too, both must hold: the map still ends the first, the mask the second
    common = ["--fod", files / "fod.nii.gz", "--seed-points", files / "seeds.txt", "--mask", files / "mask.nii.gz",
              "--step", 0.5, "--quiet"]
    assert run("track", *common, "--out", tmp_path / "mask.tck") == 0
    assert run("track", *common, "--stop-map", tmp_path / "map.nii.gz", "--stop-threshold", 12,
               "--out", tmp_path / "both.tck") == 0
    masked = load_tractogram(tmp_path / "mask.tck").numpy_streamlines()
    both = load_tractogram(tmp_path / "both.tck").numpy_streamlines()
    np.testing.assert_array_equal(both[0], first)  # the map ends it inside the mask
    np.testing.assert_array_equal(both[1], masked[1])


def test_help_states_units():
    out = subprocess.run([sys.executable, "-m", "DiffTractographyLib.cli", "track", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for text in ("step size in mm", "degrees", "RAS", "--sh-basis", "descoteaux07"):
        assert text in out


@pytest.mark.parametrize("args, message", [
    (["--fod", "missing.nii.gz"], "no such FOD file"),
    (["--fod", "{mask}"], "must be 4-D"),
    (["--fod", "{fod}", "--seed-points", "{bad_seeds}"], "outside the image"),
    (["--fod", "{fod}", "--seed-image", "{empty}"], "no non-zero voxel"),
    (["--fod", "{fod}", "--dwi", "{fod}"], "exactly one of --fod"),
    (["--fod", "{fod}", "--step", "-1"], "step_size must be a positive"),
    (["--fod", "{fod}", "--stop-map", "{mask}"], "go together"),
    (["--fod", "{fod}", "--stop-threshold", "0.5"], "go together"),
    (["--fod", "{fod}", "--algorithm", "prob", "--cutoff", "2"],
     "the prob cutoff is the pmf threshold, relative to the largest pmf value on the sphere: at most 1, got 2"),
])
def test_bad_input_is_one_line_and_leaves_no_file(files, tmp_path, capsys, args, message):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)), tmp_path / "empty.nii.gz")
    np.savetxt(tmp_path / "bad_seeds.txt", [[500.0, 0, 0]])
    names = {"mask": files / "mask.nii.gz", "fod": files / "fod.nii.gz", "bad_seeds": tmp_path / "bad_seeds.txt",
             "empty": tmp_path / "empty.nii.gz"}
    args = [a.format(**names) for a in args]
    if "--seed-points" not in args and "--seed-image" not in args:
        args += ["--seed-image", str(files / "mask.nii.gz")]
    out = tmp_path / "out.tck"
    assert run("track", *args, "--quiet", "--out", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("difftract: error:") and message in err[0]
    assert not out.exists()


def test_refuses_to_overwrite_without_force(files, tmp_path, capsys):
    out = tmp_path / "t.tck"
    out.write_text("keep me")
    assert run("track", "--fod", files / "fod.nii.gz", "--seed-points", files / "seeds.txt", "--out", out) == 2
    assert out.read_text() == "keep me"


def test_fod_voxels_holding_nan_are_zeroed_and_said(files, tmp_path, capsys):
    fod = nib.load(files / "fod.nii.gz")
    coeffs = np.asarray(fod.dataobj).copy()
    coeffs[:3] = np.nan                                    # a slab far from the seeds
    nib.save(nib.Nifti1Image(coeffs, fod.affine), tmp_path / "fod.nii.gz")
    argv = ["track", "--seed-points", files / "seeds.txt", "--mask", files / "mask.nii.gz", "--step", 0.5,
            "--quiet", "--out"]
    assert run(*argv, tmp_path / "nan.tck", "--fod", tmp_path / "fod.nii.gz") == 0
    slab = coeffs.shape[1] * coeffs.shape[2] * 3
    assert capsys.readouterr().err == (f"difftract: warning: {slab} voxels hold NaN or Inf values; they are set "
                                       "to 0 (no fibre: streamlines end there)\n")
    coeffs[:3] = 0
    nib.save(nib.Nifti1Image(coeffs, fod.affine), tmp_path / "zero.nii.gz")
    assert run(*argv, tmp_path / "zero.tck", "--fod", tmp_path / "zero.nii.gz") == 0
    nan, zero = load_tractogram(tmp_path / "nan.tck"), load_tractogram(tmp_path / "zero.tck")
    assert nan.lengths.tolist() == zero.lengths.tolist()
    np.testing.assert_array_equal(nan.points.numpy(), zero.points.numpy())


def test_seed_image_options_with_seed_points_are_said_to_be_ignored(files, tmp_path, capsys):
    assert run("track", "--fod", files / "fod.nii.gz", "--seed-points", files / "seeds.txt", "--seeds-per-voxel", 8,
               "--seed-label", 2, "--quiet", "--out", tmp_path / "t.tck") == 0
    assert capsys.readouterr().err == ("difftract: warning: --seed-label, --seeds-per-voxel: for --seed-image; "
                                       "ignored with --seed-points\n")


def test_dwi_options_with_a_fod_and_fod_options_with_a_dwi_are_said_to_be_ignored(files, tmp_path, capsys):
    assert run("track", "--fod", files / "fod.nii.gz", "--seed-points", files / "seeds.txt", "--lmax", 6,
               "--bvals", files / "none.bval", "--quiet", "--out", tmp_path / "t.tck") == 0
    assert capsys.readouterr().err == "difftract: warning: --bvals, --lmax: for --dwi; ignored with --fod\n"


def test_select_keeps_the_first_streamlines_from_random_seeds_in_the_image(files, tmp_path, capsys):
    argv = ["track", "--fod", files / "fod.nii.gz", "--seed-image", files / "mask.nii.gz", "--mask",
            files / "mask.nii.gz", "--step", 0.5]
    assert run(*argv, "--select", 40, "--out", tmp_path / "select.trx") == 0
    summary = re.search(r"^40 streamlines from the first (\d+) seeds \((\d+) tracked\) in .*\n"
                        r"terminations and outcomes: accepted (\d+)", capsys.readouterr().err, re.MULTILINE)
    used, tracked, accepted = (int(g) for g in summary.groups())
    assert used < tracked and accepted >= 40
    assert run(*argv, "--seeds", used, "--quiet", "--out", tmp_path / "seeds.trx") == 0
    selected, drawn = load_tractogram(tmp_path / "select.trx"), load_tractogram(tmp_path / "seeds.trx")
    assert drawn.seed_index.tolist() == selected.seed_index.tolist()    # the same seeds: all used, none more
    np.testing.assert_array_equal(drawn.points.numpy(), selected.points.numpy())
    assert run(*argv, "--seeds", 5, "--select", 40, "--quiet", "--out", tmp_path / "few.tck") == 0
    assert capsys.readouterr().err.startswith("difftract: warning: only ")
    assert run(*argv, "--seeds", 5, "--seeds-per-voxel", 2, "--quiet", "--out", tmp_path / "no.tck") == 2
    assert "--seeds-per-voxel place seeds in every voxel" in capsys.readouterr().err


def test_a_seed_sphere_with_a_seed_direction_is_seed_points_with_that_direction(files, tmp_path, capsys):
    centre, along = np.loadtxt(files / "seeds.txt")[0, :3], np.loadtxt(files / "seeds.txt")[0, 3:]
    np.savetxt(tmp_path / "seed.txt", [[*centre, *along]])
    argv = ["track", "--fod", files / "fod.nii.gz", "--mask", files / "mask.nii.gz", "--step", 0.5, "--quiet"]
    assert run(*argv, "--seed-points", tmp_path / "seed.txt", "--out", tmp_path / "one.trx") == 0
    assert run(*argv, "--seed-sphere", ",".join(map(str, centre)) + ",0", "--seeds", 3, "--seed-direction",
               ",".join(map(str, along)), "--out", tmp_path / "ball.trx") == 0
    one, ball = load_tractogram(tmp_path / "one.trx").numpy_streamlines(), load_tractogram(tmp_path / "ball.trx")
    assert ball.seed_index.tolist() == [0, 1, 2]
    for streamline in ball.numpy_streamlines():
        np.testing.assert_array_equal(streamline, one[0])
    assert run(*argv, "--seed-sphere", ",".join(map(str, centre)) + ",4", "--select", 30, "--out",
               tmp_path / "select.tck") == 0                        # --select 1000 by default, as tckgen
    assert len(load_tractogram(tmp_path / "select.tck")) == 30
    assert run(*argv, "--seed-points", files / "seeds.txt", "--seed-direction", "1,0,0", "--out",
               tmp_path / "no.tck") == 2
    assert "gives the seeds' directions; --seed-direction would replace them" in capsys.readouterr().err
    assert not (tmp_path / "no.tck").exists()


def test_select_counts_only_the_streamlines_the_regions_keep(files, tmp_path, capsys):
    from DiffTractographyLib.selection import parse_region, select_streamlines

    centre = np.loadtxt(files / "seeds.txt")[0, :3]            # the crossing
    region = "sphere:{:.3f},{:.3f},{:.3f},3".format(*centre)
    assert run("track", "--fod", files / "fod.nii.gz", "--seed-image", files / "mask.nii.gz", "--mask",
               files / "mask.nii.gz", "--step", 0.5, "--select", 25, "--include", region, "--quiet", "--out",
               tmp_path / "t.trx") == 0
    kept = load_tractogram(tmp_path / "t.trx")
    assert len(kept) == 25 and bool(select_streamlines(kept, include=[parse_region(region)]).all())


def test_a_tck_header_records_the_run_as_tckgen_names_it(files, tmp_path):
    from DiffTractographyLib.io import read_tck_header

    fod = tmp_path / "sujet é" / "fod.nii.gz"           # MRtrix3 writes its headers in UTF-8
    fod.parent.mkdir()
    fod.write_bytes((files / "fod.nii.gz").read_bytes())
    assert run("track", "--fod", fod, "--seed-points", files / "seeds.txt", "--step", 0.5, "--angle", 45,
               "--select", 2, "--quiet", "--out", tmp_path / "t.tck") == 0
    fields = read_tck_header(tmp_path / "t.tck")[0]
    assert {k: fields[k] for k in ("method", "step_size", "max_angle", "threshold", "rk4", "source",
                                   "max_num_tracks", "count")} == {
        "method": "sdstream", "step_size": "0.5", "max_angle": "45", "threshold": "0.1", "rk4": "0",
        "source": str(fod), "max_num_tracks": "2", "count": "0000000002"}


def test_output_seeds_lists_each_streamlines_seed_as_tckgen_does(files, tmp_path):
    seeds = np.loadtxt(files / "seeds.txt")
    assert run("track", "--fod", files / "fod.nii.gz", "--seed-points", files / "seeds.txt", "--step", 0.5, "--quiet",
               "--output-seeds", tmp_path / "seeds.csv", "--out", tmp_path / "t.tck") == 0
    text = (tmp_path / "seeds.csv").read_text()
    assert text.startswith("#Track_index,Seed_index,Pos_x,Pos_y,Pos_z,\n")
    rows = np.loadtxt(tmp_path / "seeds.csv", delimiter=",", comments="#", usecols=range(5))
    streamlines = load_tractogram(tmp_path / "t.tck").numpy_streamlines()
    assert rows[:, 0].tolist() == list(range(len(streamlines))) == [0, 1]
    for (index, vertex, *point), streamline, seed in zip(rows, streamlines, seeds):
        np.testing.assert_allclose(point, seed[:3], atol=1e-5)              # the seed as given (float32)
        np.testing.assert_array_equal(streamline[int(vertex)], np.float32(point))


def test_an_odd_lmax_is_refused_as_the_command_line_is_read(files, tmp_path, capsys):
    with pytest.raises(SystemExit):
        run("track", "--dwi", files / "missing.nii.gz", "--lmax", 7, "--seed-points", files / "seeds.txt",
            "--out", tmp_path / "t.tck")
    assert "argument --lmax: the SH order must be an even number >= 2, got 7" in capsys.readouterr().err


def test_seeds_outside_the_image_are_rejected_and_said_unless_all_are(files, tmp_path, capsys):
    rows = np.loadtxt(files / "seeds.txt")
    np.savetxt(tmp_path / "seeds.txt", np.vstack([rows, [500.0, 0, 0, 1, 0, 0]]))
    out = tmp_path / "t.tck"
    assert run("track", "--fod", files / "fod.nii.gz", "--seed-points", tmp_path / "seeds.txt", "--step", 0.5,
               "--quiet", "--out", out) == 0
    assert capsys.readouterr().err == (f"difftract: warning: {tmp_path / 'seeds.txt'}: 1 of 3 seeds lie outside "
                                       "the image (first: row 2, [500.0, 0.0, 0.0] mm RAS); they are rejected, as "
                                       "tckgen rejects a seed outside its mask\n")
    assert len(load_tractogram(out)) == 2


def test_an_output_without_a_tractogram_name_is_said_before_its_existence(files, tmp_path, capsys):
    assert run("track", "--fod", files / "fod.nii.gz", "--seed-points", files / "seeds.txt", "--out", tmp_path) == 2
    assert capsys.readouterr().err.startswith(f"difftract: error: {tmp_path}: unknown tractogram format ''")
