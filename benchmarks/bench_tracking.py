"""Tracking speed: DiffTractography sdstream against MRtrix3 ``tckgen -algorithm SD_Stream`` and DIPY
``LocalTracking``, same data, same seeding, same parameters, in one run; prints rates and ratios and
saves a JSON record in benchmarks/results/.

    python benchmarks/bench_tracking.py                       # CPU, phantom_cross, 2 threads
    python benchmarks/bench_tracking.py --device cuda --seeds 1000000

Seeds: MRtrix3 draws ``--seeds`` random seeds in the mask (``-seed_image``); ours draws the same
number uniformly in the mask voxels. Both reject seeds where no peak above the cutoff is found.
DIPY runs ``ClosestPeakDirectionGetter`` (the DIPY getter nearest to SD_Stream) on the DIPY FOD with
a subset of the seeds (it is single-threaded and slow); its rate is per seed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from DiffTractographyLib import SHField, track  # noqa: E402
from DiffTractographyLib.images import load_nifti  # noqa: E402
from DiffTractographyLib.seeding import seeds_from_mask  # noqa: E402
from records import commit, save  # noqa: E402

PARAMS = dict(step_size=0.5, max_angle=45.0, cutoff=0.1, min_length=2.0, max_length=250.0)


def run_mrtrix(data: Path, n_seeds: int, threads: int) -> dict | None:
    if shutil.which("tckgen") is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["tckgen", "-quiet", "-algorithm", "SD_Stream", str(data / "fod_mrtrix.nii.gz"), f"{tmp}/out.tck",
               "-seed_image", str(data / "mask.nii.gz"), "-mask", str(data / "mask.nii.gz"), "-seeds", str(n_seeds),
               "-select", "0", "-step", str(PARAMS["step_size"]), "-angle", str(PARAMS["max_angle"]), "-cutoff",
               str(PARAMS["cutoff"]), "-minlength", str(PARAMS["min_length"]), "-maxlength", str(PARAMS["max_length"]),
               "-nthreads", str(threads)]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "MRTRIX_RNG_SEED": "1"})
        seconds = time.perf_counter() - start
        tracks = nib.streamlines.load(f"{tmp}/out.tck")
        return dict(seconds=seconds, streamlines=len(tracks.streamlines), points=int(tracks.streamlines.total_nb_rows))


def run_ours(data: Path, n_seeds: int, device: str, compile: bool = False) -> dict:
    fod, affine = load_nifti(data / "fod_mrtrix.nii.gz")
    mask, _ = load_nifti(data / "mask.nii.gz")
    per_voxel = max(1, int(np.ceil(n_seeds / int((mask > 0).sum()))))
    seeds = seeds_from_mask(mask, affine, per_voxel, rng_seed=1)
    seeds = seeds[np.random.default_rng(1).permutation(len(seeds))[:n_seeds]]
    field = SHField(torch.from_numpy(fod), affine)
    start = time.perf_counter()
    track(field, seeds[:200], mask=mask, device=device, compile=compile, **PARAMS)  # warm-up: allocations,
    warm_up = time.perf_counter() - start                                            # CUDA context, compilation
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    t = track(field, seeds, mask=mask, device=device, compile=compile, **PARAMS)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    out = dict(seconds=seconds, streamlines=len(t), points=len(t.points), warm_up_seconds=warm_up)
    if device.startswith("cuda"):
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_dipy(data: Path, n_seeds: int) -> dict | None:
    try:
        from dipy.data import default_sphere
        from dipy.direction import ClosestPeakDirectionGetter
        from dipy.tracking.local_tracking import LocalTracking
        from dipy.tracking.stopping_criterion import BinaryStoppingCriterion
    except ImportError:
        return None
    fod_file = data / "fod_dipy.nii.gz"
    if not fod_file.exists():
        return None
    fod, affine = load_nifti(fod_file)
    mask, _ = load_nifti(data / "mask.nii.gz")
    seeds = seeds_from_mask(mask, affine, 1, rng_seed=1)
    seeds = seeds[np.random.default_rng(2).permutation(len(seeds))[:n_seeds]]
    getter = ClosestPeakDirectionGetter.from_shcoeff(fod.astype(np.float64), max_angle=PARAMS["max_angle"],
                                                     sphere=default_sphere)
    start = time.perf_counter()
    streamlines = list(LocalTracking(getter, BinaryStoppingCriterion(mask > 0), seeds, affine,
                                     step_size=PARAMS["step_size"]))
    seconds = time.perf_counter() - start
    return dict(seconds=seconds, seeds=len(seeds), streamlines=len(streamlines),
                points=int(sum(len(s) for s in streamlines)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/phantom_cross"))
    ap.add_argument("--seeds", type=int, default=30000)
    ap.add_argument("--dipy-seeds", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for MRtrix3 and torch")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = Path(args.data)
    mrtrix = run_mrtrix(data, args.seeds, args.threads)
    ours = run_ours(data, args.seeds, args.device)
    fused = run_ours(data, args.seeds, args.device, compile=True)
    dipy = run_dipy(data, min(args.dipy_seeds, args.seeds))
    rate = lambda r, n: n / r["seconds"]  # noqa: E731
    print(f"{'tool':38s} {'seeds/s':>10s} {'streamlines/s':>14s} {'points/s':>12s} {'seconds':>8s}")
    rows = [("DiffTractography sdstream " + args.device, ours, args.seeds),
            ("DiffTractography sdstream, compile=True", fused, args.seeds)]
    if mrtrix:
        rows.append((f"MRtrix3 tckgen SD_Stream -nthreads {args.threads}", mrtrix, args.seeds))
    if dipy:
        rows.append(("DIPY LocalTracking ClosestPeak (1 thread)", dipy, dipy["seeds"]))
    for name, r, n in rows:
        print(f"{name:38s} {rate(r, n):10.0f} {rate(r, r['streamlines']):14.0f} {rate(r, r['points']):12.0f} {r['seconds']:8.2f}")
    record = dict(commit=commit(), device=args.device, torch=torch.__version__,
                  threads=args.threads, params=PARAMS, seeds=args.seeds, ours=ours, ours_compiled=fused, mrtrix=mrtrix,
                  dipy=dipy)
    for name, r in (("eager", ours), ("compiled", fused)):
        if mrtrix:
            record[f"{name}_over_mrtrix_seeds_per_s"] = rate(r, args.seeds) / rate(mrtrix, args.seeds)
            print(f"ratio seeds/s ours ({name}) / MRtrix3: {record[f'{name}_over_mrtrix_seeds_per_s']:.2f}")
        if dipy:
            record[f"{name}_over_dipy_seeds_per_s"] = rate(r, args.seeds) / rate(dipy, dipy["seeds"])
            print(f"ratio seeds/s ours ({name}) / DIPY:    {record[f'{name}_over_dipy_seeds_per_s']:.1f}")
    print(f"compiled warm-up (first call, includes compilation): {fused['warm_up_seconds']:.1f} s")
    save(record, f"tracking_{record['commit']}_{args.device}")


if __name__ == "__main__":
    main()
