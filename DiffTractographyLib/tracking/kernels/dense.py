"""The two dense products of the pmf methods, basis columns times coefficients and its transpose,
with their accumulators held in vector registers.

Written as plain loops, these products keep their running sums in memory (LLVM promotes scalars to
registers, not the vectors its vectoriser makes later), and each pass over a column waits on the
previous one's stores: 45 x 112 float32 took ~290 ns, 162 ns here. Here numba's ``intrinsic``
emits the loops itself: on the CPU, groups of whole SIMD vectors (64 bytes) accumulate in registers;
on other targets (CUDA), one column at a time. ``column_sums`` (the forward's, whose choices depend
on its rounding) sums in the order of the loops it replaces on every target; ``row_sums`` (the
backward's) sums in any order. Their ``batch_`` forms serve up to ``BATCH`` vectors with one basis:
each basis vector loaded once feeds every row's sums (the backward's consecutive steps from one
cone: float64 45 x 112 both ways, 866 ns a step alone, ~640 ns in fours, on this CPU).
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.cpu import CPUContext
from numba.extending import intrinsic

#: at most this many vectors summed side by side on the CPU: independent chains of additions that
#: hide their latency, with room in the 32 vector registers for the columns they read
GROUP = 8
#: bytes of one SIMD vector (AVX-512; narrower machines split it, which LLVM does well)
VECTOR_BYTES = 64


def vector_lanes(context, dtype) -> int:
    """Elements per SIMD vector of ``dtype`` on ``context``'s target: whole vectors on the CPU, one
    element (plain loops) elsewhere (CUDA: each thread its own streamline)."""
    return VECTOR_BYTES // (dtype.bitwidth // 8) if isinstance(context, CPUContext) else 1


def _splat(builder, value, vector):
    one = builder.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vector, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), vector.count), [0] * vector.count))


def _pointer(builder, base, index, kind):
    return builder.bitcast(builder.gep(base, [index]), kind.as_pointer())

#: rows summed side by side by ``row_sums`` on the CPU
ROWS = 4
#: at most this many rows in one call of the batched products
BATCH = 4


def _horizontal_sum(builder, vector):
    """The sum of a vector's lanes, halves added pairwise."""
    count = vector.type.count
    while count > 1:
        half = count // 2
        lanes = ir.VectorType(ir.IntType(32), half)
        low = builder.shuffle_vector(vector, vector, ir.Constant(lanes, list(range(half))))
        high = builder.shuffle_vector(vector, vector, ir.Constant(lanes, list(range(half, count))))
        vector, count = builder.fadd(low, high), half
    return builder.extract_element(vector, ir.Constant(ir.IntType(32), 0))


def _served(basis, vector, width, out, batch: bool = False) -> bool:
    """Whether the types of a ``(basis, vector, width, out)`` call are ones the products serve: a
    C-contiguous 2-D float ``basis``, a contiguous ``vector`` and a float ``out``, 1-D (2-D, C-contiguous,
    for a ``batch`` of rows), an integer ``width``."""
    ndim = 2 if batch else 1
    return (isinstance(basis, types.Array) and basis.ndim == 2 and basis.layout == "C"
            and isinstance(basis.dtype, types.Float) and isinstance(vector, types.Array) and vector.ndim == ndim
            and vector.layout == "C" and isinstance(out, types.Array) and out.ndim == ndim
            and (out.layout == "C" or not batch) and isinstance(out.dtype, types.Float)
            and isinstance(width, types.Integer))


class _Call:
    """The operands of a product in LLVM values: the basis's data, row stride (elements) and rows
    used, each vector's and each output's data, the width, and the output's length."""

    def __init__(self, context, builder, signature, args, batch: bool):
        basis_ty, vector_ty = signature.args[:2]
        out_ty = signature.args[-1]
        width_ty = signature.args[-2]
        b, v, o = (context.make_array(ty)(context, builder, value)
                   for ty, value in ((basis_ty, args[0]), (vector_ty, args[1]), (out_ty, args[-1])))
        self.context, self.builder = context, builder
        self.basis_ty, self.vector_ty, self.out_ty = basis_ty, vector_ty, out_ty
        self.basis = b.data
        self.stride = builder.extract_value(b.shape, 1)
        self.width = context.cast(builder, args[-2], width_ty, types.intp)
        self.intp = self.width.type
        axis = 1 if batch else 0
        self.vector_length = builder.extract_value(v.shape, axis)
        self.out_length = builder.extract_value(o.shape, axis)
        self._v, self._o = v, o

    def const(self, value):
        return ir.Constant(self.intp, value)

    def rows(self, count: int):
        """(vector, output) data pointers of the first ``count`` rows of a batch (one: the arrays')."""
        builder = self.builder
        pairs = []
        for k in range(count):
            pairs.append((builder.gep(self._v.data, [builder.mul(self.const(k), self.vector_length)]),
                          builder.gep(self._o.data, [builder.mul(self.const(k), self.out_length)])))
        return pairs


def _emit_column_sums(call: _Call, pairs):
    """``out[i] = sum_j c[j] basis[j, i]`` for each (c, out) data pointer pair, j < len(c):
    groups of whole SIMD vectors accumulated in registers, each column read once for all pairs."""
    context, builder, const, intp = call.context, call.builder, call.const, call.intp
    basis_ty, out_ty = call.basis_ty, call.out_ty
    element, stored = context.get_value_type(out_ty.dtype), context.get_value_type(basis_ty.dtype)
    align, stored_align = out_ty.dtype.bitwidth // 8, basis_ty.dtype.bitwidth // 8
    convert = out_ty.dtype != basis_ty.dtype
    c_type = call.vector_ty.dtype
    stride, width, coefficients = call.stride, call.width, call.vector_length

    def block(start, count, lanes):
        """One pass over the coefficients for ``count`` consecutive groups of ``lanes`` columns
        (a vector each, or one column when ``lanes`` is 1) from ``start``."""
        kind = ir.VectorType(element, lanes) if lanes > 1 else element
        source = ir.VectorType(stored, lanes) if lanes > 1 else stored
        zero = ir.Constant(kind, [ir.Constant(element, 0.0)] * lanes) if lanes > 1 else ir.Constant(element, 0.0)
        sums = [[cgutils.alloca_once(builder, kind) for _ in range(count)] for _ in pairs]
        for row in sums:
            for total in row:
                builder.store(zero, total)
        with cgutils.for_range(builder, coefficients, intp=intp) as loop:
            factors = []
            for c, _ in pairs:
                value = context.cast(builder, builder.load(builder.gep(c, [loop.index])), c_type, out_ty.dtype)
                factors.append(_splat(builder, value, kind) if lanes > 1 else value)
            row = builder.add(builder.mul(loop.index, stride), start)
            for k in range(count):
                column = builder.load(_pointer(builder, call.basis, builder.add(row, const(k * lanes)), source),
                                      align=stored_align)
                if convert:
                    column = context.cast(builder, column, basis_ty.dtype, out_ty.dtype) if lanes == 1 else (
                        builder.fpext if basis_ty.dtype.bitwidth < out_ty.dtype.bitwidth else builder.fptrunc)(
                        column, kind)
                for factor, totals in zip(factors, sums):
                    builder.store(builder.fadd(builder.load(totals[k]), builder.fmul(factor, column)), totals[k])
        for (_, out), totals in zip(pairs, sums):
            for k, total in enumerate(totals):
                at = _pointer(builder, out, builder.add(start, const(k * lanes)), kind)
                builder.store(builder.load(total), at, align=align)

    done = const(0)
    lanes = vector_lanes(context, out_ty.dtype)
    if lanes > 1:
        group = max(GROUP // len(pairs), 1)  # vectors per pass: at most GROUP accumulators in all
        padded = builder.mul(builder.udiv(builder.add(width, const(lanes - 1)), const(lanes)), const(lanes))
        room = builder.and_(builder.icmp_signed("<=", padded, stride),
                            builder.icmp_signed("<=", padded, call.out_length))
        whole = builder.select(room, padded, builder.mul(builder.udiv(width, const(lanes)), const(lanes)))
        vectors = builder.udiv(whole, const(lanes))
        passes = builder.udiv(builder.add(vectors, const(group - 1)), const(group))
        with cgutils.for_range(builder, passes, intp=intp) as loop:
            first = builder.mul(loop.index, const(group))
            count = builder.sub(vectors, first)
            start = builder.mul(first, const(lanes))
            for n in range(1, group + 1):  # whole groups, then the remaining vectors at once
                test = builder.icmp_signed(">=" if n == group else "==", count, const(n))
                with builder.if_then(test):
                    block(start, n, lanes)
        done = whole
    with cgutils.for_range_slice(builder, done, width, const(1), intp=intp) as (column, _):
        block(column, 1, 1)  # columns left over (on CUDA: every column)


def _emit_row_sums(call: _Call, pairs):
    """``out[j] = sum_i basis[j, i] x[i]`` for each (x, out) data pointer pair, j < len(out), i <
    ``width``: lane-wise partial sums of a few rows at a time, each row read once for all pairs."""
    context, builder, const, intp = call.context, call.builder, call.const, call.intp
    basis_ty = call.basis_ty
    element = context.get_value_type(basis_ty.dtype)
    align = basis_ty.dtype.bitwidth // 8
    stride, width, rows = call.stride, call.width, call.out_length
    lanes = vector_lanes(context, basis_ty.dtype)
    cpu = lanes > 1
    vector = ir.VectorType(element, lanes) if cpu else element
    whole = builder.mul(builder.udiv(width, const(lanes)), const(lanes))

    def block(first, count):
        """``count`` consecutive rows from ``first``: vector partial sums, then the columns left over."""
        zero = ir.Constant(vector, [ir.Constant(element, 0.0)] * lanes) if cpu else ir.Constant(element, 0.0)
        sums = [[cgutils.alloca_once(builder, vector) for _ in range(count)] for _ in pairs]
        for row in sums:
            for total in row:
                builder.store(zero, total)
        starts = [builder.mul(builder.add(first, const(r)), stride) for r in range(count)]
        with cgutils.for_range_slice(builder, const(0), whole, const(lanes), intp=intp) as (i, _):
            values = [builder.load(_pointer(builder, x, i, vector), align=align) for x, _ in pairs]
            for r, start in enumerate(starts):
                row = builder.load(_pointer(builder, call.basis, builder.add(start, i), vector), align=align)
                for value, totals in zip(values, sums):
                    builder.store(builder.fadd(builder.load(totals[r]), builder.fmul(row, value)), totals[r])
        for (x, out), totals in zip(pairs, sums):
            results = [_horizontal_sum(builder, builder.load(t)) if cpu else builder.load(t) for t in totals]
            scalars = [cgutils.alloca_once_value(builder, r) for r in results]
            with cgutils.for_range_slice(builder, whole, width, const(1), intp=intp) as (i, _):
                value = builder.load(builder.gep(x, [i]))
                for start, total in zip(starts, scalars):
                    row = builder.load(builder.gep(call.basis, [builder.add(start, i)]))
                    builder.store(builder.fadd(builder.load(total), builder.fmul(row, value)), total)
            for r, total in enumerate(scalars):
                builder.store(builder.load(total), builder.gep(out, [builder.add(first, const(r))]))

    group = (ROWS if len(pairs) <= 2 else ROWS // 2) if cpu else 1  # at most 2 ROWS accumulators in all
    passes = builder.udiv(rows, const(group))
    with cgutils.for_range(builder, passes, intp=intp) as loop:
        block(builder.mul(loop.index, const(group)), group)
    with cgutils.for_range_slice(builder, builder.mul(passes, const(group)), rows, const(1), intp=intp) as (j, _):
        block(j, 1)


def _codegen(emit, batch: bool):
    """The codegen of a product whose loops ``emit(call, pairs)`` writes: for one vector, or (``batch``)
    for the first ``count`` (1 ... ``BATCH``) rows of a batch, a specialisation per count."""
    def codegen(context, builder, signature, args):
        call = _Call(context, builder, signature, args, batch)
        if batch:
            count = context.cast(builder, args[2], signature.args[2], types.intp)
            for n in range(1, BATCH + 1):
                with builder.if_then(builder.icmp_signed("==", count, call.const(n))):
                    emit(call, call.rows(n))
        else:
            emit(call, call.rows(1))
        return context.get_dummy_value()

    return codegen


@intrinsic
def column_sums(typingctx, basis, c, width, out):
    """``out[i] = sum_j c[j] basis[j, i]`` for i < ``width``, j < len(c): ``basis`` a C-contiguous
    (>= len(c), >= width) array, ``c`` and ``out`` contiguous; the sums in ``out``'s type, ``c`` and
    ``basis`` cast to it. Each sum runs in coefficient order from zero, a product then an addition
    (what the loop ``out[i] += out.dtype(c[j]) * out.dtype(basis[j, i])`` rounds to). On the CPU, when
    the rows and ``out`` have room for whole vectors past ``width``, ``out`` receives (meaningless)
    sums there too."""
    if not (_served(basis, c, width, out) and out.layout == "C"):
        return None

    return types.void(basis, c, width, out), _codegen(_emit_column_sums, batch=False)


@intrinsic
def batch_column_sums(typingctx, basis, cs, count, width, out):
    """``column_sums`` of the first ``count`` (1 ... ``BATCH``) rows of ``cs`` (B, C) into those of
    ``out`` (B, >= width), each sum as ``column_sums`` makes it: the basis read once for all rows."""
    if not (_served(basis, cs, width, out, batch=True) and isinstance(count, types.Integer)):
        return None

    return types.void(basis, cs, count, width, out), _codegen(_emit_column_sums, batch=True)


@intrinsic
def row_sums(typingctx, basis, x, width, out):
    """``out[j] = sum_i basis[j, i] x[i]`` for j < len(out), i < ``width``: ``basis`` a C-contiguous
    (>= len(out), >= width) array, ``x`` and ``out`` contiguous of its type. Sums in any order (on
    the CPU lane-wise partial sums then their halves); reads nothing past ``width``."""
    if not (_served(basis, x, width, out) and x.dtype == basis.dtype and out.dtype == basis.dtype):
        return None

    return types.void(basis, x, width, out), _codegen(_emit_row_sums, batch=False)


@intrinsic
def batch_row_sums(typingctx, basis, xs, count, width, out):
    """``row_sums`` of the first ``count`` (1 ... ``BATCH``) rows of ``xs`` (B, >= width) into those
    of ``out`` (B, C): the basis read once for all rows."""
    if not (_served(basis, xs, width, out, batch=True) and xs.dtype == basis.dtype and out.dtype == basis.dtype
            and isinstance(count, types.Integer)):
        return None

    return types.void(basis, xs, count, width, out), _codegen(_emit_row_sums, batch=True)
