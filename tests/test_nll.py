"""nll_loss against the reference, and its relation to log_softmax and cross_entropy."""

import numpy as np
import pytest
from conftest import DTYPES, LAYOUTS, REDUCTIONS, assert_close, assert_unchanged, make_options, make_problem, snapshot

import nbce
from nbce import reference


@pytest.mark.parametrize("ignore", [False, True], ids=["keep-all", "ignore-a-class"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference(rng, dtype, layout, reduction, weighted, ignore):
    logits, labels, axis = make_problem(rng, layout, "index", dtype)
    log_probs = nbce.log_softmax(logits, axis=axis)
    kw = make_options(rng, labels, weighted, ignore, axis=axis, reduction=reduction)
    saved = snapshot(log_probs, labels, kw.get("weight"))

    loss = nbce.nll_loss(log_probs, labels, **kw)

    assert_unchanged(saved)
    assert loss.dtype == dtype
    assert_close(loss, reference.nll_loss(log_probs, labels, **kw), dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_is_minus_the_picked_log_probability(rng, dtype, layout):
    logits, labels, axis = make_problem(rng, layout, "index", dtype)
    log_probs = nbce.log_softmax(logits, axis=axis)
    picked = np.take_along_axis(log_probs, np.expand_dims(labels, axis), axis).squeeze(axis)
    np.testing.assert_array_equal(nbce.nll_loss(log_probs, labels, axis=axis, reduction="none"), -picked, strict=True)


@pytest.mark.parametrize("ignore", [False, True], ids=["keep-all", "ignore-a-class"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", ["2d", "4d"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_is_nll_of_log_softmax(rng, dtype, layout, reduction, weighted, ignore):
    logits, labels, axis = make_problem(rng, layout, "index", dtype)
    kw = make_options(rng, labels, weighted, ignore, axis=axis, reduction=reduction)
    expected = nbce.nll_loss(nbce.log_softmax(logits, axis=axis), labels, **kw)
    assert_close(nbce.cross_entropy(logits, labels, **kw), expected.astype(np.float64), dtype)
