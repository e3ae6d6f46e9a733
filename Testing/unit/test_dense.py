"""The pmf methods' dense products (``kernels.dense``) give what plain loops give: ``column_sums``
bit for bit (the forward's choices depend on its rounding), ``row_sums`` to float64 rounding; with
whole SIMD vectors on the CPU and with the one-column-at-a-time code other targets (CUDA) compile,
checked here by compiling that code for the CPU."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import cuda_ptx
from numba import float32, float64, int64, njit, void

from DiffTractographyLib.tracking.kernels import dense

WIDTHS = (1, 7, 8, 15, 16, 17, 56, 64, 100, 112, 362)
COEFFICIENTS = (1, 6, 45, 91)
#: (basis, sums) types: float32 screening, float64 pmf, float32 columns summed in float64, float64
#: columns screened in float32
TYPES = ((np.float32, np.float32), (np.float64, np.float64), (np.float32, np.float64), (np.float64, np.float32))


def _dispatchers():
    @njit(cache=False)
    def columns(basis, c, width, out):
        dense.column_sums(basis, c, width, out)

    @njit(cache=False)
    def rows(basis, x, width, out):
        dense.row_sums(basis, x, width, out)

    @njit(cache=False)
    def batch_columns(basis, cs, count, width, out):
        dense.batch_column_sums(basis, cs, count, width, out)

    @njit(cache=False)
    def batch_rows(basis, xs, count, width, out):
        dense.batch_row_sums(basis, xs, count, width, out)

    return columns, rows, batch_columns, batch_rows


VECTORS, PLAIN = _dispatchers(), _dispatchers()


@pytest.fixture(params=["vectors", "plain"])
def products(request, monkeypatch):
    """(column_sums, row_sums) compiled as for the CPU, or as for targets without vectors."""
    if request.param == "plain":
        monkeypatch.setattr(dense, "vector_lanes", lambda context, dtype: 1)
        return PLAIN
    return VECTORS


def _loop_column_sums(basis, c, width, out):
    """The loop ``column_sums`` replaces: c[j] and the columns cast to the sums' type, each product
    rounded, then added in coefficient order (numpy neither fuses nor reorders these)."""
    cast = out.dtype.type
    out[:width] = 0
    for j in range(len(c)):
        out[:width] = out[:width] + cast(c[j]) * basis[j, :width].astype(out.dtype)
    return out


@pytest.mark.parametrize("stored, summed", TYPES)
def test_column_sums_round_as_the_loop_does(products, stored, summed):
    columns = products[0]
    rng = np.random.default_rng(3)
    for n in COEFFICIENTS:
        for width in WIDTHS:
            for padding in (0, 16):  # rows and output with and without room for a whole last vector
                basis = rng.standard_normal((n + 1, width + padding)).astype(stored)
                c = rng.standard_normal(n)
                out = np.full(width + padding, np.nan, summed)
                columns(basis, c, width, out)
                expected = _loop_column_sums(basis, c, width, np.zeros(width, summed))
                assert np.array_equal(out[:width], expected), (n, width, padding)
                if padding == 0:
                    assert not np.isnan(out).any()


def test_column_sums_leave_the_output_past_the_last_vector_alone():
    columns = VECTORS[0]
    basis = np.ones((45, 112), np.float32)
    out = np.full(130, -1.0, np.float32)
    columns(basis, np.ones(45), 100, out)
    assert (out[:100] == 45.0).all()
    assert (out[112:] == -1.0).all()  # whole vectors of 16 reach column 112 at most


def test_row_sums_are_the_matrix_product(products):
    rows = products[1]
    rng = np.random.default_rng(4)
    for n in COEFFICIENTS:
        for width in WIDTHS:
            basis = rng.standard_normal((n, width + 3))
            x = rng.standard_normal(width + 3)
            x[width:] = np.nan  # never read
            out = np.full(n, np.nan)
            rows(basis, x, width, out)
            np.testing.assert_allclose(out, basis[:, :width] @ x[:width], rtol=1e-12, atol=1e-12 * width)


@pytest.mark.parametrize("stored, summed", TYPES)
def test_a_batch_of_column_sums_is_each_rows_column_sums_bit_for_bit(products, stored, summed):
    columns, _, batch_columns, _ = products
    rng = np.random.default_rng(5)
    for width in (8, 17, 112, 362):
        basis = rng.standard_normal((45, width + 16)).astype(stored)
        cs = rng.standard_normal((dense.BATCH, 45))
        for count in range(1, dense.BATCH + 1):
            out = np.full((dense.BATCH, width + 16), np.nan, summed)
            batch_columns(basis, cs, count, width, out)
            for k in range(dense.BATCH):
                if k < count:
                    alone = np.zeros(width + 16, summed)
                    columns(basis, cs[k], width, alone)
                    assert np.array_equal(out[k, :width], alone[:width]), (width, count, k)
                else:
                    assert np.isnan(out[k]).all()  # rows past ``count`` untouched


def test_a_batch_of_row_sums_is_the_matrix_product(products):
    _, _, _, batch_rows = products
    rng = np.random.default_rng(6)
    for n in COEFFICIENTS:
        for width in (8, 17, 112, 362):
            basis = rng.standard_normal((n, width + 3))
            xs = rng.standard_normal((dense.BATCH, width + 3))
            xs[:, width:] = np.nan  # never read
            for count in range(1, dense.BATCH + 1):
                out = np.full((dense.BATCH, n), np.nan)
                batch_rows(basis, xs, count, width, out)
                np.testing.assert_allclose(out[:count], xs[:count, :width] @ basis[:, :width].T, rtol=1e-12,
                                           atol=1e-12 * width)
                assert np.isnan(out[count:]).all()


def test_types_they_do_not_serve_are_refused_at_compile_time():
    columns, rows = VECTORS[:2]
    with pytest.raises(Exception, match="column_sums"):
        columns(np.zeros((2, 4), np.int64), np.zeros(2), 4, np.zeros(4))
    with pytest.raises(Exception, match="row_sums"):
        rows(np.zeros((2, 4), np.float32), np.zeros(4), 4, np.zeros(2))


def _both_products(basis, c, width, out, basis64, x, sums):
    dense.column_sums(basis, c, width, out)
    dense.row_sums(basis64, x, width, sums)


#: a CUDA kernel calling both products, in PTX for sm_90 (None without numba-cuda[cu12])
PTX = cuda_ptx(_both_products, void(float32[:, ::1], float64[::1], int64, float64[::1], float64[:, ::1],
                                    float64[::1], float64[::1]))


@pytest.mark.skipif(PTX is None, reason="numba-cuda cannot compile to PTX here (numba-cuda[cu12] not installed)")
def test_the_products_compile_for_cuda_one_column_at_a_time():
    assert "cvt.f64.f32" in PTX  # float32 columns widened to the float64 sums
    assert ".v2." not in PTX and ".v4." not in PTX  # no vector loads: each thread its own streamline
