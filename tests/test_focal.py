"""sigmoid_focal_loss, softmax_focal_loss and their gradient twins against the
float64 reference, finite differences, the cross-entropies they reduce to at
gamma = 0, and PyTorch (torchvision when installed)."""

import numpy as np
import pytest
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
    make_weight,
    numerical_grad,
    snapshot,
)

import nbce
from nbce import reference

# (logits shape) per layout of the elementwise sigmoid loss; "strided" is a
# non-contiguous view of that shape
SIGMOID_LAYOUTS = {"2d": (6, 5), "1d": (5,), "4d": (2, 5, 3, 2), "0d": (), "strided": (6, 5)}
ALPHAS = {"alpha": 0.25, "alpha-high": 0.9, "no-alpha": None}
GAMMAS = [2.0, 0.5]


def make_binary_target(rng, shape, dtype):
    """Hard (0 or 1) and soft targets mixed."""
    t = rng.uniform(0, 1, shape)
    t[t < 0.3] = 0.0
    t[t > 0.7] = 1.0
    return t.astype(dtype)


def make_sigmoid_case(rng, layout, dtype):
    if layout == "strided":
        # transposed views with step 2: neither C- nor F-contiguous
        return make_logits(rng, (5, 12), dtype)[:, ::2].T, make_binary_target(rng, (5, 12), dtype)[:, ::2].T
    shape = SIGMOID_LAYOUTS[layout]
    return make_logits(rng, shape, dtype), make_binary_target(rng, shape, dtype)


# --- sigmoid focal loss ----------------------------------------------------------


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", SIGMOID_LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_matches_reference(rng, dtype, layout, reduction, alpha, gamma):
    x, t = make_sigmoid_case(rng, layout, dtype)
    kw = dict(alpha=ALPHAS[alpha], gamma=gamma, reduction=reduction)
    saved = snapshot(x, t)

    loss = nbce.sigmoid_focal_loss(x, t, **kw)
    fused, grad = nbce.sigmoid_focal_loss_with_grad(x, t, **kw)

    assert_unchanged(saved)
    expected = reference.sigmoid_focal_loss(x, t, **kw)
    for value in (loss, fused):
        assert np.asarray(value).dtype == dtype
        assert_close(value, expected, dtype)
    assert grad.dtype == dtype and grad.shape == x.shape
    assert_close(grad, reference.sigmoid_focal_loss_grad(x, t, **kw), dtype)


def test_sigmoid_default_is_torchvision():
    # torchvision.ops.sigmoid_focal_loss(x, t) == alpha 0.25, gamma 2, no reduction
    x, t = np.array([[1.5, -0.5], [-2.0, 0.25]]), np.array([[1.0, 0.0], [1.0, 0.5]])
    expected = reference.sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0, reduction="none")
    assert_close(nbce.sigmoid_focal_loss(x, t), expected, np.float64)
    assert_close(nbce.sigmoid_focal_loss(x, t, alpha=-1), reference.sigmoid_focal_loss(x, t, alpha=None), np.float64)


@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_sigmoid_gradient_is_the_finite_difference(rng, reduction, gamma):
    x = make_logits(rng, (3, 4), np.float64)
    t = make_binary_target(rng, (3, 4), np.float64)
    kw = dict(alpha=0.3, gamma=gamma, reduction=reduction)
    _, grad = nbce.sigmoid_focal_loss_with_grad(x, t, **kw)
    numeric = numerical_grad(lambda v: np.sum(nbce.sigmoid_focal_loss(v, t, **kw)), x)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_gamma_zero_is_bce_with_logits(rng, dtype, reduction):
    x, t = make_sigmoid_case(rng, "2d", dtype)
    loss, grad = nbce.sigmoid_focal_loss_with_grad(x, t, alpha=None, gamma=0.0, reduction=reduction)
    bce, bce_grad = nbce.binary_cross_entropy_with_logits_with_grad(x, t, reduction=reduction)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(loss, bce, rtol=4 * eps, atol=4 * eps)
    np.testing.assert_allclose(grad, bce_grad, rtol=4 * eps, atol=4 * eps)


@pytest.mark.parametrize("gamma", [0.25, 2.0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_confident_predictions(dtype, gamma):
    # right and wrong with |x| = 1e4: exact 0 and |x| alpha_t; right with
    # (1 - p_t) far below the precision of p_t (and gamma < 1, where
    # (1 - p_t)**(gamma - 1) alone overflows): as the reference
    x = np.array([1e4, -1e4, 1e4, -1e4, 12.0, -12.0, 25.0], dtype)
    t = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0], dtype)
    kw = dict(alpha=0.25, gamma=gamma, reduction="none")
    loss, grad = nbce.sigmoid_focal_loss_with_grad(x, t, **kw)
    np.testing.assert_array_equal(loss[:4], np.array([0.0, 0.0, 0.75e4, 0.25e4], dtype))
    np.testing.assert_array_equal(grad[:4], np.array([0.0, 0.0, 0.75, -0.25], dtype))
    assert np.all(loss[4:] > 0)  # e**(-|x| (1 + gamma)): still normal numbers in float32
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    moderate = slice(4, None)  # where the textbook gradient of the reference has no 0 * inf
    np.testing.assert_allclose(loss[moderate], reference.sigmoid_focal_loss(x[moderate], t[moderate], **kw), rtol=rtol)
    expected_grad = reference.sigmoid_focal_loss_grad(x[moderate], t[moderate], **kw)
    np.testing.assert_allclose(grad[moderate], expected_grad, rtol=rtol)


def test_sigmoid_in_place_and_out(rng):
    x, t = make_logits(rng, (64, 33), np.float32), make_binary_target(rng, (64, 33), np.float32)
    expected_loss, expected_grad = nbce.sigmoid_focal_loss_with_grad(x, t, reduction="sum")
    out = np.empty_like(x)
    loss, grad = nbce.sigmoid_focal_loss_with_grad(x, t, reduction="sum", out=out)
    assert grad is out and loss == expected_loss
    np.testing.assert_array_equal(out, expected_grad)
    loss, grad = nbce.sigmoid_focal_loss_with_grad(x, t, reduction="sum", out=x)
    assert grad is x and loss == expected_loss
    np.testing.assert_array_equal(x, expected_grad)


def test_sigmoid_large_input_uses_every_thread(rng):
    x, t = make_logits(rng, (300, 700), np.float32), make_binary_target(rng, (300, 700), np.float32)
    loss, grad = nbce.sigmoid_focal_loss_with_grad(x, t, gamma=1.5)
    assert_close(loss, reference.sigmoid_focal_loss(x, t, gamma=1.5), np.float32)
    assert_close(grad, reference.sigmoid_focal_loss_grad(x, t, gamma=1.5), np.float32)


def test_sigmoid_empty():
    x = np.zeros((2, 0))
    assert np.isnan(nbce.sigmoid_focal_loss(x, x, reduction="mean"))
    assert nbce.sigmoid_focal_loss(x, x, reduction="sum") == 0.0
    loss, grad = nbce.sigmoid_focal_loss_with_grad(x, x)
    assert loss.shape == grad.shape == (2, 0)


# --- softmax focal loss ----------------------------------------------------------


@pytest.mark.parametrize("gamma", GAMMAS)
@pytest.mark.parametrize("ignore", [False, True], ids=["keep-all", "ignore"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_matches_reference(rng, dtype, layout, reduction, weighted, ignore, gamma):
    logits, target, axis = make_problem(rng, layout, "index", dtype)
    kw = make_options(rng, target, weighted, ignore, axis=axis, reduction=reduction, gamma=gamma)
    saved = snapshot(logits, target, kw.get("weight"))

    loss = nbce.softmax_focal_loss(logits, target, **kw)
    fused, grad = nbce.softmax_focal_loss_with_grad(logits, target, **kw)

    assert_unchanged(saved)
    expected = reference.softmax_focal_loss(logits, target, **kw)
    for value in (loss, fused):
        assert value.dtype == dtype
        assert_close(value, expected, dtype)
    assert grad.dtype == dtype and grad.shape == logits.shape
    assert_close(grad, reference.softmax_focal_loss_grad(logits, target, **kw), dtype)


FD_CASES = {
    "2d-none": ("2d", dict(reduction="none")),
    "2d-mean-weighted-ignore": ("2d", dict(weighted=True, ignore=True, reduction="mean")),
    "1d-sum": ("1d", dict(reduction="sum")),
    "4d-axis1-mean-weighted": ("4d", dict(weighted=True, ignore=True, reduction="mean")),
}


@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.5])
@pytest.mark.parametrize("case", FD_CASES)
def test_softmax_gradient_is_the_finite_difference(rng, case, gamma):
    layout, opts = FD_CASES[case]
    logits, target, axis = make_problem(rng, layout, "index", np.float64)
    kw = make_options(rng, target, axis=axis, gamma=gamma, **opts)
    _, grad = nbce.softmax_focal_loss_with_grad(logits, target, **kw)
    numeric = numerical_grad(lambda x: np.sum(nbce.softmax_focal_loss(x, target, **kw)), logits)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("ignore", [False, True], ids=["keep-all", "ignore"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_gamma_zero_is_cross_entropy(rng, dtype, reduction, weighted, ignore):
    logits, target, axis = make_problem(rng, "4d", "index", dtype)
    kw = make_options(rng, target, weighted, ignore, axis=axis, reduction=reduction)
    loss, grad = nbce.softmax_focal_loss_with_grad(logits, target, gamma=0.0, **kw)
    ce, ce_grad = nbce.cross_entropy_with_grad(logits, target, **kw)
    np.testing.assert_array_equal(loss, ce, strict=True)
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(grad, ce_grad, rtol=4 * eps, atol=4 * eps)


# rows of flat runs (<= FLAT_BYTES: 64 float64, 128 float32 classes) and longer rows
@pytest.mark.parametrize("n_classes", [21, 64, 65, 128, 129, 300])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_gamma_zero_is_cross_entropy_in_longer_rows(rng, dtype, n_classes):
    logits = (3 * rng.standard_normal((40, n_classes))).astype(dtype)
    target = rng.integers(0, n_classes, 40)
    loss = nbce.softmax_focal_loss(logits, target, gamma=0.0, reduction="none")
    np.testing.assert_array_equal(loss, nbce.cross_entropy(logits, target, reduction="none"), strict=True)


@pytest.mark.parametrize("gamma", [0.25, 0.5, 2.0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_confident_predictions(dtype, gamma):
    # p_y = 1 exactly: loss and gradient exactly 0; p_y = 1 - 4e-9 (float64) /
    # 1 - 1e-4 (float32) with gamma < 1, where (1 - p_y)**(gamma - 1) is large
    shift = 20.0 if dtype == np.float64 else 10.0
    logits = np.array([[0.0, -1e4, -1e4], [0.0, -shift, -shift], [-shift, 0.0, -shift]], dtype)
    labels = np.array([0, 0, 1])
    kw = dict(gamma=gamma, reduction="none")
    loss, grad = nbce.softmax_focal_loss_with_grad(logits, labels, **kw)
    assert loss[0] == 0 and np.all(grad[0] == 0)
    assert np.all(loss[1:] > 0)
    # rows 1 and 2 only: the textbook gradient of the reference is 0 * inf at p_y = 1
    assert_close(loss[1:], reference.softmax_focal_loss(logits[1:], labels[1:], **kw), dtype)
    assert_close(grad[1:], reference.softmax_focal_loss_grad(logits[1:], labels[1:], **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_minus_inf_logits(rng, dtype):
    logits = make_logits(rng, (4, N_CLASSES), dtype)
    logits[0, 1] = -np.inf  # at the target: loss +inf, gradient finite
    logits[1:, 2] = -np.inf  # off the target: finite, gradient 0 there
    labels = np.array([1, 0, 3, 4])
    kw = dict(gamma=0.5, weight=make_weight(rng, N_CLASSES), reduction="none")
    loss, grad = nbce.softmax_focal_loss_with_grad(logits, labels, **kw)
    assert loss[0] == np.inf
    assert np.all(np.isfinite(loss[1:])) and np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[1:, 2], 0)
    assert_close(loss[1:], reference.softmax_focal_loss(logits, labels, **kw)[1:], dtype)
    assert_close(grad, reference.softmax_focal_loss_grad(logits, labels, **kw), dtype)


@pytest.mark.parametrize("bad_row", [[np.nan, 0.0, 1.0, 2.0, 3.0], [0.0, np.inf, 1.0, 2.0, 3.0], [-np.inf] * 5])
def test_softmax_non_finite_rows(rng, bad_row):
    logits = make_logits(rng, (4, N_CLASSES), np.float64)
    logits[1] = bad_row  # labelled: NaN loss there only
    logits[2] = bad_row  # ignored: exactly 0
    labels = np.array([0, 2, -100, 4])
    loss, grad = nbce.softmax_focal_loss_with_grad(logits, labels, reduction="none")
    assert np.isnan(loss[1]) and loss[2] == 0
    np.testing.assert_array_equal(grad[2], 0)
    good = [0, 3]
    kw = dict(reduction="none")
    assert_close(loss[good], reference.softmax_focal_loss(logits[good], labels[good], **kw), np.float64)
    assert_close(grad[good], reference.softmax_focal_loss_grad(logits[good], labels[good], **kw), np.float64)


def test_softmax_all_ignored_single_class_and_empty(rng):
    logits = make_logits(rng, (3, N_CLASSES), np.float32)
    loss, grad = nbce.softmax_focal_loss_with_grad(logits, np.full(3, -100))
    assert np.isnan(loss) and loss.dtype == np.float32
    np.testing.assert_array_equal(grad, 0)
    loss, grad = nbce.softmax_focal_loss_with_grad(make_logits(rng, (3, 1), np.float32), np.zeros(3, int), gamma=0.5)
    assert np.all(loss == 0) and not np.signbit(loss) and np.all(grad == 0)
    empty = np.empty((0, N_CLASSES))
    assert np.isnan(nbce.softmax_focal_loss(empty, np.empty(0, int)))
    assert nbce.softmax_focal_loss(empty, np.empty(0, int), reduction="sum") == 0
    assert nbce.softmax_focal_loss(empty, np.empty(0, int), reduction="none").shape == (0,)


@pytest.mark.parametrize("layout", ["2d", "4d"])
def test_softmax_in_place_and_out(rng, layout):
    logits, target, axis = make_problem(rng, layout, "index", np.float32)
    kw = dict(axis=axis, weight=make_weight(rng, N_CLASSES), gamma=1.5)
    expected_loss, expected_grad = nbce.softmax_focal_loss_with_grad(logits, target, **kw)
    out = np.empty(logits.shape, logits.dtype, order="F")
    loss, grad = nbce.softmax_focal_loss_with_grad(logits, target, out=out, **kw)
    assert grad is out and loss == expected_loss
    np.testing.assert_array_equal(out, expected_grad)
    loss, grad = nbce.softmax_focal_loss_with_grad(logits, target, out=logits, **kw)
    assert grad is logits and loss == expected_loss
    np.testing.assert_array_equal(logits, expected_grad)


def test_softmax_large_batch_uses_every_thread(rng):
    logits = make_logits(rng, (300, 700), np.float32)
    target = rng.integers(0, 700, 300)
    target[::7] = -100
    kw = dict(weight=make_weight(rng, 700), gamma=2.0)
    loss, grad = nbce.softmax_focal_loss_with_grad(logits, target, **kw)
    assert_close(loss, reference.softmax_focal_loss(logits, target, **kw), np.float32)
    assert_close(grad, reference.softmax_focal_loss_grad(logits, target, **kw), np.float32)
    small_loss, small_grad = nbce.softmax_focal_loss_with_grad(logits[:3], target[:3], reduction="none", **kw)
    all_loss, all_grad = nbce.softmax_focal_loss_with_grad(logits, target, reduction="none", **kw)
    np.testing.assert_array_equal(small_loss, all_loss[:3])
    np.testing.assert_array_equal(small_grad, all_grad[:3])


# --- half precisions ------------------------------------------------------------


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_precision_is_float32_of_the_same_values(rng, half):
    dtype = np.dtype(np.float16) if half == "float16" else np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    x = make_logits(rng, (6, N_CLASSES), np.float32).astype(dtype)
    x32 = x.astype(np.float32)
    t = make_binary_target(rng, x.shape, np.float32)
    labels = rng.integers(0, N_CLASSES, 6)
    cases = [
        (nbce.sigmoid_focal_loss_with_grad, t, dict(reduction="none")),
        (nbce.softmax_focal_loss_with_grad, labels, dict(gamma=0.5, ignore_index=int(labels[0]))),
    ]
    for func, target, kw in cases:
        loss, grad = func(x, target, **kw)
        expected_loss, expected_grad = func(x32, target, **kw)
        assert np.asarray(loss).dtype == np.float32 and grad.dtype == dtype
        np.testing.assert_array_equal(loss, expected_loss)
        np.testing.assert_array_equal(grad, expected_grad.astype(dtype))
        out = np.empty_like(x)
        assert func(x, target, out=out, **kw)[1] is out
        np.testing.assert_array_equal(out, grad)


# --- PyTorch ----------------------------------------------------------------------


def torch_sigmoid_focal(torch, x, t, alpha, gamma):
    """torchvision.ops.sigmoid_focal_loss without reduction, written in torch."""
    p = torch.sigmoid(x)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None and alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss


def torch_softmax_focal(torch, x, y, axis, gamma, weight, ignore_index):
    """Per-row softmax focal loss, written in torch (0 for ignored rows)."""
    kept = y != ignore_index
    safe = torch.where(kept, y, 0)
    log_p_y = torch.log_softmax(x, dim=axis).gather(axis, safe.unsqueeze(axis)).squeeze(axis)
    w_y = torch.ones_like(log_p_y) if weight is None else torch.tensor(weight, dtype=x.dtype)[safe]
    w_y = torch.where(kept, w_y, 0)
    return -w_y * (1 - log_p_y.exp()) ** gamma * log_p_y, w_y


@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_against_torch(rng, dtype, reduction, gamma):
    torch = pytest.importorskip("torch")
    x, t = make_sigmoid_case(rng, "4d", dtype)
    xt = torch.tensor(x, requires_grad=True)
    losses = torch_sigmoid_focal(torch, xt, torch.tensor(t), 0.25, gamma)
    expected = {"none": losses, "sum": losses.sum(), "mean": losses.mean()}[reduction]
    expected.sum().backward()

    loss, grad = nbce.sigmoid_focal_loss_with_grad(x, t, gamma=gamma, reduction=reduction)

    assert_close(loss, expected.detach().numpy(), dtype)
    assert_close(grad, xt.grad.numpy(), dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_against_torchvision(rng, dtype, reduction):
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    x, t = make_sigmoid_case(rng, "2d", dtype)
    xt = torch.tensor(x, requires_grad=True)
    expected = ops.sigmoid_focal_loss(xt, torch.tensor(t), reduction=reduction)
    expected.sum().backward()
    loss, grad = nbce.sigmoid_focal_loss_with_grad(x, t, reduction=reduction)
    assert_close(loss, expected.detach().numpy(), dtype)
    assert_close(grad, xt.grad.numpy(), dtype)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", ["2d", "4d"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_against_torch_autograd(rng, dtype, layout, reduction, gamma):
    torch = pytest.importorskip("torch")
    logits, target, axis = make_problem(rng, layout, "index", dtype)
    kw = make_options(rng, target, True, True, axis=axis, gamma=gamma)
    xt = torch.tensor(logits, requires_grad=True)
    losses, w_y = torch_softmax_focal(torch, xt, torch.tensor(target), axis, gamma, kw["weight"], kw["ignore_index"])
    expected = {"none": losses, "sum": losses.sum(), "mean": losses.sum() / w_y.sum()}[reduction]
    expected.sum().backward()

    loss, grad = nbce.softmax_focal_loss_with_grad(logits, target, reduction=reduction, **kw)

    assert_close(loss, expected.detach().numpy(), dtype)
    assert_close(grad, xt.grad.numpy(), dtype)


# --- bad input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(gamma=-0.5), ValueError, "gamma must be finite and >= 0"),
        (dict(gamma=np.nan), ValueError, "gamma must be finite and >= 0"),
        (dict(gamma=np.inf), ValueError, "gamma must be finite and >= 0"),
        (dict(gamma="two"), TypeError, "gamma must be a real number"),
        (dict(alpha=1.5), ValueError, "alpha must be in"),
        (dict(alpha=np.nan), ValueError, "alpha must be in"),
        (dict(alpha="a"), TypeError, "alpha must be a real number"),
        (dict(logits=np.zeros(3, int)), TypeError, "logits must be float32 or float64"),
        (dict(target=np.zeros(3, int)), TypeError, "target must hold float probabilities"),
        (dict(target=np.zeros(4)), ValueError, "target shape"),
        (dict(target=np.array([0.0, 1.5, 1.0])), ValueError, "target must be between 0 and 1, found 1.5"),
        (dict(target=np.array([0.0, -0.5, 1.0])), ValueError, "target must be between 0 and 1, found -0.5"),
        (dict(target=np.array([0.0, np.nan, 1.0])), ValueError, "target must be between 0 and 1, found nan"),
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
        (dict(out=np.zeros(4)), ValueError, "out must have the shape"),
    ],
)
def test_sigmoid_bad_input(kwargs, error, match):
    args = dict(logits=np.zeros(3), target=np.zeros(3))
    args.update(kwargs)
    logits, target = args.pop("logits"), args.pop("target")
    saved = snapshot(logits, target)
    funcs = [nbce.sigmoid_focal_loss_with_grad]
    if "out" not in args:
        funcs.append(nbce.sigmoid_focal_loss)
    for func in funcs:
        with pytest.raises(error, match=match):
            func(logits, target, **args)
    assert_unchanged(saved)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(gamma=-1.0), ValueError, "gamma must be finite and >= 0"),
        (dict(gamma=np.nan), ValueError, "gamma must be finite and >= 0"),
        (dict(target=np.array([0, 5, 1])), IndexError, "target 5 is out of bounds for 5 classes"),
        (dict(target=np.array([0, -1, 1])), IndexError, "target -1 is out of bounds"),
        (dict(target=np.array([0.0, 1.0, 1.0])), TypeError, "class indices must be integers"),
        (dict(target=np.full((3, 5), 0.2)), TypeError, "needs integer class indices"),
        (dict(target=np.array([0, 1])), ValueError, "class-index target must have shape"),
        (dict(logits=np.zeros((3, 5), int)), TypeError, "logits must be float32 or float64"),
        (dict(weight=np.ones(4)), ValueError, "weight must have shape"),
        (dict(weight=np.array([1.0, np.nan, 1.0, 1.0, 1.0])), ValueError, "weight must be finite"),
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
    ],
)
def test_softmax_bad_input(kwargs, error, match):
    args = dict(logits=np.zeros((3, 5)), target=np.array([0, 4, 1]))
    args.update(kwargs)
    logits, target = args.pop("logits"), args.pop("target")
    saved = snapshot(logits, target)
    for func in (nbce.softmax_focal_loss, nbce.softmax_focal_loss_with_grad):
        with pytest.raises(error, match=match):
            func(logits, target, **args)
    assert_unchanged(saved)
