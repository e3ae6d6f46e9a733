""".tck rows as MRtrix3 stores them, and round trips against the other readers of each format:
nibabel (.tck, .trk), trx-python (.trx), vtk (.vtp) and MRtrix3's tckinfo/tckconvert/tckedit (marked
``mrtrix``: skipped where MRtrix3 is not installed)."""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from DiffTractographyLib import Tractogram, load_tractogram, save_tractogram
from DiffTractographyLib.io import read_tck, read_tck_header, read_tck_rows, subset_tck_rows, tck_rows, write_tck

MRTRIX_FILE = Path(__file__).resolve().parents[1] / "Data" / "invivo_small" / "sdstream_ref.tck"
AFFINE = np.array([[-2.0, 0.1, 0.0, 40.0], [0.0, 1.99, 0.2, -30.0], [0.0, -0.2, 1.99, 12.0], [0, 0, 0, 1]])


def streamlines(seed: int = 0):
    """(points (P, 3) float32 RAS mm, vertex counts (N,)) including a one-vertex streamline."""
    rng = np.random.default_rng(seed)
    lengths = np.r_[1, 2, rng.integers(2, 60, 200)]
    points = (rng.normal(size=(int(lengths.sum()), 3)) * 1.5).cumsum(0).astype(np.float32)
    return points, lengths


def data_bytes(path) -> bytes:
    """A .tck file's bytes after its header (the triplets and the end marker)."""
    return Path(path).read_bytes()[read_tck_header(path)[1]:]


def test_rows_put_a_nan_row_after_each_streamline():
    points = np.arange(15, dtype=np.float32).reshape(5, 3)
    rows = tck_rows(points, np.array([2, 0, 3]))
    assert rows.dtype == np.dtype("<f4") and rows.shape == (8, 3)
    assert np.isnan(rows[[2, 3, 7]]).all()
    np.testing.assert_array_equal(rows[[0, 1, 4, 5, 6]], points)


def test_stored_rows_read_back_and_subset_in_place(tmp_path):
    points, lengths = streamlines()
    cut = int(lengths[:3].sum())  # two chunks, as tracking streams them
    write_tck(tmp_path / "t.tck", [(points[:cut], lengths[:3]), (points[cut:], lengths[3:])])
    rows, back = read_tck_rows(tmp_path / "t.tck")
    np.testing.assert_array_equal(back, lengths)
    np.testing.assert_array_equal(rows, tck_rows(points, lengths))
    keep = np.arange(len(lengths)) % 3 == 0
    kept = subset_tck_rows(rows, lengths, keep)
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    expected = [points[s:s + n] for s, n in zip(starts[keep], lengths[keep])]
    np.testing.assert_array_equal(kept, tck_rows(np.vstack(expected), lengths[keep]))


def test_an_mrtrix3_file_is_written_back_with_the_same_data_bytes(tmp_path):
    points, lengths = read_tck(MRTRIX_FILE)
    count = write_tck(tmp_path / "copy.tck", [(points, lengths)], {"step_size": 0.5})
    assert count == 1421 and read_tck_header(tmp_path / "copy.tck")[0]["step_size"] == "0.5"
    assert data_bytes(tmp_path / "copy.tck") == data_bytes(MRTRIX_FILE)


def test_tck_agrees_with_nibabel_both_ways(tmp_path):
    import nibabel as nib

    points, lengths = streamlines(1)
    write_tck(tmp_path / "ours.tck", [(points, lengths)])
    theirs = nib.streamlines.load(tmp_path / "ours.tck").streamlines
    np.testing.assert_array_equal(theirs._lengths, lengths)
    np.testing.assert_array_equal(theirs.get_data(), points)
    seq = nib.streamlines.ArraySequence(np.split(points, np.cumsum(lengths)[:-1]))
    nib.streamlines.save(nib.streamlines.Tractogram(seq, affine_to_rasmm=np.eye(4)), tmp_path / "nib.tck")
    back, back_lengths = read_tck(tmp_path / "nib.tck")
    np.testing.assert_array_equal(back_lengths, lengths)
    np.testing.assert_array_equal(back, points)


def tractogram(seed: int = 2) -> Tractogram:
    points, lengths = streamlines(seed)
    offsets = np.r_[0, np.cumsum(lengths)]
    return Tractogram(torch.from_numpy(points), torch.from_numpy(offsets), AFFINE, (20, 22, 24),
                      {"seed_index": torch.arange(len(lengths)) * 7})


def test_trk_agrees_with_nibabel(tmp_path):
    import nibabel as nib

    t = tractogram()
    save_tractogram(t, tmp_path / "ours.trk")
    theirs = nib.streamlines.load(tmp_path / "ours.trk")
    np.testing.assert_array_equal(theirs.streamlines._lengths, t.lengths.numpy())
    np.testing.assert_allclose(theirs.streamlines.get_data(), t.points.numpy(), atol=1e-4)
    np.testing.assert_array_equal(theirs.tractogram.data_per_streamline["seed_index"].ravel(), t.seed_index.numpy())


def test_trk_bytes_are_nibabels_and_nibabels_files_read_alike(tmp_path):
    """A .trk with a per-point scalar and a property: our writer's bytes are nibabel's (the header and
    every count word exactly; coordinates to the last bit of float32, which nibabel's own per-streamline
    BLAS products do not fix), and our reader gives exactly what nibabel reads."""
    import nibabel as nib

    t = tractogram()
    fa = np.linspace(0.1, 0.9, len(t.points), dtype=np.float32)
    theirs = nib.streamlines.Tractogram(t.numpy_streamlines(), affine_to_rasmm=np.eye(4),
                                       data_per_streamline={"seed_index": t.seed_index.numpy()[:, None]},
                                       data_per_point={"fa": list(np.split(fa[:, None], np.cumsum(t.lengths)[:-1]))})
    header = {nib.streamlines.Field.VOXEL_TO_RASMM: AFFINE.astype(np.float32),
              nib.streamlines.Field.DIMENSIONS: np.array((40, 30, 20), np.int16),
              nib.streamlines.Field.VOXEL_SIZES: np.linalg.norm(AFFINE[:3, :3], axis=0).astype(np.float32),
              nib.streamlines.Field.VOXEL_ORDER: "".join(nib.orientations.aff2axcodes(AFFINE))}
    nib.streamlines.TrkFile(theirs, header=header).save(tmp_path / "nibabel.trk")
    ours = Tractogram(t.points, t.offsets, AFFINE, (40, 30, 20), {"seed_index": t.seed_index}, {"fa": torch.from_numpy(fa)})
    save_tractogram(ours, tmp_path / "ours.trk")
    a, b = (tmp_path / "ours.trk").read_bytes(), (tmp_path / "nibabel.trk").read_bytes()
    assert a[:1000] == b[:1000] and len(a) == len(b)
    words, expected = np.frombuffer(a[1000:], "<i4"), np.frombuffer(b[1000:], "<i4")
    counts = np.cumsum(np.r_[0, t.lengths.numpy()[:-1] * 4 + 1 + 1])   # 3 coordinates + fa per point, 1 property
    np.testing.assert_array_equal(words[counts], t.lengths.numpy())
    np.testing.assert_array_equal(words[counts], expected[counts])
    np.testing.assert_allclose(words.view("<f4"), expected.view("<f4"), rtol=2e-7, atol=1e-5)
    back = load_tractogram(tmp_path / "nibabel.trk")
    reference = nib.streamlines.load(tmp_path / "nibabel.trk")
    np.testing.assert_array_equal(back.points.numpy(), reference.streamlines.get_data())
    np.testing.assert_array_equal(back.lengths.numpy(), t.lengths.numpy())
    np.testing.assert_array_equal(back.seed_index.numpy(), t.seed_index.numpy())
    np.testing.assert_array_equal(back.data_per_point["fa"].numpy(), fa)
    assert back.dimensions == (40, 30, 20)


def test_a_truncated_trk_is_one_line_error(tmp_path):
    save_tractogram(tractogram(), tmp_path / "t.trk")
    data = (tmp_path / "t.trk").read_bytes()
    (tmp_path / "cut.trk").write_bytes(data[:-8])
    with pytest.raises(Exception, match="ends inside a streamline"):
        load_tractogram(tmp_path / "cut.trk")


def test_trx_agrees_with_trx_python(tmp_path):
    import trx.trx_file_memmap as tmm

    t = tractogram()
    save_tractogram(t, tmp_path / "ours.trx")
    theirs = tmm.load(str(tmp_path / "ours.trx"))
    try:
        np.testing.assert_array_equal(theirs.streamlines.get_data(), t.points.numpy())
        np.testing.assert_array_equal(theirs.streamlines._lengths, t.lengths.numpy())
        np.testing.assert_array_equal(np.asarray(theirs.header["VOXEL_TO_RASMM"]), AFFINE.astype(np.float32))
    finally:
        theirs.close()


def test_vtp_arrays_are_stored_raw_and_read_back_by_vtk(tmp_path):
    vtk = pytest.importorskip("vtk")
    from vtk.util import numpy_support

    t = tractogram()
    save_tractogram(t, tmp_path / "ours.vtp")
    assert b'encoding="raw"' in (tmp_path / "ours.vtp").read_bytes()[:4000]
    reader = vtk.vtkXMLPolyDataReader()
    reader.SetFileName(str(tmp_path / "ours.vtp"))
    reader.Update()
    np.testing.assert_array_equal(numpy_support.vtk_to_numpy(reader.GetOutput().GetPoints().GetData()), t.points.numpy())
    back = load_tractogram(tmp_path / "ours.vtp")
    assert back.lengths.tolist() == t.lengths.tolist() and back.seed_index.tolist() == t.seed_index.tolist()


# -- MRtrix3 reading our files, and we reading theirs ------------------------------------------------
@pytest.mark.mrtrix
@pytest.mark.skipif(shutil.which("tckinfo") is None, reason="needs MRtrix3's tckinfo")
@pytest.mark.parametrize("unfinished", [False, True])
def test_tckinfo_counts_what_we_read(tmp_path, unfinished):
    points, lengths = streamlines(3)
    write_tck(tmp_path / "t.tck", [(points, lengths)])
    if unfinished:  # as a killed tckgen leaves it: count 0, no end marker, a last streamline left open
        raw = (tmp_path / "t.tck").read_bytes().replace(b"count: 0000000202", b"count: 0000000000")
        (tmp_path / "t.tck").write_bytes(raw[:-12] + np.ones((4, 3), "<f4").tobytes())
    out = subprocess.run(["tckinfo", "-count", str(tmp_path / "t.tck")], capture_output=True, text=True, check=True).stdout
    actual = int(out.split("actual count in file:")[1].split()[0])
    assert actual == len(read_tck(tmp_path / "t.tck")[1]) == len(lengths)


@pytest.mark.mrtrix
@pytest.mark.skipif(shutil.which("tckconvert") is None, reason="needs MRtrix3's tckconvert")
def test_tckconvert_reads_our_tck_as_we_do(tmp_path):
    pytest.importorskip("vtk")
    points, lengths = streamlines(4)
    write_tck(tmp_path / "ours.tck", [(points, lengths)])
    subprocess.run(["tckconvert", "-quiet", str(tmp_path / "ours.tck"), str(tmp_path / "theirs.vtk")], check=True)
    theirs = load_tractogram(tmp_path / "theirs.vtk")
    assert theirs.lengths.tolist() == lengths.tolist()
    np.testing.assert_allclose(theirs.points.numpy(), points, rtol=1e-5, atol=1e-6)  # ASCII, 6 significant digits


@pytest.mark.mrtrix
@pytest.mark.skipif(shutil.which("tckedit") is None, reason="needs MRtrix3's tckedit")
def test_tckedit_copies_our_tck_to_the_same_data_bytes(tmp_path):
    points, lengths = streamlines(5)
    write_tck(tmp_path / "ours.tck", [(points, lengths)])
    subprocess.run(["tckedit", "-quiet", str(tmp_path / "ours.tck"), str(tmp_path / "theirs.tck")], check=True)
    assert data_bytes(tmp_path / "theirs.tck") == data_bytes(tmp_path / "ours.tck")
