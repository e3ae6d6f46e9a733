"""Gradients of a compiled tracking run, by replay: ``track_differentiable`` runs the kernels forward
and wraps their points in a ``torch.autograd.Function`` whose backward replays the recorded points
(``kernels.replay``) into gradients for the seeds and for the field's tensor (SH coefficients or DWI
signal, and through them whatever produced them, e.g. ``fit_fod``).

What carries gradient is what the torch loop (``propagation``, kept as the oracle) defines: points
move with the field sampled at them and with their seed; the previous direction, the start
directions and every stopping decision are hard choices; detmax and prob differentiate their
softmax relaxation read at a detached position (``methods.pmf``). A seed appears once in a
streamline and starts both halves: its gradient is dL/dp0 plus each half's first step, summed over
the streamlines of that seed.

Precision: the gradient comes in the dtype of the field's tensor; on the CPU its sums run in float64
for a float64 tensor, else in float32 (on CUDA in float64, then cast). The closed forms of sdstream
and tensordet work in float64; detmax and prob on the CPU differentiate their relaxation in float32
for a tensor below float64 (its products and passes at twice the vector width; on phantom_cross the
gradient is the float64 replay's to 3e-7 (detmax) and 2.5e-6 (prob) relative), else in float64 (as
on CUDA).

Memory: the forward keeps the points; the backward records, per step (per RK4 stage), a cell and
eight corner weights (float64) and the sample's cotangent (C,) in the method's working precision,
for groups of at most ``RECORDS`` steps at a time, plus the field-sized gradient.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from .. import sh
from ..fields import SHField
from .engine import KernelResult, KernelTracker, out_of_memory, pmf_adjoint, sdstream_adjoint, tensor_solver_matrix

log = logging.getLogger(__name__)

#: steps replayed per group (bounds the records: ~30 MB for 45 SH coefficients)
RECORDS = 1 << 16


class Replay:
    """The backward pass of a ``KernelTracker``'s runs (numpy in, numpy out, on all CPU cores)."""

    def __init__(self, kernels: KernelTracker, gradient_dtype: torch.dtype = torch.float64):
        """``gradient_dtype``: that of the tensor whose gradient the replay computes (the field's):
        detmax and prob on the CPU differentiate their relaxation in float32 below float64."""
        from .kernels.common import make_consts

        self.kernels = kernels
        self.gradient_dtype = gradient_dtype
        #: the precision of the field gradient's sums: the gradient's own (float32 below float64)
        self.sums = np.float64 if gradient_dtype == torch.float64 else np.float32
        field, params = kernels.field, kernels.params
        family = kernels.algorithm.kernel
        c = kernels.volume.values.shape[1]
        #: the working precision of the method's backward (c_bar's): the sums' for pmf on the CPU
        self.precision = self.sums if family == "pmf" and kernels.device == "cpu" else np.float64
        if family == "tensor":
            from .kernels.tensordet import TensorData

            self.method = TensorData(0.0, 0.0, tensor_solver_matrix(field, np.float64))
            sizes = (c, c, 7, 18)
        elif family == "pmf":
            self.method = pmf_adjoint(field, params, kernels.sphere, self.precision)
            d = max(len(kernels.sphere.vertices), self.method.cone_basis.shape[2])  # candidates: a cone or all
            sizes = (c, d, d, d)
        else:
            self.method = sdstream_adjoint(field)
            t = len(self.method.m)
            sizes = (c, 3 * t, 2 * (field.lmax + 1) + 2 * t, 1)  # Legendre rows; trig rows and coefficients
        self.sizes = np.array(sizes, dtype=np.int64)
        self.consts = make_consts(np.float64)
        self.stages = 4 if params.rk4 else 1
        if kernels.device == "cuda":
            from .kernels.cuda import to_device

            self.device_method = to_device(self.method)

    def __call__(self, result: KernelResult, grad_points: torch.Tensor) -> tuple[np.ndarray, object]:
        """Cotangents of the points (P, 3) tensor -> (the seed rows' (R, 3) for R = the largest seed row
        + 1, the sampled volume's (X Y Z, C) in the kernels' layout: a numpy array, or on CUDA a device
        array)."""
        from .kernels import replay as kernels_replay

        k = self.kernels
        lengths = result.lengths
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        run = kernels_replay.Run(result.points, offsets, lengths, result.before, result.half_starts,
                                 result.seed_index, result.peak)
        seed_grad = out = None
        if k.device == "cuda":
            from .kernels import cuda

            grad = grad_points.detach().to(torch.float64).contiguous()
            try:
                halves, out = cuda.replay(*k._args[:3], self.device_method, self.consts, k.rules, k.sizes, self.sizes,
                                          run, grad, k.volume.values.shape)
                seed_grad = grad[torch.from_numpy(offsets[:-1] + result.before).to(grad.device)].cpu().numpy()
                seed_grad += halves.sum(1)
            except Exception as exc:
                if not out_of_memory(exc):
                    raise
                log.warning("CUDA ran out of memory in the backward pass; replaying on the CPU")
        if seed_grad is None:
            seed_grad, out = self._replay_cpu(run, grad_points.detach().cpu().numpy())
        by_row = np.zeros((int(result.seed_row.max()) + 1 if len(lengths) else 0, 3))
        np.add.at(by_row, result.seed_row, seed_grad)
        return by_row, out

    def _replay_cpu(self, run, grad_points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from numba import get_num_threads

        from .kernels import replay as kernels_replay

        k = self.kernels
        grad = np.ascontiguousarray(grad_points, dtype=np.float64)
        lengths, before = run.lengths, run.before
        steps = (lengths - 1) * self.stages
        values = k.volume.values
        out = np.zeros(values.shape, dtype=self.sums)
        seed_grad = grad[run.offsets[:-1] + before].copy()
        method, consts, volume = k.method, k.consts, k.volume
        ny, nz = int(volume.dims[1]), int(volume.dims[2])
        threads = get_num_threads()
        done = np.r_[0, np.cumsum(steps)]  # records before each streamline
        size = int(min(done[-1], max(RECORDS, steps.max(initial=0))))
        sink = kernels_replay.Records(np.empty(size, np.int64), np.empty((size, 8)),
                                      np.empty((size, values.shape[1]), self.precision))
        first = 0
        while first < len(lengths):
            last = max(first + 1, int(np.searchsorted(done, done[first] + RECORDS, side="right")) - 1)
            rows = np.arange(first, min(last, len(lengths)))
            at = np.zeros(2 * len(rows) + 1, dtype=np.int64)
            at[1::2] = (lengths[rows] - 1 - before[rows]) * self.stages
            at[2::2] = before[rows] * self.stages
            np.cumsum(at, out=at)
            halves = np.zeros((len(rows), 2, 3))
            kernels_replay.replay_rows(method, consts, self.method, self.consts, volume, k.rules, k.sizes, self.sizes,
                                       run, rows, at[:-1], grad, halves, sink)
            seed_grad[rows] += halves.sum(1)
            kernels_replay.scatter(sink.cells[:int(at[-1])], sink.weights, sink.cbars, ny, nz, threads, out)
            first = int(rows[-1]) + 1
        return seed_grad, out


class _KernelTrack(torch.autograd.Function):
    """Points of a kernel run as a function of the seeds and the field's tensor."""

    @staticmethod
    def forward(ctx, run, seeds, data):
        ctx.run = run
        ctx.seeds_shape = None if seeds is None else seeds.shape
        return torch.from_numpy(run.result.points).to(data.device)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_points):
        run = ctx.run
        by_row, volume_grad = run.replay(run.result, grad_points)
        seeds_grad = data_grad = None
        if ctx.needs_input_grad[1]:
            seeds_grad = torch.zeros(ctx.seeds_shape, dtype=torch.float64)
            seeds_grad[:len(by_row)] = torch.from_numpy(by_row)
            seeds_grad = seeds_grad.to(dtype=run.seeds_dtype, device=grad_points.device)
        if ctx.needs_input_grad[2]:
            data_grad = run.data_gradient(volume_grad)
        return None, seeds_grad, data_grad


class _Run:
    """One differentiable call: the forward's result and how to turn the replay's output into the
    gradient of the field's tensor."""

    def __init__(self, replay: Replay, result: KernelResult, data: torch.Tensor, seeds_dtype):
        self.replay, self.result, self.data, self.seeds_dtype = replay, result, data, seeds_dtype

    def data_gradient(self, volume_grad: np.ndarray) -> torch.Tensor:
        data = self.data
        grad = self.replay.kernels.field_order(torch.as_tensor(volume_grad, device=data.device))
        grad = grad.reshape(data.shape).to(data.dtype)
        field = self.replay.kernels.field
        if isinstance(field, SHField) and self.replay.kernels.algorithm.kernel == "sdstream" \
                and field.basis != "tournier07":  # the kernels sample MRtrix3's basis: back through the
            grad = sh.convert_basis(grad, "tournier07", field.basis)  # conversion, a signed permutation
        return grad


def track_differentiable(kernels: KernelTracker, replay: Replay, data: torch.Tensor, seeds, *, seed_directions=None,
                         seed_ids=None, progress=None, cancel=None) -> tuple[torch.Tensor, KernelResult]:
    """Run ``kernels`` (whose field holds ``data``'s current values) from ``seeds`` ((N, 3) tensor or
    array); returns the points (P, 3) with autograd history to ``data`` and to ``seeds`` (when
    they require grad), and the run's ``KernelResult``."""
    result = kernels(seeds, seed_directions=seed_directions, seed_ids=seed_ids, progress=progress, cancel=cancel)
    seeds_t = seeds if torch.is_tensor(seeds) else None
    run = _Run(replay, result, data, seeds_t.dtype if seeds_t is not None else data.dtype)
    return _KernelTrack.apply(run, seeds_t, data), result
