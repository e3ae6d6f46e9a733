"""Timing whole processes, as a user times a command: wall time and peak resident memory of one
child process (``os.wait4``), and the median of repeated runs."""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the project's command line run as a user runs it (the venv's interpreter, the package in place)
DIFFTRACT = [sys.executable, "-m", "DiffTractographyLib.cli"]


def run(command: list[str], env: dict | None = None, cwd=None) -> dict:
    """Run ``command`` to completion: {"seconds": wall time, "peak_mb": its maximum resident set}.
    The command runs under GNU time (``/usr/bin/time -f %M``): the peak of a child forked from this
    (large) process would count the parent's pages until its exec. A failing command raises."""
    with tempfile.NamedTemporaryFile(mode="r", suffix=".rss") as rss:
        started = time.perf_counter()
        done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *map(str, command)], cwd=cwd,
                              env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{done.stderr.decode(errors='replace')[-2000:]}")
        peak_kb = float(rss.read().strip().splitlines()[-1])
    return {"seconds": round(seconds, 3), "peak_mb": round(peak_kb / 1024, 1)}


def median_of(command: list[str], repeats: int, env: dict | None = None, cwd=None) -> dict:
    """``run`` ``repeats`` times: the median seconds and peak memory, and every run's seconds."""
    runs = [run(command, env, cwd) for _ in range(repeats)]
    return {"seconds": statistics.median(r["seconds"] for r in runs),
            "peak_mb": statistics.median(r["peak_mb"] for r in runs), "runs": [r["seconds"] for r in runs]}


def tck_count(path) -> int:
    """Streamlines in a .tck file (its header's count)."""
    with open(path, "rb") as f:
        for line in f.read(4096).split(b"\n"):
            if line.startswith(b"count:"):
                return int(line.split(b":")[1])
    raise ValueError(f"{path}: no count in the header")


def machine() -> dict:
    """The CPU and core count the numbers were measured on."""
    cpu = ""
    if Path("/proc/cpuinfo").exists():
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    return {"cpu": cpu, "cores": os.cpu_count()}
