"""Speed of the uncertainty envelope (``planning.envelope``): R repeats of a 1,000-seed bundle on a
noisy brain-sized DWI phantom, the wild bootstrap refitted in each repeat, with a lesion.

The phantom is ``phantoms.brain_dwi_phantom`` (96 x 96 x 60 voxels of 2 mm; 5 b=0 and 60 b=1000
volumes) with Rician noise of SNR 20 on the b=0 signal inside the brain, zero outside. 1,000 seeds
in a 4 mm ball in the S-I fibres; the bundle runs through the two- and three-way crossings. The
lesion is a 6 x 6 x 6 mm block beside the bundle. Each configuration runs once after a warm-up
(compilation, first calls) of 2 repeats; the time is the whole ``envelope`` call: reference run,
bootstrap draws, refits, tracking, visitation map and lesion distances, with its stage breakdown.

    python benchmarks/bench_envelope.py                  # tensordet (DTI) and sdstream (CSD), R = 20
    python benchmarks/bench_envelope.py --runs tensordet --repeats 20 --threads 2
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np

# idle OpenMP workers sleep instead of spinning: torch's CSD solves and the tracking kernels alternate, and
# spinning workers of one starve the other (9x slower CSD on a busy 2-core machine); set before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from DiffTractographyLib.config import TrackingParams  # noqa: E402
from DiffTractographyLib.dwi import DWI  # noqa: E402
from DiffTractographyLib.phantoms import brain_dwi_phantom  # noqa: E402
from DiffTractographyLib.planning.envelope import envelope  # noqa: E402
from DiffTractographyLib.seeding import seeds_in_spheres  # noqa: E402
from DiffTractographyLib.stopping import BinaryMask  # noqa: E402
from records import commit, save, set_threads  # noqa: E402

SHAPE, VOXEL, SNR = (96, 96, 60), 2.0, 20.0
SEED_CENTRE, SEED_RADIUS = (0.0, 0.0, 20.0), 4.0
#: configuration -> (method, algorithm)
RUNS = {"tensordet": ("wild", "tensordet"), "sdstream": ("wild", "sdstream"), "prob": ("prob", "prob")}


def phantom(seed: int = 0) -> tuple[DWI, np.ndarray]:
    """The noisy DWI and its brain mask."""
    rs = np.random.default_rng(seed)
    g = rs.normal(size=(60, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    bvals, bvecs = np.r_[np.zeros(5), np.full(60, 1000.0)], np.vstack([np.zeros((5, 3)), g])
    clean, mask, affine = brain_dwi_phantom(bvals, bvecs, SHAPE, VOXEL)
    sigma = 1000.0 / SNR
    noisy = np.hypot(clean + rs.normal(0, sigma, clean.shape), rs.normal(0, sigma, clean.shape))
    return DWI((noisy * mask[..., None]).astype(np.float32), affine, bvals, bvecs), mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", nargs="+", default=["tensordet", "sdstream"], choices=list(RUNS))
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    set_threads(args.threads)
    dwi, mask = phantom()
    seeds = seeds_in_spheres([SEED_CENTRE], SEED_RADIUS, args.seeds)
    lesion_voxels = np.zeros(SHAPE, bool)
    centre = np.round(np.linalg.solve(dwi.affine[:3, :3], np.array([8.0, 0.0, 0.0]) - dwi.affine[:3, 3])).astype(int)
    lesion_voxels[tuple(slice(c - 1, c + 2) for c in centre)] = True
    lesion = BinaryMask(lesion_voxels, dwi.affine)
    record = dict(date=str(datetime.date.today()), commit=commit(), threads=args.threads, cpus=os.cpu_count(),
                  device="cpu", phantom=f"brain_dwi_phantom {SHAPE}, {VOXEL} mm, 5 b0 + 60 b=1000, Rician SNR {SNR}",
                  seeds=f"{args.seeds} in a {SEED_RADIUS} mm ball at {SEED_CENTRE} mm RAS",
                  lesion="3 x 3 x 3 voxels centred 8 mm right of the seeds", runs=[])
    print(f"{'run':10s} {'method':6s} {'R':>3s} {'total s':>8s} {'per rep':>8s}  stages (s)")
    for name in args.runs:
        method, algorithm = RUNS[name]
        params = TrackingParams(algorithm=algorithm, nthreads=args.threads)
        envelope(dwi, seeds[:100], params, repeats=2, method=method, mask=mask, lesion=lesion)   # warm-up
        start = time.perf_counter()
        result = envelope(dwi, seeds, params, repeats=args.repeats, method=method, mask=mask, lesion=lesion,
                          rng_seed=1)
        seconds = time.perf_counter() - start
        region = [int(u - l) for l, u in zip(*result.region)]
        run = dict(name=name, method=method, algorithm=algorithm, repeats=args.repeats, seconds=seconds,
                   per_repeat=seconds / args.repeats, stages=result.seconds, region_voxels=region,
                   redrawn=result.redrawn, streamlines_median=float(np.median(result.streamlines)),
                   percentiles=result.to_json()["percentiles"])
        record["runs"].append(run)
        stages = ", ".join(f"{k} {v:.2f}" for k, v in result.seconds.items() if k != "total")
        print(f"{name:10s} {method:6s} {args.repeats:3d} {seconds:8.2f} {seconds / args.repeats:8.3f}  {stages}; "
              f"region {region}, redrawn {result.redrawn}", flush=True)
    path = save(record, f"envelope_{record['commit']}_cpu", args.out)
    print(f"written {path}")


if __name__ == "__main__":
    main()
