"""The CUDA entry points: one thread per row, from the same algorithm source as the CPU kernels
(numba-cuda compiles the ``njit`` functions a kernel calls for the GPU). Work arrays are per-thread
local memory. Under numba-cuda's simulator (``NUMBA_ENABLE_CUDASIM=1``) the same kernels run on the
CPU, which is how CI checks their logic without a GPU.

Arrays reach the kernels inside namedtuples: the field, method tables and regions are copied to the
GPU once per tracker (``to_device``), the rows of a chunk once per call.
"""
from __future__ import annotations

import math
from collections import namedtuple
from functools import lru_cache

import numpy as np
from numba import cuda, types
from numba.extending import overload, register_jitable

from .availability import SIMULATOR
from .common import Scratch, make_consts
from .pmf import PmfData, seed_peaks
from .replay import Adjoint, buffers, deposit, replay_row_half
from .rows import track_row
from .sdstream import SDStreamData

THREADS_PER_BLOCK = 64


def _compile_without_fma() -> None:
    """NVVM contracts ``a * b + c`` into fused multiply-adds unless told not to, which rounds
    differently from the CPU kernels (and from MRtrix3 and DIPY on x86-64): our kernels are compiled
    with ``-fma=0`` (numba-cuda has no per-kernel switch for it; ``fastmath`` compilations keep FMA)."""
    from numba.cuda.cudadrv import nvvm

    compile_ir = nvvm.compile_ir
    if getattr(compile_ir, "without_fma", False):
        return

    def without_fma(llvmir, **options):
        if not options.get("fastmath"):
            options.setdefault("fma", False)
        return compile_ir(llvmir, **options)

    without_fma.without_fma = True
    nvvm.compile_ir = without_fma


if not SIMULATOR:
    _compile_without_fma()
#: per-thread local work arrays of each method family (``Scratch`` c, a, b, q, d, w): the largest
#: inputs served (SH up to lmax 12, 512 DWI volumes, spheres of 1024 vertices)
LIMITS = {"sdstream": (96, 64, 64, 256, 1, 1), "tensordet": (512, 8, 512, 1, 18, 1),
          "pmf": (96, 1024, 1024, 1, 1024, 1024)}
#: the backward's float64 work arrays (``replay.Adjoint`` c, a, b, d) for the same inputs
ADJOINT_LIMITS = {"sdstream": (96, 192, 192, 1), "tensordet": (512, 512, 7, 18), "pmf": (96, 1024, 1024, 1024)}

#: the arrays of one call: inputs (seeds, starts, seed ids, peaks) and outputs (slots, bounds, status,
#: fate, each half's start direction)
Rows = namedtuple("Rows", "seeds starts seed_ids peaks slots bounds status fate half_starts")
#: the arrays of a peak search: seeds in, peak vertices and counts out
Peaks = namedtuple("Peaks", "seeds out counts")
#: the backward's sink on the GPU: each step's corner weights (8,) and c_bar (C,) in per-thread
#: arrays, added at once to the gradient ``out`` (X Y Z, C) with atomic additions
Deposit = namedtuple("Deposit", "out ny nz weights cbar")
#: the backward's cotangents: the points' in (P, 3), each half's contribution to its seed (S, 2, 3)
#: and the sampled volume's (X Y Z, C) out
Cotangents = namedtuple("Cotangents", "points seed_halves volume")

if SIMULATOR:  # the simulator runs the kernels' njit code on the CPU; ``replay`` runs one thread at a time
    @register_jitable
    def _add(out, row, ch, value):
        out[row, ch] += value
else:
    @register_jitable
    def _add(out, row, ch, value):
        cuda.atomic.add(out, (row, ch), value)


@overload(buffers)
def _buffers(sink, at):
    if isinstance(sink, types.BaseNamedTuple) and sink.instance_class is Deposit:
        return lambda sink, at: (sink.cbar, sink.weights)


@overload(deposit)
def _deposit(sink, at, cell):
    if isinstance(sink, types.BaseNamedTuple) and sink.instance_class is Deposit:
        def impl(sink, at, cell):
            if cell < 0:
                return
            ny, nz = sink.ny, sink.nz
            i0, j0, k0 = cell // (ny * nz), (cell // nz) % ny, cell % nz
            for corner in range(8):
                w = sink.weights[corner]
                if w == 0.0:
                    continue
                row = ((i0 + (corner & 1)) * ny + j0 + ((corner >> 1) & 1)) * nz + k0 + ((corner >> 2) & 1)
                for ch in range(sink.out.shape[1]):
                    _add(sink.out, row, ch, w * sink.cbar[ch])
        return impl


def family(M) -> str:
    return "sdstream" if isinstance(M, SDStreamData) else "pmf" if isinstance(M, PmfData) else "tensordet"


@lru_cache(maxsize=None)
def _kernels(dtype: str, kind: str):
    """The track and peak kernels of one working precision and method family, compiled on first use."""
    from numba import float32, float64

    f = float32 if dtype == "float32" else float64
    nc, na, nb, nq, nd, nw = LIMITS[kind]

    K = make_consts(np.float32 if dtype == "float32" else np.float64)  # a constant: a type cannot be an argument

    @cuda.jit(cache=not SIMULATOR)
    def track(M, vol, R, P, sizes, rows):
        r = cuda.grid(1)
        if r >= rows.seeds.shape[0]:
            return
        S = Scratch(cuda.local.array(nc, f)[:sizes[0]], cuda.local.array(na, f)[:sizes[1]],
                    cuda.local.array(nb, f)[:sizes[2]], cuda.local.array(nq, f)[:sizes[3]],
                    cuda.local.array(nd, float64)[:sizes[4]], cuda.local.array(nw, float32)[:sizes[5]])
        s = rows.seeds
        d = rows.starts
        begin, end, s1, s2, fate = track_row(M, K, S, vol, R, P, s[r, 0], s[r, 1], s[r, 2], d[r, 0], d[r, 1], d[r, 2],
                                             rows.seed_ids[r], rows.peaks[r], rows.slots[r], rows.half_starts[r])
        rows.bounds[r, 0] = begin
        rows.bounds[r, 1] = end
        rows.status[r, 0] = s1
        rows.status[r, 1] = s2
        rows.fate[r] = fate

    @cuda.jit(cache=not SIMULATOR)
    def peaks(M, vol, sizes, io):
        r = cuda.grid(1)
        if r >= io.seeds.shape[0]:
            return
        S = Scratch(cuda.local.array(nc, f)[:sizes[0]], cuda.local.array(na, f)[:sizes[1]],
                    cuda.local.array(nb, f)[:sizes[2]], cuda.local.array(nq, f)[:sizes[3]],
                    cuda.local.array(nd, float64)[:sizes[4]], cuda.local.array(nw, float32)[:sizes[5]])
        s = io.seeds
        io.counts[r] = seed_peaks(M, K, S, vol, s[r, 0], s[r, 1], s[r, 2], io.out[r])

    return track, peaks


@lru_cache(maxsize=None)
def _replay_kernel(dtype: str, kind: str):
    """The backward kernel of one working precision and method family: one thread per half-streamline."""
    from numba import float32, float64

    f = float32 if dtype == "float32" else float64
    nc, na, nb, nq, nd, nw = LIMITS[kind]
    ac, aa, ab, ad = ADJOINT_LIMITS[kind]
    K = make_consts(np.float32 if dtype == "float32" else np.float64)
    KB = make_consts(np.float64)

    @cuda.jit(cache=not SIMULATOR)
    def replay(M, MB, vol, P, sizes, adjoint_sizes, run, io):
        t = cuda.grid(1)
        if t >= 2 * run.lengths.shape[0]:
            return
        S = Scratch(cuda.local.array(nc, f)[:sizes[0]], cuda.local.array(na, f)[:sizes[1]],
                    cuda.local.array(nb, f)[:sizes[2]], cuda.local.array(nq, f)[:sizes[3]],
                    cuda.local.array(nd, float64)[:sizes[4]], cuda.local.array(nw, float32)[:sizes[5]])
        W = Adjoint(cuda.local.array(ac, float64)[:adjoint_sizes[0]], cuda.local.array(aa, float64)[:adjoint_sizes[1]],
                    cuda.local.array(ab, float64)[:adjoint_sizes[2]], cuda.local.array(ad, float64)[:adjoint_sizes[3]])
        sink = Deposit(io.volume, vol.dims[1], vol.dims[2], cuda.local.array(8, float64),
                       cuda.local.array(ac, float64)[:adjoint_sizes[0]])
        r, half = t // 2, t % 2
        gx, gy, gz = replay_row_half(M, K, S, MB, KB, W, None, vol, P, run, r, half, io.points, sink, 0)
        io.seed_halves[r, half, 0] = gx
        io.seed_halves[r, half, 1] = gy
        io.seed_halves[r, half, 2] = gz

    return replay


@lru_cache(maxsize=None)
def _gather_kernel():
    @cuda.jit(cache=not SIMULATOR)
    def gather(slots, bounds, keep, offsets, points):
        i = cuda.grid(1)
        if i >= keep.shape[0]:
            return
        r = keep[i]
        at = offsets[i]
        for j in range(bounds[r, 1] - bounds[r, 0]):
            for k in range(3):
                points[at + j, k] = slots[r, bounds[r, 0] + j, k]

    return gather


def _check_sizes(M, sizes, table=LIMITS, what: str = "kernels") -> None:
    """A one-line error when the work arrays ``sizes`` exceed the per-thread ``table`` of M's family."""
    limits = table[family(M)]
    if any(int(s) > lim for s, lim in zip(sizes, limits)):
        raise ValueError(f"the CUDA {what} hold at most {limits} work values per thread for {family(M)} "
                         f"(this input needs {[int(s) for s in sizes]}); track on the CPU")


def to_device(t):
    """A namedtuple with its (contiguous) arrays on the GPU. Under the simulator the arrays stay,
    checked against what a real launch accepts."""
    if SIMULATOR:
        return _launchable(t)
    return type(t)(*(cuda.to_device(x) if isinstance(x, np.ndarray) else x for x in t))


def _launchable(t):
    """``t`` unchanged, after the checks a real kernel launch makes and the simulator does not: no
    type objects (e.g. a dtype as a value) and only contiguous arrays among a tuple's members."""
    for name, x in zip(getattr(t, "_fields", range(len(t))), t):
        if isinstance(x, type):
            raise TypeError(f"{type(t).__name__}.{name} is a type: a CUDA kernel cannot take it as an argument")
        if isinstance(x, np.ndarray) and not (x.flags.c_contiguous or x.flags.f_contiguous):
            raise ValueError(f"{type(t).__name__}.{name} is not contiguous: it cannot be copied to the GPU at once")
        if isinstance(x, tuple):
            _launchable(x)
    return t


def _blocks(n: int) -> int:
    return max(1, math.ceil(n / THREADS_PER_BLOCK))


def track_rows(M, K, vol, R, P, sizes, seeds, starts, seed_ids, peaks, slots, bounds, status, fate, half_starts):
    """``cpu.track_rows`` on the GPU (same arguments; ``M``, ``vol``, ``R`` already ``to_device``).
    Returns the slots, left on the GPU for ``gather``; bounds, status and fate are copied back."""
    _check_sizes(M, sizes)
    track = _kernels(seeds.dtype.name, family(M))[0]
    if SIMULATOR:
        rows = _launchable(Rows(seeds, starts, seed_ids, peaks, slots, bounds, status, fate, half_starts))
        _launchable((M, vol, R, P))
    else:
        from numba import cuda

        rows = to_device(Rows(seeds, starts, seed_ids, peaks, None, bounds, status, fate, half_starts))
        rows = rows._replace(slots=cuda.device_array(slots.shape, dtype=slots.dtype))
    track[_blocks(len(seeds)), THREADS_PER_BLOCK](M, vol, R, P, sizes, rows)
    if not SIMULATOR:
        rows.bounds.copy_to_host(bounds)
        rows.status.copy_to_host(status)
        rows.fate.copy_to_host(fate)
        rows.half_starts.copy_to_host(half_starts)
    return rows.slots


def peaks_at_seeds(M, K, vol, sizes, seeds, out, counts):
    """``cpu.peaks_at_seeds`` on the GPU."""
    _check_sizes(M, sizes)
    kernel = _kernels(seeds.dtype.name, family(M))[1]
    io = to_device(Peaks(seeds, out, counts))
    kernel[_blocks(len(seeds)), THREADS_PER_BLOCK](M, vol, sizes, io)
    if not SIMULATOR:
        io.out.copy_to_host(out)
        io.counts.copy_to_host(counts)


def replay(M, K, vol, MB, KB, P, sizes, adjoint_sizes, run, grad, shape):
    """``replay.replay_rows`` for every streamline of ``run`` (``replay.Run``, host arrays) at once on
    the GPU, for the points' cotangents ``grad`` ((P, 3) float64 torch tensor, on the GPU or, under
    the simulator, the CPU). Returns each half's contribution to its seed (S, 2, 3) (host) and the
    gradient of the sampled volume ``shape`` (X Y Z, C) float64 (a CUDA tensor; numpy under the
    simulator)."""
    _check_sizes(M, adjoint_sizes, ADJOINT_LIMITS, "backward kernels")
    kernel = _replay_kernel(run.points.dtype.name, family(M))
    if SIMULATOR:
        halves, out = np.zeros((len(run.lengths), 2, 3)), np.zeros(shape)
        if len(run.lengths):  # blocks of one thread: the simulator runs blocks one after another
            kernel[2 * len(run.lengths), 1](M, MB, vol, P, sizes, adjoint_sizes, to_device(run),
                                            Cotangents(grad.cpu().numpy(), halves, out))
        return halves, out
    import torch

    halves = torch.zeros((len(run.lengths), 2, 3), dtype=torch.float64, device=grad.device)
    out = torch.zeros(shape, dtype=torch.float64, device=grad.device)
    if len(run.lengths):
        io = Cotangents(cuda.as_cuda_array(grad), cuda.as_cuda_array(halves), cuda.as_cuda_array(out))
        kernel[_blocks(2 * len(run.lengths)), THREADS_PER_BLOCK](M, MB, vol, P, sizes, adjoint_sizes,
                                                                 to_device(run), io)
    return halves.cpu().numpy(), out


def gather(slots, bounds, keep, offsets, points):
    """Compact the kept rows of the (device) ``slots`` into ``points`` (host)."""
    kernel = _gather_kernel()
    if SIMULATOR:
        kernel[_blocks(len(keep)), THREADS_PER_BLOCK](slots, bounds, keep, offsets, points)
        return
    device_points = cuda.device_array(points.shape, dtype=points.dtype)
    kernel[_blocks(len(keep)), THREADS_PER_BLOCK](slots, cuda.to_device(bounds), cuda.to_device(keep),
                                                  cuda.to_device(offsets), device_points)
    device_points.copy_to_host(points)
