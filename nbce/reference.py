"""Plain NumPy float64 reference implementations of the losses.

Written directly from the formulas (PyTorch semantics), vectorised across
rows and independent of the Numba kernels: the test suite checks nbce against
them, and the benchmarks use them as the NumPy baseline. Results are float64
whatever the input precision.
"""

import numpy as np

__all__ = [
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "cross_entropy",
    "cross_entropy_grad",
    "nll_loss",
]


def _log_softmax(x):
    """log_softmax along the last axis; a row holding NaN or +inf, or all -inf, is NaN."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = x.max(axis=-1, keepdims=True)
        shifted = x - m  # exact for integer-valued x, however large the common shift
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _weights(weight, n_classes):
    return np.ones(n_classes) if weight is None else np.asarray(weight, dtype=np.float64)


def _prepare(logits, target, axis, weight, label_smoothing):
    """With the class axis last: log-probabilities, target, whether it is soft, weights, eps, C."""
    x = np.moveaxis(np.asarray(logits, dtype=np.float64), axis, -1)
    target = np.asarray(target)
    n_classes = x.shape[-1]
    w = _weights(weight, n_classes)
    soft = target.dtype.kind == "f"
    if soft:
        target = np.moveaxis(target.astype(np.float64), axis, -1)
    return _log_softmax(x), target, soft, w, float(label_smoothing), n_classes


def _index_parts(target, w, ignore_index):
    """Non-ignored mask, labels safe to index with, and each row's w[y] (0 when ignored)."""
    kept = target != ignore_index
    safe = np.where(kept, target, 0)
    return kept, safe, np.where(kept, w[safe], 0.0)


def _reduce(losses, reduction, denominator):
    if reduction == "none":
        return losses
    total = losses.sum()
    if reduction == "sum":
        return total
    if reduction == "mean":
        return total / denominator if denominator != 0 else np.nan
    raise ValueError(f"unknown reduction {reduction!r}")


def cross_entropy(
    logits, target, *, axis=-1, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
):
    """Cross-entropy between softmax(logits) and the target, PyTorch semantics.

    Parameters
    ----------
    logits : array_like
        Unnormalised scores, classes along ``axis``.
    target : array_like
        Integer class indices (shape of ``logits`` without ``axis``) or float
        probabilities (shape of ``logits``).
    axis : int, optional
        The class axis.
    weight : array_like, optional
        Per-class weights of length C.
    ignore_index : int, optional
        Label of rows that add nothing (class-index targets only).
    reduction : {"mean", "sum", "none"}, optional
        ``"mean"`` divides by the summed ``weight[y]`` of the non-ignored rows
        (by the number of rows for soft targets); NaN when that is zero.
    label_smoothing : float, optional
        ``eps``: the target becomes ``(1 - eps) * target + eps / C``.

    Returns
    -------
    float or ndarray
        float64 loss; per row for ``"none"``.
    """
    logp, target, soft, w, eps, n_classes = _prepare(logits, target, axis, weight, label_smoothing)
    with np.errstate(invalid="ignore"):
        if soft:
            wt = w * ((1 - eps) * target + eps / n_classes)
            # a class with zero target mass contributes 0 even where log p = -inf
            losses = -np.where(wt != 0, wt * logp, 0.0).sum(axis=-1)
            return _reduce(losses, reduction, losses.size)
        kept, safe, w_y = _index_parts(target, w, ignore_index)
        nll_y = -np.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
        losses = (1 - eps) * w_y * nll_y
        if eps > 0:
            losses = losses + eps / n_classes * (w * -logp).sum(axis=-1)
        losses = np.where(kept, losses, 0.0)
    return _reduce(losses, reduction, w_y.sum())


def cross_entropy_grad(
    logits, target, *, axis=-1, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0
):
    """Analytic gradient of :func:`cross_entropy` with respect to the logits.

    Parameters
    ----------
    logits, target, axis, weight, ignore_index, reduction, label_smoothing
        As :func:`cross_entropy`.

    Returns
    -------
    ndarray
        float64, shaped like ``logits``; for ``"none"`` the gradient of
        ``loss.sum()``. Ignored rows are exactly 0, and so is everything when
        the ``"mean"`` denominator is 0.
    """
    logp, target, soft, w, eps, n_classes = _prepare(logits, target, axis, weight, label_smoothing)
    p = np.exp(logp)
    if soft:
        wt = w * ((1 - eps) * target + eps / n_classes)
        grad = p * wt.sum(axis=-1, keepdims=True) - wt
        denominator = p.size // n_classes if n_classes else 0
    else:
        kept, safe, w_y = _index_parts(target, w, ignore_index)
        onehot = np.arange(n_classes) == safe[..., None]
        coef = (1 - eps) * w_y + eps / n_classes * w.sum()
        grad = p * coef[..., None] - (1 - eps) * w_y[..., None] * onehot - eps / n_classes * w
        grad = np.where(kept[..., None], grad, 0.0)
        denominator = w_y.sum()
    if reduction == "mean":
        grad = grad / denominator if denominator != 0 else np.zeros_like(grad)
    return np.moveaxis(grad, -1, axis)


def nll_loss(log_probs, target, *, axis=-1, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of class indices, PyTorch semantics.

    Parameters
    ----------
    log_probs : array_like
        Log-probabilities, classes along ``axis``.
    target : array_like of int
        Class indices, shaped like ``log_probs`` without ``axis``.
    axis, weight, ignore_index, reduction
        As :func:`cross_entropy`.

    Returns
    -------
    float or ndarray
        float64 ``-weight[y] * log_probs[y]`` (0 for ignored rows), reduced.
    """
    lp = np.moveaxis(np.asarray(log_probs, dtype=np.float64), axis, -1)
    kept, safe, w_y = _index_parts(np.asarray(target), _weights(weight, lp.shape[-1]), ignore_index)
    picked = np.take_along_axis(lp, safe[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore"):
        losses = np.where(kept, -w_y * picked, 0.0)
    return _reduce(losses, reduction, w_y.sum())


def binary_cross_entropy_with_logits(logits, target, *, weight=None, pos_weight=None, reduction="mean"):
    """Binary cross-entropy of sigmoid(logits) (PyTorch's formula), from log-sigmoids:
    ``-log(sigmoid(x)) = logaddexp(0, -x)`` and ``-log(1 - sigmoid(x)) = logaddexp(0, x)``."""
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    w = 1.0 if weight is None else np.asarray(weight, dtype=np.float64)
    pw = 1.0 if pos_weight is None else np.asarray(pos_weight, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        losses = w * (pw * t * np.logaddexp(0.0, -x) + (1.0 - t) * np.logaddexp(0.0, x))
    losses = np.broadcast_to(losses, x.shape)
    return _reduce(losses, reduction, x.size)


def binary_cross_entropy_with_logits_grad(logits, target, *, weight=None, pos_weight=None, reduction="mean"):
    """d/dx of :func:`binary_cross_entropy_with_logits`: ``w [(pw t + 1 - t) sigmoid(x) - pw t]``."""
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    w = 1.0 if weight is None else np.asarray(weight, dtype=np.float64)
    pw = 1.0 if pos_weight is None else np.asarray(pos_weight, dtype=np.float64)
    sigmoid = 0.5 * (1.0 + np.tanh(0.5 * x))
    grad = np.broadcast_to(w * ((pw * t + 1.0 - t) * sigmoid - pw * t), x.shape)
    return grad / x.size if reduction == "mean" else grad
