#!/usr/bin/env bash
# The GPU check, in one run on a machine with an NVIDIA GPU: compile every CUDA kernel (in parallel;
# numba-cuda caches them on disk for the steps after), run the CUDA tests, then benchmarks/gpu.py
# (ours against cuslines on the same seeds and field). Each step has its own time limit and log, so a
# failing step leaves the others' results.
#
#   benchmarks/gpu_check.sh OUT [WHEELS] [STEPS]
#
# OUT receives env.log, warm.log, tests.log, bench.log and gpu.json. WHEELS: a folder of wheels to
# install first (a machine without network: nibabel, dipy, trx-python, numba-cuda, cuslines, cuda-cccl
# for its Python); they go to /tmp/site, ahead of the machine's own packages. STEPS: the steps to run
# (default "env warm tests bench": up to 11 minutes if every step runs to its limit). Under a 10-minute
# limit per command, run "env warm" (compiling, up to 6 minutes) and then "tests bench" on the same
# machine while it is still held (the kernel caches stay on its disk).
set -u
OUT=${1:?usage: gpu_check.sh OUT [WHEELS] [STEPS]}
WHEELS=${2:-}
STEPS=" ${3:-env warm tests bench} "
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
rm -rf /tmp/site
if [ -n "$WHEELS" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
    > "$OUT/install.log" 2>&1 || { echo "wheel install failed"; tail -5 "$OUT/install.log"; }
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
# numba-cuda up to 0.30 registers np.row_stack, which numpy 2.5 removed
mkdir -p /tmp/site && echo 'import numpy; numpy.row_stack = numpy.vstack if not hasattr(numpy, "row_stack") else numpy.row_stack' \
  > /tmp/site/sitecustomize.py && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
export PYTHONPATH=$PWD:$PWD/Testing:${PYTHONPATH:-}

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to OUT/NAME.log, print its tail
  local name=$1 limit=$2; shift 2
  [[ $STEPS == *" $name "* ]] || return 0
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - start)) s"
  tail -n 25 "$OUT/$name.log"
}

step env 60 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "
import sys, torch, numpy, numba
print(sys.version.split()[0], \"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"numpy\", numpy.__version__, \"numba\", numba.__version__)
from importlib.metadata import version
for p in (\"numba-cuda\", \"dipy\", \"cuslines\", \"cuda-cccl\", \"cuda-bindings\", \"cuda-core\"):
    try: print(p, version(p))
    except Exception as e: print(p, \"missing\")
from DiffTractographyLib.tracking.kernels.availability import cuda_status
print(\"kernels on CUDA:\", cuda_status())
"'

# one process per algorithm, precision and device (13 at once on the GPU machine's 16 cores), forward and
# backward, compiled and cached: a pmf kernel's NVVM compile alone takes ~85 s (forward) and ~50 s
# (backward) on a 2.6 GHz core
warm() {  # warm ALGORITHM PRECISION DEVICE
  python3 - "$1" "$2" "$3" <<'EOF'
import sys, time
import numpy as np, torch
from DiffTractographyLib import SHField, Tracker
from DiffTractographyLib.phantoms import brain_phantom
algorithm, precision, device = sys.argv[1:]
started = time.perf_counter()
coeffs, mask, affine = brain_phantom((24, 24, 18))
seeds = np.argwhere(mask)[:64] @ affine[:3, :3].T + affine[:3, 3]
data = torch.as_tensor(coeffs, dtype=torch.float64 if precision == "float64" else torch.float32).to(device)
data.requires_grad_(True)
field = SHField(data, affine, "tournier07")
tracker = Tracker(field, mask=mask, algorithm=algorithm, device=device, precision=precision, step_size=0.75)
tracker(seeds).points.square().sum().backward()
print(f"{algorithm} {precision} {device}: compiled in {time.perf_counter() - started:.0f} s")
EOF
}
warm_fidelity() {  # the kernel fidelity cases of Testing/unit/test_kernels.py, on both devices
  PYTHONPATH=$PWD/Testing/unit:$PYTHONPATH python3 -c "
from test_kernels import simulator_cases
for device in ('cuda', 'cpu'):
    for tracker, seeds in simulator_cases(device=device).values():
        tracker(seeds[:20])
print('fidelity cases compiled')"
}
export -f warm warm_fidelity
step warm 300 bash -c 'for a in sdstream detmax prob; do for p in float32 float64; do for d in cuda cpu; do
  warm $a $p $d & done; done; done; warm_fidelity & wait'

step tests 120 python3 -m pytest -q -p no:cacheprovider Testing/gpu
step bench 200 python3 benchmarks/gpu.py --reference --dipy-seeds 0 --max-seconds 20 --out "$OUT/gpu.json"
