"""Classification losses with PyTorch's semantics: ``cross_entropy``, its fused
gradient ``cross_entropy_with_grad``, and ``nll_loss``."""

import numpy as np

from . import _cpu
from . import _validate as check
from ._validate import Rows

_COMMON_PARAMETERS = """\
    logits : array_like
        float32 or float64 unnormalised scores, classes along ``axis``.
    target : array_like
        Either integer class indices, shaped like ``logits`` without the
        class axis, or float class probabilities (soft targets) shaped like
        ``logits``.
    axis : int, optional
        The class axis (``-1``; use ``1`` for PyTorch's ``(N, C, d1, ...)``).
    weight : array_like, optional
        Per-class weights of length C (PyTorch's ``weight``).
    ignore_index : int, optional
        Class-index rows with this label add nothing to the loss or the
        gradient, and are left out of the ``"mean"`` denominator. Soft targets
        require a negative value.
    reduction : {"mean", "sum", "none"}, optional
        ``"mean"`` divides by the summed weight of the non-ignored rows (by
        the number of rows for soft targets); NaN when that is zero.
    label_smoothing : float, optional
        ``eps`` in [0, 1]: the target becomes ``(1 - eps) * target + eps / C``."""


def cross_entropy(
    logits, target, *, axis=-1, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
):
    return _cross_entropy(
        logits, target, axis, weight, ignore_index, reduction, label_smoothing, with_grad=False, out=None
    )[0]


def cross_entropy_with_grad(
    logits,
    target,
    *,
    axis=-1,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    out=None,
):
    return _cross_entropy(
        logits, target, axis, weight, ignore_index, reduction, label_smoothing, with_grad=True, out=out
    )


cross_entropy.__doc__ = f"""Cross-entropy between softmax(logits) and the target, as
``torch.nn.functional.cross_entropy``.

Parameters
----------
{_COMMON_PARAMETERS}

Returns
-------
loss : ndarray or scalar
    A scalar of the logits' dtype for ``"mean"``/``"sum"``; for ``"none"``
    the per-row losses, shaped like ``logits`` without the class axis.

See Also
--------
cross_entropy_with_grad : the loss and its gradient in one pass.

Examples
--------
>>> import numpy as np, nbce
>>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
>>> target = np.array([0, 2])
>>> round(float(nbce.cross_entropy(logits, target)), 6)
0.669962
>>> nbce.cross_entropy(logits, target, reduction="none").round(6)
array([0.241311, 1.098612])
"""

cross_entropy_with_grad.__doc__ = f"""Cross-entropy and its gradient d(loss)/d(logits), fused in one pass.

Parameters
----------
{_COMMON_PARAMETERS}
    out : ndarray, optional
        Where to write the gradient: same shape and dtype as ``logits``.
        ``out=logits`` overwrites the logits with the gradient, without
        allocating an N x C buffer when the class axis is the last, contiguous
        axis. Without ``out`` no input is modified.

Returns
-------
loss : ndarray or scalar
    As :func:`cross_entropy`.
grad : ndarray
    d(loss)/d(logits), shaped like ``logits``; for ``reduction="none"`` the
    gradient of ``loss.sum()`` (each row's own gradient). Ignored rows get
    exactly zero.

Examples
--------
>>> import numpy as np, nbce
>>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
>>> loss, grad = nbce.cross_entropy_with_grad(logits, np.array([0, 2]))
>>> grad.round(4)
array([[-0.1072,  0.0876,  0.0196],
       [ 0.1667,  0.1667, -0.3333]])
>>> bool(np.allclose(grad.sum(axis=-1), 0.0))  # each row's gradient sums to zero
True
"""


def _cross_entropy(logits, target, axis, weight, ignore_index, reduction, label_smoothing, with_grad, out):
    x = check.float_array(logits, "logits")
    axis = check.class_axis(axis, x.ndim)
    target = np.asarray(target)
    kind = check.target_kind(target, x.shape, axis)
    reduction = check.reduction(reduction)
    eps = check.label_smoothing(label_smoothing)
    ignore = check.ignore_index(ignore_index)
    n_classes = x.shape[axis]
    w = check.class_weight(weight, n_classes, x.dtype)
    if out is not None:
        check.out_array(out, x, target)
    rows = Rows(x, axis)
    n_rows = rows.rows.shape[0]
    check.classes_for_rows(n_classes, n_rows)

    if kind == "index":
        labels, denominator = check.index_labels(target, n_classes, ignore, w)
    else:
        if ignore >= 0:
            raise ValueError(f"ignore_index={ignore} is not supported with soft (probability) targets")
        soft = Rows(target.astype(x.dtype, copy=False), axis).rows
        denominator = float(n_rows)
    if reduction == "mean":
        scale = 1.0 / denominator if denominator != 0 else 0.0
    else:
        scale = 1.0

    grad_rows = check.grad_buffer(out, rows) if with_grad else np.empty((0, 0), x.dtype)
    row_loss = np.empty(n_rows, np.float64)
    stream = _cpu.streams(grad_rows)
    if kind == "index":
        w_sum = float(n_classes) if weight is None else float(w.sum(dtype=np.float64))
        total = _cpu.ce_index_rows(
            rows.rows, labels, w, weight is not None, w_sum, ignore, eps, scale, with_grad, grad_rows, stream, row_loss
        )
    else:
        total = _cpu.ce_soft_rows(rows.rows, soft, w, eps, scale, with_grad, grad_rows, stream, row_loss)

    loss = check.reduce_losses(rows.restore_batch(row_loss), total, reduction, denominator, x.dtype)

    if not with_grad:
        return loss, None
    return loss, check.finish_grad(grad_rows, rows, out)


def nll_loss(log_probs, target, *, axis=-1, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of class indices, as ``torch.nn.functional.nll_loss``.

    ``loss[n] = -weight[y_n] * log_probs[n, y_n]``, 0 for ignored rows.

    Parameters
    ----------
    log_probs : array_like
        float32 or float64 log-probabilities (e.g. from :func:`nbce.log_softmax`),
        classes along ``axis``.
    target : array_like of int
        Class indices shaped like ``log_probs`` without the class axis.
    axis : int, optional
        The class axis.
    weight : array_like, optional
        Per-class weights of length C.
    ignore_index : int, optional
        Rows with this label give 0 and are left out of the ``"mean"``.
    reduction : {"mean", "sum", "none"}, optional
        ``"mean"`` divides by the summed weight of the non-ignored rows; NaN
        when that is zero.

    Returns
    -------
    ndarray or scalar
        A scalar for ``"mean"``/``"sum"``, else shaped like ``target``.

    Examples
    --------
    >>> import numpy as np, nbce
    >>> log_probs = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]]))
    >>> nbce.nll_loss(log_probs, np.array([0, 2]), reduction="none").round(6)
    array([0.693147, 0.223144])
    """
    lp = check.float_array(log_probs, "log_probs")
    axis = check.class_axis(axis, lp.ndim)
    target = np.asarray(target)
    if check.target_kind(target, lp.shape, axis) != "index":
        raise TypeError("nll_loss needs integer class indices as target")
    reduction = check.reduction(reduction)
    ignore = check.ignore_index(ignore_index)
    n_classes = lp.shape[axis]
    check.classes_for_rows(n_classes, target.size)
    w = check.class_weight(weight, n_classes, lp.dtype)
    labels, denominator = check.index_labels(target, n_classes, ignore, w)
    labels = labels.reshape(target.shape)
    kept = labels != ignore
    safe = np.where(kept, labels, 0)  # ignored rows must not index anything
    picked = np.take_along_axis(lp, np.expand_dims(safe, axis), axis).squeeze(axis)
    w_y = np.where(kept, w[safe], 0).astype(lp.dtype)
    with np.errstate(invalid="ignore"):  # 0 * inf: NaN where kept (as PyTorch), dropped where ignored
        losses = np.where(kept, -(w_y * picked), 0)
    return check.reduce_losses(losses, losses.sum(dtype=np.float64), reduction, denominator, lp.dtype)

