"""Classification losses with PyTorch's semantics: ``cross_entropy``, its fused
gradient ``cross_entropy_with_grad``, and ``nll_loss``."""

import numpy as np

from . import _cpu
from . import _validate as check
from ._device import on_device, run_on_gpu
from ._validate import Rows

_COMMON_PARAMETERS = """\
    logits : array_like
        Unnormalised scores, classes along ``axis``: float32 or float64, or
        float16 / bfloat16 (``ml_dtypes.bfloat16``), computed in float32: their
        losses come back in float32, their gradient in their own dtype.
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
        ``"mean"`` divides by the summed row weight (``sample_weight[n] *
        weight[y_n]``) of the non-ignored rows; for soft targets by the number
        of rows, or the sum of ``sample_weight``. NaN when that is zero.
    label_smoothing : float, optional
        ``eps`` in [0, 1]: the target becomes ``(1 - eps) * target + eps / C``.
    sample_weight : array_like, optional
        Non-negative finite weight of each row, broadcastable to the shape of
        ``logits`` without the class axis; multiplies the row's loss and
        gradient and joins the ``"mean"`` denominator.
    z_loss : float, optional
        ``z >= 0``: adds ``z * r * lse**2`` to each row's loss, with ``lse``
        the row's log-sum-exp and ``r`` its row weight (Liger-Kernel's
        ``lse_square_scale``; PaLM's z-loss).
    softcap : float, optional
        ``c > 0``: the logits are replaced by ``c * tanh(logits / c)`` before
        everything else (the gradient goes through it).
    return_lse : bool, optional
        Also return each row's log-sum-exp (of the softcapped logits), shaped
        like ``logits`` without the class axis; every row gets it, ignored
        rows included.
    return_z_loss : bool, optional
        Also return the z-loss part of ``loss``, reduced the same way.
    return_argmax : bool, optional
        Also return each row's predicted class (``np.argmax`` of the logits),
        as int64, found while the row is still in cache."""

_EXTRAS = """\
lse, z_loss, argmax : ndarray, optional
    Only when asked for (``return_lse``, ``return_z_loss``,
    ``return_argmax``), in this order."""


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
    return_lse=False,
    return_z_loss=False,
    return_argmax=False,
):
    if on_device(logits):
        return run_on_gpu(cross_entropy, locals())
    results = _cross_entropy(
        logits, target, axis, weight, ignore_index, reduction, label_smoothing, sample_weight, z_loss, softcap,
        return_lse, return_z_loss, return_argmax, False, None,
    )  # fmt: skip
    return results[0] if len(results) == 1 else tuple(results)


def cross_entropy_with_grad(
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
    return_lse=False,
    return_z_loss=False,
    return_argmax=False,
    out=None,
):
    if on_device(logits):
        return run_on_gpu(cross_entropy_with_grad, locals())
    return tuple(
        _cross_entropy(
            logits, target, axis, weight, ignore_index, reduction, label_smoothing, sample_weight, z_loss, softcap,
            return_lse, return_z_loss, return_argmax, True, out,
        )
    )  # fmt: skip


cross_entropy.__doc__ = f"""Cross-entropy between softmax(logits) and the target, as
``torch.nn.functional.cross_entropy``, with the options large-vocabulary
training uses (sample weights, z-loss, logit softcap).

Per row, with ``x`` the (softcapped) logits, ``lse = logsumexp(x)``, ``s``
the sample weight, ``t' = (1 - eps) t + eps / C`` the smoothed target (``t``
one-hot for class indices) and ``r`` the row weight (``s * weight[y]`` for
class indices, ``s`` for probabilities)::

    loss = s * sum_c weight[c] t'[c] (lse - x[c]) + z_loss * r * lse**2

Parameters
----------
{_COMMON_PARAMETERS}

Returns
-------
loss : ndarray or scalar
    In the logits' dtype (float32 for half precisions): a scalar for
    ``"mean"``/``"sum"``; for ``"none"`` the per-row losses, shaped like
    ``logits`` without the class axis.
{_EXTRAS}

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
>>> loss, lse, pred = nbce.cross_entropy(logits, target, z_loss=1e-4,
...                                      return_lse=True, return_argmax=True)
>>> lse.round(6), pred
(array([2.241311, 1.098612]), array([0, 0]))
"""

cross_entropy_with_grad.__doc__ = f"""Cross-entropy and its gradient d(loss)/d(logits), fused in one pass.

The loss is :func:`cross_entropy`'s; per row the gradient is ::

    k [s p sum_c(weight t') - s weight t' + 2 z_loss r lse p]

with ``p = softmax(x)`` and ``k`` the reduction's scale (1, or one over the
``"mean"`` denominator), times ``1 - tanh(logits / c)**2`` with a softcap.

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
{_EXTRAS}

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
>>> loss, grad = nbce.cross_entropy_with_grad(logits, np.array([0, 2]), softcap=1.0,
...                                           sample_weight=[1.0, 0.5])
>>> grad.round(4)
array([[-0.0207,  0.178 ,  0.028 ],
       [ 0.1111,  0.1111, -0.2222]])
"""

def _cross_entropy(
    logits, target, axis, weight, ignore_index, reduction, label_smoothing, sample_weight, z_loss, softcap,
    return_lse, return_z_loss, return_argmax, with_grad, out,
):  # fmt: skip
    """The list [loss, grad (with_grad), lse, z_loss, argmax (those asked for)]."""
    x, dtype = check.logits_array(logits, "logits")
    axis = check.class_axis(axis, x.ndim)
    target = check.target_array(target)
    kind = check.target_kind(target, x.shape, axis)
    reduction = check.reduction(reduction)
    eps = check.label_smoothing(label_smoothing)
    ignore = check.ignore_index(ignore_index)
    z = check.z_loss(z_loss)
    cap = check.softcap(softcap)
    n_classes = x.shape[axis]
    w, w_sum = check.class_weight(weight, n_classes, x.dtype)
    if out is not None:
        check.out_array(out, x, target, dtype)
    rows = Rows(x, axis)
    n_rows = rows.rows.shape[0]
    check.classes_for_rows(n_classes, n_rows)
    sw = check.sample_weight(sample_weight, rows.batch_shape)

    if kind == "index":
        labels, denominator = check.index_labels(target, n_classes, ignore, w, sw)
        soft = check.no_rows(x.dtype)
    else:
        if ignore >= 0:
            raise ValueError(f"ignore_index={ignore} is not supported with soft (probability) targets")
        labels = check.NO_INT64
        soft = Rows(target.astype(x.dtype, copy=False), axis).rows
        denominator = float(sw.sum()) if sw.size else float(n_rows)
    if reduction == "mean":
        scale = 1.0 / denominator if denominator != 0 else 0.0
    else:
        scale = 1.0

    # half precisions compute into a float32 buffer of their own
    grad_out = out if dtype == x.dtype else None
    grad_rows = check.grad_buffer(grad_out, rows) if with_grad else check.no_rows(x.dtype)
    row_loss = np.empty(n_rows)
    row_z_loss = np.empty(n_rows) if return_z_loss else check.NO_FLOAT64
    lse = np.empty(n_rows) if return_lse else check.NO_FLOAT64
    argmax = np.empty(n_rows, np.int64) if return_argmax else check.NO_INT64
    total = _cpu.ce_rows.build(rows.rows)(
        rows.rows, labels, soft, w, weight is not None, w_sum, sw, ignore, eps, cap, z, scale,
        with_grad, grad_rows, _cpu.streams(grad_rows, grad_out is not None), row_loss, row_z_loss, lse, argmax,
    )  # fmt: skip

    row_loss = rows.restore_batch(row_loss) if reduction == "none" else None  # the others need only the total
    results = [check.reduce_losses(row_loss, total, reduction, denominator, x.dtype)]
    if with_grad:
        grad = check.finish_grad(grad_rows, rows, grad_out)
        if dtype != x.dtype:
            grad = check.cast_into(grad, out, dtype)
        results.append(grad)
    if return_lse:
        results.append(rows.restore_batch(lse).astype(x.dtype))
    if return_z_loss:
        z_total = row_z_loss.sum()
        results.append(check.reduce_losses(rows.restore_batch(row_z_loss), z_total, reduction, denominator, x.dtype))
    if return_argmax:
        results.append(rows.restore_batch(argmax))
    return results


def nll_loss(log_probs, target, *, axis=-1, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of class indices, as ``torch.nn.functional.nll_loss``.

    ``loss[n] = -weight[y_n] * log_probs[n, y_n]``, 0 for ignored rows.

    Parameters
    ----------
    log_probs : array_like
        Log-probabilities (e.g. from :func:`nbce.log_softmax`), classes along
        ``axis``: float32 or float64, or float16 / bfloat16 (computed in
        float32; the loss comes back in float32).
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
    if on_device(log_probs):
        return run_on_gpu(nll_loss, locals())
    lp, _ = check.logits_array(log_probs, "log_probs")
    axis = check.class_axis(axis, lp.ndim)
    target = np.asarray(target)
    if check.target_kind(target, lp.shape, axis) != "index":
        raise TypeError("nll_loss needs integer class indices as target")
    reduction = check.reduction(reduction)
    ignore = check.ignore_index(ignore_index)
    n_classes = lp.shape[axis]
    check.classes_for_rows(n_classes, target.size)
    w, _ = check.class_weight(weight, n_classes, lp.dtype)
    labels, denominator = check.index_labels(target, n_classes, ignore, w)
    labels = labels.reshape(target.shape)
    kept = labels != ignore
    safe = np.where(kept, labels, 0)  # ignored rows must not index anything
    picked = np.take_along_axis(lp, np.expand_dims(safe, axis), axis).squeeze(axis)
    w_y = np.where(kept, w[safe], 0).astype(lp.dtype)
    with np.errstate(invalid="ignore"):  # 0 * inf: NaN where kept (as PyTorch), dropped where ignored
        losses = np.where(kept, -(w_y * picked), 0)
    return check.reduce_losses(losses, losses.sum(dtype=np.float64), reduction, denominator, lp.dtype)

