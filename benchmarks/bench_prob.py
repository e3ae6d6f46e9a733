"""Bundle-level comparison of ``prob`` with MRtrix3 iFOD2 and DIPY's ProbabilisticDirectionGetter on
phantom_cross, against the known bundles.

Ours and DIPY (run here) track from the same random seeds in the mask, starting from DIPY's peaks
(step 0.5 mm, 45 degrees, pmf threshold 0.1, binary mask, 500 points per half); iFOD2 is the stored
``ifod2_ref.tck`` (3000 seeds in the mask, step 0.5 mm, 45 degrees, cutoff 0.1). Streamlines under
2 mm are dropped from all three (iFOD2's -minlength). Scores (``bundle_scores``, full centre lines):
VC, VB, OL, OR, the share of streamlines in each bundle and the mean length. Prints a table and one
JSON line.

usage: python benchmarks/bench_prob.py [--data ../shared/data/phantom_cross] [--n-seeds 3000]
       [--rng-seed 0] [--device cpu]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from DiffTractographyLib.bundle_scores import score_bundles
from DiffTractographyLib.fields import SHField
from DiffTractographyLib.geometry import apply_affine
from DiffTractographyLib.io import load_tractogram
from DiffTractographyLib.tracking import track

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(step_size=0.5, max_angle=45.0, cutoff=0.1)
MIN_LENGTH = 2.0


def run_dipy(coeffs, affine, mask, seeds, rng_seed: int) -> tuple[list, float]:
    from dipy.data import default_sphere
    from dipy.direction import ProbabilisticDirectionGetter
    from dipy.tracking.local_tracking import LocalTracking
    from dipy.tracking.stopping_criterion import BinaryStoppingCriterion

    start = time.perf_counter()
    getter = ProbabilisticDirectionGetter.from_shcoeff(coeffs, max_angle=SETTINGS["max_angle"], sphere=default_sphere,
                                                       pmf_threshold=SETTINGS["cutoff"])
    streamlines = list(LocalTracking(getter, BinaryStoppingCriterion(mask), seeds, affine,
                                     step_size=SETTINGS["step_size"], random_seed=rng_seed))
    return streamlines, time.perf_counter() - start


def run_ours(coeffs, affine, mask, seeds, rng_seed: int, device: str) -> tuple[list, float]:
    start = time.perf_counter()
    field = SHField(torch.as_tensor(coeffs), affine, basis="descoteaux07")
    out = track(field, seeds, algorithm="prob", mask=mask, rng_seed=rng_seed, device=device, max_length=250.0,
                **SETTINGS)
    return out.numpy_streamlines(), time.perf_counter() - start


def arc_length(s: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(s, axis=0), axis=1).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "phantom_cross")
    ap.add_argument("--n-seeds", type=int, default=3000)
    ap.add_argument("--rng-seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    fod = nib.load(a.data / "fod_dipy.nii.gz")
    coeffs, affine = np.asarray(fod.dataobj, dtype=np.float64), fod.affine
    mask = np.asarray(nib.load(a.data / "mask.nii.gz").dataobj) > 0
    truth = np.load(a.data / "truth.npz")
    centrelines = [truth[f"curve{i}"] for i in range(len(truth["radii"]))]
    rng = np.random.default_rng(a.rng_seed)
    voxels = np.argwhere(mask)[rng.integers(0, int(mask.sum()), a.n_seeds)] + rng.uniform(-0.5, 0.5, (a.n_seeds, 3))
    seeds = apply_affine(affine, voxels)

    results, seconds = {}, {}
    results["ours (prob)"], seconds["ours (prob)"] = run_ours(coeffs, affine, mask, seeds, a.rng_seed, a.device)
    results["DIPY prob"], seconds["DIPY prob"] = run_dipy(coeffs, affine, mask, seeds, a.rng_seed)
    results["MRtrix3 iFOD2"] = load_tractogram(a.data / "ifod2_ref.tck").numpy_streamlines()
    scores = {}
    for name, streamlines in results.items():
        kept = [s for s in streamlines if len(s) > 1 and arc_length(s) >= MIN_LENGTH]
        scores[name] = score_bundles(kept, centrelines, truth["radii"], truth["labels"], affine)
    header = f"{'':15s}{'n':>7s}{'VC':>7s}{'VB':>4s}{'OL':>7s}{'OR':>7s}" + "".join(
        f"{f'bundle {b}':>10s}" for b in range(len(centrelines))) + f"{'len mm':>8s}{'s':>8s}"
    print(header)
    for name, s in scores.items():
        print(f"{name:15s}{s['n']:7d}{s['VC']:7.3f}{s['VB']:4d}{s['OL']:7.3f}{s['OR']:7.3f}"
              + "".join(f"{x:10.3f}" for x in s["shares"])
              + f"{s['mean_length_mm']:8.1f}{seconds.get(name, float('nan')):8.1f}")
    print(json.dumps(dict(benchmark="prob", n_seeds=a.n_seeds, rng_seed=a.rng_seed, device=a.device,
                          torch=torch.__version__, scores=scores, seconds=seconds, **SETTINGS)))


if __name__ == "__main__":
    main()
