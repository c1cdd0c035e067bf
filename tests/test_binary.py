"""binary_cross_entropy_with_logits and its gradient twin against the float64
reference, finite differences and PyTorch."""

import numpy as np
import pytest
from conftest import DTYPES, REDUCTIONS, assert_close, assert_unchanged, snapshot

import nbce
from nbce import reference

SHAPES = {"2d": (6, 5), "1d": (5,), "3d": (2, 3, 4), "0d": ()}


def make_case(rng, shape, dtype, weight, pos_weight):
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    t = rng.uniform(0, 1, shape).astype(dtype)
    t[(t < 0.3)] = 0.0  # hard and soft targets mixed
    t[(t > 0.7)] = 1.0
    kw = {}
    per_class = shape[-1:]  # () for a 0-d input
    if weight == "per-class":
        kw["weight"] = rng.uniform(0.5, 2.0, per_class)
    elif weight == "per-row" and len(shape) >= 2:
        kw["weight"] = rng.uniform(0.5, 2.0, shape[:-1] + (1,))
    elif weight == "full":
        kw["weight"] = rng.uniform(0.5, 2.0, shape)
    if pos_weight:
        kw["pos_weight"] = rng.uniform(0.5, 3.0, per_class)
    return x, t, kw


@pytest.mark.parametrize("pos_weight", [False, True], ids=["", "pos_weight"])
@pytest.mark.parametrize("weight", [None, "per-class", "per-row", "full"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference(rng, dtype, shape, reduction, weight, pos_weight):
    x, t, kw = make_case(rng, SHAPES[shape], dtype, weight, pos_weight)
    saved = snapshot(x, t, *kw.values())

    loss = nbce.binary_cross_entropy_with_logits(x, t, reduction=reduction, **kw)
    fused, grad = nbce.binary_cross_entropy_with_logits_with_grad(x, t, reduction=reduction, **kw)

    assert_unchanged(saved)
    expected = reference.binary_cross_entropy_with_logits(x, t, reduction=reduction, **kw)
    for value in (loss, fused):
        assert np.asarray(value).dtype == dtype
        assert_close(value, expected, dtype)
    assert grad.dtype == dtype and grad.shape == x.shape
    assert_close(grad, reference.binary_cross_entropy_with_logits_grad(x, t, reduction=reduction, **kw), dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradient_is_the_finite_difference(rng, reduction):
    x, t, kw = make_case(rng, (3, 4), np.float64, "per-row", True)
    _, grad = nbce.binary_cross_entropy_with_logits_with_grad(x, t, reduction=reduction, **kw)
    h = 1e-6
    numeric = np.empty_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        f_up = nbce.binary_cross_entropy_with_logits(up, t, reduction=reduction, **kw)
        f_down = nbce.binary_cross_entropy_with_logits(down, t, reduction=reduction, **kw)
        numeric[i] = (np.sum(f_up) - np.sum(f_down)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stable_for_large_logits(dtype):
    x = np.array([1e4, -1e4, 1e4, -1e4, 0.0], dtype)
    t = np.array([0.0, 1.0, 1.0, 0.0, 1.0], dtype)
    loss, grad = nbce.binary_cross_entropy_with_logits_with_grad(x, t, reduction="none")
    np.testing.assert_array_equal(loss[:4], np.array([1e4, 1e4, 0.0, 0.0], dtype))
    np.testing.assert_allclose(loss[4], np.log(2.0), rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_array_equal(grad, np.array([1.0, -1.0, 0.0, 0.0, -0.5], dtype))


def test_in_place_and_out(rng):
    x, t, kw = make_case(rng, (64, 33), np.float32, "per-class", True)
    expected_loss, expected_grad = nbce.binary_cross_entropy_with_logits_with_grad(x, t, **kw)
    out = np.empty_like(x)
    loss, grad = nbce.binary_cross_entropy_with_logits_with_grad(x, t, out=out, **kw)
    assert grad is out
    np.testing.assert_array_equal(out, expected_grad)
    loss, grad = nbce.binary_cross_entropy_with_logits_with_grad(x, t, out=x, **kw)
    assert grad is x and loss == expected_loss
    np.testing.assert_array_equal(x, expected_grad)


def test_large_input_uses_every_thread(rng):
    x, t, kw = make_case(rng, (300, 700), np.float32, "per-row", True)
    loss, grad = nbce.binary_cross_entropy_with_logits_with_grad(x, t, reduction="none", **kw)
    assert_close(loss, reference.binary_cross_entropy_with_logits(x, t, reduction="none", **kw), np.float32)
    assert_close(grad, reference.binary_cross_entropy_with_logits_grad(x, t, reduction="none", **kw), np.float32)


def test_empty():
    x = np.zeros((2, 0))
    assert np.isnan(nbce.binary_cross_entropy_with_logits(x, x))
    assert nbce.binary_cross_entropy_with_logits(x, x, reduction="sum") == 0.0
    assert nbce.binary_cross_entropy_with_logits(x, x, reduction="none").shape == (2, 0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(logits=np.zeros(3, int)), TypeError, "logits must be float32 or float64"),
        (dict(target=np.zeros(3, int)), TypeError, "target must hold float probabilities"),
        (dict(target=np.zeros(4)), ValueError, "target shape"),
        (dict(pos_weight=np.ones(2)), ValueError, "pos_weight of shape"),
        (dict(weight=np.ones((2, 3))), ValueError, "weight of shape"),
        (dict(weight=np.array([1.0, np.nan, 1.0])), ValueError, "weight must be finite"),
        (dict(pos_weight=np.array([1.0, np.inf, 1.0])), ValueError, "pos_weight must be finite"),
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
        (dict(out=np.zeros(4)), ValueError, "out must have the shape"),
    ],
)
def test_bad_input(kwargs, error, match):
    args = dict(logits=np.zeros(3), target=np.zeros(3))
    args.update(kwargs)
    logits, target = args.pop("logits"), args.pop("target")
    with pytest.raises(error, match=match):
        nbce.binary_cross_entropy_with_logits_with_grad(logits, target, **args)
