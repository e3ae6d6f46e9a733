"""SH bases agree with DIPY's definitions; conversions preserve amplitudes; coefficient counts are checked."""
import warnings

import numpy as np
import pytest
import torch

from DiffTractographyLib import sh
from DiffTractographyLib.errors import InputError

shm = pytest.importorskip("dipy.reconst.shm")


def directions(n=60, seed=0):
    d = np.random.default_rng(seed).normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


@pytest.mark.parametrize("lmax", [2, 4, 8, 12])
def test_bases_match_dipy(lmax):
    d = directions()
    theta, phi = np.arccos(d[:, 2]), np.arctan2(d[:, 1], d[:, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        refs = {"tournier07": shm.real_sh_tournier(lmax, theta, phi, legacy=False)[0],
                "descoteaux07": shm.real_sh_descoteaux(lmax, theta, phi, legacy=True)[0],
                "descoteaux07-nonlegacy": shm.real_sh_descoteaux(lmax, theta, phi, legacy=False)[0]}
    for basis, ref in refs.items():
        np.testing.assert_allclose(sh.basis_matrix(torch.tensor(d), lmax, basis).numpy(), ref, atol=1e-13)


def test_conversion_preserves_amplitudes():
    d = torch.tensor(directions())
    c = torch.randn(4, 45, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for a in sh.BASES:
        for b in sh.BASES:
            torch.testing.assert_close(sh.amplitudes(sh.convert_basis(c, a, b), d, b), sh.amplitudes(c, d, a))


def test_coefficient_counts():
    assert [sh.n_coeffs(l) for l in (0, 2, 4, 6, 8, 10, 12)] == [1, 6, 15, 28, 45, 66, 91]
    assert sh.lmax_for(45) == 8 and sh.lmax_for(91) == 12
    with pytest.raises(InputError, match="44 volumes"):
        sh.lmax_for(44)
    with pytest.raises(InputError, match="unknown SH basis"):
        sh.check_basis("mrtrix")


def test_legendre_table_blends_rows_like_mrtrix():
    table = sh.LegendreTable(8)
    assert table.rows.shape == (512, 25) and table.rows.dtype == torch.float32
    el = torch.tensor([0.0, float(table.inc) * 10.25, np.pi], dtype=torch.float32)
    out = table(el)
    torch.testing.assert_close(out[0], table.rows[0])
    torch.testing.assert_close(out[1], 0.75 * table.rows[10] + 0.25 * table.rows[11])
    torch.testing.assert_close(out[2], table.rows[511])
    exact = sh.legendre(8, torch.cos(el.double()))
    assert (out.double() - exact).abs().max() < 2e-3


def test_legendre_table_blends_elevations_of_any_shape():
    table = sh.LegendreTable(8)
    el = torch.rand(4, 3) * np.pi
    np.testing.assert_array_equal(table(el).numpy(), table(el.reshape(-1)).reshape(4, 3, -1).numpy())
    assert table(torch.tensor(0.5)).shape == (25,)
