"""CPU kernels: ``prange`` over blocks of rows, each row reduced by one thread.

Every kernel takes C-contiguous ``(rows, classes)`` float32 or float64 arrays
that the boundary layer (:mod:`nbce._validate`) has already checked: labels are
in range, options are sane. Nothing here validates.

Why the kernels look the way they do:

* llvmlite is built without SVML, so ``math.exp`` in a loop stays scalar.
  :func:`exp_vec` is a branch-free exp that LLVM vectorises.
* ``max`` reductions written with ``>`` or ``max()`` do not vectorise without
  the ``nnan`` flag, which would also delete our -inf/NaN guards. The
  ``llvm.maximum`` intrinsic vectorises and propagates NaN like ``np.max``.
* Loops over part of a row index a slice of it from 0 (``x[start:stop]``):
  indexed from ``start``, LLVM cannot prove the index non-negative and keeps
  Numba's negative-index wraparound, which it vectorises with gathers and
  scatters where AVX-512 has them (2-4x slower loops).
* Sums run in the working precision over chunks of SUM_CHUNK classes
  (vectorised through ``reassoc``) and the chunk sums add up in float64, so a
  float32 row of 10**6 classes keeps a float32-level error.
* Memory traffic is what bounds these kernels. A row's sum of exps comes from
  the pass that reads it (:func:`row_exp_sum`, no separate pass for the row
  max), so the row is read from memory while it is being exponentiated (the
  costly part) and the hardware prefetcher keeps the reads ahead of the
  arithmetic. Large outputs the caller gave (``out=``) are written with
  non-temporal (streaming) stores, which skip the read-for-ownership a plain
  store costs. Intermediate values live in a per-block scratch row that
  stays in cache.
* Each block of rows works on borrowed arrays (:func:`borrow`): every view
  of an array (a row, a slice) would otherwise take a reference on its
  memory and drop it, an atomic operation, several times a row.
* Rows of few classes are worked on many at a time, as one flat run of
  elements (see FLAT_CLASSES and FLAT_BYTES): row by row, the loops' set-up
  would cost more than their few elements.
* Each row is reduced by one thread in a fixed order, so results do not depend
  on the number of threads; sums across rows run after the parallel loop, in
  row order (``ordered_sum``).
"""

import math
from types import FunctionType

import numpy as np
from llvmlite import binding, ir
from numba import njit, prange, types
from numba.core import cgutils, event
from numba.core.extending import intrinsic, overload
from numba.np.arrayobj import populate_array

# ``reassoc`` lets LLVM vectorise the row sums; ``contract`` fuses multiply-adds.
# Never ``nnan``/``ninf``: they would fold away the -inf and NaN handling.
FASTMATH = {"reassoc", "contract"}
# A division by zero gives inf/NaN (IEEE) rather than raising: the check that
# raising needs is a branch per division, which stops loops from vectorising.
KERNEL_OPTIONS = {"fastmath": FASTMATH, "error_model": "numpy"}


# Below this many elements a kernel runs on the calling thread: starting the
# thread pool costs microseconds, more than a small problem takes.
PARALLEL_MIN_ELEMENTS = 1 << 15
# Outputs from this size on are written with streaming stores (when the caller
# gave them, see streams): they would not stay in cache anyway, and a plain
# store first reads the line from memory.
STREAM_MIN_BYTES = 1 << 24
# Bytes in a cache line: the unit of non-temporal stores and of prefetches.
LINE_BYTES = 64


def streams(out, given):
    """Whether a kernel should write ``out`` with non-temporal stores: from
    STREAM_MIN_BYTES on, into memory the caller ``given`` (``out=``).

    A newly allocated array's pages come zeroed from the operating system,
    through the cache, where plain stores then find their lines: non-temporal
    stores into one took 0.5-14% more time (4096 x 32000 and 1024 x 128256
    float32; log_softmax 7-14%, softmax and the fused gradient 0.5-2%).
    """
    return given and out.nbytes >= STREAM_MIN_BYTES


def cached_njit(fn, **options):
    """``njit`` with an on-disk cache, compiled lazily on first call.

    Numba refuses ``cache=True`` when it finds no writable cache location
    (read-only install without ``NUMBA_CACHE_DIR``); then compile in memory.
    """
    try:
        return njit(cache=True, **options)(fn)
    except RuntimeError:
        return njit(**options)(fn)


# Vectors at a time in loops that sum exps (see _Interleave).
SUM_INTERLEAVE = 2 if binding.get_host_cpu_features().get("avx512f") else 1


class _Interleave(event.Listener):
    """Sets LLVM's vector interleave count while a kernel of this module compiles.

    How many vectors a loop runs at a time trades instruction-level
    parallelism against register spills, and LLVM's cost model does not see
    the exp's long chain of dependent multiply-adds. With AVX2, a loop that
    sums exps runs fastest one vector at a time: it then fits the 16 vector
    registers (25 instructions a vector; four at a time took 95 for four, 19
    of them stack moves). With AVX-512's 32 registers, two at a time took
    2-7% less time than one, and four more than two. Kernels whose time goes
    to such sums (logsumexp, log_softmax, cross-entropy) build with
    SUM_INTERLEAVE; those that compute and store a value per element, with 4
    (with 4 rather than 1, softmax took 35% less time and the elementwise
    losses 17-24% less, with AVX2, in cache). The setting is
    process-wide in LLVM, so it holds only while such a build compiles
    (under Numba's compiler lock), not for user code.
    """

    def __init__(self):
        self.counts = {}  # id(dispatcher) -> interleave count
        self.stack = []

    def _set(self, count):
        binding.set_option("", f"-force-vector-interleave={count}")

    def on_start(self, ev):
        count = self.counts.get(id(ev.data["dispatcher"]))
        if count is not None:
            self.stack.append(count)
            self._set(count)

    def on_end(self, ev):
        if id(ev.data["dispatcher"]) in self.counts:
            self.stack.pop()
            self._set(self.stack[-1] if self.stack else 0)  # 0: LLVM's cost model decides


_interleave = _Interleave()
event.register("numba:compile", _interleave)


class Kernel:
    """One kernel body compiled twice: threaded (``prange``) and serial.

    ``build(X)`` picks the build for ``X``: serial under PARALLEL_MIN_ELEMENTS
    elements. Both builds give each row the same arithmetic, so results do
    not depend on the number of threads. Both compile with LLVM's vector
    interleave count set to ``interleave`` (see ``_Interleave``).
    """

    def __init__(self, fn, interleave):
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self.parallel = cached_njit(fn, parallel=True, **KERNEL_OPTIONS)
        # Numba's cache key ignores compile options: the serial build needs a
        # function of its own name, or it would load the threaded build.
        serial = FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial")
        serial.__qualname__ = fn.__qualname__ + "_serial"
        self.serial = cached_njit(serial, **KERNEL_OPTIONS)
        _interleave.counts.update({id(self.parallel): interleave, id(self.serial): interleave})

    def build(self, X):
        """The build to call on ``X``, as ``kernel.build(X)(X, ...)``.

        Callers call the build itself: a ``__call__(X, *args)`` here that
        forwarded its arguments took 0.3-0.6 us more a call, where the whole
        call of ``ce_rows`` takes 1.7 us at 32 x 10.
        """
        return self.parallel if X.size >= PARALLEL_MIN_ELEMENTS else self.serial


def kernel(*, interleave):
    """Decorator: ``Kernel(fn, interleave)``."""
    return lambda fn: Kernel(fn, interleave)


# --- LLVM intrinsics -------------------------------------------------------


@intrinsic
def maximum(typingctx, a, b):
    """``llvm.maximum``: NaN-propagating max that LLVM vectorises in reductions."""

    def codegen(context, builder, sig, args):
        ty = args[0].type
        fn = builder.module.declare_intrinsic("llvm.maximum", [ty], ir.FunctionType(ty, [ty, ty]))
        return builder.call(fn, args)

    return a(a, b), codegen


def _element_pointer(context, builder, arrty, arr, index):
    ary = context.make_array(arrty)(context, builder, arr)
    return cgutils.get_item_pointer(context, builder, arrty, ary, [index], wraparound=False)


@intrinsic
def prefetch(typingctx, arr, i):
    """Ask the cache hierarchy to start loading ``arr[i]`` (``llvm.prefetch``)."""

    def codegen(context, builder, sig, args):
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = builder.module.declare_intrinsic(
            "llvm.prefetch", [i8p], ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        )
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        # read, keep in all cache levels, data cache
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.none(arr, i), codegen


# Every array view Numba makes (``X[n]``, a slice, an array passed to an
# inlined function) takes a reference on the array's memory and drops it
# after, each an atomic operation behind a call. Numba's pruning pass leaves
# them in the row loops (34 increments in the serial ce_rows). Views of a
# borrowed array take none. The borrowing happens at the top of each kernel's
# ``prange`` body: the threaded build compiles that body apart and passes it
# the arrays as arguments, whose views would take references again. A name
# bound outside the body and again inside it would be a reduction to the
# parfor, so a kernel takes its arrays as ``X_arg`` and the like, and binds
# ``X`` to the borrowed view. (Handing each block to an inlined function of
# its own instead took 45% more compile time for ce_rows.) Serial, 3200 x 10
# float32, the fused gradient took 24% less time, 3200 x 1 46% less, rows of
# 1000 classes 0-3%; threaded at 65536 x 10, one thread, 20% less. The arrays
# a kernel is called with outlive the call; a block keeps each array it
# allocates alive with keep_alive after its last borrowed use.
# Numba's dead-code elimination does not know that a borrowed view aliases
# its array: a store into a view that nothing uses afterwards can be dropped
# (a prange body of one ``out[n] = ...`` lost its stores). The kernels store
# only inside their row loops, where the next row uses the same arrays.


@intrinsic
def borrow(typingctx, arrays):
    """``arrays`` (an array or a tuple of arrays) as views holding no reference."""

    def codegen(context, builder, sig, args):
        if isinstance(arrays, types.Array):
            return _unowned(context, builder, arrays, args[0])
        views = [_unowned(context, builder, ty, builder.extract_value(args[0], i)) for i, ty in enumerate(arrays)]
        return context.make_tuple(builder, sig.return_type, views)

    return arrays(arrays), codegen


@intrinsic
def flat(typingctx, arr):
    """A C-contiguous array as a 1-D view of its elements holding no
    reference, as :func:`borrow`'s views (``reshape`` takes one, through a
    helper that LLVM cannot see into)."""
    if not (isinstance(arr, types.Array) and arr.layout == "C"):
        return None
    flat_type = arr.copy(ndim=1)

    def codegen(context, builder, sig, args):
        src = context.make_array(arr)(context, builder, args[0])
        size = context.get_constant(types.intp, 1)
        for extent in cgutils.unpack_tuple(builder, src.shape):
            size = builder.mul(size, extent)
        view = context.make_array(flat_type)(context, builder)
        null_meminfo, null_parent = (cgutils.get_null_value(t) for t in (view.meminfo.type, view.parent.type))
        populate_array(view, src.data, [size], [src.itemsize], src.itemsize, null_meminfo, null_parent)
        return view._getvalue()

    return flat_type(arr), codegen


def _unowned(context, builder, arrty, arr):
    view = context.make_array(arrty)(context, builder, arr)
    view.meminfo = cgutils.get_null_value(view.meminfo.type)
    view.parent = cgutils.get_null_value(view.parent.type)
    return view._getvalue()


@intrinsic
def keep_alive(typingctx, value):
    """Nothing, but a use of ``value``: Numba frees it after this point, not before."""
    return types.none(value), lambda context, builder, sig, args: context.get_dummy_value()


def _row_scope(module):
    """Alias scope of the reads of :func:`load_row`, which :func:`store_scratch` writes are outside of."""
    domain = module.add_metadata([ir.MetaDataString(module, "nbce rows")])
    return module.add_metadata([module.add_metadata([ir.MetaDataString(module, "nbce rows read"), domain])])


@intrinsic
def load_row(typingctx, arr, i):
    """``arr[i]``, for a loop whose bound keeps ``i`` in range: no bounds check
    (which NUMBA_BOUNDSCHECK=1 would add), and declared to alias no
    :func:`store_scratch` write."""

    def codegen(context, builder, sig, args):
        load = builder.load(_element_pointer(context, builder, sig.args[0], args[0], args[1]))
        load.set_metadata("alias.scope", _row_scope(builder.module))
        return load

    return arr.dtype(arr, i), codegen


@intrinsic
def store_scratch(typingctx, arr, i, v):
    """``arr[i] = v`` into a row that :func:`load_row` never reads; as it, unchecked.

    Without the declaration, LLVM checks at run time that the two rows do not
    overlap, and takes a scalar loop where they lie within a few vectors of
    each other (small rows allocated one after the other): its sum then came
    out in another order than the vectorised sum of a loop that stores nothing.
    """

    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        store = builder.store(context.cast(builder, args[2], sig.args[2], sig.args[0].dtype), ptr)
        store.set_metadata("noalias", _row_scope(builder.module))
        return context.get_dummy_value()

    return types.none(arr, i, v), codegen


@intrinsic
def _stream_vector(typingctx, dst, src, i, a, b, c):
    """One cache line ``dst[i:i+k] = (src[i:i+k] * a - b) - c``, stored non-temporally.

    ``&dst[i]`` must be aligned to a cache line (LINE_BYTES). LLVM does not
    vectorise a loop of non-temporal scalar stores whose alignment it cannot
    prove, so the vector is built here by hand. Numba gives its instructions the kernel's
    fast-math flags, as it does ``_affine_range``'s.
    """

    def codegen(context, builder, sig, args):
        dst_t, src_t = sig.args[0], sig.args[1]
        elt = context.get_value_type(dst_t.dtype)
        size = context.get_abi_sizeof(elt)
        vec = ir.VectorType(elt, LINE_BYTES // size)
        src_ptr = builder.bitcast(_element_pointer(context, builder, src_t, args[1], args[2]), vec.as_pointer())
        dst_ptr = builder.bitcast(_element_pointer(context, builder, dst_t, args[0], args[2]), vec.as_pointer())
        undef = ir.Constant(vec, ir.Undefined)
        lanes = ir.Constant(ir.VectorType(ir.IntType(32), vec.count), [0] * vec.count)

        def splat(k):
            scalar = context.cast(builder, args[k], sig.args[k], dst_t.dtype)
            return builder.shuffle_vector(builder.insert_element(undef, scalar, ir.IntType(32)(0)), undef, lanes)

        v = builder.load(src_ptr, align=size)
        v = builder.fsub(builder.fsub(builder.fmul(v, splat(3)), splat(4)), splat(5))
        store = builder.store(v, dst_ptr, align=LINE_BYTES)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.IntType(32)(1)]))
        return context.get_dummy_value()

    return types.none(dst, src, i, a, b, c), codegen


@intrinsic
def tanh_slope(typingctx, v, inv):
    """``1 - (v * inv)**2``, rounded after each operation in every build.

    Numba gives the kernels' fast-math flags to every float instruction that
    has none; these carry ``nsz`` alone (signs of zero do not matter here),
    so LLVM may neither regroup nor fuse them.
    """

    def codegen(context, builder, sig, args):
        u = builder.fmul(args[0], args[1], flags=("nsz",))
        return builder.fsub(ir.Constant(u.type, 1.0), builder.fmul(u, u, flags=("nsz",)), flags=("nsz",))

    return v(v, inv), codegen


@intrinsic
def store_fence(typingctx):
    """Order the non-temporal stores before anything that follows."""

    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def _bitcast_float_to_int(typingctx, x):
    ret = types.int32 if x == types.float32 else types.int64

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(ret))

    return ret(x), codegen


@intrinsic
def _bitcast_int_to_float(typingctx, i):
    ret = types.float32 if i == types.int32 else types.float64

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], context.get_value_type(ret))

    return ret(i), codegen


def _order_key_codegen(to_key):
    """Between a float's bits and an integer that orders as the float does:
    the magnitude bits of negative floats flipped (the map is its own inverse)."""

    def codegen(context, builder, sig, args):
        ity = context.get_value_type(sig.return_type if to_key else sig.args[0])
        bits = builder.bitcast(args[0], ity) if to_key else args[0]
        sign = builder.ashr(bits, ir.Constant(ity, ity.width - 1))
        key = builder.xor(bits, builder.and_(sign, ir.Constant(ity, (1 << (ity.width - 1)) - 1)))
        return key if to_key else builder.bitcast(key, context.get_value_type(sig.return_type))

    return codegen


@intrinsic
def order_key(typingctx, x):
    """Float ``x`` as a signed integer of its width that orders as ``x`` does:
    -0.0 just below +0.0, a NaN above +inf (or below -inf, if its sign bit is
    set). Integer max reductions take one instruction a vector."""
    ret = types.int32 if x == types.float32 else types.int64
    return ret(x), _order_key_codegen(True)


@intrinsic
def from_order_key(typingctx, k):
    """The float whose :func:`order_key` is ``k``."""
    ret = types.float32 if k == types.int32 else types.float64
    return ret(k), _order_key_codegen(False)


# --- vectorisable exp --------------------------------------------------------
#
# exp(x) = 2**k * exp(r) with k = round(x / ln2) and |r| <= ln2 / 2. ln2 is split
# in a high part with trailing zero bits (k * LN2_HI is exact) and a low part
# (Cody-Waite); exp(r) is a polynomial. No libm call, no branch, and no
# rounding or conversion instruction:
# * k comes from t = x / ln2 + M in one multiply-add, with M = 1.5 * 2**23 + 126
#   (float32; 1.5 * 2**52 + 1022 in float64): the spacing of floats near M is
#   1, so t is rounded to an integer, and k = t - M exactly. The low bits of
#   t's pattern hold k + 126 (k + 1022); shifted into the exponent field they
#   make the float 2**(k - 1). The polynomial fits 2 exp(r), so the product of
#   the two is exp(x), rounded once: inf exactly where exp(x) overflows.
# * x is clamped to [-87.5, 89] ([-708.5, 710]) first, NaN passing through: k +
#   126 stays in [0, 254]. At the bottom it is 0, the scale is 0.0 and the
#   result exactly 0: below about -87.0 (-708.0), -inf included. At the top,
#   2**127 times the polynomial overflows to inf.
# Against rounding with vroundps and adding k to the result's exponent bits
# (which took a clamp of k and a test to flush underflows): 15 instructions
# per vector instead of 18. With the sums run one vector at a time (see
# _Interleave), logsumexp and cross_entropy ran 12-14% faster, the fused
# gradient 6-9% (AVX2, float32, 256 x 1000 in cache, one thread).


@intrinsic
def _magic_round(typingctx, x, a, m):
    """``(t, t - m)`` with ``t = fma(x, a, m)``, computed as written: the
    subtraction carries ``nsz`` alone (Numba gives the kernels' flags to
    every float instruction that has none), so LLVM cannot cancel ``m``."""

    def codegen(context, builder, sig, args):
        ty = args[0].type
        fma = builder.module.declare_intrinsic("llvm.fma", [ty], ir.FunctionType(ty, [ty, ty, ty]))
        t = builder.call(fma, args)
        return context.make_tuple(builder, sig.return_type, [t, builder.fsub(t, args[2], flags=("nsz",))])

    return types.UniTuple(x, 2)(x, a, m), codegen


@intrinsic
def _clamp(typingctx, x, lo, hi):
    """x clamped to [lo, hi]; NaN stays NaN. One min and one max instruction:
    written in Python, the two selects became minnum/maxnum in LLVM, and
    each cost a NaN fix-up (two more instructions)."""

    def codegen(context, builder, sig, args):
        x, lo, hi = args
        x = builder.select(builder.fcmp_ordered("<", x, lo), lo, x)
        return builder.select(builder.fcmp_ordered(">", x, hi), hi, x)

    return x(x, x, x), codegen


@intrinsic
def _product(typingctx, a, b):
    """``a * b``, rounded on its own: it carries ``nsz`` alone, so LLVM cannot
    fuse it into an addition that uses it (``contract``). An exp then has the
    same bits whether it is stored or only summed: fused into a sum's
    multiply-add where it was not also stored, the sums of cross_entropy and
    cross_entropy_with_grad differed."""

    def codegen(context, builder, sig, args):
        return builder.fmul(args[0], args[1], flags=("nsz",))

    return a(a, b), codegen


def exp_vec(x):
    """exp(x), vectorisable: 0 below about -87.0 (float32) / -708.0 (float64),
    inf where exp(x) overflows; float32 or float64."""
    raise NotImplementedError("exp_vec is only callable from jitted code")


def _exp_vec_f32(x):
    x = _clamp(x, np.float32(-87.5), np.float32(89.0))
    t, k = _magic_round(x, np.float32(1.4426950408889634), np.float32(12582912.0 + 126.0))
    r = x - k * np.float32(0.693145751953125)
    r = r - k * np.float32(1.428606765330187e-06)
    # near-minimax fit of 2 exp on [-ln2/2, ln2/2]: relative error 2e-7 in float32
    p = np.float32(2 * 0.00831251)
    p = p * r + np.float32(2 * 0.04189008)
    p = p * r + np.float32(2 * 0.16667114)
    p = p * r + np.float32(2 * 0.4999923)
    p = p * r + np.float32(2.0)
    p = p * r + np.float32(2.0)
    return _product(p, _bitcast_int_to_float(np.int32(_bitcast_float_to_int(t) << np.int32(23))))


def _exp_vec_f64(x):
    x = _clamp(x, -708.5, 710.0)
    t, k = _magic_round(x, 1.4426950408889634, 6755399441055744.0 + 1022.0)
    r = x - k * 0.6931471803691238
    r = r - k * 1.9082149292705877e-10
    # near-minimax fit of 2 exp on [-ln2/2, ln2/2], degree 10: relative error 5e-16
    p = 2 * 2.747782412460551e-07
    p = p * r + 2 * 2.7635039126115625e-06
    p = p * r + 2 * 2.4801929279055584e-05
    p = p * r + 2 * 0.00019841185112776192
    p = p * r + 2 * 0.0013888888518050237
    p = p * r + 2 * 0.00833333337096769
    p = p * r + 2 * 0.04166666666813239
    p = p * r + 2 * 0.16666666666611302
    p = p * r + 2 * 0.49999999999998346
    p = p * r + 2.0
    p = p * r + 2.0
    return _product(p, _bitcast_int_to_float(_bitcast_float_to_int(t) << np.int64(52)))


def _overload_by_precision(stub, for_float32, for_float64):
    """Make ``stub`` callable from jitted code, as one implementation per precision."""

    @overload(stub)
    def _by_precision(x):
        return {types.float32: for_float32, types.float64: for_float64}.get(x)


_overload_by_precision(exp_vec, _exp_vec_f32, _exp_vec_f64)


def log1p_unit(x):
    """log(1 + x) for 0 <= x <= 1, vectorisable; float32 or float64."""
    raise NotImplementedError("log1p_unit is only callable from jitted code")


# log(1 + x) = 2 atanh(s) with s = x / (2 + x) in [0, 1/3], exact for tiny x
# (no rounding of 1 + x), and atanh(s) = s (1 + s^2/3 + s^4/5 + ...): the
# series stops where its next term is below the precision's epsilon.


def _log1p_unit_f32(x):
    s = x / (np.float32(2.0) + x)
    s2 = s * s
    p = np.float32(1.0 / 15.0)
    for k in range(13, 0, -2):  # unrolled by LLVM: a fixed trip count
        p = p * s2 + np.float32(1.0 / k)
    return np.float32(2.0) * s * p


def _log1p_unit_f64(x):
    s = x / (2.0 + x)
    s2 = s * s
    p = 1.0 / 35.0
    for k in range(33, 0, -2):
        p = p * s2 + 1.0 / k
    return 2.0 * s * p


_overload_by_precision(log1p_unit, _log1p_unit_f32, _log1p_unit_f64)


def log_vec(x):
    """log(x) for finite x >= 0 (-inf at 0, subnormals included), vectorisable;
    float32 or float64, relative error about 2 ulp."""
    raise NotImplementedError("log_vec is only callable from jitted code")


# x = 2**k * m with m in [sqrt(1/2), sqrt(2)), read from the bits of x (a
# subnormal x is scaled up first), so log(x) = k log(2) + log1p(f) with
# f = m - 1 exact, and log1p(f) = 2 atanh(s), s = f / (2 + f), |s| < 0.172:
# the series in s**2 stops where its next term is below the precision's
# epsilon. Centring m on 1 keeps the relative error small for x near 1.


def _log_vec_f32(x):
    subnormal = x < np.float32(1.1754944e-38)
    bits = _bitcast_float_to_int(x * np.float32(16777216.0) if subnormal else x)  # 2**24
    m = _bitcast_int_to_float(np.int32((bits & np.int32(0x007FFFFF)) | np.int32(0x3F800000)))  # [1, 2)
    k = np.float32(np.int32(bits >> np.int32(23))) - (np.float32(151.0) if subnormal else np.float32(127.0))
    high = m > np.float32(1.4142135)
    m = m * np.float32(0.5) if high else m
    k = k + np.float32(1.0) if high else k
    f = m - np.float32(1.0)
    s = f / (np.float32(2.0) + f)
    s2 = s * s
    p = np.float32(1.0 / 9.0)
    for j in range(7, 0, -2):  # unrolled by LLVM: a fixed trip count
        p = p * s2 + np.float32(1.0 / j)
    log_x = k * np.float32(0.6931471805599453) + np.float32(2.0) * s * p
    return np.float32(-np.inf) if x == np.float32(0.0) else log_x


def _log_vec_f64(x):
    subnormal = x < 2.2250738585072014e-308
    bits = _bitcast_float_to_int(x * 4503599627370496.0 if subnormal else x)  # 2**52
    m = _bitcast_int_to_float((bits & np.int64(0x000FFFFFFFFFFFFF)) | np.int64(0x3FF0000000000000))
    k = np.float64(np.int32(bits >> np.int64(52))) - (1075.0 if subnormal else 1023.0)  # int32: as in exp
    high = m > 1.4142135623730951
    m = m * 0.5 if high else m
    k = k + 1.0 if high else k
    f = m - 1.0
    s = f / (2.0 + f)
    s2 = s * s
    p = 1.0 / 21.0
    for j in range(19, 0, -2):
        p = p * s2 + 1.0 / j
    # log(2) in two parts, as in exp_vec: k * 0.6931471803691238 is exact
    log_x = k * 0.6931471803691238 + (k * 1.9082149292705877e-10 + 2.0 * s * p)
    return -np.inf if x == 0.0 else log_x


_overload_by_precision(log_vec, _log_vec_f32, _log_vec_f64)



def softcap(x, c, inv):
    """``c * tanh(x / c)`` given ``inv = 1 / c``, vectorisable: ±inf give ±c, NaN
    stays NaN, the result never passes ±c; float32 or float64."""
    raise NotImplementedError("softcap is only callable from jitted code")


# float32: tanh(u) = u P(u^2) / Q(u^2) for |u| <= 9.1 (beyond, tanh rounds to
# 1). P (degree 5) and Q (degree 3) are a minimax fit of the relative error
# made by tools/fit_tanh.py (7e-8 in exact arithmetic, 4.1e-7 in float32), at
# half the cost of the expm1 route below. With u = x / c, c tanh(u) = x P / Q:
# no abs, sign or multiplication by c. Past the clamp of u^2, |x P / Q| is
# above c and the clamp of the result gives ±c.
_TANH_P = (
    0.9999999291497398, 0.12919270807524494, 0.0029205469127377907, 9.260308708997751e-06,
    -1.274037628968515e-08, 1.8108043753036728e-11,
)  # fmt: skip
_TANH_Q = (1.0, 0.4625256865630823, 0.023762998595919974, 0.000228035461318027)


def _softcap_f32(x, c, inv):
    u = x * inv
    s = u * u
    # selects written so that NaN passes through them (x86 min/max would drop it)
    s = np.float32(9.1 * 9.1) if s > np.float32(9.1 * 9.1) else s
    p = np.float32(_TANH_P[5])
    for j in range(4, -1, -1):  # unrolled by LLVM: a fixed trip count
        p = p * s + np.float32(_TANH_P[j])
    q = np.float32(_TANH_Q[3])
    for j in range(2, -1, -1):
        q = q * s + np.float32(_TANH_Q[j])
    v = x * p / q
    v = c if v > c else v  # also the fit's rounding, which reaches 1 + 2 ulp near the clamp
    return -c if v < -c else v


# float64: tanh|u| = -e / (2 + e) with e = expm1(-2|u|), which keeps full
# relative precision for small |u| (where 1 - exp(-2|u|) would cancel).
# expm1(x) = 2**k expm1(r) + (2**k - 1), k and r reduced as for exp, and
# expm1(r) = r (1 + r/2! + r^2/3! + ...), the Taylor series, stopped where its
# next term is below epsilon at |r| = ln2/2. Below -40 expm1 is -1 to double
# precision; clamping there keeps 2**k a normal number.
_INV_FACTORIAL = tuple(1.0 / math.factorial(j) for j in range(15))


def _softcap_f64(x, c, inv):
    u = x * inv
    e = max(-abs(u + u), -40.0)
    k = np.rint(e * 1.4426950408889634)
    r = e - k * 0.6931471803691238
    r = r - k * 1.9082149292705877e-10
    p = _INV_FACTORIAL[14]
    for j in range(13, 0, -1):
        p = p * r + _INV_FACTORIAL[j]
    two_k = _bitcast_int_to_float((np.int64(np.int32(k)) + np.int64(1023)) << np.int64(52))  # int32: as in exp
    em = two_k * (r * p) + (two_k - 1.0)  # expm1(-2|u|), in [-1, 0]
    return c * math.copysign(abs(em) / (em + 2.0), u) if u == u else u


@overload(softcap)
def _softcap_by_precision(x, c, inv):
    return {types.float32: _softcap_f32, types.float64: _softcap_f64}.get(x)


# --- row building blocks (inlined into the kernels) -------------------------

# Elements summed in the working precision before the partial sum goes into a
# float64 total: short enough to keep float32 sums accurate, long enough to
# keep the vectorised inner loop busy.
SUM_CHUNK = 512
# Elements whose max is a row's first shift (see row_exp_sum): a short head,
# since on rows of 1000 classes its max pass cost a tenth of the exp pass.
HEAD = 64
# Elements per block of rows handed to one thread (at least one row).
BLOCK_ELEMENTS = 1 << 16
# A threaded call's number of blocks is a multiple of this (see row_blocks).
BLOCK_MULTIPLE = 8


@njit(inline="always")
def row_blocks(n_rows, n_classes):
    """``(number of blocks, rows per block)``: blocks of consecutive rows,
    about BLOCK_ELEMENTS each (at least one row).

    Arrays for the threaded build (see ``Kernel.build``) get blocks of equal
    size (the last may be shorter), their number a multiple of BLOCK_MULTIPLE
    (rows allowing): the threads share the blocks out in equal runs, and with
    3 blocks of 1008 rows and 32 rows (2048 x 65), one thread took 2016 rows
    and the other 32.
    """
    C = max(n_classes, 1)
    per_block = max(1, BLOCK_ELEMENTS // C)
    if n_rows * C >= PARALLEL_MIN_ELEMENTS:
        blocks = -(-n_rows // per_block)
        blocks = min(n_rows, -(-blocks // BLOCK_MULTIPLE) * BLOCK_MULTIPLE)
        per_block = -(-n_rows // blocks)
    return -(-n_rows // per_block), per_block


@njit(inline="always")
def row_max(x):
    m = x.dtype.type(-np.inf)
    for c in range(x.size):
        m = maximum(m, x[c])
    return m


@njit(inline="always")
def softcap_slope(capped, k, inv):
    """d(cap tanh(x / cap))/dx = 1 - tanh^2 at element ``k``, from the capped
    row and ``inv = 1 / cap`` (in the row's dtype, computed inside the row
    loop: computed once at the top of ``ce_rows``, the threaded and the
    serial build gave different gradient bits in float64).

    Through :func:`tanh_slope`: with reassoc, LLVM regrouped ``(v * inv)**2``
    differently in the threaded and the serial build, and their bits
    differed. (A division by cap would not regroup either, but the softcapped
    gradient was 3% slower with it, in cache.)
    """
    return tanh_slope(capped[k], inv)


# The exps of a row are taken relative to the max of its first HEAD
# elements, not to the row max: the row is then read once, while it is being
# exponentiated, instead of once for its max and once more for the sum. With
# the shift at most the row max, no exp underflows that a shift by the max
# would keep; and the sum is finite, and the shift finite, exactly when no exp
# overflowed and the row holds no NaN or +inf. Otherwise (an element ~88
# (float32) above the head's max, a non-finite element, or a head all -inf:
# rare in practice) the row is summed again, shifted by its max.


@njit(inline="always")
def key_max(x, start, n):
    """max(x[start : start + n]) over :func:`order_key` integers (see head_max);
    ``start`` and ``n`` unsigned."""
    m = order_key(x.dtype.type(-np.inf))
    for c in range(n):
        m = max(m, order_key(x[start + c]))
    return from_order_key(m)


@njit(inline="always")
def head_max(x):
    """The first shift of a row's exps: the max of its first HEAD elements.

    Taken over their :func:`order_key` integers, exact: ``row_max``'s
    ``llvm.maximum`` costs three instructions a vector and more in its
    cross-lane reduction, and rows of 10 and 21 float32 classes took 0.64 and
    0.62 of the time of ``logsumexp`` with it. A NaN need not come through
    here: a row holding one sums to NaN and is summed again by its row_max.
    """
    return key_max(x, np.uint64(0), np.uint64(min(x.size, HEAD)))


def _exp_sum_from(sloped):
    """``row_exp_sum_from``, or with ``sloped`` (a constant of its loop)
    ``row_exp_sum_from_sloped``."""

    @njit(inline="always")
    def row_sum_exp(x, shift, out, store, upcoming, inv_cap):
        """sum(exp(x - shift)) in float64; with ``store``, also
        ``out = exp(x - shift)``, times its ``softcap_slope`` when sloped.

        ``upcoming`` (the next row, ``x`` itself further on (:func:`ahead`),
        or an empty array) is prefetched a cache line at a time: where ``x``
        is a row already in cache (the softcapped row), its arithmetic then
        overlaps the next row's DRAM reads.
        """
        dt = x.dtype.type
        inv_t = dt(inv_cap)
        line = max(1, LINE_BYTES // upcoming.itemsize)
        total = 0.0
        for start in range(0, x.size, SUM_CHUNK):
            stop = min(start + SUM_CHUNK, x.size)
            for c in range(start, min(stop, upcoming.size), line):
                prefetch(upcoming, c)
            s = dt(0.0)
            xc, oc = x[start:stop], out[start:stop]  # indexed from 0: see the module docstring
            # Unchecked, within both slices: with bounds checking on
            # (NUMBA_BOUNDSCHECK=1), the checks left the storing loop a scalar
            # tail that the loop that only sums had not, and the two summed in
            # different orders. (``out`` is a scratch row when storing.)
            for c in range(min(xc.size, oc.size) if store else xc.size):
                v = load_row(xc, c)
                e = exp_vec(v - shift)
                if store:
                    store_scratch(oc, c, e * tanh_slope(v, inv_t) if sloped else e)
                s += e
            total += s
        return total

    @njit(inline="always")
    def row_exp_sum_from(x, out, store, shift, upcoming, inv_cap):
        """:func:`row_exp_sum` from a first ``shift`` at most the row max,
        prefetching ``upcoming``. Sloped, ``x`` is the softcapped row and the
        stored exps are times their ``softcap_slope`` (``inv_cap = 1 / cap``;
        unused otherwise)."""
        d = 0.0
        for _ in range(2):  # a loop, not a second call: one inlined copy of the sum
            d = row_sum_exp(x, shift, out, store, upcoming, inv_cap)
            if np.isfinite(d) and np.isfinite(shift):
                break
            shift = row_max(x)
            if not np.isfinite(shift):
                break
        return d, shift

    return row_exp_sum_from


row_exp_sum_from = _exp_sum_from(False)
row_exp_sum_from_sloped = _exp_sum_from(True)


# How far ahead in its own row a float32 exp pass prefetches where the
# gradient is streamed (``write_row`` meanwhile prefetches the next row,
# whole). Against no prefetch, the fused gradient into ``out=`` took 0.93-0.96
# of the time at 4096 x 32000, 1024 x 128256, 640 x 200000 and 320 x 400000
# (2 KB ahead: 0.93-0.96; 8 KB: 0.97-1.00). float64 rows, whose exps take
# twice the arithmetic per byte, are left as they were: 0.96-0.99 at
# 4096 x 32000, 1.00 at 2048 x 64000, 1.04-1.09 at 1024 x 128256.
PREFETCH_AHEAD_BYTES = 4096


@njit(inline="always")
def ahead(x, on):
    """What the exp pass over row ``x`` prefetches (see ``row_exp_sum_from``):
    ``x`` itself, PREFETCH_AHEAD_BYTES ahead, if ``on`` and ``x`` is float32;
    otherwise nothing."""
    return x[PREFETCH_AHEAD_BYTES // x.itemsize if on and x.itemsize == 4 else x.size :]


@njit(inline="always")
def row_exp_sum(x, out, store):
    """``(d, shift)`` with d = sum(exp(x - shift)) in float64, so that the
    row's log-sum-exp is ``shift + log(d)``; with ``store``, also
    ``out = exp(x - shift)``. A row holding NaN or +inf, or all -inf, gives its
    max (NaN, +inf, -inf) as ``shift``.
    """
    return row_exp_sum_from(x, out, store, head_max(x), x[:0], 0.0)


@njit(inline="always")
def _affine_range(dst, src, start, stop, a, b, c):
    d, s = dst[start:stop], src[start:stop]  # indexed from 0: see the module docstring
    for k in range(d.size):
        d[k] = (s[k] * a - b) - c


@njit(inline="always")
def _stream_range(dst, src, start, stop, a, b, c, upcoming):
    """``_affine_range`` with non-temporal stores of whole cache lines between
    unaligned ends, prefetching ``upcoming`` a line per line written."""
    size = dst.itemsize
    width = LINE_BYTES // size
    head = min(start + (-(dst.ctypes.data + start * size) % LINE_BYTES) // size, stop)
    body_end = head + (stop - head) // width * width
    _affine_range(dst, src, start, head, a, b, c)
    for k in range(head, body_end, width):
        _stream_vector(dst, src, k, a, b, c)
        if k < upcoming.size:
            prefetch(upcoming, k)
    _affine_range(dst, src, body_end, stop, a, b, c)


@njit(inline="always")
def write_row(dst, src, a, b, c, stream, cached_at, upcoming):
    """``dst = (src * a - b) - c``; ``dst`` may be ``src``.

    With ``stream``, through non-temporal stores (no read-for-ownership, no
    cache pollution), except the cache line holding element ``cached_at``
    (-1 for none): the caller updates that element next, and reading a line
    just streamed out would wait for memory. Streaming, the row ``upcoming``
    (the next input row) is prefetched meanwhile, so that its reads from
    memory overlap these writes.
    """
    dt = dst.dtype.type
    a, b, c = dt(a), dt(b), dt(c)
    n = dst.size
    if not stream:
        _affine_range(dst, src, 0, n, a, b, c)
        return
    lo, hi = 0, 0
    if cached_at >= 0:
        per_line = LINE_BYTES // dst.itemsize
        lo = max(0, cached_at - (dst.ctypes.data // dst.itemsize + cached_at) % per_line)
        hi = min(lo + per_line, n)
    _stream_range(dst, src, 0, lo, a, b, c, upcoming)
    _affine_range(dst, src, lo, hi, a, b, c)
    _stream_range(dst, src, hi, n, a, b, c, upcoming)


@njit(inline="always")
def row_weighted_gap(x, shift, w):
    """sum(w * (shift - x)) in float64, over chunks of SUM_CHUNK summed in the
    working precision (as :func:`row_sum`; each term converted to float64, the
    loop took 1.7 times as long at C = 1000 float32): the smoothing term
    without its log-sum-exp part."""
    total = 0.0
    for start in range(0, x.size, SUM_CHUNK):
        partial = x.dtype.type(0.0)
        xc, wc = x[start : start + SUM_CHUNK], w[start : start + SUM_CHUNK]  # indexed from 0: see the module docstring
        for c in range(xc.size):
            partial += wc[c] * (shift - xc[c])
        total += partial
    return total


@njit(inline="always")
def row_sum(v):
    """sum(v) in float64, over chunks of SUM_CHUNK summed in the working precision."""
    total = 0.0
    for start in range(0, v.size, SUM_CHUNK):
        partial = v.dtype.type(0.0)
        chunk = v[start : start + SUM_CHUNK]  # indexed from 0: see the module docstring
        for c in range(chunk.size):
            partial += chunk[c]
        total += partial
    return total


@njit(inline="always")
def row_fill(out, value):
    for c in range(out.size):
        out[c] = value


@njit(inline="always")
def ordered_sum(values):
    """Sum after the parallel loop, in one fixed order: the same for any thread count."""
    total = 0.0
    for i in range(values.size):  # indexed: iterated, the loads became gathers
        total += values[i]
    return total


@njit(inline="always")
def block_rows(blk, per_block, n_rows):
    """First and past-the-last row of block ``blk``, unsigned.

    Indexed with a signed ``n``, ``X[n]`` selects between ``n`` and
    ``n + N`` (negative indices), and with the row's address unknown that
    way, LLVM compiled the exp loop over the row 40% slower (in cache).
    """
    return np.uint64(blk * per_block), np.uint64(min((blk + 1) * per_block, n_rows))


@njit(inline="always")
def next_row(X, n):
    """Row ``n + 1`` of ``X`` (row ``n`` for the last): the row to prefetch."""
    return X[min(n + np.uint64(1), np.uint64(X.shape[0] - 1))]


@njit(inline="always")
def row_or_shared(W, n):
    """Row ``n`` of ``W``, or its only row, shared by every row."""
    return W[n] if W.shape[0] > 1 else W[0]


@njit(inline="always")
def set_row(loss, G, n, with_grad, value):
    """A row whose loss and gradient are one constant (ignored: 0, undefined: NaN)."""
    loss[n] = value
    if with_grad:
        row_fill(G[n], value)


# --- rows of few classes ----------------------------------------------------------
# A row of a few classes is too short for the loops above: their vector
# bodies barely run, and each row pays their set-up, its slices and its
# branches. Short rows (see FLAT_CLASSES and FLAT_BYTES) are instead worked on
# FLAT_ROWS at a time, as one flat run of elements: one loop takes every exp
# of the run, with each row's max spread to its elements, and one loop writes
# every element of the output. The loops over one row index the run with
# unsigned integers, not through a slice of the row (a slice cost 1-2 ns a
# row). The runs' outputs are written with plain stores, never streamed.
# Label smoothing and probability targets take ce_flat_target_rows (rows of at
# most FLAT_TARGET_BYTES); rows with a softcap go row by row.
# A run's logs of its sums of exps are taken in one vectorised loop (log_vec),
# not by math.log row by row: the focal loss at gamma = 0 keeps the bits of
# cross-entropy, as both take the same path for the same rows.
# Classes a row at most, for the flat runs of log_softmax and softmax.
FLAT_CLASSES = 64
# Bytes a row at most, for the flat runs of logsumexp, cross-entropy (class
# indices, no smoothing) and the softmax focal loss: 128 float32 classes, 64
# float64. Against their rows one by one, float32 (2048 rows, threaded): at
# 65, 100 and 128 classes the fused gradient took 0.71, 0.85 and 0.92 of the
# time, the loss 0.45-0.75, logsumexp 0.67-0.83, the focal loss 0.73-0.86;
# at 160 and 192 the fused gradient took 1.24 and 1.08. log_softmax and
# softmax took up to 1.21 at 128 classes. float64 at 100 classes: the fused
# gradient 1.00, at 128 1.08.
FLAT_BYTES = 512
# Rows a run (64, 128 and 512 took within 5% of the time of 256, from
# 32 x 10 to 131072 x 21 float32).
FLAT_ROWS = 256
# Bytes a row at most, for the flat runs of smoothed or probability targets,
# whose runs take more passes: 64 float32 classes, 32 float64 (4096 x 64
# float64 rows, smoothed, took 1.11-1.14 of their row-by-row time; 8192 x 32,
# 0.75-0.88).
FLAT_TARGET_BYTES = 256


@njit(inline="always")
def spread_rows(values, n_classes, out):
    """``out[n * n_classes + c] = values[n]``: a value per row, for each of its elements."""
    C = np.uint64(n_classes)
    for n in range(np.uint64(values.size)):
        v = values[n]
        for c in range(C):
            out[n * C + c] = v


def _exp_shifted(x, e):
    """``e = exp(x - e)``: the exps of a flat run, ``e`` holding each element's shift."""
    for i in range(e.size):
        e[i] = exp_vec(x[i] - e[i])


# Compiled on its own, four vectors at a time, not inlined into the kernels:
# there, LLVM re-loaded the exp's 11 constants from memory in every iteration
# of the vectorised loop (compiled apart, they stay in registers), and
# logsumexp, cross_entropy and its fused gradient took 5-13% more time on
# rows of 10 to 64 float32 classes.
exp_shifted = cached_njit(_exp_shifted, **KERNEL_OPTIONS)
_interleave.counts[id(exp_shifted)] = 4


@njit(inline="always")
def flat_exp_sums(x, n_classes, shift, e, d):
    """For the rows held flat in ``x`` (row n is ``x[n * C : (n + 1) * C]``,
    C <= SUM_CHUNK): ``shift[n]``, ``d[n] = sum(exp(row - shift[n]))`` and
    ``e = exp(x - shift)``, as :func:`row_exp_sum` gives them.

    The first shift is the row's max over :func:`order_key`, so no sum
    overflows: a sum that is not finite comes from a NaN or +inf, or a row all
    -inf, and its row's shift becomes its row_max (NaN, +inf, -inf).
    """
    C = np.uint64(n_classes)
    for n in range(np.uint64(shift.size)):
        shift[n] = key_max(x, n * C, C)
    spread_rows(shift, C, e)  # e holds each element's shift, then its exp
    exp_shifted(x, e)
    for n in range(np.uint64(shift.size)):
        s = x.dtype.type(0.0)
        for c in range(C):  # one chunk of SUM_CHUNK, as in row_sum
            s += e[n * C + c]
        d[n] = s
        if not (np.isfinite(d[n]) and np.isfinite(shift[n])):
            shift[n] = row_max(x[n * C : (n + 1) * C])


@njit(inline="always")
def flat_scratch(n_classes, dtype, used, n_runs=2):
    """Scratch of the flat runs (empty unless ``used``): ``n_runs`` runs of
    FLAT_ROWS rows in ``dtype``, and four values a row in float64."""
    size = FLAT_ROWS if used else 0
    return np.empty((n_runs, size * n_classes), dtype), np.empty((4, size))


@njit(inline="always")
def flat_run(X, lo, hi, scratch):
    """Rows ``lo`` to ``hi`` of ``X`` as one flat run ``x``, with their
    :func:`flat_exp_sums` ``e``, ``shift`` and ``d``: ``(x, e, spread, shift,
    d, v, u)``, where ``spread`` is the second run of :func:`flat_scratch`
    and ``v``, ``u`` two free per-row values."""
    C = np.uint64(X.shape[1])
    m = hi - lo
    runs, rows = scratch
    x = flat(X)[lo * C : hi * C]  # indexed from 0: see the module docstring
    e, shift, d = runs[0][: m * C], rows[0][:m], rows[1][:m]
    flat_exp_sums(x, C, shift, e, d)
    return x, e, runs[1][: m * C], shift, d, rows[2][:m], rows[3][:m]


@njit(inline="always")
def flat_run_logs(X, lo, hi, scratch):
    """:func:`flat_run`, with ``v = log(d)`` (:func:`log_sums`)."""
    x, e, spread, shift, d, v, u = flat_run(X, lo, hi, scratch)
    log_sums(d, v)
    return x, e, spread, shift, d, v, u


@njit(inline="always")
def lse_from(log_d, shift):
    """A row's log-sum-exp from :func:`row_exp_sum`'s ``(d, shift)``, given
    ``log_d = log(d)``: its max when that is not finite (as
    scipy.special.logsumexp)."""
    return shift + log_d if np.isfinite(shift) else shift


def _log_sums(d, out):
    """``out[j] = log(d[j])`` for a run's sums of exps, in one vectorised loop.

    (Each row's ``math.log``, a call, took 3-4 ns a row more at C = 10.) A
    row that is not finite gets a value of no use.
    """
    for j in range(d.size):
        out[j] = log_vec(d[j])


# Compiled on its own, not inlined into the kernels: inlined into ce_rows, it
# made the row-by-row path, whose code it does not touch, take 3-5% more time
# in the forward pass at C = 100 and 200 (float32; why, not established).
# Compiled on its own, the threaded build took 0.97-1.00 of the time before,
# the serial build still 1.02-1.04.
log_sums = cached_njit(_log_sums, **KERNEL_OPTIONS)


# --- softmax family -----------------------------------------------------------
# Non-finite row max (a NaN, a +inf, or a row all -inf) follows scipy.special:
# logsumexp returns the max, log_softmax returns x - max, softmax returns NaN.


@kernel(interleave=SUM_INTERLEAVE)
def logsumexp_rows(X, out):
    # The flat runs do not borrow their arrays (see borrow): borrowed, they
    # took 3.5-5.5% more time than this form (3200 x 10 and 131072 x 21
    # float32). The rows one by one do: serial, at 256 x 1000 float32 (in
    # cache), they took 0.87 of the time without borrowing.
    N, C = X.shape
    flat_rows = C <= FLAT_BYTES // X.itemsize
    n_blocks, per_block = row_blocks(N, C)
    for blk in prange(n_blocks):
        first, stop = block_rows(blk, per_block, N)
        if flat_rows:
            owned = flat_scratch(C, X.dtype, True)
            for lo in range(first, stop, np.uint64(FLAT_ROWS)):
                hi = min(lo + np.uint64(FLAT_ROWS), stop)
                x, e, _, shift, d, log_d, _ = flat_run_logs(X, lo, hi, owned)
                for j in range(hi - lo):
                    out[lo + j] = lse_from(log_d[j], shift[j])
        else:
            rows = borrow(X)
            for n in range(first, stop):
                d, shift = row_exp_sum(rows[n], rows[n], False)
                out[n] = lse_from(math.log(d), shift)


@kernel(interleave=SUM_INTERLEAVE)
def log_softmax_rows(X_arg, out_arg):
    N, C = X_arg.shape
    flat_rows = C <= FLAT_CLASSES
    n_blocks, per_block = row_blocks(N, C)
    for blk in prange(n_blocks):
        X, out = borrow((X_arg, out_arg))
        owned = flat_scratch(C, X.dtype, flat_rows)
        runs = borrow(owned)
        first, stop = block_rows(blk, per_block, N)
        if flat_rows:
            for lo in range(first, stop, np.uint64(FLAT_ROWS)):
                hi = min(lo + np.uint64(FLAT_ROWS), stop)
                x, e, spread, shift, d, log_d, _ = flat_run_logs(X, lo, hi, runs)
                for j in range(hi - lo):
                    log_d[j] = log_d[j] if np.isfinite(shift[j]) else 0.0
                spread_rows(shift, C, spread)
                spread_rows(log_d, C, e)
                o = flat(out)[lo * C : hi * C]  # indexed from 0: see the module docstring
                for i in range(o.size):
                    o[i] = (x[i] - spread[i]) - e[i]  # as write_row
        else:
            for n in range(first, stop):
                x = X[n]
                d, shift = row_exp_sum(x, x, False)
                log_d = math.log(d) if np.isfinite(shift) else 0.0
                write_row(out[n], x, 1.0, shift, log_d, False, -1, x[:0])  # out is new: see streams
        keep_alive(owned)


# float32 rows of at least this many bytes, in arrays of STREAM_MIN_BYTES and
# more, have softmax compute each exp twice (for the sum, then for the
# result) rather than store it in a scratch row: one too long to stay in the
# L1 cache costs more in L2 traffic than a second exp, where the pass waits on
# memory anyway. Twice against stored, into new arrays (and into an existing
# one): 4096 x 32000 0.90-0.93 (0.79-0.80), 1024 x 128256 0.95-0.99
# (0.84-0.86), 1024 x 8192 0.98 (0.84-0.88); 128 x 32000 1.00-1.02 (0.97-1.00).
# Rows of 512-4096 classes: 0.86-1.12, and arrays that stay in cache 1.03-1.22
# (64 x 32000, 32 x 128256), so those store. float64 exps take twice the
# arithmetic: 1.02-1.14 (0.95-1.31), so float64 rows store.
SOFTMAX_TWICE_ROW_BYTES = 1 << 15


@njit(inline="always")
def exps_scaled(out, x, shift, scale):
    """``out = exp(x - shift) * scale``: the exps of :func:`row_exp_sum`,
    computed again, scaled as :func:`write_row` scales stored ones (the same
    bits)."""
    dt = x.dtype.type
    scale = dt(scale)
    for c in range(min(x.size, out.size)):
        store_scratch(out, c, exp_vec(load_row(x, c) - shift) * scale)


@kernel(interleave=4)
def softmax_rows(X_arg, out_arg):
    N, C = X_arg.shape
    flat_rows = C <= FLAT_CLASSES
    twice = X_arg.itemsize == 4 and X_arg.nbytes >= STREAM_MIN_BYTES and C * 4 >= SOFTMAX_TWICE_ROW_BYTES
    n_blocks, per_block = row_blocks(N, C)
    for blk in prange(n_blocks):
        X, out = borrow((X_arg, out_arg))
        owned, owned_runs = np.empty(0 if flat_rows or twice else C, X.dtype), flat_scratch(C, X.dtype, flat_rows)
        scratch, runs = borrow(owned), borrow(owned_runs)
        first, stop = block_rows(blk, per_block, N)
        if flat_rows:
            for lo in range(first, stop, np.uint64(FLAT_ROWS)):
                hi = min(lo + np.uint64(FLAT_ROWS), stop)
                x, e, spread, shift, d, inv_d, _ = flat_run(X, lo, hi, runs)
                for j in range(hi - lo):
                    inv_d[j] = 1.0 / d[j] if np.isfinite(shift[j]) else np.nan
                spread_rows(inv_d, C, spread)
                o = flat(out)[lo * C : hi * C]  # indexed from 0: see the module docstring
                for i in range(o.size):
                    o[i] = e[i] * spread[i]
        else:
            for n in range(first, stop):
                x = X[n]
                d, shift = row_exp_sum(x, scratch, not twice)
                if not np.isfinite(shift):
                    row_fill(out[n], np.nan)
                elif twice:
                    exps_scaled(out[n], x, shift, 1.0 / d)
                else:
                    write_row(out[n], scratch, 1.0 / d, 0.0, 0.0, False, -1, x[:0])  # out is new: see streams
        keep_alive(owned)
        keep_alive(owned_runs)


# --- cross-entropy ---------------------------------------------------------------
# Per row, with x the logits after the optional softcap x <- cap tanh(x / cap),
# p = softmax(x), lse = log-sum-exp, eps = label smoothing, s the sample weight:
#   index target y:  t' = (1-eps) onehot(y) + eps/C,  row weight r = s w_y
#   soft target t:   t' = (1-eps) t + eps/C,          row weight r = s
#   loss = s sum_c w_c t'_c (lse - x_c) + z r lse^2
#   grad = k [s p sum(w t') - s w t'] + k 2 z r lse p,  times 1 - tanh^2(x / cap) with a softcap
# where k is the reduction's scale (1, or 1/denominator for "mean"). lse - x_c
# is computed as log(d) + (shift - x_c), d = sum(exp(x - shift)), so that a
# large common shift stays exact.
# Everything read from x is read before the gradient row is written, so the
# gradient may overwrite the logits (G is X).


def _row_argmax(x):
    """First index of the row max, or of the first NaN (as ``np.argmax``).

    One pass finds the max of each chunk of SUM_CHUNK elements, and so the
    first chunk holding the row's; a second, over that chunk only, its first
    index. Both vectorise: the search as a min reduction over the indices of
    hits (the search element by element took twice the time at C = 10).
    """
    peak, peak_at = x.dtype.type(-np.inf), 0
    for start in range(0, x.size, SUM_CHUNK):
        m = row_max(x[start : start + SUM_CHUNK])
        if m > peak or (m != m and peak == peak):  # a larger max, or the first NaN
            peak, peak_at = m, start
    chunk = x[peak_at : peak_at + SUM_CHUNK]  # indexed from 0: see the module docstring
    first = chunk.size
    for c in range(chunk.size):
        hit = (chunk[c] == peak) | (chunk[c] != chunk[c])
        first = min(first, c if hit else chunk.size)
    return peak_at + first


# Compiled on its own, not inlined into ce_rows: inlined, its code made the
# rows of plain calls (without argmax) 2.5% slower at 3200 x 10 float32.
row_argmax = cached_njit(_row_argmax, **KERNEL_OPTIONS)


def _softcap_row(x, cap, out):
    """``out = cap * tanh(x / cap)`` (:func:`softcap`)."""
    dt = x.dtype.type
    c, inv = dt(cap), dt(1.0 / cap)
    for k in range(x.size):
        out[k] = softcap(x[k], c, inv)


# Compiled on its own, four vectors at a time, not inlined into ce_rows: there,
# at ce_rows's interleave (1 with AVX2), the loop had more constants than
# vector registers and re-broadcast them for every vector, and softcapped
# cross-entropy ran 15% slower (AVX2, float32, in cache) than with this build.
softcap_row = cached_njit(_softcap_row, **KERNEL_OPTIONS)
_interleave.counts[id(softcap_row)] = 4


@njit(inline="always")
def soft_target_terms(x, t, w, shift, keep, spread):
    """sum(w t') and sum(w t' (shift - x)) in float64, with t' = keep t + spread,
    over chunks of SUM_CHUNK summed in the working precision (see
    :func:`row_weighted_gap`)."""
    dt = x.dtype.type
    tw_sum = 0.0
    gap = 0.0
    for start in range(0, x.size, SUM_CHUNK):
        stop = start + SUM_CHUNK
        xc, tc, wc = x[start:stop], t[start:stop], w[start:stop]  # indexed from 0: see the module docstring
        tw_part, gap_part = dt(0.0), dt(0.0)
        for c in range(xc.size):
            wt = wc[c] * (keep * tc[c] + spread)
            tw_part += wt
            # a class with zero target mass adds nothing, even where x = -inf
            gap_part += wt * (shift - xc[c]) if wt != 0 else dt(0.0)
        tw_sum += tw_part
        gap += gap_part
    return tw_sum, gap


@njit(inline="always")
def index_target_terms(w_y, eps, n_classes, w_sum, log_d, gap_to_label, gap):
    """``(sum(w t'), ce)`` of a row with a class-index target: ``w_y`` its
    label's weight, ``gap_to_label = shift - x[label]`` and ``gap`` the
    :func:`row_weighted_gap` (unused without smoothing)."""
    tw_sum = (1.0 - eps) * w_y + (eps / n_classes) * w_sum
    ce = (1.0 - eps) * w_y * (log_d + gap_to_label) + (eps / n_classes) * (log_d * w_sum + gap)
    return tw_sum, ce


@njit(inline="always")
def row_loss_terms(ce, tw_sum, s, r, row_lse, d, n_classes, scale, z):
    """``(loss, z-loss term, a, k)`` of a row: ``a`` scales its exps into its
    gradient, ``k`` the target's part (see the formulas above)."""
    # With C = 1, p = 1 and the cross-entropy part is exactly zero, which
    # the general formula misses by rounding: drop it (the z-loss stays).
    k = 0.0 if n_classes == 1 else scale * s
    zl = z * r * row_lse * row_lse
    loss = (0.0 if n_classes == 1 else s * ce) + zl
    return loss, zl, (k * tw_sum + scale * 2.0 * z * r * row_lse) / d, k


@njit(inline="always")
def flat_row_head(x, C, j, n, ignored, shift, a, loss, z_loss, lse, argmax):
    """What each row of a flat run of cross-entropy gets first (row ``j`` of
    the run ``x`` of rows of ``C`` classes, row ``n`` of the batch): its
    ``argmax``, its ``lse`` and a 0 ``z_loss`` (those not empty). Returns
    ``(done, log(d), lse)``, ``done`` for a row that then needs nothing more:
    its loss and its ``a`` (see :func:`flat_grad`) are 0 when ``ignored``,
    else NaN when its max is not finite."""
    if argmax.size:
        argmax[n] = row_argmax(x[j * C : (j + 1) * C])
    if z_loss.size:
        z_loss[n] = 0.0
    if not np.isfinite(shift[j]):  # NaN or +inf in the row, or the row all -inf
        if lse.size:
            lse[n] = shift[j]
        loss[n] = a[j] = 0.0 if ignored else np.nan  # a: the whole row's gradient, here
        return True, 0.0, 0.0
    log_d = a[j]
    row_lse = shift[j] + log_d
    if lse.size:
        lse[n] = row_lse
    if ignored:
        loss[n] = a[j] = 0.0
        return True, log_d, row_lse
    return False, log_d, row_lse


@njit(inline="always")
def ce_flat_rows(X, y, w, w_sum, sw, ignore_index, scale, z, with_grad, G, loss, z_loss, lse, argmax, lo, hi, scratch):
    """``ce_rows`` for its rows ``lo`` to ``hi`` (at most FLAT_ROWS) of at most
    FLAT_BYTES, with class-index targets, no smoothing and no softcap, worked
    on flat in the ``scratch`` of :func:`flat_scratch`. As there, a row's loss
    and gradient are NaN when its max is not finite, and zero when it is
    ignored."""
    C = np.uint64(X.shape[1])
    x, e, spread, shift, d, a, fix = flat_run_logs(X, lo, hi, scratch)  # a: log(d), then the gradient's scale
    for j in range(hi - lo):
        n = lo + j
        label = y[n]
        done, log_d, row_lse = flat_row_head(x, C, j, n, label == ignore_index, shift, a, loss, z_loss, lse, argmax)
        if done:
            continue
        s = sw[n] if sw.size else 1.0
        w_y = float(w[label])
        gap_to_label = float(X.dtype.type(shift[j]) - x[j * C + label])
        tw_sum, ce = index_target_terms(w_y, 0.0, C, w_sum, log_d, gap_to_label, 0.0)
        loss[n], zl, a[j], k = row_loss_terms(ce, tw_sum, s, s * w_y, row_lse, d[j], C, scale, z)
        if z_loss.size:
            z_loss[n] = zl
        fix[j] = X.dtype.type(k * w_y)
    if with_grad:
        flat_grad(G, y, False, ignore_index, lo, hi, e, spread, shift, a, fix, e[:0])


def _ce_flat_target_rows(
    X, y, T, w, w_sum, sw, ignore_index, eps, scale, z, with_grad, G, loss, z_loss, lse, argmax, lo, hi
):
    """:func:`ce_flat_rows` with label smoothing ``eps`` or probabilities
    ``T`` (when it has rows), in three runs of :func:`flat_scratch` of its
    own: the third holds the targets' part of the gradient, an element at a
    time, as ``ce_rows`` subtracts it from a row's scaled exps."""
    X, y, T, w, sw, G, loss, z_loss, lse, argmax = borrow((X, y, T, w, sw, G, loss, z_loss, lse, argmax))
    C = np.uint64(X.shape[1])
    dt = X.dtype.type
    soft = T.shape[0] > 0
    keep, spread_eps = dt(1.0 - eps), dt(eps / C)
    owned = flat_scratch(C, X.dtype, True, 3)
    scratch = borrow(owned)
    x, e, spread, shift, d, a, fix = flat_run_logs(X, lo, hi, scratch)  # a: log(d), then the gradient's scale
    target_part = scratch[0][2][: (hi - lo) * C]
    for j in range(hi - lo):
        n = lo + j
        label = -1 if soft else y[n]
        ignored = label == ignore_index and not soft
        done, log_d, row_lse = flat_row_head(x, C, j, n, ignored, shift, a, loss, z_loss, lse, argmax)
        if done:
            continue
        s = sw[n] if sw.size else 1.0
        row, row_shift = x[j * C : (j + 1) * C], dt(shift[j])
        part = target_part[j * C : (j + 1) * C]
        if soft:
            t = T[n]
            tw_sum, gap = soft_target_terms(row, t, w, row_shift, keep, spread_eps)
            loss[n], zl, a[j], k = row_loss_terms(log_d * tw_sum + gap, tw_sum, s, s, row_lse, d[j], C, scale, z)
            if with_grad:
                kt = dt(k)
                for c in range(C):
                    part[c] = kt * (w[c] * (keep * t[c] + spread_eps))
        else:
            w_y = float(w[label])
            gap_to_label, gap = float(row_shift - x[j * C + label]), row_weighted_gap(row, row_shift, w)
            tw_sum, ce = index_target_terms(w_y, eps, C, w_sum, log_d, gap_to_label, gap)
            loss[n], zl, a[j], k = row_loss_terms(ce, tw_sum, s, s * w_y, row_lse, d[j], C, scale, z)
            fix[j] = dt(k * (1.0 - eps) * w_y)
            if with_grad:
                b = dt(k * eps / C)
                for c in range(C):
                    part[c] = b * w[c]
        if z_loss.size:
            z_loss[n] = zl
    if with_grad:
        flat_grad(G, y, soft, ignore_index, lo, hi, e, spread, shift, a, fix, target_part)
    keep_alive(owned)


# Compiled on its own and called once a run, not inlined into ce_rows: there,
# it made plain calls (class indices, no smoothing), which never run it, take
# 3-5% more time at 3200 x 10 float32 (the serial build); on its own, they
# keep theirs. It borrows its arrays again (see borrow): without, smoothed
# and soft targets at 3200 x 10 took 0.72-0.79 of their row-by-row time,
# with, 0.54-0.60.
ce_flat_target_rows = cached_njit(_ce_flat_target_rows, **KERNEL_OPTIONS)
_interleave.counts[id(ce_flat_target_rows)] = SUM_INTERLEAVE


@njit(inline="always")
def flat_grad(G, y, soft, ignore_index, lo, hi, e, spread, shift, a, fix, target_part):
    """Rows ``lo`` to ``hi`` of the gradient of a loss, from their flat run:
    ``e * a - target_part``, and ``fix`` less at the label (class indices),
    with ``a`` and ``fix`` one value a row and ``target_part`` one an element
    (empty: 0). A row ignored or not finite is ``a`` all along (0 or NaN),
    whatever its exps."""
    C = np.uint64(G.shape[1])
    spread_rows(a, C, spread)
    g = flat(G)[lo * C : hi * C]  # indexed from 0: see the module docstring
    if target_part.size:
        for i in range(g.size):
            g[i] = e[i] * spread[i] - target_part[i]
    else:
        for i in range(g.size):
            g[i] = e[i] * spread[i]
    for j in range(hi - lo):
        label = -1 if soft else y[lo + j]
        if (label == ignore_index and not soft) or not np.isfinite(shift[j]):
            row_fill(g[j * C : (j + 1) * C], a[j])
        elif not soft:
            g[j * C + label] -= G.dtype.type(fix[j])


@kernel(interleave=SUM_INTERLEAVE)
def ce_rows(X_arg, y_arg, T_arg, w_arg, weighted, w_sum, sw_arg, ignore_index, eps, cap, z, scale, with_grad, G_arg, stream, loss_arg, z_loss_arg, lse_arg, argmax_arg):
    """Cross-entropy per row: class indices ``y``, or probabilities ``T`` when it has rows.

    ``sw`` holds one weight per row (empty: all ones); ``cap`` is the softcap
    (0: none) and ``z`` the z-loss factor. ``loss[n]`` receives the row's loss;
    ``z_loss``, ``lse`` and ``argmax``, unless empty, the row's z-loss term,
    log-sum-exp (of the softcapped logits) and predicted class (of the raw
    logits). Returns the sum of ``loss``.
    """
    N, C = X_arg.shape
    dt = X_arg.dtype.type
    soft = T_arg.shape[0] > 0
    keep = dt(1.0 - eps)
    spread = dt(eps / C) if C else dt(0.0)
    targeted = soft or eps > 0.0  # flat, in ce_flat_target_rows
    flat = cap == 0.0 and C <= (FLAT_TARGET_BYTES if targeted else FLAT_BYTES) // X_arg.itemsize
    n_blocks, per_block = row_blocks(N, C)
    for blk in prange(n_blocks):
        X, y, T, w, sw, G, loss, z_loss, lse, argmax = borrow(
            (X_arg, y_arg, T_arg, w_arg, sw_arg, G_arg, loss_arg, z_loss_arg, lse_arg, argmax_arg)
        )
        owned = (np.empty(C if with_grad and not flat else 0, X.dtype), np.empty(C if cap > 0.0 else 0, X.dtype))
        scratch, capped = borrow(owned)
        owned_runs = flat_scratch(C, X.dtype, flat and not targeted)
        runs = borrow(owned_runs)
        first, stop = block_rows(blk, per_block, N)
        if flat:
            for lo in range(first, stop, np.uint64(FLAT_ROWS)):
                hi = min(lo + np.uint64(FLAT_ROWS), stop)
                if targeted:
                    ce_flat_target_rows(
                        X, y, T, w, w_sum, sw, ignore_index, eps, scale, z, with_grad, G, loss, z_loss, lse, argmax,
                        lo, hi,
                    )  # fmt: skip
                else:
                    ce_flat_rows(
                        X, y, w, w_sum, sw, ignore_index, scale, z, with_grad, G, loss, z_loss, lse, argmax, lo, hi,
                        runs,
                    )  # fmt: skip
        else:
            for n in range(first, stop):
                x = X[n]
                label = -1 if soft else y[n]
                ignored = label == ignore_index and not soft
                if z_loss.size:
                    z_loss[n] = 0.0
                if ignored and lse.size == 0 and argmax.size == 0:  # the row is not even read
                    set_row(loss, G, n, with_grad, 0.0)
                    continue
                store = with_grad and not ignored
                if cap > 0.0:
                    # the capped row stays in cache: its exps then overlap the
                    # next row's reads
                    softcap_row(x, cap, capped)
                    xs, upcoming = capped, next_row(X, n)
                else:
                    xs, upcoming = x, ahead(x, store and stream)
                # With a softcap and only the target's term to subtract, the exps are
                # stored times the softcap's slope, and the gradient is then written
                # in one pass. (A constant store flag there, as in the elementwise
                # kernels: a store under a runtime condition can keep a loop scalar.)
                sloped = cap > 0.0 and store and not soft and eps == 0.0
                if sloped:
                    d, shift = row_exp_sum_from_sloped(xs, scratch, True, head_max(xs), upcoming, 1.0 / cap)
                else:
                    d, shift = row_exp_sum_from(xs, scratch, store, head_max(xs), upcoming, 0.0)
                if argmax.size:  # of the raw logits
                    argmax[n] = row_argmax(x)
                if not np.isfinite(shift):  # NaN or +inf in the row, or the row all -inf
                    if lse.size:
                        lse[n] = shift
                    set_row(loss, G, n, with_grad, 0.0 if ignored else np.nan)
                    continue
                log_d = math.log(d)
                row_lse = shift + log_d
                if lse.size:
                    lse[n] = row_lse
                if ignored:
                    set_row(loss, G, n, with_grad, 0.0)
                    continue
                s = sw[n] if sw.size else 1.0
                w_y = 0.0
                if soft:
                    tw_sum, gap = soft_target_terms(xs, T[n], w, shift, keep, spread)
                    ce = log_d * tw_sum + gap
                    r = s
                else:
                    w_y = float(w[label])
                    gap = row_weighted_gap(xs, shift, w) if eps > 0.0 else 0.0
                    tw_sum, ce = index_target_terms(w_y, eps, C, w_sum, log_d, float(shift - xs[label]), gap)
                    r = s * w_y
                row_loss, zl, a, k = row_loss_terms(ce, tw_sum, s, r, row_lse, d, C, scale, z)
                loss[n] = row_loss
                if z_loss.size:
                    z_loss[n] = zl
                if not with_grad:
                    continue
                a = dt(a)
                g = G[n]
                if sloped or (not soft and cap == 0.0 and not (weighted and eps > 0.0)):
                    write_row(g, scratch, a, dt(k * eps / C), 0.0, stream, label, next_row(X, n))
                    fix = dt(k * (1.0 - eps) * w_y)
                    g[label] -= fix * softcap_slope(xs, label, dt(1.0 / cap)) if sloped else fix
                    continue
                if soft:
                    t, kt = T[n], dt(k)
                    for c in range(C):
                        scratch[c] = scratch[c] * a - kt * (w[c] * (keep * t[c] + spread))
                else:
                    b = dt(k * eps / C)
                    for c in range(C):
                        scratch[c] = scratch[c] * a - b * w[c]
                    scratch[label] -= dt(k * (1.0 - eps) * w_y)
                if cap > 0.0:
                    inv_t = dt(1.0 / cap)
                    for c in range(C):
                        scratch[c] *= softcap_slope(capped, c, inv_t)
                write_row(g, scratch, 1.0, 0.0, 0.0, stream, -1, next_row(X, n))
        store_fence()
        keep_alive(owned)
        keep_alive(owned_runs)
    return ordered_sum(loss_arg)


# --- elementwise losses ----------------------------------------------------------
# ELEMENTWISE: the kernels below treat each element as its own prediction.
# Their row functions are called with constant flags (with_grad, ...) at each
# call site: a store under a runtime condition keeps LLVM from vectorising the
# loop. Per-element losses go to L for reduction="none", otherwise to a scratch
# row that stays in cache; each row's losses are summed in a loop of their own
# (summed in the loop that writes the gradient, their order would depend on
# whether the gradient overwrites the input, which changes how LLVM vectorises).


# --- binary cross-entropy with logits -------------------------------------------
# Per element, with lw = 1 + (pos_weight - 1) t and softplus(-x) = log(1 + e^-x)
# evaluated as log1p(exp(-|x|)) + max(-x, 0) (finite for any finite x):
#   loss = w [(1 - t) x + lw softplus(-x)],   grad = s w [lw sigmoid(x) - pos_weight t]


@njit(inline="always")
def _bce_logits_row(x, t, w, pw, out, g, s, with_grad):
    dt = x.dtype.type
    one, zero = dt(1.0), dt(0.0)
    for c in range(x.size):
        xc, tc = x[c], t[c]
        e = exp_vec(-abs(xc))  # exp(-|x|), in (0, 1]
        lw = (pw[c] - one) * tc + one
        out[c] = w[c] * ((one - tc) * xc + lw * (log1p_unit(e) + max(-xc, zero)))
        if with_grad:  # g may be x: x[c] is read above, before this write
            r = one / (one + e)
            sigmoid = r if xc >= zero else e * r
            g[c] = s * w[c] * (lw * sigmoid - pw[c] * tc)


@kernel(interleave=4)
def bce_logits_rows(X_arg, T_arg, W_arg, PW_arg, scale, with_grad, G_arg, L_arg, row_loss_arg):
    """Binary cross-entropy with logits per element, into ``L`` (unless it is
    empty), its row sums into ``row_loss``; returns the sum of ``row_loss``.

    ``W`` and ``PW`` hold either one row (shared by every row) or one per row.
    """
    N, C = X_arg.shape
    s = X_arg.dtype.type(scale)
    n_blocks, per_block = row_blocks(N, C)
    for blk in prange(n_blocks):
        X, T, W, PW, G, L, row_loss = borrow((X_arg, T_arg, W_arg, PW_arg, G_arg, L_arg, row_loss_arg))
        owned = np.empty(0 if L.size else C, X.dtype)
        scratch = borrow(owned)
        first, stop = block_rows(blk, per_block, N)
        for n in range(first, stop):
            out = L[n] if L.size else scratch
            w, pw = row_or_shared(W, n), row_or_shared(PW, n)
            if with_grad:  # constant flags at each call: see ELEMENTWISE
                _bce_logits_row(X[n], T[n], w, pw, out, G[n], s, True)
            else:
                _bce_logits_row(X[n], T[n], w, pw, out, out, s, False)
            row_loss[n] = row_sum(out)
        keep_alive(owned)
    return ordered_sum(row_loss_arg)


# --- losses on probabilities -----------------------------------------------------
# PyTorch's binary_cross_entropy per element (aten/src/ATen/native/Loss.cpp),
# each log clamped at -100 so that p = 0 or 1 gives a finite loss:
#   loss = w [(t - 1) max(log1p(-p), -100) - t max(log(p), -100)]
#   grad = s w (p - t) / max((1 - p) p, eps)
# with PyTorch's eps in the denominator, which bounds the gradient at p = 0, 1.




@njit(inline="always")
def _bce_probs_row(p, t, w, out, g, eps, s, with_grad):
    dt = p.dtype.type
    one, floor = dt(1.0), dt(-100.0)
    tiny = dt(np.finfo(np.float32).tiny)
    for c in range(p.size):
        pc, tc = p[c], t[c]
        # log1p(-p) = log(q) + e / q, with q = 1 - p rounded and e = 1 - p - q
        # exactly (1 - q is exact); max() keeps 0 / 0 away at p = 1
        q = one - pc
        log1p_neg_p = log_vec(q) + ((one - q) - pc) / max(q, tiny)
        log_p = max(log_vec(pc), floor)
        log_q = max(log1p_neg_p, floor)
        out[c] = ((tc - one) * log_q - tc * log_p) * w[c]
        if with_grad:  # g may be p: p[c] is read above, before this write
            g[c] = (pc - tc) / max(q * pc, eps) * w[c] * s


@kernel(interleave=4)
def bce_probs_rows(P_arg, T_arg, W_arg, eps, scale, with_grad, G_arg, L_arg, row_loss_arg):
    """Binary cross-entropy of probabilities per element, into ``L`` (unless it
    is empty), its row sums into ``row_loss``; returns the sum of ``row_loss``.

    ``W`` holds either one row (shared by every row) or one per row.
    """
    N, C = P_arg.shape
    dt = P_arg.dtype.type
    eps, s = dt(eps), dt(scale)
    n_blocks, per_block = row_blocks(N, C)
    for blk in prange(n_blocks):
        P, T, W, G, L, row_loss = borrow((P_arg, T_arg, W_arg, G_arg, L_arg, row_loss_arg))
        owned = np.empty(0 if L.size else C, P.dtype)
        scratch = borrow(owned)
        first, stop = block_rows(blk, per_block, N)
        for n in range(first, stop):
            out = L[n] if L.size else scratch
            w = row_or_shared(W, n)
            if with_grad:  # constant flags at each call: see ELEMENTWISE
                _bce_probs_row(P[n], T[n], w, out, G[n], eps, s, True)
            else:
                _bce_probs_row(P[n], T[n], w, out, out, eps, s, False)
            row_loss[n] = row_sum(out)
        keep_alive(owned)
    return ordered_sum(row_loss_arg)


# --- focal losses ------------------------------------------------------------------


# Sigmoid focal loss per element (torchvision.ops.sigmoid_focal_loss), with
# p = sigmoid(x), q = 1 - p_t = (1 - t) p + t (1 - p) and a_t = a_neg + (a_pos - a_neg) t:
#   loss = a_t q^g ce,  ce = (1 - t) x + softplus(-x)
#   grad = s a_t q^g [(p - t) + g ce (1 - 2t) p (1 - p) / q]
# where s is the reduction's scale. With e = exp(-|x|) and r = 1 / (1 + e),
# p and 1 - p are r and e r (in some order), so q = r u with
# u = (1 - t) + t e (x >= 0) or t + (1 - t) e (x < 0), u in [e, 1]:
# log q = log(u) - log1p(e) keeps its precision where 1 - p_t would round to 0,
# and p (1 - p) / q = e r / u <= 1 keeps the gradient finite for g < 1.
# g = 2 (the usual choice) takes q * q: half the time of exp(g log q).


@njit(inline="always")
def _sigmoid_focal_row(x, t, out, grad, a0, a1, g, s, with_grad, square):
    dt = x.dtype.type
    one, zero, two = dt(1.0), dt(0.0), dt(2.0)
    for c in range(x.size):
        xc, tc = x[c], t[c]
        e = exp_vec(-abs(xc))
        r = one / (one + e)
        log1p_e = log1p_unit(e)
        # x + max(-x, 0) is exact for t = 0: log1p(e) is added last, so a
        # confident right answer keeps its small loss (focal losses weigh those)
        ce = ((one - tc) * xc + max(-xc, zero)) + log1p_e
        u = (one - tc) + tc * e if xc >= zero else tc + (one - tc) * e
        if square:
            q = r * u
            focus = q * q
        else:  # u = 0 only where e underflows and t is 0 or 1: there ce = 0 and p = t
            focus = exp_vec(g * min(log_vec(u) - log1p_e, zero)) if u > zero else zero
        weight = (a0 + a1 * tc) * focus
        out[c] = weight * ce
        if with_grad:  # grad may be x: x[c] is read above, before this write
            e_r = e * r
            sigmoid, not_sigmoid = (r, e_r) if xc >= zero else (e_r, r)
            # p - t without the cancellation of r - 1 where p rounds to t
            p_minus_t = (one - tc) * sigmoid - tc * not_sigmoid
            ratio = e_r / u if u > zero else zero
            grad[c] = s * weight * (p_minus_t + g * ce * (one - two * tc) * ratio)


@kernel(interleave=4)
def sigmoid_focal_rows(X_arg, T_arg, a_pos, a_neg, gamma, scale, with_grad, G_arg, L_arg, row_loss_arg):
    """Sigmoid focal loss per element (targets in [0, 1]) into ``L`` (unless
    it is empty), its row sums into ``row_loss``; returns the sum of ``row_loss``."""
    N, C = X_arg.shape
    dt = X_arg.dtype.type
    a0, a1, g, s = dt(a_neg), dt(a_pos - a_neg), dt(gamma), dt(scale)
    n_blocks, per_block = row_blocks(N, C)
    for blk in prange(n_blocks):
        X, T, G, L, row_loss = borrow((X_arg, T_arg, G_arg, L_arg, row_loss_arg))
        owned = np.empty(0 if L.size else C, X.dtype)
        scratch = borrow(owned)
        first, stop = block_rows(blk, per_block, N)
        for n in range(first, stop):
            x, t, out = X[n], T[n], L[n] if L.size else scratch
            # constant flags at each call: see ELEMENTWISE
            if with_grad and gamma == 2.0:
                _sigmoid_focal_row(x, t, out, G[n], a0, a1, g, s, True, True)
            elif with_grad:
                _sigmoid_focal_row(x, t, out, G[n], a0, a1, g, s, True, False)
            elif gamma == 2.0:
                _sigmoid_focal_row(x, t, out, out, a0, a1, g, s, False, True)
            else:
                _sigmoid_focal_row(x, t, out, out, a0, a1, g, s, False, False)
            row_loss[n] = row_sum(out)
        keep_alive(owned)
    return ordered_sum(row_loss_arg)


# Softmax focal loss per row with a class-index target y, w = weight[y],
# nll = lse - x_y = -log p_y and q = 1 - p_y:
#   loss = w q^g nll
#   grad = s w K (p - onehot(y)),  K = q^g + g p_y nll q^(g-1)
# from dp_y/dx_c = p_y (onehot - p_c). K = q^g (1 + g p_y nll / q) where
# p_y nll / q is in [0, 1] (nll ~ q as p_y -> 1), so K is finite for g < 1
# and K -> q^g when p_y = 1 exactly. q = -expm1(-nll) keeps its precision as
# p_y -> 1. With g = 0 this is cross-entropy, computed the same way.


@kernel(interleave=SUM_INTERLEAVE)  # as ce_rows: the same row sums, so gamma = 0 gives its bits
def softmax_focal_rows(X_arg, y_arg, w_arg, ignore_index, gamma, scale, with_grad, G_arg, stream, loss_arg):
    """Softmax focal loss with class-index targets; loss[n] is the weighted row loss.

    Returns the sum of ``loss``.
    """
    N, C = X_arg.shape
    dt = X_arg.dtype.type
    flat_rows = C <= FLAT_BYTES // X_arg.itemsize
    n_blocks, per_block = row_blocks(N, C)
    for blk in prange(n_blocks):
        X, y, w, G, loss = borrow((X_arg, y_arg, w_arg, G_arg, loss_arg))
        owned = np.empty(C if with_grad and not flat_rows else 0, X.dtype)
        owned_runs = flat_scratch(C, X.dtype, flat_rows)
        scratch, runs = borrow(owned), borrow(owned_runs)
        first, stop = block_rows(blk, per_block, N)
        if flat_rows:
            for lo in range(first, stop, np.uint64(FLAT_ROWS)):
                hi = min(lo + np.uint64(FLAT_ROWS), stop)
                focal_flat_rows(X, y, w, ignore_index, gamma, scale, with_grad, G, loss, lo, hi, runs)
        else:
            for n in range(first, stop):
                x = X[n]
                label = y[n]
                if label == ignore_index:
                    set_row(loss, G, n, with_grad, 0.0)
                    continue
                d, shift = row_exp_sum_from(x, scratch, with_grad, head_max(x), ahead(x, with_grad and stream), 0.0)
                if not np.isfinite(shift):  # NaN or +inf in the row, or the row all -inf
                    set_row(loss, G, n, with_grad, np.nan)
                    continue
                if C == 1:  # p_y = 1
                    set_row(loss, G, n, with_grad, 0.0)
                    continue
                w_y = float(w[label])
                loss[n], k = focal_terms(w_y, math.log(d) + float(shift - x[label]), gamma, with_grad)
                if with_grad:
                    write_row(G[n], scratch, scale * w_y * k / d, 0.0, 0.0, stream, label, next_row(X, n))
                    G[n, label] -= dt(scale * w_y * k)
        store_fence()
        keep_alive(owned)
        keep_alive(owned_runs)
    return ordered_sum(loss_arg)


@njit(inline="always")
def focal_terms(w_y, nll, gamma, with_grad):
    """A row's focal loss and its gradient's factor ``K`` (see above; 0 unless
    ``with_grad``), from its weight ``w_y`` and ``nll = -log p_y``."""
    q = -math.expm1(-nll)
    q_g = q**gamma
    k = 0.0
    if with_grad:
        p_y = math.exp(-nll)
        k = q_g * (1.0 + gamma * (p_y * nll / q)) if q > 0.0 and p_y > 0.0 else q_g
    return w_y * q_g * nll, k


@njit(inline="always")
def focal_flat_rows(X, y, w, ignore_index, gamma, scale, with_grad, G, loss, lo, hi, scratch):
    """``softmax_focal_rows`` for its rows ``lo`` to ``hi`` (at most
    FLAT_ROWS) of at most FLAT_BYTES, worked on flat in the
    ``scratch`` of :func:`flat_scratch`, as :func:`ce_flat_rows`."""
    C = np.uint64(X.shape[1])
    x, e, spread, shift, d, a, fix = flat_run_logs(X, lo, hi, scratch)  # a: log(d), then the gradient's scale
    for j in range(hi - lo):
        n = lo + j
        label = y[n]
        if label == ignore_index:
            value = 0.0
        elif not np.isfinite(shift[j]):  # NaN or +inf in the row, or the row all -inf
            value = np.nan
        elif C == 1:  # p_y = 1
            value = 0.0
        else:
            w_y = float(w[label])
            nll = a[j] + float(X.dtype.type(shift[j]) - x[j * C + label])
            loss[n], k = focal_terms(w_y, nll, gamma, with_grad)
            a[j] = scale * w_y * k / d[j]
            fix[j] = X.dtype.type(scale * w_y * k)
            continue
        loss[n] = a[j] = value  # a: the whole row's gradient, here
        fix[j] = 0.0
    if with_grad:
        flat_grad(G, y, False, ignore_index, lo, hi, e, spread, shift, a, fix, e[:0])

