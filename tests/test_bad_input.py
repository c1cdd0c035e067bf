"""DESIGN.md §2, row by row: bad input raises before any kernel runs, extreme input gives defined results."""

import numpy as np
import pytest
from conftest import DTYPES, assert_close, assert_unchanged, make_logits, make_soft_target, snapshot

import nbce
from nbce import reference

CE_FUNCTIONS = [nbce.cross_entropy, nbce.cross_entropy_with_grad]
ALL_LOSSES = [*CE_FUNCTIONS, nbce.nll_loss]
C = 4


def assert_rejects(error, match, func, *args, **kwargs):
    """``func(*args, **kwargs)`` raises ``error`` matching ``match`` and leaves every array argument as it was."""
    saved = snapshot(*args, *kwargs.values())
    with pytest.raises(error, match=match):
        func(*args, **kwargs)
    assert_unchanged(saved)


@pytest.fixture
def logits(rng):
    return make_logits(rng, (5, C), np.float64)


@pytest.fixture
def labels(rng):
    return rng.integers(0, C, 5)


# --- label >= C, or negative and != ignore_index: IndexError naming the label


@pytest.mark.parametrize("bad", [C, 1000, -1, -101])
@pytest.mark.parametrize("func", ALL_LOSSES)
def test_label_out_of_range(func, logits, labels, bad):
    labels[2] = bad
    assert_rejects(IndexError, f"target {bad} is out of bounds for {C} classes", func, logits, labels)


@pytest.mark.parametrize("func", ALL_LOSSES)
def test_label_out_of_range_beside_ignored(func, logits, labels):
    labels[:2] = -1
    labels[3] = C
    assert_rejects(IndexError, f"target {C} is out of bounds", func, logits, labels, ignore_index=-1)


@pytest.mark.parametrize("func", ALL_LOSSES)
def test_out_of_range_uint64_label(func, logits, labels):
    labels = labels.astype(np.uint64)
    labels[1] = 2**64 - 1  # would wrap to -1 as int64
    assert_rejects(IndexError, "out of bounds", func, logits, labels, ignore_index=-1)


# --- float/bool labels, integer/complex logits: TypeError


@pytest.mark.parametrize("label_dtype", [np.float64, np.float32, np.bool_])
@pytest.mark.parametrize("func", ALL_LOSSES)
def test_non_integer_labels(func, logits, labels, label_dtype):
    assert_rejects(TypeError, "integer", func, logits, (labels % 2).astype(label_dtype))


def test_nll_loss_rejects_soft_target(rng, logits):
    soft = make_soft_target(rng, logits.shape, -1, np.float64)
    assert_rejects(TypeError, "integer class indices", nbce.nll_loss, logits, soft)


@pytest.mark.parametrize("logits_dtype", [np.int64, np.int32, np.complex128, np.bool_])
@pytest.mark.parametrize("func", ALL_LOSSES)
def test_non_float_logits(func, logits, labels, logits_dtype):
    assert_rejects(TypeError, "must be float32 or float64", func, logits.astype(logits_dtype), labels)


# --- target shape, weight length, C = 0 with rows: ValueError


@pytest.mark.parametrize("shape", [(4,), (5, 1), (6,), (5, C + 1), ()])
@pytest.mark.parametrize("func", ALL_LOSSES)
def test_target_shape_mismatch(func, logits, shape):
    assert_rejects(ValueError, "shape", func, logits, np.zeros(shape, np.int64))


@pytest.mark.parametrize("func", CE_FUNCTIONS)
def test_soft_target_shape_mismatch(func, logits):
    assert_rejects(ValueError, "target shape", func, logits, np.full((5, C + 1), 1 / C))


@pytest.mark.parametrize("length", [C - 1, C + 1, 1])
@pytest.mark.parametrize("func", ALL_LOSSES)
def test_weight_length(func, logits, labels, length):
    assert_rejects(ValueError, f"weight must have shape \\({C},\\)", func, logits, labels, weight=np.ones(length))


@pytest.mark.parametrize("func", ALL_LOSSES)
def test_weight_not_1d(func, logits, labels):
    assert_rejects(ValueError, "weight must have shape", func, logits, labels, weight=np.ones((1, C)))


@pytest.mark.parametrize("func", ALL_LOSSES)
def test_no_classes_with_rows(func):
    assert_rejects(ValueError, "C = 0", func, np.empty((3, 0)), np.zeros(3, np.int64))


def test_no_classes_with_soft_rows():
    assert_rejects(ValueError, "C = 0", nbce.cross_entropy_with_grad, np.empty((3, 0)), np.empty((3, 0)))


# --- label_smoothing outside [0, 1] or NaN, unknown reduction, non-finite weights: ValueError


@pytest.mark.parametrize("eps", [-0.1, 1.5, np.nan, -np.inf])
@pytest.mark.parametrize("func", CE_FUNCTIONS)
def test_label_smoothing_out_of_range(func, logits, labels, eps):
    assert_rejects(ValueError, "label_smoothing", func, logits, labels, label_smoothing=eps)


@pytest.mark.parametrize("reduction", ["avg", "MEAN", None, ""])
@pytest.mark.parametrize("func", ALL_LOSSES)
def test_unknown_reduction(func, logits, labels, reduction):
    assert_rejects(ValueError, "reduction must be one of", func, logits, labels, reduction=reduction)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("func", ALL_LOSSES)
def test_non_finite_weight(func, logits, labels, bad):
    weight = np.ones(C)
    weight[1] = bad
    assert_rejects(ValueError, "weight must be finite", func, logits, labels, weight=weight)


@pytest.mark.parametrize("func", ALL_LOSSES)
def test_weight_beyond_the_logits_dtype(func, logits, labels):
    # finite in float64, inf in the float32 that float32 logits compute with
    weight = np.ones(C)
    weight[1] = 1e300
    with pytest.warns(RuntimeWarning, match="overflow"):  # NumPy's, from the cast
        assert_rejects(
            ValueError, "weight must be finite in float32", func, logits.astype(np.float32), labels, weight=weight
        )


# --- soft targets with a non-negative ignore_index: ValueError


@pytest.mark.parametrize("ignore_index", [0, 3, 100])
@pytest.mark.parametrize("func", CE_FUNCTIONS)
def test_soft_target_with_ignore_index(rng, func, logits, ignore_index):
    soft = make_soft_target(rng, logits.shape, -1, np.float64)
    assert_rejects(ValueError, "ignore_index", func, logits, soft, ignore_index=ignore_index)


# --- all rows ignored, or zero total weight, with "mean": NaN, gradient all zeros


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_rows_ignored(rng, dtype):
    logits = make_logits(rng, (5, C), dtype)
    labels = np.full(5, -100)
    loss, grad = nbce.cross_entropy_with_grad(logits, labels, label_smoothing=0.1)
    assert np.isnan(loss) and loss.dtype == dtype
    assert np.isnan(nbce.cross_entropy(logits, labels))
    assert np.isnan(nbce.nll_loss(logits, labels))
    np.testing.assert_array_equal(grad, np.zeros_like(logits), strict=True)
    assert nbce.cross_entropy(logits, labels, reduction="sum") == 0
    assert nbce.nll_loss(logits, labels, reduction="sum") == 0


def test_zero_total_weight(rng, logits):
    labels = np.array([0, 2, 0, 2, -100])
    weight = np.array([0.0, 1.0, 0.0, 1.0])
    loss, grad = nbce.cross_entropy_with_grad(logits, labels, weight=weight, label_smoothing=0.2)
    assert np.isnan(loss)
    np.testing.assert_array_equal(grad, np.zeros_like(logits))
    assert np.isnan(nbce.nll_loss(logits, labels, weight=weight))


# --- empty batch: "mean" NaN, "sum" 0, "none" empty

EMPTY_BATCH_LOSS = {
    "mean": np.isnan,
    "sum": lambda loss: loss == 0 and not np.signbit(loss),
    "none": lambda loss: loss.shape == (0,),
}


@pytest.mark.parametrize("n_classes", [C, 0])
@pytest.mark.parametrize("reduction", EMPTY_BATCH_LOSS)
@pytest.mark.parametrize("kind", ["index", "soft"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(dtype, kind, reduction, n_classes):
    logits = np.empty((0, n_classes), dtype)
    target = np.empty(0, np.int64) if kind == "index" else np.empty((0, n_classes), dtype)
    expected = EMPTY_BATCH_LOSS[reduction]

    loss, grad = nbce.cross_entropy_with_grad(logits, target, reduction=reduction)

    assert expected(loss) and loss.dtype == dtype
    assert grad.shape == logits.shape and grad.dtype == dtype
    assert expected(nbce.cross_entropy(logits, target, reduction=reduction))
    if kind == "index":
        assert expected(nbce.nll_loss(logits, target, reduction=reduction))


# --- C = 1: loss exactly +0.0, gradient 0


SINGLE_CLASS_OPTIONS = {
    "plain": {},
    "smoothed": dict(label_smoothing=0.6),
    "weighted": dict(weight=[0.7]),
    "weighted-smoothed": dict(weight=[0.7], label_smoothing=0.3),
}


@pytest.mark.parametrize("option", SINGLE_CLASS_OPTIONS)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("kind", ["index", "soft"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_single_class(rng, dtype, kind, reduction, option):
    logits = make_logits(rng, (3, 1), dtype, spread=100.0)
    target = np.zeros(3, np.int64) if kind == "index" else np.ones((3, 1), dtype)
    loss, grad = nbce.cross_entropy_with_grad(logits, target, reduction=reduction, **SINGLE_CLASS_OPTIONS[option])
    assert np.all(loss == 0) and not np.any(np.signbit(loss))
    np.testing.assert_array_equal(grad, np.zeros_like(logits))


# --- -inf logit not at the target: finite loss, gradient exactly 0 there


@pytest.mark.parametrize("dtype", DTYPES)
def test_minus_inf_logit_off_target(rng, dtype):
    logits = make_logits(rng, (4, C), dtype)
    logits[:, 1] = -np.inf
    logits[0, 2] = -np.inf
    labels = np.array([0, 3, 2, 0])
    soft = make_soft_target(rng, logits.shape, -1, dtype)
    soft[logits == -np.inf] = 0.0  # zero target mass where the logit is -inf
    for target in (labels, soft):
        loss, grad = nbce.cross_entropy_with_grad(logits, target, reduction="none")
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
        np.testing.assert_array_equal(grad[logits == -np.inf], 0)
        assert_close(loss, reference.cross_entropy(logits, target, reduction="none"), dtype)
        assert_close(grad, reference.cross_entropy_grad(logits, target, reduction="none"), dtype)


# --- -inf logit at the target: loss +inf, gradient finite


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("dtype", DTYPES)
def test_minus_inf_logit_at_target(rng, dtype, label_smoothing):
    logits = make_logits(rng, (3, C), dtype)
    labels = np.array([1, 0, 2])
    logits[0, 1] = -np.inf
    kw = dict(reduction="none", weight=np.arange(1.0, C + 1), label_smoothing=label_smoothing)
    loss, grad = nbce.cross_entropy_with_grad(logits, labels, **kw)
    assert loss[0] == np.inf
    assert np.all(np.isfinite(grad))
    assert_close(loss[1:], reference.cross_entropy(logits, labels, **kw)[1:], dtype)
    assert_close(grad, reference.cross_entropy_grad(logits, labels, **kw), dtype)
    assert nbce.cross_entropy(logits, labels) == np.inf
    assert nbce.nll_loss(nbce.log_softmax(logits), labels, reduction="none")[0] == np.inf


# --- a row all -inf, or holding +inf/NaN: that row's loss is NaN, other rows unaffected

BAD_ROWS = {
    "all-minus-inf": [-np.inf] * C,
    "plus-inf": [0.0, np.inf, 1.0, -np.inf],
    "two-plus-inf": [np.inf, np.inf, 1.0, 2.0],
    "nan": [0.0, 1.0, np.nan, 2.0],
    "nan-and-minus-inf": [np.nan, -np.inf, 1.0, 2.0],
}


@pytest.mark.parametrize("kind", ["index", "soft"])
@pytest.mark.parametrize("bad_row", BAD_ROWS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_non_finite_row(rng, dtype, bad_row, kind):
    logits = make_logits(rng, (4, C), dtype)
    logits[2] = BAD_ROWS[bad_row]
    target = rng.integers(0, C, 4) if kind == "index" else make_soft_target(rng, logits.shape, -1, dtype)
    good = [0, 1, 3]
    kw = dict(weight=np.arange(1.0, C + 1), label_smoothing=0.1)
    saved = snapshot(logits, target)

    loss, grad = nbce.cross_entropy_with_grad(logits, target, reduction="none", **kw)

    assert_unchanged(saved)
    assert np.isnan(loss[2])
    assert_close(loss[good], reference.cross_entropy(logits[good], target[good], reduction="none", **kw), dtype)
    assert_close(grad[good], reference.cross_entropy_grad(logits[good], target[good], reduction="none", **kw), dtype)
    assert np.isnan(nbce.cross_entropy(logits, target, **kw))


# --- an ignored row holding -inf/NaN: loss 0 and gradient exactly 0 (stricter than PyTorch)


@pytest.mark.parametrize("bad_row", BAD_ROWS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_ignored_non_finite_row(rng, dtype, bad_row):
    logits = make_logits(rng, (4, C), dtype)
    logits[1] = BAD_ROWS[bad_row]
    labels = np.array([0, -100, 3, 1])
    kw = dict(weight=np.arange(1.0, C + 1), label_smoothing=0.1)

    losses, grad = nbce.cross_entropy_with_grad(logits, labels, reduction="none", **kw)
    mean, mean_grad = nbce.cross_entropy_with_grad(logits, labels, **kw)

    assert losses[1] == 0 and not np.signbit(losses[1])
    np.testing.assert_array_equal(grad[1], 0)
    np.testing.assert_array_equal(mean_grad[1], 0)
    kept = [0, 2, 3]
    assert_close(mean, reference.cross_entropy(logits[kept], labels[kept], **kw), dtype)
    assert_close(mean_grad[kept], reference.cross_entropy_grad(logits[kept], labels[kept], **kw), dtype)


@pytest.mark.parametrize("bad_row", BAD_ROWS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nll_loss_ignored_non_finite_row(rng, dtype, bad_row):
    log_probs = nbce.log_softmax(make_logits(rng, (4, C), dtype))
    log_probs[1] = BAD_ROWS[bad_row]
    labels = np.array([0, -100, 3, 1])
    weight = np.arange(1.0, C + 1)

    losses = nbce.nll_loss(log_probs, labels, weight=weight, reduction="none")
    mean = nbce.nll_loss(log_probs, labels, weight=weight)

    assert losses[1] == 0
    kept = [0, 2, 3]
    expected = reference.nll_loss(log_probs[kept], labels[kept], weight=weight, reduction="none")
    assert_close(losses[kept], expected, dtype)
    assert_close(mean, reference.nll_loss(log_probs[kept], labels[kept], weight=weight), dtype)


# --- integer-valued logits shifted by 1e7 (float32) or 1e15 (float64): same loss as unshifted


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("kind", ["index", "soft"])
@pytest.mark.parametrize("dtype, shift", [(np.float32, 1e7), (np.float64, 1e15)])
def test_large_shift(rng, dtype, shift, kind, label_smoothing):
    logits = rng.integers(-20, 20, (6, C)).astype(dtype)
    shifted = logits + dtype(shift)
    assert np.all(shifted - dtype(shift) == logits)  # the shift is exact
    target = rng.integers(0, C, 6) if kind == "index" else make_soft_target(rng, logits.shape, -1, dtype)
    kw = dict(reduction="none", label_smoothing=label_smoothing)

    loss, grad = nbce.cross_entropy_with_grad(shifted, target, **kw)

    assert_close(loss, reference.cross_entropy(logits, target, **kw), dtype)
    assert_close(grad, reference.cross_entropy_grad(logits, target, **kw), dtype)
    np.testing.assert_array_equal(loss, nbce.cross_entropy(logits, target, **kw))
