"""Wall time of ``difftract batch`` over a generated BIDS dataset with 1 and 2 Dask workers, the
scaling efficiency, and a projection for N subjects on M workers (one GPU each) from the
measured per-subject cost.

    python benchmarks/bench_batch.py                 # 6 subjects (7 DWI series), workers 1 and 2
    python benchmarks/bench_batch.py --subjects 8 --workers 1 2 4 --save

Data: ``batch.phantom_dataset`` (18 x 18 x 14 voxels of 2 x 2 x 2.5 mm on oblique and x-flipped
grids, 30 directions at b = 1000, Rician noise; the last subject has two sessions). Each run is
``python -m DiffTractographyLib.cli batch DS OUT participant --workers W --lmax 6
--cluster-threshold 10`` in a fresh process into a fresh OUTPUT_DIR, timed from start to exit: it
includes indexing and checksums, the start of the LocalCluster and its workers (each imports torch
and loads the cached kernels), and the group table. The kernels are compiled before the first run.
A worker gets cores // W threads, so every run uses all the cores.

Measures, from the run with one worker (T1) and the participants' stage times in its sidecars:
per-subject cost c = mean over DWI series of fit + track + cluster seconds, fixed cost
s = T1 - (series x c); scaling efficiency of W workers = T1 / (W x T_W). Projection for N series on
M workers (GPU workers: c measured on the GPU): T(N, M) = s + ceil(N / M) x c.
One JSON record is printed last (``--save`` writes it to benchmarks/results/batch_<commit>_cpu.json).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from DiffTractographyLib.batch.phantom_dataset import DIRECTIONS, SHAPE, write_dataset  # noqa: E402
from records import commit, save  # noqa: E402

OPTIONS = ["--lmax", "6", "--cluster-threshold", "10"]


def run_batch(dataset: Path, out: Path, workers: int) -> float:
    """Seconds of one ``difftract batch`` participant run in a fresh process."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "DiffTractographyLib.cli", "batch", str(dataset), str(out), "participant",
                    "--workers", str(workers), *OPTIONS], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def stage_seconds(out: Path) -> list[dict]:
    """The stage times of every participant's sidecar."""
    return [json.loads(p.read_text())["summary"]["seconds"] for p in sorted(out.glob("sub-*/**/*_tractography.json"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=6, help="generated subjects (default 6; the last has 2 sessions)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per worker count (best kept)")
    parser.add_argument("--project", type=int, nargs=2, action="append", metavar=("N", "M"),
                        help="series and workers of a projection (default 100 4, 500 8, 1000 16)")
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    record = {"benchmark": "batch", "cpu_count": os.cpu_count(), "subjects": args.subjects,
              "grid": list(SHAPE), "directions": DIRECTIONS, "options": OPTIONS, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "ds"
        series = len(write_dataset(dataset, args.subjects))
        record["series"] = series
        subprocess.run([sys.executable, "-c", "from DiffTractographyLib.batch.cluster import compile_kernels; "
                        "from DiffTractographyLib.batch.graph import Options; compile_kernels(Options(), False)"],
                       check=True, cwd=ROOT)
        for workers in args.workers:
            best = None
            for _ in range(args.repeat):
                out = Path(tmp) / f"out{workers}"
                shutil.rmtree(out, ignore_errors=True)
                seconds = run_batch(dataset, out, workers)
                stages = stage_seconds(out)
                if len(stages) != series:
                    raise SystemExit(f"{len(stages)} of {series} participants finished with {workers} workers")
                if best is None or seconds < best["wall_s"]:
                    totals = {k: round(sum(s[k] for s in stages), 2) for k in stages[0]}
                    best = {"workers": workers, "threads_per_worker": max(1, os.cpu_count() // workers),
                            "wall_s": round(seconds, 2), "stage_s": totals,
                            "per_series_s": round(sum(totals.values()) / series, 2)}
            record["runs"].append(best)
            print("  ".join(f"{k}={v}" for k, v in best.items()), flush=True)
    one = next((r for r in record["runs"] if r["workers"] == 1), None)
    if one is not None:
        c = one["per_series_s"]
        s = round(one["wall_s"] - series * c, 2)
        for run in record["runs"]:
            run["scaling_efficiency"] = round(one["wall_s"] / (run["workers"] * run["wall_s"]), 3)
        cases = args.project or [(100, 4), (500, 8), (1000, 16)]
        record["projection"] = {
            "formula": "T(N, M) = s + ceil(N / M) * c", "c_per_series_s": c, "s_fixed_s": s,
            "note": "c measured on one CPU worker here; on GPU workers use c measured there",
            "cases": [{"series": n, "workers": m, "hours": round((s + math.ceil(n / m) * c) / 3600, 3)}
                      for n, m in cases]}
    record["commit"] = commit()
    print(json.dumps(record))
    if args.save:
        save(record, f"batch_{record['commit']}_cpu")


if __name__ == "__main__":
    main()
