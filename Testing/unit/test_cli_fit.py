"""``difftract fit dti|csd`` end to end on real files: the maps it writes equal the library's fits,
headers and the sidecar record basis and frame, a written response can be read back, and bad input
(options out of range, a folder as prefix, existing outputs without --force) ends with one error line
and exit status 2, found before the fit and leaving no output behind."""
import errno
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from DiffTractographyLib import cli, sh
from DiffTractographyLib.cli import fit as fit_command
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


@pytest.fixture
def tiny(tmp_path):
    """A 2x2x2 DWI of one b=0 volume and 15 directions at b = 1000 s/mm^2."""
    return write_dwi(tmp_path, [0] + [1000] * 15)


def write_dwi(folder, bvals, name="dwi"):
    """A 2x2x2 DWI of one prolate tensor (1.7, 0.4, 0.4 x 1e-3 mm^2/s, S0 1000) measured at ``bvals``
    (s/mm^2) along seeded random directions, with FSL sidecars; returns the NIfTI's path."""
    bvals = np.asarray(bvals, dtype=np.float64)
    bvecs = np.random.default_rng(0).normal(size=(len(bvals), 3))
    bvecs = np.where(bvals[:, None] > 0, bvecs / np.linalg.norm(bvecs, axis=1, keepdims=True), 0.0)
    signal = 1000 * np.exp(-bvals * (bvecs ** 2 @ np.array([1.7e-3, 0.4e-3, 0.4e-3])))
    nib.save(nib.Nifti1Image(np.broadcast_to(signal, (2, 2, 2, len(bvals))).astype(np.float32), np.eye(4)),
             folder / f"{name}.nii.gz")
    np.savetxt(folder / f"{name}.bval", bvals[None], fmt="%g")
    np.savetxt(folder / f"{name}.bvec", bvecs.T, fmt="%.8f")
    return folder / f"{name}.nii.gz"


def fit(difftract, capsys, *argv):
    """``difftract fit argv``: (exit status, stderr)."""
    status = difftract(["fit", *map(str, argv)])
    return status, capsys.readouterr().err


def names(folder):
    return sorted(p.name for p in folder.iterdir())


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
    seeded = torch.Generator().manual_seed(0)
    d = torch.nn.functional.normalize(torch.randn(50, 3, dtype=torch.float64, generator=seeded), dim=1)
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
        (["csd", "--dwi", str(dwi_path), "--mask", str(mask_path), "--fa-threshold", "0.99"],
         "no voxel with FA > 0.99"),
        (["dti", "--dwi", str(dwi_path), "--device", "cuda:x"], "unknown device 'cuda:x'"),
    ]
    for argv, message in runs:
        argv = ["fit"] + argv + ([] if "--out-prefix" in argv else ["--out-prefix", str(tmp_path / "sub")])
        assert difftract(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("difftract: error: ") and message in err and err.count("\n") == 1
    assert not list(tmp_path.glob("sub*"))


@pytest.mark.parametrize("model", ["dti", "csd"])
def test_a_dwi_without_diffusion_weighting_is_refused_by_both_models(tmp_path, difftract, capsys, model):
    dwi = write_dwi(tmp_path, [0, 0, 0], "b0")
    assert fit(difftract, capsys, model, "--dwi", dwi, "--out-prefix", tmp_path / "sub") == (
        2, "difftract: error: the DWI has no diffusion-weighted volume\n")
    assert names(tmp_path) == ["b0.bval", "b0.bvec", "b0.nii.gz"]


@pytest.mark.parametrize("model, option, value, message", [
    ("csd", "--lambda", "nan", "--lambda must be a finite constraint weight > 0, got nan"),
    ("csd", "--lambda", "0", "--lambda must be a finite constraint weight > 0, got 0"),
    ("csd", "--tau", "-1", "--tau must be a finite fraction of the mean FOD amplitude >= 0, got -1"),
    ("csd", "--roi-radii", "-3", "--roi-radii must be a number of voxels >= 0, got -3"),
    ("csd", "--fa-threshold", "nan", "--fa-threshold must be a finite FA >= 0, got nan"),
    ("dti", "--b0-threshold", "-1", "--b0-threshold must be a finite b-value >= 0 s/mm^2, got -1"),
    ("dti", "--shell", "inf", "--shell must be a finite b-value > 0 s/mm^2, got inf"),
])
def test_numeric_options_out_of_range_are_refused_before_the_dwi_is_read(tmp_path, difftract, capsys, model,
                                                                        option, value, message):
    missing = tmp_path / "missing.nii.gz"  # the option is refused first, not the missing file
    assert fit(difftract, capsys, model, "--dwi", missing, option, value, "--out-prefix", tmp_path / "sub") == (
        2, f"difftract: error: {message}\n")
    assert names(tmp_path) == []


def test_the_bounds_of_the_numeric_options_are_accepted(tmp_path, tiny, difftract, capsys):
    status, _ = fit(difftract, capsys, "csd", "--dwi", tiny, "--lmax", "4", "--tau", "0", "--roi-radii", "0",
                    "--b0-threshold", "0", "--fa-threshold", "0", "--out-prefix", tmp_path / "sub")
    assert status == 0
    assert json.loads((tmp_path / "sub_fod.json").read_text())["tau"] == 0


@pytest.mark.parametrize("prefix, example", [("./", "./subject"), (".", "./subject"), ("out/", "out/subject"),
                                             ("out", "out/subject")])
def test_a_prefix_naming_a_folder_is_refused(tmp_path, tiny, difftract, capsys, monkeypatch, prefix, example):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    assert fit(difftract, capsys, "dti", "--dwi", tiny, "--out-prefix", prefix) == (
        2, f"difftract: error: --out-prefix {prefix} names a folder, not a file-name stem; give e.g. {example}\n")
    assert names(tmp_path) == ["dwi.bval", "dwi.bvec", "dwi.nii.gz", "out"] and names(tmp_path / "out") == []


@pytest.mark.parametrize("model, suffixes", [(model, fit_command.SUFFIXES[model]) for model in ("dti", "csd")])
def test_existing_outputs_are_kept_unless_force_is_given(tmp_path, tiny, difftract, capsys, model, suffixes):
    last = tmp_path / f"sub{suffixes[-1]}"
    last.write_bytes(b"earlier run")
    argv = [model, "--dwi", tiny, "--out-prefix", tmp_path / "sub"] + (["--lmax", "4"] if model == "csd" else [])
    assert fit(difftract, capsys, *argv) == (2, f"difftract: error: {last} exists; use --force to overwrite it\n")
    assert last.read_bytes() == b"earlier run" and [p.name for p in tmp_path.glob("sub*")] == [last.name]
    assert fit(difftract, capsys, *argv, "--force")[0] == 0
    assert sorted(p.name for p in tmp_path.glob("sub*")) == sorted(f"sub{s}" for s in suffixes)
    assert last.read_bytes() != b"earlier run"


@pytest.mark.parametrize("model, option, suffix", [("dti", "--mask", "_FA.nii.gz"),
                                                    ("csd", "--response", "_response.txt")])
def test_an_output_may_not_overwrite_an_input(tmp_path, tiny, difftract, capsys, model, option, suffix):
    source = tmp_path / f"sub{suffix}"
    if model == "dti":
        nib.save(nib.Nifti1Image(np.ones((2, 2, 2), np.uint8), np.eye(4)), source)
    else:
        source.write_text("0.0017 0.0004 0.0004 1000\n")
    before = source.read_bytes()
    argv = [model, "--dwi", tiny, option, source, "--out-prefix", tmp_path / "sub", "--force"]
    assert fit(difftract, capsys, *argv) == (
        2, f"difftract: error: --out-prefix {tmp_path / 'sub'} -> {source} is an input; name another file\n")
    assert source.read_bytes() == before and [p.name for p in tmp_path.glob("sub*")] == [source.name]


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_an_output_that_is_a_folder_is_refused_before_the_fit(tmp_path, tiny, difftract, capsys, force):
    (tmp_path / "sub_MD.nii.gz").mkdir()
    assert fit(difftract, capsys, "dti", "--dwi", tiny, "--out-prefix", tmp_path / "sub", *force) == (
        2, f"difftract: error: --out-prefix {tmp_path / 'sub'} -> {tmp_path / 'sub_MD.nii.gz'} is a folder; "
           "name a file\n")
    assert [p.name for p in tmp_path.glob("sub*")] == ["sub_MD.nii.gz"]


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_write_failing_midway_leaves_the_earlier_files_as_they_were(tmp_path, tiny, difftract, capsys, monkeypatch,
                                                                       force):
    write_bytes = Path.write_bytes

    def disk_full_at_md(path, data):  # the write itself fails, as on a full disk: no file name in the error
        if "sub_MD" in path.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_bytes(path, data)

    if force:
        (tmp_path / "sub_FA.nii.gz").write_bytes(b"earlier run")
    monkeypatch.setattr(Path, "write_bytes", disk_full_at_md)
    assert fit(difftract, capsys, "dti", "--dwi", tiny, "--out-prefix", tmp_path / "sub", *force) == (
        2, f"difftract: error: {tmp_path / 'sub_MD.nii.gz'}: cannot write (No space left on device)\n")
    assert names(tmp_path) == ["dwi.bval", "dwi.bvec", "dwi.nii.gz"] + (["sub_FA.nii.gz"] if force else [])
    if force:
        assert (tmp_path / "sub_FA.nii.gz").read_bytes() == b"earlier run"  # not replaced by half a set
