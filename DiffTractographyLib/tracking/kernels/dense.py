"""The two dense products of the pmf methods, basis columns times coefficients and its transpose,
with their accumulators held in vector registers.

Written as plain loops, these products keep their running sums in memory (LLVM promotes scalars to
registers, not the vectors its vectoriser makes later), and each pass over a column waits on the
previous one's stores: 45 x 112 float32 took ~290 ns, 162 ns here. Here numba's ``intrinsic``
emits the loops itself: on the CPU, groups of whole SIMD vectors (64 bytes) accumulate in registers;
on other targets (CUDA), one column at a time. ``column_sums`` (the forward's, whose choices depend
on its rounding) sums in the order of the loops it replaces on every target; ``row_sums`` (the
backward's) sums in any order.
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


def _served(basis, vector, width, out) -> bool:
    """Whether the types of a ``(basis, vector, width, out)`` call are ones the products serve: a
    C-contiguous 2-D float ``basis``, a contiguous 1-D ``vector``, a 1-D float ``out``, an integer."""
    return (isinstance(basis, types.Array) and basis.ndim == 2 and basis.layout == "C"
            and isinstance(basis.dtype, types.Float) and isinstance(vector, types.Array) and vector.ndim == 1
            and vector.layout == "C" and isinstance(out, types.Array) and out.ndim == 1
            and isinstance(out.dtype, types.Float) and isinstance(width, types.Integer))


def _operands(context, builder, signature, args):
    """(basis, vector, out) array structures and the width as intp of a ``(basis, vector, width, out)`` call."""
    basis_ty, vector_ty, width_ty, out_ty = signature.args
    basis, vector, out = (context.make_array(ty)(context, builder, value)
                          for ty, value in ((basis_ty, args[0]), (vector_ty, args[1]), (out_ty, args[3])))
    return basis, vector, out, context.cast(builder, args[2], width_ty, types.intp)


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

    def codegen(context, builder, signature, args):
        basis_ty, c_ty, _, out_ty = signature.args
        b, cs, o, width = _operands(context, builder, signature, args)
        element, stored = context.get_value_type(out_ty.dtype), context.get_value_type(basis_ty.dtype)
        align, stored_align = out_ty.dtype.bitwidth // 8, basis_ty.dtype.bitwidth // 8
        convert = out_ty.dtype != basis_ty.dtype
        rows = builder.extract_value(cs.shape, 0)
        stride = builder.extract_value(b.shape, 1)
        intp = rows.type

        def const(value):
            return ir.Constant(intp, value)

        def block(start, count, lanes):
            """One pass over the coefficients for ``count`` consecutive groups of ``lanes`` columns
            (a vector each, or one column when ``lanes`` is 1) from ``start``."""
            kind = ir.VectorType(element, lanes) if lanes > 1 else element
            source = ir.VectorType(stored, lanes) if lanes > 1 else stored
            zero = ir.Constant(kind, [ir.Constant(element, 0.0)] * lanes) if lanes > 1 else ir.Constant(element, 0.0)
            sums = [cgutils.alloca_once(builder, kind) for _ in range(count)]
            for total in sums:
                builder.store(zero, total)
            with cgutils.for_range(builder, rows, intp=intp) as loop:
                value = context.cast(builder, builder.load(builder.gep(cs.data, [loop.index])), c_ty.dtype,
                                     out_ty.dtype)
                factor = _splat(builder, value, kind) if lanes > 1 else value
                row = builder.add(builder.mul(loop.index, stride), start)
                for k, total in enumerate(sums):
                    column = builder.load(_pointer(builder, b.data, builder.add(row, const(k * lanes)), source),
                                          align=stored_align)
                    if convert:
                        column = context.cast(builder, column, basis_ty.dtype, out_ty.dtype) if lanes == 1 else (
                            builder.fpext if basis_ty.dtype.bitwidth < out_ty.dtype.bitwidth else builder.fptrunc)(
                            column, kind)
                    builder.store(builder.fadd(builder.load(total), builder.fmul(factor, column)), total)
            for k, total in enumerate(sums):
                at = _pointer(builder, o.data, builder.add(start, const(k * lanes)), kind)
                builder.store(builder.load(total), at, align=align)

        done = const(0)
        lanes = vector_lanes(context, out_ty.dtype)
        if lanes > 1:
            padded = builder.mul(builder.udiv(builder.add(width, const(lanes - 1)), const(lanes)), const(lanes))
            room = builder.and_(builder.icmp_signed("<=", padded, stride),
                                builder.icmp_signed("<=", padded, builder.extract_value(o.shape, 0)))
            whole = builder.select(room, padded, builder.mul(builder.udiv(width, const(lanes)), const(lanes)))
            vectors = builder.udiv(whole, const(lanes))
            passes = builder.udiv(builder.add(vectors, const(GROUP - 1)), const(GROUP))
            with cgutils.for_range(builder, passes, intp=intp) as loop:
                first = builder.mul(loop.index, const(GROUP))
                count = builder.sub(vectors, first)
                start = builder.mul(first, const(lanes))
                for n in range(1, GROUP + 1):  # whole groups, then the remaining vectors at once
                    test = builder.icmp_signed(">=" if n == GROUP else "==", count, const(n))
                    with builder.if_then(test):
                        block(start, n, lanes)
            done = whole
        with cgutils.for_range_slice(builder, done, width, const(1), intp=intp) as (column, _):
            block(column, 1, 1)  # columns left over (on CUDA: every column)
        return context.get_dummy_value()

    return types.void(basis, c, width, out), codegen


#: rows summed side by side by ``row_sums`` on the CPU
ROWS = 4


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


@intrinsic
def row_sums(typingctx, basis, x, width, out):
    """``out[j] = sum_i basis[j, i] x[i]`` for j < len(out), i < ``width``: ``basis`` a C-contiguous
    (>= len(out), >= width) array, ``x`` and ``out`` contiguous of its type. Sums in any order (on
    the CPU lane-wise partial sums then their halves); reads nothing past ``width``."""
    if not (_served(basis, x, width, out) and x.dtype == basis.dtype and out.dtype == basis.dtype):
        return None

    def codegen(context, builder, signature, args):
        basis_ty = signature.args[0]
        b, xs, o, width = _operands(context, builder, signature, args)
        element = context.get_value_type(basis_ty.dtype)
        align = basis_ty.dtype.bitwidth // 8
        rows = builder.extract_value(o.shape, 0)
        stride = builder.extract_value(b.shape, 1)
        intp = rows.type
        lanes = vector_lanes(context, basis_ty.dtype)
        cpu = lanes > 1
        vector = ir.VectorType(element, lanes) if cpu else element

        def const(value):
            return ir.Constant(intp, value)

        whole = builder.mul(builder.udiv(width, const(lanes)), const(lanes))

        def block(first, count):
            """``count`` consecutive rows from ``first``: vector partial sums, then the columns left over."""
            zero = ir.Constant(vector, [ir.Constant(element, 0.0)] * lanes) if cpu else ir.Constant(element, 0.0)
            sums = [cgutils.alloca_once(builder, vector) for _ in range(count)]
            for total in sums:
                builder.store(zero, total)
            starts = [builder.mul(builder.add(first, const(r)), stride) for r in range(count)]
            with cgutils.for_range_slice(builder, const(0), whole, const(lanes), intp=intp) as (i, _):
                value = builder.load(_pointer(builder, xs.data, i, vector), align=align)
                for start, total in zip(starts, sums):
                    row = builder.load(_pointer(builder, b.data, builder.add(start, i), vector), align=align)
                    builder.store(builder.fadd(builder.load(total), builder.fmul(row, value)), total)
            results = [_horizontal_sum(builder, builder.load(total)) if cpu else builder.load(total) for total in sums]
            scalars = [cgutils.alloca_once_value(builder, r) for r in results]
            with cgutils.for_range_slice(builder, whole, width, const(1), intp=intp) as (i, _):
                value = builder.load(builder.gep(xs.data, [i]))
                for start, total in zip(starts, scalars):
                    row = builder.load(builder.gep(b.data, [builder.add(start, i)]))
                    builder.store(builder.fadd(builder.load(total), builder.fmul(row, value)), total)
            for r, total in enumerate(scalars):
                builder.store(builder.load(total), builder.gep(o.data, [builder.add(first, const(r))]))

        group = ROWS if cpu else 1
        passes = builder.udiv(rows, const(group))
        with cgutils.for_range(builder, passes, intp=intp) as loop:
            block(builder.mul(loop.index, const(group)), group)
        with cgutils.for_range_slice(builder, builder.mul(passes, const(group)), rows, const(1), intp=intp) as (j, _):
            block(j, 1)
        return context.get_dummy_value()

    return types.void(basis, x, width, out), codegen
