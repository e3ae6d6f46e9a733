"""Trilinear interpolation follows MRtrix3's masked rule and DIPY's rule at voxel centres, inside
voxels and on the half-voxel border; gradients reach data and points."""
import numpy as np
import pytest
import torch

from DiffTractographyLib.errors import InputError
from DiffTractographyLib.interpolation import VolumeField

AFFINE = np.array([[-2.0, 0, 0, 10.0], [0, 2.0, 0, -5.0], [0, 0, 2.5, 3.0], [0, 0, 0, 1]])


def field(rule, data=None):
    if data is None:
        data = torch.arange(4 * 5 * 6 * 2, dtype=torch.float64).reshape(4, 5, 6, 2) + 1.0
    return VolumeField(data, AFFINE, rule=rule)


def ras(ijk):
    ijk = np.atleast_2d(np.asarray(ijk, float))
    return torch.as_tensor(ijk @ AFFINE[:3, :3].T + AFFINE[:3, 3])


@pytest.mark.parametrize("rule", ["mrtrix", "dipy"])
def test_voxel_centres_and_midpoints(rule):
    f = field(rule)
    values, inside = f.sample(ras([[1, 2, 3], [1.5, 2, 3], [1.25, 2.5, 3.75]]))
    assert inside.all()
    d = f.data
    torch.testing.assert_close(values[0], d[1, 2, 3])
    torch.testing.assert_close(values[1], (d[1, 2, 3] + d[2, 2, 3]) / 2)
    expected = sum(wx * wy * wz * d[1 + i, 2 + j, 3 + k]
                   for i, wx in ((0, 0.75), (1, 0.25)) for j, wy in ((0, 0.5), (1, 0.5)) for k, wz in ((0, 0.25), (1, 0.75)))
    torch.testing.assert_close(values[2], expected)


def test_border_rules_differ_only_at_minus_half():
    # v = -0.5 exactly: outside for MRtrix (strict), inside for DIPY (inclusive)
    p = ras([[-0.5, 2, 3], [-0.4, 2, 3], [3.49, 2, 3], [3.5, 2, 3]])
    _, inside_m = field("mrtrix").sample(p)
    values_d, inside_d = field("dipy").sample(p)
    assert inside_m.tolist() == [False, True, True, False]
    assert inside_d.tolist() == [True, True, True, False]
    # the outer half voxel extends the edge voxel
    torch.testing.assert_close(values_d[1], field("dipy").data[0, 2, 3])
    torch.testing.assert_close(values_d[2], field("dipy").data[3, 2, 3])


def test_mrtrix_rule_needs_data_in_the_nearest_voxel():
    data = torch.ones(4, 5, 6, 2, dtype=torch.float64)
    data[2, 2, 3] = 0.0
    f = field("mrtrix", data)
    _, inside = f.sample(ras([[2.2, 2, 3], [2.6, 2, 3]]))
    assert inside.tolist() == [False, True]
    data[2, 2, 3, 1] = float("nan")  # NaN counts as data, as in MRtrix3
    _, inside = field("mrtrix", data).sample(ras([[2.2, 2, 3]]))
    assert inside.tolist() == [True]


def test_mrtrix_weights_below_1e6_are_dropped():
    data = torch.zeros(4, 5, 6, 1, dtype=torch.float32)
    data[1, 2, 3] = 1.0
    data[2, 2, 3] = 1000.0
    values, _ = field("mrtrix", data).sample(ras([[1 + 5e-7, 2, 3]]).float())
    assert values.item() == pytest.approx(1.0 - 5e-7, abs=1e-7)  # the 1000 voxel's 5e-7 weight is gone
    values, _ = field("dipy", data.double()).sample(ras([[1 + 5e-7, 2, 3]]))
    assert values.item() == pytest.approx(1.0 + 999.0 * 5e-7, rel=1e-6)


def test_matches_dipy_trilinear():
    interp = pytest.importorskip("dipy.core.interpolation")
    data = torch.randn(4, 5, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    vox = np.random.default_rng(1).uniform(-0.5, [3.49, 4.49, 5.49], size=(50, 3))
    expected = np.stack([interp.trilinear_interpolate4d(data.numpy(), v) for v in vox])
    values, inside = field("dipy", data).sample(ras(vox))
    assert inside.all()
    np.testing.assert_allclose(values.numpy(), expected, atol=1e-12)


def test_gradients_reach_data_and_points():
    data = torch.randn(4, 5, 6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    p = ras([[1.3, 2.2, 3.7]]).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda d, q: VolumeField(d, AFFINE, "dipy").sample(q)[0], (data, p), fast_mode=True)


def test_rejects_non_4d():
    with pytest.raises(InputError, match="4-D"):
        VolumeField(torch.zeros(3, 3, 3), AFFINE)
