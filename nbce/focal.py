"""Focal losses (Lin et al., "Focal Loss for Dense Object Detection", 2017):
``sigmoid_focal_loss`` as ``torchvision.ops.sigmoid_focal_loss``, the
multi-class ``softmax_focal_loss``, and their gradient twins."""

import numpy as np

from . import _cpu
from . import _validate as check

_SIGMOID_PARAMETERS = """\
    logits : array_like
        Scores, any shape; each element is an independent binary prediction.
        float32 or float64, or float16 / bfloat16, computed in float32 (the
        loss comes back in float32, the gradient in their own dtype).
    target : array_like
        Float probabilities of the positive class in [0, 1] (usually 0 or 1),
        shaped like ``logits``; a value outside [0, 1], where
        ``(1 - p_t)**gamma`` is undefined, is a ``ValueError``.
    alpha : float or None, optional
        Weight of the positive term, in [0, 1]; negatives get ``1 - alpha``.
        None or a negative value (torchvision's ``-1``) turns the weighting
        off.
    gamma : float, optional
        Focusing exponent, finite and >= 0; ``gamma = 0`` with ``alpha=None``
        is :func:`nbce.binary_cross_entropy_with_logits`.
    reduction : {"none", "mean", "sum"}, optional
        ``"mean"`` divides by the number of elements (NaN for none). The
        default ``"none"`` is torchvision's."""

_SOFTMAX_PARAMETERS = """\
    logits : array_like
        Unnormalised scores, classes along ``axis``: float32 or float64, or
        float16 / bfloat16, computed in float32 (the loss comes back in
        float32, the gradient in their own dtype).
    target : array_like of int
        Class indices, shaped like ``logits`` without the class axis.
    axis : int, optional
        The class axis (``-1``; use ``1`` for PyTorch's ``(N, C, d1, ...)``).
    gamma : float, optional
        Focusing exponent, finite and >= 0; ``gamma = 0`` is
        :func:`nbce.cross_entropy`.
    weight : array_like, optional
        Per-class weights of length C (the ``alpha`` of the paper, per class).
    ignore_index : int, optional
        Rows with this label add exactly 0 to the loss and the gradient and
        are left out of the ``"mean"`` denominator.
    reduction : {"mean", "sum", "none"}, optional
        ``"mean"`` divides by the summed ``weight[y]`` of the non-ignored rows
        (as :func:`nbce.cross_entropy`); NaN when that is zero."""


def sigmoid_focal_loss(logits, target, *, alpha=0.25, gamma=2.0, reduction="none"):
    return _sigmoid_focal(logits, target, alpha, gamma, reduction, with_grad=False, out=None)[0]


def sigmoid_focal_loss_with_grad(logits, target, *, alpha=0.25, gamma=2.0, reduction="none", out=None):
    return _sigmoid_focal(logits, target, alpha, gamma, reduction, with_grad=True, out=out)


def softmax_focal_loss(logits, target, *, axis=-1, gamma=2.0, weight=None, ignore_index=-100, reduction="mean"):
    return _softmax_focal(logits, target, axis, gamma, weight, ignore_index, reduction, with_grad=False, out=None)[0]


def softmax_focal_loss_with_grad(
    logits, target, *, axis=-1, gamma=2.0, weight=None, ignore_index=-100, reduction="mean", out=None
):
    return _softmax_focal(logits, target, axis, gamma, weight, ignore_index, reduction, with_grad=True, out=out)


sigmoid_focal_loss.__doc__ = f"""Sigmoid focal loss, as ``torchvision.ops.sigmoid_focal_loss``.

Per element, with ``p = sigmoid(x)``::

    ce = binary_cross_entropy_with_logits(x, t)
    p_t = p t + (1 - p) (1 - t)
    loss = alpha_t (1 - p_t)**gamma ce,   alpha_t = alpha t + (1 - alpha) (1 - t)

with ``alpha_t = 1`` when ``alpha`` is None or negative. ``1 - p_t`` is
computed as ``(1 - t) p + t (1 - p)`` from ``exp(-|x|)``, so it keeps its
precision where ``p_t`` rounds to 1 (optax computes it in log space too).

Parameters
----------
{_SIGMOID_PARAMETERS}

Returns
-------
loss : ndarray or scalar
    Shaped like ``logits`` for ``"none"``, else a scalar; in the logits'
    dtype (float32 for half precisions).

See Also
--------
sigmoid_focal_loss_with_grad : the loss and its gradient in one pass.

Examples
--------
>>> import numpy as np, nbce
>>> x = np.array([[3.0, -1.0], [0.0, -2.0]])
>>> t = np.array([[1.0, 0.0], [1.0, 1.0]])
>>> nbce.sigmoid_focal_loss(x, t).round(6)
array([[2.7000e-05, 1.6994e-02],
       [4.3322e-02, 4.1252e-01]])
>>> round(float(nbce.sigmoid_focal_loss(x, t, alpha=None, gamma=0.0, reduction="sum")), 6)
3.181924
"""

sigmoid_focal_loss_with_grad.__doc__ = f"""Sigmoid focal loss and its gradient d(loss)/d(logits), in one pass.

With ``q = 1 - p_t``, the gradient of each element is::

    alpha_t q**gamma [(p - t) + gamma ce (1 - 2t) p (1 - p) / q]

scaled by 1/size for ``"mean"``; for ``"none"`` it is the gradient of
``loss.sum()``. ``p (1 - p) / q <= 1``, so it stays finite for ``gamma < 1``
where ``q**(gamma - 1)`` alone would overflow.

Parameters
----------
{_SIGMOID_PARAMETERS}
    out : ndarray, optional
        Where to write the gradient (shape and dtype of ``logits``);
        ``out=logits`` works in place.

Returns
-------
loss : ndarray or scalar
    As :func:`sigmoid_focal_loss`.
grad : ndarray
    Shaped like ``logits``.

Examples
--------
>>> import numpy as np, nbce
>>> loss, grad = nbce.sigmoid_focal_loss_with_grad(
...     np.array([0.0, 2.0]), np.array([1.0, 0.0]), alpha=None, reduction="sum")
>>> grad.round(6)
array([-0.298287,  1.076714])
"""

softmax_focal_loss.__doc__ = f"""Focal loss of softmax(logits) against class indices.

Per row, with ``p = softmax(x)`` and label ``y``::

    loss = -weight[y] (1 - p_y)**gamma log(p_y)

``gamma = 0`` gives :func:`nbce.cross_entropy` exactly. Ignored rows give
exactly 0; a row holding NaN or +inf, or all -inf, gives NaN; a -inf logit
at the target gives +inf (with a finite gradient).

Parameters
----------
{_SOFTMAX_PARAMETERS}

Returns
-------
loss : ndarray or scalar
    A scalar for ``"mean"``/``"sum"``; for ``"none"`` the per-row losses,
    shaped like ``target``. In the logits' dtype (float32 for half
    precisions).

See Also
--------
softmax_focal_loss_with_grad : the loss and its gradient in one pass.

Examples
--------
>>> import numpy as np, nbce
>>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
>>> target = np.array([0, 2])
>>> nbce.softmax_focal_loss(logits, target, reduction="none").round(6)
array([0.011093, 0.488272])
>>> bool(nbce.softmax_focal_loss(logits, target, gamma=0.0) == nbce.cross_entropy(logits, target))
True
"""

softmax_focal_loss_with_grad.__doc__ = f"""Softmax focal loss and its gradient d(loss)/d(logits), in one pass.

With ``q = 1 - p_y`` and ``w = weight[y]``, the gradient of a row is::

    w (q**gamma - gamma p_y log(p_y) q**(gamma - 1)) (p - onehot(y))

(from ``d p_y / d x_c = p_y (onehot(y)_c - p_c)``), scaled as the loss is
for ``"mean"``; for ``"none"`` it is the gradient of ``loss.sum()``. The
factor is computed as ``q**gamma (1 + gamma p_y (-log p_y) / q)`` with
``p_y (-log p_y) / q`` in [0, 1], so it stays finite for ``gamma < 1`` and
is 0 where ``p_y = 1``.

Parameters
----------
{_SOFTMAX_PARAMETERS}
    out : ndarray, optional
        Where to write the gradient: same shape and dtype as ``logits``.
        ``out=logits`` overwrites the logits with the gradient.

Returns
-------
loss : ndarray or scalar
    As :func:`softmax_focal_loss`.
grad : ndarray
    Shaped like ``logits``; ignored rows get exactly zero.

Examples
--------
>>> import numpy as np, nbce
>>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]])
>>> loss, grad = nbce.softmax_focal_loss_with_grad(logits, np.array([0, 2]), reduction="sum")
>>> grad.round(4)
array([[-0.0273,  0.0223,  0.005 ],
       [ 0.3109,  0.3109, -0.6218]])
"""


def _sigmoid_focal(logits, target, alpha, gamma, reduction, with_grad, out):
    x, dtype = check.logits_array(logits, "logits")
    t = check.probability_target(target, x.shape)
    a_pos, a_neg = check.focal_alpha(alpha)
    gamma = check.focal_gamma(gamma)
    reduction = check.reduction(reduction)
    check.unit_interval(t, "target")
    params = (a_pos, a_neg, gamma)
    return check.elementwise_loss(_cpu.sigmoid_focal_rows, x, dtype, t, params, reduction, with_grad, out)


def _softmax_focal(logits, target, axis, gamma, weight, ignore_index, reduction, with_grad, out):
    x, dtype = check.logits_array(logits, "logits")
    axis = check.class_axis(axis, x.ndim)
    target = np.asarray(target)
    if check.target_kind(target, x.shape, axis) != "index":
        raise TypeError("softmax_focal_loss needs integer class indices as target")
    gamma = check.focal_gamma(gamma)
    reduction = check.reduction(reduction)
    ignore = check.ignore_index(ignore_index)
    n_classes = x.shape[axis]
    w, _ = check.class_weight(weight, n_classes, x.dtype)
    if out is not None:
        check.out_array(out, x, target, dtype)
    rows = check.Rows(x, axis)
    n_rows = rows.rows.shape[0]
    check.classes_for_rows(n_classes, n_rows)
    labels, denominator = check.index_labels(target, n_classes, ignore, w)
    if reduction == "mean":
        scale = 1.0 / denominator if denominator != 0 else 0.0
    else:
        scale = 1.0

    grad_out = out if dtype == x.dtype else None  # half precisions compute into a float32 buffer
    grad_rows = check.grad_buffer(grad_out, rows) if with_grad else np.empty((0, 0), x.dtype)
    row_loss = np.empty(n_rows, np.float64)
    stream = _cpu.streams(grad_rows, grad_out is not None)
    total = _cpu.softmax_focal_rows.build(rows.rows)(
        rows.rows, labels, w, ignore, gamma, scale, with_grad, grad_rows, stream, row_loss
    )
    loss = check.reduce_losses(rows.restore_batch(row_loss), total, reduction, denominator, x.dtype)
    if not with_grad:
        return loss, None
    grad = check.finish_grad(grad_rows, rows, grad_out)
    return loss, grad if dtype == x.dtype else check.cast_into(grad, out, dtype)
