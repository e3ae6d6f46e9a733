"""The fits run on CUDA and give the CPU's numbers (float64), and float32 stays close."""
from pathlib import Path

import nibabel as nib
import pytest
import torch

from DiffTractographyLib.dwi_io import load_dwi
from DiffTractographyLib.models.csd import constrained_deconvolution, deconvolution, estimate_response, fit_fod
from DiffTractographyLib.models.dti import fit_dti

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def phantom():
    folder = Path(__file__).resolve().parents[1] / "Data" / "phantom_cross_crop"
    return load_dwi(folder / "dwi.nii.gz"), nib.load(folder / "mask.nii.gz").get_fdata() > 0


def test_dti_on_cuda_matches_cpu(phantom):
    dwi, mask = phantom
    cpu, gpu = fit_dti(dwi, mask), fit_dti(dwi, mask, device="cuda")
    assert gpu.fa.device.type == "cuda"
    torch.testing.assert_close(gpu.fa.cpu(), cpu.fa, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gpu.v1.cpu().abs(), cpu.v1.abs(), rtol=1e-7, atol=1e-7)


def test_csd_on_cuda_matches_cpu(phantom):
    dwi, mask = phantom
    response = estimate_response(dwi, mask)
    cpu = fit_fod(dwi, mask, response=response)
    gpu = fit_fod(dwi, mask, response=response, device="cuda")
    assert gpu.coeffs.device.type == "cuda"
    torch.testing.assert_close(gpu.coeffs.cpu(), cpu.coeffs, rtol=1e-7, atol=1e-8)
    single = fit_fod(dwi, mask, response=response, device="cuda", dtype=torch.float32)
    assert (single.coeffs.cpu().double() - cpu.coeffs).abs().max() < 0.01 * cpu.coeffs.abs().max()


def test_csd_gradient_on_cuda(phantom):
    dwi, mask = phantom
    signal = torch.tensor(dwi.data[mask][:4], dtype=torch.float64, device="cuda", requires_grad=True)
    model = deconvolution(dwi.bvals, dwi.bvecs, estimate_response(dwi, mask), 8, b0_threshold=dwi.b0_threshold,
                          device="cuda")
    coeffs = constrained_deconvolution(signal[:, torch.as_tensor(model.dw, device="cuda")], model)
    coeffs.sum().backward()
    assert signal.grad.device.type == "cuda" and torch.isfinite(signal.grad).all() and signal.grad.abs().sum() > 0
