"""Density maps reproduce MRtrix3's tckmap: counts, -precise lengths and -ends_only, on native, finer
and oblique flipped grids (references in Testing/Data/tckmap, made by tckmap 3.0.3)."""
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest

from DiffTractographyLib.cli import main as difftract
from DiffTractographyLib.errors import InputError
from DiffTractographyLib.images import mrtrix_affine
from DiffTractographyLib.io import read_tck, read_tck_header
from DiffTractographyLib.planning.density import density_map, upsample_ratio

TRACTOGRAMS = {"invivo": "invivo_small/sdstream_ref.tck", "phantom": "phantom_cross/sdstream_ref_subset.tck"}


def reference(data_dir, name: str, grid: str, mode: str):
    template = nib.load(data_dir / "tckmap" / f"{name}_{grid}_template.nii.gz")
    expected = np.asarray(nib.load(data_dir / "tckmap" / f"{name}_{grid}_{mode}.nii.gz").dataobj, dtype=np.float64)
    return template.shape, mrtrix_affine(template.header), expected  # tckmap's reading of the template


def ours(data_dir, name, shape, affine, mode):
    tck = data_dir / TRACTOGRAMS[name]
    points, lengths = read_tck(tck)
    step = read_tck_header(tck)[0].get("step_size")
    return density_map(points, lengths, shape, affine, step_size=float(step) if step else None,
                       precise=mode == "precise", endpoints=mode == "ends").astype(np.float64)


@pytest.mark.parametrize("name", ["invivo", "phantom"])
@pytest.mark.parametrize("grid", ["native", "fine", "oblique"])
@pytest.mark.parametrize("mode", ["count", "ends"])
def test_counts_are_tckmaps_voxel_for_voxel(data_dir, name, grid, mode):
    shape, affine, expected = reference(data_dir, name, grid, mode)
    np.testing.assert_array_equal(ours(data_dir, name, shape, affine, mode), expected)


@pytest.mark.parametrize("name", ["invivo", "phantom"])
@pytest.mark.parametrize("grid", ["native", "fine", "oblique"])
def test_precise_lengths_are_tckmaps_to_float32_sums(data_dir, name, grid):
    """Same voxels, same lengths: the bisection for voxel exits homes in on voxel faces, so this holds
    only with tckmap's voxel arithmetic to the last bit (its grid order, its transform's sums)."""
    shape, affine, expected = reference(data_dir, name, grid, "precise")
    got = ours(data_dir, name, shape, affine, "precise")
    np.testing.assert_array_equal(got > 0, expected > 0)
    assert np.abs(got - expected).max() < 1e-4                      # mm; float32 sums in another order
    assert got.sum() == pytest.approx(expected.sum(), rel=1e-6)     # total length in mm


def test_upsampling_ratio_is_tckmaps():
    affine = np.diag([0.5, 0.5, 0.7, 1.0])
    assert upsample_ratio(0.25, affine) == 2                         # ceil(0.25 / (0.5 x 0.333))
    assert upsample_ratio(0.25, affine, precise=True) == 5           # ceil(0.25 / (0.5 x 0.1))
    assert upsample_ratio(None, affine) == upsample_ratio(float("nan"), affine) == 1


def oblique_template(path, pixdim: float = 2.5, degrees: float = 15.0):
    """A sform-only template rotated about S: its float32 sform columns are a hair shorter than pixdim."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    affine = np.array([[c, -s, 0, -60], [s, c, 0, -60], [0, 0, 1, -60], [0, 0, 0, 1]]) @ np.diag([pixdim] * 3 + [1])
    image = nib.Nifti1Image(np.zeros((48, 48, 48), np.uint8), affine)
    image.header.set_qform(None, code=0)
    nib.save(image, path)
    return path


def test_voxel_sizes_come_from_pixdim_as_tckmap_reads_them(tmp_path):
    """0.5 mm steps on 2.5 mm voxels: ratio 2 for -precise (0.5 / (2.5 x 0.1)); the float32 sform's
    column lengths (2.4999999) would make it 3."""
    template = nib.load(oblique_template(tmp_path / "t.nii"))
    assert np.linalg.norm(template.affine[:3, :3], axis=0).min() < 2.5
    assert upsample_ratio(0.5, template.affine, precise=True) == 3
    assert upsample_ratio(0.5, mrtrix_affine(template.header), precise=True) == 2


@pytest.mark.mrtrix
@pytest.mark.skipif(shutil.which("tckmap") is None, reason="needs MRtrix3's tckmap")
def test_cli_is_tckmap_on_an_oblique_sform_only_template(data_dir, tmp_path):
    template = oblique_template(tmp_path / "t.nii")
    tracks = data_dir / TRACTOGRAMS["phantom"]
    for flags, options in (([], []), (["--precise"], ["-precise"])):
        assert difftract(["density", str(tracks), "--template", str(template), "--out", str(tmp_path / "a.nii"),
                          "--step", "0.5", "--force", "--quiet", *flags]) == 0
        subprocess.run(["tckmap", str(tracks), str(tmp_path / "b.nii"), "-template", str(template), "-upsample",
                        "2" if flags else "1", "-force", "-quiet", *options], check=True)
        a, b = nib.load(tmp_path / "a.nii").get_fdata(), nib.load(tmp_path / "b.nii").get_fdata()
        np.testing.assert_array_equal(a > 0, b > 0)
        assert np.abs(a - b).max() < 1e-4


def test_cli_writes_the_map_on_the_templates_grid(data_dir, tmp_path):
    template = data_dir / "tckmap" / "invivo_oblique_template.nii.gz"
    out = tmp_path / "tdi.nii.gz"
    assert difftract(["density", str(data_dir / TRACTOGRAMS["invivo"]), "--template", str(template),
                      "--out", str(out), "--quiet"]) == 0
    written, expected = nib.load(out), nib.load(data_dir / "tckmap" / "invivo_oblique_count.nii.gz")
    np.testing.assert_allclose(written.affine, expected.affine, atol=1e-6)
    np.testing.assert_array_equal(written.get_fdata(), expected.get_fdata())


def test_bad_options_end_in_one_line(data_dir, tmp_path, capsys):
    template = data_dir / "tckmap" / "invivo_native_template.nii.gz"
    argv = ["density", str(data_dir / TRACTOGRAMS["invivo"]), "--template", str(template), "--out",
            str(tmp_path / "m.nii.gz")]
    assert difftract([*argv, "--step", "0"]) == 2
    assert capsys.readouterr().err == "difftract: error: --step must be a positive number of mm\n"
    assert difftract([*argv[:3], str(tmp_path / "none.nii"), *argv[4:]]) == 2
    assert "none.nii: no such template file" in capsys.readouterr().err
    with pytest.raises(SystemExit):                                  # argparse: not allowed together
        difftract([*argv, "--precise", "--endpoints"])
    assert not (tmp_path / "m.nii.gz").exists()


def test_an_upsampling_ratio_beyond_one_streamlines_scratch_is_refused_with_the_largest_that_fits():
    points, lengths = np.zeros((101, 3)), [101]                     # 100 segments
    assert density_map(points, lengths, (4, 4, 4), np.eye(4), upsample=(1 << 26) // 100).sum() == 1
    with pytest.raises(InputError, match=r"ratio of 671089 makes the longest streamline \(101 points\) "
                                         r"67,108,901 vertices.*the largest ratio for these streamlines is 671088"):
        density_map(points, lengths, (4, 4, 4), np.eye(4), upsample=(1 << 26) // 100 + 1)
    with pytest.raises(InputError, match="the largest ratio for these streamlines is 167772"):
        density_map(points, lengths, (4, 4, 4), np.eye(4), upsample=10 ** 9, precise=True)
    one_point = density_map(np.zeros((1, 3)), [1], (4, 4, 4), np.eye(4), upsample=10 ** 9)  # nothing to upsample
    np.testing.assert_array_equal(one_point, density_map(np.zeros((1, 3)), [1], (4, 4, 4), np.eye(4)))


def test_lengths_must_add_up():
    with pytest.raises(InputError, match="add up to 3 points, not 2"):
        density_map(np.zeros((2, 3)), [3], (4, 4, 4), np.eye(4))


@pytest.mark.mrtrix
@pytest.mark.skipif(shutil.which("tckmap") is None, reason="needs MRtrix3's tckmap")
def test_against_tckmap_live_on_a_tractogram_we_wrote(data_dir, tmp_path):
    """difftract track records step_size in its .tck, so tckmap upsamples our files as we do."""
    folder = data_dir / "invivo_small"
    tracks = tmp_path / "t.tck"
    assert difftract(["track", "--fod", str(folder / "fod_mrtrix_masked.nii.gz"), "--seed-image",
                      str(folder / "mask.nii.gz"), "--seeds-per-voxel", "3", "--mask", str(folder / "mask.nii.gz"),
                      "--step", "0.3", "--out", str(tracks), "--quiet"]) == 0
    template = data_dir / "tckmap" / "invivo_fine_template.nii.gz"
    for flags in ([], ["--precise"]):
        assert difftract(["density", str(tracks), "--template", str(template), "--out", str(tmp_path / "a.nii"),
                          "--force", "--quiet", *flags]) == 0
        subprocess.run(["tckmap", str(tracks), str(tmp_path / "b.nii"), "-template", str(template), "-force",
                        "-quiet", *(["-precise"] if flags else [])], check=True)
        a, b = nib.load(tmp_path / "a.nii").get_fdata(), nib.load(tmp_path / "b.nii").get_fdata()
        assert np.abs(a - b).max() < (1e-4 if flags else 0.5)


def test_an_empty_tractogram_is_an_error_and_a_missing_step_size_is_said(data_dir, tmp_path, capsys):
    from DiffTractographyLib.io import write_tck

    template = data_dir / "tckmap" / "phantom_native_template.nii.gz"
    empty, out = tmp_path / "empty.tck", tmp_path / "m.nii.gz"
    write_tck(empty, [])
    assert difftract(["density", str(empty), "--template", str(template), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"difftract: error: {empty}: the tractogram has no streamlines\n"
    assert not out.exists()
    tracks = data_dir / TRACTOGRAMS["phantom"]  # written without step_size
    assert difftract(["density", str(tracks), "--template", str(template), "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == (f"difftract: warning: {tracks} records no usable step size (a .tck header's "
                                       "step_size; other formats carry none): the streamlines are mapped without "
                                       "upsampling (give --step MM or --upsample N)\n")
    assert difftract(["density", str(tracks), "--template", str(template), "--out", str(template), "--force"]) == 2
    assert capsys.readouterr().err == f"difftract: error: --out {template} is an input; name another file\n"
