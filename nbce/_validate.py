"""The boundary layer: every check happens here, before any kernel runs.

Kernels see only C-contiguous ``(rows, classes)`` float32/float64 arrays and
labels known to be in range (Numba does not check bounds: an unchecked label
would read arbitrary memory).
"""

import functools
import math
import operator

import numpy as np
from numpy.lib.array_utils import normalize_axis_tuple

from ._cpu import cached_njit

REDUCTIONS = ("none", "mean", "sum")


def float_array(x, name):
    """``x`` as a float32 or float64 array; ``TypeError`` for anything else."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")
    return x


# Half precisions are computed in float32. Full-size results (gradients,
# softmax) return to the input dtype; reductions over classes (losses,
# log-sum-exp) stay float32, which holds them to float32 accuracy where a
# bfloat16 result would be rounded to 3 significant digits. bfloat16 is
# recognised by name (ml_dtypes' dtype), so ml_dtypes is optional.
HALF_PRECISIONS = ("float16", "bfloat16")


def logits_array(x, name):
    """``(x_compute, dtype)``: ``x`` as a float32/float64 array to compute with,
    and the dtype of full-size results (``x``'s own)."""
    x = np.asarray(x)
    if x.dtype.char in "fd" and x.dtype.isnative:  # float32, float64 (dtype.name is slow to build)
        return x, x.dtype
    if x.dtype.name in HALF_PRECISIONS:
        return x.astype(np.float32), x.dtype
    raise TypeError(f"{name} must be float32 or float64 (or float16, bfloat16), got dtype {x.dtype}")


class Rows:
    """``x`` with the axes in ``axis`` moved last, as a contiguous 2-D array.

    ``rows`` has shape ``(prod(batch_shape), prod(class dims))`` and is a view
    of ``x`` (no copy) when the class axes are already last and contiguous.
    """

    __slots__ = ("source", "dest", "moves", "moved_shape", "batch_shape", "n_classes", "rows")

    def __init__(self, x, axis):
        if x.ndim == 2 and (axis == 1 or axis == -1) and type(axis) is int:
            # the common case, without moveaxis and shape arithmetic
            flags = x.flags
            if flags.c_contiguous and flags.aligned:
                n, c = x.shape
                self.source = self.dest = (1,)
                self.moves = False
                self.moved_shape = None  # the shape of rows
                self.batch_shape = (n,)
                self.n_classes = c
                self.rows = x
                return
        if axis is None:
            axes = tuple(range(x.ndim))
        elif type(axis) is int and -x.ndim <= axis < x.ndim:  # the common case, without numpy's overhead
            axes = (axis % x.ndim,)
        else:
            axes = normalize_axis_tuple(axis, x.ndim)
        n_batch = x.ndim - len(axes)
        self.source = axes
        self.dest = tuple(range(n_batch, x.ndim))
        self.moves = axes != self.dest
        moved = np.moveaxis(x, axes, self.dest) if self.moves else x
        self.moved_shape = moved.shape
        self.batch_shape = moved.shape[:n_batch]
        self.n_classes = math.prod(moved.shape[n_batch:])
        flags = moved.flags
        if not (flags.c_contiguous and flags.aligned):
            moved = np.array(moved, order="C")
        self.rows = moved.reshape(math.prod(self.batch_shape), self.n_classes)

    def restore(self, rows2d):
        """Inverse of the move: a ``(rows, classes)`` result back in ``x``'s layout."""
        if self.moved_shape is None:
            return rows2d
        out = rows2d.reshape(self.moved_shape)
        return np.moveaxis(out, self.dest, self.source) if self.moves else out

    def restore_batch(self, values):
        """A per-row result shaped like ``x`` without the class axes."""
        return values if values.shape == self.batch_shape else values.reshape(self.batch_shape)


def class_axis(axis, ndim):
    """The single class axis for the losses, as a non-negative int."""
    try:
        axis = operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an integer, got {axis!r}") from None
    if ndim == 0:
        raise ValueError("logits must have at least one dimension (the class axis)")
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(axis, ndim)
    return axis % ndim


def classes_for_rows(n_classes, n_rows):
    if n_classes == 0 and n_rows > 0:
        raise ValueError(f"the class axis is empty (C = 0) but there are {n_rows} rows")


def reduction(value):
    if value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {value!r}")
    return value


def label_smoothing(eps):
    eps = float(eps)
    if not 0.0 <= eps <= 1.0:  # also rejects NaN
        raise ValueError(f"label_smoothing must be in [0, 1], got {eps}")
    return eps


def z_loss(value):
    z = float(value)
    if not (math.isfinite(z) and z >= 0.0):
        raise ValueError(f"z_loss must be finite and >= 0, got {value!r}")
    return z


def softcap(value):
    """The softcap as a float, 0.0 for None (no cap)."""
    if value is None:
        return 0.0
    cap = float(value)
    if not (math.isfinite(cap) and cap > 0.0):
        raise ValueError(f"softcap must be None or a finite number > 0, got {value!r}")
    return cap


# Empty arrays for the outputs and inputs a kernel is told to skip: shared by
# every call (nothing is ever read or written in them), so that small calls do
# not pay for allocating them.
NO_FLOAT64 = np.empty(0)
NO_INT64 = np.empty(0, np.int64)


def broadcast_weights(value, name, shape, where):
    """``value`` as an array and its view broadcast to ``shape``: ``TypeError``
    unless real numbers, ``ValueError`` unless it broadcasts (to ``where``,
    the shape described for the message) and is finite."""
    v = np.asarray(value)
    if v.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be real numbers, got dtype {v.dtype}")
    if v.shape == shape:  # the common case, without broadcast_to's overhead (2 us)
        full = v
    else:
        try:
            full = np.broadcast_to(v, shape)
        except ValueError:
            raise ValueError(f"{name} of shape {v.shape} does not broadcast to {where}") from None
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    return v, full


def sample_weight(value, batch_shape):
    """Per-row weights broadcast to ``batch_shape``, as a flat float64 array in
    row order (empty for None: all ones)."""
    if value is None:
        return NO_FLOAT64
    where = f"the rows' shape {batch_shape} (the logits without the class axis)"
    _, full = broadcast_weights(value, "sample_weight", batch_shape, where)
    v = np.ascontiguousarray(full, dtype=np.float64).reshape(-1)
    if v.size and v.min() < 0:
        raise ValueError("sample_weight must be >= 0")
    return v


@functools.lru_cache(maxsize=32)
def _ones(n, dtype):
    return np.ones(n, dtype)  # shared: kernels only read it


@functools.lru_cache(maxsize=8)
def no_rows(dtype):
    """An empty (0, 0) array of ``dtype``, shared as NO_FLOAT64 is."""
    return np.empty((0, 0), dtype)


def class_weight(weight, n_classes, dtype):
    """Per-class weights as a ``dtype`` array of length C (ones when None), and
    their sum in float64."""
    if weight is None:
        return _ones(n_classes, dtype), float(n_classes)
    w = np.asarray(weight)
    if w.dtype.kind not in "fiu":
        raise TypeError(f"weight must be real numbers, got dtype {w.dtype}")
    if w.shape != (n_classes,):
        raise ValueError(f"weight must have shape ({n_classes},) (one per class), got {w.shape}")
    w = np.ascontiguousarray(w, dtype=dtype)
    total = float(w.sum(dtype=np.float64))
    # a NaN or inf makes the sum NaN or inf; a finite sum needs no other check
    if not (math.isfinite(total) or np.all(np.isfinite(w))):
        raise ValueError(f"weight must be finite in {dtype} (found NaN or inf)")
    return w, total


def ignore_index(value):
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"ignore_index must be an integer, got {value!r}") from None


def target_array(target):
    """``target`` as an array; bfloat16 probabilities as float32 (NumPy does
    not see ml_dtypes' bfloat16 as a float)."""
    target = np.asarray(target)
    is_bfloat16 = target.dtype.kind == "V" and target.dtype.name == "bfloat16"  # kind first: name is slow
    return target.astype(np.float32) if is_bfloat16 else target


def target_kind(target, logits_shape, axis):
    """``"index"`` or ``"soft"``, from the target's dtype and shape."""
    last = axis == len(logits_shape) - 1  # the common case, with one slice (40 ns) rather than two and a sum
    index_shape = logits_shape[:-1] if last else logits_shape[:axis] + logits_shape[axis + 1 :]
    kind = target.dtype.kind
    if kind not in "iuf":
        raise TypeError(
            f"target must hold integer class indices or float probabilities, got dtype {target.dtype}"
        )
    if kind in "iu":
        if target.shape != index_shape:
            raise ValueError(
                f"class-index target must have shape {index_shape} (logits without the class axis), "
                f"got {target.shape}"
            )
        return "index"
    if target.shape == logits_shape:
        return "soft"
    if target.shape == index_shape:
        raise TypeError(
            f"target has dtype {target.dtype} but the shape of class indices {index_shape}: "
            "class indices must be integers (soft targets must have the shape of logits)"
        )
    raise ValueError(
        f"target shape {target.shape} matches neither class indices {index_shape} "
        f"nor probabilities {logits_shape}"
    )


def out_array(out, x, target, dtype=None):
    """``out=`` must be a writable array shaped like ``x`` (with ``x``'s dtype
    unless ``dtype`` is given), apart from ``target``."""
    dtype = x.dtype if dtype is None else dtype
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a NumPy array, got {type(out).__name__}")
    if out.shape != x.shape or out.dtype != dtype:
        raise ValueError(
            f"out must have the shape and dtype of logits {x.shape} {dtype}, got {out.shape} {out.dtype}"
        )
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    if may_overlap(out, target):
        raise ValueError("out must not share memory with target")


def may_overlap(a, b):
    """``np.may_share_memory(a, b)``, without its call (0.2 us) when ``a`` and
    ``b`` are two arrays that each own their memory: two allocations."""
    if a is not b and a.flags.owndata and b.flags.owndata:
        return False
    return np.may_share_memory(a, b)


def grad_buffer(out, rows):
    """The (rows, classes) buffer the kernel writes the gradient into.

    A view of ``out`` when its layout allows (``out=logits`` then works in
    place); otherwise a new buffer, copied to ``out`` afterwards.
    """
    if out is None:
        return np.empty(rows.rows.shape, rows.rows.dtype)
    view = np.moveaxis(out, rows.source, rows.dest) if rows.moves else out
    flags = view.flags
    if not (flags.c_contiguous and flags.aligned):
        return np.empty(rows.rows.shape, rows.rows.dtype)
    if view.shape != rows.rows.shape:
        view = view.reshape(rows.rows.shape)
    if view is not rows.rows and may_overlap(view, rows.rows) and not _same_elements(view, rows.rows):
        raise ValueError("out overlaps logits without being logits: use out=logits for in-place")
    return view


def _same_elements(a, b):
    return a.__array_interface__["data"][0] == b.__array_interface__["data"][0] and a.strides == b.strides


def finish_grad(grad_rows, rows, out):
    """The gradient in the layout of the logits: ``out`` when given (filled if
    the kernel wrote into a buffer of its own), else a view of ``grad_rows``."""
    if out is None:
        return rows.restore(grad_rows)
    if grad_rows is not out and grad_rows.base is None:  # a buffer of our own, not a view of out
        out[...] = rows.restore(grad_rows)
    return out


def cast_into(values, out, dtype):
    """``values`` (computed in float32 for a half-precision input) in ``dtype``:
    written into ``out`` when given, else as a new array."""
    if out is None:
        return values.astype(dtype)
    out[...] = values
    return out


def rows_shape(shape):
    """The (rows, classes) view of an elementwise loss's input of ``shape``:
    the last axis is the classes; a 0-d input is one row of one element."""
    return (math.prod(shape[:-1]), shape[-1]) if shape else (1, 1)


def elementwise_loss(kernel, x, dtype, t, params, reduction, with_grad, out):
    """Loss and gradient (or None) of an elementwise loss, from
    ``kernel(X, T, *params, scale, with_grad, G, L, row_loss)`` on the
    (rows, classes) views of ``x`` and ``t`` (see ``_cpu``'s ELEMENTWISE)."""
    out_1d = None
    if out is not None:
        out_array(out, x, t, dtype)
        if dtype == x.dtype:  # half precisions compute into a float32 buffer of their own
            out_1d = np.atleast_1d(out)  # a view: a 0-d input is one row of one element
    rows = Rows(np.atleast_1d(x), -1)
    t2 = np.ascontiguousarray(t.reshape(rows.rows.shape), dtype=x.dtype)
    grad = grad_buffer(out_1d, rows) if with_grad else np.empty((0, 0), x.dtype)
    per_element = reduction == "none"  # otherwise the row sums are enough
    losses = np.empty(rows.rows.shape if per_element else (0, 0), x.dtype)
    row_loss = np.empty(rows.rows.shape[0])
    scale = 1.0 / x.size if reduction == "mean" and x.size else 1.0
    total = kernel.build(rows.rows)(rows.rows, t2, *params, scale, with_grad, grad, losses, row_loss)
    loss = reduce_losses(losses.reshape(x.shape) if per_element else None, total, reduction, x.size, x.dtype)
    if not with_grad:
        return loss, None
    grad = finish_grad(grad, rows, out_1d).reshape(x.shape)
    if dtype != x.dtype:
        return loss, cast_into(grad, out, dtype)
    return loss, grad if out is None else out


def reduce_losses(losses, total, reduction, denominator, dtype):
    """Per-row ``losses`` (summing to ``total``) as ``reduction`` asks, in ``dtype``.

    ``"mean"`` divides by ``denominator``, and is NaN when that is 0 (as PyTorch).
    """
    if reduction == "none":
        return losses.astype(dtype, copy=False)
    value = total if reduction == "sum" else (total / denominator if denominator != 0 else np.nan)
    # ``one * value`` rounds value to dtype as ``dtype.type(value)`` does (a
    # Python float is weak in NumPy's promotion), in a third of its time
    return _ONE[dtype] * float(value)


_ONE = {np.dtype(np.float32): np.float32(1.0), np.dtype(np.float64): np.float64(1.0)}


_INT64 = np.dtype(np.int64)


def index_labels(target, n_classes, ignore, weight, row_weight=NO_FLOAT64):
    """Flattened int64 labels and the summed ``row_weight * weight[label]`` of
    the rows not ignored (``row_weight``: one per row, or empty for ones).

    ``IndexError`` for any label outside [0, C) that is not ``ignore``.
    """
    labels = target if target.ndim == 1 else target.reshape(-1)
    dtype = labels.dtype
    if dtype is not _INT64:  # identity, not ==: comparing dtypes alone costs 0.1 us a call
        if dtype.kind == "u" and dtype.itemsize == 8 and labels.size and labels.max() > np.iinfo(np.int64).max:
            _bad_label(labels, int(np.argmax(labels)), n_classes, ignore)  # would wrap in int64
        labels = labels.astype(np.int64)
    first_bad, kept_weight = _scan_labels(labels, n_classes, ignore, weight, row_weight)
    if first_bad >= 0:
        _bad_label(labels, first_bad, n_classes, ignore)
    return labels, kept_weight


def _bad_label(labels, position, n_classes, ignore):
    raise IndexError(
        f"target {labels[position]} is out of bounds for {n_classes} classes "
        f"(at flat position {position}; ignore_index is {ignore})"
    )


def _scan_labels_body(labels, n_classes, ignore, weight, row_weight):
    total = 0.0
    for i in range(labels.size):
        label = labels[i]
        if label == ignore:
            continue
        if label < 0 or label >= n_classes:
            return i, total
        total += weight[label] * (row_weight[i] if row_weight.size else 1.0)
    return -1, total


# One pass over the labels: the first bad position (-1 if none) and the
# "mean" denominator (sum of w[y], times the sample weights, over rows not
# ignored; PyTorch's without sample weights).
_scan_labels = cached_njit(_scan_labels_body)


def unit_interval(x, name):
    """``ValueError`` unless every element of the array ``x`` is in [0, 1] (NaN is not)."""
    if x.size and not (x.min() >= 0 and x.max() <= 1):  # min and max return NaN if there is one
        with np.errstate(invalid="ignore"):
            bad = x[~((x >= 0) & (x <= 1))].flat[0]
        raise ValueError(f"all elements of {name} must be between 0 and 1, found {bad}")


def elementwise_weight(value, name, shape, rows_shape, dtype):
    """``value`` broadcast to an array of ``shape`` viewed as ``rows_shape``
    (rows, classes): a contiguous ``dtype`` array with one row shared by every
    row, or one row per row. Ones when ``value`` is None."""
    if value is None:
        return np.ones((1, rows_shape[1]), dtype)
    v, full = broadcast_weights(value, name, shape, f"the input shape {shape}")
    if v.ndim <= 1 or all(d == 1 for d in v.shape[:-1]):  # constant along the rows
        return np.ascontiguousarray(np.broadcast_to(v.reshape(-1), (1, rows_shape[1])), dtype=dtype)
    return np.ascontiguousarray(full.reshape(rows_shape), dtype=dtype)


def _real_number(value, name):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None


def focal_gamma(gamma):
    """The focusing exponent of the focal losses: finite and >= 0."""
    g = _real_number(gamma, "gamma")
    if not 0.0 <= g < math.inf:  # also rejects NaN
        raise ValueError(f"gamma must be finite and >= 0, got {g}")
    return g


def focal_alpha(alpha):
    """``(weight of positives, weight of negatives)`` of the sigmoid focal loss.

    ``alpha`` in [0, 1] weighs positives by alpha and negatives by 1 - alpha;
    None or a negative value (torchvision's -1) weighs both by 1.
    """
    if alpha is None:
        return 1.0, 1.0
    a = _real_number(alpha, "alpha")
    if a < 0.0:
        return 1.0, 1.0
    if not a <= 1.0:  # also rejects NaN
        raise ValueError(f"alpha must be in [0, 1], or negative or None for no weighting, got {a}")
    return a, 1.0 - a


def probability_target(target, shape, input_name="logits"):
    """``target`` as an array (bfloat16 as float32), checked to hold floats and
    to have ``shape`` (elementwise binary targets)."""
    t = target_array(target)
    if t.dtype.kind != "f":
        raise TypeError(f"target must hold float probabilities, got dtype {t.dtype}")
    if t.shape != shape:
        raise ValueError(f"target shape {t.shape} must equal the {input_name} shape {shape}")
    return t
