"""GPU backend: ``@cuda.jit`` twins of the public functions, on device arrays.

Reached through :mod:`nbce._device` only (imported on the first device call).
The functions here take CuPy arrays, PyTorch CUDA tensors or Numba device
arrays, run the same boundary checks as the CPU path (:mod:`nbce._validate`)
and return device arrays of the caller's library. Labels are checked on the
device; only the first bad position and the ``"mean"`` denominator come back.

How the kernels work, and why:

* One block per row, a grid-stride loop over rows (``MAX_BLOCKS`` caps the
  grid), the block's threads striding over the classes.
* Arrays reach the kernels as ``(outer, C, inner)`` views, so any class axis
  works without moving data (``inner`` is 1 for the last axis; other axes
  read with a stride, slower but correct).
* The row max and the sum of exponentials come from one read of the row:
  each thread keeps a running max ``m`` and ``d = sum(exp(x - m))``, rescaled
  when ``m`` grows; the block merges the threads' pairs with a shared-memory
  tree (the simulator has no warp shuffles), ``m = max(ma, mb)``,
  ``d = da exp(ma - m) + db exp(mb - m)``. ``d`` and the rescaling run in
  float64 (the exponentials themselves in the input's precision), so float32
  rows keep a float32-level loss for large C.
* The kernels that need a second pass over the row (the fused
  forward+backward, the forward with smoothing or soft targets, log_softmax,
  softmax) make it from shared memory when the row fits
  (``SHARED_ROW_BYTES``): the first pass stores each logit it reads in the
  launch's dynamic shared memory, so global memory is read once per logit. A
  longer row is read twice from global memory. The kernel is the same either
  way: it takes the shared path when the launch gave it room for the row.
  Soft targets are still read twice. The smoothing and soft-target sums that
  need the final max are accumulated in that second pass.
* Every ``exp`` gets an argument <= 0 (or -inf, giving 0) and every ``log`` an
  argument >= 1: the CUDA simulator raises on ``exp`` overflow and ``log(0)``
  where a GPU returns inf, so both run the same code path.
* Each element is read before the same thread writes its gradient (the
  shared copy of the row is read after, which is just as safe) and the target
  logit is read before the first block-wide barrier, so ``out=logits`` (G is
  X) is safe.
* Sums across rows (``"mean"``/``"sum"``) run in one block in a fixed tree
  order: the result does not depend on the grid.

The per-row formulas are those of the CPU kernels (see the cross-entropy
section of :mod:`nbce._cpu`).
"""

import functools
import math

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

from numba import float32, float64, int64

try:
    import numba_cuda  # noqa: F401  (the numba-cuda package, not numba's deprecated built-in CUDA target)
except ImportError:  # importable anyway (pytest's doctest collection imports every module)
    cuda = None
else:
    from numba import cuda

from . import _validate as check
from ._device import is_device_array, library_of

# Threads per block: a power of two (the shared-memory reductions halve it).
# Tests set it small, so that tiny rows still span several threads.
THREADS_PER_BLOCK = 256
# Most blocks in a grid; rows beyond it are handled by the grid-stride loop.
MAX_BLOCKS = 65535
# Rows of at most this many bytes are kept in shared memory between the two
# passes over the row, so the logits are read once from global memory; longer
# rows are read twice. A block gets at most 48 KiB of shared memory (more needs
# a per-kernel opt-in that numba-cuda does not make), and the reductions use up
# to 24 bytes per thread of it (6 KiB at 256 threads): 40 KiB is what is left,
# rounded down. Tests set it small, so that both paths run.
SHARED_ROW_BYTES = 40 * 1024

_gpu_checked = False


def require_gpu():
    """``ImportError`` without numba-cuda, ``RuntimeError`` without a CUDA GPU (or Numba's CUDA simulator)."""
    global _gpu_checked
    if cuda is None:
        raise ImportError(
            "nbce got a GPU array: its GPU backend needs the numba-cuda package (pip install 'nbce[cuda]')"
        )
    if not _gpu_checked:
        if not cuda.is_available():
            raise RuntimeError(
                "nbce got a GPU array but CUDA is not available (no GPU or no driver found); "
                "to run the GPU code without a GPU, set NUMBA_ENABLE_CUDASIM=1 (Numba's CUDA simulator)"
            )
        _gpu_checked = True


# --- kernels ----------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _kernels(threads, dtype):
    """The kernels for ``threads`` per block and float ``dtype`` (compiled on first launch).

    Both are compile-time constants: shared arrays need a constant size, and
    the running max and exponentials stay in the input's precision.
    """
    if threads < 1 or threads & (threads - 1):
        raise ValueError(f"THREADS_PER_BLOCK must be a power of two, got {threads}")
    T = threads
    F = {np.float32: float32, np.float64: float64}[dtype.type]
    NAN, NEG_INF, POS_INF = F(math.nan), F(-math.inf), F(math.inf)

    @cuda.jit(device=True)
    def finite(m):
        return NEG_INF < m < POS_INF

    @cuda.jit(device=True)
    def merge(ma, da, mb, db):
        """(max, sum-exp) of two parts of a row; NaN anywhere makes the max NaN."""
        if ma != ma or mb != mb:
            return NAN, 0.0
        m = max(ma, mb)
        if not finite(m):  # +inf, or both parts all -inf (then d = 0)
            return m, 0.0
        return m, da * math.exp(float64(ma) - float64(m)) + db * math.exp(float64(mb) - float64(m))

    @cuda.jit(device=True)
    def row_stats(X, o, i, row, staged):
        """Max and sum(exp(x - max)) of row (o, :, i), on every thread of the block.

        If ``staged``, each thread also stores the logits it reads in ``row``
        (shared memory) for the kernel's second pass. That pass reads back only
        what the same thread stored, so the copy needs no barrier of its own.
        """
        sm = cuda.shared.array(T, F)
        sd = cuda.shared.array(T, float64)
        tid = cuda.threadIdx.x
        m = NEG_INF
        d = 0.0
        nan_seen = False
        for c in range(tid, X.shape[1], T):
            v = X[o, c, i]
            if staged:
                row[c] = v
            if v > m:  # a new max: rescale what was summed so far
                d = d * math.exp(float64(m) - float64(v)) + 1.0
                m = v
            elif v > NEG_INF:
                d += math.exp(v - m)
            elif v != v:
                nan_seen = True
        if nan_seen:
            m = NAN
        sm[tid] = m
        sd[tid] = d
        cuda.syncthreads()
        step = T // 2
        while step > 0:
            if tid < step:
                m2, d2 = merge(sm[tid], sd[tid], sm[tid + step], sd[tid + step])
                sm[tid] = m2
                sd[tid] = d2
            cuda.syncthreads()
            step //= 2
        m = sm[0]
        d = sd[0]
        cuda.syncthreads()  # the shared arrays are refilled for the next row
        return m, d

    @cuda.jit(device=True)
    def block_sum(value):
        """Sum of ``value`` over the block (fixed tree order), on every thread."""
        s = cuda.shared.array(T, float64)
        tid = cuda.threadIdx.x
        s[tid] = value
        cuda.syncthreads()
        step = T // 2
        while step > 0:
            if tid < step:
                s[tid] += s[tid + step]
            cuda.syncthreads()
            step //= 2
        total = s[0]
        cuda.syncthreads()
        return total

    # block_sum's tree again, not a shared factory: the CUDA simulator tells
    # shared arrays apart by source line, so one factory's float64 and int64
    # arrays would be one array there.
    @cuda.jit(device=True)
    def block_min(value):
        s = cuda.shared.array(T, int64)
        tid = cuda.threadIdx.x
        s[tid] = value
        cuda.syncthreads()
        step = T // 2
        while step > 0:
            if tid < step:
                s[tid] = min(s[tid], s[tid + step])
            cuda.syncthreads()
            step //= 2
        least = s[0]
        cuda.syncthreads()
        return least

    @cuda.jit(device=True)
    def fill_row(G, o, i, with_grad, value, loss, r):
        """A row whose loss and gradient are one constant (ignored: 0, undefined: NaN)."""
        if with_grad:
            for c in range(cuda.threadIdx.x, G.shape[1], T):
                G[o, c, i] = value
        if cuda.threadIdx.x == 0:
            loss[r] = value

    # Kernels with a second pass over the row take `row`, the launch's dynamic
    # shared memory, and stage the row there if it holds C values (the host
    # gives the room, or none: see _row_bytes).
    #
    # Softmax family. A non-finite row max (NaN, +inf, or the row all -inf)
    # follows scipy.special: logsumexp gives the max, log_softmax x - max,
    # softmax NaN.

    @cuda.jit
    def logsumexp_rows(X, out):
        outer, C, inner = X.shape
        row = cuda.shared.array(0, F)  # one pass, nothing to stage (launched without room for it)
        for r in range(cuda.blockIdx.x, outer * inner, cuda.gridDim.x):
            o = r // inner
            m, d = row_stats(X, o, r - o * inner, row, False)
            if cuda.threadIdx.x == 0:
                out[r] = m + math.log(d) if finite(m) else m

    @cuda.jit
    def log_softmax_rows(X, out):
        outer, C, inner = X.shape
        row = cuda.shared.array(0, F)
        staged = row.shape[0] >= C
        for r in range(cuda.blockIdx.x, outer * inner, cuda.gridDim.x):
            o = r // inner
            i = r - o * inner
            m, d = row_stats(X, o, i, row, staged)
            log_d = F(math.log(d)) if finite(m) else F(0.0)
            for c in range(cuda.threadIdx.x, C, T):
                v = row[c] if staged else X[o, c, i]
                out[o, c, i] = (v - m) - log_d

    @cuda.jit
    def softmax_rows(X, out):
        outer, C, inner = X.shape
        row = cuda.shared.array(0, F)
        staged = row.shape[0] >= C
        for r in range(cuda.blockIdx.x, outer * inner, cuda.gridDim.x):
            o = r // inner
            i = r - o * inner
            m, d = row_stats(X, o, i, row, staged)
            ok = finite(m)
            inv_d = F(1.0 / d) if ok else NAN
            for c in range(cuda.threadIdx.x, C, T):
                v = row[c] if staged else X[o, c, i]
                out[o, c, i] = math.exp(v - m) * inv_d if ok else NAN

    # Cross-entropy, per row (p = softmax(x), lse = log-sum-exp):
    #   index y: loss = (1-eps) w_y (lse - x_y) + eps/C sum_c w_c (lse - x_c)
    #            grad = s [p ((1-eps) w_y + eps/C sum(w)) - eps/C w - (1-eps) w_y onehot(y)]
    #   soft t:  t' = (1-eps) t + eps/C
    #            loss = sum_c w_c t'_c (lse - x_c),  grad = s [p sum(w t') - w t']
    # with lse - x_c = log(d) + (m - x_c), as on the CPU.

    @cuda.jit
    def ce_index_rows(X, Y, w, w_sum, ignore, eps, scale, with_grad, G, loss):
        outer, C, inner = X.shape
        tid = cuda.threadIdx.x
        need_gap = eps > 0.0
        row = cuda.shared.array(0, F)
        staged = row.shape[0] >= C
        for r in range(cuda.blockIdx.x, outer * inner, cuda.gridDim.x):
            o = r // inner
            i = r - o * inner
            label = int64(Y[o, i])
            if label == ignore:
                fill_row(G, o, i, with_grad, 0.0, loss, r)
                continue
            x_y = X[o, label, i]  # before row_stats' barriers: G may be X
            m, d = row_stats(X, o, i, row, staged)
            if not finite(m):
                fill_row(G, o, i, with_grad, math.nan, loss, r)
                continue
            if C == 1:  # p = 1: exactly zero, which the general formula misses by rounding
                fill_row(G, o, i, with_grad, 0.0, loss, r)
                continue
            w_y = float64(w[label])
            gap = 0.0
            if need_gap or with_grad:
                a = F(scale * ((1.0 - eps) * w_y + (eps / C) * w_sum) / d)
                b = F(scale * eps / C)
                at_target = F(scale * (1.0 - eps) * w_y)
                for c in range(tid, C, T):
                    v = row[c] if staged else X[o, c, i]
                    if need_gap:
                        gap += w[c] * (m - v)
                    if with_grad:
                        g = math.exp(v - m) * a - b * w[c]
                        if c == label:
                            g -= at_target
                        G[o, c, i] = g
                if need_gap:
                    gap = block_sum(gap)
            if tid == 0:
                log_d = math.log(d)
                loss[r] = (1.0 - eps) * w_y * (log_d + float64(m - x_y)) + (eps / C) * (log_d * w_sum + gap)

    @cuda.jit
    def ce_soft_rows(X, P, w, eps, scale, with_grad, G, loss):
        outer, C, inner = X.shape
        tid = cuda.threadIdx.x
        keep = F(1.0 - eps)
        spread = F(eps / max(C, 1))
        s = F(scale)
        row = cuda.shared.array(0, F)
        staged = row.shape[0] >= C
        for r in range(cuda.blockIdx.x, outer * inner, cuda.gridDim.x):
            o = r // inner
            i = r - o * inner
            m, d = row_stats(X, o, i, row, staged)
            if not finite(m):
                fill_row(G, o, i, with_grad, math.nan, loss, r)
                continue
            if C == 1:
                fill_row(G, o, i, with_grad, 0.0, loss, r)
                continue
            tw = 0.0
            for c in range(tid, C, T):
                tw += w[c] * (keep * F(P[o, c, i]) + spread)
            tw_sum = block_sum(tw)
            a = F(scale * tw_sum / d)
            gap = 0.0
            for c in range(tid, C, T):
                v = row[c] if staged else X[o, c, i]
                wt = w[c] * (keep * F(P[o, c, i]) + spread)
                if wt != 0:  # a class with zero target mass adds nothing, even where x = -inf
                    gap += wt * (m - v)
                if with_grad:
                    G[o, c, i] = math.exp(v - m) * a - s * wt
            gap = block_sum(gap)
            if tid == 0:
                loss[r] = math.log(d) * tw_sum + gap

    @cuda.jit
    def nll_rows(LP, Y, w, ignore, loss):
        """One thread per row: ``-w[y] * log_probs[y]``, 0 for ignored rows."""
        outer, C, inner = LP.shape
        for r in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
            o = r // inner
            i = r - o * inner
            label = int64(Y[o, i])
            loss[r] = 0.0 if label == ignore else -(w[label] * LP[o, label, i])

    @cuda.jit
    def check_labels(Y, n_classes, ignore, unsigned, w, first_bad, kept_weight):
        """One block: the first flat position of a bad label (the label count
        if none) and the summed weight of the rows not ignored."""
        outer, inner = Y.shape
        n = outer * inner
        first = n
        total = 0.0
        for k in range(cuda.threadIdx.x, n, T):
            o = k // inner
            label = int64(Y[o, k - o * inner])
            wrapped = unsigned and label < 0  # a uint64 label beyond int64's range
            if label == ignore and not wrapped:
                continue
            if wrapped or label < 0 or label >= n_classes:
                first = min(first, k)
            else:
                total += w[label]
        first = block_min(first)
        total = block_sum(total)
        if cuda.threadIdx.x == 0:
            first_bad[0] = first
            kept_weight[0] = total

    @cuda.jit
    def reduce_rows(loss, mean, denominator, out):
        """One block: the sum of the row losses, or their mean (NaN over 0, as PyTorch)."""
        total = 0.0
        for k in range(cuda.threadIdx.x, loss.size, T):
            total += loss[k]
        total = block_sum(total)
        if cuda.threadIdx.x == 0:
            if not mean:
                out[0] = total
            elif denominator != 0:
                out[0] = total / denominator
            else:
                out[0] = math.nan

    return dict(
        logsumexp_rows=logsumexp_rows,
        log_softmax_rows=log_softmax_rows,
        softmax_rows=softmax_rows,
        ce_index_rows=ce_index_rows,
        ce_soft_rows=ce_soft_rows,
        nll_rows=nll_rows,
        check_labels=check_labels,
        reduce_rows=reduce_rows,
    )


def _kernel(name, dtype):
    return _kernels(THREADS_PER_BLOCK, np.dtype(dtype))[name]


def _row_grid(n_rows):
    return max(1, min(n_rows, MAX_BLOCKS))


def _row_bytes(n_classes, dtype):
    """The dynamic shared memory for a launch over rows of ``n_classes``: room
    for one row if it fits (the kernels then read the logits once), else none.

    The bound keeps the block within 48 KiB however many threads it has. It
    is the fourth item of a launch, after the stream: 0, the default stream,
    which every launch here uses.
    """
    size = n_classes * np.dtype(dtype).itemsize
    return size if size <= min(SHARED_ROW_BYTES, 48 * 1024 - 24 * THREADS_PER_BLOCK) else 0


# --- device arrays at the boundary ------------------------------------------------


def _c_contiguous(a):
    if a.size == 0:
        return True
    expected = a.dtype.itemsize
    for size, stride in zip(reversed(a.shape), reversed(a.strides)):
        if size != 1 and stride != expected:
            return False
        expected *= size
    return True


def _device_view(a, name):
    """``a`` as a C-contiguous Numba device array, without a copy where possible.

    Host arrays are copied to the device; CuPy arrays and PyTorch tensors that
    are not C-contiguous get a contiguous copy made by their own library;
    Numba device arrays must already be C-contiguous (Numba has no device
    copy of a strided array).
    """
    if not is_device_array(a):
        return cuda.to_device(np.asarray(a, order="C"))  # (np.ascontiguousarray makes 0-d arrays 1-d)
    view = _as_numba(a)
    if _c_contiguous(view):
        return view
    if library_of(a) == "cupy":
        import cupy

        return cuda.as_cuda_array(cupy.ascontiguousarray(a))
    if library_of(a) == "torch":
        return cuda.as_cuda_array(a.detach().contiguous())
    raise ValueError(
        f"{name}: the GPU path needs a C-contiguous Numba device array, got shape {a.shape} "
        f"with strides {a.strides} (make a contiguous copy, or pass a CuPy array or PyTorch tensor)"
    )


def _as_numba(a):
    """A Numba view (no copy) of a device array of any library."""
    if library_of(a) == "numba":
        return a
    if library_of(a) == "torch":
        a = a.detach()  # no __cuda_array_interface__ on a tensor that requires grad
    return cuda.as_cuda_array(a)


def _float_input(a, name):
    """The logits: float32 or float64 (``TypeError`` as on the CPU), C-contiguous on the device."""
    dtype = _as_numba(a).dtype
    if dtype == np.float16:
        raise NotImplementedError(f"{name}: float16 is not supported on the GPU yet")
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got dtype {dtype}")
    return _device_view(a, name)


def _to_host(a):
    """A small array (class weights) on the host, for the boundary checks."""
    if not is_device_array(a):
        return a
    return _device_view(a, "weight").copy_to_host()


def _span(a):
    """First and past-the-last byte address of a C-contiguous device array."""
    # the simulator's arrays hold host memory and expose only __array_interface__
    interface = getattr(a, "__cuda_array_interface__", None) or a.__array_interface__
    start = interface["data"][0]
    return start, start + a.size * a.dtype.itemsize


def _overlap(a, b):
    (a0, a1), (b0, b1) = _span(a), _span(b)
    return a0 < b1 and b0 < a1


def _like(result, source):
    """``result`` (a Numba device array) as an array of ``source``'s library, zero copy."""
    library = library_of(source)
    if library == "cupy":
        import cupy

        return cupy.asarray(result)
    if library == "torch":
        import torch

        return torch.as_tensor(result, device=source.device)
    return result


def _class_axes(axis, ndim):
    """``(lo, hi)``: the class axes ``lo..hi-1``, which must be adjacent."""
    axes = tuple(range(ndim)) if axis is None else tuple(sorted(normalize_axis_tuple(axis, ndim)))
    if not axes:
        return ndim, ndim
    lo, hi = axes[0], axes[-1] + 1
    if axes != tuple(range(lo, hi)):
        raise NotImplementedError(f"axes {axis} are not adjacent: not supported on the GPU yet")
    return lo, hi


def _view3(a, lo, hi):
    """The ``(outer, C, inner)`` view of a C-contiguous array, class axes ``lo..hi-1``."""
    shape = a.shape
    return a.reshape(math.prod(shape[:lo]), math.prod(shape[lo:hi]), math.prod(shape[hi:]))


# --- softmax family ----------------------------------------------------------------


def logsumexp(x, axis=-1, keepdims=False):
    source = x
    x = _float_input(x, "x")
    lo, hi = _class_axes(axis, x.ndim)
    X = _view3(x, lo, hi)
    out = cuda.device_array(X.shape[0] * X.shape[2], x.dtype)
    _kernel("logsumexp_rows", x.dtype)[_row_grid(out.size), THREADS_PER_BLOCK](X, out)
    shape = x.shape[:lo] + ((1,) * (hi - lo) if keepdims else ()) + x.shape[hi:]
    return _like(out.reshape(shape), source)


def log_softmax(x, axis=-1):
    return _map_rows("log_softmax_rows", x, axis)


def softmax(x, axis=-1):
    return _map_rows("softmax_rows", x, axis)


def _map_rows(name, x, axis):
    source = x
    x = _float_input(x, "x")
    lo, hi = _class_axes(axis, x.ndim)
    out = cuda.device_array(x.shape, x.dtype)
    X, Out = _view3(x, lo, hi), _view3(out, lo, hi)
    launch = (_row_grid(X.shape[0] * X.shape[2]), THREADS_PER_BLOCK, 0, _row_bytes(X.shape[1], x.dtype))
    _kernel(name, x.dtype)[launch](X, Out)
    return _like(out, source)


# --- losses -------------------------------------------------------------------------


def _labels(target, n_classes, ignore, w, X):
    """Labels as an ``(outer, inner)`` view, checked on the device; and the
    summed weight of the rows not ignored (the ``"mean"`` denominator)."""
    Y = target.reshape(X.shape[0], X.shape[2])
    unsigned = target.dtype == np.uint64
    first_bad = cuda.device_array(1, np.int64)
    kept_weight = cuda.device_array(1, np.float64)
    _kernel("check_labels", w.dtype)[1, THREADS_PER_BLOCK](Y, n_classes, ignore, unsigned, w, first_bad, kept_weight)
    position = int(first_bad.copy_to_host()[0])
    if position < target.size:
        flat = target.reshape(target.size)
        raise IndexError(
            f"target {flat[position]} is out of bounds for {n_classes} classes "
            f"(at flat position {position}; ignore_index is {ignore})"
        )
    return Y, float(kept_weight.copy_to_host()[0])


def _class_weight(weight, n_classes, dtype):
    """The weights on the device, and their float64 sum."""
    w, w_sum = check.class_weight(None if weight is None else _to_host(weight), n_classes, dtype)
    return cuda.to_device(w), w_sum


def _reduce(row_loss, reduction, denominator, dtype, batch_shape):
    """The loss as ``reduction`` asks: per row (already in ``dtype``) or a 0-d device array."""
    if reduction == "none":
        return row_loss.reshape(batch_shape)
    out = cuda.device_array(1, dtype)
    _kernel("reduce_rows", dtype)[1, THREADS_PER_BLOCK](row_loss, reduction == "mean", denominator, out)
    return out.reshape(())


def _grad_out(out, x, target):
    """``out=``: a C-contiguous device array shaped like the logits; may be the logits themselves."""
    if not is_device_array(out):
        raise TypeError(f"out must be a device array like logits, got {type(out).__name__}")
    view = _as_numba(out)
    if tuple(view.shape) != tuple(x.shape) or view.dtype != x.dtype:
        raise ValueError(
            f"out must have the shape and dtype of logits {tuple(x.shape)} {x.dtype}, "
            f"got {tuple(view.shape)} {view.dtype}"
        )
    if not _c_contiguous(view):
        raise ValueError("out must be C-contiguous on the GPU")
    if _overlap(view, target):
        raise ValueError("out must not share memory with target")
    if _overlap(view, x) and _span(view)[0] != _span(x)[0]:
        raise ValueError("out overlaps logits without being logits: use out=logits for in-place")
    return view


def cross_entropy(
    logits, target, *, axis=-1, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
):
    return _cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing, False, None)[0]


def cross_entropy_with_grad(
    logits, target, *, axis=-1, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0, out=None
):
    return _cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing, True, out)


def _cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing, with_grad, out):
    source = logits
    x = _float_input(logits, "logits")
    axis = check.class_axis(axis, x.ndim)
    target = _device_view(target, "target")
    kind = check.target_kind(target, tuple(x.shape), axis)
    reduction = check.reduction(reduction)
    eps = check.label_smoothing(label_smoothing)
    ignore = check.ignore_index(ignore_index)
    n_classes = x.shape[axis]
    w, w_sum = _class_weight(weight, n_classes, x.dtype)
    grad = _grad_out(out, x, target) if out is not None else None
    X = _view3(x, axis, axis + 1)
    n_rows = X.shape[0] * X.shape[2]
    check.classes_for_rows(n_classes, n_rows)

    if kind == "index":
        Y, denominator = _labels(target, n_classes, ignore, w, X)
    else:
        if ignore >= 0:
            raise ValueError(f"ignore_index={ignore} is not supported with soft (probability) targets")
        denominator = float(n_rows)
    if reduction == "mean":
        scale = 1.0 / denominator if denominator != 0 else 0.0  # all ignored: NaN loss, zero gradient
    else:
        scale = 1.0

    if with_grad and grad is None:
        grad = cuda.device_array(x.shape, x.dtype)
    G = _view3(grad, axis, axis + 1) if with_grad else cuda.device_array((0, 0, 0), x.dtype)
    row_loss = cuda.device_array(n_rows, x.dtype if reduction == "none" else np.float64)
    # the loss of a class index without smoothing needs no second pass over the row: nothing to stage
    second_pass = kind == "soft" or with_grad or eps > 0
    launch = (_row_grid(n_rows), THREADS_PER_BLOCK, 0, _row_bytes(n_classes, x.dtype) if second_pass else 0)
    if kind == "index":
        _kernel("ce_index_rows", x.dtype)[launch](X, Y, w, w_sum, ignore, eps, scale, with_grad, G, row_loss)
    else:
        P = _view3(target, axis, axis + 1)
        _kernel("ce_soft_rows", x.dtype)[launch](X, P, w, eps, scale, with_grad, G, row_loss)

    batch_shape = x.shape[:axis] + x.shape[axis + 1 :]
    loss = _like(_reduce(row_loss, reduction, denominator, x.dtype, batch_shape), source)
    if not with_grad:
        return loss, None
    return loss, out if out is not None else _like(grad, source)


def nll_loss(log_probs, target, *, axis=-1, weight=None, ignore_index=-100, reduction="mean"):
    source = log_probs
    lp = _float_input(log_probs, "log_probs")
    axis = check.class_axis(axis, lp.ndim)
    target = _device_view(target, "target")
    if check.target_kind(target, tuple(lp.shape), axis) != "index":
        raise TypeError("nll_loss needs integer class indices as target")
    reduction = check.reduction(reduction)
    ignore = check.ignore_index(ignore_index)
    n_classes = lp.shape[axis]
    check.classes_for_rows(n_classes, target.size)
    w, _ = _class_weight(weight, n_classes, lp.dtype)
    LP = _view3(lp, axis, axis + 1)
    Y, denominator = _labels(target, n_classes, ignore, w, LP)
    n_rows = target.size
    row_loss = cuda.device_array(n_rows, lp.dtype if reduction == "none" else np.float64)
    blocks = max(1, min(-(-n_rows // THREADS_PER_BLOCK), MAX_BLOCKS))
    _kernel("nll_rows", lp.dtype)[blocks, THREADS_PER_BLOCK](LP, Y, w, ignore, row_loss)
    batch_shape = lp.shape[:axis] + lp.shape[axis + 1 :]
    return _like(_reduce(row_loss, reduction, denominator, lp.dtype, batch_shape), source)
