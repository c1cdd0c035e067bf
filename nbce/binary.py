"""Binary (sigmoid) losses with PyTorch's semantics:
``binary_cross_entropy_with_logits`` and its gradient twin."""

import numpy as np

from . import _cpu
from . import _validate as check

_PARAMETERS = """\
    logits : array_like
        float32 or float64 scores, any shape; each element is an independent
        binary prediction.
    target : array_like
        Probabilities of the positive class (usually 0 or 1), shaped like
        ``logits``.
    weight : array_like, optional
        Finite rescaling weights, broadcastable to ``logits``.
    pos_weight : array_like, optional
        Finite weights of the positive term, broadcastable to ``logits``
        (usually one per class, along the last axis).
    reduction : {"mean", "sum", "none"}, optional
        ``"mean"`` divides by the number of elements (NaN for none)."""


def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None, reduction="mean"):
    return _bce_with_logits(logits, target, weight, pos_weight, reduction, with_grad=False, out=None)[0]


def binary_cross_entropy_with_logits_with_grad(
    logits, target, *, weight=None, pos_weight=None, reduction="mean", out=None
):
    return _bce_with_logits(logits, target, weight, pos_weight, reduction, with_grad=True, out=out)


binary_cross_entropy_with_logits.__doc__ = f"""Binary cross-entropy of sigmoid(logits), as
``torch.nn.functional.binary_cross_entropy_with_logits``.

Per element, with ``p = pos_weight`` and ``w = weight``::

    loss = -w [p t log(sigmoid(x)) + (1 - t) log(1 - sigmoid(x))]

computed as ``w [(1 - t) x + (1 + (p - 1) t) softplus(-x)]``, which stays
finite and accurate for any finite ``x`` (e.g. ``|x| = 1e4`` in float32).

Parameters
----------
{_PARAMETERS}

Returns
-------
loss : ndarray or scalar
    A scalar of the logits' dtype for ``"mean"``/``"sum"``, else shaped like
    ``logits``.

Examples
--------
>>> import numpy as np, nbce
>>> x = np.array([[2.0, -1.0], [0.0, 1e4]])
>>> t = np.array([[1.0, 0.0], [1.0, 0.0]])
>>> nbce.binary_cross_entropy_with_logits(x, t, reduction="none").round(6)
array([[1.26928e-01, 3.13262e-01],
       [6.93147e-01, 1.00000e+04]])
"""

binary_cross_entropy_with_logits_with_grad.__doc__ = f"""Binary cross-entropy with logits and its
gradient d(loss)/d(logits), in one pass.

The gradient of each element is ``w [(1 + (p - 1) t) sigmoid(x) - p t]``,
scaled by 1/size for ``"mean"``; for ``"none"`` it is the gradient of
``loss.sum()``.

Parameters
----------
{_PARAMETERS}
    out : ndarray, optional
        Where to write the gradient (shape and dtype of ``logits``);
        ``out=logits`` works in place.

Returns
-------
loss : ndarray or scalar
    As :func:`binary_cross_entropy_with_logits`.
grad : ndarray
    Shaped like ``logits``.

Examples
--------
>>> import numpy as np, nbce
>>> loss, grad = nbce.binary_cross_entropy_with_logits_with_grad(
...     np.array([0.0, 2.0]), np.array([1.0, 1.0]), reduction="sum")
>>> grad.round(6)
array([-0.5     , -0.119203])
"""


def _bce_with_logits(logits, target, weight, pos_weight, reduction, with_grad, out):
    x = check.float_array(logits, "logits")
    t = np.asarray(target)
    if t.dtype.kind != "f":
        raise TypeError(f"target must hold float probabilities, got dtype {t.dtype}")
    if t.shape != x.shape:
        raise ValueError(f"target shape {t.shape} must equal the logits shape {x.shape}")
    reduction = check.reduction(reduction)
    out_1d = None
    if out is not None:
        check.out_array(out, x, t)
        out_1d = np.atleast_1d(out)  # a view: a 0-d input is one row of one element
    rows = check.Rows(np.atleast_1d(x), -1)
    shape2 = rows.rows.shape
    w = _per_element(weight, "weight", x, shape2)
    pw = _per_element(pos_weight, "pos_weight", x, shape2)
    t2 = np.ascontiguousarray(t.reshape(shape2), dtype=x.dtype)
    grad = check.grad_buffer(out_1d, rows) if with_grad else np.empty((0, 0), x.dtype)
    losses = np.empty(shape2, x.dtype)
    scale = 1.0 / x.size if reduction == "mean" and x.size else 1.0
    total = _cpu.bce_logits_rows(rows.rows, t2, w, pw, scale, with_grad, grad, losses)
    loss = check.reduce_losses(losses.reshape(x.shape), total, reduction, x.size, x.dtype)
    if not with_grad:
        return loss, None
    grad = check.finish_grad(grad, rows, out_1d)
    return loss, grad.reshape(x.shape) if out is None else out


def _per_element(value, name, x, shape2):
    """``value`` broadcast to the (rows, classes) view of ``x``, as a 2-D array
    with one row (the same for every row) or one row per row of ``shape2``."""
    if value is None:
        return np.ones((1, shape2[1]), x.dtype)
    v = np.asarray(value)
    if v.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be real numbers, got dtype {v.dtype}")
    try:
        full = np.broadcast_to(v, x.shape)
    except ValueError:
        raise ValueError(f"{name} of shape {v.shape} does not broadcast to the logits shape {x.shape}") from None
    if not np.all(np.isfinite(v)):
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    if v.ndim <= 1 or all(d == 1 for d in v.shape[:-1]):  # one value per class at most
        return np.ascontiguousarray(np.broadcast_to(v.reshape(-1), (1, shape2[1])), dtype=x.dtype)
    return np.ascontiguousarray(full.reshape(shape2), dtype=x.dtype)
