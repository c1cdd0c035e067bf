"""The kernels' vectorisable elementary functions (``nbce._cpu.exp_vec``,
``log1p_unit``, ``log_vec``) against NumPy in float64, the integer
keys of floats that their row max is taken over, and the code of the compiled
cross-entropy kernel."""

import json

import numba
import numpy as np
import pytest
from conftest import KERNEL_DISPATCHERS, run_python

from nbce._cpu import exp_vec, from_order_key, log1p_unit, log_vec, order_key

# dtype -> (lower end of the sweep, smallest result held to the relative error, relative error bound)
ACCURACY = {
    np.float32: (-104.0, 2.0**-125, 2.5e-7),
    np.float64: (-745.0, 2.0**-1021, 1e-15),
}
UINT = {np.float32: np.uint32, np.float64: np.uint64}


def elementwise(fn):
    """A jitted loop applying the jit-only scalar function ``fn`` to each element."""

    @numba.njit
    def apply(x):
        out = np.empty_like(x)
        for i in range(x.size):
            out[i] = fn(x[i])
        return out

    return apply


exp_array = elementwise(exp_vec)
log1p_array = elementwise(log1p_unit)
log_array = elementwise(log_vec)


@numba.njit
def exp_scalar(x):
    return exp_vec(x)


def sweep(dtype):
    """Non-positive values: evenly spaced over [low, 0], evenly spaced in bit pattern from
    -0.0 to low (so every binade down to the subnormals), and the edge values."""
    low = ACCURACY[dtype][0]
    n = 2**22
    first, last = np.array([-0.0, low], dtype).view(UINT[dtype])
    by_bits = np.arange(first, last, (last - first) // n, dtype=UINT[dtype]).view(dtype)
    info = np.finfo(dtype)
    edges = [-np.inf, -0.0, 0.0, low, -info.tiny, -info.smallest_subnormal, -info.eps, np.log(info.tiny)]
    return np.concatenate([np.linspace(low, 0, n, dtype=dtype), by_bits, np.array(edges, dtype)])


@pytest.fixture(scope="module", params=[np.float32, np.float64], ids=["float32", "float64"])
def swept(request):
    """(dtype, x, exp_vec(x), np.exp(x) in float64)."""
    dtype = request.param
    x = sweep(dtype)
    return dtype, x, exp_array(x), np.exp(x.astype(np.float64))


def test_relative_error(swept):
    dtype, x, got, expected = swept
    _, smallest, bound = ACCURACY[dtype]
    held = expected >= smallest
    assert held.sum() > 2**22  # most of the sweep
    error = np.abs(got[held] - expected[held]) / expected[held]
    assert error.max() <= bound, f"x = {x[held][error.argmax()]!r}"


def test_tiny_results(swept):
    dtype, x, got, expected = swept
    _, smallest, _ = ACCURACY[dtype]
    tiny = expected < smallest
    assert tiny.sum() > 1000
    assert np.all(got[tiny] >= 0)
    assert np.all(got[tiny] <= 2 * smallest)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_values(dtype):
    x = np.array([-np.inf, 0.0, -0.0], dtype)
    np.testing.assert_array_equal(exp_array(x), np.array([0.0, 1.0, 1.0], dtype), strict=True)


@pytest.mark.parametrize("dtype, top", [(np.float32, 88.72), (np.float64, 709.78)])
def test_positive_arguments_up_to_overflow(dtype, top):
    # The row sums shift by less than the row max, so exps of positive values
    # are summed: accurate up to the largest finite result, never finite past it.
    x = np.concatenate([np.linspace(0, top, 2**20, dtype=dtype), [top]]).astype(dtype)
    error = np.abs(exp_array(x) - np.exp(x.astype(np.float64))) / np.exp(x.astype(np.float64))
    assert error.max() <= ACCURACY[dtype][2], f"x = {x[error.argmax()]!r}"
    beyond = np.array([np.nextafter(dtype(top), dtype(np.inf)) + dtype(0.01), top + 1, 1e4, np.finfo(dtype).max, np.inf], dtype)
    assert not np.isfinite(exp_array(beyond)).any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_keeps_precision(dtype):
    exp_scalar(dtype(-1.0))
    (signature,) = [s for s in exp_scalar.nopython_signatures if s.args == (numba.from_dtype(dtype),)]
    assert signature.return_type == numba.from_dtype(dtype)


@numba.njit
def order_keys_into(x, keys):
    for i in range(x.size):
        keys[i] = order_key(x[i])


def order_keys(x):
    keys = np.empty(x.size, {4: np.int32, 8: np.int64}[x.itemsize])
    order_keys_into(x, keys)
    return keys


@numba.njit
def from_order_keys(keys, like):
    out = np.empty_like(like)
    for i in range(keys.size):
        out[i] = from_order_key(keys[i])
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_order_key_orders_as_the_floats(dtype):
    # the row max that shifts the exps (head_max) is taken over these keys
    info = np.finfo(dtype)
    positive = [info.smallest_subnormal, info.tiny, info.eps, 1.0, info.max, np.inf]
    x = np.array([-p for p in reversed(positive)] + [-0.0, 0.0] + positive, dtype)
    keys = order_keys(x)
    assert np.all(np.diff(keys) > 0)
    np.testing.assert_array_equal(from_order_keys(keys, x).view(UINT[dtype]), x.view(UINT[dtype]))
    nan = np.array([np.nan], dtype)
    assert order_keys(nan)[0] > keys[-1] and order_keys(-nan)[0] < keys[0]


@pytest.fixture(scope="module")
def ce_rows_builds(tmp_path_factory):
    """For each compiled build of ``ce_rows`` (float32): its name and what its
    code shows, compiled once for the tests below."""
    # A fresh cache directory: code loaded from the cache cannot be inspected.
    # Bounds checks (NUMBA_BOUNDSCHECK=1 runs of this suite) would block the
    # vectorisation, so this inspects the build that users run. A small and a
    # large input, to compile every build a kernel may have.
    code = KERNEL_DISPATCHERS + """
import json
import warnings

import numpy as np
import nbce

warnings.simplefilter("error")  # numba warns, and returns no code, when inspecting cached code

for n_rows in (2, 256):
    nbce.cross_entropy_with_grad(np.zeros((n_rows, 1000), np.float32), np.zeros(n_rows, np.int64))
for dispatcher in kernel_dispatchers("ce_rows"):
    for signature in dispatcher.signatures:
        asm = dispatcher.inspect_asm(signature)
        print(json.dumps({
            "name": dispatcher.py_func.__name__,
            # the exp's scale 2**(k - 1), shifted into float32's exponent field
            # eight or sixteen lanes at a time (AVX2, AVX-512), or into float64's
            "float32_lanes": "vpslld\t$23, %ymm" in asm or "vpslld\t$23, %zmm" in asm,
            "float64_shift": "vpsllq\t$52" in asm,
            # a negative-index wraparound left in a loop becomes gathers and
            # scatters on AVX-512
            "gathers": "gather" in asm or "scatter" in asm,
            "increfs": dispatcher.inspect_llvm(signature).count("call void @NRT_incref("),
        }))
"""
    out = run_python(code, NUMBA_CACHE_DIR=str(tmp_path_factory.mktemp("cache")), NUMBA_BOUNDSCHECK="0")
    builds = [json.loads(line) for line in out.splitlines()]
    assert sorted(b["name"] for b in builds) == ["ce_rows", "ce_rows_serial"]
    return builds


def test_float32_kernel_vectorises_exp_in_float32(ce_rows_builds):
    for build in ce_rows_builds:
        assert build["float32_lanes"] and not build["float64_shift"] and not build["gathers"], build


def test_kernel_takes_no_references_in_its_rows(ce_rows_builds):
    # Each block of rows borrows the 10 arrays ce_rows is called with: one
    # reference each, none per row (without borrowing, 34). The serial build
    # shows its rows' code; the threaded build's is compiled apart by the parfor.
    (serial,) = [b for b in ce_rows_builds if b["name"] == "ce_rows_serial"]
    assert serial["increfs"] <= 10


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2.5e-7), (np.float64, 1e-15)])
def test_log1p_unit_matches_numpy_on_zero_to_one(dtype, rtol):
    tiny = np.finfo(dtype).tiny
    e = np.concatenate([np.linspace(0, 1, 100_001), np.geomspace(tiny, 1, 10_001)]).astype(dtype)
    out = log1p_array(e)
    assert out.dtype == dtype
    assert out[0] == 0.0
    np.testing.assert_allclose(out, np.log1p(e.astype(np.float64)), rtol=rtol, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_vec_is_accurate_from_0_to_the_largest_float(dtype):
    top = np.array(np.finfo(dtype).max, dtype).view(UINT[dtype])
    by_bits = np.arange(0, top + 1, max(1, top // 2**21), dtype=UINT[dtype]).view(dtype)  # every binade, subnormals too
    steps = np.arange(1, 5000, dtype=dtype)
    near_one = [1 - steps * np.finfo(dtype).epsneg, 1 + steps * np.finfo(dtype).eps]  # log near 0: relative error
    sums = np.linspace(1, 64, 2**16, dtype=dtype)  # a flat run's sums of exps
    x = np.concatenate([by_bits, *near_one, np.linspace(0, 1, 2**16, dtype=dtype), sums, [0.0, 1.0]]).astype(dtype)
    actual = log_array(x)
    assert actual.dtype == dtype
    with np.errstate(divide="ignore"):
        expected = np.log(x.astype(np.float64))
    assert actual[x == 0].tolist() == [-np.inf] * np.count_nonzero(x == 0)
    assert actual[x == 1].tolist() == [0.0] * np.count_nonzero(x == 1)
    inside = (x > 0) & (x != 1)
    np.testing.assert_allclose(actual[inside], expected[inside], rtol=3 * np.finfo(dtype).eps, atol=0)
