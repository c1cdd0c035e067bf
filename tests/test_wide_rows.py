"""Rows wider than the head that their exps are shifted by.

The kernels shift a row's exps by the max of its first HEAD elements and sum
them in the same pass that reads the row; a row whose later elements would
overflow that sum, or that holds NaN or +inf, or whose head is all -inf, is
summed again shifted by its max. These rows put each case after the head, in
the second chunk of the float32 sums (SUM_CHUNK), for every function that
sums exps, against float64 references.
"""

import numpy as np
import pytest
from conftest import DTYPES, assert_close, assert_matches_scipy, make_logits

import nbce
from nbce import reference
from nbce._cpu import HEAD, SUM_CHUNK

C = SUM_CHUNK + 88
LATE = SUM_CHUNK + 40  # an element after the head, in the second chunk

ROWS = {  # name -> (where, value) changes to random logits
    "plain": [],
    "late-60": [(LATE, 60.0)],  # summed in the first pass (float32 sums reach e^50 and more)
    "late-1000": [(LATE, 1000.0)],  # overflows the first pass in both precisions
    "head-all-minus-inf": [(slice(0, HEAD), -np.inf)],
    "after-head-60": [(HEAD, 60.0)],  # in the first chunk, past the head
    "late-minus-inf": [(LATE, -np.inf)],
    "late-nan": [(LATE, np.nan)],
    "late-plus-inf": [(LATE, np.inf)],
    "late-nan-and-plus-inf": [(LATE, np.nan), (LATE + 1, np.inf)],
}


def wide_logits(rng, dtype):
    """One row per case of ROWS, in a batch large enough for the threaded kernels."""
    x = make_logits(rng, (len(ROWS) * 8, C), dtype)
    for k, changes in enumerate(ROWS.values()):
        for where, value in changes:
            x[k * 8 : (k + 1) * 8, where] = value
    return x


@pytest.mark.parametrize("name", ["logsumexp", "log_softmax", "softmax"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_family(rng, dtype, name):
    x = wide_logits(rng, dtype)
    assert_matches_scipy(name, x, getattr(nbce, name)(x, axis=-1))


def finite_rows(x):
    return np.flatnonzero(np.isfinite(np.max(x, axis=-1)))


# A softcap of 100 keeps rows with +-inf finite, and lets the capped late
# elements overflow a float32 sum shifted by the head's max (100 tanh(10) is
# ~97 above it), as does a head all -inf (capped to -100): the gradient with
# the softcap's slope is then summed again too.
@pytest.mark.parametrize("options", [dict(label_smoothing=0.1), dict(softcap=100.0)], ids=["smoothing", "softcap"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy(rng, dtype, options):
    x = wide_logits(rng, dtype)
    y = np.full(len(x), LATE)  # the target is the late element
    y[::2] = rng.integers(0, C, len(x) // 2)
    kw = dict(reduction="none", **options)
    loss, grad = nbce.cross_entropy_with_grad(x, y, **kw)
    capped = "softcap" in options
    good = np.flatnonzero(~np.isnan(x).any(axis=-1)) if capped else finite_rows(x)
    bad = np.setdiff1d(np.arange(len(x)), good)
    assert len(bad) == (2 if capped else 3) * 8 and np.isnan(loss[bad]).all() and np.isnan(grad[bad]).all()
    assert_close(loss[good], reference.cross_entropy(x[good], y[good], **kw), dtype)
    assert_close(grad[good], reference.cross_entropy_grad(x[good], y[good], **kw), dtype)
    np.testing.assert_array_equal(nbce.cross_entropy(x, y, **kw), loss)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_focal_loss(rng, dtype):
    x = wide_logits(rng, dtype)
    y = np.full(len(x), LATE)
    y[::2] = rng.integers(0, C, len(x) // 2)
    loss, grad = nbce.softmax_focal_loss_with_grad(x, y, reduction="none")
    good = finite_rows(x)
    assert np.isnan(np.delete(loss, good)).all()
    assert_close(loss[good], reference.softmax_focal_loss(x[good], y[good], reduction="none"), dtype)
    assert_close(grad[good], reference.softmax_focal_loss_grad(x[good], y[good], reduction="none"), dtype)
