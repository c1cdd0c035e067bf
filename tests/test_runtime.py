"""Runtime behaviour, each in a fresh interpreter: thread-count independence,
lazy compilation, the on-disk cache and the fallback without one."""

import numpy as np
import pytest
from conftest import KERNEL_DISPATCHERS, run_python

import nbce
from nbce import _cpu, reference

EVERY_FUNCTION = """
import hashlib
import numba
import numpy as np
import nbce

rng = np.random.default_rng(7)
x = (4 * rng.standard_normal((257, 1000))).astype(np.float32)
labels = rng.integers(0, 1000, 257)
soft = nbce.softmax(rng.standard_normal((257, 1000)).astype(np.float32))
weight = rng.uniform(0.5, 2.0, 1000)
# rows of few classes (flat runs), in several blocks of rows that end inside a
# run (8 blocks of 1000 rows)
few = (4 * rng.standard_normal((8000, 21))).astype(np.float32)
few_labels = rng.integers(0, 21, 8000)
few_sample_weight = rng.uniform(0.5, 2.0, 8000)
outputs = [
    nbce.logsumexp(few),
    nbce.log_softmax(few),
    nbce.softmax(few),
    *nbce.cross_entropy_with_grad(
        few, few_labels, weight=weight[:21], sample_weight=few_sample_weight, z_loss=1e-3, return_lse=True,
        return_argmax=True,
    ),
    *nbce.cross_entropy_with_grad(few, few_labels, weight=weight[:21], label_smoothing=0.1),
    *nbce.cross_entropy_with_grad(few, nbce.softmax(few * 0.5), weight=weight[:21], label_smoothing=0.1),
    *nbce.softmax_focal_loss_with_grad(few, few_labels, weight=weight[:21]),
    nbce.logsumexp(x),
    nbce.log_softmax(x),
    nbce.softmax(x),
    nbce.cross_entropy(x, labels),
    nbce.cross_entropy(x, soft),
    *nbce.cross_entropy_with_grad(x, labels, weight=weight, label_smoothing=0.1),
    *nbce.cross_entropy_with_grad(x, soft, weight=weight, label_smoothing=0.1),
    nbce.nll_loss(nbce.log_softmax(x), labels, weight=weight),
    *nbce.cross_entropy_with_grad(
        x, labels, sample_weight=weight[:257], z_loss=1e-3, softcap=5.0, return_lse=True, return_argmax=True
    ),
    *nbce.cross_entropy_with_grad(x, labels, softcap=5.0, label_smoothing=0.1),
    *nbce.softmax_focal_loss_with_grad(x, labels, weight=weight),
    *nbce.binary_cross_entropy_with_logits_with_grad(x, soft * 100, pos_weight=weight),
    *nbce.sigmoid_focal_loss_with_grad(x, np.minimum(soft * 100, 1.0), gamma=1.5),
    *nbce.binary_cross_entropy_with_grad(soft, np.minimum(soft * 100, 1.0)),
]
digest = hashlib.sha256()
for output in outputs:
    digest.update(np.ascontiguousarray(output).tobytes())
print(numba.get_num_threads(), digest.hexdigest())
"""


def test_results_do_not_depend_on_the_thread_count():
    # Both runs use the suite's cache: the inputs are large enough for the
    # threaded builds, whose code is the same whether compiled or loaded.
    one = run_python(EVERY_FUNCTION, NUMBA_NUM_THREADS="1").split()
    two = run_python(EVERY_FUNCTION, NUMBA_NUM_THREADS="2").split()
    assert one[0] == "1" and two[0] == "2"
    assert one[1] == two[1]


@pytest.mark.parametrize(
    "n_rows, n_classes",
    [(0, 5), (1, 10), (32, 10), (519, 64), (2048, 65), (8000, 21), (65536, 10), (256, 1000), (4096, 32000), (5, 10**6)],
)
def test_blocks_of_rows_share_the_rows_out_equally(n_rows, n_classes):
    # the kernels' blocks: per_block rows each, the last one shorter but not empty
    n_blocks, per_block = _cpu.row_blocks(n_rows, n_classes)
    assert per_block >= 1 and (n_blocks - 1) * per_block < n_rows <= n_blocks * per_block or n_rows == n_blocks == 0
    if n_rows * n_classes < _cpu.PARALLEL_MIN_ELEMENTS:  # the serial build's calls: one block
        assert n_blocks == min(n_rows, 1)
    else:  # threaded: two threads get equal shares (unless each row is a block)
        assert n_blocks % 2 == 0 or n_blocks == n_rows


def test_import_compiles_nothing():
    code = KERNEL_DISPATCHERS + """
import nbce

print(len(kernel_dispatchers()), sum(len(d.signatures) for d in kernel_dispatchers()))
for name in ("logsumexp_rows", "log_softmax_rows", "softmax_rows", "ce_rows"):
    assert kernel_dispatchers(name), name
"""
    n_dispatchers, n_signatures = map(int, run_python(code).split())
    assert n_dispatchers >= 5
    assert n_signatures == 0


def test_kernels_are_cached_on_disk(tmp_path):
    # a small and a large input, to use every build a kernel may have
    code = KERNEL_DISPATCHERS + """
import numpy as np
import nbce

nbce.logsumexp(np.ones((2, 3)))
nbce.logsumexp(np.ones((256, 1000)))
stats = [d.stats for d in kernel_dispatchers("logsumexp_rows")]
print(sum(sum(s.cache_hits.values()) for s in stats), sum(sum(s.cache_misses.values()) for s in stats))
"""
    hits, misses = map(int, run_python(code, NUMBA_CACHE_DIR=str(tmp_path)).split())
    assert misses >= 1
    assert hits == 0, "a build loaded another build's code from an empty cache"
    assert list(tmp_path.rglob("*.nbi"))
    # a second process loads every build instead of compiling it
    assert tuple(map(int, run_python(code, NUMBA_CACHE_DIR=str(tmp_path)).split())) == (misses, 0)


def test_works_without_a_writable_cache_location():
    code = """
import numba.core.caching

numba.core.caching.CacheImpl._locator_classes = []  # as on a read-only install
""" + KERNEL_DISPATCHERS + """
import numpy as np
import nbce

assert all(type(d._cache) is numba.core.caching.NullCache for d in kernel_dispatchers())
print(repr(float(nbce.cross_entropy(np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]]), np.array([0, 2])))))
"""
    logits, labels = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 0.0]]), np.array([0, 2])
    loss = float(run_python(code))
    np.testing.assert_allclose(loss, reference.cross_entropy(logits, labels), rtol=1e-12)
    np.testing.assert_allclose(loss, nbce.cross_entropy(logits, labels), rtol=1e-15)


def test_import_loads_no_gpu_code():
    code = """
import sys
import nbce

print(sorted(m for m in sys.modules if m.startswith(("numba.cuda", "numba_cuda", "nbce._cuda"))))
"""
    assert run_python(code).strip() == "[]"


GPU_CALL = """
import numpy as np
import nbce


class GpuArray:  # any array with __cuda_array_interface__ takes the GPU path
    __cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (0, False), "version": 3}


try:
    import numba_cuda
    from numba import cuda
    has_gpu = cuda.is_available()
except ImportError:
    has_gpu = False
if has_gpu:
    print("GPU")
else:
    try:
        nbce.softmax(GpuArray())
    except (ImportError, RuntimeError) as e:
        print(type(e).__name__, e)
"""


def test_gpu_array_without_numba_cuda_raises_a_clear_error():
    hide_numba_cuda = "import sys\nsys.modules['numba_cuda'] = None  # as if not installed\n"
    result = run_python(hide_numba_cuda + GPU_CALL)
    assert result.startswith("ImportError") and "numba-cuda" in result, result


def test_gpu_array_without_a_gpu_raises_a_clear_error():
    result = run_python(GPU_CALL, NUMBA_ENABLE_CUDASIM="0")
    if result.strip() == "GPU":
        pytest.skip("a CUDA GPU is present")
    if result.startswith("ImportError"):
        pytest.skip("numba-cuda is not installed")
    assert result.startswith("RuntimeError") and "CUDA is not available" in result, result
