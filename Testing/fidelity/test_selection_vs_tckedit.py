"""Selection against MRtrix3's ``tckedit`` on the same files: the same streamlines are kept, in the
same order, for include (AND), exclude (OR), -ends_only and length limits, with mask and sphere ROIs."""
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest
import torch

from DiffTractographyLib import Tractogram, load_tractogram, save_tractogram
from DiffTractographyLib.selection import parse_region, select_streamlines

pytestmark = [pytest.mark.mrtrix,
              pytest.mark.skipif(shutil.which("tckedit") is None, reason="MRtrix3 tckedit is not installed")]


@pytest.fixture(scope="module")
def scene(tmp_path_factory, request):
    """Streamlines of both reference trackers (written without a step size, so tckedit applies no
    length margin) and ROI masks on the phantom's LAS grid."""
    data = request.config.rootpath / "Testing" / "Data" / "phantom_cross"
    folder = tmp_path_factory.mktemp("tckedit")
    parts = [load_tractogram(data / "detmax_ref_subset.trk"), load_tractogram(data / "sdstream_ref_subset.tck")]
    save_tractogram(Tractogram.concatenate(parts), folder / "in.tck")
    grid = nib.load(data / "mask.nii.gz")
    mask = np.asarray(grid.dataobj) > 0
    blocks = {"left": (slice(0, 24), slice(None), slice(None)), "core": (slice(20, 28), slice(20, 28), slice(20, 28)),
              "top": (slice(None), slice(None), slice(16, 27))}
    for name, block in blocks.items():
        roi = np.zeros(mask.shape, np.uint8)
        roi[block] = mask[block]
        nib.save(nib.Nifti1Image(roi, grid.affine), folder / f"{name}.nii.gz")
    return folder, load_tractogram(folder / "in.tck")


def run_tckedit(folder, include=(), exclude=(), ends_only=False, min_length=None, max_length=None):
    args = ["tckedit", str(folder / "in.tck"), str(folder / "out.tck"), "-force", "-quiet", "-nthreads", "0"]
    for spec in include:
        args += ["-include", spec]
    for spec in exclude:
        args += ["-exclude", spec]
    args += ["-ends_only"] if ends_only else []
    args += ["-minlength", str(min_length)] if min_length is not None else []
    args += ["-maxlength", str(max_length)] if max_length is not None else []
    subprocess.run(args, check=True)
    return load_tractogram(folder / "out.tck")


def ours(spec: str) -> str:
    """Our spelling of a tckedit ROI: 'x,y,z,r' spheres become 'sphere:x,y,z,r'."""
    return spec if spec.endswith(".nii.gz") else f"sphere:{spec}"


CASES = {
    "mask include": dict(include=["core"]),
    "two includes (AND)": dict(include=["left", "top"]),
    "two excludes (OR)": dict(exclude=["core", "top"]),
    "include and exclude": dict(include=["left"], exclude=["-10,-16,13,6"]),
    "sphere include": dict(include=["0.1,-15.7,13.2,6"]),
    "ends only": dict(include=["left"], exclude=["core"], ends_only=True),
    "ends only spheres": dict(include=["-55,-18,10,8", "54,-20,10,8"], ends_only=True),
    "lengths": dict(min_length=40, max_length=95.5),
    "mask and lengths": dict(include=["top"], min_length=60),
}


@pytest.mark.parametrize("case", CASES)
def test_same_streamlines_as_tckedit(scene, case):
    folder, tractogram = scene
    options = dict(CASES[case])
    for key in ("include", "exclude"):
        options[key] = [str(folder / f"{s}.nii.gz") if "," not in s else s for s in options.get(key, [])]
    reference = run_tckedit(folder, **options)
    keep = select_streamlines(tractogram, [parse_region(ours(s)) for s in options.pop("include")],
                              [parse_region(ours(s)) for s in options.pop("exclude")], **options)
    kept = tractogram.subset(keep)
    assert 0 < len(reference) < len(tractogram)
    assert kept.lengths.tolist() == reference.lengths.tolist()
    assert torch.equal(kept.points, reference.points)


@pytest.mark.parametrize("regions", [[], ["--include", "sphere:0.1,-15.7,13.2,40"]])
def test_a_header_step_size_widens_the_limits_as_tckedit_does(scene, regions):
    """tckedit keeps streamlines up to 0.1 step beyond the limits of a file with a step_size (tckgen's):
    limits 0.03 mm inside the lengths of two streamlines keep them and all as long (step 0.5 mm: 0.05 mm
    of margin)."""
    from DiffTractographyLib.cli import main as difftract
    from DiffTractographyLib.io import read_tck, write_tck
    from DiffTractographyLib.polylines import polyline_lengths

    folder, tractogram = scene
    points, lengths = read_tck(folder / "in.tck")
    write_tck(folder / "stepped.tck", [(points, lengths)], {"step_size": "0.5"})
    mm = np.sort(polyline_lengths(points, lengths))
    low, high = float(mm[50]) + 0.03, float(mm[-50]) - 0.03
    subprocess.run(["tckedit", str(folder / "stepped.tck"), str(folder / "ref.tck"), "-force", "-quiet",
                    "-minlength", str(low), "-maxlength", str(high)] + (["-include", "0.1,-15.7,13.2,40"] if regions else []),
                   check=True)
    assert difftract(["select", str(folder / "stepped.tck"), "--min-length", str(low), "--max-length", str(high),
                      *regions, "--out", str(folder / "ours.tck"), "--force", "--quiet"]) == 0
    reference, kept = read_tck(folder / "ref.tck"), read_tck(folder / "ours.tck")
    assert kept[1].tolist() == reference[1].tolist()
    np.testing.assert_array_equal(kept[0], reference[0])
    if not regions:    # lengths are multiples of the step, to rounding: 27 streamlines lie in the margins
        assert len(kept[1]) == int(((mm >= low) & (mm <= high)).sum()) + 27 == 177
