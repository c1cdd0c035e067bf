"""Shared helpers: test data, tolerances, and checks used by several modules."""

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.special

DTYPES = (np.float32, np.float64)
REDUCTIONS = ("none", "mean", "sum")
N_CLASSES = 5

# (logits shape, class axis) per layout of test problems; "strided" is a
# non-contiguous view of that shape.
LAYOUTS = {
    "2d": ((6, N_CLASSES), -1),
    "1d": ((N_CLASSES,), -1),
    "4d": ((2, N_CLASSES, 3, 2), 1),
    "strided": ((6, N_CLASSES), -1),
}

# Relative tolerance, and absolute tolerance as a fraction of the largest
# expected magnitude, at least 1 (gradients of a "mean" are ~1/N, and values
# that cancel to 0 keep the rounding error of their terms).
TOLERANCE = {np.float32: (1e-5, 1e-6), np.float64: (1e-12, 1e-13)}


def assert_close(actual, desired, dtype):
    """``actual`` (computed in ``dtype``) equals ``desired`` (usually a float64 reference).

    NaN and inf must sit in the same places; the shapes must be equal.
    """
    actual, desired = np.asarray(actual), np.asarray(desired)
    assert actual.shape == desired.shape
    rtol, atol = TOLERANCE[np.dtype(dtype).type]
    finite = np.abs(desired[np.isfinite(desired)])
    scale = max(finite.max(initial=0.0), 1.0)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol * scale)


def assert_matches_scipy(name, x, got):
    """``got`` is ``scipy.special.<name>(x, axis=-1)`` (logsumexp, log_softmax,
    softmax) of ``x`` in float64, with NaN and inf in the same places."""
    with np.errstate(invalid="ignore", over="ignore"):
        expected = getattr(scipy.special, name)(x.astype(np.float64), axis=-1)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(got) * np.sign(got), np.isinf(expected) * np.sign(expected))
    rtol = {np.float32: 1e-5, np.float64: 1e-12}[x.dtype.type]
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=8 * np.finfo(x.dtype).eps)


@pytest.fixture
def rng():
    return np.random.default_rng(20240601)


def make_logits(rng, shape, dtype, spread=3.0):
    return (spread * rng.standard_normal(shape)).astype(dtype)


def make_soft_target(rng, shape, axis, dtype):
    """Random probabilities along ``axis`` (each row sums to 1)."""
    t = rng.uniform(0.0, 1.0, shape)
    return (t / t.sum(axis=axis, keepdims=True)).astype(dtype)


def make_problem(rng, layout, kind, dtype):
    """``(logits, target, axis)`` in one of :data:`LAYOUTS`; ``kind`` is "index" or "soft"."""
    shape, axis = LAYOUTS[layout]
    if layout == "strided":
        # transposed views with step 2: neither C- nor F-contiguous
        logits = make_logits(rng, (N_CLASSES, 12), dtype)[:, ::2].T
        if kind == "index":
            return logits, rng.integers(0, N_CLASSES, 12)[::2], axis
        return logits, make_soft_target(rng, (N_CLASSES, 12), 0, dtype)[:, ::2].T, axis
    logits = make_logits(rng, shape, dtype)
    if kind == "index":
        batch_shape = np.delete(shape, axis)
        return logits, rng.integers(0, N_CLASSES, batch_shape), axis
    return logits, make_soft_target(rng, shape, axis, dtype), axis


def make_weight(rng, n_classes):
    return rng.uniform(0.5, 2.0, n_classes)


def make_options(rng, target, weighted=False, ignore=False, **kwargs):
    """Loss keyword arguments: ``kwargs``, plus random class weights and an
    ``ignore_index`` naming a class that occurs in ``target`` when asked."""
    if weighted:
        kwargs["weight"] = make_weight(rng, N_CLASSES)
    if ignore:
        kwargs["ignore_index"] = int(np.asarray(target).flat[0])
    return kwargs


def numerical_grad(f, x, h=1e-6):
    """Central finite differences of the scalar ``f`` at ``x``."""
    grad = np.empty_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (f(up) - f(down)) / (2 * h)
    return grad


def read_only(a):
    """A read-only copy of ``a``."""
    a = np.array(a)
    a.setflags(write=False)
    return a


def snapshot(*arrays):
    """Copies of ``arrays``, to check later with :func:`assert_unchanged`."""
    return [(a, np.copy(a)) for a in arrays if isinstance(a, np.ndarray)]


def assert_unchanged(saved):
    for array, copy in saved:
        assert array.dtype == copy.dtype
        np.testing.assert_array_equal(array, copy, strict=True)


# Prelude for code run with run_python: the numba dispatchers of nbce's CPU
# kernels, whether a kernel is a dispatcher itself or an object holding several
# builds of it (e.g. a threaded and a serial one).
KERNEL_DISPATCHERS = """
import numba
import nbce._cpu


def dispatchers_of(value):
    if isinstance(value, numba.core.dispatcher.Dispatcher):
        return [value]
    if type(value).__module__ == "nbce._cpu":
        return [v for v in vars(value).values() if isinstance(v, numba.core.dispatcher.Dispatcher)]
    return []


def kernel_dispatchers(name=None):
    values = vars(nbce._cpu).values() if name is None else [getattr(nbce._cpu, name)]
    return [d for value in values for d in dispatchers_of(value)]
"""


def run_python(code, **env):
    """Run ``code`` in a fresh interpreter with extra environment variables; return its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,  # a safety net against a hang, far above the few seconds this takes
    )
    assert result.returncode == 0, result.stderr
    return result.stdout
