"""The softmax family: ``logsumexp``, ``log_softmax``, ``softmax``.

Same results as :mod:`scipy.special` (including rows with ``±inf``/NaN), but
the reduction runs along ``axis=-1`` by default, as in ``torch.nn.functional``.
"""

import numpy as np

from . import _cpu
from ._device import on_device, run_on_gpu
from ._validate import Rows, logits_array


def logsumexp(x, axis=-1, keepdims=False):
    """Log of the sum of exponentials, ``log(sum(exp(x), axis))``, computed stably.

    Parameters
    ----------
    x : array_like
        float32 or float64 input; float16 and bfloat16 are computed, and
        returned, in float32.
    axis : int, tuple of int or None, optional
        Axis or axes to reduce over; ``None`` reduces over all of them.
    keepdims : bool, optional
        Keep the reduced axes with length one.

    Returns
    -------
    ndarray or scalar
        Same dtype as ``x`` (float32 for half precisions). A row holding NaN gives NaN, a row holding
        ``+inf`` gives ``+inf``, an all ``-inf`` or empty row gives ``-inf``.

    Examples
    --------
    >>> import numpy as np, nbce
    >>> float(nbce.logsumexp(np.array([1000.0, 1000.0])))
    1000.6931471805599
    """
    if on_device(x):
        return run_on_gpu(logsumexp, locals())
    x, dtype = logits_array(x, "x")
    rows = Rows(x, axis)
    out = np.empty(rows.rows.shape[0], x.dtype)
    _cpu.logsumexp_rows.build(rows.rows)(rows.rows, out)
    out = rows.restore_batch(out)
    if keepdims:
        out = np.expand_dims(out, rows.source)
    return out[()]


def log_softmax(x, axis=-1):
    """Logarithm of :func:`softmax`, ``x - logsumexp(x, axis, keepdims=True)``.

    Parameters
    ----------
    x : array_like
        float32 or float64 input; float16 and bfloat16 are computed in
        float32 and returned in their own dtype.
    axis : int, tuple of int or None, optional
        Axis or axes that are normalised together; ``None`` means all.

    Returns
    -------
    ndarray
        Same shape and dtype as ``x``.

    Examples
    --------
    >>> import numpy as np, nbce
    >>> nbce.log_softmax(np.array([1000.0, 1.0]))
    array([   0., -999.])
    """
    if on_device(x):
        return run_on_gpu(log_softmax, locals())
    return _map_rows(_cpu.log_softmax_rows, x, axis)


def softmax(x, axis=-1):
    """Normalised exponentials, ``exp(x) / sum(exp(x), axis)``.

    Parameters
    ----------
    x : array_like
        float32 or float64 input; float16 and bfloat16 are computed in
        float32 and returned in their own dtype.
    axis : int, tuple of int or None, optional
        Axis or axes that are normalised together; ``None`` means all.

    Returns
    -------
    ndarray
        Same shape and dtype as ``x``; a row holding NaN or ``+inf``, or all
        ``-inf``, is NaN throughout (as in :func:`scipy.special.softmax`).

    Examples
    --------
    >>> import numpy as np, nbce
    >>> nbce.softmax(np.array([[0.0, np.log(3.0)]]))
    array([[0.25, 0.75]])
    """
    if on_device(x):
        return run_on_gpu(softmax, locals())
    return _map_rows(_cpu.softmax_rows, x, axis)


def _map_rows(kernel, x, axis):
    """``kernel`` applied to the rows of ``x`` along ``axis``: a result shaped like ``x``."""
    x, dtype = logits_array(x, "x")
    rows = Rows(x, axis)
    out = np.empty_like(rows.rows)
    kernel.build(rows.rows)(rows.rows, out)
    return rows.restore(out).astype(dtype, copy=False)
