"""The cross-entropy options beyond PyTorch's: sample weights, z-loss, softcap,
and the extra outputs (log-sum-exp, z-loss part, predicted class)."""

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
    numerical_grad,
    snapshot,
)
from scipy.special import logsumexp as scipy_logsumexp

import nbce
from nbce import reference

TARGETS = {"index": ("index", False), "index-ignore": ("index", True), "soft": ("soft", False)}


def batch_shape(logits, axis):
    return np.delete(np.array(logits.shape), axis).tolist()


def make_extra_options(rng, logits, axis, options):
    """Keyword arguments for the option set named ``options``."""
    kw = {}
    if options in ("sample_weight", "all"):
        kw["sample_weight"] = rng.uniform(0.0, 2.0, batch_shape(logits, axis))
    if options in ("z_loss", "all"):
        kw["z_loss"] = 0.05
    if options in ("softcap", "all"):
        kw["softcap"] = 2.5  # well inside the logits' range (spread 3): the cap bends them
    return kw


OPTION_SETS = ["sample_weight", "z_loss", "softcap", "all"]


@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("target_case", TARGETS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference(rng, dtype, target_case, layout, reduction, options):
    kind, ignore = TARGETS[target_case]
    logits, target, axis = make_problem(rng, layout, kind, dtype)
    smoothing = 0.15 if options == "all" else 0.0
    kw = make_options(rng, target, options == "all", ignore, axis=axis, reduction=reduction, label_smoothing=smoothing)
    kw.update(make_extra_options(rng, logits, axis, options))
    saved = snapshot(logits, target, *kw.values())

    loss = nbce.cross_entropy(logits, target, **kw)
    fused, grad = nbce.cross_entropy_with_grad(logits, target, **kw)

    assert_unchanged(saved)
    expected = reference.cross_entropy(logits, target, **kw)
    for value in (loss, fused):
        assert value.dtype == dtype
        assert_close(value, expected, dtype)
    assert grad.dtype == dtype
    assert_close(grad, reference.cross_entropy_grad(logits, target, **kw), dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target_case", TARGETS)
def test_grad_matches_finite_differences(rng, target_case, reduction):
    kind, ignore = TARGETS[target_case]
    logits, target, axis = make_problem(rng, "4d", kind, np.float64)
    kw = make_options(rng, target, True, ignore, axis=axis, reduction=reduction, label_smoothing=0.2)
    kw.update(make_extra_options(rng, logits, axis, "all"))
    _, grad = nbce.cross_entropy_with_grad(logits, target, **kw)

    def total_loss(x):
        return np.sum(nbce.cross_entropy(x, target, **kw))

    np.testing.assert_allclose(grad, numerical_grad(total_loss, logits), rtol=1e-6, atol=1e-8)


def test_reference_formulas_by_hand():
    # One row worked through the formulas, so that nbce and the reference
    # cannot share a mistake: logits [1, 2, 0], label 1, softcap 2, z 0.1,
    # sample weight 3.
    x = np.array([1.0, 2.0, 0.0])
    capped = 2 * np.tanh(x / 2)
    lse = np.log(np.exp(capped).sum())
    expected = 3 * (lse - capped[1]) + 0.1 * 3 * lse**2
    p = np.exp(capped - lse)
    expected_grad = (3 * (p - [0, 1, 0]) + 2 * 0.1 * 3 * lse * p) * (1 - np.tanh(x / 2) ** 2)
    kw = dict(softcap=2.0, z_loss=0.1, sample_weight=3.0, reduction="sum")
    loss, grad = nbce.cross_entropy_with_grad(x, np.array(1), **kw)
    np.testing.assert_allclose(loss, expected, rtol=1e-14)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sample_weights_are_per_row_weights(rng, dtype):
    # Equivalent to repeating rows: weight 2 = the row twice, weight 0 = dropped.
    logits = make_logits(rng, (4, N_CLASSES), dtype)
    target = rng.integers(0, N_CLASSES, 4)
    weight = np.array([2.0, 0.0, 1.0, 1.0])
    repeated = [0, 0, 2, 3]
    for reduction in ("mean", "sum"):
        loss, grad = nbce.cross_entropy_with_grad(logits, target, sample_weight=weight, reduction=reduction)
        expected = nbce.cross_entropy(logits[repeated], target[repeated], reduction=reduction)
        assert_close(loss, expected, dtype)
    _, grad = nbce.cross_entropy_with_grad(logits, target, sample_weight=weight, reduction="none")
    assert np.all(grad[1] == 0)


def test_sample_weight_broadcasts_over_the_batch(rng):
    logits, target, axis = make_problem(rng, "4d", "index", np.float64)  # batch shape (2, 3, 2)
    per_image = np.array([0.5, 2.0])[:, None, None]
    full = np.broadcast_to(per_image, (2, 3, 2))
    for reduction in REDUCTIONS:
        a = nbce.cross_entropy(logits, target, axis=axis, sample_weight=per_image, reduction=reduction)
        b = nbce.cross_entropy(logits, target, axis=axis, sample_weight=full, reduction=reduction)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_zero_sample_weights_give_nan_mean_and_zero_grad(rng, dtype):
    logits = make_logits(rng, (3, N_CLASSES), dtype)
    loss, grad = nbce.cross_entropy_with_grad(logits, np.array([0, 1, 2]), sample_weight=np.zeros(3))
    assert np.isnan(loss)
    np.testing.assert_array_equal(grad, 0)


@pytest.mark.parametrize("target_case", TARGETS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_extra_outputs(rng, dtype, target_case):
    kind, ignore = TARGETS[target_case]
    logits, target, axis = make_problem(rng, "4d", kind, dtype)
    kw = make_options(rng, target, True, ignore, axis=axis, softcap=4.0, z_loss=0.01)
    for reduction in REDUCTIONS:
        loss, lse, z_part, argmax = nbce.cross_entropy(
            logits, target, reduction=reduction, return_lse=True, return_z_loss=True, return_argmax=True, **kw
        )
        fused = nbce.cross_entropy_with_grad(
            logits, target, reduction=reduction, return_lse=True, return_z_loss=True, return_argmax=True, **kw
        )
        assert len(fused) == 5
        for mine, theirs in zip((loss, lse, z_part, argmax), fused[:1] + fused[2:]):
            np.testing.assert_array_equal(mine, theirs)

        capped = 4.0 * np.tanh(logits.astype(np.float64) / 4.0)
        assert lse.dtype == dtype and lse.shape == target.shape if kind == "index" else True
        # every row gets its log-sum-exp, ignored rows included
        assert_close(lse, scipy_logsumexp(capped, axis=axis), dtype)
        # the predicted class of the raw logits
        assert argmax.dtype == np.int64
        np.testing.assert_array_equal(argmax, np.argmax(logits, axis=axis))
        # the z-loss part is the difference the option makes, reduced the same way
        no_z = {k: v for k, v in kw.items() if k != "z_loss"}
        difference = reference.cross_entropy(logits, target, reduction=reduction, **kw) - reference.cross_entropy(
            logits, target, reduction=reduction, **no_z
        )
        assert_close(z_part, difference, dtype)
        assert_close(loss, reference.cross_entropy(logits, target, reduction=reduction, **kw), dtype)


def test_extra_outputs_come_in_a_fixed_order(rng):
    logits = make_logits(rng, (3, N_CLASSES), np.float64)
    target = np.array([0, 1, 2])
    loss, argmax = nbce.cross_entropy(logits, target, return_argmax=True)
    loss2, lse = nbce.cross_entropy(logits, target, return_lse=True)
    loss3, grad, z_part, argmax3 = nbce.cross_entropy_with_grad(logits, target, return_z_loss=True, return_argmax=True)
    assert loss == loss2 == loss3
    np.testing.assert_array_equal(argmax, argmax3)
    assert lse.shape == (3,) and grad.shape == logits.shape and z_part == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_argmax_follows_numpy_on_ties_nan_and_inf(dtype):
    logits = np.array(
        [
            [1.0, 3.0, 3.0, 0.0],  # a tie: the first
            [1.0, np.nan, 5.0, np.nan],  # NaN: the first NaN
            [-np.inf] * 4,  # all -inf: 0
            [0.0, np.inf, 1.0, np.inf],
        ],
        dtype,
    )
    wide = np.zeros((8, 3000), dtype)  # over several chunks of the search
    wide[0, 2999] = 1.0  # in the last, partial chunk
    wide[1, 1500] = np.nan
    wide[2, [700, 2000]] = 5.0  # a tie across chunks
    wide[3, 100], wide[3, 2500] = 9.0, np.nan  # a NaN after the max
    wide[4] = -np.inf
    wide[5, [10, 600]] = np.nan
    wide[6, [1100, 2900]] = np.inf
    wide[7, [511, 512]] = 2.0  # a tie on both sides of a chunk boundary
    for x in (logits, wide):
        _, argmax = nbce.cross_entropy(x, np.zeros(len(x), np.int64), reduction="none", return_argmax=True)
        np.testing.assert_array_equal(argmax, np.argmax(x, axis=-1))


def test_argmax_is_of_the_raw_logits_under_a_softcap():
    # both logits saturate to the cap in float64; the raw logits still differ
    logits = np.array([[100.0, 200.0, -5.0]])
    _, argmax = nbce.cross_entropy(logits, np.array([0]), softcap=1.0, return_argmax=True)
    assert argmax[0] == 1


@pytest.mark.parametrize("cap", [1.0, 30.0])
@pytest.mark.parametrize("dtype", DTYPES)
def test_softcap_matches_tanh_over_the_float_range(dtype, cap):
    # The vectorised softcap against cap * np.tanh(x / cap) in float64: large,
    # tiny (no cancellation), signed zeros, infinities and NaN. Checked
    # through the returned log-sum-exp of one-class rows, which is the capped
    # logit itself.
    info = np.finfo(dtype)
    magnitudes = np.concatenate([np.geomspace(info.tiny, 50.0 * cap, 20_000), np.linspace(0.0, 12.0 * cap, 20_000)])
    x = np.concatenate([magnitudes, -magnitudes, [np.inf, -np.inf, 0.0, -0.0]]).astype(dtype)
    _, lse = nbce.cross_entropy(x[:, None], np.zeros(x.size, np.int64), softcap=cap, return_lse=True)
    expected = cap * np.tanh(x.astype(np.float64) / cap)
    rtol = {np.float32: 4.5e-7, np.float64: 5e-16}[dtype]
    np.testing.assert_allclose(lse, expected, rtol=rtol, atol=0)
    assert np.all(np.abs(lse) <= cap)  # capped logits never pass the cap
    nonzero = x != 0  # lse = max + log(1) turns -0.0 into +0.0
    np.testing.assert_array_equal(np.signbit(lse[nonzero]), np.signbit(x[nonzero]))
    _, lse_nan = nbce.cross_entropy(np.array([[np.nan]], dtype), np.array([0]), softcap=1.0, return_lse=True)
    assert np.isnan(lse_nan[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_softcap_keeps_minus_inf_logits_finite(dtype):
    # -inf becomes -cap: finite loss, finite gradient (0 at that class, since
    # tanh is flat there)
    logits = np.array([[0.0, -np.inf, 1.0]], dtype)
    loss, grad = nbce.cross_entropy_with_grad(logits, np.array([1]), softcap=3.0)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert grad[0, 1] == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_z_loss_with_a_single_class(dtype):
    # C = 1: the cross-entropy part is exactly 0, the z-loss part is z * x**2
    logits = np.array([[3.0], [-2.0]], dtype)
    loss, grad = nbce.cross_entropy_with_grad(logits, np.array([0, 0]), z_loss=0.5, reduction="none")
    np.testing.assert_allclose(loss, [4.5, 2.0], rtol=1e-6)
    np.testing.assert_allclose(grad, [[3.0], [-2.0]], rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_batch_rows_do_not_depend_on_batching(rng, dtype):
    # the threaded build, with every option, gives each row the bits the
    # serial build gives it
    n_rows, n_classes = 300, 700
    logits = make_logits(rng, (n_rows, n_classes), dtype)
    target = rng.integers(0, n_classes, n_rows)
    kw = dict(sample_weight=rng.uniform(0, 2, n_rows), z_loss=1e-3, softcap=5.0, reduction="none", return_lse=True)
    loss, grad, lse = nbce.cross_entropy_with_grad(logits, target, **kw)
    assert_close(loss, reference.cross_entropy(logits, target, **{k: v for k, v in kw.items() if k != "return_lse"}), dtype)
    for rows in (slice(0, 3), slice(290, 300)):
        small = nbce.cross_entropy_with_grad(logits[rows], target[rows], **{**kw, "sample_weight": kw["sample_weight"][rows]})
        for big, part in zip((loss, grad, lse), small):
            np.testing.assert_array_equal(part, big[rows])


BAD_OPTIONS = [
    (dict(z_loss=-0.1), ValueError, "z_loss"),
    (dict(z_loss=np.nan), ValueError, "z_loss"),
    (dict(z_loss=np.inf), ValueError, "z_loss"),
    (dict(softcap=0.0), ValueError, "softcap"),
    (dict(softcap=-1.0), ValueError, "softcap"),
    (dict(softcap=np.inf), ValueError, "softcap"),
    (dict(softcap=np.nan), ValueError, "softcap"),
    (dict(sample_weight=[1.0, -1.0, 1.0]), ValueError, ">= 0"),
    (dict(sample_weight=[1.0, np.nan, 1.0]), ValueError, "finite"),
    (dict(sample_weight=[1.0, np.inf, 1.0]), ValueError, "finite"),
    (dict(sample_weight=[1.0, 1.0]), ValueError, "broadcast"),
    (dict(sample_weight=["a", "b", "c"]), TypeError, "real numbers"),
]


@pytest.mark.parametrize("function", [nbce.cross_entropy, nbce.cross_entropy_with_grad])
@pytest.mark.parametrize("kwargs, error, message", BAD_OPTIONS)
def test_bad_options_raise(rng, function, kwargs, error, message):
    logits = make_logits(rng, (3, N_CLASSES), np.float64)
    with pytest.raises(error, match=message):
        function(logits, np.array([0, 1, 2]), **kwargs)
