"""The whole-brain-sized speed phantom: closed-form fibre families with the crossings it promises."""
import numpy as np
import torch

from DiffTractographyLib import sh
from DiffTractographyLib.geometry import apply_affine
from DiffTractographyLib.phantoms import brain_phantom


def amplitudes(coeffs: torch.Tensor, directions: np.ndarray) -> np.ndarray:
    """The FOD's amplitude (D,) along unit RAS ``directions`` (D, 3)."""
    return sh.amplitudes(coeffs.double(), torch.as_tensor(directions)).numpy()


def test_brain_phantom_has_its_fibre_families_and_crossings():
    coeffs, mask, affine = brain_phantom((40, 40, 28), voxel_size=2.0, lmax=8)
    assert coeffs.shape == (40, 40, 28, 45) and coeffs.dtype == torch.float32
    np.testing.assert_allclose(apply_affine(affine, [[0, 0, 0], [39, 39, 27]]), [[-39, -39, -27], [39, 39, 27]])
    assert 0.3 < mask.mean() < 0.45  # an ellipsoid with 0.9 of each extent: pi / 6 * 0.9^3 = 0.38
    assert not coeffs[~torch.as_tensor(mask)].any()
    axes = np.eye(3)
    # on the A-P axis away from the centre slab: circumferential fibres run L-R there, nothing S-I
    at = np.round(np.linalg.solve(affine[:3, :3], np.array([0.0, 28.0, 12.0]) - affine[:3, 3])).astype(int)
    amp = amplitudes(coeffs[tuple(at)], axes)
    assert amp[0] > 0.5 and abs(amp[2]) < 0.1 * amp[0]
    # at the centre: S-I cylinder and L-R slab cross (circumferential fibres are absent near the axis)
    centre = np.round(np.linalg.solve(affine[:3, :3], -affine[:3, 3])).astype(int)
    amp = amplitudes(coeffs[tuple(centre)], axes)
    assert amp[0] > 0.5 and amp[2] > 0.5 and abs(amp[1]) < 0.1 * amp[0]
