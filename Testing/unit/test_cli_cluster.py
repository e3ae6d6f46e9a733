"""``difftract cluster`` end to end on real files: .trx groups with colours and labels, per-cluster
folders, the labels table, centroids, and one-line errors."""
import numpy as np
import pytest
import torch

from DiffTractographyLib import cli, load_tractogram, save_tractogram
from DiffTractographyLib.clustering import cluster_colors, hierarchical_quickbundles, quickbundles


@pytest.fixture
def difftract():
    return cli.main


@pytest.fixture
def tracks(data_dir):
    return data_dir / "phantom_cross" / "detmax_ref_subset.trk"


def test_trx_holds_groups_colours_and_labels(tmp_path, tracks, difftract, capsys):
    out = tmp_path / "bundles.trx"
    assert difftract(["cluster", str(tracks), "--threshold", "10", "--min-size", "5", "--out", str(out),
                      "--labels-out", str(tmp_path / "labels.txt"), "--centroids-out", str(tmp_path / "c.trk")]) == 0
    expected = quickbundles(load_tractogram(tracks), 10.0, min_size=5)
    labels = np.loadtxt(tmp_path / "labels.txt", dtype=np.int64)
    np.testing.assert_array_equal(labels, expected.labels.numpy())
    import trx.trx_file_memmap as tmm

    trx = tmm.load(str(out))
    try:
        assert sorted(trx.groups) == [f"cluster_{k:04d}" for k in range(len(expected))]
        for k in range(len(expected)):
            np.testing.assert_array_equal(trx.groups[f"cluster_{k:04d}"], expected.indices(k).numpy())
            np.testing.assert_array_equal(trx.data_per_group[f"cluster_{k:04d}"]["color"][0], cluster_colors(k + 1)[k])
        np.testing.assert_array_equal(np.asarray(trx.data_per_streamline["cluster"]).ravel(), labels)
    finally:
        trx.close()
    centroids = load_tractogram(tmp_path / "c.trk")
    assert centroids.lengths.tolist() == [12] * len(expected)
    torch.testing.assert_close(centroids.points.view(-1, 12, 3), expected.centroids, atol=1e-4, rtol=0)
    assert f"{len(expected)} clusters hold" in capsys.readouterr().err


def test_hierarchy_to_a_folder_of_per_cluster_files(tmp_path, tracks, difftract):
    out = tmp_path / "clusters"
    assert difftract(["cluster", str(tracks), "--threshold", "20", "8", "--out", str(out), "--format", "tck",
                      "--labels-out", str(tmp_path / "labels.txt"), "--quiet"]) == 0
    coarse, fine = hierarchical_quickbundles(load_tractogram(tracks), [20.0, 8.0])
    np.testing.assert_array_equal(np.loadtxt(tmp_path / "labels.txt", dtype=np.int64),
                                  torch.stack([coarse.labels, fine.labels], 1).numpy())
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"cluster_{k:04d}.tck" for k in range(len(fine))]
    assert [len(load_tractogram(f)) for f in files] == fine.sizes.tolist()


def test_degenerate_streamlines_are_reported(tmp_path, difftract, capsys):
    from DiffTractographyLib import Tractogram

    path = tmp_path / "in.tck"
    save_tractogram(Tractogram.from_list([np.linspace([0, 0, 0], [30, 0, 0], 10), np.ones((3, 3))]), path)
    assert difftract(["cluster", str(path), "--threshold", "5", "--out", str(tmp_path / "o.trx"),
                      "--labels-out", str(tmp_path / "l.txt")]) == 0
    assert np.loadtxt(tmp_path / "l.txt", dtype=np.int64).tolist() == [0, -1]
    assert "1 streamlines have fewer than two distinct points" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--threshold", "0"], "positive distance in mm"),
    (["--threshold", "10", "5", "8"], "decrease"),
    (["--threshold", "10", "--points", "1"], "at least 2 points"),
    (["--threshold", "10", "--min-size", "0"], "--min-size"),
])
def test_bad_options_end_with_one_error_line(tmp_path, tracks, difftract, capsys, argv, message):
    out = tmp_path / "o.trx"
    assert difftract(["cluster", str(tracks), "--out", str(out)] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_empty_tractogram_is_an_input_error(tmp_path, difftract, capsys):
    from DiffTractographyLib import Tractogram

    path = tmp_path / "empty.tck"
    save_tractogram(Tractogram.from_list([]), path)
    assert difftract(["cluster", str(path), "--threshold", "5", "--out", str(tmp_path / "o.trx")]) == 2
    assert "no streamlines" in capsys.readouterr().err


def test_a_tck_clusters_to_labels_alone_without_torch(tmp_path, tracks):
    import subprocess
    import sys

    from DiffTractographyLib.io import write_tck

    tractogram = load_tractogram(tracks)
    path = tmp_path / "in.tck"
    write_tck(path, [(tractogram.points.numpy(), tractogram.lengths.numpy())])
    labels = tmp_path / "labels.txt"
    code = ("import sys\nfrom DiffTractographyLib.cli import main\n"
            f"argv = ['cluster', {str(path)!r}, '--threshold', '10', '--labels-out', {str(labels)!r}, '--quiet']\n"
            "assert main(argv) == 0\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]
    np.testing.assert_array_equal(np.loadtxt(labels, dtype=np.int64), quickbundles(tractogram, 10.0).labels.numpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tck", "labels.txt"]


def test_nothing_to_write_is_an_input_error(tracks, difftract, capsys):
    assert difftract(["cluster", str(tracks), "--threshold", "10"]) == 2
    assert "nothing to write" in capsys.readouterr().err


def test_outputs_never_overwrite_the_input_or_each_other(tmp_path, tracks, difftract, capsys):
    source, labels, tck = tmp_path / "in.trk", tmp_path / "c.txt", tmp_path / "o.tck"
    source.write_bytes(tracks.read_bytes())
    for argv, message in ((["--labels-out", str(source)], f"--labels-out {source} is an input; name another file"),
                          (["--labels-out", str(labels), "--centroids-out", str(labels)],
                           f"--labels-out and --centroids-out name the same file {labels}"),
                          (["--out", str(tck)], f"--out {tck}: clusters go into one .trx file or a folder of "
                                                "per-cluster files, not one .tck file")):
        assert difftract(["cluster", str(source), "--threshold", "10", "--force", *argv]) == 2
        assert capsys.readouterr().err == f"difftract: error: {message}\n"
    assert source.read_bytes() == tracks.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.trk"]


def test_existing_outputs_need_force_and_force_replaces_an_earlier_runs_clusters(tmp_path, tracks, difftract,
                                                                                 capsys):
    labels, folder = tmp_path / "labels.txt", tmp_path / "bundles"
    labels.write_text("keep\n")
    argv = ["cluster", str(tracks), "--threshold", "10", "--labels-out", str(labels), "--quiet"]
    assert difftract(argv) == 2
    assert capsys.readouterr().err == f"difftract: error: {labels} exists; use --force to overwrite it\n"
    assert labels.read_text() == "keep\n"
    folder.mkdir()
    (folder / "cluster_0099.trk").write_bytes(b"stale")
    (folder / "notes.txt").write_text("mine")
    argv = ["cluster", str(tracks), "--threshold", "10", "--out", str(folder), "--quiet"]
    assert difftract(argv) == 2
    assert "holds the cluster files of an earlier run; use --force" in capsys.readouterr().err
    assert difftract([*argv, "--force"]) == 0
    written = sorted(p.name for p in folder.iterdir())
    assert "cluster_0099.trk" not in written and "notes.txt" in written and "cluster_0000.trk" in written


def test_streamlines_without_two_distinct_points_are_an_input_error(tmp_path, difftract, capsys):
    from DiffTractographyLib import Tractogram

    path = tmp_path / "points.tck"
    save_tractogram(Tractogram.from_list([np.ones((1, 3)), np.zeros((2, 3))]), path)
    assert difftract(["cluster", str(path), "--threshold", "5", "--labels-out", str(tmp_path / "l.txt")]) == 2
    assert capsys.readouterr().err == ("difftract: error: none of the 2 streamlines has two distinct points: "
                                       "nothing to cluster\n")
    assert not (tmp_path / "l.txt").exists()


def test_per_cluster_trk_files_from_a_tck_share_one_grid_said_once(tmp_path, tracks, difftract, capsys):
    from dipy.io.streamline import load_tractogram as dipy_load

    from DiffTractographyLib.io import write_tck

    source = load_tractogram(tracks)
    path = tmp_path / "in.tck"
    write_tck(path, [(source.points.numpy(), source.lengths.numpy())])
    assert difftract(["cluster", str(path), "--threshold", "10", "--out", str(tmp_path / "f"), "--quiet"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "a 1 mm grid around them" in err[0]
    headers = [dipy_load(str(f), "same", bbox_valid_check=True) for f in sorted((tmp_path / "f").glob("*.trk"))]
    assert len(headers) > 1 and all(np.array_equal(h.affine, headers[0].affine) for h in headers)
