"""Gradients reach the signal: torch.autograd.gradcheck (float64) of the tensor fits and of the
constrained deconvolution on real voxels."""
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from DiffTractographyLib.dwi_io import load_dwi
from DiffTractographyLib.models.csd import constrained_deconvolution, deconvolution, estimate_response
from DiffTractographyLib.models.dti import fit_tensor


@pytest.fixture(scope="module")
def phantom():
    folder = Path(__file__).resolve().parents[1] / "Data" / "phantom_cross_crop"
    dwi = load_dwi(folder / "dwi.nii.gz")
    bundles = nib.load(folder / "bundles.nii.gz").get_fdata()
    crossing = tuple(np.argwhere(bundles == 2)[0])  # two fibres: many active constraints
    return dwi, torch.tensor(dwi.data[crossing][None], dtype=torch.float64)


@pytest.mark.parametrize("method", ["WLS", "OLS"])
def test_tensor_fit_gradcheck(phantom, method):
    dwi, signal = phantom

    def maps(s):
        fit = fit_tensor(s, dwi.bvals, dwi.bvecs, method)
        return fit.fa, fit.md, fit.tensor, fit.s0, fit.v1.abs()

    assert torch.autograd.gradcheck(maps, signal.clone().requires_grad_(), eps=1e-4, atol=1e-6, rtol=1e-4)


def test_csd_gradcheck(phantom):
    dwi, signal = phantom
    model = deconvolution(dwi.bvals, dwi.bvecs, estimate_response(dwi), 8, b0_threshold=dwi.b0_threshold)
    dw_signal = signal[:, torch.as_tensor(model.dw)].clone().requires_grad_()
    coeffs = constrained_deconvolution(dw_signal, model)
    assert coeffs.requires_grad
    assert torch.autograd.gradcheck(lambda s: constrained_deconvolution(s, model), dw_signal, eps=1e-4, atol=1e-7,
                                    rtol=1e-4)


def test_csd_gradient_without_grad_is_the_same_fit(phantom):
    dwi, signal = phantom
    model = deconvolution(dwi.bvals, dwi.bvecs, estimate_response(dwi), 8, b0_threshold=dwi.b0_threshold)
    dw_signal = signal[:, torch.as_tensor(model.dw)]
    torch.testing.assert_close(constrained_deconvolution(dw_signal.clone().requires_grad_(), model).detach(),
                               constrained_deconvolution(dw_signal, model), rtol=1e-12, atol=1e-12)
