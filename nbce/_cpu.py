"""CPU kernels: ``prange`` over blocks of rows, each row reduced by one thread.

Every kernel takes C-contiguous ``(rows, classes)`` float32 or float64 arrays
that the boundary layer (:mod:`nbce._validate`) has already checked: labels are
in range, options are sane. Nothing here validates.

Why the kernels look the way they do:

* llvmlite is built without SVML, so ``math.exp`` in a loop stays scalar.
  :func:`exp_nonpos` is a branch-free exp that LLVM vectorises; it is only ever
  called on ``x - max(row) <= 0``.
* ``max`` reductions written with ``>`` or ``max()`` do not vectorise without
  the ``nnan`` flag, which would also delete our -inf/NaN guards. The
  ``llvm.maximum`` intrinsic vectorises and propagates NaN like ``np.max``.
* Sums run in the working precision over chunks of SUM_CHUNK classes
  (vectorised through ``reassoc``) and the chunk sums add up in float64, so a
  float32 row of 10**6 classes keeps a float32-level error.
* Memory traffic is what bounds these kernels. Rows are handled in blocks of
  consecutive rows per thread: while a row is being exponentiated (the costly
  part), the next row is prefetched, so DRAM reads overlap the arithmetic;
  large outputs are written with non-temporal (streaming) stores, which skip
  the read-for-ownership a plain store costs. Intermediate values live in a
  per-block scratch row that stays in cache.
* Each row is reduced by one thread in a fixed order, so results do not depend
  on the number of threads; sums across rows run after the parallel loop, in
  row order (``ordered_sum``).
"""

import math
from types import FunctionType

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.core.extending import intrinsic, overload

# ``reassoc`` lets LLVM vectorise the row sums; ``contract`` fuses multiply-adds.
# Never ``nnan``/``ninf``: they would fold away the -inf and NaN handling.
FASTMATH = {"reassoc", "contract"}


# Below this many elements a kernel runs on the calling thread: starting the
# thread pool costs microseconds, more than a small problem takes.
PARALLEL_MIN_ELEMENTS = 1 << 15
# Outputs from this size on are written with streaming stores: they would not
# stay in cache anyway, and a plain store first reads the line from memory.
STREAM_MIN_BYTES = 1 << 24


def streams(X):
    """Whether a kernel writing an output the size of ``X`` should stream it."""
    return X.nbytes >= STREAM_MIN_BYTES


def cached_njit(fn, **options):
    """``njit`` with an on-disk cache, compiled lazily on first call.

    Numba refuses ``cache=True`` when it finds no writable cache location
    (read-only install without ``NUMBA_CACHE_DIR``); then compile in memory.
    """
    try:
        return njit(cache=True, **options)(fn)
    except RuntimeError:
        return njit(**options)(fn)


class Kernel:
    """One kernel body compiled twice: threaded (``prange``) and serial.

    Calls go to the serial build for inputs under PARALLEL_MIN_ELEMENTS. Both
    builds give each row the same arithmetic, so results do not depend on the
    number of threads.
    """

    def __init__(self, fn):
        self.__name__ = fn.__name__
        self.__doc__ = fn.__doc__
        self.parallel = cached_njit(fn, parallel=True, fastmath=FASTMATH)
        # Numba's cache key ignores compile options: the serial build needs a
        # function of its own name, or it would load the threaded build.
        serial = FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial")
        serial.__qualname__ = fn.__qualname__ + "_serial"
        self.serial = cached_njit(serial, fastmath=FASTMATH)

    def __call__(self, X, *args):
        build = self.parallel if X.size >= PARALLEL_MIN_ELEMENTS else self.serial
        return build(X, *args)


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


@intrinsic
def _stream_vector(typingctx, dst, src, i, a, b, c):
    """One 32-byte vector ``dst[i:i+k] = (src[i:i+k] * a - b) - c``, stored non-temporally.

    ``&dst[i]`` must be 32-byte aligned. LLVM does not vectorise a loop of
    non-temporal scalar stores whose alignment it cannot prove, so the vector
    is built here by hand. No fast-math flags: the two subtractions stay
    separate roundings, as in ``(x - max) - log(sum)``.
    """

    def codegen(context, builder, sig, args):
        dst_t, src_t = sig.args[0], sig.args[1]
        elt = context.get_value_type(dst_t.dtype)
        size = context.get_abi_sizeof(elt)
        vec = ir.VectorType(elt, 32 // size)
        src_ptr = builder.bitcast(_element_pointer(context, builder, src_t, args[1], args[2]), vec.as_pointer())
        dst_ptr = builder.bitcast(_element_pointer(context, builder, dst_t, args[0], args[2]), vec.as_pointer())
        undef = ir.Constant(vec, ir.Undefined)
        lanes = ir.Constant(ir.VectorType(ir.IntType(32), vec.count), [0] * vec.count)

        def splat(k):
            scalar = context.cast(builder, args[k], sig.args[k], dst_t.dtype)
            return builder.shuffle_vector(builder.insert_element(undef, scalar, ir.IntType(32)(0)), undef, lanes)

        v = builder.load(src_ptr, align=size)
        v = builder.fsub(builder.fsub(builder.fmul(v, splat(3)), splat(4)), splat(5))
        store = builder.store(v, dst_ptr, align=32)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.IntType(32)(1)]))
        return context.get_dummy_value()

    return types.none(dst, src, i, a, b, c), codegen


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


# --- vectorisable exp --------------------------------------------------------
#
# exp(x) = 2**k * exp(r) with k = round(x / ln2) and |r| <= ln2 / 2. ln2 is split
# in a high part with trailing zero bits (k * LN2_HI is exact) and a low part
# (Cody-Waite). exp(r) is a polynomial; 2**k is added to the exponent field of
# the result's bits, so no libm call and no branch remain. Below LOW the
# result is flushed to zero (-inf gives exactly 0); LOW keeps the biased
# exponent >= 1, so results under ~2**-125 (float32) / 2**-1021 (float64) are 0.


def exp_nonpos(x):
    """exp(x) for x <= 0 (including -inf), vectorisable; float32 or float64."""
    raise NotImplementedError("exp_nonpos is only callable from jitted code")


def _exp_nonpos_f32(x):
    k = np.rint(x * np.float32(1.4426950408889634))  # np.rint keeps float32 (math.floor would not)
    r = x - k * np.float32(0.693145751953125)
    r = r - k * np.float32(1.428606765330187e-06)
    # near-minimax fit of exp on [-ln2/2, ln2/2]: relative error 2e-7 in float32
    p = np.float32(0.00831251)
    p = p * r + np.float32(0.04189008)
    p = p * r + np.float32(0.16667114)
    p = p * r + np.float32(0.4999923)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    bits = np.int32(_bitcast_float_to_int(p) + np.int32(np.int32(k) << np.int32(23)))
    return np.float32(0.0) if x < np.float32(-86.98) else _bitcast_int_to_float(bits)


def _exp_nonpos_f64(x):
    k = np.rint(x * 1.4426950408889634)
    r = x - k * 0.6931471803691238
    r = r - k * 1.9082149292705877e-10
    # near-minimax fit of exp on [-ln2/2, ln2/2], degree 10: relative error 5e-16
    p = 2.747782412460551e-07
    p = p * r + 2.7635039126115625e-06
    p = p * r + 2.4801929279055584e-05
    p = p * r + 0.00019841185112776192
    p = p * r + 0.0013888888518050237
    p = p * r + 0.00833333337096769
    p = p * r + 0.04166666666813239
    p = p * r + 0.16666666666611302
    p = p * r + 0.49999999999998346
    p = p * r + 1.0
    p = p * r + 1.0
    bits = _bitcast_float_to_int(p) + (np.int64(k) << np.int64(52))
    return 0.0 if x < -708.0 else _bitcast_int_to_float(bits)


def _overload_by_precision(stub, for_float32, for_float64):
    """Make ``stub`` callable from jitted code, as one implementation per precision."""

    @overload(stub)
    def _by_precision(x):
        return {types.float32: for_float32, types.float64: for_float64}.get(x)


_overload_by_precision(exp_nonpos, _exp_nonpos_f32, _exp_nonpos_f64)


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


# --- row building blocks (inlined into the kernels) -------------------------

# Elements summed in the working precision before the partial sum goes into a
# float64 total: short enough to keep float32 sums accurate, long enough to
# keep the vectorised inner loop busy.
SUM_CHUNK = 512
# Elements per block of rows handed to one thread (at least one row).
BLOCK_ELEMENTS = 1 << 16


@njit(inline="always")
def row_blocks(n_rows, n_classes):
    """Number of blocks of consecutive rows, about BLOCK_ELEMENTS each."""
    rows_per_block = max(1, BLOCK_ELEMENTS // max(n_classes, 1))
    return (n_rows + rows_per_block - 1) // rows_per_block, rows_per_block


@njit(inline="always")
def row_max(x):
    m = x.dtype.type(-np.inf)
    for c in range(x.size):
        m = maximum(m, x[c])
    return m


@njit(inline="always")
def row_sum_exp(x, shift, out, store, upcoming):
    """sum(exp(x - shift)) in float64; with ``store``, also ``out = exp(x - shift)``.

    ``upcoming`` (the next row) is prefetched a cache line at a time, so the
    next ``row_max`` finds it in cache.
    """
    line = max(1, 64 // upcoming.itemsize)
    total = 0.0
    for start in range(0, x.size, SUM_CHUNK):
        stop = min(start + SUM_CHUNK, x.size)
        for c in range(start, min(stop, upcoming.size), line):
            prefetch(upcoming, c)
        s = x.dtype.type(0.0)
        for c in range(start, stop):
            e = exp_nonpos(x[c] - shift)
            if store:
                out[c] = e
            s += e
        total += s
    return total


@njit(inline="always")
def _affine_range(dst, src, start, stop, a, b, c):
    for k in range(start, stop):
        dst[k] = (src[k] * a - b) - c


@njit(inline="always")
def _stream_range(dst, src, start, stop, a, b, c):
    """``_affine_range`` with 32-byte non-temporal vector stores between unaligned ends."""
    size = dst.itemsize
    width = 32 // size
    head = min(start + (-(dst.ctypes.data + start * size) % 32) // size, stop)
    body_end = head + (stop - head) // width * width
    _affine_range(dst, src, start, head, a, b, c)
    for k in range(head, body_end, width):
        _stream_vector(dst, src, k, a, b, c)
    _affine_range(dst, src, body_end, stop, a, b, c)


@njit(inline="always")
def write_row(dst, src, a, b, c, stream, cached_at):
    """``dst = (src * a - b) - c``; ``dst`` may be ``src``.

    With ``stream``, through non-temporal stores (no read-for-ownership, no
    cache pollution), except the cache line holding element ``cached_at``
    (-1 for none): the caller updates that element next, and reading a line
    just streamed out would wait for memory.
    """
    dt = dst.dtype.type
    a, b, c = dt(a), dt(b), dt(c)
    n = dst.size
    if not stream:
        _affine_range(dst, src, 0, n, a, b, c)
        return
    lo, hi = 0, 0
    if cached_at >= 0:
        per_line = 64 // dst.itemsize
        lo = max(0, cached_at - (dst.ctypes.data // dst.itemsize + cached_at) % per_line)
        hi = min(lo + per_line, n)
    _stream_range(dst, src, 0, lo, a, b, c)
    _affine_range(dst, src, lo, hi, a, b, c)
    _stream_range(dst, src, hi, n, a, b, c)


@njit(inline="always")
def row_weighted_gap(x, m, w):
    """sum(w * (m - x)) in float64: the smoothing term without its log-sum-exp part."""
    s = 0.0
    for c in range(x.size):
        s += w[c] * (m - x[c])
    return s


@njit(inline="always")
def row_fill(out, value):
    for c in range(out.size):
        out[c] = value


@njit(inline="always")
def ordered_sum(values):
    """Sum in index order, after the parallel loop: the same for any thread count."""
    total = 0.0
    for v in values:
        total += v
    return total


@njit(inline="always")
def block_rows(blk, per_block, n_rows):
    """First and past-the-last row of block ``blk``."""
    return blk * per_block, min((blk + 1) * per_block, n_rows)


@njit(inline="always")
def set_row(loss, G, n, with_grad, value):
    """A row whose loss and gradient are one constant (ignored: 0, undefined: NaN)."""
    loss[n] = value
    if with_grad:
        row_fill(G[n], value)


# --- softmax family -----------------------------------------------------------
# Non-finite row max (a NaN, a +inf, or a row all -inf) follows scipy.special:
# logsumexp returns the max, log_softmax returns x - max, softmax returns NaN.


@Kernel
def logsumexp_rows(X, out):
    N, C = X.shape
    n_blocks, per_block = row_blocks(N, C)
    for blk in prange(n_blocks):
        first, stop = block_rows(blk, per_block, N)
        for n in range(first, stop):
            x = X[n]
            m = row_max(x)
            if np.isfinite(m):
                out[n] = m + math.log(row_sum_exp(x, m, x, False, X[min(n + 1, N - 1)]))
            else:
                out[n] = m


@Kernel
def log_softmax_rows(X, out, stream):
    N, C = X.shape
    n_blocks, per_block = row_blocks(N, C)
    for blk in prange(n_blocks):
        first, stop = block_rows(blk, per_block, N)
        for n in range(first, stop):
            x = X[n]
            m = row_max(x)
            log_d = 0.0
            if np.isfinite(m):
                log_d = math.log(row_sum_exp(x, m, x, False, X[min(n + 1, N - 1)]))
            write_row(out[n], x, 1.0, m, log_d, stream, -1)
        store_fence()


@Kernel
def softmax_rows(X, out, stream):
    N, C = X.shape
    n_blocks, per_block = row_blocks(N, C)
    for blk in prange(n_blocks):
        scratch = np.empty(C, X.dtype)
        first, stop = block_rows(blk, per_block, N)
        for n in range(first, stop):
            x = X[n]
            m = row_max(x)
            if np.isfinite(m):
                d = row_sum_exp(x, m, scratch, True, X[min(n + 1, N - 1)])
                write_row(out[n], scratch, 1.0 / d, 0.0, 0.0, stream, -1)
            else:
                row_fill(out[n], np.nan)
        store_fence()


# --- cross-entropy ---------------------------------------------------------------
# Per row, with p = softmax(x), lse = log-sum-exp, eps = label smoothing:
#   index target y:  loss = (1-eps) w_y (lse - x_y) + eps/C sum_c w_c (lse - x_c)
#                    grad = s [p (((1-eps) w_y + eps/C sum(w)) - eps/C w - (1-eps) w_y onehot(y)]
#   soft target t:   t' = (1-eps) t + eps/C
#                    loss = sum_c w_c t'_c (lse - x_c),  grad = s [p sum(w t') - w t']
# where s is the reduction's scale (1, or 1/denominator for "mean"). lse - x_c
# is computed as log(d) + (m - x_c) so that a large common shift stays exact.
# Everything read from x is read before the gradient row is written, so the
# gradient may overwrite the logits (G is X).


@Kernel
def ce_index_rows(X, y, w, weighted, w_sum, ignore_index, eps, scale, with_grad, G, stream, loss):
    """Cross-entropy with class-index targets; loss[n] is the weighted row loss.

    Returns the sum of ``loss``.
    """
    N, C = X.shape
    dt = X.dtype.type
    n_blocks, per_block = row_blocks(N, C)
    for blk in prange(n_blocks):
        scratch = np.empty(C if with_grad else 0, X.dtype)
        first, stop = block_rows(blk, per_block, N)
        for n in range(first, stop):
            x = X[n]
            label = y[n]
            if label == ignore_index:
                set_row(loss, G, n, with_grad, 0.0)
                continue
            m = row_max(x)
            if not np.isfinite(m):  # NaN or +inf in the row, or the row all -inf
                set_row(loss, G, n, with_grad, np.nan)
                continue
            if C == 1:  # p = 1: exactly zero, which the general formula misses by rounding
                set_row(loss, G, n, with_grad, 0.0)
                continue
            w_y = float(w[label])
            gap_y = float(m - x[label])
            gap = row_weighted_gap(x, m, w) if eps > 0.0 else 0.0
            d = row_sum_exp(x, m, scratch, with_grad, X[min(n + 1, N - 1)])
            log_d = math.log(d)
            loss[n] = (1.0 - eps) * w_y * (log_d + gap_y) + (eps / C) * (log_d * w_sum + gap)
            if with_grad:
                a = dt(scale * ((1.0 - eps) * w_y + (eps / C) * w_sum) / d)
                b = dt(scale * eps / C)
                g = G[n]
                if weighted and eps > 0.0:
                    for c in range(C):
                        scratch[c] = scratch[c] * a - b * w[c]
                    write_row(g, scratch, 1.0, 0.0, 0.0, stream, label)
                else:
                    write_row(g, scratch, a, b, 0.0, stream, label)
                g[label] -= dt(scale * (1.0 - eps) * w_y)
        store_fence()
    return ordered_sum(loss)


@Kernel
def ce_soft_rows(X, T, w, eps, scale, with_grad, G, stream, loss):
    """Cross-entropy with probability targets; loss[n] is the row loss.

    Returns the sum of ``loss``.
    """
    N, C = X.shape
    dt = X.dtype.type
    keep = dt(1.0 - eps)
    spread = dt(eps / C) if C else dt(0.0)
    n_blocks, per_block = row_blocks(N, C)
    for blk in prange(n_blocks):
        scratch = np.empty(C if with_grad else 0, X.dtype)
        first, stop = block_rows(blk, per_block, N)
        for n in range(first, stop):
            x, t = X[n], T[n]
            m = row_max(x)
            if not np.isfinite(m):
                set_row(loss, G, n, with_grad, np.nan)
                continue
            if C == 1:
                set_row(loss, G, n, with_grad, 0.0)
                continue
            tw_sum = 0.0
            gap = 0.0
            for c in range(C):
                wt = w[c] * (keep * t[c] + spread)
                tw_sum += wt
                # a class with zero target mass adds nothing, even where x = -inf
                gap += wt * (m - x[c]) if wt != 0 else 0.0
            d = row_sum_exp(x, m, scratch, with_grad, X[min(n + 1, N - 1)])
            loss[n] = math.log(d) * tw_sum + gap
            if with_grad:
                a = dt(scale * tw_sum / d)
                s = dt(scale)
                for c in range(C):
                    scratch[c] = scratch[c] * a - s * (w[c] * (keep * t[c] + spread))
                write_row(G[n], scratch, 1.0, 0.0, 0.0, stream, -1)
        store_fence()
    return ordered_sum(loss)


# --- binary cross-entropy with logits -------------------------------------------
# Per element, with lw = 1 + (pos_weight - 1) t and softplus(-x) = log(1 + e^-x)
# evaluated as log1p(exp(-|x|)) + max(-x, 0) (finite for any finite x):
#   loss = w [(1 - t) x + lw softplus(-x)],   grad = s w [lw sigmoid(x) - pos_weight t]


@Kernel
def bce_logits_rows(X, T, W, PW, scale, with_grad, G, loss):
    """Binary cross-entropy with logits per element; returns the sum of ``loss``.

    ``W`` and ``PW`` hold either one row (shared by every row) or one per row.
    """
    N, C = X.shape
    dt = X.dtype.type
    one, zero, s = dt(1.0), dt(0.0), dt(scale)
    n_blocks, per_block = row_blocks(N, C)
    for blk in prange(n_blocks):
        first, stop = block_rows(blk, per_block, N)
        for n in range(first, stop):
            x, t, out = X[n], T[n], loss[n]
            w = W[n if W.shape[0] > 1 else 0]
            pw = PW[n if PW.shape[0] > 1 else 0]
            for c in range(C):
                xc, tc = x[c], t[c]
                e = exp_nonpos(-abs(xc))  # exp(-|x|), in (0, 1]
                lw = (pw[c] - one) * tc + one
                out[c] = w[c] * ((one - tc) * xc + lw * (log1p_unit(e) + max(-xc, zero)))
                if with_grad:  # G may be X: x[c] is read above, before this write
                    r = one / (one + e)
                    sigmoid = r if xc >= zero else e * r
                    G[n, c] = s * w[c] * (lw * sigmoid - pw[c] * tc)
    return ordered_sum(loss.ravel())
