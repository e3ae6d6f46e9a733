"""Coverage of the uncertainty envelope on a phantom with a known bundle: over ``--draws`` noise
draws of its DWI, the share of the true bundle's voxels inside the 95% envelope, per algorithm.

The phantom is a straight tube of radius 4 mm along x (``phantoms.dwi_phantom``, 26 x 14 x 14 voxels
of 2 mm, 2 b=0 and 60 b=1000 volumes) in isotropic tissue; each draw adds independent Rician noise of
SNR ``--snr`` on the b=0 signal. Seeds: 4 random seeds in each tube voxel of the two central slices
across the tube. For each draw the envelope of ``--repeats`` repeats is computed (``--rng-seed`` +
draw index), and its 95% envelope is the voxels visited by at least 5% of the repeats (probability
>= 0.05). Reported per algorithm, over the draws: the mean, 5th percentile and minimum of the
coverage (true bundle voxels inside the envelope / true bundle voxels, the bundle being the voxels
whose centre lies in the tube), the mean share of envelope voxels outside the tube, and the draws
where the envelope missed the bundle altogether (no repeat with a streamline). Algorithms:
tensordet and sdstream on wild bootstrap replicates (DTI; CSD lmax 6), prob with fresh draws on the
CSD of the draw.

    python benchmarks/envelope_coverage.py                       # 50 draws, 20 repeats, 3 algorithms
    python benchmarks/envelope_coverage.py --draws 10 --algorithms tensordet
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
from DiffTractographyLib.phantoms import Bundle, dwi_phantom, fibre_fractions  # noqa: E402
from DiffTractographyLib.planning.envelope import envelope  # noqa: E402
from DiffTractographyLib.seeding import seeds_from_mask  # noqa: E402
from records import commit, save, set_threads  # noqa: E402

SHAPE = (26, 14, 14)
AFFINE = np.array([[2.0, 0, 0, -25], [0, 2, 0, -13], [0, 0, 2, -13], [0, 0, 0, 1]])
BUNDLE = Bundle.straight([-40.0, 0.0, 0.0], [40.0, 0.0, 0.0], 4.0)
LEVEL = 0.05
#: algorithm -> envelope method
METHODS = {"tensordet": "wild", "sdstream": "wild", "prob": "prob"}


def gradients() -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(0).normal(size=(60, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return np.r_[0.0, 0.0, np.full(60, 1000.0)], np.vstack([np.zeros((2, 3)), g])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--snr", type=float, default=20.0)
    ap.add_argument("--algorithms", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--rng-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    set_threads(args.threads)
    bvals, bvecs = gradients()
    clean = dwi_phantom(SHAPE, AFFINE, [BUNDLE], bvals, bvecs)
    truth = fibre_fractions(SHAPE, AFFINE, [BUNDLE])[0][..., 0]
    centre = np.zeros(SHAPE, bool)
    centre[SHAPE[0] // 2 - 1:SHAPE[0] // 2 + 1] = True
    seeds = seeds_from_mask(truth & centre, AFFINE, 4, rng_seed=args.rng_seed)
    sigma = 1000.0 / args.snr
    record = dict(date=str(datetime.date.today()), commit=commit(), threads=args.threads, draws=args.draws,
                  repeats=args.repeats, snr=args.snr, level=LEVEL, true_voxels=int(truth.sum()), seeds=len(seeds),
                  phantom=f"straight tube r 4 mm along x, {SHAPE} voxels of 2 mm, 2 b0 + 60 b=1000, Rician noise",
                  envelope=f"voxels visited by >= {LEVEL:g} of the repeats", algorithms=[])
    print(f"{'algorithm':10s} {'draws':>5s} {'mean cov':>8s} {'p5 cov':>7s} {'min cov':>7s} {'outside':>7s} "
          f"{'missed':>6s} {'s/draw':>7s}")
    for algorithm in args.algorithms:
        coverage, outside, missed, seconds = [], [], 0, []
        for draw in range(args.draws):
            rs = np.random.default_rng(1000 + draw)
            noisy = np.hypot(clean + rs.normal(0, sigma, clean.shape), rs.normal(0, sigma, clean.shape))
            dwi = DWI(noisy.astype(np.float32), AFFINE, bvals, bvecs)
            start = time.perf_counter()
            result = envelope(dwi, seeds, TrackingParams(algorithm=algorithm, nthreads=args.threads),
                              repeats=args.repeats, method=METHODS[algorithm], lmax=6,
                              rng_seed=args.rng_seed + draw)
            seconds.append(time.perf_counter() - start)
            inside = result.probability >= LEVEL
            coverage.append(float((inside & truth).sum() / truth.sum()))
            outside.append(float((inside & ~truth).sum() / max(int(inside.sum()), 1)))
            missed += int((result.streamlines == 0).all())
        c = np.asarray(coverage)
        run = dict(algorithm=algorithm, method=METHODS[algorithm], coverage_mean=float(c.mean()),
                   coverage_p5=float(np.percentile(c, 5)), coverage_min=float(c.min()),
                   outside_share_mean=float(np.mean(outside)), missed_draws=missed,
                   seconds_per_draw=float(np.mean(seconds)), coverage=coverage)
        record["algorithms"].append(run)
        print(f"{algorithm:10s} {args.draws:5d} {c.mean():8.3f} {run['coverage_p5']:7.3f} {c.min():7.3f} "
              f"{run['outside_share_mean']:7.3f} {missed:6d} {run['seconds_per_draw']:7.2f}", flush=True)
    path = save(record, f"envelope_coverage_{record['commit']}_cpu", args.out)
    print(f"written {path}")


if __name__ == "__main__":
    main()
