"""The GPU backend against the CPU path, on Numba device arrays.

Without a GPU this runs in Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``,
as in ``.ci/run``), which executes the kernels' Python source thread by
thread: it checks indexing, barriers and the per-row formulas, not speed, not
real races or hardware float behaviour (see ``docs/gpu.md``). The module is
skipped without numba-cuda or without a GPU or the simulator.

Blocks are tiny (4 threads, at most 3 blocks), so that rows of a few classes
span several threads and a handful of rows span several grid-stride rounds.
The shared-memory row limit is tiny too, so that both paths of the kernels
with a second pass run: rows of 11 float32 or 3 classes are staged in shared
memory, rows of 11 float64 are read twice from global memory.
"""

import inspect

import numpy as np
import pytest
import scipy.special
from conftest import DTYPES, REDUCTIONS, assert_close, make_logits, make_soft_target, make_weight

pytest.importorskip("numba_cuda")
from numba import cuda  # noqa: E402  (after the skip: numba-cuda, not numba's built-in target)

if not cuda.is_available():
    pytest.skip("no CUDA GPU (set NUMBA_ENABLE_CUDASIM=1 for the simulator)", allow_module_level=True)

import nbce  # noqa: E402
from nbce import _cuda, reference  # noqa: E402

# In the simulator a kernel's float arithmetic runs on NumPy scalars, which
# warn where a GPU silently gives inf or NaN (e.g. -inf - -inf in log_softmax
# of an all -inf row, as scipy).
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:nbce._cuda")

THREADS = 4
C_SMALL, C_LARGE = 3, 11  # fewer classes than threads; several classes per thread


@pytest.fixture(autouse=True)
def tiny_blocks(monkeypatch):
    monkeypatch.setattr(_cuda, "THREADS_PER_BLOCK", THREADS)
    monkeypatch.setattr(_cuda, "MAX_BLOCKS", 3)
    monkeypatch.setattr(_cuda, "SHARED_ROW_BYTES", 64)  # C_LARGE float32: 44 bytes; float64: 88


def dev(a):
    return cuda.to_device(np.asarray(a, order="C"))


def host(a):
    """A result of the GPU path (a Numba device array, not a NumPy array) on the host."""
    assert not isinstance(a, np.ndarray)
    return a.copy_to_host()


def extreme_rows(x):
    """Rows with a -inf logit, all -inf, a NaN and a +inf (rows 1-4 of ``x``)."""
    x[1, 2] = -np.inf
    x[2, :] = -np.inf
    x[3, 0] = np.nan
    x[4, 1] = np.inf
    return x


# --- softmax family ---------------------------------------------------------------

SOFTMAX_FAMILY = {
    "logsumexp": scipy.special.logsumexp,
    "log_softmax": scipy.special.log_softmax,
    "softmax": scipy.special.softmax,
}


@pytest.mark.parametrize("n_classes", [C_SMALL, C_LARGE])
@pytest.mark.parametrize("name", SOFTMAX_FAMILY)
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_family_matches_cpu(rng, dtype, name, n_classes):
    x = extreme_rows(make_logits(rng, (7, n_classes), dtype))
    gpu = getattr(nbce, name)(dev(x))
    assert gpu.dtype == dtype
    with np.errstate(invalid="ignore"):
        cpu = getattr(nbce, name)(x)
        expected = SOFTMAX_FAMILY[name](x.astype(np.float64), axis=-1)
    np.testing.assert_array_equal(np.isnan(host(gpu)), np.isnan(cpu))
    assert_close(host(gpu), cpu, dtype)
    assert_close(host(gpu), expected, dtype)


@pytest.mark.parametrize("axis", [1, (1, 2), None])
@pytest.mark.parametrize("name", SOFTMAX_FAMILY)
def test_softmax_family_any_adjacent_axes(rng, name, axis):
    x = make_logits(rng, (2, 3, 2, 2), np.float64)
    assert_close(host(getattr(nbce, name)(dev(x), axis=axis)), getattr(nbce, name)(x, axis=axis), np.float64)


def test_logsumexp_keepdims(rng):
    x = make_logits(rng, (2, 5, 3), np.float32)
    gpu = nbce.logsumexp(dev(x), axis=1, keepdims=True)
    assert gpu.shape == (2, 1, 3)
    assert_close(host(gpu), nbce.logsumexp(x, axis=1, keepdims=True), np.float32)


def test_non_adjacent_axes_are_not_supported(rng):
    with pytest.raises(NotImplementedError, match="not adjacent"):
        nbce.softmax(dev(make_logits(rng, (2, 3, 4), np.float64)), axis=(0, 2))


# --- cross-entropy ----------------------------------------------------------------


def ce_problem(rng, kind, dtype, n_classes=C_LARGE, n_rows=7):
    x = make_logits(rng, (n_rows, n_classes), dtype)
    if kind == "soft":
        return x, make_soft_target(rng, x.shape, -1, dtype)
    return x, rng.integers(0, n_classes, n_rows)


OPTIONS = {
    "plain": {},
    "weighted-smoothed": {"label_smoothing": 0.2, "weighted": True},
    "ignored": {"ignore": True},
    "ignored-weighted-smoothed": {"ignore": True, "label_smoothing": 0.1, "weighted": True},
}


def loss_options(rng, target, n_classes, options):
    kw = {k: v for k, v in options.items() if k in ("label_smoothing",)}
    if options.get("weighted"):
        kw["weight"] = make_weight(rng, n_classes)
    if options.get("ignore"):
        kw["ignore_index"] = int(target[0])
    return kw


def check_ce(x, target, dtype, **kw):
    """The GPU loss and gradient equal the CPU ones; so does the forward-only loss."""
    loss, grad = nbce.cross_entropy_with_grad(dev(x), dev(target), **kw)
    cpu_loss, cpu_grad = nbce.cross_entropy_with_grad(x, target, **kw)
    assert loss.dtype == grad.dtype == dtype and grad.shape == x.shape
    assert_close(host(loss), cpu_loss, dtype)
    assert_close(host(grad), cpu_grad, dtype)
    assert_close(host(nbce.cross_entropy(dev(x), dev(target), **kw)), cpu_loss, dtype)
    return host(loss), host(grad)


# soft targets take no ignore_index
TARGET_OPTIONS = [("index", o) for o in OPTIONS] + [("soft", o) for o in OPTIONS if not OPTIONS[o].get("ignore")]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind, options", TARGET_OPTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_matches_cpu_and_reference(rng, dtype, kind, options, reduction):
    x, target = ce_problem(rng, kind, dtype)
    kw = loss_options(rng, target, C_LARGE, OPTIONS[options])
    loss, grad = check_ce(x, target, dtype, reduction=reduction, **kw)
    x64 = x.astype(np.float64)
    assert_close(loss, reference.cross_entropy(x64, target, reduction=reduction, **kw), dtype)
    assert_close(grad, reference.cross_entropy_grad(x64, target, reduction=reduction, **kw), dtype)


@pytest.mark.parametrize("kind", ["index", "soft"])
def test_fewer_classes_than_threads(rng, kind):
    x, target = ce_problem(rng, kind, np.float64, n_classes=C_SMALL)
    check_ce(x, target, np.float64, label_smoothing=0.1, reduction="none")


@pytest.mark.parametrize("kind", ["index", "soft"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_rows(rng, dtype, kind):
    """-inf logits, rows all -inf or holding NaN/+inf, ignored rows holding NaN."""
    x, target = ce_problem(rng, kind, dtype)
    x = extreme_rows(x)
    if kind == "index":
        target[0] = 5
        x[0, 5] = -np.inf  # -inf at the target: loss +inf, gradient finite
        target[1] = 0  # the -inf of row 1 is elsewhere: finite loss, gradient 0 there
        x[5, 0] = np.nan
        target[5] = -100  # ignored row holding NaN: exactly 0
    loss, grad = check_ce(x, target, dtype, reduction="none")
    assert np.all(np.isnan(loss[2:5])) and np.all(np.isnan(grad[2:5]))
    if kind == "index":
        assert loss[0] == np.inf and np.all(np.isfinite(grad[0]))
        assert np.isfinite(loss[1]) and grad[1, 2] == 0
        assert loss[5] == 0 and np.all(grad[5] == 0)


@pytest.mark.parametrize("dtype, shift", [(np.float32, 1e7), (np.float64, 1e15)])
def test_large_common_shift_changes_nothing(rng, dtype, shift):
    x = rng.integers(-4, 5, (5, C_LARGE)).astype(dtype)  # integers: still exact after the shift
    y = rng.integers(0, C_LARGE, 5)
    kw = dict(reduction="none", label_smoothing=0.1)
    loss, grad = nbce.cross_entropy_with_grad(dev(x), dev(y), **kw)
    shifted_loss, shifted_grad = nbce.cross_entropy_with_grad(dev(x + dtype(shift)), dev(y), **kw)
    np.testing.assert_array_equal(host(shifted_loss), host(loss))
    np.testing.assert_array_equal(host(shifted_grad), host(grad))


def test_one_class_gives_exact_zeros(rng):
    x = make_logits(rng, (5, 1), np.float32)
    loss, grad = check_ce(x, np.zeros(5, np.int64), np.float32, reduction="none")
    assert np.all(loss == 0) and np.all(grad == 0)


def test_all_ignored_mean_is_nan_with_zero_gradient(rng):
    x = make_logits(rng, (4, C_LARGE), np.float64)
    loss, grad = nbce.cross_entropy_with_grad(dev(x), dev(np.full(4, -100)))
    assert np.isnan(host(loss)) and np.all(host(grad) == 0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_empty_batch(reduction):
    x = np.zeros((0, C_LARGE), np.float32)
    check_ce(x, np.zeros(0, np.int64), np.float32, reduction=reduction)


@pytest.mark.parametrize("kind", ["index", "soft"])
def test_class_axis_1_of_4d_input(rng, kind):
    x = make_logits(rng, (2, C_LARGE, 3, 2), np.float32)
    if kind == "index":
        target = rng.integers(0, C_LARGE, (2, 3, 2))
    else:
        target = make_soft_target(rng, x.shape, 1, np.float32)
    check_ce(x, target, np.float32, axis=1, weight=make_weight(rng, C_LARGE), label_smoothing=0.1)
    check_ce(x, target, np.float32, axis=1, reduction="none")


def test_single_row_without_batch_axes():
    x, y = np.array([2.0, 0.5, -1.0]), np.array(0)  # a 0-d label, a host array
    assert_close(host(nbce.cross_entropy(dev(x), y, reduction="none")), nbce.cross_entropy(x, y), np.float64)
    assert_close(host(nbce.nll_loss(dev(nbce.log_softmax(x)), y)), nbce.nll_loss(nbce.log_softmax(x), y), np.float64)
    assert host(nbce.logsumexp(dev(x))).shape == ()


def test_out_receives_the_gradient_and_out_logits_works_in_place(rng):
    x, y = ce_problem(rng, "index", np.float32)
    _, expected = nbce.cross_entropy_with_grad(x, y, label_smoothing=0.1)
    out = cuda.device_array_like(x)
    _, grad = nbce.cross_entropy_with_grad(dev(x), dev(y), label_smoothing=0.1, out=out)
    assert grad is out
    assert_close(host(out), expected, np.float32)
    logits = dev(x)
    _, grad = nbce.cross_entropy_with_grad(logits, dev(y), label_smoothing=0.1, out=logits)
    assert grad is logits
    assert_close(host(logits), expected, np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
def test_shared_and_two_read_paths_agree(rng, monkeypatch, dtype):
    """A row staged in shared memory gives the same bits as a row read twice
    from global memory, and both match the CPU: special rows, ignored rows,
    soft targets, the smoothed forward, out=logits in place, the softmax family."""
    x = extreme_rows(make_logits(rng, (7, C_LARGE), dtype))
    y = rng.integers(0, C_LARGE, 7)
    y[[0, 5]] = [2, -100]  # row 0: the target's logit is -inf (copied from row 1); row 5 ignored
    x[0, 2] = -np.inf
    p = make_soft_target(rng, x.shape, -1, dtype)
    kw = dict(weight=make_weight(rng, C_LARGE), label_smoothing=0.1, reduction="none")

    def run(module):
        logits = module(x.copy())
        results = [
            *nbce.cross_entropy_with_grad(module(x), module(y), **kw),
            *nbce.cross_entropy_with_grad(module(x), module(p), **kw),
            nbce.cross_entropy(module(x), module(y), **kw),
            nbce.cross_entropy_with_grad(logits, module(y), out=logits, **kw)[0],
            logits,
            nbce.log_softmax(module(x)),
            nbce.softmax(module(x)),
        ]
        return [r if module is np.asarray else host(r) for r in results]

    with np.errstate(invalid="ignore"):
        cpu = run(np.asarray)
    monkeypatch.setattr(_cuda, "SHARED_ROW_BYTES", 0)
    assert _cuda._row_bytes(C_LARGE, dtype) == 0
    two_reads = run(dev)
    monkeypatch.setattr(_cuda, "SHARED_ROW_BYTES", C_LARGE * np.dtype(dtype).itemsize)
    assert _cuda._row_bytes(C_LARGE, dtype) > 0
    staged = run(dev)
    for a, b, expected in zip(two_reads, staged, cpu):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(expected))
        assert_close(a, expected, dtype)


def test_shared_row_limit_keeps_the_block_within_48_kib(monkeypatch):
    """The row and the reductions' shared arrays (24 bytes a thread at most) fit in 48 KiB."""
    monkeypatch.setattr(_cuda, "SHARED_ROW_BYTES", 40 * 1024)
    monkeypatch.setattr(_cuda, "THREADS_PER_BLOCK", 256)
    assert _cuda._row_bytes(10240, np.float32) == 40 * 1024
    assert _cuda._row_bytes(10241, np.float32) == 0
    monkeypatch.setattr(_cuda, "THREADS_PER_BLOCK", 1024)
    assert _cuda._row_bytes(3072, np.float64) == 24 * 1024
    assert _cuda._row_bytes(3073, np.float64) == 0


def test_inputs_are_not_modified(rng):
    x, y = ce_problem(rng, "soft", np.float64)
    logits, target = dev(x), dev(y)
    nbce.cross_entropy_with_grad(logits, target, label_smoothing=0.1)
    np.testing.assert_array_equal(host(logits), x)
    np.testing.assert_array_equal(host(target), y)


def test_host_target_and_weight_are_accepted(rng):
    x, y = ce_problem(rng, "index", np.float64)
    w = make_weight(rng, C_LARGE)
    loss = nbce.cross_entropy(dev(x), y, weight=dev(w))
    assert_close(host(loss), nbce.cross_entropy(x, y, weight=w), np.float64)


# --- nll_loss ----------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_nll_loss_matches_cpu(rng, dtype, reduction):
    lp = nbce.log_softmax(make_logits(rng, (2, C_LARGE, 3), dtype), axis=1)
    y = rng.integers(0, C_LARGE, (2, 3))
    y[0, 0] = -1
    kw = dict(axis=1, weight=make_weight(rng, C_LARGE), ignore_index=-1, reduction=reduction)
    assert_close(host(nbce.nll_loss(dev(lp), dev(y), **kw)), nbce.nll_loss(lp, y, **kw), dtype)


# --- bad input: the CPU path's exceptions -------------------------------------------


@pytest.mark.parametrize("label_dtype", [np.int64, np.int32, np.uint8])
@pytest.mark.parametrize("func", [nbce.cross_entropy, nbce.cross_entropy_with_grad, nbce.nll_loss])
def test_bad_label_raises_the_cpu_index_error(rng, func, label_dtype):
    x = make_logits(rng, (9, C_LARGE), np.float64)
    y = rng.integers(0, C_LARGE, 9).astype(label_dtype)
    y[[2, 6]] = [C_LARGE + 3, C_LARGE]  # the first bad label is named
    with pytest.raises(IndexError) as cpu:
        func(x, y, ignore_index=2)
    with pytest.raises(IndexError) as gpu:
        func(dev(x), dev(y), ignore_index=2)
    assert str(gpu.value) == str(cpu.value)


def test_negative_label_beside_ignored(rng):
    x = make_logits(rng, (5, C_LARGE), np.float32)
    y = np.array([-1, -1, 3, -7, 0])
    with pytest.raises(IndexError, match="target -7 is out of bounds .* position 3"):
        nbce.cross_entropy(dev(x), dev(y), ignore_index=-1)


def test_uint64_label_beyond_int64(rng):
    x = make_logits(rng, (3, C_LARGE), np.float32)
    y = np.array([0, 2**64 - 1, 1], np.uint64)  # would wrap to the ignore_index -1
    with pytest.raises(IndexError, match=f"target {2**64 - 1} is out of bounds"):
        nbce.cross_entropy(dev(x), dev(y), ignore_index=-1)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"reduction": "avg"}, ValueError, "reduction must be one of"),
        ({"label_smoothing": 1.5}, ValueError, "label_smoothing"),
        ({"weight": np.ones(C_LARGE + 1)}, ValueError, "weight must have shape"),
        ({"weight": np.full(C_LARGE, np.nan)}, ValueError, "finite"),
        ({"axis": 2}, np.exceptions.AxisError, "axis"),
    ],
)
def test_bad_options_raise_as_on_the_cpu(rng, kwargs, error, match):
    x, y = ce_problem(rng, "index", np.float32)
    with pytest.raises(error, match=match):
        nbce.cross_entropy(x, y, **kwargs)
    with pytest.raises(error, match=match):
        nbce.cross_entropy(dev(x), dev(y), **kwargs)


# Options of the CPU path that the GPU path lacks so far, at a value other than their default.
CPU_ONLY_OPTIONS = {"z_loss": 1e-4, "softcap": 30.0, "sample_weight": np.ones(7), "return_lse": True}


@pytest.mark.parametrize("option", sorted(CPU_ONLY_OPTIONS.keys() & inspect.signature(nbce.cross_entropy).parameters))
def test_cpu_only_options(rng, option):
    x, y = ce_problem(rng, "index", np.float32)
    default = inspect.signature(nbce.cross_entropy).parameters[option].default
    loss = nbce.cross_entropy(dev(x), dev(y), **{option: default})  # accepted at the default
    assert_close(host(loss), nbce.cross_entropy(x, y), np.float32)
    with pytest.raises(NotImplementedError, match=f"{option}= is not supported on the GPU yet"):
        nbce.cross_entropy(dev(x), dev(y), **{option: CPU_ONLY_OPTIONS[option]})


def test_bad_dtypes_and_shapes(rng):
    x, y = ce_problem(rng, "index", np.float32)
    with pytest.raises(TypeError, match="must be float32 or float64"):
        nbce.cross_entropy(dev(x.astype(np.int32)), dev(y))
    with pytest.raises(NotImplementedError, match="float16"):
        nbce.cross_entropy(dev(x.astype(np.float16)), dev(y))
    with pytest.raises(TypeError, match="integer"):
        nbce.cross_entropy(dev(x), dev(y.astype(np.float32)))
    with pytest.raises(ValueError, match="matches neither"):
        nbce.cross_entropy(dev(x), dev(y[:-1].astype(np.float32)))
    with pytest.raises(ValueError, match="soft"):
        nbce.cross_entropy(dev(x), dev(make_soft_target(rng, x.shape, -1, np.float32)), ignore_index=0)


def test_bad_out(rng):
    x, y = ce_problem(rng, "index", np.float32)
    logits, target = dev(x), dev(y)
    with pytest.raises(TypeError, match="device array"):
        nbce.cross_entropy_with_grad(logits, target, out=np.empty_like(x))
    with pytest.raises(ValueError, match="shape and dtype"):
        nbce.cross_entropy_with_grad(logits, target, out=cuda.device_array(x.shape, np.float64))
    overlapping = cuda.device_array(x.size + 1, np.float32)
    with pytest.raises(ValueError, match="overlaps logits"):
        nbce.cross_entropy_with_grad(
            overlapping[:-1].reshape(x.shape), target, out=overlapping[1:].reshape(x.shape)
        )


def test_strided_numba_array_is_rejected(rng):
    x = dev(make_logits(rng, (6, C_LARGE), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        nbce.softmax(x[::2])


def test_gpu_benchmark_code_runs():
    """``nbce bench --device cuda`` refuses to time the simulator; its measuring code runs in it."""
    from nbce import bench_gpu

    [record] = bench_gpu.run(shapes=[(4, 8)], repeats=1)
    assert set(record["times"]) == {"nbce", "copy"}
    assert np.isfinite([record["gb_per_s"], record["copy_gb_per_s"]]).all()  # the simulator's clock says no more
    if bench_gpu.gpu_unavailable():  # the simulator: a clear message, no timing
        assert bench_gpu.main() == 1
