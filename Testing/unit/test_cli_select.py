"""``difftract select`` end to end: regions from files and specs, lesion distances per streamline and
per cluster, and one-line errors."""
import nibabel as nib
import numpy as np
import pytest
import torch

from DiffTractographyLib import cli, load_tractogram
from DiffTractographyLib.selection import lesion_distances, parse_region, select_streamlines
from DiffTractographyLib.stopping import BinaryMask


@pytest.fixture
def difftract():
    return cli.main


@pytest.fixture
def phantom(data_dir, tmp_path):
    folder = data_dir / "phantom_cross"
    mask = nib.load(folder / "mask.nii.gz")
    lesion = np.zeros(mask.shape, np.uint8)
    lesion[22:26, 20:24, 24:27] = 4                          # a small "tumour" near the crossing
    nib.save(nib.Nifti1Image(lesion, mask.affine), tmp_path / "lesion.nii.gz")
    return folder / "detmax_ref_subset.trk", folder / "mask.nii.gz", tmp_path / "lesion.nii.gz"


def test_selection_and_lesion_distances_are_written(tmp_path, phantom, difftract, capsys):
    tracks, mask_path, lesion_path = phantom
    out = tmp_path / "kept.trk"
    (tmp_path / "labels.txt").write_text("\n".join(str(i % 3) for i in range(200)) + "\n")
    assert difftract(["select", str(tracks), "--include", str(mask_path), "--exclude", "sphere:0,-16,13,4",
                      "--min-length", "20", "--distance-to", f"{lesion_path}:4", "--distance-out",
                      str(tmp_path / "d.txt"), "--cluster-labels", str(tmp_path / "labels.txt"), "--out", str(out)]) == 0
    tractogram = load_tractogram(tracks)
    keep = select_streamlines(tractogram, [parse_region(str(mask_path))], [parse_region("sphere:0,-16,13,4")],
                              min_length=20)
    kept = load_tractogram(out)
    assert 0 < len(kept) == int(keep.sum()) < len(tractogram)
    torch.testing.assert_close(kept.points, tractogram.subset(keep).points)
    expected = lesion_distances(tractogram.subset(keep), parse_region(str(lesion_path)))
    np.testing.assert_allclose(np.loadtxt(tmp_path / "d.txt"), expected.numpy(), atol=1e-4)
    np.testing.assert_allclose(kept.data_per_streamline["lesion_distance"].numpy(), expected.numpy(), atol=1e-4)
    err = capsys.readouterr().err
    assert f"kept {len(kept)} of 200 streamlines" in err and "cluster 2:" in err


def test_surface_points_as_lesion(tmp_path, phantom, difftract):
    tracks, _, lesion_path = phantom
    surface = BinaryMask(nib.load(lesion_path).get_fdata() > 0, nib.load(lesion_path).affine).voxel_centres()
    np.savetxt(tmp_path / "surface.csv", surface, delimiter=",")
    assert difftract(["select", str(tracks), "--distance-to", str(tmp_path / "surface.csv"), "--distance-out",
                      str(tmp_path / "d.txt"), "--out", str(tmp_path / "all.tck"), "--quiet"]) == 0
    expected = lesion_distances(load_tractogram(tracks), surface)
    np.testing.assert_allclose(np.loadtxt(tmp_path / "d.txt"), expected.numpy(), atol=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["--include", "cube:1,2,3"], "unknown region"),
    (["--include", "sphere:1,2"], "4 comma-separated numbers"),
    (["--min-length", "-3"], "--min-length"),
    (["--distance-out", "d.txt"], "needs --distance-to"),
    (["--cluster-labels", "labels.txt"], "--cluster-labels needs --distance-to"),
    (["--min-length", "100", "--max-length", "10"], "--min-length 100 mm exceeds --max-length 10 mm"),
    (["--exclude", "missing.nii.gz"], "no such"),
])
def test_bad_options_end_with_one_error_line(tmp_path, phantom, difftract, capsys, argv, message):
    out = tmp_path / "o.trk"
    assert difftract(["select", str(phantom[0]), "--out", str(out)] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_the_distance_file_follows_the_force_rule_and_never_replaces_the_tractogram(tmp_path, phantom, difftract,
                                                                                    capsys):
    tracks, _, lesion = phantom
    out, distances = tmp_path / "o.trk", tmp_path / "d.txt"
    distances.write_text("keep\n")
    argv = ["select", str(tracks), "--distance-to", str(lesion), "--out", str(out), "--quiet"]
    assert difftract([*argv, "--distance-out", str(distances)]) == 2
    assert capsys.readouterr().err == f"difftract: error: {distances} exists; use --force to overwrite it\n"
    assert difftract([*argv, "--distance-out", str(out), "--force"]) == 2
    assert capsys.readouterr().err == f"difftract: error: --out and --distance-out name the same file {out}\n"
    assert distances.read_text() == "keep\n" and not out.exists()


@pytest.mark.parametrize("extra", [[], ["--include", "sphere:0,-16,13,30"]], ids=["lengths", "regions"])
def test_a_tck_from_a_tck_keeps_the_header_fields_tckmap_reads_as_tckedit_does(data_dir, tmp_path, difftract, extra):
    from DiffTractographyLib.io import read_tck, read_tck_header, write_tck

    source = tmp_path / "tracks.tck"                        # as tckgen writes it: how it was made
    write_tck(source, [read_tck(data_dir / "phantom_cross" / "sdstream_ref_subset.tck")],
              {"method": "SDStream", "step_size": "0.5", "max_angle": "45"})
    assert difftract(["select", str(source), "--min-length", "20", *extra, "--quiet", "--out",
                      str(tmp_path / "kept.tck")]) == 0
    before, after = read_tck_header(source)[0], read_tck_header(tmp_path / "kept.tck")[0]
    assert {k: after[k] for k in ("method", "step_size", "max_angle")} == {
        "method": "SDStream", "step_size": "0.5", "max_angle": "45"}
    assert int(after["count"]) < int(before["count"])
