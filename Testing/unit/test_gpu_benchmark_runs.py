"""benchmarks/gpu.py is only measured on a GPU machine: here it must at least run end to end on the
device at hand, with tiny sizes, and write its JSON record."""
import json
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


def test_gpu_benchmark_runs_and_records(tmp_path):
    out = tmp_path / "gpu.json"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", device, "--shape", "20", "20", "14",
                           "--seeds", "200", "--backward-seeds", "50", "--dipy-seeds", "20", "--reference",
                           "--no-cuslines", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    runs = [r for r in record["runs"] if r["tool"] == "ours"]
    assert {(r["algorithm"], r["mode"]) for r in runs} == {(a, m) for a in ("sdstream", "detmax", "prob")
                                                          for m in ("forward", "forward+backward")}
    assert all(r["streamlines"] > 0 and r["seconds"] > 0 for r in runs)
    assert any(r["tool"] == "dipy-cpu" for r in record["runs"])
