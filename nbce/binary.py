"""Binary (sigmoid) losses with PyTorch's semantics:
``binary_cross_entropy_with_logits`` and its gradient twin."""

from . import _cpu
from . import _validate as check

_PARAMETERS = """\
    logits : array_like
        Scores, any shape; each element is an independent binary prediction.
        float32 or float64, or float16 / bfloat16, computed in float32 (the
        loss comes back in float32, the gradient in their own dtype).
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
    x, dtype = check.logits_array(logits, "logits")
    t = check.probability_target(target, x.shape)
    reduction = check.reduction(reduction)
    shape2 = check.rows_shape(x.shape)
    w = check.elementwise_weight(weight, "weight", x.shape, shape2, x.dtype)
    pw = check.elementwise_weight(pos_weight, "pos_weight", x.shape, shape2, x.dtype)
    return check.elementwise_loss(_cpu.bce_logits_rows, x, dtype, t, (w, pw), reduction, with_grad, out)
