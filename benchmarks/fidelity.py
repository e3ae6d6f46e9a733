"""Fidelity on the full reference sets: every reference streamline re-tracked from its recorded seed and
initial direction, with the reference's parameters, and compared by symmetric Hausdorff distance
(all vertices, no resampling). Also scores the tractograms against phantom_cross's known bundles, and
compares the compiled kernels (the default path) with the torch loop (``engine="torch"``) run by run,
including seeds without a direction (MRtrix3's random starts, DIPY's peaks) and ``prob``.

    python benchmarks/fidelity.py [--data ../shared/data]

Prints one table row per comparison (share under 1 mm and 0.1 mm, median, p95, max) and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from DiffTractographyLib import SHField, load_tractogram, track  # noqa: E402
from DiffTractographyLib.bundle_scores import score_bundles  # noqa: E402
from DiffTractographyLib.dwi_io import load_dwi  # noqa: E402
from DiffTractographyLib.fields import DWIField  # noqa: E402
from DiffTractographyLib.images import load_nifti  # noqa: E402

COMMON = dict(max_angle=45.0, min_length=2.0, max_length=250.0)


def hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    return float(max(cKDTree(b).query(a)[0].max(), cKDTree(a).query(b)[0].max()))


def compare(reference, ours) -> dict:
    ref = load_tractogram(reference).numpy_streamlines() if not hasattr(reference, "numpy_streamlines") \
        else reference.numpy_streamlines()
    by_seed = dict(zip(ours.seed_index.tolist(), ours.numpy_streamlines()))
    d = np.array([hausdorff(r, by_seed[i]) if i in by_seed and len(by_seed[i]) > 1 else np.inf
                  for i, r in enumerate(ref)])
    return dict(n=len(ref), under_1mm=float((d < 1).mean()), under_01mm=float((d < 0.1).mean()),
                median=float(np.median(d)), p95=float(np.percentile(d, 95)), max=float(d.max()))


def kernels_vs_torch(field, points, **kw) -> tuple[dict, object]:
    """Track with the kernels and with the torch loop; the share of streamlines within 0.01 mm of
    their counterpart (the k-th streamline of the same seed), and the kernels' tractogram."""
    kernels, loop = track(field, points, **kw), track(field, points, engine="torch", **kw)

    def keyed(t):
        seen: dict = {}
        out = {}
        for s, points_ in zip(t.seed_index.tolist(), t.streamlines()):
            seen[s] = seen.get(s, -1) + 1
            out[(s, seen[s])] = points_.numpy()
        return out

    a, b = keyed(kernels), keyed(loop)
    d = np.array([hausdorff(a[k], v) if k in a else np.inf for k, v in b.items()] +
                 [np.inf] * len(set(a) - set(b)))
    return dict(n=len(d), under_001mm=float((d < 0.01).mean()), max=float(d.max()),
                diverging=int((d >= 0.01).sum())), kernels


def seeds(path: Path):
    rows = np.loadtxt(path)
    return rows[:, :3], rows[:, 3:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data"))
    args = ap.parse_args()
    data = Path(args.data)
    results, tractograms, engines = {}, {}, {}
    for name, step in (("phantom_cross", 0.5), ("invivo_small", 0.25)):
        fod, affine = load_nifti(data / name / "fod_mrtrix.nii.gz", mrtrix=True)  # as tckgen reads it
        mask, _ = load_nifti(data / name / "mask.nii.gz")
        points, dirs = seeds(data / name / "sdstream_seeds.txt")
        field, kw = SHField(fod, affine), dict(mask=mask, step_size=step, cutoff=0.1, **COMMON)
        engines[f"sdstream, {name}"], t = kernels_vs_torch(field, points, seed_directions=dirs, **kw)
        results[f"sdstream vs MRtrix3 SD_Stream, {name}"] = compare(data / name / "sdstream_ref.tck", t)
        tractograms[f"sdstream {name}"] = t
        engines[f"sdstream, {name}, random starts"] = kernels_vs_torch(field, points, **kw)[0]
        engines[f"sdstream, {name}, RK4"] = kernels_vs_torch(field, points, rk4=True, **kw)[0]
    phantom = data / "phantom_cross"
    mask, affine = load_nifti(phantom / "mask.nii.gz")
    dwi = load_dwi(phantom / "dwi.nii.gz", bvals=phantom / "dwi.bval", bvecs=phantom / "dwi.bvec", mrtrix=True)
    points, dirs = seeds(phantom / "tensordet_seeds.txt")
    kw = dict(algorithm="tensordet", mask=mask, step_size=0.5, cutoff=0.1, **COMMON)
    engines["tensordet, phantom_cross"], t = kernels_vs_torch(DWIField.from_dwi(dwi), points, seed_directions=dirs, **kw)
    results["tensordet vs MRtrix3 Tensor_Det, phantom_cross"] = compare(phantom / "tensordet_ref.tck", t)
    tractograms["tensordet phantom_cross"] = t
    engines["tensordet, phantom_cross, random starts"] = kernels_vs_torch(DWIField.from_dwi(dwi), points, **kw)[0]
    fod, fod_affine = load_nifti(phantom / "fod_dipy.nii.gz")
    points, dirs = seeds(phantom / "detmax_seeds.txt")
    field, kw = SHField(fod, fod_affine, "descoteaux07"), dict(mask=mask, step_size=0.5, max_angle=45.0, cutoff=0.1)
    engines["detmax, phantom_cross"], t = kernels_vs_torch(field, points, algorithm="detmax", seed_directions=dirs, **kw)
    results["detmax vs DIPY DeterministicMaximum, phantom_cross"] = compare(phantom / "detmax_ref.trk", t)
    tractograms["detmax phantom_cross"] = t
    engines["detmax, phantom_cross, DIPY's peaks"] = kernels_vs_torch(field, points, algorithm="detmax", **kw)[0]
    engines["prob, phantom_cross, DIPY's peaks"] = kernels_vs_torch(field, points, algorithm="prob", **kw)[0]

    print(f"{'kernels against the torch loop':50s} {'n':>6s} {'<0.01mm':>8s} {'diverging':>9s} {'max mm':>9s}")
    for key, r in engines.items():
        print(f"{key:50s} {r['n']:6d} {100 * r['under_001mm']:7.2f}% {r['diverging']:9d} {r['max']:9.2g}")
    print()
    print(f"{'comparison':56s} {'n':>5s} {'<1mm':>7s} {'<0.1mm':>7s} {'median':>8s} {'p95':>8s} {'max':>8s}")
    for key, r in results.items():
        print(f"{key:56s} {r['n']:5d} {100 * r['under_1mm']:6.2f}% {100 * r['under_01mm']:6.2f}% "
              f"{r['median']:8.5f} {r['p95']:8.5f} {r['max']:8.5f}")

    truth = np.load(phantom / "truth.npz")
    radii = truth["radii"]
    centrelines = [truth[f"curve{i}"] for i in range(len(radii))]
    labels = truth["labels"]
    print(f"\n{'against phantom_cross truth':40s} {'VC':>6s} {'VB':>4s} {'OL':>6s} {'OR':>6s}")
    references = {"MRtrix3 SD_Stream (reference)": "sdstream_ref.tck", "MRtrix3 Tensor_Det (reference)": "tensordet_ref.tck",
                  "DIPY det-max (reference)": "detmax_ref.trk"}
    scored = {**{k: v.numpy_streamlines() for k, v in tractograms.items() if "phantom" in k},
              **{k: load_tractogram(phantom / f).numpy_streamlines() for k, f in references.items()}}
    truth_scores = {}
    for key, streamlines in scored.items():
        s = score_bundles(streamlines, centrelines, radii, labels, affine)
        truth_scores[key] = s
        print(f"{key:40s} {s['VC']:6.3f} {s['VB']:4d} {s['OL']:6.3f} {s['OR']:6.3f}")
    print(json.dumps(dict(fidelity=results, kernels_vs_torch=engines, truth={k: {m: float(v) for m, v in s.items() if np.isscalar(v)}
                                                   for k, s in truth_scores.items()})))


if __name__ == "__main__":
    main()
