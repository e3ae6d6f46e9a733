"""Whole-process clustering, as a user times it: ``difftract cluster IN.tck --threshold T
--labels-out labels.txt`` against a Python process that loads the same file with nibabel, runs
DIPY's ``QuickBundles(T)`` (MDF, 12 points) and writes the labels as text. Both times include the
interpreter, the imports, reading, resampling, clustering and writing; one run each by default.

    python benchmarks/bench_cluster_process.py                      # 100k streamlines, 10 and 5 mm
    python benchmarks/bench_cluster_process.py --n 100000 1000000 --thresholds 10 5

The input: ``phantoms.brain_phantom`` (64^3 voxels of 2.5 mm) tracked by MRtrix3 ``tckgen -algorithm
iFOD2`` from seeds in the whole mask (``--base`` streamlines, default 1,000), copied until there are
``--n`` streamlines, every vertex of every copy shifted by Gaussian noise of ``--noise`` mm (0.8) per
axis (seeded; the copies follow each other: all streamlines once, then again). Our command runs
once untimed first, so the compiled code is in Numba's cache, as on a user's second run. Labels
must be identical (the adjusted Rand index is printed as well). Ratio = DIPY's time / ours (> 1: we
are faster). Saves benchmarks/results/cluster_process_<commit>_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from DiffTractographyLib.io import read_tck, write_tck  # noqa: E402
from DiffTractographyLib.phantoms import brain_phantom  # noqa: E402
from bench_clustering import adjusted_rand_index  # noqa: E402
from processes import DIFFTRACT, machine, median_of  # noqa: E402
from records import commit, save  # noqa: E402

DIPY_SCRIPT = """\
import sys
import nibabel as nib
import numpy as np
from dipy.segment.clustering import QuickBundles

streamlines = nib.streamlines.load(sys.argv[1]).streamlines
clusters = QuickBundles(float(sys.argv[2]), metric="MDF_12points").cluster(streamlines)
labels = np.full(len(streamlines), -1, dtype=np.int64)
for k, cluster in enumerate(clusters):
    labels[cluster.indices] = k
np.savetxt(sys.argv[3], labels, fmt="%d")
"""


def base_streamlines(folder: Path, count: int, threads: int) -> Path:
    """iFOD2 streamlines of the brain phantom (64^3, 2.5 mm), seeded in its whole mask."""
    coeffs, mask, affine = brain_phantom((64, 64, 64), 2.5)
    nib.save(nib.Nifti1Image(coeffs.numpy(), affine), folder / "fod.nii.gz")
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), folder / "mask.nii.gz")
    out = folder / "ifod2.tck"
    subprocess.run(["tckgen", folder / "fod.nii.gz", out, "-algorithm", "iFOD2", "-seed_image", folder / "mask.nii.gz",
                    "-mask", folder / "mask.nii.gz", "-select", str(count), "-nthreads", str(threads), "-quiet"],
                   check=True)
    return out


def noisy_copies(base: Path, out: Path, n: int, noise_mm: float, seed: int = 0) -> dict:
    """``n`` streamlines: copies of ``base``'s, every vertex shifted by N(0, noise_mm) per axis."""
    points, lengths = read_tck(base)
    rng = np.random.default_rng(seed)

    def chunks():
        left = n
        while left > 0:
            take = min(left, len(lengths))
            end = int(lengths[:take].sum())
            yield (points[:end] + rng.normal(0.0, noise_mm, (end, 3))).astype(np.float32), lengths[:take]
            left -= take

    write_tck(out, chunks())
    return {"base_streamlines": len(lengths), "mean_vertices": round(float(lengths.mean()), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, nargs="+", default=[100_000], help="streamline counts (default 100000)")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[10.0, 5.0], help="QuickBundles thresholds, mm")
    ap.add_argument("--base", type=int, default=1_000, help="iFOD2 streamlines tracked and copied (default 1000)")
    ap.add_argument("--noise", type=float, default=0.8, help="per-axis vertex noise of the copies, mm (default 0.8)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs of each command (median; default 1)")
    ap.add_argument("--threads", type=int, default=2, help="threads of our command (default 2; DIPY's is serial)")
    ap.add_argument("--workdir", type=Path, help="keep the tractograms here (default: a temporary folder)")
    args = ap.parse_args()
    if shutil.which("tckgen") is None:
        sys.exit("tckgen (MRtrix3) is needed: apt-get install mrtrix3")
    env = {"NUMBA_NUM_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
    record = {"benchmark": "cluster_process", "commit": commit(), **machine(), "threads": args.threads,
              "repeats": args.repeats, "noise_mm": args.noise, "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.workdir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        base = folder / "ifod2.tck"
        if not base.exists():
            base = base_streamlines(folder, args.base, args.threads)
        (folder / "dipy_quickbundles.py").write_text(DIPY_SCRIPT)
        for n in args.n:
            tck = folder / f"copies_{n}.tck"
            record["input"] = noisy_copies(base, tck, n, args.noise)
            ours_labels, dipy_labels = folder / "ours.txt", folder / "dipy.txt"
            for threshold in args.thresholds:
                ours_cmd = [*DIFFTRACT, "cluster", tck, "--threshold", str(threshold), "--labels-out", ours_labels,
                            "--quiet"]
                median_of(ours_cmd, 1, env=env)  # fills Numba's cache on a first run
                ours = median_of(ours_cmd, args.repeats, env=env)
                theirs = median_of([sys.executable, folder / "dipy_quickbundles.py", tck, str(threshold), dipy_labels],
                                   args.repeats, env=env)
                a, b = np.loadtxt(ours_labels, dtype=np.int64), np.loadtxt(dipy_labels, dtype=np.int64)
                row = {"n": n, "threshold_mm": threshold, "clusters": int(b.max()) + 1, "difftract": ours,
                       "dipy": theirs, "ratio": round(theirs["seconds"] / ours["seconds"], 2),
                       "identical": bool(np.array_equal(a, b)), "ari": round(adjusted_rand_index(a, b), 6)}
                record["rows"].append(row)
                print(f"n={n} threshold={threshold:g} mm clusters={row['clusters']} difftract={ours['seconds']:.2f} s "
                      f"({ours['peak_mb']:.0f} MB) dipy={theirs['seconds']:.2f} s ({theirs['peak_mb']:.0f} MB) "
                      f"ratio={row['ratio']} identical={row['identical']}", flush=True)
    print(json.dumps(record))
    save(record, f"cluster_process_{record['commit']}_cpu")


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
