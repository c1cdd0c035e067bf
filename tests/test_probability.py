"""Losses on probabilities: binary_cross_entropy (against the float64 reference,
finite differences and PyTorch) and log_loss (against scikit-learn)."""

import numpy as np
import pytest
from conftest import DTYPES, REDUCTIONS, assert_close, assert_unchanged, snapshot

import nbce
from nbce import reference

# --- binary_cross_entropy ---------------------------------------------------

SHAPES = {"2d": (6, 5), "1d": (5,), "0d": (), "strided": (6, 5)}


def make_bce_case(rng, layout, dtype, weight, low=0.02):
    """Probabilities in [low, 1 - low], hard and soft targets mixed, and weights."""
    shape = SHAPES[layout]
    if layout == "strided":  # transposed views with step 2: neither C- nor F-contiguous
        p = rng.uniform(low, 1 - low, (5, 12)).astype(dtype)[:, ::2].T
        t = rng.uniform(0, 1, (5, 12)).astype(dtype)[:, ::2].T
    else:
        p = rng.uniform(low, 1 - low, shape).astype(dtype)
        t = rng.uniform(0, 1, shape).astype(dtype)
    t[t < 0.3] = 0.0
    t[t > 0.7] = 1.0
    kw = {}
    if weight == "per-class":
        kw["weight"] = rng.uniform(0.5, 2.0, shape[-1:])
    elif weight == "per-row" and len(shape) >= 2:
        kw["weight"] = rng.uniform(0.5, 2.0, shape[:-1] + (1,))
    elif weight == "full":
        kw["weight"] = rng.uniform(0.5, 2.0, shape)
    return p, t, kw


@pytest.mark.parametrize("weight", [None, "per-class", "per-row", "full"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_matches_reference(rng, dtype, layout, reduction, weight):
    p, t, kw = make_bce_case(rng, layout, dtype, weight)
    saved = snapshot(p, t, *kw.values())

    loss = nbce.binary_cross_entropy(p, t, reduction=reduction, **kw)
    fused, grad = nbce.binary_cross_entropy_with_grad(p, t, reduction=reduction, **kw)

    assert_unchanged(saved)
    expected = reference.binary_cross_entropy(p, t, reduction=reduction, **kw)
    for value in (loss, fused):
        assert np.asarray(value).dtype == dtype
        assert_close(value, expected, dtype)
    assert grad.dtype == dtype and grad.shape == p.shape
    assert_close(grad, reference.binary_cross_entropy_grad(p, t, reduction=reduction, **kw), dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_gradient_is_the_finite_difference(rng, reduction):
    p, t, kw = make_bce_case(rng, "2d", np.float64, "per-row", low=0.05)
    _, grad = nbce.binary_cross_entropy_with_grad(p, t, reduction=reduction, **kw)
    h = 1e-7
    numeric = np.empty_like(p)
    for i in np.ndindex(p.shape):
        up, down = p.copy(), p.copy()
        up[i] += h
        down[i] -= h
        f_up = nbce.binary_cross_entropy(up, t, reduction=reduction, **kw)
        f_down = nbce.binary_cross_entropy(down, t, reduction=reduction, **kw)
        numeric[i] = (np.sum(f_up) - np.sum(f_down)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def edge_case(dtype):
    """p exactly 0 and 1, p whose log is past the clamp (and one just inside), targets hard and soft."""
    tiny = np.finfo(dtype).smallest_subnormal  # log(tiny) < -100 in both precisions
    inside = np.exp(-99.0)  # not clamped (a float32 subnormal, so only about 99)
    p = np.array([0.0, 0.0, 1.0, 1.0, 0.0, 1.0, tiny, tiny, inside, 1e-7, 0.5, 0.9], dtype)
    t = np.array([0.0, 1.0, 0.0, 1.0, 0.3, 0.6, 1.0, 0.0, 1.0, 0.0, 0.25, 1.0], dtype)
    return p, t


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_clamps_the_log_at_minus_100(dtype):
    p, t = edge_case(dtype)
    loss, grad = nbce.binary_cross_entropy_with_grad(p, t, reduction="none")
    np.testing.assert_array_equal(loss[:4], np.array([0.0, 100.0, 100.0, 0.0], dtype))
    np.testing.assert_allclose(loss[4:8], [30.0, 40.0, 100.0, p[7]], rtol=4 * np.finfo(dtype).eps)
    np.testing.assert_allclose(loss[8], -np.log(np.float64(p[8])), rtol=4 * np.finfo(dtype).eps)  # about 99
    # the gradient's denominator is bounded by PyTorch's eps, the float32 constant 1e-12
    eps = float(np.float32(1e-12))
    np.testing.assert_array_equal(grad[:4], np.array([0.0, -1 / eps, 1 / eps, 0.0], dtype))
    assert np.all(np.isfinite(grad))


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_is_accurate_near_0_and_1(dtype):
    """Small losses keep a relative error: log1p(-p) for small p, log(p) for p near 1."""
    small = 2.0 ** -np.arange(1, 60, dtype=dtype)
    p = np.concatenate([small, 1 - small[small >= np.finfo(dtype).epsneg]]).astype(dtype)
    t = (p > 0.5).astype(dtype)  # the loss is -log(max(p, 1 - p)), the smallest it can be
    loss = nbce.binary_cross_entropy(p, t, reduction="none")
    expected = reference.binary_cross_entropy(p, t, reduction="none")
    np.testing.assert_allclose(loss, expected, rtol=4 * np.finfo(dtype).eps, atol=0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_matches_torch(rng, dtype, reduction):
    torch = pytest.importorskip("torch")
    p, t = edge_case(dtype)
    p = np.concatenate([p, rng.uniform(0, 1, 8).astype(dtype)]).reshape(4, 5)
    t = np.concatenate([t, rng.uniform(0, 1, 8).astype(dtype)]).reshape(4, 5)
    weight = rng.uniform(0.5, 2.0, 5).astype(dtype)

    loss, grad = nbce.binary_cross_entropy_with_grad(p, t, weight=weight, reduction=reduction)

    p_torch = torch.tensor(p, requires_grad=True)
    expected = torch.nn.functional.binary_cross_entropy(
        p_torch, torch.tensor(t), weight=torch.tensor(weight), reduction=reduction
    )
    expected.sum().backward()
    rtol = 8 * np.finfo(dtype).eps
    np.testing.assert_allclose(loss, expected.detach().numpy(), rtol=rtol, atol=0)
    # atol: the kernel may multiply by the weight before dividing (reassociation),
    # which rounds differently where p (p - t) w is subnormal
    np.testing.assert_allclose(grad, p_torch.grad.numpy(), rtol=rtol, atol=1e-30)


def test_bce_in_place_and_out(rng):
    p, t, kw = make_bce_case(rng, "2d", np.float32, "per-class")
    expected_loss, expected_grad = nbce.binary_cross_entropy_with_grad(p, t, **kw)
    out = np.empty_like(p)
    loss, grad = nbce.binary_cross_entropy_with_grad(p, t, out=out, **kw)
    assert grad is out
    np.testing.assert_array_equal(out, expected_grad)
    loss, grad = nbce.binary_cross_entropy_with_grad(p, t, out=p, **kw)
    assert grad is p and loss == expected_loss
    np.testing.assert_array_equal(p, expected_grad)


def test_bce_large_input_uses_every_thread(rng):
    p = rng.uniform(0, 1, (300, 700)).astype(np.float32)
    t = rng.uniform(0, 1, (300, 700)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, (300, 1))
    loss, grad = nbce.binary_cross_entropy_with_grad(p, t, weight=w, reduction="none")
    assert_close(loss, reference.binary_cross_entropy(p, t, weight=w, reduction="none"), np.float32)
    assert_close(grad, reference.binary_cross_entropy_grad(p, t, weight=w, reduction="none"), np.float32)


def test_bce_empty():
    p = np.zeros((2, 0))
    assert np.isnan(nbce.binary_cross_entropy(p, p))
    assert nbce.binary_cross_entropy(p, p, reduction="sum") == 0.0
    assert nbce.binary_cross_entropy(p, p, reduction="none").shape == (2, 0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(probs=np.array([0.5, 1.5, 0.5])), ValueError, "probs must be between 0 and 1, found 1.5"),
        (dict(probs=np.array([0.5, -1e-30, 0.5])), ValueError, "probs must be between 0 and 1"),
        (dict(probs=np.array([0.5, np.nan, 0.5])), ValueError, "probs must be between 0 and 1, found nan"),
        (dict(target=np.array([0.0, 1.0, 2.0])), ValueError, "target must be between 0 and 1"),
        (dict(target=np.array([0.0, np.nan, 1.0])), ValueError, "target must be between 0 and 1"),
        (dict(probs=np.zeros(3, int)), TypeError, "probs must be float32 or float64"),
        (dict(target=np.zeros(3, int)), TypeError, "target must hold float probabilities"),
        (dict(target=np.zeros(4)), ValueError, "target shape"),
        (dict(weight=np.ones((2, 3))), ValueError, "weight of shape"),
        (dict(weight=np.array([1.0, np.inf, 1.0])), ValueError, "weight must be finite"),
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
        (dict(out=np.zeros(4)), ValueError, "out must have the shape"),
    ],
)
def test_bce_bad_input(kwargs, error, match):
    args = dict(probs=np.full(3, 0.5), target=np.zeros(3))
    args.update(kwargs)
    probs, target = args.pop("probs"), args.pop("target")
    with pytest.raises(error, match=match):
        nbce.binary_cross_entropy_with_grad(probs, target, **args)


# --- log_loss -------------------------------------------------------------------


def make_log_loss_case(rng, case, dtype):
    """``(probs, target, kwargs)`` for one of LOG_LOSS_CASES, probabilities away from the clip."""
    n = 7
    if case in ("binary-1d", "binary-column", "binary-2d"):
        p = rng.uniform(0.05, 0.95, n)
        target = rng.permutation(np.arange(n) % 2) * 5 + 3  # labels 3 and 8
        probs = {"binary-1d": p, "binary-column": p[:, None], "binary-2d": np.stack([1 - p, p], 1)}[case]
        return probs.astype(dtype), target, {}
    probs = rng.uniform(0.05, 1.0, (n, 4))
    probs /= probs.sum(axis=1, keepdims=True)
    target = rng.permutation(np.arange(n) % 4)
    kw = {}
    if case == "strings":
        target = np.array(["cat", "cow", "dog", "emu"])[target]
    elif case == "labels":  # class 2 never occurs in the target
        target[target == 2] = 3
        kw["labels"] = [0, 1, 2, 3]
    elif case == "sample_weight":
        kw["sample_weight"] = rng.uniform(0.0, 2.0, n)
    elif case == "sum":
        kw["normalize"] = False
        kw["sample_weight"] = rng.uniform(0.0, 2.0, n)
    return probs.astype(dtype), target, kw


LOG_LOSS_CASES = ["binary-1d", "binary-column", "binary-2d", "multiclass", "strings", "labels", "sample_weight", "sum"]


@pytest.mark.parametrize("case", LOG_LOSS_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_log_loss_matches_sklearn_and_reference(rng, dtype, case):
    probs, target, kw = make_log_loss_case(rng, case, dtype)
    saved = snapshot(probs, target, *kw.values())

    loss = nbce.log_loss(probs, target, **kw)
    fused, grad = nbce.log_loss_with_grad(probs, target, **kw)

    assert_unchanged(saved)
    assert loss == fused and np.asarray(loss).dtype == dtype
    assert_close(loss, reference.log_loss(probs, target, **kw), dtype)
    assert grad.dtype == dtype and grad.shape == probs.shape
    assert_close(grad, reference.log_loss_grad(probs, target, **kw), dtype)
    metrics = pytest.importorskip("sklearn.metrics")
    np.testing.assert_allclose(loss, metrics.log_loss(target, probs, **kw), rtol=4 * np.finfo(dtype).eps)


@pytest.mark.filterwarnings("ignore:the rows of probs do not sum to one")  # perturbed rows
@pytest.mark.parametrize("case", ["binary-1d", "multiclass", "sum"])
def test_log_loss_gradient_is_the_finite_difference(rng, case):
    probs, target, kw = make_log_loss_case(rng, case, np.float64)
    _, grad = nbce.log_loss_with_grad(probs, target, **kw)
    h = 1e-7
    numeric = np.empty_like(probs)
    for i in np.ndindex(probs.shape):
        up, down = probs.copy(), probs.copy()
        up[i] += h
        down[i] -= h
        numeric[i] = (nbce.log_loss(up, target, **kw) - nbce.log_loss(down, target, **kw)) / (2 * h)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_loss_clips_at_the_dtype_eps(dtype):
    eps = np.finfo(dtype).eps
    probs = np.array([[0.0, 1.0], [1.0, 0.0], [eps / 2, 1 - eps / 2], [0.5, 0.5]], dtype)
    target = np.array([0, 1, 1, 0])
    loss, grad = nbce.log_loss_with_grad(probs, target, normalize=False)
    expected = 2 * -np.log(dtype(eps)) + -np.log(dtype(1 - eps)) + np.log(2.0)
    np.testing.assert_allclose(loss, expected, rtol=4 * eps)
    # the clip is active at every true class but the last: the gradient is 0 there
    np.testing.assert_array_equal(grad, np.array([[0, 0], [0, 0], [0, 0], [-2, 0]], dtype))
    metrics = pytest.importorskip("sklearn.metrics")
    np.testing.assert_allclose(loss, metrics.log_loss(target, probs, normalize=False), rtol=4 * eps)


def test_log_loss_binary_probs_are_of_the_larger_label(rng):
    p = np.array([0.9, 0.2, 0.7])
    loss, grad = nbce.log_loss_with_grad(p, ["yes", "no", "no"])  # "yes" > "no"
    np.testing.assert_allclose(loss, -np.log([0.9, 0.8, 0.3]).mean(), rtol=1e-15)
    np.testing.assert_allclose(grad, [-1 / 0.9, 1 / 0.8, 1 / 0.3] / np.float64(3), rtol=1e-15)


@pytest.mark.filterwarnings("ignore::UserWarning:sklearn")
def test_log_loss_warns_and_agrees_with_sklearn():
    metrics = pytest.importorskip("sklearn.metrics")
    # rows not summing to one are used as they are (scikit-learn >= 1.5)
    probs = np.array([[0.2, 0.5, 0.1], [0.3, 0.3, 0.3]])
    with pytest.warns(UserWarning, match="do not sum to one"):
        loss = nbce.log_loss(probs, [0, 2], labels=[0, 1, 2])
    np.testing.assert_allclose(loss, -np.log([0.2, 0.3]).mean(), rtol=1e-15)
    np.testing.assert_allclose(loss, metrics.log_loss([0, 2], probs, labels=[0, 1, 2]), rtol=1e-15)
    # labels out of order: the columns still follow the sorted labels
    probs = np.array([0.3, 0.6])
    with pytest.warns(UserWarning, match="sorted order"):
        loss = nbce.log_loss(probs, [0, 1], labels=[1, 0])
    np.testing.assert_allclose(loss, -np.log([0.7, 0.6]).mean(), rtol=1e-15)
    np.testing.assert_allclose(loss, metrics.log_loss([0, 1], probs, labels=[1, 0]), rtol=1e-15)


def test_log_loss_of_no_samples():
    assert np.isnan(nbce.log_loss(np.zeros((0, 2)), np.zeros(0, int), labels=[0, 1]))
    loss, grad = nbce.log_loss_with_grad(np.zeros(0), np.zeros(0, int), labels=[0, 1], normalize=False)
    assert loss == 0 and grad.shape == (0,)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(probs=np.array([0.5, 1.5, 0.5])), ValueError, "probs must be between 0 and 1, found 1.5"),
        (dict(probs=np.array([0.5, -0.1, 0.5])), ValueError, "probs must be between 0 and 1"),
        (dict(probs=np.array([0.5, np.nan, 0.5])), ValueError, "probs must be between 0 and 1"),
        (dict(probs=np.array([1, 0, 1])), TypeError, "probs must be float32 or float64"),
        (dict(probs=np.full((3, 2, 1), 0.5)), ValueError, "probs must be 1-D"),
        (dict(probs=np.full((3, 3), 1 / 3)), ValueError, "target names 2 classes .* but probs has 3 columns"),
        (dict(target=np.array([[0, 1, 1]])), ValueError, "target must be 1-D"),
        (dict(target=np.array([0, 1])), ValueError, "target has 2 samples but probs has 3"),
        (dict(target=np.array([1, 1, 1])), ValueError, "fewer than two labels"),
        (dict(target=np.array([0.0, 0.5, 1.0])), ValueError, "non-integer or non-finite floats"),
        (dict(target=np.array([0, 1, 2]), labels=[0, 1]), ValueError, r"labels \[2\] that are not in labels"),
        (dict(target=np.array(["a", "b", "a"]), labels=[0, 1]), ValueError, "not in labels"),
        (dict(labels=[0, 1, 1]), ValueError, "distinct class labels"),
        (dict(labels=[1]), ValueError, "at least two classes"),
        (dict(labels=[0, 1, 2]), ValueError, r"labels names 3 classes \[0, 1, 2\] but probs has 2 columns \(binary\)"),
        (dict(sample_weight=[1.0, -1.0, 1.0]), ValueError, "sample_weight must be >= 0"),
        (dict(sample_weight=[1.0, np.nan, 1.0]), ValueError, "sample_weight must be finite"),
        (dict(sample_weight=[0.0, 0.0, 0.0]), ValueError, "at least one non-zero"),
        (dict(sample_weight=[1.0, 1.0]), ValueError, "sample_weight of shape"),
    ],
)
def test_log_loss_bad_input(kwargs, error, match):
    args = dict(probs=np.array([0.2, 0.7, 0.4]), target=np.array([0, 1, 0]))
    args.update(kwargs)
    probs, target = args.pop("probs"), args.pop("target")
    with pytest.raises(error, match=match):
        nbce.log_loss_with_grad(probs, target, **args)
