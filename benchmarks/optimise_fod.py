"""Optimisation through tracking: recover an FOD from target streamlines.

Target streamlines are tracked (sdstream) on a phantom arc bundle. The FOD we start from is the same
phantom with the arc's centre moved 5 mm to the right, so its fibre directions are rotated by up to
~20 degrees and its streamlines miss the target. Gradient descent on
the FOD's SH coefficients, with the loss measured on the tracked points themselves, pulls the
streamlines back onto the target. The loss printed each iteration is the mean squared distance (mm^2)
between corresponding points; "saved MB" is what the autograd graph keeps (the replay keeps the points
only; the torch loop its checkpointed blocks' inputs).

    python benchmarks/optimise_fod.py                        # 24 streamlines, kernels + replay
    python benchmarks/optimise_fod.py --engine torch         # the same with the torch loop (as before)
    python benchmarks/optimise_fod.py --seeds 3000 --iterations 10   # thousands of streamlines
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from DiffTractographyLib import SHField, track  # noqa: E402
from DiffTractographyLib.phantoms import Bundle, fod_phantom  # noqa: E402

SHAPE = (20, 12, 16)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
AFFINE[:3, 3] = [-19.0, -11.0, -4.0]
TRACKING = dict(step_size=0.5, max_length=18.0, min_length=0.0, cutoff=0.05, max_angle=60.0, unidirectional=True)


def arc(centre_x: float):
    bundle = Bundle.arc([centre_x, 0, -4], [1, 0, 0], [0, 0, 1], 15.0, 9.0, 5, 175)
    return fod_phantom(SHAPE, AFFINE, [bundle], lmax=6)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--seeds", type=int, default=24, help="streamlines fitted (seeds at the arc's start)")
    ap.add_argument("--engine", choices=["kernels", "torch"], default="kernels",
                    help="kernels: compiled forward + replay backward; torch: the torch loop's autograd")
    args = ap.parse_args()
    engine = None if args.engine == "kernels" else "torch"
    rng = np.random.default_rng(0)
    count = args.seeds
    seeds = np.column_stack([rng.uniform(-6, -3, count), rng.uniform(-3, 3, count), rng.uniform(10, 12, count)])
    directions = np.tile([[1.0, 0.0, 0.0]], (count, 1))
    with torch.no_grad():
        target, _ = track(SHField(arc(0.0), AFFINE), seeds, seed_directions=directions, **TRACKING).padded()
    coeffs = arc(5.0).clone().requires_grad_(True)
    optimiser = torch.optim.Adam([coeffs], lr=args.lr)
    print(f"{'iter':>4s} {'loss (mm^2)':>12s} {'saved MB':>9s} {'seconds':>8s}")
    first = last = None
    began, times = time.perf_counter(), []
    for it in range(args.iterations):
        start = time.perf_counter()
        saved = [0]

        def pack(t):
            saved[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            ours, lengths = track(SHField(coeffs, AFFINE), seeds, seed_directions=directions, engine=engine,
                                  **TRACKING).padded()
        n = min(ours.shape[1], target.shape[1])
        valid = ~torch.isnan(ours[:, :n, 0]) & ~torch.isnan(target[:, :n, 0])
        diff = torch.nan_to_num(ours[:, :n] - target[:, :n])
        loss = (diff ** 2).sum(-1)[valid].mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        first = loss.item() if first is None else first
        last = loss.item()
        times.append(time.perf_counter() - start)
        print(f"{it:4d} {last:12.4f} {saved[0] / 2**20:9.2f} {times[-1]:8.3f}")
    total = time.perf_counter() - began
    steady = sorted(times)[len(times) // 2]
    print(f"loss {first:.4f} -> {last:.4f} mm^2 ({100 * (1 - last / first):.0f}% lower); {count} streamlines, "
          f"engine {args.engine}: {total:.2f} s in all (compilation included), median {steady:.3f} s per iteration")


if __name__ == "__main__":
    main()
