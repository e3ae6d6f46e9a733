"""QuickBundles against DIPY's on the same streamlines, in one run; bundles against phantom truth.

    python benchmarks/bench_clustering.py                          # 100k generated streamlines, CPU
    python benchmarks/bench_clustering.py --n 100000 1000000 --threads 2
    python benchmarks/bench_clustering.py --n 1000000 --skip-dipy
    python benchmarks/bench_clustering.py --reference-data ../shared/data --truth

Generated tractograms come from ``Testing/synthetic_tractograms.py`` (60 bundles in a brain-sized box,
truncated and randomly oriented streamlines of 20-150 vertices, --spurious of them random curves
(default 5 %; each spurious streamline tends to found its own cluster), random order).
Both sides start from the same in-memory streamlines (numpy arrays) and include their resampling;
ours is timed after a warm-up on a small set (Numba compiles or loads its cache). Ratio = DIPY time / our
time (> 1: we are faster). Agreement is the adjusted Rand index of the two labelings and whether
labels and centroids are identical. ``--reference-data`` adds the project's reference tractograms;
``--truth`` scores flat and hierarchical QuickBundles against phantom_cross's true bundles
(purity: share of a cluster's valid streamlines from its main bundle, averaged over streamlines;
completeness: share of a bundle's valid streamlines in its largest cluster, averaged over
bundles). OMP_WAIT_POLICY defaults to PASSIVE (spinning OpenMP threads steal a shared machine's
cores). One JSON record is printed last (``--save`` writes benchmarks/results/clustering_<commit>_cpu.json).
``bench_cluster_process.py`` times whole processes (reading and writing files) instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "Testing"))

import nibabel as nib  # noqa: E402

from DiffTractographyLib import Tractogram, load_tractogram  # noqa: E402
from DiffTractographyLib.bundle_scores import assign_bundles  # noqa: E402
from DiffTractographyLib.clustering import hierarchical_quickbundles, quickbundles  # noqa: E402
from synthetic_tractograms import bundle_tractogram  # noqa: E402
from records import commit, save  # noqa: E402


def adjusted_rand_index(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index of two labelings (Hubert and Arabie 1985)."""
    _, pair_counts = np.unique(np.stack([a, b], 1), axis=0, return_counts=True)
    comb = lambda n: n * (n - 1) / 2.0  # noqa: E731
    both = comb(pair_counts).sum()
    rows = comb(np.unique(a, return_counts=True)[1]).sum()
    cols = comb(np.unique(b, return_counts=True)[1]).sum()
    expected = rows * cols / comb(len(a))
    top = 0.5 * (rows + cols) - expected
    return 1.0 if top == 0 else float((both - expected) / top)


def dipy_quickbundles(streamlines, threshold):
    from dipy.segment.clustering import QuickBundles

    start = time.perf_counter()
    clusters = QuickBundles(threshold).cluster(streamlines)
    seconds = time.perf_counter() - start
    labels = np.full(len(streamlines), -1)
    for k, cluster in enumerate(clusters):
        labels[cluster.indices] = k
    return labels, np.array([c.centroid for c in clusters], dtype=np.float32), seconds


def ours_timed(tractogram, threshold, repeat):
    arrays = Tractogram(tractogram.points.numpy(), tractogram.offsets.numpy())
    quickbundles(tractogram.subset(torch.arange(min(2000, len(tractogram)))), threshold)
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = quickbundles(arrays, threshold)
        best = min(best, time.perf_counter() - start)
    return result, best


def compare(name, tractogram, threshold, repeat, skip_dipy):
    ours, seconds = ours_timed(tractogram, threshold, repeat)
    row = {"input": name, "n": len(tractogram), "threshold_mm": threshold, "clusters": len(ours),
           "ours_s": round(seconds, 3)}
    if not skip_dipy:
        labels, centroids, dipy_s = dipy_quickbundles(tractogram.numpy_streamlines(), threshold)
        row.update(dipy_s=round(dipy_s, 3), ratio=round(dipy_s / seconds, 2),
                   ari=round(adjusted_rand_index(ours.labels, labels), 6),
                   identical=bool(np.array_equal(ours.labels, labels) and np.array_equal(ours.centroids, centroids)))
    print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    return row


def truth_labels(phantom: Path, streamlines) -> np.ndarray:
    """The true bundle of each streamline (-1: valid for none), as the project's bundle scores assign it."""
    truth = np.load(phantom / "truth.npz")
    radii = truth["radii"]
    voxel = float(np.cbrt(abs(np.linalg.det(nib.load(phantom / "mask.nii.gz").affine[:3, :3]))))
    return assign_bundles(streamlines, [truth[f"curve{i}"] for i in range(len(radii))], radii, margin=voxel)


def bundle_scores(labels: np.ndarray, truth: np.ndarray) -> dict:
    valid = (truth >= 0) & (labels >= 0)
    lab, tru = labels[valid], truth[valid]
    purity = sum(np.bincount(tru[lab == k]).max() for k in np.unique(lab)) / len(lab)
    completeness = np.mean([np.bincount(lab[tru == b]).max() / (tru == b).sum() for b in np.unique(tru)])
    return {"purity": round(float(purity), 3), "completeness": round(float(completeness), 3),
            "clusters_with_valid": int(len(np.unique(lab)))}


def truth_section(phantom: Path) -> list[dict]:
    rows = []
    for name in ("sdstream_ref.tck", "detmax_ref.trk"):
        tractogram = load_tractogram(phantom / name)
        truth = truth_labels(phantom, tractogram.numpy_streamlines())
        for threshold in (10.0, 20.0, 30.0):
            row = {"input": name, "method": "quickbundles", "threshold_mm": threshold,
                   **bundle_scores(quickbundles(tractogram, threshold).labels.numpy(), truth)}
            rows.append(row)
        for level in hierarchical_quickbundles(tractogram, [40.0, 20.0, 10.0]):
            rows.append({"input": name, "method": "hierarchical 40>20>10", "threshold_mm": level.threshold,
                         **bundle_scores(level.labels.numpy(), truth)})
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[100_000], help="generated streamline counts")
    parser.add_argument("--thresholds", type=float, nargs="+", default=[10.0, 5.0], help="QuickBundles thresholds, mm")
    parser.add_argument("--spurious", type=float, default=0.05, help="share of spurious streamlines (default 0.05)")
    parser.add_argument("--threads", type=int, help="Numba threads (default: all cores)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs of ours (best kept)")
    parser.add_argument("--skip-dipy", action="store_true")
    parser.add_argument("--reference-data", type=Path, help="folder with phantom_cross/ and invivo_small/")
    parser.add_argument("--truth", action="store_true", help="score against phantom_cross truth (needs --reference-data)")
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    if args.threads:
        numba.set_num_threads(args.threads)
    record = {"benchmark": "clustering", "device": "cpu", "numba": numba.__version__,
              "threads": numba.get_num_threads(), "cpu_count": os.cpu_count(), "rows": []}
    for n in args.n:
        tractogram, _ = bundle_tractogram(n, n_bundles=60, spurious=args.spurious, seed=1)
        for threshold in args.thresholds:
            name = f"generated {n} ({args.spurious:.0%} spurious)"
            record["rows"].append(compare(name, tractogram, threshold, args.repeat, args.skip_dipy))
    if args.reference_data:
        for name in ("phantom_cross/sdstream_ref.tck", "phantom_cross/detmax_ref.trk", "phantom_cross/ifod2_ref.tck",
                     "phantom_cross/tensordet_ref.tck", "invivo_small/sdstream_ref.tck"):
            tractogram = load_tractogram(args.reference_data / name)
            for threshold in args.thresholds:
                record["rows"].append(compare(name, tractogram, threshold, 1, args.skip_dipy))
        if args.truth:
            record["truth"] = truth_section(args.reference_data / "phantom_cross")
    record["commit"] = commit()
    print(json.dumps(record))
    if args.save:
        save(record, f"clustering_{record['commit']}_cpu")


if __name__ == "__main__":
    main()
