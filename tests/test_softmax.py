"""logsumexp, log_softmax and softmax against scipy.special."""

import numpy as np
import pytest
import scipy.special
from conftest import DTYPES, assert_unchanged, make_logits, read_only, snapshot

import nbce
from nbce import _cpu

FUNCTIONS = {
    "logsumexp": (nbce.logsumexp, scipy.special.logsumexp),
    "log_softmax": (nbce.log_softmax, scipy.special.log_softmax),
    "softmax": (nbce.softmax, scipy.special.softmax),
}
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
# log_softmax values near 0 (the row's dominant class) carry the absolute
# rounding error of log(sum(exp)), a few units of the dtype's epsilon.
ATOL = {dtype: 8 * np.finfo(dtype).eps for dtype in RTOL}


def scipy_result(name, x, axis=-1, **kwargs):
    """scipy.special's result in float64 (whose default axis is None, not -1).

    Rows with inf/NaN legitimately warn there.
    """
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        return FUNCTIONS[name][1](np.asarray(x, dtype=np.float64), axis=axis, **kwargs)


def assert_matches_scipy(name, x, dtype, axis=-1, **kwargs):
    got = FUNCTIONS[name][0](x, axis=axis, **kwargs)
    expected = scipy_result(name, x, axis=axis, **kwargs)
    assert np.asarray(got).dtype == dtype
    assert np.shape(got) == np.shape(expected)
    np.testing.assert_allclose(got, expected, rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("axis", [-1, 0, 1, (0, 2), (2, 1), None], ids=str)
@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_scipy(rng, dtype, name, axis):
    assert_matches_scipy(name, make_logits(rng, (3, 4, 5), dtype, spread=10.0), dtype, axis=axis)


@pytest.mark.parametrize("axis", [-1, 0, (0, 2), None], ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_keepdims(rng, dtype, axis):
    x = make_logits(rng, (3, 4, 5), dtype)
    assert_matches_scipy("logsumexp", x, dtype, axis=axis, keepdims=True)


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_1d_input(rng, dtype, name):
    assert_matches_scipy(name, make_logits(rng, 7, dtype), dtype)


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_large_input(rng, dtype, name):
    # Large enough for the multi-threaded path; each row must also come out
    # bit-identical when computed within a small batch.
    x = make_logits(rng, (300, 700), dtype)
    assert_matches_scipy(name, x, dtype)
    result = FUNCTIONS[name][0](x)
    for rows in (slice(0, 3), slice(150, 151), slice(290, 300)):
        np.testing.assert_array_equal(FUNCTIONS[name][0](x[rows]), result[rows])


def test_large_float32_softmax_computes_its_exps_twice(rng):
    # Rows of SOFTMAX_TWICE_ROW_BYTES and more in a float32 array of
    # STREAM_MIN_BYTES compute each exp again rather than store it: the same
    # bits as a small batch of the same rows (whose exps are stored), special
    # rows included, and scipy's values.
    C = _cpu.SOFTMAX_TWICE_ROW_BYTES // 4 + 5
    N = -(-_cpu.STREAM_MIN_BYTES // (4 * C))
    x = make_logits(rng, (N, C), np.float32)
    x[1, 7], x[2, C - 1], x[3], x[4, C - 2] = np.nan, np.inf, -np.inf, 1000.0  # the last overflows its head's shift
    assert x.nbytes >= _cpu.STREAM_MIN_BYTES
    got = nbce.softmax(x)
    np.testing.assert_allclose(got, scipy_result("softmax", x), rtol=RTOL[np.float32], atol=ATOL[np.float32])
    for rows in (slice(0, 6), slice(N - 2, N)):
        np.testing.assert_array_equal(nbce.softmax(x[rows]), got[rows])


SPECIAL_ROWS = [
    [0.0, 1.0, 2.0],
    [-np.inf, 0.0, 1.0],
    [-np.inf, -np.inf, 3.0],
    [-np.inf, -np.inf, -np.inf],
    [np.inf, 0.0, 1.0],
    [np.inf, np.inf, 0.0],
    [np.inf, -np.inf, 0.0],
    [np.nan, 0.0, 1.0],
    [np.nan, np.inf, -np.inf],
    [np.nan, np.nan, np.nan],
    [1e308, 1e308, -1e308],
]


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_special_rows(dtype, name):
    with np.errstate(over="ignore"):  # 1e308 is +inf in float32: a row with +inf
        x = np.array(SPECIAL_ROWS, dtype)
    got = FUNCTIONS[name][0](x)
    expected = scipy_result(name, x)
    # element by element: NaN where scipy has NaN, the same infinities, the same finite values
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(got) * np.sign(got), np.isinf(expected) * np.sign(expected))
    np.testing.assert_allclose(got, expected, rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch(dtype, name):
    assert_matches_scipy(name, np.empty((0, 4), dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_no_classes(dtype):
    x = np.empty((3, 0), dtype)
    # scipy raises for log_softmax/softmax here; an empty row normalises to an empty row
    np.testing.assert_array_equal(nbce.logsumexp(x), scipy_result("logsumexp", x))
    assert nbce.logsumexp(x).dtype == dtype
    for func in (nbce.log_softmax, nbce.softmax):
        result = func(x)
        assert result.shape == (3, 0) and result.dtype == dtype


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_large_gap(dtype):
    result = nbce.log_softmax(np.array([1000.0, 1.0], dtype))
    np.testing.assert_array_equal(result, np.array([0.0, -999.0], dtype), strict=True)
    np.testing.assert_array_equal(nbce.softmax(np.array([1000.0, 1.0], dtype)), [1.0, 0.0])
    assert nbce.logsumexp(np.array([1000.0, 1.0], dtype)) == 1000


@pytest.mark.parametrize("dtype, shift", [(np.float32, 1e7), (np.float64, 1e15)])
def test_translation_invariance(rng, dtype, shift):
    x = rng.integers(-20, 20, (5, 8)).astype(dtype)
    shifted = x + dtype(shift)
    assert np.all(shifted - dtype(shift) == x)  # integer-valued data: the shift is exact
    np.testing.assert_array_equal(nbce.log_softmax(shifted), nbce.log_softmax(x))
    np.testing.assert_array_equal(nbce.softmax(shifted), nbce.softmax(x))
    assert_matches_scipy("log_softmax", shifted, dtype)
    expected = shift + scipy.special.logsumexp(x.astype(np.float64), axis=-1)
    np.testing.assert_allclose(nbce.logsumexp(shifted), expected, rtol=np.finfo(dtype).eps)


NON_CONTIGUOUS = {
    "transposed": lambda x: x.T,
    "fortran": np.asfortranarray,
    "strided": lambda x: x[::2, ::3],
    "reversed": lambda x: x[::-1, ::-1],
}


@pytest.mark.parametrize("axis", [-1, 0])
@pytest.mark.parametrize("layout", NON_CONTIGUOUS)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_non_contiguous_input(rng, name, layout, axis):
    x = NON_CONTIGUOUS[layout](make_logits(rng, (8, 9), np.float64))
    assert_matches_scipy(name, x, np.float64, axis=axis)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_read_only_input(rng, name):
    assert_matches_scipy(name, read_only(make_logits(rng, (4, 6), np.float64)), np.float64)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_array_like_input(name):
    assert_matches_scipy(name, [[1.0, 2.0, 3.0], [-1.0, 0.5, 0.25]], np.float64)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8, np.complex128, np.bool_, object])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_non_float_input_raises(name, dtype):
    x = np.ones((2, 3), dtype)
    saved = snapshot(x)
    with pytest.raises(TypeError, match="float32 or float64"):
        FUNCTIONS[name][0](x)
    assert_unchanged(saved)


@pytest.mark.parametrize("axis", [-1, 0, (0, 1)], ids=str)
@pytest.mark.parametrize("name", FUNCTIONS)
def test_input_not_mutated(rng, name, axis):
    x = make_logits(rng, (4, 6), np.float32)
    x[1, 2] = -np.inf
    saved = snapshot(x)
    FUNCTIONS[name][0](x, axis=axis)
    assert_unchanged(saved)
