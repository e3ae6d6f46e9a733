"""Whole-process speed of ``detmax`` and ``prob`` against DIPY's ``LocalTracking`` with its
deterministic-maximum and probabilistic getters: ``difftract track`` against a Python process that
loads the same files with nibabel, tracks with DIPY and writes a .tck, same seeds, same run, the
median of ``--repeats`` runs. Prints a table and saves benchmarks/results/dipy_<commit>_cpu.json.

    python benchmarks/bench_dipy.py [--data ../shared/data/phantom_cross] [--seeds 20000] [--repeats 3]
        [--threads 2]

Input: phantom_cross's ``fod_dipy.nii.gz`` (DIPY 1.12.1 CSD, descoteaux07, voxel frame) and mask,
``--seeds`` points uniform in the mask's voxels (fixed draw) without directions: both start one
streamline per DIPY peak at each seed. Settings: step 0.5 mm, 45 degrees, pmf threshold 0.1 (DIPY's
default), binary mask, DIPY's 500 steps per half; DIPY is single-threaded. Both processes load the
same files, so the ratio approaches the ratio of the tracking rates as the run grows.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processes import DIFFTRACT, machine, median_of, tck_count  # noqa: E402
from records import commit, save  # noqa: E402

GETTERS = {"detmax": "DeterministicMaximumDirectionGetter", "prob": "ProbabilisticDirectionGetter"}

DIPY_SCRIPT = """
import sys
import nibabel as nib
import nibabel as nib
import numpy as np
import dipy.direction
from dipy.data import default_sphere
from dipy.tracking.local_tracking import LocalTracking
from dipy.tracking.stopping_criterion import BinaryStoppingCriterion
fod_path, mask_path, seeds_path, getter, out = sys.argv[1:6]
fod = nib.load(fod_path)
mask = np.asarray(nib.load(mask_path).dataobj) > 0
seeds = np.loadtxt(seeds_path)[:, :3]
dg = getattr(dipy.direction, getter).from_shcoeff(np.asarray(fod.dataobj, dtype=np.float64), max_angle=45.0,
                                                  sphere=default_sphere, pmf_threshold=0.1)
streamlines = list(LocalTracking(dg, BinaryStoppingCriterion(mask), seeds, fod.affine, step_size=0.5, random_seed=1))
nib.streamlines.save(nib.streamlines.Tractogram(streamlines, affine_to_rasmm=np.eye(4)), out)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "phantom_cross")
    ap.add_argument("--seeds", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    fod, mask = args.data / "fod_dipy.nii.gz", args.data / "mask.nii.gz"
    record = {"benchmark": "dipy", "commit": commit(), **machine(), "threads": args.threads, "repeats": args.repeats,
              "data": str(args.data), "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        seeds = folder / "seeds.txt"
        mask_image = nib.load(mask)
        rng = np.random.default_rng(0)
        voxels = np.argwhere(np.asarray(mask_image.dataobj) > 0)
        voxels = voxels[rng.integers(0, len(voxels), args.seeds)] + rng.uniform(-0.5, 0.5, (args.seeds, 3))
        np.savetxt(seeds, voxels @ mask_image.affine[:3, :3].T + mask_image.affine[:3, 3])
        n_seeds = args.seeds
        with tempfile.TemporaryDirectory() as cache:
            for algorithm, getter in GETTERS.items():
                ours_out, dipy_out = folder / f"ours_{algorithm}.tck", folder / f"dipy_{algorithm}.tck"
                ours_cmd = [*DIFFTRACT, "track", "--fod", fod, "--sh-basis", "descoteaux07", "--algorithm", algorithm,
                            "--seed-points", seeds, "--mask", mask, "--step", "0.5", "--angle", "45",
                            "--nthreads", args.threads, "--out", ours_out, "--force", "--quiet"]
                median_of(ours_cmd, 1, env={"NUMBA_CACHE_DIR": cache})  # compiles once, outside the timings
                ours = median_of(ours_cmd, args.repeats, env={"NUMBA_CACHE_DIR": cache})
                theirs = median_of([sys.executable, "-c", DIPY_SCRIPT, fod, mask, seeds, getter, dipy_out],
                                   args.repeats)
                ours["streamlines"], theirs["streamlines"] = tck_count(ours_out), tck_count(dipy_out)
                record["runs"][algorithm] = {"seeds": n_seeds, "difftract": ours, "dipy": theirs,
                                             "speedup": round(theirs["seconds"] / ours["seconds"], 2)}
    print(f"{'algorithm':10s} {'seeds':>6s} {'difftract s':>12s} {'DIPY s':>8s} {'speed-up':>9s} "
          f"{'streamlines ours / DIPY':>24s}")
    for name, r in record["runs"].items():
        o, t = r["difftract"], r["dipy"]
        print(f"{name:10s} {r['seeds']:6d} {o['seconds']:12.2f} {t['seconds']:8.2f} {r['speedup']:8.1f}x "
              f"{o['streamlines']:>11d} / {t['streamlines']:<11d}")
    print(json.dumps(record))
    save(record, f"dipy_{record['commit']}_cpu")


if __name__ == "__main__":
    main()
