"""Every CUDA kernel compiles for a GPU (PTX for sm_90) on a machine without one, with the argument
types a real launch gives it: the simulator (``test_kernels``) runs the kernels' logic as Python,
so it cannot see what numba-cuda refuses to type or lower. The types come from launches recorded
under the simulator, the PTX from NVVM (``numba-cuda[cu12]``, no GPU needed). Minutes of compiling, so
only with --runslow; skipped where numba-cuda cannot compile PTX."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cuda_ptx
from numba import float64, void

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

#: under the simulator: the launches of every method family in both precisions (``simulator_cases``:
#: SD_Stream Euler and RK4, Tensor_Det, detmax and prob from seeds without directions), forward and
#: backward; each kernel's name and numba argument types pickled to argv[1]
RECORD = r"""
import pickle, sys
import numba
sys.path[:0] = sys.argv[2:]
from DiffTractographyLib.tracking.kernels import cuda
from test_kernels import replayed, simulator_cases

launches = set()

class Recorded:
    def __init__(self, kernel, key):
        self.kernel, self.key = kernel, key

    def __getitem__(self, config):
        def launch(*args):
            launches.add((self.key, tuple(numba.typeof(a) for a in args)))
            return self.kernel[config](*args)
        return launch

def recording(factory):
    def make(*key):
        made = factory(*key)
        if isinstance(made, tuple):
            return tuple(Recorded(k, (factory.__name__, i, *key)) for i, k in enumerate(made))
        return Recorded(made, (factory.__name__, 0, *key))
    return make

for name in ("_kernels", "_replay_kernel", "_gather_kernel"):
    setattr(cuda, name, recording(getattr(cuda, name)))
for precision in ("float32", "float64"):
    for tracker, seeds in simulator_cases(device="cuda", precision=precision).values():
        replayed(tracker, seeds[:4])
pickle.dump(sorted(launches, key=str), open(sys.argv[1], "wb"))
"""

#: without the simulator: each recorded launch compiled to PTX for sm_90 and, where ptxas is at hand
#: (numba-cuda[cu12] brings it), assembled for sm_90 with its resource report (registers and stack
#: per thread); prints one JSON line per launch. The device functions a kernel calls ask numba-cuda
#: for the current GPU's compute capability, which a machine without one answers with sm_90's.
COMPILE = r"""
import json, os, pickle, re, shutil, subprocess, sys, tempfile, types
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

def ptxas():
    try:
        import nvidia.cuda_nvcc
        found = Path(nvidia.cuda_nvcc.__path__[0]) / "bin" / "ptxas"
        if found.exists():
            return str(found)
    except ImportError:
        pass
    return shutil.which("ptxas")

PTXAS = ptxas()

def resources(ptx):
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "kernel.ptx"
        source.write_text(ptx)
        run = subprocess.run([PTXAS, "-arch=sm_90", "-v", str(source), "-o", os.devnull], capture_output=True,
                             text=True)
    report = run.stdout + run.stderr
    if run.returncode:
        return {"error": "ptxas: " + report[-2000:]}
    used = re.search(r"Used (\d+) registers(?:.*?(\d+) bytes cumulative stack size)?", report)  # the kernel's line
    return {"registers": int(used[1]), "stack": int(used[2] or 0)}

def compiled(launch):
    from numba import cuda
    import numba.cuda.dispatcher as dispatcher
    from DiffTractographyLib.tracking.kernels import cuda as kernels
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
    (factory, index, *key), signature = launch
    made = getattr(kernels, factory)(*key)
    kernel = made[index] if isinstance(made, tuple) else made
    try:
        ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
        return {"kernel": [factory, *key], "ptx": len(ptx), "threads": kernels.THREADS_PER_BLOCK,
                **(resources(ptx) if PTXAS else {})}
    except Exception as exc:
        return {"kernel": [factory, *key], "error": f"{type(exc).__name__}: {str(exc)[-2000:]}"}

if __name__ == "__main__":
    sys.path.insert(0, sys.argv[2])
    with ProcessPoolExecutor(2) as pool:
        for result in pool.map(compiled, pickle.load(open(sys.argv[1], "rb"))):
            print(json.dumps(result), flush=True)
"""


def _store_one(x):
    x[0] = 1.0


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or cuda_ptx(_store_one, void(float64[::1])) is None,
                    reason="numba-cuda cannot compile PTX here (pip install numba-cuda[cu12])")
def test_every_cuda_kernel_compiles_for_a_gpu(tmp_path):
    launches = tmp_path / "launches.pkl"
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    run = subprocess.run([sys.executable, "-c", RECORD, str(launches), str(HERE), str(HERE.parent), str(ROOT)],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    script = tmp_path / "compile.py"
    script.write_text(COMPILE)
    run = subprocess.run([sys.executable, str(script), str(launches), str(ROOT)], env=env, capture_output=True,
                         text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    results = [json.loads(line) for line in run.stdout.splitlines()]
    failed = [f"{r['kernel']}: {r['error']}" for r in results if "error" in r]
    assert not failed, "\n".join(failed)
    kernels = {tuple(r["kernel"]) for r in results}
    assert kernels == {("_gather_kernel",)} | {(name, precision, family) for name in ("_kernels", "_replay_kernel")
                                                for family in ("sdstream", "tensordet", "pmf")
                                                for precision in ("float32", "float64")}
    # what a launch asks of an sm_90 multiprocessor: at most 64K registers a block, 512 KB of stack a thread
    heavy = [f"{r['kernel']}: {r['registers']} registers x {r['threads']} threads, {r['stack']} B of stack"
             for r in results if "registers" in r and (r["registers"] * r["threads"] > 65536 or r["stack"] > 512 << 10)]
    assert not heavy, "\n".join(heavy)
