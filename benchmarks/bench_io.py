"""Tractogram I/O at disk speed (issue 14): .tck read and write of a large tractogram in memory,
the other formats' save and load, and ``difftract select --min-length`` against ``tckedit
-minlength`` as whole processes on the same file.

    python benchmarks/bench_io.py                    # 1M-streamline .tck (~100M points), 300k for select
    python benchmarks/bench_io.py --large 200000 --select 100000 --formats 20000 --repeats 2 --save

Streamlines are generated in code (straight 0.5 mm steps with a little jitter, vertex counts uniform
in [2, 2 x mean - 2]) and written without a step size, so tckedit applies no length margin and both
tools must keep the same streamlines (checked: the outputs' points are compared). File reads are
timed with the file in the page cache (it was just written). In-process times are the best of
--repeats; whole processes (``benchmarks/processes.py``) the median. The machine's load average is
recorded: on a shared machine the numbers drift. One JSON record is printed last (``--save``:
benchmarks/results/io_<commit>_cpu.json).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from DiffTractographyLib.io import read_tck, write_tck  # noqa: E402
from processes import DIFFTRACT, machine, median_of  # noqa: E402
from records import commit, save  # noqa: E402


def generated(n: int, mean_points: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n streamlines (points (P, 3) float32 RAS mm, vertex counts (n,)): straight 0.5 mm steps from
    random origins in random directions, with 0.05 mm jitter; built in blocks to bound memory."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 2 * mean_points - 1, n)
    points = np.empty((int(lengths.sum()), 3), dtype=np.float32)
    first = 0
    for block in np.array_split(np.arange(n), max(1, n // 50000)):
        counts = lengths[block]
        k = np.arange(counts.sum(), dtype=np.float32) - np.repeat(np.cumsum(counts) - counts, counts).astype(np.float32)
        direction = rng.normal(size=(len(block), 3)).astype(np.float32)
        direction *= 0.5 / np.linalg.norm(direction, axis=1, keepdims=True)
        origin = rng.uniform(-60, 60, (len(block), 3)).astype(np.float32)
        part = points[first:first + len(k)]
        part[:] = np.repeat(origin, counts, axis=0)
        part += k[:, None] * np.repeat(direction, counts, axis=0)
        part += rng.standard_normal(part.shape, dtype=np.float32) * np.float32(0.05)
        first += len(k)
    return points, lengths


def best_of(repeats: int, fn):
    """(the last result, the best wall time in s) of ``repeats`` calls."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, round(best, 3)


def tck_section(folder: Path, n: int, mean_points: int, repeats: int) -> dict:
    points, lengths = generated(n, mean_points)
    path = folder / "large.tck"
    _, write_s = best_of(repeats, lambda: write_tck(path, [(points, lengths)]))
    (back, back_lengths), read_s = best_of(repeats, lambda: read_tck(path))
    assert np.array_equal(back_lengths, lengths) and np.array_equal(back, points)
    row = {"streamlines": n, "points": len(points), "file_mb": round(path.stat().st_size / 2**20, 1),
           "write_s": write_s, "read_s": read_s}
    print("tck", json.dumps(row), flush=True)
    return row


def formats_section(folder: Path, n: int, mean_points: int, formats: list[str], repeats: int) -> list[dict]:
    import torch

    from DiffTractographyLib import Tractogram, load_tractogram, save_tractogram

    points, lengths = generated(n, mean_points, seed=1)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tractogram = Tractogram(torch.from_numpy(points), torch.from_numpy(offsets), np.diag([2.0, 2.0, 2.0, 1.0]), (80, 96, 80),
                            {"seed_index": torch.arange(n)})
    rows = []
    for ext in formats:
        path = folder / f"formats{ext}"
        _, save_s = best_of(repeats, lambda: save_tractogram(tractogram, path))
        back, load_s = best_of(repeats, lambda: load_tractogram(path))
        assert back.lengths.tolist() == lengths.tolist()
        row = {"format": ext, "streamlines": n, "points": len(points), "file_mb": round(path.stat().st_size / 2**20, 1),
               "save_s": save_s, "load_s": load_s}
        print("format", json.dumps(row), flush=True)
        rows.append(row)
        path.unlink()
    return rows


def select_input(folder: Path, n: int, mean_points: int) -> Path:
    source = folder / "select_in.tck"
    write_tck(source, [generated(n, mean_points, seed=2)])
    return source


def select_section(source: Path, n: int, min_length: float, repeats: int) -> dict:
    folder = source.parent
    ours_out, theirs_out = folder / "ours.tck", folder / "theirs.tck"
    ours = median_of([*DIFFTRACT, "select", source, "--min-length", str(min_length), "--out", ours_out, "--force", "--quiet"],
                     repeats)
    row = {"streamlines": n, "min_length_mm": min_length, "difftract_s": ours["seconds"], "difftract_runs": ours["runs"],
           "difftract_peak_mb": ours["peak_mb"]}
    if shutil.which("tckedit"):
        theirs = median_of(["tckedit", "-quiet", "-force", "-minlength", str(min_length), source, theirs_out], repeats)
        a, b = read_tck(ours_out), read_tck(theirs_out)
        row.update(tckedit_s=theirs["seconds"], tckedit_runs=theirs["runs"], tckedit_peak_mb=theirs["peak_mb"],
                   ratio=round(ours["seconds"] / theirs["seconds"], 2), kept=len(a[1]),
                   same_output=bool(np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0])))
    print("select", json.dumps(row), flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--large", type=int, default=1_000_000, help="streamlines of the .tck read/write test (default 1M)")
    p.add_argument("--large-mean", type=int, default=100, help="mean vertices per streamline there (default 100)")
    p.add_argument("--select", type=int, default=300_000, help="streamlines of the select test (default 300k)")
    p.add_argument("--select-mean", type=int, default=60, help="mean vertices per streamline there (default 60)")
    p.add_argument("--min-length", type=float, nargs="+", default=[1.0, 20.0], help="select's length limits (mm)")
    p.add_argument("--formats", type=int, default=100_000, help="streamlines of the .trk/.trx/.vtk/.vtp test (0: skip)")
    p.add_argument("--format-list", nargs="+", default=[".tck", ".trk", ".trx", ".vtk", ".vtp"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=None, help="folder for the files (default: a temporary one)")
    p.add_argument("--save", action="store_true", help="write benchmarks/results/io_<commit>_cpu.json")
    args = p.parse_args()

    record = {"benchmark": "io", "commit": commit(), **machine(), "load_average_start": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        folder = Path(tmp)
        record["tck"] = tck_section(folder, args.large, args.large_mean, args.repeats)
        (folder / "large.tck").unlink()
        source = select_input(folder, args.select, args.select_mean)
        record["select"] = [select_section(source, args.select, m, args.repeats) for m in args.min_length]
        source.unlink()
        if args.formats:
            record["formats"] = formats_section(folder, args.formats, args.select_mean, args.format_list, args.repeats)
    record["load_average_end"] = os.getloadavg()[0]
    print(json.dumps(record))
    if args.save:
        save(record, f"io_{record['commit']}_cpu")


if __name__ == "__main__":
    main()
