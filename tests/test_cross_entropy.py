"""cross_entropy and cross_entropy_with_grad against the NumPy float64 reference."""

import tracemalloc

import numpy as np
import pytest
from scipy.special import logsumexp as scipy_logsumexp
from conftest import (
    DTYPES,
    LAYOUTS,
    N_CLASSES,
    REDUCTIONS,
    assert_close,
    assert_unchanged,
    make_logits,
    make_options,
    make_problem,
    make_soft_target,
    make_weight,
    numerical_grad,
    read_only,
    snapshot,
)

import nbce
from nbce import _validate as check
from nbce import reference

# soft targets take no non-negative ignore_index
TARGETS = {"index": ("index", False), "index-ignore": ("index", True), "soft": ("soft", False)}


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("target_case", TARGETS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference(rng, dtype, target_case, layout, reduction, weighted, label_smoothing):
    kind, ignore = TARGETS[target_case]
    logits, target, axis = make_problem(rng, layout, kind, dtype)
    kw = make_options(rng, target, weighted, ignore, axis=axis, reduction=reduction, label_smoothing=label_smoothing)
    saved = snapshot(logits, target, kw.get("weight"))

    loss = nbce.cross_entropy(logits, target, **kw)
    fused_loss, grad = nbce.cross_entropy_with_grad(logits, target, **kw)

    assert_unchanged(saved)
    expected_loss = reference.cross_entropy(logits, target, **kw)
    for value in (loss, fused_loss):
        assert value.dtype == dtype
        assert_close(value, expected_loss, dtype)
    assert grad.dtype == dtype
    assert_close(grad, reference.cross_entropy_grad(logits, target, **kw), dtype)


@pytest.mark.parametrize("target_case", TARGETS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_large_batch(rng, dtype, target_case):
    # Large enough for the multi-threaded path. Each row must also come out
    # bit-identical when computed within a small batch (DESIGN §3: a row's
    # arithmetic does not depend on threads or batching).
    kind, ignore = TARGETS[target_case]
    n_rows, n_classes = 300, 700
    logits = make_logits(rng, (n_rows, n_classes), dtype)
    if kind == "index":
        target = rng.integers(0, n_classes, n_rows)
    else:
        target = make_soft_target(rng, logits.shape, -1, dtype)
    kw = dict(weight=make_weight(rng, n_classes), label_smoothing=0.1)
    if ignore:
        kw["ignore_index"] = int(target[0])

    loss, grad = nbce.cross_entropy_with_grad(logits, target, reduction="none", **kw)
    mean = nbce.cross_entropy(logits, target, **kw)

    assert_close(loss, reference.cross_entropy(logits, target, reduction="none", **kw), dtype)
    assert_close(grad, reference.cross_entropy_grad(logits, target, reduction="none", **kw), dtype)
    assert_close(mean, reference.cross_entropy(logits, target, **kw), dtype)
    for rows in (slice(0, 3), slice(150, 151), slice(290, 300)):
        small_loss, small_grad = nbce.cross_entropy_with_grad(logits[rows], target[rows], reduction="none", **kw)
        np.testing.assert_array_equal(small_loss, loss[rows])
        np.testing.assert_array_equal(small_grad, grad[rows])


@pytest.mark.parametrize("kind, eps", [("index", 0.0), ("soft", 0.0), ("index", 0.1)], ids=["index", "soft", "smoothed"])
def test_float32_stays_accurate_for_a_million_classes(rng, kind, eps):
    # DESIGN §3: float32 rows keep a float32-level loss error at C = 10**6
    # (PyTorch 2.13 float32 is off by ~1e-5 relative here).
    shape = (2, 10**6)
    logits = make_logits(rng, shape, np.float32)
    target = rng.integers(0, shape[1], 2) if kind == "index" else make_soft_target(rng, shape, -1, np.float32)
    kw = dict(reduction="none", label_smoothing=eps)
    loss = nbce.cross_entropy(logits, target, **kw)
    np.testing.assert_allclose(loss, reference.cross_entropy(logits, target, **kw), rtol=1e-6)
    np.testing.assert_allclose(nbce.logsumexp(logits), scipy_logsumexp(logits.astype(np.float64), axis=-1), rtol=1e-6)


FD_CASES = {
    "index-none": ("2d", "index", dict(reduction="none")),
    "index-mean-all-options": ("2d", "index", dict(weighted=True, ignore=True, reduction="mean", label_smoothing=0.3)),
    "index-sum-weighted": ("2d", "index", dict(weighted=True, reduction="sum")),
    "index-1d-smoothing": ("1d", "index", dict(reduction="mean", label_smoothing=0.1)),
    "index-4d-axis1": ("4d", "index", dict(weighted=True, ignore=True, reduction="mean", label_smoothing=0.2)),
    "soft-mean-all-options": ("2d", "soft", dict(weighted=True, reduction="mean", label_smoothing=0.2)),
    "soft-4d-axis1": ("4d", "soft", dict(reduction="sum", label_smoothing=0.1)),
    "soft-strided-none": ("strided", "soft", dict(weighted=True, reduction="none")),
}


@pytest.mark.parametrize("case", FD_CASES)
def test_grad_matches_finite_differences(rng, case):
    layout, kind, opts = FD_CASES[case]
    logits, target, axis = make_problem(rng, layout, kind, np.float64)
    kw = make_options(rng, target, axis=axis, **opts)

    def total_loss(x):
        return np.sum(nbce.cross_entropy(x, target, **kw))

    _, grad = nbce.cross_entropy_with_grad(logits, target, **kw)
    np.testing.assert_allclose(grad, numerical_grad(total_loss, logits), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", ["index", "soft"])
@pytest.mark.parametrize("layout", ["2d", "4d"])
def test_out_is_logits_overwrites_in_place(rng, kind, layout):
    logits, target, axis = make_problem(rng, layout, kind, np.float32)
    kw = dict(axis=axis, weight=make_weight(rng, N_CLASSES), label_smoothing=0.1)
    expected_loss, expected_grad = nbce.cross_entropy_with_grad(logits, target, **kw)

    loss, grad = nbce.cross_entropy_with_grad(logits, target, out=logits, **kw)

    assert grad is logits
    assert loss == expected_loss
    np.testing.assert_array_equal(logits, expected_grad)


def test_out_is_logits_allocates_no_copy(rng):
    logits = make_logits(rng, (512, 2048), np.float32)
    target = rng.integers(0, 2048, 512)
    warm_up = logits.copy()  # the same call once before, so that nothing compiles while measuring
    nbce.cross_entropy_with_grad(warm_up, target, out=warm_up, label_smoothing=0.1)
    tracemalloc.start()
    try:
        nbce.cross_entropy_with_grad(logits, target, out=logits, label_smoothing=0.1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < logits.nbytes / 16


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("kind", ["index", "soft"])
def test_out_separate_array(rng, kind, order):
    logits, target, axis = make_problem(rng, "2d", kind, np.float64)
    out = np.full(logits.shape, np.nan, order=order)
    saved = snapshot(logits, target)

    loss, grad = nbce.cross_entropy_with_grad(logits, target, out=out, reduction="sum")

    assert grad is out
    assert_unchanged(saved)
    assert_close(loss, reference.cross_entropy(logits, target, reduction="sum"), np.float64)
    assert_close(out, reference.cross_entropy_grad(logits, target, reduction="sum"), np.float64)


@pytest.mark.parametrize(
    "make_out, error, match",
    [
        (lambda x: np.empty((x.shape[0], x.shape[1] + 1), x.dtype), ValueError, "shape"),
        (lambda x: np.empty(x.shape, np.float32), ValueError, "dtype"),
        (lambda x: x.tolist(), TypeError, "NumPy array"),
        (lambda x: read_only(np.empty_like(x)), ValueError, "read-only"),
    ],
    ids=["shape", "dtype", "list", "read-only"],
)
def test_bad_out_raises(rng, make_out, error, match):
    logits, target, _ = make_problem(rng, "2d", "index", np.float64)
    out = make_out(logits)
    saved = snapshot(logits, target, out)
    with pytest.raises(error, match=match):
        nbce.cross_entropy_with_grad(logits, target, out=out)
    assert_unchanged(saved)


def test_out_partly_overlapping_logits_raises(rng):
    base = make_logits(rng, (7, N_CLASSES), np.float64)
    target = rng.integers(0, N_CLASSES, 6)
    saved = snapshot(base, target)
    with pytest.raises(ValueError, match="overlaps logits"):
        nbce.cross_entropy_with_grad(base[:-1], target, out=base[1:])
    assert_unchanged(saved)


def _array_pairs():
    """Pairs of arrays, owning their memory or views, overlapping or not."""
    a, b = np.zeros(12), np.zeros(12)
    halves = a[:6], a[6:]
    return {
        "two allocations": (a, b),
        "the same array": (a, a),
        "an array and its view": (a, a[2:5]),
        "an array and its reinterpretation": (a, a.view(np.int64)),
        "disjoint halves": halves,
        "overlapping views": (a[:8], a[4:]),
        "a view and another allocation": (halves[0], b),
    }


@pytest.mark.parametrize("pair", _array_pairs().values(), ids=_array_pairs().keys())
def test_may_overlap_is_true_whenever_memory_is_shared(pair):
    # the cheap test for two owning arrays must never miss an overlap
    a, b = pair
    assert check.may_overlap(a, b) == np.may_share_memory(a, b)
    assert check.may_overlap(a, b) or not np.shares_memory(a, b)


def test_out_must_not_be_the_soft_target(rng):
    logits, target, _ = make_problem(rng, "2d", "soft", np.float64)
    saved = snapshot(logits, target)
    with pytest.raises(ValueError, match="target"):
        nbce.cross_entropy_with_grad(logits, target, out=target)
    assert_unchanged(saved)


@pytest.mark.parametrize(
    "int_dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
)
def test_any_integer_target_dtype(rng, int_dtype):
    logits, target, _ = make_problem(rng, "2d", "index", np.float64)
    kw = dict(weight=make_weight(rng, N_CLASSES), label_smoothing=0.1)
    expected_loss, expected_grad = nbce.cross_entropy_with_grad(logits, target, **kw)

    loss, grad = nbce.cross_entropy_with_grad(logits, target.astype(int_dtype), **kw)

    assert loss == expected_loss
    np.testing.assert_array_equal(grad, expected_grad)
    assert_close(loss, reference.cross_entropy(logits, target, **kw), np.float64)


def test_array_likes_are_accepted():
    logits = [[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]]
    loss, grad = nbce.cross_entropy_with_grad(logits, [0, 2], weight=[1, 2, 3])
    assert_close(loss, reference.cross_entropy(logits, [0, 2], weight=[1, 2, 3]), np.float64)
    assert_close(grad, reference.cross_entropy_grad(logits, [0, 2], weight=[1, 2, 3]), np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_soft_target_of_other_precision(rng, dtype):
    logits = make_logits(rng, (4, 6), dtype)
    other = np.float64 if dtype == np.float32 else np.float32
    target = make_soft_target(rng, (4, 6), -1, other)
    loss, grad = nbce.cross_entropy_with_grad(logits, target, reduction="none")
    assert loss.dtype == grad.dtype == dtype
    assert_close(loss, reference.cross_entropy(logits, target, reduction="none"), dtype)
    assert_close(grad, reference.cross_entropy_grad(logits, target, reduction="none"), dtype)
