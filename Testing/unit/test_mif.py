"""MRtrix3 images (.mif, .mif.gz, .mih) are read as MRtrix3 reads them, and written so that it reads ours.

The fixtures in Testing/Data/mif were written by MRtrix3 3.0.3's mrconvert from the NIfTI sources
beside them (make_sources.py, make_fixtures.sh): reversed and permuted strides, every storage class
(Bit, scaled Int16, big-endian Float64, gzip, header + data file), a DWI with its dw_scheme. mrconvert
realigns the oblique, x-flipped source to near-RAS axes as it writes, so voxels are compared in world
space: each voxel of the .mif must hold the source's value at the same RAS point.
"""
import gzip
import os
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest
import torch

from DiffTractographyLib import load_tractogram, mif
from DiffTractographyLib.cli import main
from DiffTractographyLib.dwi_io import load_dwi
from DiffTractographyLib.errors import InputError
from DiffTractographyLib.images import load_nifti, nifti_grid, save_nifti
from DiffTractographyLib.selection import parse_region
from helpers import crossing_phantom, oblique_affine

FIXTURES = ["asym_strides.mif", "asym_volumes_first.mif", "asym.mif.gz", "asym.mih", "asym_int16_scaled.mif",
            "asym_float64be.mif"]
mrtrix = pytest.mark.skipif(shutil.which("mrconvert") is None, reason="needs MRtrix3")


@pytest.fixture
def folder(data_dir):
    return data_dir / "mif"


def source_voxels(data, affine, source_affine) -> tuple:
    """Indices into the source image of every voxel of ``data`` (same RAS point), checked to be whole."""
    ijk = np.indices(data.shape[:3]).reshape(3, -1).T
    at = (ijk @ affine[:3, :3].T + affine[:3, 3] - source_affine[:3, 3]) @ np.linalg.inv(source_affine[:3, :3]).T
    assert np.abs(at - np.rint(at)).max() < 1e-5
    return tuple(ijk.T), tuple(np.rint(at).astype(int).T)


@pytest.mark.parametrize("name", FIXTURES)
def test_every_layout_and_storage_holds_the_sources_values_at_the_same_ras_point(folder, name):
    source = nib.load(folder / "asym.nii")
    data, affine = load_nifti(folder / name, ndim=4)
    assert data.dtype == np.float32 and sorted(data.shape[:3]) == [3, 4, 5] and data.shape[3] == 2
    ours, theirs = source_voxels(data, affine, source.affine)
    np.testing.assert_array_equal(data[ours], np.asarray(source.dataobj)[theirs])


def test_the_affine_is_the_headers_transform_times_the_voxel_sizes_in_float64(folder):
    header = mif.read_header(folder / "asym_strides.mif")
    assert header.layout != (1, 2, 3, 4)                  # realigned by mrconvert: not the NIfTI's order
    rows = [line for line in (folder / "asym_strides.mif").read_bytes().split(b"\nEND\n")[0].decode().splitlines()
            if line.startswith("transform:")]
    transform = np.array([[float(v) for v in row[10:].split(",")] for row in rows])
    vox = np.array([float(v) for v in header_line(folder / "asym_strides.mif", "vox").split(",")[:3]])
    np.testing.assert_array_equal(header.affine[:3], np.c_[transform[:, :3] * vox, transform[:, 3]])
    shape, grid = nifti_grid(folder / "asym_strides.mif")
    assert shape == header.dim[:3]
    np.testing.assert_array_equal(grid, header.affine)


def header_line(path, key):
    return next(line.split(":", 1)[1].strip() for line in path.read_bytes().split(b"\nEND\n")[0].decode().splitlines()
                if line.startswith(key + ":"))


def test_a_bit_mask_unpacks_most_significant_bit_first(folder):
    source = nib.load(folder / "mask.nii")
    data, affine = load_nifti(folder / "mask_bit.mif", ndim=3)
    assert mif.read_header(folder / "mask_bit.mif").datatype == "bit"
    ours, theirs = source_voxels(data, affine, source.affine)
    np.testing.assert_array_equal(data[ours], np.asarray(source.dataobj)[theirs])
    assert 0 < data.sum() < data.size


def test_a_dwi_takes_its_gradients_from_the_dw_scheme_in_ras_as_from_the_fsl_files(folder, tmp_path):
    from_fsl = load_dwi(folder / "dwi.nii.gz", bvals=folder / "dwi.bval", bvecs=folder / "dwi.bvec")
    from_mif = load_dwi(folder / "dwi.mif")
    np.testing.assert_array_equal(from_mif.bvals, from_fsl.bvals)
    np.testing.assert_allclose(from_mif.bvecs, from_fsl.bvecs, atol=1e-6)
    ours, theirs = source_voxels(from_mif.data, from_mif.affine, from_fsl.affine)
    np.testing.assert_array_equal(from_mif.data[ours], from_fsl.data[theirs])
    np.savetxt(tmp_path / "flipped.b", np.c_[-from_fsl.bvecs, from_fsl.bvals])
    given = load_dwi(folder / "dwi.mif", grad=tmp_path / "flipped.b")    # a given table wins, as in MRtrix3
    np.testing.assert_allclose(given.bvecs, -from_fsl.bvecs, atol=1e-6)


def test_fsl_bvecs_given_for_a_mif_follow_its_storage_order_as_in_mrtrix3(folder):
    """mrconvert -export_grad_fsl writes the table of the axes as stored (permuted, one reversed here);
    read back against them, it is the image's own dw_scheme."""
    own = load_dwi(folder / "dwi_permuted.mif")
    from_fsl = load_dwi(folder / "dwi_permuted.mif", bvals=folder / "dwi_permuted.bval",
                        bvecs=folder / "dwi_permuted.bvec")
    assert mif.read_header(folder / "dwi_permuted.mif").layout[:2] == (2, -1)
    np.testing.assert_allclose(from_fsl.bvecs, own.bvecs, atol=1e-8)


def test_a_dwi_without_a_dw_scheme_asks_for_a_table(folder, tmp_path):
    shutil.copy(folder / "asym.mih", tmp_path)
    shutil.copy(folder / "asym.dat", tmp_path)
    with pytest.raises(InputError, match=r"asym.mih: the header has no dw_scheme; give its gradient table"):
        load_dwi(tmp_path / "asym.mih")


@pytest.mark.parametrize("name", ["out.mif", "out.mif.gz"])
def test_what_we_write_reads_back_with_its_affine(tmp_path, name):
    affine = oblique_affine(spacing=(2.0, 2.2, 2.5), flip_x=True)
    values = np.random.default_rng(1).normal(size=(5, 6, 7, 3)).astype(np.float32)
    save_nifti(values, affine, tmp_path / name, description="difftract test\nlésion à gauche, éèêëïîôûü")
    data, read_affine = load_nifti(tmp_path / name, ndim=4)
    np.testing.assert_array_equal(data, values)
    np.testing.assert_allclose(read_affine, affine, rtol=0, atol=1e-12)
    assert mif.read_header(tmp_path / name).keys["comments"] == ["difftract test", "lésion à gauche, éèêëïîôûü"]


@pytest.mark.parametrize("text, message", [
    ("mrtrix image\ndim: 2,2,2\nvox: 1,1,1\ndatatype: Float32LE\nEND\n", "no 'file' entry"),
    ("mrtrix image\ndim: 2,2,2\nvox: 1,1,1\ndatatype: CFloat32LE\nfile: . 100\nEND\n", "CFloat32LE is not supported"),
    ("mrtrix image\ndim: 2,2,2\nvox: 1,1,1\nlayout: +0,+0,+1\ndatatype: Float32LE\nfile: . 100\nEND\n",
     "not a permutation"),
    ("mrtrix image\ndim: 2,2,2\nvox: 1,1,1\ndatatype: Float32LE\ntransform: 1,0,0,0\ntransform: 0,1,0,0\n"
     "transform: 0,0,1,0\nfile: . 200\nEND\n", r"the image data is truncated \(10 of 32 bytes\)"),
    ("mrtrix imag\n", "it does not start with 'mrtrix image'"),
    ("mrtrix image\ndim: 2,2,2\nvox: 1,1,1\ndatatype: Float32\nfile: . 100\nEND\n", "gives no byte order"),
    ("mrtrix image\ndim: 2,2,2\nvox: inf,1,1\ndatatype: Float32LE\nfile: . 100\nEND\n", "no finite positive voxel"),
    ("mrtrix image\ndim: 2,2,2\nvox: 1,1,1\ndatatype: Float32LE\ntransform: 1,0,0,0\ntransform: 0,nan,0,0\n"
     "transform: 0,0,1,0\nfile: . 200\nEND\n", "do not give finite, independent axis directions"),
    ("mrtrix image\ndim: 2,2,2\nvox: 1,1,1\ndatatype: Float32LE\nscaling: 2\nfile: . 100\nEND\n",
     "is not two finite numbers"),
    ("mrtrix image\ndim: 100000,100000,100000\nvox: 1,1,1\ndatatype: Float32LE\ntransform: 1,0,0,0\n"
     "transform: 0,1,0,0\ntransform: 0,0,1,0\nfile: . 200\nEND\n", r"truncated \(10 of 4000000000000000 bytes\)"),
    ("mrtrix image\ndim: 2,2,2\nvox: 1,1,1\ndatatype: Float32LE\ntransform: 1,0,0,0\ntransform: 0,1,0,0\n"
     "transform: 0,0,1,0\nfile: . 99999999999999999999\nEND\n", r"truncated \(0 of 32 bytes\)"),
])
def test_damaged_headers_are_one_line_naming_the_file(tmp_path, text, message):
    path = tmp_path / "bad.mif"
    path.write_bytes(text.encode().ljust(210, b"\0"))
    with pytest.raises(InputError, match=message) as error:
        load_nifti(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)


def test_damaged_compressed_files_are_one_line(folder, tmp_path):
    payload = (folder / "asym.mif.gz").read_bytes()
    (tmp_path / "corrupt.mif.gz").write_bytes(payload[:20] + bytes(b ^ 0x5A for b in payload[20:60]) + payload[60:])
    (tmp_path / "short.mif.gz").write_bytes(payload[:-40])
    (tmp_path / "outside.mif.gz").write_bytes(gzip.compress((folder / "asym.mih").read_bytes()))
    for name, message in (("corrupt.mif.gz", "cannot read as an MRtrix image"), ("short.mif.gz", "image data"),
                          ("outside.mif.gz", "a .mif.gz holds its data itself")):
        with pytest.raises(InputError, match=message):
            load_nifti(tmp_path / name)


def test_an_upper_case_gz_suffix_is_written_compressed(tmp_path):
    save_nifti(np.ones((2, 3, 4), np.float32), np.eye(4), tmp_path / "MAP.MIF.GZ")
    assert (tmp_path / "MAP.MIF.GZ").read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(load_nifti(tmp_path / "MAP.MIF.GZ")[0], np.ones((2, 3, 4)))


@mrtrix
def test_mrtrix3_reads_what_we_write_at_the_same_ras_points(tmp_path):
    affine = oblique_affine(spacing=(2.0, 2.2, 2.5), flip_x=True)
    values = np.random.default_rng(2).normal(size=(5, 6, 7)).astype(np.float32)
    save_nifti(values, affine, tmp_path / "ours.mif.gz")
    subprocess.run(["mrconvert", "-quiet", "ours.mif.gz", "back.nii"], cwd=tmp_path, check=True)
    back = nib.load(tmp_path / "back.nii")
    ours, theirs = source_voxels(values, affine, back.affine)
    np.testing.assert_array_equal(values[ours], np.asarray(back.dataobj)[theirs])


@pytest.mark.mrtrix
@pytest.mark.skipif(shutil.which("tckgen") is None, reason="needs MRtrix3's tckgen")
def test_tracking_a_strided_mif_fod_and_bit_mask_is_tckgens_on_them(tmp_path):
    coeffs, mask, affine, *_ = crossing_phantom(affine=oblique_affine(spacing=(2.0, 2.2, 2.5), flip_x=True))
    nib.save(nib.Nifti1Image(coeffs.numpy(), affine), tmp_path / "fod.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), tmp_path / "mask.nii.gz")
    run = dict(cwd=tmp_path, check=True)
    subprocess.run(["mrconvert", "-quiet", "fod.nii.gz", "fod.mif", "-strides", "2,3,4,1"], **run)
    subprocess.run(["mrconvert", "-quiet", "mask.nii.gz", "mask.mif.gz", "-datatype", "bit"], **run)
    subprocess.run(["tckgen", "-quiet", "-algorithm", "SD_Stream", "fod.mif", "ref.tck", "-seed_image", "mask.mif.gz",
                    "-mask", "mask.mif.gz", "-seeds", "400", "-select", "0", "-step", "0.5", "-angle", "45",
                    "-minlength", "2", "-maxlength", "250", "-nthreads", "0", "-output_seeds", "seeds.csv"],
                   **run, env={**os.environ, "MRTRIX_RNG_SEED": "42"})
    reference = load_tractogram(tmp_path / "ref.tck").numpy_streamlines()
    rows = np.loadtxt(tmp_path / "seeds.csv", delimiter=",", comments="#", usecols=(0, 1, 2, 3, 4))
    seeds = []
    for track_index, seed_index, *_ in rows[np.argsort(rows[:, 0])]:
        s, k = reference[int(track_index)], int(seed_index)
        d = s[k - 1] - s[k] if k > 0 else s[k] - s[k + 1]
        seeds.append([*s[k], *(d / np.linalg.norm(d))])
    np.savetxt(tmp_path / "seeds.txt", seeds)
    assert main(["track", "--fod", str(tmp_path / "fod.mif"), "--mask", str(tmp_path / "mask.mif.gz"), "--seed-points",
                 str(tmp_path / "seeds.txt"), "--step", "0.5", "--angle", "45", "--min-length", "2", "--max-length", "250",
                 "--quiet", "--out", str(tmp_path / "ours.trx")]) == 0
    tracked = load_tractogram(tmp_path / "ours.trx")
    ours = dict(zip(tracked.seed_index.tolist(), tracked.numpy_streamlines()))
    assert len(ours) == len(reference) > 100
    assert all(len(ours[i]) == len(r) for i, r in enumerate(reference))
    assert max(float(np.abs(ours[i] - r).max()) for i, r in enumerate(reference)) < 1e-3


def test_density_on_a_mif_template_writes_tckmaps_counts_as_a_mif(data_dir, tmp_path):
    template, affine = load_nifti(data_dir / "tckmap" / "invivo_oblique_template.nii.gz", mrtrix=True)
    save_nifti(template, affine, tmp_path / "template.mif")             # the grid as tckmap reads the NIfTI
    assert main(["density", str(data_dir / "invivo_small" / "sdstream_ref.tck"), "--template",
                 str(tmp_path / "template.mif"), "--quiet", "--out", str(tmp_path / "tdi.mif.gz")]) == 0
    counts, written = load_nifti(tmp_path / "tdi.mif.gz")
    np.testing.assert_allclose(written, affine, rtol=0, atol=1e-12)
    reference = nib.load(data_dir / "tckmap" / "invivo_oblique_count.nii.gz")
    np.testing.assert_array_equal(counts, np.asarray(reference.dataobj))
    assert counts.sum() > 1000


def test_a_mif_mask_is_a_region_holding_the_same_points_as_its_nifti_source(folder):
    source = nib.load(folder / "mask.nii")
    centres = np.indices(source.shape).reshape(3, -1).T @ source.affine[:3, :3].T + source.affine[:3, 3]
    inside = parse_region(str(folder / "mask_bit.mif")).contains(torch.as_tensor(centres, dtype=torch.float32))
    np.testing.assert_array_equal(inside.numpy(), np.asarray(source.dataobj).reshape(-1) > 0)
    assert parse_region(f"{folder / 'mask_bit.mif'}:1").contains(torch.as_tensor(centres, dtype=torch.float32)).sum() \
        == inside.sum()


@pytest.mark.mrtrix
@pytest.mark.skipif(shutil.which("tckmap") is None, reason="needs MRtrix3's tckmap")
@pytest.mark.parametrize("mode", [[], ["-precise"]], ids=["count", "precise"])
def test_density_is_tckmaps_on_a_strided_mif_template(data_dir, tmp_path, mode):
    tracks = str(data_dir / "invivo_small" / "sdstream_ref.tck")
    subprocess.run(["mrconvert", "-quiet", str(data_dir / "tckmap" / "invivo_oblique_template.nii.gz"), "template.mif",
                    "-strides", "-3,1,-2"], cwd=tmp_path, check=True)
    subprocess.run(["tckmap", "-quiet", tracks, "-template", "template.mif", "theirs.mif", *mode], cwd=tmp_path,
                   check=True)
    assert main(["density", tracks, "--template", str(tmp_path / "template.mif"), *[m.replace("-", "--") for m in mode],
                 "--quiet", "--out", str(tmp_path / "ours.mif")]) == 0
    ours, ours_affine = load_nifti(tmp_path / "ours.mif")
    theirs, theirs_affine = load_nifti(tmp_path / "theirs.mif")
    np.testing.assert_array_equal(ours_affine, theirs_affine)
    if mode:
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
    else:
        np.testing.assert_array_equal(ours, theirs)
    assert (theirs > 0).sum() > 100
