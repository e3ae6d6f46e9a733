"""Whether the CUDA kernels can run here, found out without importing numba-cuda when there is no
GPU driver (so that ``device="auto"`` costs nothing on a CPU-only machine)."""
from __future__ import annotations

import ctypes.util
import os
from functools import lru_cache

#: numba-cuda's simulator runs the CUDA kernels on the CPU (how CI checks them)
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


@lru_cache(maxsize=None)
def cuda_status() -> tuple[bool, str]:
    """(ready, why not): a CUDA GPU with its driver, and NVVM (numba-cuda's compiler back end)."""
    if SIMULATOR:
        return True, "the numba-cuda simulator"
    if ctypes.util.find_library("cuda") is None and not os.path.exists("/usr/lib/wsl/lib/libcuda.so.1"):
        return False, "no CUDA driver is installed"
    try:
        from numba import cuda
    except ImportError as exc:
        return False, f"the CUDA toolchain the kernels need is missing (numba-cuda: {exc})"
    try:
        if not cuda.is_available():
            return False, "no CUDA GPU is available"
        from numba.cuda.cudadrv.nvvm import NVVM

        NVVM()
    except Exception as exc:  # noqa: BLE001 - any failure of the toolchain is reported in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return False, f"the CUDA toolchain the kernels need is missing ({first}); pip install numba-cuda[cu12]"
    return True, ""


