"""Speed of ``detmax`` against DIPY's LocalTracking + DeterministicMaximumDirectionGetter, same seeds,
same run.

Both track phantom_cross's ``fod_dipy`` from the seed points and start directions of
``detmax_seeds.txt`` (step 0.5 mm, 45 degrees, pmf threshold 0.1, binary mask), ``--repeats`` times
each, alternating; the medians give seeds/s and the ratio. Prints a table and one JSON line.

usage: python benchmarks/bench_detmax.py [--data ../shared/data/phantom_cross] [--n-seeds N]
       [--repeats 3] [--device cpu] [--threads T]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from DiffTractographyLib.fields import SHField
from DiffTractographyLib.geometry import axes_rotation
from DiffTractographyLib.tracking import track
from records import commit

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(step_size=0.5, max_angle=45.0, cutoff=0.1)


def load(data: Path, n_seeds: int | None):
    fod = nib.load(data / "fod_dipy.nii.gz")
    mask = np.asarray(nib.load(data / "mask.nii.gz").dataobj) > 0
    rows = np.loadtxt(data / "detmax_seeds.txt")[:n_seeds]
    return np.asarray(fod.dataobj, dtype=np.float64), fod.affine, mask, rows[:, :3], rows[:, 3:]


def run_dipy(coeffs, affine, mask, seeds, directions) -> tuple[float, int]:
    from dipy.data import default_sphere
    from dipy.direction import DeterministicMaximumDirectionGetter
    from dipy.tracking.local_tracking import LocalTracking
    from dipy.tracking.stopping_criterion import BinaryStoppingCriterion

    start = time.perf_counter()
    getter = DeterministicMaximumDirectionGetter.from_shcoeff(coeffs, max_angle=SETTINGS["max_angle"],
                                                              sphere=default_sphere,
                                                              pmf_threshold=SETTINGS["cutoff"])
    voxel_dirs = directions @ axes_rotation(affine)  # RAS -> voxel-axis frame of the SH
    streamlines = list(LocalTracking(getter, BinaryStoppingCriterion(mask), seeds, affine,
                                     step_size=SETTINGS["step_size"], initial_directions=voxel_dirs[:, None]))
    return time.perf_counter() - start, sum(len(s) for s in streamlines)


def run_ours(coeffs, affine, mask, seeds, directions, device: str) -> tuple[float, int]:
    start = time.perf_counter()
    field = SHField(torch.as_tensor(coeffs), affine, basis="descoteaux07")
    out = track(field, seeds, algorithm="detmax", seed_directions=directions, mask=mask, device=device,
                max_length=250.0, **SETTINGS)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, len(out.points)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "phantom_cross")
    ap.add_argument("--n-seeds", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    inputs = load(a.data, a.n_seeds)
    n = len(inputs[3])
    run_ours(*inputs[:3], inputs[3][:8], inputs[4][:8], a.device)  # warm-up
    dipy_s, ours_s = [], []
    for _ in range(a.repeats):
        t, dipy_points = run_dipy(*inputs)
        dipy_s.append(t)
        t, our_points = run_ours(*inputs, a.device)
        ours_s.append(t)
    dipy_t, ours_t = float(np.median(dipy_s)), float(np.median(ours_s))
    print(f"{'':10s}{'median s':>10s}{'seeds/s':>10s}{'points':>10s}")
    print(f"{'DIPY':10s}{dipy_t:10.2f}{n / dipy_t:10.0f}{dipy_points:10d}")
    print(f"{'detmax':10s}{ours_t:10.2f}{n / ours_t:10.0f}{our_points:10d}")
    print(f"speed-up {dipy_t / ours_t:.1f}x")
    print(json.dumps(dict(benchmark="detmax", commit=commit(), device=a.device, threads=torch.get_num_threads(),
                          torch=torch.__version__, cpu=platform.processor() or platform.machine(), n_seeds=n,
                          repeats=a.repeats, dipy_s=dipy_s, ours_s=ours_s, dipy_seeds_per_s=n / dipy_t,
                          ours_seeds_per_s=n / ours_t, speedup=dipy_t / ours_t, **SETTINGS)))


if __name__ == "__main__":
    main()
