"""Whole-process tracking speed and memory: ``difftract track`` against MRtrix3 ``tckgen
-nthreads 2``, sdstream / SD_Stream, on a brain-sized phantom, both processes writing .tck, the
median of ``--repeats`` runs. Prints a table and saves benchmarks/results/tracking_<commit>_cpu.json.

    python benchmarks/bench_tracking.py [--repeats 3] [--threads 2] [--shape 64 64 64] [--voxel 2.5]

The phantom is ``phantoms.brain_phantom`` (an ellipsoid of circumferential, S-I and L-R fibres with
two- and three-way crossings; 64^3 voxels of 2.5 mm by default, 100,024 mask voxels). Both tools use
MRtrix3's defaults (step 0.1 voxel, 60 degrees, cutoff 0.1, lengths 5 to 100 voxels) and the whole
phantom as the mask. Runs:

- grid: 8 seeds on a 2 x 2 x 2 lattice in every voxel of a central 28.3 mm ball of the mask (6,008
  voxels, 48,064 seeds; ``-seed_grid_per_voxel ball 2``);
- small: one random seed in every voxel of a 22.8 mm ball (3,184 seeds; ``-seed_random_per_voxel``);
- one seed: a single seed (``--seed-points`` / ``-seed_sphere x,y,z,0 -seeds 1``): start-up cost;
- select: random seeds in the whole mask until 10,000 streamlines are accepted (``--select`` /
  ``-seed_image mask -select 10000``, tckgen's everyday use);
- first run: the small run in a fresh Numba cache directory, i.e. including the one-off compilation.

Seeds without a direction start along a random direction in both tools, so the streamline counts
agree in distribution, not one by one (fidelity is benchmarks/fidelity.py's job).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from DiffTractographyLib.phantoms import brain_phantom  # noqa: E402
from processes import DIFFTRACT, machine, median_of, tck_count  # noqa: E402
from records import commit, save  # noqa: E402

GRID_BALL_MM, SMALL_BALL_MM = 28.3, 22.8
SELECT = 10_000
ONE_SEED = (10.0, 30.0, 0.0)


def write_phantom(folder: Path, shape, voxel: float) -> None:
    """fod.nii.gz, mask.nii.gz and the two seed balls (uint8) in ``folder``."""
    coeffs, mask, affine = brain_phantom(tuple(shape), voxel)
    nib.save(nib.Nifti1Image(coeffs.numpy(), affine), folder / "fod.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), folder / "mask.nii.gz")
    ijk = np.indices(mask.shape).reshape(3, -1).T
    radius = np.linalg.norm(ijk @ affine[:3, :3].T + affine[:3, 3], axis=1).reshape(mask.shape)
    for name, r in (("grid_ball", GRID_BALL_MM), ("small_ball", SMALL_BALL_MM)):
        nib.save(nib.Nifti1Image((mask & (radius < r)).astype(np.uint8), affine), folder / f"{name}.nii.gz")
    (folder / "one_seed.txt").write_text(" ".join(map(str, ONE_SEED)) + "\n")


def commands(folder: Path, threads: int) -> dict[str, tuple[list, list, int]]:
    """run -> (difftract command, tckgen command, seeds; 0 for the select run)."""
    fod, mask = folder / "fod.nii.gz", folder / "mask.nii.gz"
    ours = [*DIFFTRACT, "track", "--fod", fod, "--mask", mask, "--nthreads", threads, "--force", "--quiet"]
    theirs = ["tckgen", fod, "-algorithm", "SD_Stream", "-mask", mask, "-select", "0", "-nthreads", threads,
              "-force", "-quiet"]
    grid_seeds = 8 * int((np.asarray(nib.load(folder / "grid_ball.nii.gz").dataobj) > 0).sum())
    small_seeds = int((np.asarray(nib.load(folder / "small_ball.nii.gz").dataobj) > 0).sum())
    return {
        "grid": (ours + ["--seed-image", folder / "grid_ball.nii.gz", "--seeds-per-voxel", "8",
                         "--seed-placement", "grid", "--out", folder / "ours_grid.tck"],
                 theirs + ["-seed_grid_per_voxel", folder / "grid_ball.nii.gz", "2", folder / "mrtrix_grid.tck"],
                 grid_seeds),
        "small": (ours + ["--seed-image", folder / "small_ball.nii.gz", "--seeds-per-voxel", "1",
                          "--out", folder / "ours_small.tck"],
                  theirs + ["-seed_random_per_voxel", folder / "small_ball.nii.gz", "1", folder / "mrtrix_small.tck"],
                  small_seeds),
        "one seed": (ours + ["--seed-points", folder / "one_seed.txt", "--out", folder / "ours_one.tck"],
                     theirs + ["-seed_sphere", ",".join(map(str, ONE_SEED)) + ",0", "-seeds", "1",
                               folder / "mrtrix_one.tck"], 1),
        "select": (ours + ["--seed-image", mask, "--select", str(SELECT), "--out", folder / "ours_select.tck"],
                   theirs[:theirs.index("-select")] + theirs[theirs.index("-select") + 2:]
                   + ["-seed_image", mask, "-select", str(SELECT), folder / "mrtrix_select.tck"], 0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="threads of both tools (default 2)")
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 64, 64])
    ap.add_argument("--voxel", type=float, default=2.5, help="voxel size in mm")
    args = ap.parse_args()
    if shutil.which("tckgen") is None:
        sys.exit("tckgen (MRtrix3) is needed: apt-get install mrtrix3")
    record = {"benchmark": "tracking", "commit": commit(), **machine(), "threads": args.threads,
              "repeats": args.repeats, "phantom": {"shape": args.shape, "voxel_mm": args.voxel},
              "mrtrix": subprocess.run(["tckgen", "-version"], capture_output=True, text=True).stdout.split("\n")[0],
              "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_phantom(folder, args.shape, args.voxel)
        cmds = commands(folder, args.threads)
        with tempfile.TemporaryDirectory() as cache:  # the one-off compilation, then the cache it fills
            first = median_of(cmds["small"][0], 1, env={"NUMBA_CACHE_DIR": cache})
            record["first_run_seconds"] = first["seconds"]
            for name, (ours_cmd, theirs_cmd, seeds) in cmds.items():
                ours = median_of(ours_cmd, args.repeats, env={"NUMBA_CACHE_DIR": cache})
                theirs = median_of(theirs_cmd, args.repeats)
                ours["streamlines"] = tck_count(ours_cmd[ours_cmd.index("--out") + 1])
                theirs["streamlines"] = tck_count(theirs_cmd[-1])
                record["runs"][name] = {"seeds": seeds, "difftract": ours, "tckgen": theirs,
                                        "ratio": round(ours["seconds"] / theirs["seconds"], 3)}
    print(f"{'run':10s} {'seeds':>7s} {'difftract s':>12s} {'tckgen s':>9s} {'ratio':>6s} {'MB ours':>8s} "
          f"{'MB tckgen':>9s} {'streamlines ours / tckgen':>26s}")
    for name, r in record["runs"].items():
        o, t = r["difftract"], r["tckgen"]
        print(f"{name:10s} {r['seeds'] or 'random':>7} {o['seconds']:12.2f} {t['seconds']:9.2f} {r['ratio']:6.2f} "
              f"{o['peak_mb']:8.0f} {t['peak_mb']:9.0f} {o['streamlines']:>12d} / {t['streamlines']:<12d}")
    print(f"first run, compiling the kernels: {record['first_run_seconds']:.1f} s (small run)")
    print(json.dumps(record))
    save(record, f"tracking_{record['commit']}_cpu")


if __name__ == "__main__":
    main()
