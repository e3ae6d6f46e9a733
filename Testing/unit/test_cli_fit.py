"""``difftract fit dti|csd`` end to end on real files: the maps it writes equal the library's fits,
headers and the sidecar record basis and frame, a written response can be read back, and bad input
ends with one error line and exit status 2."""
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from DiffTractographyLib import cli, sh
from DiffTractographyLib.dwi_io import load_dwi, load_mask
from DiffTractographyLib.geometry import axes_rotation
from DiffTractographyLib.models.csd import Response, fit_fod
from DiffTractographyLib.models.dti import fit_dti


@pytest.fixture
def difftract():
    return cli.main


@pytest.fixture
def invivo(data_dir):
    folder = data_dir / "invivo_small"
    return folder / "dwi.nii.gz", folder / "mask.nii.gz"


def description(path):
    return nib.load(path).header["descrip"].tobytes().rstrip(b"\0").decode()


def test_dti_writes_the_maps_of_the_fit(tmp_path, invivo, difftract, capsys):
    dwi_path, mask_path = invivo
    assert difftract(["fit", "dti", "--dwi", str(dwi_path), "--mask", str(mask_path), "--out-prefix",
                      str(tmp_path / "sub"), "--frame", "voxel", "--device", "cpu"]) == 0
    names = ["FA", "MD", "AD", "RD", "V1", "RGB"]
    assert capsys.readouterr().out.split() == [str(tmp_path / f"sub_{n}.nii.gz") for n in names]
    dwi = load_dwi(dwi_path)
    fit = fit_dti(dwi, load_mask(mask_path, dwi), frame="voxel")
    for name, expected in zip(names, (fit.fa, fit.md, fit.ad, fit.rd, fit.v1, fit.color_fa)):
        image = nib.load(tmp_path / f"sub_{name}.nii.gz")
        np.testing.assert_allclose(image.get_fdata(), expected.numpy(), rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(image.affine, dwi.affine, atol=1e-4)
    assert description(tmp_path / "sub_V1.nii.gz") == "difftract dti WLS V1 voxel frame"
    assert description(tmp_path / "sub_MD.nii.gz") == "difftract dti WLS MD mm2/s"


def test_csd_writes_coefficients_basis_frame_and_response(tmp_path, invivo, difftract):
    dwi_path, mask_path = invivo
    prefix = tmp_path / "sub"
    assert difftract(["fit", "csd", "--dwi", str(dwi_path), "--mask", str(mask_path), "--out-prefix", str(prefix),
                      "--fa-threshold", "0.5", "--sh-basis", "descoteaux07", "--frame", "world"]) == 0
    sidecar = json.loads((tmp_path / "sub_fod.json").read_text())
    assert sidecar["sh_basis"] == "descoteaux07" and sidecar["sh_frame"] == "world" and sidecar["lmax"] == 8
    assert description(tmp_path / "sub_fod.nii.gz") == "difftract csd SH lmax 8 descoteaux07 world frame"
    evals, s0 = sidecar["response"]["evals_mm2_per_s"], sidecar["response"]["s0"]
    np.testing.assert_allclose(np.loadtxt(tmp_path / "sub_response.txt"), evals + [s0])
    dwi = load_dwi(dwi_path)
    expected = fit_fod(dwi, load_mask(mask_path, dwi), response=Response(tuple(evals), s0), basis="descoteaux07")
    written = nib.load(tmp_path / "sub_fod.nii.gz").get_fdata()
    np.testing.assert_allclose(written, expected.coeffs.numpy(), rtol=1e-5, atol=1e-6)
    # the same FOD read in the voxel frame: world coefficients sampled at R @ d equal voxel ones at d
    assert difftract(["fit", "csd", "--dwi", str(dwi_path), "--mask", str(mask_path), "--out-prefix",
                      str(tmp_path / "vox"), "--response", str(tmp_path / "sub_response.txt"), "--frame", "voxel"]) == 0
    voxel = torch.as_tensor(nib.load(tmp_path / "vox_fod.nii.gz").get_fdata())
    d = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), dim=1)
    on_world = sh.amplitudes(torch.as_tensor(written), d @ torch.as_tensor(axes_rotation(dwi.affine)).T, "descoteaux07")
    on_voxel = sh.amplitudes(voxel, d, "tournier07")
    assert torch.corrcoef(torch.stack([on_world.flatten(), on_voxel.flatten()]))[0, 1] > 0.99


def test_nrrd_input_gives_the_same_maps(tmp_path, invivo, difftract):
    nrrd = pytest.importorskip("nrrd")
    dwi_path, mask_path = invivo
    dwi = load_dwi(dwi_path)
    lps = np.diag([-1.0, -1.0, 1.0])
    header = {"space": "left-posterior-superior", "kinds": ["space", "space", "space", "list"],
              "space directions": np.vstack([(lps @ dwi.affine[:3, :3]).T, np.full((1, 3), np.nan)]),
              "space origin": lps @ dwi.affine[:3, 3], "measurement frame": np.eye(3), "DWMRI_b-value": "3000"}
    for i, (g, b) in enumerate(zip(dwi.bvecs @ lps, dwi.bvals)):
        header[f"DWMRI_gradient_{i:04d}"] = " ".join(f"{v:.17g}" for v in g * np.sqrt(b / 3000))
    nrrd.write(str(tmp_path / "dwi.nhdr"), dwi.data, header)
    for source, prefix in ((tmp_path / "dwi.nhdr", "nrrd"), (dwi_path, "nifti")):
        assert difftract(["fit", "dti", "--dwi", str(source), "--mask", str(mask_path), "--out-prefix",
                          str(tmp_path / prefix)]) == 0
    np.testing.assert_allclose(nib.load(tmp_path / "nrrd_FA.nii.gz").get_fdata(),
                               nib.load(tmp_path / "nifti_FA.nii.gz").get_fdata(), atol=1e-6)


def test_bad_input_ends_with_one_line_and_status_2(tmp_path, invivo, difftract, capsys):
    dwi_path, mask_path = invivo
    response = tmp_path / "bad_response.txt"
    response.write_text("0.0017 0.0004\n")
    runs = [
        (["dti", "--dwi", str(tmp_path / "missing.nii.gz")], "missing.nii.gz: no such file"),
        (["dti", "--dwi", str(dwi_path), "--out-prefix", str(tmp_path / "no" / "sub")], "the output folder"),
        (["csd", "--dwi", str(dwi_path), "--response", str(response)], "a response file holds four numbers"),
        (["csd", "--dwi", str(dwi_path), "--mask", str(mask_path), "--fa-threshold", "0.99"], "no voxel with FA > 0.99"),
        (["dti", "--dwi", str(dwi_path), "--device", "cuda:x"], "unknown device 'cuda:x'"),
    ]
    for argv, message in runs:
        argv = ["fit"] + argv + ([] if "--out-prefix" in argv else ["--out-prefix", str(tmp_path / "sub")])
        assert difftract(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("difftract: error: ") and message in err and err.count("\n") == 1
    assert not list(tmp_path.glob("sub*"))
