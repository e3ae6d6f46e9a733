"""Tractogram files round-trip exactly in RAS mm, keep seed_index, and are written atomically."""
import numpy as np
import pytest
import torch

from DiffTractographyLib import Tractogram, load_tractogram, save_tractogram
from DiffTractographyLib.errors import InputError

# LAS grid with an oblique component, as in real scans
AFFINE = np.array([[-2.0, 0.1, 0.0, 40.0], [0.0, 1.99, 0.2, -30.0], [0.0, -0.2, 1.99, 12.0], [0, 0, 0, 1]])


def make_tractogram():
    rng = np.random.default_rng(0)
    streamlines = [rng.normal(size=(n, 3)).cumsum(0).astype(np.float32) * 3 for n in (2, 7, 30)]
    return Tractogram.from_list(streamlines, AFFINE, (20, 22, 24),
                                data_per_streamline={"seed_index": torch.tensor([4, 0, 9])})


@pytest.mark.parametrize("ext", [".tck", ".trk", ".trx", ".vtk", ".vtp"])
def test_roundtrip_points_in_ras(tmp_path, ext):
    pytest.importorskip("vtk") if ext in (".vtk", ".vtp") else None
    t = make_tractogram()
    path = tmp_path / f"out{ext}"
    save_tractogram(t, path)
    back = load_tractogram(path)
    assert back.lengths.tolist() == [2, 7, 30]
    np.testing.assert_allclose(back.points.numpy(), t.points.numpy(), atol=2e-5)
    if ext != ".tck":
        assert back.seed_index.tolist() == [4, 0, 9]
    if ext in (".trk", ".trx"):
        np.testing.assert_allclose(back.affine, AFFINE, atol=1e-5)
        assert back.dimensions == (20, 22, 24)


def test_vtk_files_are_tagged_ras(tmp_path):
    pytest.importorskip("vtk")
    path = tmp_path / "fibers.vtk"
    save_tractogram(make_tractogram(), path)
    assert b"SPACE=RAS" in path.read_bytes()[:200]


def test_failed_write_leaves_no_file(tmp_path):
    t = make_tractogram()
    with pytest.raises(InputError):
        save_tractogram(t, tmp_path / "missing_dir" / "out.tck")
    with pytest.raises(InputError, match="unknown tractogram format"):
        save_tractogram(t, tmp_path / "out.xyz")
    assert list(tmp_path.iterdir()) == []


def test_subset_and_padded_keep_order_and_data():
    t = make_tractogram()
    s = t.subset(torch.tensor([2, 0]))
    assert s.lengths.tolist() == [30, 2]
    assert s.seed_index.tolist() == [9, 4]
    torch.testing.assert_close(s[1], t[0])
    padded, lengths = t.padded()
    assert padded.shape == (3, 30, 3) and lengths.tolist() == [2, 7, 30]
    torch.testing.assert_close(padded[1, :7], t[1])
    assert torch.isnan(padded[0, 2:]).all()
    back = Tractogram.from_padded(padded, lengths)
    torch.testing.assert_close(back.points, t.points)


@pytest.mark.parametrize("ext", [".tck", ".trk", ".trx", ".vtk", ".vtp"])
def test_damaged_files_are_one_line_errors(tmp_path, ext):
    path = tmp_path / f"bad{ext}"
    path.write_bytes(b"not a tractogram")
    with pytest.raises(InputError, match=str(path.name)):
        load_tractogram(path)


@pytest.mark.parametrize("ext", [".vtk", ".vtp"])
def test_a_damaged_vtk_file_prints_nothing_of_vtks_own(tmp_path, capfd, ext):
    """What vtk cannot read is an InputError (or no streamlines, said by the command), never vtk's log."""
    source = tmp_path / f"t{ext}"
    save_tractogram(make_tractogram(), source)
    (tmp_path / f"cut{ext}").write_bytes(source.read_bytes()[:len(source.read_bytes()) // 2])
    try:
        assert len(load_tractogram(tmp_path / f"cut{ext}")) < 3
    except InputError:
        pass
    assert capfd.readouterr().err == ""


def test_large_seed_indices_survive_trx(tmp_path):
    t = make_tractogram()
    t.data_per_streamline["seed_index"] = torch.tensor([16777217, 20000001, 3])
    save_tractogram(t, tmp_path / "big.trx")
    assert load_tractogram(tmp_path / "big.trx").seed_index.tolist() == [16777217, 20000001, 3]


# -- .tck as MRtrix3 writes and reads it ------------------------------------------------------------
def tck_bytes(streamlines, datatype="Float32LE", count=None, end=True) -> bytes:
    """A .tck file as MRtrix3 lays it out: header, triplets, a NaN triplet after each streamline and an
    Inf triplet at the end (``end``)."""
    from DiffTractographyLib.io import TCK_TYPES

    dtype = TCK_TYPES[datatype]
    rows = [np.vstack([s, np.full((1, 3), np.nan)]) for s in streamlines] + ([np.full((1, 3), np.inf)] if end else [])
    data = np.vstack(rows).astype(dtype).tobytes()
    head = f"mrtrix tracks\ndatatype: {datatype}\ncount: {len(streamlines) if count is None else count}\n"
    offset = len(head) + len("file: . 0000\nEND\n")
    return f"{head}file: . {offset:04d}\nEND\n".encode() + data


@pytest.mark.parametrize("datatype", ["Float32LE", "Float32BE", "Float64LE", "Float64BE"])
def test_tck_reads_every_datatype_mrtrix3_writes(tmp_path, datatype):
    streamlines = [np.arange(6, dtype=np.float32).reshape(2, 3) + 0.25, np.zeros((0, 3)), np.ones((3, 3)) * -7.5]
    (tmp_path / "t.tck").write_bytes(tck_bytes(streamlines, datatype))
    t = load_tractogram(tmp_path / "t.tck")
    assert t.lengths.tolist() == [2, 0, 3] and t.points.dtype == torch.float32
    np.testing.assert_array_equal(t.points.numpy(), np.vstack(streamlines))


def test_an_unfinished_tck_reads_the_streamlines_mrtrix3_would(tmp_path):
    """Tracking killed midway: count 0 in the header, no end marker, the last streamline open."""
    streamlines = [np.ones((4, 3)), np.full((2, 3), 2.0)]
    data = tck_bytes(streamlines, count=0, end=False) + np.full((5, 3), 3.0, dtype="<f4").tobytes()
    (tmp_path / "t.tck").write_bytes(data)
    t = load_tractogram(tmp_path / "t.tck")
    assert t.lengths.tolist() == [4, 2]
    np.testing.assert_array_equal(t.points.numpy(), np.vstack(streamlines))


def test_tck_reading_matches_nibabel_on_an_mrtrix3_file():
    import nibabel as nib
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "Data" / "invivo_small" / "sdstream_ref.tck"
    ours, theirs = load_tractogram(path), nib.streamlines.load(path).streamlines
    assert ours.lengths.tolist() == list(theirs._lengths) and len(ours) == 1421
    np.testing.assert_array_equal(ours.points.numpy(), theirs.get_data())


def test_a_file_that_is_not_a_tck_is_an_input_error(tmp_path):
    (tmp_path / "t.tck").write_bytes(b"not a track file\n")
    with pytest.raises(InputError, match="not an MRtrix3 .tck file"):
        load_tractogram(tmp_path / "t.tck")


def test_a_tck_cut_short_of_its_header_count_is_read_with_a_warning(tmp_path):
    streamlines = [np.ones((4, 3)), np.full((2, 3), 2.0), np.full((3, 3), 5.0)]
    data = tck_bytes(streamlines, count=3)
    (tmp_path / "t.tck").write_bytes(data[:len(data) - 5 * 12])  # the last streamline, its NaN row, the end
    with pytest.warns(UserWarning, match="header counts 3 streamlines but the file holds 2"):
        t = load_tractogram(tmp_path / "t.tck")
    assert t.lengths.tolist() == [4, 2]


def test_trk_and_trx_from_a_file_without_a_grid_get_a_grid_around_the_streamlines(tmp_path):
    """A .tck carries no grid; DIPY refuses a .trk/.trx whose streamlines lie outside its header's grid."""
    from dipy.io.streamline import load_tractogram as dipy_load

    source = make_tractogram()
    save_tractogram(source, tmp_path / "t.tck")
    for ext in (".trk", ".trx"):
        with pytest.warns(UserWarning, match="a 1 mm grid around them"):
            save_tractogram(load_tractogram(tmp_path / "t.tck"), tmp_path / f"t{ext}")
        loaded = dipy_load(str(tmp_path / f"t{ext}"), "same", bbox_valid_check=True)
        np.testing.assert_allclose(np.vstack(loaded.streamlines), source.points.numpy(), atol=1e-4)


def test_a_trk_without_vox_to_ras_is_read_as_trackvis_reads_it_and_said(tmp_path):
    save_tractogram(make_tractogram(), tmp_path / "t.trk")
    raw = bytearray((tmp_path / "t.trk").read_bytes())
    raw[440:504] = bytes(64)                             # vox_to_ras: 16 float32 from byte 440
    (tmp_path / "bare.trk").write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="records no voxel-to-RAS transform"):
        t = load_tractogram(tmp_path / "bare.trk")
    assert len(t) == 3
