"""Seeds placed by gradient against random search, on a phantom with a known bundle.

Phantom (2 mm grid, sdstream, step 0.5 mm, cutoff 0.05): bundle A runs straight along R from end to
end of the grid and reaches the target sphere (R 14, A -5, r 5 mm); bundle B lies beside it (A > 0)
in the start sphere (R -14, A 0, r 5 mm), then turns away anterior. An avoided sphere (R 0, A -3,
S 4, r 3.5 mm) cuts the top of A. So only the part of the start sphere in A, below the avoided
sphere, connects; sdstream also rejects about two seeds in three, whose random start direction
finds no fibre.

A seed *connects* when its streamline passes ``select_streamlines(include=(start, target),
exclude=(avoid,))``. Budget = seeds tracked. Both methods are asked for N connecting seeds:

- gradient: ``planning.optimise_seeds`` from N uniform seeds (each iteration tracks the seeds not
  connecting yet); share = connecting share of its N seeds after each tracking.
- random search: fresh uniform seeds in the start sphere, tracked once each, in batches of N (up to
  50 N seeds); share after b seeds tracked = min(connecting found, N) / N (it keeps the first N
  that connect).
- redraw only: ``optimise_seeds`` with a step of 1e-6 mm: what the rejected seeds' new start
  directions alone give, without the gradient.

Shares are compared at the gradient run's budgets; "budget to 80%" is the seeds tracked until 80%
of N connect. Each configuration is repeated over --repeats draws of the seeds; medians are printed,
every run is recorded.

    python benchmarks/optimise_seeds.py                  # N = 64 and 256, 5 repeats, 2 threads
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

# before torch loads OpenMP: spinning OpenMP threads steal a shared machine's cores (an explicit
# OMP_WAIT_POLICY in the environment wins)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from DiffTractographyLib import SHField, Tracker  # noqa: E402
from DiffTractographyLib.phantoms import Bundle, fod_phantom  # noqa: E402
from DiffTractographyLib.planning.seeds import optimise_seeds  # noqa: E402
from DiffTractographyLib.seeding import seeds_in_spheres  # noqa: E402
from DiffTractographyLib.selection import Sphere, select_streamlines  # noqa: E402
from records import commit, save, set_threads  # noqa: E402

SHAPE = (29, 19, 11)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = [-28.0, -16.0, -10.0]
TRACKING = dict(step_size=0.5, cutoff=0.05)
#: random search tracks up to this many times N seeds (to find its budget to 80%)
RANDOM_BUDGET = 50
START, TARGET, AVOID = Sphere((-14.0, 0.0, 0.0), 5.0), Sphere((14.0, -5.0, 0.0), 5.0), Sphere((0.0, -3.0, 4.0), 3.5)


def field() -> SHField:
    """Bundle A (straight, reaches the target) beside bundle B (turns away), lmax 6."""
    a = Bundle.straight([-30, -5, 0], [30, -5, 0], 7.5)
    b = Bundle.arc([-14, 25, 0], [0, -1, 0], [1, 0, 0], 20.0, 7.5, -40, 90)
    return SHField(fod_phantom(SHAPE, AFFINE, [a, b], lmax=6)[0], AFFINE)


def uniform_seeds(count: int, draw: int) -> np.ndarray:
    """``count`` seeds uniform in the start sphere (draw ``draw`` of the sequence)."""
    return seeds_in_spheres([START.centre], START.radius, count, rng_seed=draw)


def budget_to(share: np.ndarray, budget: np.ndarray, level: float) -> int | None:
    """The first budget at which ``share`` reaches ``level`` (None: not reached)."""
    hit = np.flatnonzero(share >= level - 1e-12)
    return int(budget[hit[0]]) if len(hit) else None


def spread(points: np.ndarray) -> float:
    """Median distance in mm from each point to its nearest other point."""
    return float(np.median(cKDTree(points).query(points, k=2)[0][:, 1])) if len(points) > 1 else float("nan")


def random_search(tracker: Tracker, n: int, total: int, draw: int) -> dict:
    """Track ``total`` fresh seeds in batches of ``n``; connecting found after each seed, and seconds."""
    seeds = uniform_seeds(total, draw)
    connects, seconds, began = np.zeros(total, dtype=bool), [], time.perf_counter()
    for s in range(0, total, n):
        t = tracker(seeds[s:s + n], seed_ids=np.arange(s, min(s + n, total)))
        connects[t.seed_index.numpy()[select_streamlines(t, include=(START, TARGET), exclude=(AVOID,)).numpy()]] = True
        seconds.append(time.perf_counter() - began)
    return dict(found=np.cumsum(connects), seconds=seconds, kept=seeds[np.flatnonzero(connects)[:n]])


def run(f: SHField, tracker: Tracker, n: int, iterations: int, draw: int) -> dict:
    seeds = uniform_seeds(n, 1000 + draw)
    began = time.perf_counter()
    grad = optimise_seeds(f, seeds, START, TARGET, [AVOID], iterations=iterations, **TRACKING)
    grad_seconds = time.perf_counter() - began
    redraw = optimise_seeds(f, seeds, START, TARGET, [AVOID], iterations=iterations, step=1e-6, **TRACKING)
    budget = np.cumsum(grad.tracked)
    rand = random_search(tracker, n, max(int(budget[-1]), RANDOM_BUDGET * n), 2000 + draw)
    rand_share = np.minimum(rand["found"][budget - 1], n) / n
    r80 = budget_to(np.minimum(rand["found"], n) / n, np.arange(1, len(rand["found"]) + 1), 0.8)
    return dict(
        seeds=n, draw=draw, budget=budget.tolist(), gradient_share=grad.share.tolist(),
        gradient_loss_mm=grad.loss.tolist(), random_share=rand_share.tolist(), redraw_share=redraw.share.tolist(),
        redraw_budget=np.cumsum(redraw.tracked).tolist(),
        gradient_budget_to_80=budget_to(grad.share, budget, 0.8), random_budget_to_80=r80,
        gradient_seconds=grad_seconds, random_seconds=rand["seconds"][(int(budget[-1]) - 1) // n],
        random_seconds_to_80=None if r80 is None else rand["seconds"][(r80 - 1) // n],
        gradient_spread_mm=spread(grad.seeds[grad.connects]), random_spread_mm=spread(rand["kept"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[64, 256])
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    args = ap.parse_args()
    set_threads(args.threads)
    f = field()
    tracker = Tracker(f, **TRACKING)
    optimise_seeds(f, uniform_seeds(8, 0), START, TARGET, [AVOID], iterations=1, **TRACKING)  # warm-up: compilation
    record = dict(date=str(datetime.date.today()), commit=commit(), threads=args.threads, cpus=os.cpu_count(),
                  phantom=__doc__.split("\n\n")[1], tracking=TRACKING, iterations=args.iterations, runs=[])
    for n in args.seeds:
        runs = [run(f, tracker, n, args.iterations, draw) for draw in range(args.repeats)]
        record["runs"] += runs
        median = lambda key: np.median([r[key] if r[key] is not None else np.inf for r in runs])  # noqa: E731
        print(f"N = {n}: {args.repeats} draws, medians")
        print(f"  budget to 80%: gradient {median('gradient_budget_to_80'):.0f}, "
              f"random {median('random_budget_to_80'):.0f} seeds tracked (inf: not reached)")
        print(f"  seconds: gradient run {median('gradient_seconds'):.2f} (whole run), random to 80% "
              f"{median('random_seconds_to_80'):.2f}, random for the gradient run's budget "
              f"{median('random_seconds'):.2f}")
        print(f"  spread of connecting seeds (median nearest-neighbour mm): gradient "
              f"{median('gradient_spread_mm'):.2f}, random {median('random_spread_mm'):.2f}")
        first = runs[0]
        print(f"  draw 0: {'budget':>7s} {'gradient':>8s} {'random':>7s}   {'budget':>7s} {'redraw':>7s}")
        for i in range(len(first["budget"])):
            redraw = (f"{first['redraw_budget'][i]:7d} {first['redraw_share'][i]:7.3f}"
                      if i < len(first["redraw_share"]) else "")
            print(f"          {first['budget'][i]:7d} {first['gradient_share'][i]:8.3f} "
                  f"{first['random_share'][i]:7.3f}   {redraw}")
    path = save(record, f"seeds_{record['commit']}_cpu", args.out)
    print(f"written {path}")


if __name__ == "__main__":
    main()
