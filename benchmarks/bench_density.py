"""``difftract density`` against MRtrix3's ``tckmap`` on the same files, whole process against whole
process: agreement (Jaccard index of the visited voxels, voxelwise correlation, largest difference)
and time, for counts, ``-precise`` and ``-ends_only`` on a native, a finer and an oblique flipped grid.

    python benchmarks/bench_density.py [--copies 70] [--repeats 3] [--save]

Input: the 1421 SD_Stream streamlines of Testing/Data/invivo_small (real data, oblique affine, header
step_size 0.25 mm), copied ``--copies`` times with every vertex moved by N(0, 0.5 mm) (seeded), written
with the same step_size, so that both tools upsample them alike. Templates as in
Testing/Data/tckmap/make_references.py. Median of ``--repeats`` runs; one JSON record
(benchmarks/results/density_<commit>_cpu.json with --save).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "Testing" / "Data" / "tckmap"))

from processes import DIFFTRACT, machine, median_of  # noqa: E402
from records import commit, save  # noqa: E402

from DiffTractographyLib.io import read_tck, write_tck  # noqa: E402

DATA = ROOT / "Testing" / "Data" / "invivo_small"
MODES = {"count": ([], []), "precise": (["--precise"], ["-precise"]), "ends": (["--endpoints"], ["-ends_only"])}


def tractogram(folder: Path, copies: int) -> Path:
    points, lengths = read_tck(DATA / "sdstream_ref.tck")
    rng = np.random.default_rng(0)
    moved = np.concatenate([points + rng.normal(0, 0.5, points.shape).astype(np.float32) for _ in range(copies)])
    out = folder / "tracks.tck"
    write_tck(out, [(moved, np.tile(lengths, copies))], {"step_size": "0.25"})
    return out


def templates(folder: Path) -> dict[str, Path]:
    from make_references import templates as grids

    out = {}
    for name, shape, affine in grids(str(DATA / "mask.nii.gz"), 0.5):
        out[name] = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), affine), out[name])
    return out


def agreement(ours: Path, theirs: Path) -> dict:
    a, b = (np.asarray(nib.load(p).dataobj, dtype=np.float64) for p in (ours, theirs))
    visited, reference = a > 0, b > 0
    return {"jaccard": round(float((visited & reference).sum() / max((visited | reference).sum(), 1)), 6),
            "correlation": round(float(np.corrcoef(a.ravel(), b.ravel())[0, 1]), 7),
            "max_difference": round(float(np.abs(a - b).max()), 4), "voxels": int(reference.sum())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=70, help="copies of the 1421 streamlines (default 70: 99,470)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    if shutil.which("tckmap") is None:
        sys.exit("needs MRtrix3's tckmap on PATH")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tracks = tractogram(folder, args.copies)
        for grid, template in templates(folder).items():
            for mode, (ours_flags, theirs_flags) in MODES.items():
                ours, theirs = folder / "ours.nii.gz", folder / "theirs.nii.gz"
                mine = median_of([*DIFFTRACT, "density", tracks, "--template", template, "--out", ours, "--force",
                                  "--quiet", *ours_flags], args.repeats)
                reference = median_of(["tckmap", tracks, theirs, "-template", template, "-force", "-quiet",
                                       "-nthreads", "2", *theirs_flags], args.repeats)
                row = {"grid": grid, "mode": mode, "difftract": mine, "tckmap": reference,
                       "ratio": round(mine["seconds"] / reference["seconds"], 2), **agreement(ours, theirs)}
                rows.append(row)
                print(f"{grid:8s} {mode:8s} J {row['jaccard']:.5f} r {row['correlation']:.6f} "
                      f"max diff {row['max_difference']:g}  difftract {mine['seconds']:.2f} s  "
                      f"tckmap {reference['seconds']:.2f} s  ratio {row['ratio']}")
    record = {"benchmark": "density", "commit": commit(), **machine(), "streamlines": 1421 * args.copies,
              "repeats": args.repeats, "rows": rows}
    print(json.dumps(record))
    if args.save:
        print(save(record, f"density_{record['commit']}_cpu"))


if __name__ == "__main__":
    main()
