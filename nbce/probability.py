"""Losses on probabilities, as the textbook formulas are written:
``binary_cross_entropy`` (PyTorch's semantics) and ``log_loss``
(``sklearn.metrics.log_loss``), each with its gradient twin.

Both take probabilities, so both need a guard against log(0): PyTorch clamps
each log at -100, scikit-learn clips the probabilities to [eps, 1 - eps].
Near 0 and 1 the probabilities have already lost the information the logits
held; the losses on logits (``binary_cross_entropy_with_logits``,
``cross_entropy``) are the numerically stable choice.
"""

import warnings

import numpy as np

from . import _cpu
from . import _validate as check

# PyTorch's ``constexpr float EPSILON = 1e-12`` bounding the gradient's
# denominator (aten/src/ATen/native/Loss.cpp): a float32 constant, so float64
# inputs see 1e-12 rounded to float32 as well.
_TORCH_EPSILON = float(np.float32(1e-12))

_BCE_PARAMETERS = """\
    probs : array_like
        float32 or float64 probabilities in [0, 1], any shape.
    target : array_like
        float probabilities in [0, 1] (usually 0 or 1), shaped like ``probs``.
    weight : array_like, optional
        Finite rescaling weights, broadcastable to ``probs``.
    reduction : {"mean", "sum", "none"}, optional
        ``"mean"`` divides by the number of elements (NaN for none)."""

_STABLE_CHOICE = """\
Probabilities near 0 and 1 have lost what the logits knew (the log is clamped,
the gradient capped): where the model outputs logits, the numerically stable
choice is :func:`nbce.binary_cross_entropy_with_logits` (or
:func:`nbce.cross_entropy` for several classes)."""


def binary_cross_entropy(probs, target, *, weight=None, reduction="mean"):
    return _bce(probs, target, weight, reduction, with_grad=False, out=None)[0]


def binary_cross_entropy_with_grad(probs, target, *, weight=None, reduction="mean", out=None):
    return _bce(probs, target, weight, reduction, with_grad=True, out=out)


binary_cross_entropy.__doc__ = f"""Binary cross-entropy of probabilities, as
``torch.nn.functional.binary_cross_entropy``.

Per element, with ``w = weight``::

    loss = -w [t max(log(p), -100) + (1 - t) max(log(1 - p), -100)]

The clamp at -100 keeps ``p = 0`` and ``p = 1`` finite, as in PyTorch.
{_STABLE_CHOICE}

Parameters
----------
{_BCE_PARAMETERS}

Returns
-------
loss : ndarray or scalar
    A scalar of the probabilities' dtype for ``"mean"``/``"sum"``, else
    shaped like ``probs``.

Raises
------
ValueError
    If an element of ``probs`` or ``target`` is outside [0, 1] or NaN (PyTorch
    raises a ``RuntimeError`` for the same inputs), or the shapes differ.

See Also
--------
binary_cross_entropy_with_logits : the same loss from logits, stable.

Examples
--------
>>> import numpy as np, nbce
>>> p = np.array([0.9, 0.2, 0.0, 1.0])
>>> t = np.array([1.0, 0.0, 1.0, 0.0])
>>> nbce.binary_cross_entropy(p, t, reduction="none").round(6)
array([  0.105361,   0.223144, 100.      , 100.      ])
"""

binary_cross_entropy_with_grad.__doc__ = f"""Binary cross-entropy of probabilities
and its gradient d(loss)/d(probs), in one pass.

The gradient is PyTorch's, including its bound on the denominator::

    grad = w (p - t) / max((1 - p) p, 1e-12)

scaled by 1/size for ``"mean"``; for ``"none"`` it is the gradient of
``loss.sum()``. At ``p = 0`` or ``1`` it is therefore +-1e12 (or 0 where
``p == t``), not the derivative of the clamped loss (which is 0 there).
{_STABLE_CHOICE}

Parameters
----------
{_BCE_PARAMETERS}
    out : ndarray, optional
        Where to write the gradient (shape and dtype of ``probs``);
        ``out=probs`` works in place.

Returns
-------
loss : ndarray or scalar
    As :func:`binary_cross_entropy`.
grad : ndarray
    Shaped like ``probs``.

See Also
--------
binary_cross_entropy_with_logits_with_grad : the same from logits, stable.

Examples
--------
>>> import numpy as np, nbce
>>> loss, grad = nbce.binary_cross_entropy_with_grad(
...     np.array([0.5, 0.8]), np.array([1.0, 0.0]), reduction="sum")
>>> grad.round(6)
array([-2.,  5.])
"""


def _bce(probs, target, weight, reduction, with_grad, out):
    p, dtype = check.logits_array(probs, "probs")
    t = check.probability_target(target, p.shape, "probs")
    reduction = check.reduction(reduction)
    check.unit_interval(p, "probs")
    check.unit_interval(t, "target")
    w = check.elementwise_weight(weight, "weight", p.shape, check.rows_shape(p.shape), p.dtype)
    return check.elementwise_loss(_cpu.bce_probs_rows, p, dtype, t, (w, _TORCH_EPSILON), reduction, with_grad, out)


_LOG_LOSS_PARAMETERS = """\
    probs : array_like
        float32 or float64 probabilities in [0, 1]: shape ``(n_samples,
        n_classes)``, columns in the sorted order of the class labels; or
        shape ``(n_samples,)`` (or one column): the probability of the larger
        of two labels.
    target : array_like
        The true class label of each sample, shape ``(n_samples,)``: any
        labels NumPy can sort (integers, strings, integer-valued floats).
    sample_weight : array_like, optional
        Finite, non-negative weight of each sample, not all zero.
    labels : array_like, optional
        All the class labels, when ``target`` may not contain each of them;
        they are used in sorted order (as ``sklearn.preprocessing.LabelBinarizer``
        does), with a warning if given in another order.
    normalize : bool, optional
        True: the weighted mean over the samples; False: the weighted sum."""

_LOG_LOSS_NOTES = """\
As scikit-learn, ``probs`` are clipped to ``[eps, 1 - eps]`` with ``eps`` the
machine epsilon of their dtype, 1-D probabilities ``p`` become the columns
``[1 - p, p]``, and rows that do not sum to one are used as they are, with a
``UserWarning``.

Differences from ``sklearn.metrics.log_loss`` (1.9): ``probs`` must be float32
or float64 (no integer arrays); the result is a NumPy scalar of their dtype;
``target`` must be 1-D labels (no multilabel indicator matrix); negative
sample weights and repeated ``labels`` are a ``ValueError``; with
``labels=`` given, zero samples give NaN (``normalize=True``) or 0."""


def log_loss(probs, target, *, sample_weight=None, labels=None, normalize=True):
    return _log_loss(probs, target, sample_weight, labels, normalize, with_grad=False)[0]


def log_loss_with_grad(probs, target, *, sample_weight=None, labels=None, normalize=True):
    return _log_loss(probs, target, sample_weight, labels, normalize, with_grad=True)


log_loss.__doc__ = f"""Log loss (cross-entropy of class labels given
probabilities), as ``sklearn.metrics.log_loss``.

Per sample with true class ``y``, ``loss = -log(clip(p_y, eps, 1 - eps))``;
the result is the ``sample_weight``-weighted mean (or sum) of these.

Parameters
----------
{_LOG_LOSS_PARAMETERS}

Returns
-------
loss : scalar
    Of the probabilities' dtype.

Raises
------
ValueError
    For probabilities outside [0, 1] or NaN, fewer than two classes, labels
    in ``target`` that are not in ``labels``, a number of classes that does
    not match the columns of ``probs``, or bad sample weights.

Notes
-----
{_LOG_LOSS_NOTES}

Where a model outputs logits, :func:`nbce.cross_entropy` (or
:func:`nbce.binary_cross_entropy_with_logits`) computes the same loss without
clipping and stays accurate where the probabilities round to 0 or 1.

Examples
--------
>>> import numpy as np, nbce
>>> probs = np.array([[0.1, 0.9], [0.9, 0.1], [0.8, 0.2], [0.35, 0.65]])
>>> round(float(nbce.log_loss(probs, ["spam", "ham", "ham", "spam"])), 6)
0.216162
"""

log_loss_with_grad.__doc__ = f"""Log loss and its gradient d(loss)/d(probs).

The gradient is that of the clipped formula: ``-v_n / (D p_ny)`` at the true
class of sample ``n`` (``v`` the sample weights, ``D`` their sum when
``normalize``, else 1), and zero at the other classes and wherever the clip
is active (``p < eps`` or ``p > 1 - eps``). For 1-D ``probs`` it is taken with
respect to ``p`` through both columns ``[1 - p, p]``.

Parameters
----------
{_LOG_LOSS_PARAMETERS}

Returns
-------
loss : scalar
    As :func:`log_loss`.
grad : ndarray
    Shaped like ``probs``, of their dtype.

Notes
-----
{_LOG_LOSS_NOTES}

Examples
--------
>>> import numpy as np, nbce
>>> loss, grad = nbce.log_loss_with_grad(np.array([0.8, 0.25]), [1, 0])
>>> grad
array([-0.625     ,  0.66666667])
"""


def _log_loss(probs, target, sample_weight, labels, normalize, with_grad):
    p = check.float_array(probs, "probs")
    if p.ndim not in (1, 2):
        raise ValueError(f"probs must be 1-D (binary) or 2-D (samples, classes), got shape {p.shape}")
    y = np.asarray(target)
    if y.ndim != 1:
        raise ValueError(f"target must be 1-D class labels, got shape {y.shape}")
    if len(y) != len(p):
        raise ValueError(f"target has {len(y)} samples but probs has {len(p)}")
    check.unit_interval(p, "probs")
    classes, index = _class_indices(y, labels)
    binary = p.ndim == 1 or p.shape[1] == 1
    n_columns = 2 if binary else p.shape[1]
    if len(classes) != n_columns:
        hint = ": pass every class label with labels=" if labels is None else ""
        raise ValueError(
            f"{'target' if labels is None else 'labels'} names {len(classes)} classes {classes.tolist()} "
            f"but probs has {n_columns} columns{' (binary)' if binary else ''}{hint}"
        )
    dtype = p.dtype
    eps = np.finfo(dtype).eps
    if not binary:
        sums = p.sum(axis=1)
        if np.any(np.abs(sums - 1) > 1e-8 + np.sqrt(eps)):  # the tolerance of scikit-learn's check
            warnings.warn("the rows of probs do not sum to one; make sure to pass probabilities", UserWarning, 3)
    weights = check.sample_weight(sample_weight, (len(y),))  # empty when None
    if weights.size and not np.any(weights):
        raise ValueError("sample_weight must contain at least one non-zero number")

    if binary:
        positive = p.reshape(-1)
        picked = np.where(index == 1, positive, dtype.type(1) - positive)  # 1 - p rounded in dtype, as sklearn
    else:
        picked = p[np.arange(len(y)), index]
    losses = -np.log(np.clip(picked, eps, 1 - eps))
    coef = weights if weights.size else np.ones(len(y))
    total = float(np.dot(coef, losses.astype(np.float64)))
    denominator = coef.sum() if normalize else 1.0
    with np.errstate(invalid="ignore"):  # no samples: 0 / 0 = NaN
        loss = dtype.type(total / denominator)
    if not with_grad:
        return loss, None

    clipped = (picked < eps) | (picked > 1 - eps)
    with np.errstate(divide="ignore", invalid="ignore"):  # picked = 0 only where clipped
        g = np.where(clipped, 0.0, -coef / denominator / picked).astype(dtype)
    if binary:
        grad = np.where(index == 1, g, -g).reshape(p.shape)  # d(1 - p)/dp = -1
    else:
        grad = np.zeros_like(p)
        grad[np.arange(len(y)), index] = g
    return loss, grad


def _class_indices(target, labels):
    """The classes in sorted order (LabelBinarizer's column order) and the
    index of each target label among them."""
    if target.dtype.kind == "f" and not np.all(np.isfinite(target) & (target == np.round(target))):
        raise ValueError("target holds non-integer or non-finite floats: it must hold class labels")
    if labels is None:
        classes, index = np.unique(target, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(
                f"target contains fewer than two labels {classes.tolist()}: pass all the class labels with labels="
            )
        return classes, index
    given = np.asarray(labels)
    classes = np.unique(given)
    if given.ndim != 1 or len(classes) != len(given):
        raise ValueError(f"labels must be a 1-D list of distinct class labels, got {given.tolist()}")
    if len(classes) < 2:
        raise ValueError(f"labels must name at least two classes, got {given.tolist()}")
    if not np.array_equal(classes, given):
        warnings.warn(
            f"labels {given.tolist()} are used in sorted order {classes.tolist()}: "
            "the columns of probs must follow that order",
            UserWarning,
            4,
        )
    known = np.isin(target, classes)
    if not np.all(known):
        raise ValueError(f"target contains labels {np.unique(target[~known]).tolist()} that are not in labels")
    return classes, np.searchsorted(classes, target)
