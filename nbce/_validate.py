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


class Rows:
    """``x`` with the axes in ``axis`` moved last, as a contiguous 2-D array.

    ``rows`` has shape ``(prod(batch_shape), prod(class dims))`` and is a view
    of ``x`` (no copy) when the class axes are already last and contiguous.
    """

    def __init__(self, x, axis):
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
        if not (moved.flags.c_contiguous and moved.flags.aligned):
            moved = np.array(moved, order="C")
        self.rows = moved.reshape(math.prod(self.batch_shape), self.n_classes)

    def restore(self, rows2d):
        """Inverse of the move: a ``(rows, classes)`` result back in ``x``'s layout."""
        out = rows2d.reshape(self.moved_shape)
        return np.moveaxis(out, self.dest, self.source) if self.moves else out

    def restore_batch(self, values):
        """A per-row result shaped like ``x`` without the class axes."""
        return values.reshape(self.batch_shape)


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


@functools.lru_cache(maxsize=32)
def _ones(n, dtype):
    return np.ones(n, dtype)  # shared: kernels only read it


def class_weight(weight, n_classes, dtype):
    """Per-class weights as a ``dtype`` array of length C (ones when None)."""
    if weight is None:
        return _ones(n_classes, dtype)
    w = np.asarray(weight)
    if w.dtype.kind not in "fiu":
        raise TypeError(f"weight must be real numbers, got dtype {w.dtype}")
    if w.shape != (n_classes,):
        raise ValueError(f"weight must have shape ({n_classes},) (one per class), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("weight must be finite (found NaN or inf)")
    return np.ascontiguousarray(w, dtype=dtype)


def ignore_index(value):
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"ignore_index must be an integer, got {value!r}") from None


def target_kind(target, logits_shape, axis):
    """``"index"`` or ``"soft"``, from the target's dtype and shape."""
    index_shape = logits_shape[:axis] + logits_shape[axis + 1 :]
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


def out_array(out, x, target):
    """``out=`` must be a writable array shaped like ``x``, apart from ``target``."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a NumPy array, got {type(out).__name__}")
    if out.shape != x.shape or out.dtype != x.dtype:
        raise ValueError(
            f"out must have the shape and dtype of logits {x.shape} {x.dtype}, got {out.shape} {out.dtype}"
        )
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    if np.may_share_memory(out, target):
        raise ValueError("out must not share memory with target")


def grad_buffer(out, rows):
    """The (rows, classes) buffer the kernel writes the gradient into.

    A view of ``out`` when its layout allows (``out=logits`` then works in
    place); otherwise a new buffer, copied to ``out`` afterwards.
    """
    if out is None:
        return np.empty_like(rows.rows)
    view = np.moveaxis(out, rows.source, rows.dest) if rows.moves else out
    if not (view.flags.c_contiguous and view.flags.aligned):
        return np.empty_like(rows.rows)
    view = view.reshape(rows.rows.shape)
    if np.may_share_memory(view, rows.rows) and not _same_elements(view, rows.rows):
        raise ValueError("out overlaps logits without being logits: use out=logits for in-place")
    return view


def _same_elements(a, b):
    return a.__array_interface__["data"][0] == b.__array_interface__["data"][0] and a.strides == b.strides


def finish_grad(grad_rows, rows, out):
    """The gradient in the layout of the logits: ``out`` when given (filled if
    the kernel wrote into a buffer of its own), else a view of ``grad_rows``."""
    grad = rows.restore(grad_rows)
    if out is None:
        return grad
    if grad_rows.base is None:  # a buffer of our own, not a view of out
        out[...] = grad
    return out


def reduce_losses(losses, total, reduction, denominator, dtype):
    """Per-row ``losses`` (summing to ``total``) as ``reduction`` asks, in ``dtype``.

    ``"mean"`` divides by ``denominator``, and is NaN when that is 0 (as PyTorch).
    """
    if reduction == "none":
        return losses.astype(dtype, copy=False)
    if reduction == "sum":
        return dtype.type(total)
    return dtype.type(total / denominator if denominator != 0 else np.nan)


def index_labels(target, n_classes, ignore, weight):
    """Flattened int64 labels and the summed ``weight`` of the rows not ignored.

    ``IndexError`` for any label outside [0, C) that is not ``ignore``.
    """
    labels = target.reshape(-1)
    if labels.dtype == np.uint64 and labels.size and labels.max() > np.iinfo(np.int64).max:
        _bad_label(labels, int(np.argmax(labels)), n_classes, ignore)  # would wrap in int64
    labels = labels.astype(np.int64, copy=False)
    first_bad, kept_weight = _scan_labels(labels, n_classes, ignore, weight)
    if first_bad >= 0:
        _bad_label(labels, first_bad, n_classes, ignore)
    return labels, kept_weight


def _bad_label(labels, position, n_classes, ignore):
    raise IndexError(
        f"target {labels[position]} is out of bounds for {n_classes} classes "
        f"(at flat position {position}; ignore_index is {ignore})"
    )


def _scan_labels_body(labels, n_classes, ignore, weight):
    total = 0.0
    for i in range(labels.size):
        label = labels[i]
        if label == ignore:
            continue
        if label < 0 or label >= n_classes:
            return i, total
        total += weight[label]
    return -1, total


# One pass over the labels: the first bad position (-1 if none) and the
# "mean" denominator of PyTorch (sum of w[y] over rows not ignored).
_scan_labels = cached_njit(_scan_labels_body)
