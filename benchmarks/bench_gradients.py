"""Backpropagation through tracking: forward+backward against the plain compiled forward, as a user
runs it (``Tracker`` calls, same seeds, same thread count), on the brain-sized phantom.

Per algorithm and seed count: the forward without gradients (``torch.no_grad``), and the forward with
the FOD coefficients requiring grad followed by ``backward`` of loss = sum of all point coordinates
(the replay, ``tracking.replay``); each the best of ``--repeats`` after one warm-up. Peak memory of
the backward: the largest traced numpy allocation total during ``backward`` (``tracemalloc``; the
kernels' per-thread work arrays are not traced and are a few KB per thread), per point and in all.
The old torch-loop backward (``engine="torch"``) is timed once at the smallest seed count for
reference (``--torch-oracle``).

    python benchmarks/bench_gradients.py                        # 1.5k, 7.5k, 30k seeds, 2 threads
    python benchmarks/bench_gradients.py --seeds 1500 --algorithms sdstream --torch-oracle
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from DiffTractographyLib import SHField, Tracker  # noqa: E402
from DiffTractographyLib.phantoms import brain_phantom  # noqa: E402
from DiffTractographyLib.seeding import seeds_from_mask  # noqa: E402
from records import commit, save, set_threads  # noqa: E402


def timed(tracker: Tracker, coeffs: torch.Tensor, seeds: np.ndarray, backward: bool,
          trace: bool = False) -> tuple[float, int, int]:
    """(seconds, points, the backward's peak traced bytes when ``trace``) of one call."""
    coeffs.grad = None
    start = time.perf_counter()
    with torch.set_grad_enabled(backward):
        tractogram = tracker(seeds)
        peak = 0
        if backward:
            loss = tractogram.points.sum()
            if trace:
                tracemalloc.start()
            loss.backward()
            if trace:
                peak = tracemalloc.get_traced_memory()[1]
                tracemalloc.stop()
    return time.perf_counter() - start, len(tractogram.points), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1500, 7500, 30000])
    ap.add_argument("--algorithms", nargs="+", default=["sdstream", "detmax", "prob"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--torch-oracle", action="store_true", help="also time the torch loop's backward once")
    ap.add_argument("--out")
    args = ap.parse_args()
    set_threads(args.threads)
    coeffs, mask, affine = brain_phantom((64, 64, 64), 2.5)
    coeffs = coeffs.float()
    pool = seeds_from_mask(mask, affine, 1, rng_seed=0)
    pool = pool[np.random.default_rng(0).permutation(len(pool))]
    record = dict(date=str(datetime.date.today()), commit=commit(), threads=args.threads, cpus=os.cpu_count(),
                  phantom="brain_phantom 64^3, 2.5 mm, lmax 8", loss="sum of all point coordinates", runs=[])
    print(f"{'algorithm':9s} {'seeds':>6s} {'points':>8s} {'forward s':>9s} {'fwd+bwd s':>9s} {'ratio':>6s} "
          f"{'bwd MB':>7s} {'B/point':>7s}")
    for name in args.algorithms:
        basis = "descoteaux07" if name in ("detmax", "prob") else "tournier07"
        leaf = coeffs.clone().requires_grad_(True)
        tracker = Tracker(SHField(leaf, affine, basis), mask=mask, algorithm=name, nthreads=args.threads)
        for n in args.seeds:
            seeds = pool[:n] if n <= len(pool) else seeds_from_mask(mask, affine, -(-n // int(mask.sum())), 0)[:n]
            timed(tracker, leaf, seeds[:200], True)  # warm-up: compilation, first calls
            forward = min(timed(tracker, leaf, seeds, False)[0] for _ in range(args.repeats))
            both, points, _ = min(timed(tracker, leaf, seeds, True) for _ in range(args.repeats))
            peak = timed(tracker, leaf, seeds, True, trace=True)[2]
            r = dict(algorithm=name, seeds=n, points=points, forward_seconds=forward, forward_backward_seconds=both,
                     ratio=both / forward, backward_peak_mb=peak / 2**20, bytes_per_point=peak / max(points, 1))
            record["runs"].append(r)
            print(f"{name:9s} {n:6d} {points:8d} {forward:9.3f} {both:9.3f} {r['ratio']:6.2f} {r['backward_peak_mb']:7.1f} "
                  f"{r['bytes_per_point']:7.0f}", flush=True)
        if args.torch_oracle:
            oracle = Tracker(SHField(leaf, affine, basis), mask=mask, algorithm=name, engine="torch")
            n = args.seeds[0]
            seconds, points, _ = timed(oracle, leaf, pool[:n], True)
            record["runs"].append(dict(algorithm=name, seeds=n, points=points, engine="torch",
                                       forward_backward_seconds=seconds))
            print(f"{name:9s} {n:6d} {points:8d} {'':9s} {seconds:9.3f}  (torch loop, forward+backward)", flush=True)
    path = save(record, f"gradients_{record['commit']}_cpu", args.out)
    print(f"written {path}")


if __name__ == "__main__":
    main()
