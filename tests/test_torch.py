"""nbce against torch.nn.functional: loss values and autograd gradients."""

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from conftest import DTYPES, REDUCTIONS, assert_close, make_options, make_problem  # noqa: E402

import nbce  # noqa: E402

TARGETS = {"index": ("index", False), "index-ignore": ("index", True), "soft": ("soft", False)}


def torch_loss_and_grad(torch_loss, logits, target, weight=None, **kwargs):
    """``torch_loss``'s value and d(sum of it)/d(logits), as NumPy arrays."""
    x = torch.tensor(np.ascontiguousarray(logits), requires_grad=True)  # torch's backward needs contiguous input
    if weight is not None:
        kwargs["weight"] = torch.tensor(weight, dtype=x.dtype)
    loss = torch_loss(x, torch.tensor(np.array(target)), **kwargs)
    loss.sum().backward()
    return loss.detach().numpy(), x.grad.numpy()


@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", ["2d", "4d", "1d"])
@pytest.mark.parametrize("target_case", TARGETS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy(rng, dtype, target_case, layout, reduction, weighted, label_smoothing):
    kind, ignore = TARGETS[target_case]
    logits, target, axis = make_problem(rng, layout, kind, dtype)
    kw = make_options(rng, target, weighted, ignore, reduction=reduction, label_smoothing=label_smoothing)

    loss, grad = nbce.cross_entropy_with_grad(logits, target, axis=axis, **kw)
    expected_loss, expected_grad = torch_loss_and_grad(F.cross_entropy, logits, target, **kw)

    assert_close(loss, expected_loss, dtype)
    assert_close(grad, expected_grad, dtype)


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", ["2d", "4d"])
@pytest.mark.parametrize("ignore", [False, True], ids=["keep-all", "ignore-a-class"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nll_loss(rng, dtype, ignore, layout, reduction, weighted):
    logits, labels, axis = make_problem(rng, layout, "index", dtype)
    log_probs = nbce.log_softmax(logits, axis=axis)
    kw = make_options(rng, labels, weighted, ignore, reduction=reduction)
    expected, _ = torch_loss_and_grad(F.nll_loss, log_probs, labels, **kw)
    assert_close(nbce.nll_loss(log_probs, labels, axis=axis, **kw), expected, dtype)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("dtype", DTYPES)
def test_all_rows_ignored(rng, dtype, label_smoothing):
    logits, labels, _ = make_problem(rng, "2d", "index", dtype)
    labels[:] = 3
    kw = dict(ignore_index=3, weight=np.arange(1.0, 6.0), label_smoothing=label_smoothing)

    loss, grad = nbce.cross_entropy_with_grad(logits, labels, **kw)
    expected_loss, expected_grad = torch_loss_and_grad(F.cross_entropy, logits, labels, **kw)

    assert np.isnan(loss) and np.isnan(expected_loss)
    np.testing.assert_array_equal(grad, expected_grad)
    assert np.isnan(nbce.nll_loss(logits, labels, ignore_index=3))


@pytest.mark.parametrize("dtype", DTYPES)
def test_minus_inf_logits(rng, dtype):
    # where PyTorch is well defined: -inf off the target of non-ignored rows
    logits, labels, _ = make_problem(rng, "2d", "index", dtype)
    logits[labels != 1, 1] = -np.inf
    loss, grad = nbce.cross_entropy_with_grad(logits, labels, reduction="none")
    expected_loss, expected_grad = torch_loss_and_grad(F.cross_entropy, logits, labels, reduction="none")
    assert_close(loss, expected_loss, dtype)
    assert_close(grad, expected_grad, dtype)


@pytest.mark.parametrize("pos_weight", [False, True], ids=["", "pos_weight"])
@pytest.mark.parametrize("weight", [False, True], ids=["", "weight"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_with_logits(rng, dtype, reduction, weight, pos_weight):
    x = (5 * rng.standard_normal((4, 3, 5))).astype(dtype)
    x[0, 0, :2] = [1e4, -1e4]
    t = rng.uniform(0, 1, x.shape).astype(dtype)
    t[1] = rng.integers(0, 2, t[1].shape)
    kw = {}
    if weight:
        kw["weight"] = rng.uniform(0.5, 2.0, (4, 1, 5)).astype(dtype)
    if pos_weight:
        kw["pos_weight"] = rng.uniform(0.5, 3.0, 5).astype(dtype)

    loss, grad = nbce.binary_cross_entropy_with_logits_with_grad(x, t, reduction=reduction, **kw)
    xt = torch.tensor(x, requires_grad=True)
    expected = F.binary_cross_entropy_with_logits(
        xt, torch.tensor(t), reduction=reduction, **{k: torch.tensor(v) for k, v in kw.items()}
    )
    expected.sum().backward()

    assert_close(loss, expected.detach().numpy(), dtype)
    assert_close(grad, xt.grad.numpy(), dtype)


def torch_cross_entropy_with_options(x, target, *, weight=None, ignore_index=-100, reduction="mean",
                                     label_smoothing=0.0, sample_weight=None, z_loss=0.0, softcap=None):
    """The same loss written with torch operations, as a user would: softcap,
    per-row losses times the row weights, z-loss on the capped logits."""
    if softcap is not None:
        x = softcap * torch.tanh(x / softcap)
    rows = F.cross_entropy(x, target, weight=weight, ignore_index=ignore_index, reduction="none",
                           label_smoothing=label_smoothing)
    s = torch.ones_like(rows) if sample_weight is None else torch.as_tensor(sample_weight, dtype=x.dtype)
    kept = target != ignore_index
    row_weight = s * (weight[torch.where(kept, target, 0)] if weight is not None else 1.0) * kept
    losses = s * rows + z_loss * row_weight * torch.logsumexp(x, dim=1) ** 2
    if reduction == "none":
        return losses
    return losses.sum() / row_weight.sum() if reduction == "mean" else losses.sum()


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_options_against_torch_formulas(rng, dtype, reduction):
    logits, target, axis = make_problem(rng, "2d", "index", dtype)
    kw = make_options(rng, target, weighted=True, ignore=True, reduction=reduction, label_smoothing=0.1)
    kw.update(sample_weight=rng.uniform(0, 2, len(target)), z_loss=0.02, softcap=2.0)

    loss, grad = nbce.cross_entropy_with_grad(logits, target, **kw)
    expected_loss, expected_grad = torch_loss_and_grad(torch_cross_entropy_with_options, logits, target, **kw)

    assert_close(loss, expected_loss, dtype)
    assert_close(grad, expected_grad, dtype)
