"""Properties that hold for any input, checked with hypothesis."""

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
from conftest import DTYPES, TOLERANCE, assert_close
from hypothesis import given, settings

import nbce

PROPERTY = settings(deadline=None, max_examples=50)  # deadline: the first example compiles


def float_elements(dtype, bound=50.0):
    return st.floats(-bound, bound, width=np.finfo(dtype).bits)


# Multiples of 1/256 up to 50: adding an integer shift to them is exact in float32 and float64.
DYADIC = st.integers(-50 * 256, 50 * 256).map(lambda k: k / 256)


@st.composite
def problems(draw, elements=None, soft=None, weighted=None):
    """``(logits, target, options)`` with small random shapes; ``None`` arguments are drawn."""
    dtype = draw(st.sampled_from(DTYPES))
    n_rows, n_classes = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    if elements is None:
        elements = float_elements(dtype)
    logits = draw(hnp.arrays(dtype, (n_rows, n_classes), elements=elements))
    labels = draw(hnp.arrays(np.int64, n_rows, elements=st.integers(0, n_classes - 1)))
    if soft is None:
        soft = draw(st.booleans())
    if soft:
        raw = draw(hnp.arrays(dtype, (n_rows, n_classes), elements=st.floats(0, 1, width=np.finfo(dtype).bits)))
        raw = raw + (raw.sum(axis=-1, keepdims=True) == 0)  # an all-zero row becomes uniform
        target = (raw / raw.sum(axis=-1, keepdims=True)).astype(dtype)
    else:
        target = labels
    options = {"label_smoothing": draw(st.sampled_from([0.0, 0.3]))}
    if weighted is None:
        weighted = draw(st.booleans())
    if weighted:
        options["weight"] = draw(hnp.arrays(np.float64, n_classes, elements=st.floats(0.1, 2.0)))
    return logits, target, options


@PROPERTY
@given(problems(elements=DYADIC), st.data())
def test_translation_invariance(problem, data):
    logits, target, options = problem
    shift = data.draw(hnp.arrays(np.int64, (logits.shape[0], 1), elements=st.integers(-1000, 1000)))
    shifted = logits + shift.astype(logits.dtype)
    loss, grad = nbce.cross_entropy_with_grad(logits, target, reduction="none", **options)
    loss_shifted, grad_shifted = nbce.cross_entropy_with_grad(shifted, target, reduction="none", **options)
    assert_close(loss_shifted, loss, logits.dtype)
    assert_close(grad_shifted, grad, logits.dtype)


@PROPERTY
@given(problems())
def test_loss_is_non_negative(problem):
    logits, target, options = problem
    loss = nbce.cross_entropy(logits, target, reduction="none", **options)
    assert np.all(loss >= 0)


@PROPERTY
@given(problems(weighted=False), st.sampled_from(["none", "mean", "sum"]))
def test_unweighted_gradient_rows_sum_to_zero(problem, reduction):
    # for soft targets this needs rows summing to 1, which the strategy draws
    logits, target, options = problem
    _, grad = nbce.cross_entropy_with_grad(logits, target, reduction=reduction, **options)
    atol = TOLERANCE[logits.dtype.type][1] * 10 * logits.shape[1]
    np.testing.assert_allclose(grad.sum(axis=-1), 0.0, atol=atol)


@PROPERTY
@given(problems(soft=False), st.sampled_from(["none", "sum", "mean"]))
def test_one_hot_soft_target_equals_index_target(problem, reduction):
    logits, labels, options = problem
    if reduction == "mean":
        # weighted means differ on purpose: sum of w[y] vs number of rows (PyTorch)
        options.pop("weight", None)
    one_hot = np.eye(logits.shape[1], dtype=logits.dtype)[labels]
    loss, grad = nbce.cross_entropy_with_grad(logits, labels, reduction=reduction, **options)
    soft_loss, soft_grad = nbce.cross_entropy_with_grad(logits, one_hot, reduction=reduction, **options)
    assert_close(soft_loss, loss, logits.dtype)
    assert_close(soft_grad, grad, logits.dtype)


@PROPERTY
@given(
    st.sampled_from(DTYPES).flatmap(
        lambda dtype: hnp.arrays(dtype, hnp.array_shapes(max_dims=3, max_side=6), elements=float_elements(dtype))
    )
)
def test_softmax_is_a_distribution(x):
    p = nbce.softmax(x)
    atol = TOLERANCE[x.dtype.type][1] * 10 * x.shape[-1]
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, atol=atol)
    assert np.all((p >= 0) & (p <= 1))
    assert np.all(nbce.log_softmax(x) <= 0)
    assert np.all(nbce.logsumexp(x) >= x.max(axis=-1))
