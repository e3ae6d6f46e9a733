"""The DWI container validates its gradient table once: b=0 detection, shells, shell selection,
unit b-vectors, and one clear message for each kind of bad input."""
import warnings

import numpy as np
import pytest

from DiffTractographyLib.dwi import DWI, b0_mask, shells
from DiffTractographyLib.errors import InputError


def directions(n, seed=0):
    d = np.random.default_rng(seed).normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def make_dwi(bvals, bvecs=None, data=None, **kwargs):
    bvals = np.asarray(bvals, dtype=float)
    bvecs = directions(len(bvals)) if bvecs is None else bvecs
    data = np.ones((2, 3, 4, len(bvals)), np.float32) if data is None else data
    return DWI(data, np.diag([2.0, 2.0, 2.0, 1.0]), bvals, bvecs, **kwargs)


def test_b0_detection_uses_the_threshold():
    assert b0_mask([0, 5, 50, 60, 1000]).tolist() == [True, True, True, False, False]
    assert b0_mask([0, 5, 50, 60, 1000], b0_threshold=10).tolist() == [True, True, False, False, False]
    assert make_dwi([5, 1000, 1000], b0_threshold=10).b0_mask.tolist() == [True, False, False]


def test_shells_split_where_b_values_jump_by_more_than_80():
    bvals = [0, 1005, 2000, 995, 1000, 2010, 5, 3000, 1990]
    assert [s.tolist() for s in shells(bvals)] == [[1, 3, 4], [2, 5, 8], [7]]
    dwi = make_dwi(bvals)
    np.testing.assert_allclose(dwi.shell_bvalues(), [1000, 2000, 3000])


def test_select_shell_keeps_the_b0_volumes_and_the_nearest_shell():
    data = np.arange(2 * 3 * 4 * 6, dtype=np.float32).reshape(2, 3, 4, 6)
    dwi = make_dwi([0, 1000, 2000, 1000, 0, 2000], data=data)
    single = dwi.select_shell(1950)
    assert single.bvals.tolist() == [0, 2000, 0, 2000]
    np.testing.assert_array_equal(single.data, data[..., [0, 2, 4, 5]])
    np.testing.assert_array_equal(single.bvecs, dwi.bvecs[[0, 2, 4, 5]])
    with pytest.warns(UserWarning, match="using the largest, b = 2000"):
        assert dwi.select_shell().bvals.tolist() == [0, 2000, 0, 2000]
    with pytest.raises(InputError, match="no shell at b = 3000 s/mm\\^2; the DWI has shells at b = 1000, 2000"):
        dwi.select_shell(3000)
    assert single.select_shell() is single


def test_non_unit_bvecs_are_normalised_and_scale_their_b_value():
    g = directions(4)
    g[2] *= np.sqrt(0.5)  # a b=500 volume encoded on a nominal b=1000 scan
    with pytest.warns(UserWarning, match="volumes 2 are not unit length"):
        dwi = make_dwi([0, 1000, 1000, 1000], g)
    np.testing.assert_allclose(dwi.bvals, [0, 1000, 500, 1000])
    np.testing.assert_allclose(np.linalg.norm(dwi.bvecs, axis=1), 1.0)
    assert np.linalg.norm(g[2]) < 0.8  # the caller's array is untouched


def test_rounding_level_norm_errors_are_normalised_silently():
    g = directions(3) * np.array([[1.0], [1.003], [0.998]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dwi = make_dwi([0, 1000, 1000], g)
    assert dwi.bvals.tolist() == [0, 1000, 1000]
    np.testing.assert_allclose(np.linalg.norm(dwi.bvecs[1:], axis=1), 1.0)


def test_nan_voxels_are_zeroed_with_a_warning_and_the_input_is_kept():
    data = np.ones((2, 3, 4, 3), np.float32)
    data[1, 2, 3, 1] = np.nan
    data[0, 0, 0, 2] = np.inf
    with pytest.warns(UserWarning, match="2 voxels hold NaN or Inf values"):
        dwi = make_dwi([0, 1000, 1000], data=data)
    assert np.isfinite(dwi.data).all() and dwi.data[1, 2, 3].tolist() == [0, 0, 0] and dwi.data[1, 1, 1, 0] == 1
    assert np.isnan(data[1, 2, 3, 1])


@pytest.mark.parametrize("kwargs, message", [
    (dict(data=np.ones((2, 3, 4), np.float32)), "a DWI must be a 4-D image .* got 3-D data of shape \\(2, 3, 4\\)"),
    (dict(bvecs=directions(2)), "the DWI has 3 volumes but the gradient table has 3 b-values and 2 directions"),
    (dict(bvecs=np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0]])), "volumes 1 have b > 50 s/mm\\^2 but a zero gradient direction"),
    (dict(bvals=[100, 1000, 1000]), "no b=0 volume \\(b <= 50 s/mm\\^2\\); the smallest b-value is 100"),
    (dict(bvals=[0, -1000, 1000]), "negative, NaN or infinite"),
])
def test_bad_input_gets_one_clear_message(kwargs, message):
    args = dict(bvals=[0, 1000, 1000]) | kwargs
    with pytest.raises(InputError, match=message):
        make_dwi(**args)
