"""Rows of few classes, which the kernels work on as flat runs.

Short rows are worked on FLAT_ROWS at a time, as one flat run of elements:
rows of at most FLAT_CLASSES classes in log_softmax and softmax, of at most
FLAT_BYTES in logsumexp and cross-entropy, of at most FLAT_TARGET_BYTES in
cross-entropy with smoothed or probability targets. These batches span several
runs (three; or the threaded build's 8 blocks of 65 rows, from 64 classes), the
last one short, with rows that are not finite, ignored or far from 0 at the
ends of the runs, checked against float64 references at each limit and one
class past it (the row-by-row path).
"""

import numpy as np
import pytest
from conftest import DTYPES, assert_close, assert_matches_scipy, make_logits, make_weight

import nbce
from nbce import reference
from nbce._cpu import FLAT_BYTES, FLAT_CLASSES, FLAT_ROWS, FLAT_TARGET_BYTES

N = 2 * FLAT_ROWS + 7
# the limits (float32 classes for the bytes) and one more class
CLASSES = (1, 3, FLAT_CLASSES, FLAT_CLASSES + 1, FLAT_BYTES // 4, FLAT_BYTES // 4 + 1)
# the most float64 classes that smoothed and probability targets take flat, and one more
TARGET_CLASSES = (FLAT_TARGET_BYTES // 8, FLAT_TARGET_BYTES // 8 + 1)
NAN_ROW, INF_ROW, MINUS_INF_ROW = FLAT_ROWS - 1, FLAT_ROWS, FLAT_ROWS + 1  # across a run's end


def short_logits(rng, n_classes, dtype):
    x = make_logits(rng, (N, n_classes), dtype)
    x[1] += 1000  # the exps must be shifted by the row's own max
    x[NAN_ROW, -1] = np.nan
    x[N - 2, 0] = -np.nan  # the NaN x86 makes: sign bit set, below -inf in order_key
    x[N - 3] = -np.inf
    x[N - 3, -1] = -np.nan  # so that the max of the other classes is -inf
    x[INF_ROW, 0] = np.inf
    x[MINUS_INF_ROW] = -np.inf
    x[N - 1, -1] = -np.inf  # a finite row, unless it is this one class
    return x


def bad_rows(x):
    """The rows whose max is NaN, +inf or -inf: their losses and gradients are NaN."""
    return ~np.isfinite(np.max(x, axis=-1))


@pytest.mark.parametrize("name", ["logsumexp", "log_softmax", "softmax"])
@pytest.mark.parametrize("n_classes", CLASSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_family(rng, dtype, n_classes, name):
    x = short_logits(rng, n_classes, dtype)
    assert_matches_scipy(name, x, getattr(nbce, name)(x, axis=-1))


@pytest.mark.parametrize("targets", ["indices", "smoothed indices", "probabilities", "smoothed probabilities"])
@pytest.mark.parametrize("n_classes", sorted({*CLASSES, *TARGET_CLASSES}))
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy(rng, dtype, n_classes, targets):
    x = short_logits(rng, n_classes, dtype)
    kw = dict(
        weight=make_weight(rng, n_classes), sample_weight=rng.uniform(0.5, 2.0, N), z_loss=1e-3, reduction="none"
    )
    if "smoothed" in targets:
        kw["label_smoothing"] = 0.2
    if "probabilities" in targets:
        y = rng.dirichlet(np.ones(n_classes), N).astype(dtype)
        y[1, 0] = 0.0  # no target mass: adds nothing, even at -inf
        y[N - 1] = np.eye(n_classes)[0]
        ignored = np.zeros(N, bool)
    else:
        y = rng.integers(0, n_classes, N)
        y[[0, MINUS_INF_ROW, FLAT_ROWS * 2]] = -100  # ignored: one of them not finite
        ignored = y == -100
    loss, grad, lse, argmax = nbce.cross_entropy_with_grad(x, y, return_lse=True, return_argmax=True, **kw)

    bad = bad_rows(x)
    good = ~bad & ~ignored
    assert np.isnan(loss[bad & ~ignored]).all() and np.isnan(grad[bad & ~ignored]).all()
    assert not np.any(loss[ignored]) and not np.any(grad[ignored])
    good_kw = kw | dict(sample_weight=kw["sample_weight"][good])
    assert_close(loss[good], reference.cross_entropy(x[good], y[good], **good_kw), dtype)
    assert_close(grad[good], reference.cross_entropy_grad(x[good], y[good], **good_kw), dtype)
    assert_matches_scipy("logsumexp", x, lse)
    np.testing.assert_array_equal(argmax, np.argmax(x, axis=-1))

    # the loss alone has the same bits, and so has the gradient written over the logits
    np.testing.assert_array_equal(nbce.cross_entropy(x, y, **kw), loss)
    in_place = x.copy()
    nbce.cross_entropy_with_grad(in_place, y, out=in_place, **kw)
    np.testing.assert_array_equal(in_place, grad)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("n_classes", CLASSES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_focal_loss(rng, dtype, n_classes, gamma):
    x = short_logits(rng, n_classes, dtype)
    y = rng.integers(0, n_classes, N)
    y[[0, MINUS_INF_ROW, FLAT_ROWS * 2]] = -100  # ignored: one of them not finite
    kw = dict(gamma=gamma, weight=make_weight(rng, n_classes), reduction="none")
    loss, grad = nbce.softmax_focal_loss_with_grad(x, y, **kw)

    bad, ignored = bad_rows(x), y == -100
    good = ~bad & ~ignored
    assert np.isnan(loss[bad & ~ignored]).all() and np.isnan(grad[bad & ~ignored]).all()
    assert not np.any(loss[ignored]) and not np.any(grad[ignored])
    if n_classes == 1:  # p_y = 1: where the reference's q**(gamma - 1) is 1 / 0
        assert not np.any(loss[good]) and not np.any(grad[good])
    else:
        assert_close(loss[good], reference.softmax_focal_loss(x[good], y[good], **kw), dtype)
        assert_close(grad[good], reference.softmax_focal_loss_grad(x[good], y[good], **kw), dtype)

    np.testing.assert_array_equal(nbce.softmax_focal_loss(x, y, **kw), loss)
    in_place = x.copy()
    nbce.softmax_focal_loss_with_grad(in_place, y, out=in_place, **kw)
    np.testing.assert_array_equal(in_place, grad)
