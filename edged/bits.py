"""Bit-level LLVM intrinsics the kernels share: leading and trailing zero counts, popcount,
vector compares that turn 32 or 64 array lanes into one bit mask (bit ``t`` for lane
``t``), a vector add of float32 lanes, a cache prefetch hint and an element's address (for
C functions). They take no bounds checks: the caller keeps every lane it reads inside its
array."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def clz(typingctx, x):
    """Count leading zeros of an unsigned integer (its bit width when zero), as int64."""
    def codegen(context, builder, sig, args):
        r = builder.ctlz(args[0], ir.Constant(ir.IntType(1), 0))
        return builder.zext(r, ir.IntType(64)) if x.bitwidth < 64 else r
    return types.int64(x), codegen


@intrinsic
def ctz(typingctx, x):
    """Count trailing zeros of a uint64 (64 when zero), as int64."""
    def codegen(context, builder, sig, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 0))
    return types.int64(types.uint64), codegen


@intrinsic
def popcount(typingctx, x):
    """Number of set bits of a uint64, as int64."""
    def codegen(context, builder, sig, args):
        return builder.ctpop(args[0])
    return types.int64(types.uint64), codegen


def _is(a, dtype):
    return (isinstance(a, types.Array) and a.dtype == dtype and a.ndim == 1
            and a.layout == "C")


def _pointer(context, builder, ary_type, ary, start, to):
    """The address of element ``start`` (flat) of the C-contiguous array ``ary``, as a
    pointer to ``to``."""
    ary = context.make_array(ary_type)(context, builder, value=ary)
    return builder.bitcast(builder.gep(ary.data, [start]), to.as_pointer())


def _lanes(context, builder, ary_type, ary, start, lanes):
    ptr = _pointer(context, builder, ary_type, ary, start, lanes)
    return builder.load(ptr, align=lanes.element.width // 8)


@intrinsic
def nonzero32(typingctx, a, start):
    """uint64 whose bit ``t`` is set where ``a[start + t] != 0``, for ``t < 32`` (contiguous
    1-D uint8 array)."""
    if not _is(a, types.uint8):
        return None

    def codegen(context, builder, sig, args):
        lanes = ir.VectorType(ir.IntType(8), 32)
        x = _lanes(context, builder, sig.args[0], args[0], args[1], lanes)
        m = builder.icmp_unsigned("!=", x, ir.Constant(lanes, [0] * 32))
        return builder.zext(builder.bitcast(m, ir.IntType(32)), ir.IntType(64))
    return types.uint64(a, start), codegen


@intrinsic
def lanes_le(typingctx, a, start, h, lim):
    """uint64 whose bit ``t`` is set where ``a[start + t] ^ h <= lim``, for ``t < 64``
    (contiguous 1-D uint16 array)."""
    if not _is(a, types.uint16):
        return None

    def codegen(context, builder, sig, args):
        i16, lanes = ir.IntType(16), ir.VectorType(ir.IntType(16), 64)
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), 64), [0] * 64)

        def splat(x):
            x = builder.insert_element(ir.Constant(lanes, ir.Undefined), builder.trunc(x, i16)
                                       if x.type.width > 16 else x, ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(x, ir.Constant(lanes, ir.Undefined), zeros)

        x = builder.xor(_lanes(context, builder, sig.args[0], args[0], args[1], lanes),
                        splat(args[2]))
        return builder.bitcast(builder.icmp_unsigned("<=", x, splat(args[3])), ir.IntType(64))
    return types.uint64(a, start, h, lim), codegen


LANES = 8  # float32 lanes of ``add_lanes`` (one AVX2 register)


@intrinsic
def add_lanes(typingctx, dst, d0, src, s0):
    """``dst[d0:d0 + LANES] += src[s0:s0 + LANES]`` (flat indices of C-contiguous float32
    arrays) as one vector add: the same float32 sums, lane by lane, without the overlap
    checks and remainder loop a loop of runtime length compiles to."""
    if not all(isinstance(a, types.Array) and a.dtype == types.float32 and a.layout == "C"
               for a in (dst, src)):
        return None

    def codegen(context, builder, sig, args):
        lanes = ir.VectorType(ir.FloatType(), LANES)
        at = _pointer(context, builder, sig.args[0], args[0], args[1], lanes)
        x = builder.load(_pointer(context, builder, sig.args[2], args[2], args[3], lanes), align=4)
        builder.store(builder.fadd(builder.load(at, align=4), x), at, align=4)
        return context.get_dummy_value()
    return types.none(dst, d0, src, s0), codegen


@intrinsic
def prefetch(typingctx, a, start):
    """Hint the CPU to bring the cache line of element ``start`` of the C-contiguous array
    ``a`` (flat index) into its L2 cache for reading; no effect on results."""
    if not (isinstance(a, types.Array) and a.layout == "C"):
        return None

    def codegen(context, builder, sig, args):
        i8, i32 = ir.IntType(8), ir.IntType(32)
        ptr = _pointer(context, builder, sig.args[0], args[0], args[1], i8)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
            ir.VoidType(), [i8.as_pointer(), i32, i32, i32]), "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.none(a, types.intp), codegen


@intrinsic
def address(typingctx, a, start):
    """The address of element ``start`` (flat) of the C-contiguous array ``a``, as a
    ``void *`` (for a C function called from compiled code)."""
    if not (isinstance(a, types.Array) and a.layout == "C"):
        return None

    def codegen(context, builder, sig, args):
        return _pointer(context, builder, sig.args[0], args[0], args[1], ir.IntType(8))
    return types.voidptr(a, types.intp), codegen
