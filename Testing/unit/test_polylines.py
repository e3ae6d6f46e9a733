"""Streamline lengths on numpy arrays: MRtrix3's float32 sums in its order, and ``difftract select``
on lengths alone from .tck to .tck without torch, as tckedit keeps them."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from DiffTractographyLib.io import read_tck, write_tck
from DiffTractographyLib.polylines import polyline_lengths, within_length


def streamlines(seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = np.r_[0, 1, 2, rng.integers(1, 90, 300)]
    points = (rng.normal(size=(int(lengths.sum()), 3)) * 2.0).astype(np.float32).cumsum(0)
    return points, lengths


def test_lengths_are_float32_segment_norms_added_in_order():
    points, lengths = streamlines()
    expected, start = [], 0
    for n in lengths:
        total = np.float32(0.0)
        for k in range(start, start + n - 1):
            d = points[k + 1] - points[k]
            total = np.float32(total + np.sqrt(np.float32(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])))
        expected.append(total)
        start += n
    np.testing.assert_array_equal(polyline_lengths(points, lengths), np.array(expected, dtype=np.float32))


def test_limits_are_inclusive():
    points = np.array([[0, 0, 0], [3, 4, 0], [0, 0, 0], [0, 0, 2]], dtype=np.float32)
    assert within_length(points, np.array([2, 2]), 2.0, 5.0).tolist() == [True, True]
    assert within_length(points, np.array([2, 2]), 2.5, None).tolist() == [True, False]
    assert within_length(points, np.array([2, 2]), None, 4.99).tolist() == [False, True]


@pytest.mark.skipif(shutil.which("tckedit") is None, reason="needs MRtrix3's tckedit")
def test_select_on_lengths_keeps_what_tckedit_keeps_without_importing_torch(tmp_path):
    points, lengths = streamlines(1)
    write_tck(tmp_path / "in.tck", [(points, lengths)])
    code = ("import sys; from DiffTractographyLib.cli import main; "
            f"main(['select', {str(tmp_path / 'in.tck')!r}, '--min-length', '40', '--max-length', '120', "
            f"'--out', {str(tmp_path / 'ours.tck')!r}, '--quiet']); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"]
    subprocess.run(["tckedit", "-quiet", "-minlength", "40", "-maxlength", "120", str(tmp_path / "in.tck"),
                    str(tmp_path / "theirs.tck")], check=True)
    ours, theirs = read_tck(tmp_path / "ours.tck"), read_tck(tmp_path / "theirs.tck")
    assert 50 < len(ours[1]) < len(lengths)
    np.testing.assert_array_equal(ours[1], theirs[1])
    np.testing.assert_array_equal(ours[0], theirs[0])


def test_limits_at_a_streamlines_exact_length_decide_as_mrtrix3_sums():
    """Limits placed on, and one float32 step either side of, streamlines' lengths in MRtrix3's
    summation order: the fast sums must not decide these differently."""
    points, lengths = streamlines(2)
    exact = polyline_lengths(points, lengths)
    for limit in exact[3:40]:
        for value in (np.nextafter(limit, np.float32(0)), limit, np.nextafter(limit, np.float32(np.inf))):
            np.testing.assert_array_equal(within_length(points, lengths, float(value), None), exact >= value)
            np.testing.assert_array_equal(within_length(points, lengths, None, float(value)), exact <= value)


def test_lengths_in_tck_rows_measure_the_streamlines_in_place():
    from DiffTractographyLib.io import tck_rows
    from DiffTractographyLib.polylines import packed_starts

    points, lengths = streamlines(3)
    rows, starts = tck_rows(points, lengths), packed_starts(lengths, gap=1)
    np.testing.assert_array_equal(polyline_lengths(rows, lengths, starts), polyline_lengths(points, lengths))
    np.testing.assert_array_equal(within_length(rows, lengths, 30.0, 90.0, starts), within_length(points, lengths, 30.0, 90.0))
