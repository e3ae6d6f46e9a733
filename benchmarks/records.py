"""What every benchmark records: the commit it measured and its JSON file in benchmarks/results/; and
the thread count an in-process benchmark runs with."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def set_threads(n: int) -> None:
    """Run this process's numba kernels (within numba's pool) and torch operations on ``n`` threads."""
    import numba
    import torch

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    torch.set_num_threads(n)


def commit() -> str:
    """Short hash of the checkout's HEAD ('' outside a git checkout)."""
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()


def save(record: dict, name: str, path: str | Path | None = None) -> Path:
    """Write ``record`` as indented JSON to ``path``, default ``RESULTS / <name>.json``."""
    out = Path(path) if path else RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=1) + "\n")
    return out
