"""Plain NumPy float64 reference implementations of the losses.

Written directly from the formulas (PyTorch semantics), vectorised across
rows and independent of the Numba kernels: the test suite checks nbce against
them, and the benchmarks use them as the NumPy baseline. Results are float64
whatever the input precision.
"""

import numpy as np

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_grad",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "cross_entropy",
    "cross_entropy_grad",
    "log_loss",
    "log_loss_grad",
    "nll_loss",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_grad",
    "softmax_focal_loss",
    "softmax_focal_loss_grad",
]


def _log_softmax(x):
    """log_softmax along the last axis; a row holding NaN or +inf, or all -inf, is NaN."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = x.max(axis=-1, keepdims=True)
        shifted = x - m  # exact for integer-valued x, however large the common shift
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _weights(weight, n_classes):
    return np.ones(n_classes) if weight is None else np.asarray(weight, dtype=np.float64)


def _prepare(logits, target, axis, weight, label_smoothing, softcap=None):
    """With the class axis last: logits (softcapped), log-probabilities, target,
    whether it is soft, weights, eps, C."""
    x = np.moveaxis(np.asarray(logits, dtype=np.float64), axis, -1)
    if softcap is not None:
        x = softcap * np.tanh(x / softcap)
    target = np.asarray(target)
    n_classes = x.shape[-1]
    w = _weights(weight, n_classes)
    soft = target.dtype.kind == "f"
    if soft:
        target = np.moveaxis(target.astype(np.float64), axis, -1)
    return x, _log_softmax(x), target, soft, w, float(label_smoothing), n_classes


def _lse(x):
    """logsumexp along the last axis (rows with NaN/+inf/all -inf as scipy)."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = x.max(axis=-1)
        shifted = x - m[..., None]
        return m + np.log(np.exp(shifted).sum(axis=-1))


def _row_weights(sample_weight, batch_shape):
    if sample_weight is None:
        return np.ones(batch_shape)
    return np.broadcast_to(np.asarray(sample_weight, dtype=np.float64), batch_shape)


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
    logits,
    target,
    *,
    axis=-1,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    sample_weight=None,
    z_loss=0.0,
    softcap=None,
):
    """Cross-entropy between softmax(logits) and the target, PyTorch semantics,
    with nbce's sample weights, z-loss and softcap.

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
        ``"mean"`` divides by the summed row weights ``s * weight[y]`` of the
        non-ignored rows (``s`` for soft targets); NaN when that is zero.
    label_smoothing : float, optional
        ``eps``: the target becomes ``(1 - eps) * target + eps / C``.
    sample_weight : array_like, optional
        ``s``: per-row weights (ones by default).
    z_loss : float, optional
        Adds ``z_loss * r * lse**2`` per row, ``r`` the row weight.
    softcap : float, optional
        Logits replaced by ``softcap * tanh(logits / softcap)`` first.

    Returns
    -------
    float or ndarray
        float64 loss; per row for ``"none"``.
    """
    x, logp, target, soft, w, eps, n_classes = _prepare(logits, target, axis, weight, label_smoothing, softcap)
    s = _row_weights(sample_weight, x.shape[:-1])
    with np.errstate(invalid="ignore", over="ignore"):
        z_term = z_loss * _lse(x) ** 2 if z_loss else 0.0
        if soft:
            wt = w * ((1 - eps) * target + eps / n_classes)
            # a class with zero target mass contributes 0 even where log p = -inf
            losses = s * -np.where(wt != 0, wt * logp, 0.0).sum(axis=-1) + s * z_term
            return _reduce(losses, reduction, s.sum())
        kept, safe, w_y = _index_parts(target, w, ignore_index)
        nll_y = -np.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
        losses = (1 - eps) * w_y * nll_y
        if eps > 0:
            losses = losses + eps / n_classes * (w * -logp).sum(axis=-1)
        losses = np.where(kept, s * losses + s * w_y * z_term, 0.0)
    return _reduce(losses, reduction, (s * w_y).sum())


def cross_entropy_grad(
    logits,
    target,
    *,
    axis=-1,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    sample_weight=None,
    z_loss=0.0,
    softcap=None,
):
    """Analytic gradient of :func:`cross_entropy` with respect to the logits.

    Parameters
    ----------
    logits, target, axis, weight, ignore_index, reduction, label_smoothing, sample_weight, z_loss, softcap
        As :func:`cross_entropy`.

    Returns
    -------
    ndarray
        float64, shaped like ``logits``; for ``"none"`` the gradient of
        ``loss.sum()``. Ignored rows are exactly 0, and so is everything when
        the ``"mean"`` denominator is 0.
    """
    x, logp, target, soft, w, eps, n_classes = _prepare(logits, target, axis, weight, label_smoothing, softcap)
    s = _row_weights(sample_weight, x.shape[:-1])[..., None]
    p = np.exp(logp)
    lse = _lse(x)[..., None]
    if soft:
        wt = w * ((1 - eps) * target + eps / n_classes)
        grad = s * (p * wt.sum(axis=-1, keepdims=True) - wt) + 2 * z_loss * s * lse * p
        denominator = s.sum()
    else:
        kept, safe, w_y = _index_parts(target, w, ignore_index)
        onehot = np.arange(n_classes) == safe[..., None]
        coef = (1 - eps) * w_y + eps / n_classes * w.sum()
        grad = p * coef[..., None] - (1 - eps) * w_y[..., None] * onehot - eps / n_classes * w
        grad = s * grad + 2 * z_loss * s * w_y[..., None] * lse * p
        grad = np.where(kept[..., None], grad, 0.0)
        denominator = (s[..., 0] * w_y).sum()
    if softcap is not None:
        grad = grad * (1 - (x / softcap) ** 2)
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


def _sigmoid_focal_parts(logits, target, alpha):
    """sigmoid(x), 1 - sigmoid(x) (each without cancellation), BCE, 1 - p_t and alpha_t."""
    x = np.asarray(logits, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    p = np.exp(-np.logaddexp(0.0, -x))
    not_p = np.exp(-np.logaddexp(0.0, x))
    ce = t * np.logaddexp(0.0, -x) + (1.0 - t) * np.logaddexp(0.0, x)
    one_minus_p_t = p * (1.0 - t) + not_p * t  # 1 - (p t + (1 - p)(1 - t))
    alpha_t = 1.0 if alpha is None or alpha < 0 else alpha * t + (1.0 - alpha) * (1.0 - t)
    return x, t, p, not_p, ce, one_minus_p_t, alpha_t


def sigmoid_focal_loss(logits, target, *, alpha=0.25, gamma=2.0, reduction="none"):
    """Sigmoid focal loss (torchvision's formula): ``alpha_t (1 - p_t)**gamma BCE(x, t)``
    with ``p_t = p t + (1 - p)(1 - t)``; no alpha weighting for alpha None or negative."""
    x, _, _, _, ce, q, alpha_t = _sigmoid_focal_parts(logits, target, alpha)
    losses = np.broadcast_to(alpha_t * q**gamma * ce, x.shape)
    return _reduce(losses, reduction, x.size)


def sigmoid_focal_loss_grad(logits, target, *, alpha=0.25, gamma=2.0, reduction="none"):
    """d/dx of :func:`sigmoid_focal_loss`, by the product rule with ``d ce/dx = p - t``
    and ``d(1 - p_t)/dx = (1 - 2t) p (1 - p)``; needs ``1 - p_t > 0`` when gamma < 1."""
    x, t, p, not_p, ce, q, alpha_t = _sigmoid_focal_parts(logits, target, alpha)
    p_minus_t = p * (1.0 - t) - not_p * t  # no cancellation where p rounds to t
    grad = alpha_t * (p_minus_t * q**gamma + gamma * ce * q ** (gamma - 1.0) * (1.0 - 2.0 * t) * p * not_p)
    grad = np.broadcast_to(grad, x.shape)
    return grad / x.size if reduction == "mean" else grad


def _softmax_focal_parts(logits, target, axis, weight, ignore_index):
    """With the class axis last: softmax, kept mask, safe labels, w[y], log p_y, p_y, 1 - p_y."""
    x = np.moveaxis(np.asarray(logits, dtype=np.float64), axis, -1)
    logp = _log_softmax(x)
    kept, safe, w_y = _index_parts(np.asarray(target), _weights(weight, x.shape[-1]), ignore_index)
    logp_y = np.take_along_axis(logp, safe[..., None], axis=-1)[..., 0]
    return np.exp(logp), kept, safe, w_y, logp_y, np.exp(logp_y), -np.expm1(logp_y)


def softmax_focal_loss(logits, target, *, axis=-1, gamma=2.0, weight=None, ignore_index=-100, reduction="mean"):
    """Softmax focal loss of class indices: ``-w[y] (1 - p_y)**gamma log p_y``, 0 for
    ignored rows; ``"mean"`` divides by the summed ``w[y]`` of the rows not ignored."""
    _, kept, _, w_y, logp_y, _, q = _softmax_focal_parts(logits, target, axis, weight, ignore_index)
    with np.errstate(invalid="ignore"):
        losses = np.where(kept, -w_y * q**gamma * logp_y, 0.0)
    return _reduce(losses, reduction, w_y.sum())


def softmax_focal_loss_grad(logits, target, *, axis=-1, gamma=2.0, weight=None, ignore_index=-100, reduction="mean"):
    """d/dx of :func:`softmax_focal_loss`: ``w[y] (q**gamma - gamma p_y log(p_y) q**(gamma-1)) (p - onehot)``
    with ``q = 1 - p_y``, from ``d p_y/d x_c = p_y (onehot_c - p_c)``; ignored rows 0.
    Needs ``q > 0`` when gamma < 1."""
    p, kept, safe, w_y, logp_y, p_y, q = _softmax_focal_parts(logits, target, axis, weight, ignore_index)
    with np.errstate(invalid="ignore"):
        p_log_p = np.where(p_y > 0, p_y * logp_y, 0.0)  # the limit 0 where log p_y = -inf
    factor = w_y * (q**gamma - gamma * p_log_p * q ** (gamma - 1.0))
    onehot = np.arange(p.shape[-1]) == safe[..., None]
    grad = np.where(kept[..., None], factor[..., None] * (p - onehot), 0.0)
    if reduction == "mean":
        denominator = w_y.sum()
        grad = grad / denominator if denominator != 0 else np.zeros_like(grad)
    return np.moveaxis(grad, -1, axis)


def binary_cross_entropy(probs, target, *, weight=None, reduction="mean"):
    """Binary cross-entropy of probabilities (PyTorch's formula), each log clamped at -100:
    ``-w [t max(log p, -100) + (1 - t) max(log(1 - p), -100)]``."""
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    w = 1.0 if weight is None else np.asarray(weight, dtype=np.float64)
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(p), -100.0)
        log_q = np.maximum(np.log1p(-p), -100.0)
    losses = np.broadcast_to(-w * (t * log_p + (1.0 - t) * log_q), p.shape)
    return _reduce(losses, reduction, p.size)


def binary_cross_entropy_grad(probs, target, *, weight=None, reduction="mean"):
    """PyTorch's gradient of :func:`binary_cross_entropy`: ``w (p - t) / max((1 - p) p, eps)``
    with its ``eps``, the float32 constant 1e-12 (also for float64 input)."""
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    w = 1.0 if weight is None else np.asarray(weight, dtype=np.float64)
    grad = np.broadcast_to(w * (p - t) / np.maximum((1.0 - p) * p, float(np.float32(1e-12))), p.shape)
    return grad / p.size if reduction == "mean" else grad


def _log_loss_parts(probs, target, sample_weight, labels, normalize):
    """Probabilities as (samples, classes), one-hot targets over the sorted
    labels, the clip bound, and each sample's weight over the denominator."""
    p = np.asarray(probs)
    eps = float(np.finfo(p.dtype).eps)
    p = p.astype(np.float64)
    if p.ndim == 1 or p.shape[1] == 1:
        p = p.reshape(-1, 1)
        p = np.concatenate([1.0 - p, p], axis=1)
    target = np.asarray(target)
    classes = np.unique(target if labels is None else np.asarray(labels))
    onehot = (target[:, None] == classes).astype(np.float64)
    v = np.ones(len(target)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    return p, onehot, eps, v / (v.sum() if normalize else 1.0)


def log_loss(probs, target, *, sample_weight=None, labels=None, normalize=True):
    """scikit-learn's log loss: ``-sum_n v_n log(clip(p_n,y_n, eps, 1 - eps))``,
    divided by ``sum(v)`` when normalising; ``eps`` is the machine epsilon of
    the probabilities' dtype, 1-D probabilities ``p`` are the columns ``[1 - p, p]``."""
    p, onehot, eps, coef = _log_loss_parts(probs, target, sample_weight, labels, normalize)
    return float(-(coef * (onehot * np.log(np.clip(p, eps, 1.0 - eps))).sum(axis=1)).sum())


def log_loss_grad(probs, target, *, sample_weight=None, labels=None, normalize=True):
    """d/dprobs of :func:`log_loss`: ``-coef_n / p`` at the true class where the
    clip is inactive (``eps <= p <= 1 - eps``), 0 elsewhere; through both
    columns for 1-D probabilities."""
    p, onehot, eps, coef = _log_loss_parts(probs, target, sample_weight, labels, normalize)
    inside = (p >= eps) & (p <= 1.0 - eps)
    with np.errstate(divide="ignore", invalid="ignore"):
        grad = np.where(inside & (onehot != 0), -coef[:, None] / p, 0.0)
    if np.ndim(probs) == 1 or np.shape(probs)[1] == 1:
        return (grad[:, 1] - grad[:, 0]).reshape(np.shape(probs))
    return grad
